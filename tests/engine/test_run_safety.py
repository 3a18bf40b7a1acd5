"""A user's runs are never silently changed or lost (issue 22, the training side).

The configuration a run trains with is what the user asked for, and a resumed run keeps it; one run
per folder; the checkpoint is written before risky work and the data checked early; every user
mistake is one line with exit status 2; SIGTERM ends a run like Ctrl-C. docs/reliability.md lists
each case with its test.
"""

from __future__ import annotations

import errno
import io
import os
import shutil
import signal
import subprocess
import time
from dataclasses import asdict
from pathlib import Path

import pytest
import torch
import yaml

import cosa.engine.checkpoint as checkpoint_module
import cosa.engine.runlog as runlog_module
import cosa.engine.trainer as trainer_module
import cosa.files as files_module
from cosa.cli import train as train_command
from cosa.cli.main import Terminated, build_parser, main
from cosa.config import Config
from cosa.config.load import load_config, save_config
from cosa.engine.checkpoint import load_checkpoint, save_checkpoint
from cosa.engine.runlog import RunLog, read_metrics
from cosa.errors import CosaError

from conftest import (
    SUBPROCESS_ENV,
    TINY_OVERRIDES,
    assert_one_line_error,
    cosa_command,
    lock_held_by_another_process,
    run_cli,
    torchrun_command,
)

# Three iterations: a checkpoint and an evaluation at 3.
SHORT = [*TINY_OVERRIDES, "train.iterations=3", "train.device=cpu"]
# The run of `paper_run`: a recipe and an override that a resumed run must keep.
RUN_OPTIONS = ["--config", "demo", "--recipe", "paper", *SHORT, "method.raw.enabled=false"]


def train(capsys, *argv) -> tuple[int, str, str]:
    return run_cli(capsys, "train", *argv)


def train_error(capsys, *argv) -> str:
    """``cosa train ARGV``, which must fail with exit status 2 and one line; that line."""
    code, _, err = train(capsys, *argv)
    assert_one_line_error(code, err)
    return next(line for line in err.splitlines() if line.startswith("cosa: error: "))


@pytest.fixture(scope="module")
def paper_run(tiny_data, tmp_path_factory) -> Path:
    """A finished 3-iteration run of the paper recipe with method.raw.enabled=false."""
    run = tmp_path_factory.mktemp("trained") / "run"
    assert main(["train", "--data", str(tiny_data), "--out", str(run), *RUN_OPTIONS]) == 0
    return run


@pytest.fixture
def run_copy(paper_run, tmp_path) -> Path:
    return Path(shutil.copytree(paper_run, tmp_path / "run"))


def resolved(*argv) -> Config:
    """The configuration ``cosa train ARGV`` would train with."""
    return train_command.resolve_config(build_parser().parse_args(["train", *map(str, argv)]))[0]


def files_of(folder: Path) -> dict[str, bytes]:
    return {str(path.relative_to(folder)): path.read_bytes() for path in sorted(folder.rglob("*")) if path.is_file()}


def copy_dataset(tiny_data: Path, target: Path) -> Path:
    shutil.copytree(tiny_data, target)
    shutil.rmtree(target / ".cosa", ignore_errors=True)
    return target


# --- 1. a run's configuration is what the user asked for ----------------------------------------


def test_a_yaml_file_sits_above_the_recipe_and_below_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: demo\nmethod:\n  aux_cam_last_scale_only: false\n  contrastive:\n    enabled: false\n")
    cfg = load_config(str(path), "paper")  # the paper recipe enables L_csc; the file turns it off
    assert cfg.method.aux_cam_last_scale_only is False and cfg.method.contrastive.enabled is False
    assert cfg.method.raw.enabled is True and cfg.train.iterations == 400  # the recipe above the demo preset
    assert load_config(str(path), "release").method.aux_cam_last_scale_only is False  # release sets true
    assert load_config(str(path), "paper", None, ["method.contrastive.enabled=true"]).method.contrastive.enabled


def test_resume_keeps_the_stored_recipe_and_overrides(run_copy):
    stored = load_checkpoint(run_copy / "checkpoints" / "last.pt")["config"]
    cfg = resolved("--out", run_copy, "--resume")
    assert cfg.method.raw.enabled is False and cfg.method.recipe == "paper"  # the recipe is not merged again
    assert asdict(cfg) == stored == yaml.safe_load((run_copy / "config.yaml").read_text())


