"""What only a GPU shows (``pytest -m cuda``; skipped without one): a training step that never waits
for the device, bf16 autocast against fp32, checkpoints across devices, kill -9 and resume, and
NCCL under torchrun. The fixture cases on the GPU are in tests/test_release_fidelity.py."""

import math
import subprocess
import warnings
from pathlib import Path

import pytest
import torch

from cosa.config import load_config
from cosa.engine.checkpoint import load_checkpoint
from cosa.engine.distributed import DistContext
from cosa.engine.graphs import GraphedForward
from cosa.engine.runlog import read_metrics
from cosa.engine.trained import load_trained
from cosa.engine.trainer import Trainer
from cosa.method.cosa import CoSAObjective
from cosa.models.network import build_network
from cosa.precision import autocast

from conftest import SUBPROCESS_ENV, TINY_OVERRIDES, requires_cuda, torchrun_command
from test_faults import cosa_train, finish, states_equal

pytestmark = [pytest.mark.cuda, requires_cuda]

GPU = DistContext(0, 1, 0, torch.device("cuda"))
CPU = DistContext(0, 1, 0, torch.device("cpu"))
# The voc preset's network and crop (random weights: no download), two images per step.
VOC = ["model.pretrained=none", "train.batch_size=2", "data.num_workers=0", "data.train_split=train"]
# bf16 against fp32 on the same weights and batch: each loss term within this relative distance.
BF16_TOLERANCE = 0.05


def tiny_config(data, device: str, *extra):
    return load_config("demo", "release", str(data), [*TINY_OVERRIDES, f"train.device={device}", *extra])


def voc_config(data, *extra):
    return load_config("voc", "release", str(data), [*VOC, "train.device=cuda", *extra])


def next_step(trainer: Trainer, batches) -> dict:
    trainer.iteration += 1  # as the trainer's loop counts, for the schedules
    return next(batches)


@pytest.mark.parametrize("preset", ["demo", "voc"])
def test_a_training_step_never_waits_for_the_gpu(tiny_data, tmp_path, preset, record_property):
    """No host–device synchronisation inside a step: the host can queue the next one meanwhile."""
    cfg = tiny_config(tiny_data, "cuda") if preset == "demo" else voc_config(tiny_data)
    trainer = Trainer(cfg, tmp_path / "run", GPU)
    batches = iter(trainer._loader())
    for _ in range(2):  # the first steps create the optimiser's state and the libraries' handles
        trainer.train_step(next_step(trainer, batches))
    batch = next_step(trainer, batches)
    torch.cuda.synchronize()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        torch.cuda.set_sync_debug_mode("warn")
        try:
            trainer.train_step(batch)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    syncs = [f"{w.filename}:{w.lineno}: {w.message}" for w in caught if "called a synchronizing" in str(w.message)]
    record_property("synchronisations", len(syncs))
    assert not syncs, "\n".join(syncs)


@pytest.mark.parametrize("amp", ["none", "bf16"])
def test_the_graphed_assignment_pass_is_the_network_and_follows_its_weights(amp):
    torch.manual_seed(0)
    model = load_config("voc", None, None, ["model.pretrained=none"]).model
    network = build_network(model, 20, pretrained=False).cuda().eval().requires_grad_(False)
    graphed = GraphedForward(network)
    for size in (448, 224, 448):  # captured, captured, replayed
        images = torch.randn(4, 3, size, size, device="cuda")
        with torch.no_grad(), autocast("cuda", amp):
            expected, replayed = network(images), graphed(images)
        torch.testing.assert_close(replayed.cam, expected.cam)
        torch.testing.assert_close(replayed.seg, expected.seg)
    torch._foreach_mul_(list(network.parameters()), 0.5)  # in place, as the EMA updates
    with torch.no_grad(), autocast("cuda", amp):
        torch.testing.assert_close(graphed(images).logits, network(images).logits)
    assert len(graphed.graphs) == 2 and graphed.capturable


