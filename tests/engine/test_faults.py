"""Numerical faults, kill -9 at any moment, determinism and distributed failures (issue: reliability)."""

import json
import math
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import cosa.method.cosa as objective_module
from cosa.config import load_config
from cosa.data.datasets import StreamSampler
from cosa.engine.checkpoint import load_checkpoint
from cosa.engine.distributed import DistContext
from cosa.engine.runlog import read_metrics
from cosa.engine.trainer import Trainer
from cosa.errors import CosaError

from conftest import SUBPROCESS_ENV, TINY_OVERRIDES, torchrun_command

CPU = DistContext(0, 1, 0, torch.device("cpu"))
WORKER = Path(__file__).parent / "fault_worker.py"
# Checkpoints at 2, 4, 6 (last.pt); evaluations at 3 and 6 (best.pt when better).
KILL_OVERRIDES = [*TINY_OVERRIDES, "train.checkpoint_every=2", "train.device=cpu"]


def states_equal(first: dict, second: dict) -> bool:
    """The same keys and values, wherever each state lives."""
    return first.keys() == second.keys() and all(torch.equal(first[k].cpu(), second[k].cpu()) for k in first)


def all_finite(state: dict) -> bool:
    return all(torch.isfinite(value).all() for value in state.values() if value.is_floating_point())


def poison_at(monkeypatch, iteration: int, gradient_only: bool = False) -> None:
    """Make L_s2c non-finite at ``iteration`` (or, with ``gradient_only``, finite with a NaN gradient)."""
    original, calls = objective_module.segmentation_to_cam_loss, []

    class NanGradient(torch.autograd.Function):
        @staticmethod
        def forward(ctx, value):
            return value.clone()

        @staticmethod
        def backward(ctx, grad):
            return grad * float("nan")

    def poisoned(*args, **kwargs):
        calls.append(None)
        loss = original(*args, **kwargs)
        if len(calls) != iteration:
            return loss
        return NanGradient.apply(loss) if gradient_only else loss * float("nan")

    monkeypatch.setattr(objective_module, "segmentation_to_cam_loss", poisoned)


def record_states(monkeypatch) -> list[tuple[dict, dict]]:
    """(online, assignment) state dicts after every step."""
    states, original = [], Trainer.train_step

    def train_step(self, batch):
        losses = original(self, batch)
        states.append(
            (
                {k: v.clone() for k, v in self.online.state_dict().items()},
                {k: v.clone() for k, v in self.assignment.state_dict().items()},
            )
        )
        return losses

    monkeypatch.setattr(Trainer, "train_step", train_step)
    return states


def tiny_config(data, *extra):
    return load_config("demo", "release", str(data), [*TINY_OVERRIDES, *extra])


# --- numerical faults -------------------------------------------------------------------------


def test_a_nonfinite_loss_stops_the_run_naming_step_and_term_and_saves_the_state_before_it(
    tiny_data, tmp_path, monkeypatch
):
    poison_at(monkeypatch, 4)
    trainer = Trainer(tiny_config(tiny_data), tmp_path / "run", CPU)
    with pytest.raises(CosaError, match=r"step 4: non-finite s2c, total, gradients \(s2c=nan\)") as error:
        trainer.fit()
    saved = tmp_path / "run" / "nonfinite" / "step4.pt"
    assert str(saved) in str(error.value) and "\n" not in str(error.value)
    payload = load_checkpoint(saved)
    assert payload["iteration"] == 3 and set(payload["batch"]) >= {"weak", "strong", "labels", "box"}
    assert all_finite(trainer.online.state_dict()) and all_finite(trainer.assignment.state_dict())
    assert states_equal(payload["online"], trainer.online.state_dict())
    assert states_equal(payload["assignment"], trainer.assignment.state_dict())


@pytest.mark.parametrize("gradient_only", [False, True], ids=["loss", "gradient"])
def test_skip_mode_drops_the_faulty_step_and_leaves_both_networks_unchanged(
    tiny_data, tmp_path, monkeypatch, gradient_only
):
    poison_at(monkeypatch, 4, gradient_only)
    states = record_states(monkeypatch)
    trainer = Trainer(tiny_config(tiny_data, "train.nonfinite=skip"), tmp_path / "run", CPU)
    trainer.fit()
    assert trainer.iteration == 6 and trainer.guard.skipped_steps == 1
    assert states_equal(states[2][0], states[3][0]) and states_equal(states[2][1], states[3][1])
    assert not states_equal(states[3][1], states[4][1])  # training went on after the skipped step
    assert all_finite(trainer.online.state_dict()) and all_finite(trainer.assignment.state_dict())
    metrics = read_metrics(tmp_path / "run")
    assert [entry["train/skipped_steps"] for entry in metrics if "train/skipped_steps" in entry] == [1, 1]  # 4 and 6
    losses = [entry["train/loss"] for entry in metrics if "train/loss" in entry]
    assert len(losses) == 3 and all(math.isfinite(loss) for loss in losses)  # the NaN step is not averaged in
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["skipped_steps"] == 1