def test_resume_with_the_stored_values_given_again_works(run_copy, tiny_data):
    assert resolved("--data", tiny_data, "--out", run_copy, "--resume", *RUN_OPTIONS) == resolved(
        "--out", run_copy, "--resume"
    )


def test_a_run_of_the_own_preset_resumes_with_its_command_line_given_again(tiny_data, tmp_path, capsys):
    """The settings measured on the data are measured again, the same: the resumed run changes nothing."""
    argv = ["--config", "own", "--data", tiny_data, "--out", tmp_path / "run", *SHORT, "train.iterations=3"]
    code, out, err = train(capsys, *argv)
    assert code == 0, err
    assert "settings scaled to split 'train' (24 images" in out
    code, _, err = train(capsys, *argv[:-1], "train.iterations=4", "--resume")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["iteration"] == 4


def test_resume_refuses_changed_values_and_lists_them(run_copy, capsys):
    line = train_error(capsys, "--out", run_copy, "--resume", "train.batch_size=8", "data.crop_size=96")
    assert line == (
        f"cosa: error: {run_copy}: --resume would change data.crop_size (64 → 96), "
        "train.batch_size (4 → 8); a resumed run keeps what shapes its weights (train.iterations may "
        "be raised; where it runs, reads its data, logs, checkpoints and evaluates may change)"
    )


def test_resume_accepts_every_change_that_cannot_alter_the_weights(run_copy, tiny_data, tmp_path):
    moved = copy_dataset(tiny_data, tmp_path / "moved")
    free = [
        "data.num_workers=2",
        "data.val_split=train",
        "model.pretrained=hub",
        "train.device=cpu",
        "train.log_every=7",
        "train.eval_every=9",
        "train.checkpoint_every=5",
        "train.monitor_cpl=false",
        "eval.scales=[1.0]",
        "eval.batch_size=1",
        "eval.amp=bf16",
        "eval.max_images=2",
    ]
    cfg = resolved("--out", run_copy, "--resume", "--data", moved, *free)
    assert cfg.data.root == str(moved) and cfg.model.pretrained == "hub" and cfg.eval.max_images == 2
    assert cfg.data.num_workers == 2 and cfg.train.checkpoint_every == 5 and cfg.eval.scales == [1.0]


def test_a_run_started_with_a_relative_data_path_resumes_from_another_folder(tiny_data, tmp_path, monkeypatch, capsys):
    copy_dataset(tiny_data, tmp_path / "project" / "data")
    monkeypatch.chdir(tmp_path / "project")
    one_step = ["train.iterations=1", "method.loss_warmup_iters=0", "optim.warmup_iters=0"]  # warm-ups within it
    code, _, err = train(capsys, "--config", "demo", "--data", "data", "--out", "run", *SHORT, *one_step)
    assert code == 0, err
    monkeypatch.chdir(tmp_path)
    code, _, err = train(capsys, "--out", "project/run", "--resume", "train.iterations=2")
    assert code == 0, err
    assert load_checkpoint(tmp_path / "project" / "run" / "checkpoints" / "last.pt")["iteration"] == 2


def test_resume_of_a_run_whose_dataset_moved_says_to_name_its_new_place(run_copy, tiny_data, tmp_path, capsys):
    moved = copy_dataset(tiny_data, tmp_path / "moved")
    saved = run_copy / "config.yaml"
    last = run_copy / "checkpoints" / "last.pt"
    payload = load_checkpoint(last)
    payload["config"]["data"]["root"] = str(tmp_path / "gone")
    save_checkpoint(last, payload)
    saved.write_text(saved.read_text().replace(str(tiny_data), str(tmp_path / "gone")))
    line = train_error(capsys, "--out", run_copy, "--resume", "train.iterations=4")
    assert line == (
        f"cosa: error: {tmp_path / 'gone'}: the run's dataset is not there; if it moved, resume with --data NEW_PATH"
    )
    code, _, err = train(capsys, "--out", run_copy, "--resume", "--data", moved, "train.iterations=4")
    assert code == 0, err
    assert load_checkpoint(last)["config"]["data"]["root"] == str(moved)