def test_a_bf16_step_is_finite_and_close_to_fp32(tiny_data, tmp_path, record_property):
    """The voc network's losses in one step, gate open, under bf16 autocast and in fp32."""
    cfg = voc_config(tiny_data)
    trainer = Trainer(cfg, tmp_path / "run", GPU)
    batch = {key: value.to("cuda") for key, value in next(iter(trainer._loader())).items()}
    objective = CoSAObjective(cfg.method)
    step = cfg.method.loss_warmup_iters + 1
    terms = {}
    for mode in ("none", "bf16"):
        with torch.no_grad(), autocast("cuda", mode):
            losses = objective(trainer.online, trainer.assignment, batch, step)
        terms[mode] = {name: float(value) for name, value in {"total": losses.total, **losses.terms}.items()}
    distance = {name: abs(terms["bf16"][name] - value) / abs(value) for name, value in terms["none"].items()}
    record_property("bf16_relative_distance", distance)
    assert all(math.isfinite(value) for value in terms["bf16"].values()), terms
    assert max(distance.values()) <= BF16_TOLERANCE, (distance, terms)


def test_a_checkpoint_saved_on_the_gpu_resumes_on_the_cpu_and_back(tiny_data, tmp_path):
    run = tmp_path / "run"
    Trainer(tiny_config(tiny_data, "cuda", "train.iterations=2"), run, GPU).fit()
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    on_cpu = Trainer(tiny_config(tiny_data, "cpu", "train.iterations=4"), run, CPU, resume=True)
    assert on_cpu.iteration == 2 and states_equal(on_cpu.online.state_dict(), saved["online"])
    assert states_equal(on_cpu.assignment.state_dict(), saved["assignment"])
    on_cpu.fit()
    saved = load_checkpoint(run / "checkpoints" / "last.pt")
    back = Trainer(tiny_config(tiny_data, "cuda", "train.iterations=6"), run, GPU, resume=True)
    assert back.iteration == 4 and states_equal(back.online.state_dict(), saved["online"])
    assert next(back.online.parameters()).is_cuda
    assert back.fit() is not None
    for device in ("cpu", "cuda"):  # what evaluate and predict read
        model = load_trained(run / "checkpoints" / "last.pt", torch.device(device))
        assert next(model.network.parameters()).device.type == device


def relative_distance(first: dict, second: dict, reference: dict) -> float:
    """‖first − second‖ over ‖first − reference‖, all floating-point tensors together."""
    keys = [key for key, value in first.items() if value.is_floating_point()]
    apart = sum(float((first[k] - second[k]).double().square().sum()) for k in keys)
    moved = sum(float((first[k] - reference[k]).double().square().sum()) for k in keys)
    return math.sqrt(apart / moved)


@pytest.mark.slow
def test_kill_9_then_resume_on_the_gpu_continues_the_run(tiny_data, tmp_path, record_property):
    """Killed inside iteration 3, resumed from iteration 2: the same batches and schedule. GPU kernels
    add in a varying order (atomics), so the weights are compared with what the uninterrupted run
    moved them by after iteration 2: at most 1% of it apart."""
    device = ("train.device=cuda",)
    whole, killed = tmp_path / "whole", tmp_path / "killed"
    completed = finish(cosa_train(whole, tiny_data, extra=device))
    assert completed.returncode == 0, completed.stderr[-3000:]
    interrupted = finish(cosa_train(killed, tiny_data, "ema:3", extra=device))
    assert interrupted.returncode == -9, interrupted.stderr[-3000:]
    at_resume = load_checkpoint(killed / "checkpoints" / "last.pt")
    assert at_resume["iteration"] == 2
    resumed = finish(cosa_train(killed, tiny_data, resume=True))
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    expected, last = (load_checkpoint(run / "checkpoints" / "last.pt") for run in (whole, killed))
    for network in ("online", "assignment"):
        distance = relative_distance(expected[network], last[network], at_resume[network])
        record_property(f"{network}_distance", distance)
        assert distance < 0.01
    logged = [
        [(e["iteration"], e["train/lr"]) for e in read_metrics(run) if "train/loss" in e] for run in (whole, killed)
    ]
    assert logged[0] == logged[1] and [iteration for iteration, _ in logged[0]] == [2, 4, 6]


@pytest.mark.slow
def test_torchrun_with_nccl_runs_the_code_of_many_gpus(tiny_data, tmp_path):
    run = tmp_path / "run"
    command = torchrun_command(Path(__file__).parent / "ddp_worker.py", tiny_data, run, "release", "cuda", processes=1)
    completed = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    state = torch.load(run / "rank0.pt", weights_only=False)
    assert state["backend"] == "nccl" and state["data_parallel"] and state["iteration"] == 6
    assert all(torch.isfinite(value).all() for value in state["online"].values() if value.is_floating_point())