def test_a_gradient_fault_in_stop_mode_is_named(tiny_data, tmp_path, monkeypatch):
    poison_at(monkeypatch, 3, gradient_only=True)
    with pytest.raises(CosaError, match=r"step 3: non-finite gradients;"):
        Trainer(tiny_config(tiny_data), tmp_path / "run", CPU).fit()


# --- kill -9 and resume -----------------------------------------------------------------------


def cosa_train(
    run_dir: Path,
    data: Path,
    point: str = "none",
    resume: bool = False,
    deterministic: bool = True,
    extra: tuple[str, ...] = (),
) -> subprocess.Popen:
    """``cosa train`` of the tiny config (with ``extra`` overrides) in a process that ``point`` kills."""
    arguments = ["train", "--out", str(run_dir)] + (["--deterministic"] if deterministic else [])
    arguments += ["--resume"] if resume else ["--config", "demo", "--data", str(data), *KILL_OVERRIDES, *extra]
    return subprocess.Popen(
        [sys.executable, str(WORKER), point, *arguments],
        env=SUBPROCESS_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finish(process: subprocess.Popen) -> subprocess.CompletedProcess:
    stdout, stderr = process.communicate(timeout=300)
    return subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr)


@pytest.fixture(scope="module")
def uninterrupted(tiny_data, tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("uninterrupted") / "run"
    completed = finish(cosa_train(run_dir, tiny_data))
    assert completed.returncode == 0, completed.stderr[-3000:]
    return run_dir


def outcome(run_dir: Path) -> tuple[dict, dict]:
    last = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    return json.loads((run_dir / "final_metrics.json").read_text()), last


KILL_POINTS = [
    "checkpoint-replace:3",  # last.pt of iteration 4 complete but not yet renamed over that of 2
    "ema:3",  # iteration 3's optimiser step applied, its EMA update not
    "evaluation",  # inside the evaluation at iteration 3
    "checkpoint-write:2",  # half of best.pt written at iteration 3
    "checkpoint-write:3",  # half of last.pt written at iteration 4
    "external",  # SIGKILL from outside once the first last.pt is in place
]


@pytest.mark.slow
@pytest.mark.parametrize("point", KILL_POINTS)
def test_kill_9_then_resume_finishes_like_an_uninterrupted_run(tiny_data, tmp_path, uninterrupted, point):
    run_dir = tmp_path / "run"
    if point == "external":
        process = cosa_train(run_dir, tiny_data)
        deadline = time.time() + 120
        while not (run_dir / "checkpoints" / "last.pt").exists() and time.time() < deadline:
            time.sleep(0.02)
        process.send_signal(signal.SIGKILL)
    else:
        process = cosa_train(run_dir, tiny_data, point)
    killed = finish(process)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert not (run_dir / "final_metrics.json").exists()
    if (run_dir / "checkpoints" / "last.pt").exists():  # what a kill leaves is always loadable
        assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"] in (2, 4)

    resumed = finish(cosa_train(run_dir, tiny_data, resume=True))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    (metrics, last), (expected_metrics, expected_last) = outcome(run_dir), outcome(uninterrupted)
    assert metrics == expected_metrics
    assert states_equal(last["online"], expected_last["online"])
    assert states_equal(last["assignment"], expected_last["assignment"])
    assert last["optimizer"]["state"].keys() == expected_last["optimizer"]["state"].keys()
    assert not list((run_dir / "checkpoints").glob(".*.tmp"))  # partial writes were cleaned up
    logged = [entry["iteration"] for entry in read_metrics(run_dir) if "train/loss" in entry]
    assert logged == [2, 4, 6]


@pytest.mark.slow
@pytest.mark.parametrize("point", ["step:1", "checkpoint-replace:1"])  # the first last.pt not yet in place
def test_kill_9_before_the_first_checkpoint_then_resume_is_refused_and_keeps_the_folder(tiny_data, tmp_path, point):
    run_dir = tmp_path / "run"
    killed = finish(cosa_train(run_dir, tiny_data, point))
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-3000:]
    assert (run_dir / "config.yaml").is_file() and not (run_dir / "checkpoints" / "last.pt").exists()
    before = history(run_dir)
    resumed = finish(cosa_train(run_dir, tiny_data, resume=True))
    assert resumed.returncode == 2
    assert (
        resumed.stderr.strip()
        .splitlines()[-1]
        .startswith(
            f"cosa: error: {run_dir}: nothing to resume from (no checkpoints/last.pt) but the folder holds config.yaml"
        )
    )
    assert history(run_dir) == before