def test_commands_on_a_checkpoint_whose_dataset_moved_say_to_name_its_new_place(run_copy, tiny_data, tmp_path, capsys):
    moved = copy_dataset(tiny_data, tmp_path / "moved")
    last = run_copy / "checkpoints" / "last.pt"
    payload = load_checkpoint(last)
    payload["config"]["data"]["root"] = str(tmp_path / "gone")
    save_checkpoint(last, payload)
    gone = f"cosa: error: {tmp_path / 'gone'}: the dataset of {last} is not there; if it moved, pass --data NEW_PATH"
    for command in (
        ["evaluate", "--checkpoint", last, "--max-images", 1],
        ["export-pseudo-labels", "--checkpoint", last, "--out", tmp_path / "pseudo", "--max-images", 1],
        ["report", run_copy, "--max-images", 1, "--out", tmp_path / "report.html"],
    ):
        code, _, err = run_cli(capsys, *command)
        assert_one_line_error(code, err)
        assert err.strip().startswith(gone), command
        code, _, err = run_cli(capsys, *command, "--data", moved)
        assert code == 0, err


@pytest.mark.parametrize(
    ("options", "change"),
    [
        pytest.param(["--config", "coco"], "method.cam_thresholds.high (0.8 → 0.65)", id="config"),
        pytest.param(["--config", "voc"], "data.crop_size (64 → 448)", id="config-of-the-defaults"),
        pytest.param(["--recipe", "release"], "method.recipe (paper → release)", id="recipe"),
        pytest.param(["train.iterations=2"], "train.iterations (3 → 2)", id="fewer-iterations"),
    ],
)
def test_resume_refuses_another_config_recipe_or_fewer_iterations(run_copy, capsys, options, change):
    assert change in train_error(capsys, "--out", run_copy, "--resume", *options)


def test_resume_refuses_an_edited_config_yaml(run_copy, capsys):
    saved = run_copy / "config.yaml"
    saved.write_text(saved.read_text().replace("backbone: mobilenetv2_050", "backbone: resnet18"))
    line = train_error(capsys, "--out", run_copy, "--resume")
    assert f"{saved}: its edits would change model.backbone (mobilenetv2_050 → resnet18)" in line


def test_resume_may_raise_iterations_which_the_run_records(run_copy, capsys):
    expected = load_checkpoint(run_copy / "checkpoints" / "last.pt")["config"]
    expected["train"]["iterations"] = 4
    code, out, err = train(capsys, "--out", run_copy, "--resume", "train.iterations=4")
    assert code == 0, err
    last = load_checkpoint(run_copy / "checkpoints" / "last.pt")
    assert last["iteration"] == 4 and last["config"] == expected  # nothing else changed
    assert yaml.safe_load((run_copy / "config.yaml").read_text()) == expected


def test_a_config_read_from_a_checkpoint_is_validated(run_copy, capsys):
    path = run_copy / "checkpoints" / "last.pt"
    payload = load_checkpoint(path)
    payload["config"]["data"]["crop_size"] = 8
    save_checkpoint(path, payload)
    (run_copy / "config.yaml").unlink()
    line = train_error(capsys, "--out", run_copy, "--resume")
    assert "bad value for config key 'data.crop_size': must be at least 16" in line


# --- 2. one run per folder ----------------------------------------------------------------------


@pytest.mark.slow
def test_a_folder_locked_by_a_live_run_is_refused_naming_its_pid(tiny_data, tmp_path, capsys):
    run = tmp_path / "run"
    run.mkdir()
    with lock_held_by_another_process(run / ".lock") as holder:  # the lock of cosa.locks, as a live run holds it
        line = train_error(capsys, "--config", "demo", "--data", tiny_data, "--out", run, *SHORT)
        assert (run / ".lock").read_text().startswith(f"{holder.pid} ")  # not ours to remove
    assert line == (
        f"cosa: error: {run}: another run trains in this folder (pid {holder.pid} on {os.uname().nodename}); "
        "wait for it to end or choose another --out"
    )


@pytest.mark.slow
def test_a_lock_left_by_a_run_killed_with_kill_9_blocks_nothing(run_copy, capsys):
    with lock_held_by_another_process(run_copy / ".lock") as holder:
        holder.kill()  # kill -9: the lock file stays, the kernel releases its lock
        holder.wait()
        assert (run_copy / ".lock").read_text().startswith(f"{holder.pid} ")
        code, _, err = train(capsys, "--out", run_copy, "--resume", "train.iterations=4")
    assert code == 0, err
    assert "taking over" not in err  # no stale lock to detect, nothing to warn about
    assert not (run_copy / ".lock").exists()


def test_the_lock_is_held_while_training_and_released_when_the_run_fails(tiny_data, tmp_path, capsys, monkeypatch):
    run, held = tmp_path / "run", []

    def failing_build(*args, **kwargs):
        held.append((run / ".lock").read_text())
        raise CosaError("the model cannot be built")

    monkeypatch.setattr(trainer_module, "build_network", failing_build)
    line = train_error(capsys, "--config", "demo", "--data", tiny_data, "--out", run, *SHORT)
    assert line.endswith("cannot be built")
    assert held == [f"{os.getpid()} {os.uname().nodename}\n"] and not (run / ".lock").exists()


@pytest.mark.parametrize(
    "contents",
    [["notes.txt"], ["photos/"], [f"image_{i}.png" for i in range(7)]],
    ids=["a file", "a folder", "many files"],
)
def test_a_fresh_run_refuses_a_folder_of_other_files(tiny_data, tmp_path, capsys, contents):
    run = tmp_path / "mine"
    run.mkdir()
    for name in contents:
        if name.endswith("/"):
            (run / name).mkdir()
        else:
            (run / name).write_text("mine")
    before = files_of(run)
    line = train_error(capsys, "--config", "demo", "--data", tiny_data, "--out", run, *SHORT)
    shown = ", ".join(contents[:5]) + (", … (7 entries)" if len(contents) > 5 else "")
    assert line == (
        f"cosa: error: {run}: is not empty and holds no cosa run ({shown}); a run needs a folder of its own: "
        "choose another --out (a new or empty folder)"
    )
    assert files_of(run) == before and sorted(os.listdir(run)) == sorted(name.rstrip("/") for name in contents)