def history(run_dir: Path) -> dict[Path, bytes]:
    """Every file of a run but its lock (a killed run's lock goes once its process is gone)."""
    return {path: path.read_bytes() for path in run_dir.rglob("*") if path.is_file() and path.name != ".lock"}


# --- determinism --------------------------------------------------------------------------------


@pytest.mark.slow
def test_deterministic_cpu_runs_are_bit_identical(tiny_data, tmp_path, uninterrupted):
    completed = finish(cosa_train(tmp_path / "again", tiny_data))
    assert completed.returncode == 0, completed.stderr[-3000:]
    (metrics, last), (expected_metrics, expected_last) = outcome(tmp_path / "again"), outcome(uninterrupted)
    assert metrics == expected_metrics
    assert states_equal(last["online"], expected_last["online"])
    assert states_equal(last["assignment"], expected_last["assignment"])
    assert last["config"]["train"]["deterministic"] is True


# --- distributed failures -----------------------------------------------------------------------


def torchrun(point: str, run_dir: Path, data: Path, processes: int = 2, timeout: float = 300):
    command = torchrun_command(
        WORKER,
        point,
        "train",
        "--config",
        "demo",
        "--data",
        data,
        "--out",
        run_dir,
        *KILL_OVERRIDES,
        processes=processes,
    )
    return subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=timeout)


@pytest.mark.slow
def test_an_exception_on_one_rank_ends_every_rank_within_seconds(tiny_data, tmp_path):
    completed = torchrun("raise:4:1", tmp_path / "run", tiny_data)
    ended = time.time()
    assert completed.returncode != 0
    assert "injected failure on rank 1 at iteration 4" in completed.stderr
    raised = float(completed.stderr.split("raising at ")[1].split()[0])
    assert ended - raised < 30, f"the other rank took {ended - raised:.0f} s to stop"


@pytest.mark.slow
def test_resuming_with_another_process_count_keeps_the_global_batch_and_schedule(tiny_data, tmp_path):
    run_dir = tmp_path / "run"
    killed = torchrun("step:4", run_dir, tiny_data)  # both ranks die as iteration 4 starts
    assert killed.returncode != 0
    assert load_checkpoint(run_dir / "checkpoints" / "last.pt")["iteration"] == 2

    resumed = finish(cosa_train(run_dir, tiny_data, resume=True, deterministic=False))  # one process now
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    final = load_checkpoint(run_dir / "checkpoints" / "last.pt")
    assert final["iteration"] == 6 and final["config"]["train"]["batch_size"] == 4
    logged = {entry["iteration"]: entry for entry in read_metrics(run_dir) if "train/loss" in entry}
    assert sorted(logged) == [2, 4, 6]
    # The learning rate follows the one schedule across the change of process count: lr 2e-4, a
    # warm-up of 2 steps from 1e-6·lr, then (1 − step/6)^0.9, for the 0-based steps 1, 3 and 5.
    expected = {2: 2e-4 * (0.5 + 0.5e-6), 4: 2e-4 * 0.5**0.9, 6: 2e-4 * (1 / 6) ** 0.9}
    assert {iteration: entry["train/lr"] for iteration, entry in logged.items()} == pytest.approx(expected)


def test_every_process_count_reads_the_same_global_batches():
    def global_batches(world_size: int, start: int) -> list[list[int]]:
        shares = [list(StreamSampler(8, rank, world_size, start, 5)) for rank in range(world_size)]
        per = 8 // world_size
        return [sum((share[step * per : (step + 1) * per] for share in shares), []) for step in range(5 - start)]

    assert global_batches(1, 2) == global_batches(2, 2) == global_batches(4, 2) == global_batches(8, 2)
    assert global_batches(1, 0)[2:] == global_batches(2, 2)