def test_a_fresh_run_may_use_a_folder_holding_only_a_killed_runs_lock(tiny_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    run.mkdir()
    (run / ".lock").write_text("4242 elsewhere\n")  # what a run killed before writing anything leaves

    def started(*args, **kwargs):
        raise CosaError("the run started")

    monkeypatch.setattr(trainer_module, "build_network", started)
    line = train_error(capsys, "--config", "demo", "--data", tiny_data, "--out", run, *SHORT)
    assert line == "cosa: error: the run started"  # the folder was accepted
    assert os.listdir(run) == []  # and the lock released


@pytest.mark.parametrize("entry", ["config.yaml", "metrics.jsonl", "checkpoints/best.pt"])
def test_a_fresh_run_refuses_a_folder_holding_a_run(tiny_data, tmp_path, capsys, entry):
    run = tmp_path / "run"
    (run / entry).parent.mkdir(parents=True)
    (run / entry).write_text("")
    before = files_of(run)
    line = train_error(capsys, "--config", "demo", "--data", tiny_data, "--out", run, *SHORT)
    assert f"{run}: holds a run that wrote no checkpoint ({entry})" in line and "another --out" in line
    assert files_of(run) == before


def test_a_fresh_run_into_a_finished_run_points_to_resume(paper_run, tiny_data, capsys):
    line = train_error(capsys, "--config", "demo", "--data", tiny_data, "--out", paper_run, *SHORT)
    assert f"{paper_run}: holds a run already (" in line and "use --resume to continue it, or another --out" in line


def test_resuming_a_finished_run_says_so_and_changes_nothing(run_copy, capsys):
    before = {path: path.stat().st_mtime_ns for path in run_copy.rglob("*") if path.is_file()}
    line = train_error(capsys, "--out", run_copy, "--resume")
    assert line == (
        f"cosa: error: {run_copy}: the run finished at iteration 3 (final_metrics.json); raise train.iterations "
        "to continue it, or evaluate it again with cosa evaluate"
    )
    assert {path: path.stat().st_mtime_ns for path in run_copy.rglob("*") if path.is_file()} == before


def test_resume_without_a_checkpoint_refuses_and_keeps_the_history(run_copy, capsys):
    (run_copy / "checkpoints" / "last.pt").unlink()
    with open(run_copy / "metrics.jsonl", "a") as log:
        log.write('{"iteration": 4, "train/lo')  # a partial line, as a kill leaves it
    before = files_of(run_copy)
    line = train_error(capsys, "--out", run_copy, "--resume")
    assert (
        f"{run_copy}: nothing to resume from (no checkpoints/last.pt) but the folder holds config.yaml, "
        "metrics.jsonl, final_metrics.json, checkpoints/best.pt, tensorboard/" in line
    )
    assert "delete it to start over, or use another --out" in line
    assert files_of(run_copy) == before


@pytest.mark.slow
def test_two_runs_in_one_folder_the_second_is_refused(tiny_data, tmp_path):
    run = tmp_path / "run"
    command = cosa_command(
        "train",
        "--config",
        "demo",
        "--data",
        tiny_data,
        "--out",
        run,
        *SHORT,
        "train.iterations=1000",
        "train.eval_every=1000",
    )
    first = subprocess.Popen(command, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / ".lock").exists() and time.time() < deadline:
        time.sleep(0.05)
    second = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
    first.send_signal(signal.SIGTERM)
    first_err = first.communicate(timeout=120)[1]
    assert second.returncode == 2 and "Traceback" not in second.stderr
    assert f"another run trains in this folder (pid {first.pid} on" in second.stderr.strip().splitlines()[-1]
    assert first.returncode == 143, first_err[-3000:]  # the first run went on until stopped
    assert not (run / ".lock").exists()


@pytest.mark.slow
def test_under_torchrun_a_refused_folder_ends_every_rank(tiny_data, tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text("")
    command = torchrun_command("-m", "cosa", "train", "--config", "demo", "--data", tiny_data, "--out", run, *SHORT)
    completed = subprocess.run(command, env=SUBPROCESS_ENV, capture_output=True, text=True, timeout=120)
    assert completed.returncode != 0
    assert f"cosa: error: {run}: holds a run that wrote no checkpoint" in completed.stderr
    assert "rank 0 could not start the run" in completed.stderr  # the other rank did not wait for it
    assert not (run / ".lock").exists()


# --- 3. save before risky work; check early ------------------------------------------------------


def test_a_failed_evaluation_loses_no_training_and_resume_runs_it(tiny_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"

    def failing_evaluation(*args, **kwargs):
        raise CosaError("val_0003.png: mask is (8, 8) but its image is (64, 64)")

    real_evaluation = trainer_module.evaluate
    monkeypatch.setattr(trainer_module, "evaluate", failing_evaluation)
    train_error(capsys, "--config", "demo", "--data", tiny_data, "--out", run, *SHORT)
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 3  # written before the evaluation

    monkeypatch.setattr(trainer_module, "evaluate", real_evaluation)
    code, _, err = train(capsys, "--out", run, "--resume")
    assert code == 0, err
    assert (run / "final_metrics.json").is_file() and (run / "checkpoints" / "best.pt").is_file()
    assert [entry["iteration"] for entry in read_metrics(run) if "val/miou_unmasked" in entry] == [3]


def test_a_validation_split_with_missing_masks_stops_training_at_the_start(tiny_data, tmp_path, capsys):
    data = copy_dataset(tiny_data, tmp_path / "data")
    for name in ("val_0002", "val_0005"):
        (data / "masks" / f"{name}.png").unlink()
    line = train_error(capsys, "--config", "demo", "--data", data, "--out", tmp_path / "run", *SHORT)
    assert line == (
        f"cosa: error: {data}: split 'val' lacks the masks of 2 of its 8 images (val_0002, val_0005); "
        "evaluation needs all of them"
    )
    assert not (tmp_path / "run" / "config.yaml").exists()  # stopped before training


def test_a_validation_split_that_cannot_be_read_stops_training_at_the_start(tiny_data, tmp_path, capsys):
    data = copy_dataset(tiny_data, tmp_path / "data")
    (data / "val.csv").write_text("image,labels\nval_0000.png,unicorn\n")
    line = train_error(capsys, "--config", "demo", "--data", data, "--out", tmp_path / "run", *SHORT)
    assert line == f"cosa: error: {data / 'val.csv'}:2: unknown class name(s) ['unicorn'] (not in classes.txt)"


def test_data_check_reports_missing_validation_masks(tiny_data, tmp_path, capsys):
    data = copy_dataset(tiny_data, tmp_path / "data")
    (data / "masks" / "val_0002.png").unlink()
    code, out, _ = run_cli(capsys, "data", "check", data)
    assert code == 1
    assert f"problem: {data}: split 'val' lacks the masks of 1 of its 8 images (val_0002)" in out


def test_a_validation_split_without_masks_trains_without_evaluation_said_once(tiny_data, tmp_path, capsys):
    data = copy_dataset(tiny_data, tmp_path / "data")
    for mask in (data / "masks").glob("val_*.png"):
        mask.unlink()
    code, out, err = train(capsys, "--config", "demo", "--data", data, "--out", tmp_path / "run", *SHORT)
    assert code == 0, err
    assert err.count("no evaluation during training") == 1 and "split 'val'" in err
    assert "no evaluation" in out and load_checkpoint(tmp_path / "run" / "checkpoints" / "last.pt")["iteration"] == 3


# --- 4. every user mistake is one line, exit status 2 ---------------------------------------------


def test_out_that_is_a_file_is_refused(tiny_data, tmp_path, capsys):
    out = tmp_path / "run"
    out.write_text("notes")
    line = train_error(capsys, "--config", "demo", "--data", tiny_data, "--out", out, *SHORT)
    assert line == f"cosa: error: {out}: not a folder (--out names the run's folder)"
    assert out.read_text() == "notes"


def test_out_that_cannot_be_written_is_refused_before_the_model_is_built(tiny_data, tmp_path, capsys, monkeypatch):
    # Tests may run as root, whom file modes do not stop: the refusal is simulated where it happens.
    real_open = os.open

    def read_only_open(path, flags, *args, **kwargs):
        if str(path).endswith(".lock"):
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only_open)
    monkeypatch.setattr(trainer_module, "build_network", lambda *args, **kwargs: pytest.fail("model built"))
    line = train_error(capsys, "--config", "demo", "--data", tiny_data, "--out", tmp_path / "run", *SHORT)
    assert line == f"cosa: error: {tmp_path / 'run'}: cannot write (Permission denied)"


def test_a_full_disk_while_writing_a_checkpoint_keeps_the_previous_one(tiny_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real_save, saves = checkpoint_module.torch.save, []

    def save(payload, stream):
        saves.append(payload["iteration"])
        if len(saves) == 2:
            stream.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(payload, stream)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    line = train_error(
        capsys,
        "--config",
        "demo",
        "--data",
        tiny_data,
        "--out",
        run,
        *SHORT,
        "train.checkpoint_every=1",
        "train.eval_every=100",
    )
    assert line == f"cosa: error: {run / 'checkpoints' / 'last.pt'}: cannot write (No space left on device)"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 1
    assert not list(run.rglob("*.tmp")) and not (run / ".lock").exists()


def test_a_full_disk_is_named_though_torch_reports_unexpected_pos(tmp_path, monkeypatch):
    # torch.save turns its stream's ENOSPC into "RuntimeError: … unexpected pos"; /dev/full is a full disk.
    monkeypatch.setattr(
        files_module.tempfile,
        "mkstemp",
        lambda **kwargs: (os.open("/dev/full", os.O_WRONLY), str(tmp_path / ".last.pt.x.tmp")),
    )
    with pytest.raises(CosaError) as error:
        save_checkpoint(tmp_path / "last.pt", {"online": {"w": torch.zeros(100_000)}})
    assert str(error.value) == f"{tmp_path / 'last.pt'}: cannot write (No space left on device)"


def test_a_full_disk_while_appending_to_the_metric_log_is_one_line(tmp_path, monkeypatch):
    log = RunLog(tmp_path, enabled=True)

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(runlog_module, "open", full, raising=False)  # the module's open(), not everyone's
    with pytest.raises(CosaError) as error:
        log.write(1, {"train/loss": 1.0})
    log.close()
    assert str(error.value) == f"{tmp_path / 'metrics.jsonl'}: cannot write (No space left on device)"


def test_a_cuda_device_that_does_not_exist_is_one_line(tiny_data, tmp_path, capsys):
    missing = f"cuda:{torch.cuda.device_count()}"
    line = train_error(
        capsys, "--config", "demo", "--data", tiny_data, "--out", tmp_path / "run", *SHORT, f"train.device={missing}"
    )
    assert f"train.device={missing}: {missing} is not available (" in line
    assert not (tmp_path / "run").exists()  # refused before the run folder is made


@pytest.mark.parametrize(
    ("where", "key"),
    [
        pytest.param("file", "data.root", id="yaml-value"),
        pytest.param("train.seed=${train.iterations}", "train.seed", id="override"),
    ],
)
def test_interpolations_are_refused_naming_the_key(tiny_data, tmp_path, capsys, where, key):
    config = tmp_path / "mine.yaml"
    config.write_text("base: demo\ndata:\n  root: ${oc.env:HOME}/data\n" if where == "file" else "base: demo\n")
    overrides = [] if where == "file" else [where]
    line = train_error(capsys, "--config", config, "--out", tmp_path / "run", *SHORT, *overrides)
    assert f"config key '{key}' is '$" in line and "configs hold plain values" in line


def test_a_malformed_override_is_one_line(tiny_data, tmp_path, capsys):
    line = train_error(
        capsys, "--config", "demo", "--data", tiny_data, "--out", tmp_path / "run", "eval.scales=[1.0,0.5"
    )
    assert line.startswith("cosa: error: override 'eval.scales=[1.0,0.5': not a valid value (")


def test_more_than_254_class_names_are_refused(tiny_data, tmp_path, capsys):
    data = copy_dataset(tiny_data, tmp_path / "data")
    (data / "classes.txt").write_text("".join(f"class{index}\n" for index in range(300)))
    line = train_error(capsys, "--config", "demo", "--data", data, "--out", tmp_path / "run", *SHORT)
    assert line == (
        f"cosa: error: {data / 'classes.txt'}: 300 class names, at most 254 (masks are 8-bit: "
        "0 is background, 1..254 the classes, 255 ignore)"
    )


@pytest.mark.parametrize(("name", "separator"), [("cat;dog", ";"), ("cat, dog", ",")])
def test_class_names_holding_a_csv_separator_are_refused(tiny_data, tmp_path, capsys, name, separator):
    data = copy_dataset(tiny_data, tmp_path / "data")
    (data / "classes.txt").write_text(f"ball\n{name}\n")
    line = train_error(capsys, "--config", "demo", "--data", data, "--out", tmp_path / "run", *SHORT)
    assert line.startswith(f"cosa: error: {data / 'classes.txt'}: class name '{name}' contains '{separator}'")


def test_an_unreadable_masks_folder_is_one_line(tiny_data, tmp_path, capsys, monkeypatch):
    # As root, a folder's mode does not stop reading: the stat of a mask fails as it would for a user.
    data = copy_dataset(tiny_data, tmp_path / "data")
    real_is_file = Path.is_file

    def is_file(path):
        if path.parent == data / "masks":
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_is_file(path)

    monkeypatch.setattr(Path, "is_file", is_file)
    line = train_error(capsys, "--config", "demo", "--data", data, "--out", tmp_path / "run", *SHORT)
    assert line == f"cosa: error: {data / 'masks'}: cannot read folder (Permission denied)"


# --- 5. SIGTERM, file modes, atomic truncation ------------------------------------------------------


def test_sigterm_during_a_checkpoint_write_leaves_no_partial_file(tiny_data, tmp_path, capsys, monkeypatch):
    run = tmp_path / "run"
    real_save, saves = checkpoint_module.torch.save, []

    def save(payload, stream):
        saves.append(None)
        if len(saves) == 2:
            stream.write(b"partial")
            raise Terminated  # what the SIGTERM handler raises
        real_save(payload, stream)

    monkeypatch.setattr(checkpoint_module.torch, "save", save)
    code, _, err = train(
        capsys,
        "--config",
        "demo",
        "--data",
        tiny_data,
        "--out",
        run,
        *SHORT,
        "train.checkpoint_every=1",
        "train.eval_every=100",
    )
    assert code == 143 and err.strip().splitlines()[-1] == "cosa: terminated"
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] == 1
    assert not list(run.rglob("*.tmp")) and not (run / ".lock").exists()


@pytest.mark.slow
def test_sigterm_ends_training_like_ctrl_c(tiny_data, tmp_path):
    run = tmp_path / "run"
    command = cosa_command(
        "train",
        "--config",
        "demo",
        "--data",
        tiny_data,
        "--out",
        run,
        *TINY_OVERRIDES,
        "train.iterations=1000",
        "train.checkpoint_every=1",
        "train.eval_every=1000",
    )
    process = subprocess.Popen(command, env=SUBPROCESS_ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while not (run / "checkpoints" / "last.pt").exists() and time.time() < deadline:
        time.sleep(0.05)
    process.send_signal(signal.SIGTERM)
    _, err = process.communicate(timeout=120)
    assert process.returncode == 143 and err.strip().splitlines()[-1] == "cosa: terminated", err[-3000:]
    assert not list(run.rglob("*.tmp")) and not (run / ".lock").exists()
    assert load_checkpoint(run / "checkpoints" / "last.pt")["iteration"] >= 1


def test_checkpoints_follow_the_umask_like_other_files(tmp_path):
    save_checkpoint(tmp_path / "last.pt", {"iteration": 1})
    save_config(load_config("demo"), tmp_path / "config.yaml")
    (tmp_path / "plain").write_text("")
    mode = (tmp_path / "plain").stat().st_mode & 0o777
    assert (tmp_path / "last.pt").stat().st_mode & 0o777 == mode
    assert (tmp_path / "config.yaml").stat().st_mode & 0o777 == mode


def test_truncating_the_metric_log_on_resume_is_atomic(tmp_path, monkeypatch):
    log = tmp_path / "metrics.jsonl"
    log.write_text('{"iteration": 2, "train/loss": 1.0}\n{"iteration": 4, "train/loss": 0.5}\n')
    before = log.read_bytes()

    def killed(*args):
        raise Terminated

    monkeypatch.setattr(files_module.os, "replace", killed)
    with pytest.raises(Terminated):
        RunLog(tmp_path, enabled=True, resume_from=2)
    monkeypatch.undo()
    assert log.read_bytes() == before and [path.name for path in tmp_path.iterdir()] == ["metrics.jsonl"]
    RunLog(tmp_path, enabled=True, resume_from=2).close()
    assert [entry["iteration"] for entry in read_metrics(tmp_path)] == [2]


# --- second pass: mistakes found before the run folder is touched ----------------------------------


def test_a_batch_the_processes_cannot_share_is_refused_before_the_run_folder_is_made(
    tiny_data, tmp_path, capsys, monkeypatch
):
    from cosa.engine import distributed

    # What torchrun with 2 processes gives rank 0; the check needs no collective, so none is started.
    monkeypatch.setattr(
        distributed, "init_distributed", lambda device: distributed.DistContext(0, 2, 0, torch.device("cpu"))
    )
    run = tmp_path / "run"
    line = train_error(capsys, "--config", "demo", "--data", tiny_data, "--out", run, *SHORT, "train.batch_size=3")
    assert line.endswith("train.batch_size=3 must be divisible by the number of processes (2)")
    assert not run.exists()  # no config.yaml that would make the corrected command refuse the folder


@pytest.mark.parametrize("mistake", ["no dataset", "empty dataset folder", "unknown backbone"])
def test_a_run_that_cannot_start_leaves_no_empty_run_folder(tiny_data, tmp_path, capsys, mistake):
    (tmp_path / "empty").mkdir()
    data = {
        "no dataset": [],
        "empty dataset folder": ["--data", tmp_path / "empty"],
        "unknown backbone": ["--data", tiny_data],
    }[mistake]
    options = [*data, *SHORT, *(["model.backbone=resnet999"] if mistake == "unknown backbone" else [])]
    run = tmp_path / "run"
    line = train_error(capsys, "--config", "demo", "--out", run, *options)
    assert {
        "no dataset": "no dataset",
        "empty dataset folder": "cannot tell the dataset layout",
        "unknown backbone": "resnet999",
    }[mistake] in line
    assert not run.exists()
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("kept")
    train_error(capsys, "--config", "demo", "--out", tmp_path / "mine", *options)
    assert [path.name for path in (tmp_path / "mine").iterdir()] == ["notes.txt"]  # a folder it did not make stays


@pytest.mark.parametrize("write", ["write_atomically", "write_file"])
def test_an_interrupt_inside_a_writer_that_then_fails_to_close_stays_an_interrupt(tmp_path, write):
    """SIGTERM inside torch.save: its zip writer then fails on closing ('unexpected pos …'), which
    must not turn the clean stop into a traceback, nor leave a partial file."""

    class Interrupting(io.RawIOBase):
        def __init__(self, stream) -> None:
            self.stream, self.calls = stream, 0

        def writable(self) -> bool:
            return True

        def write(self, data) -> int:
            self.calls += 1
            if self.calls == 3:
                raise Terminated
            return self.stream.write(data)

    payload = {"weights": torch.zeros(1000)}
    with pytest.raises(Terminated):
        if write == "write_atomically":
            files_module.write_atomically(tmp_path / "x.pt", lambda stream: torch.save(payload, Interrupting(stream)))
        else:
            files_module.write_file(tmp_path / "x.pt", lambda path: torch.save(payload, Interrupting(open(path, "wb"))))
    assert list(tmp_path.iterdir()) == []
