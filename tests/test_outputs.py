"""Outputs never overwrite inputs, earlier outputs are replaced only on request, output paths are
checked before any work, and write failures are one line (docs/reliability.md, "Outputs").

The checkpoint is untrained (``save_untrained_checkpoint``): these commands need one, not a good one.
"""

import errno
import os
import shutil
import socket
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

import cosa.engine.evaluate
import cosa.engine.export
import cosa.engine.trained
import cosa.reporting.predictions
from cosa.data.layouts import read_class_names
from cosa.outputs import LOCK, MANIFEST

from conftest import (
    SUBPROCESS_ENV,
    TINY_OVERRIDES,
    assert_one_line_error,
    cosa_command,
    lock_held_by_another_process,
    predict_argv,
    run_cli,
    save_untrained_checkpoint,
    write_image,
)


@pytest.fixture(scope="module")
def checkpoint(untrained_checkpoint):
    return untrained_checkpoint


@pytest.fixture
def dataset(tiny_data, tmp_path):
    """A copy of the tiny dataset: a test that fails must not damage the shared one."""
    return shutil.copytree(tiny_data, tmp_path / "dataset")


@pytest.fixture
def images(tiny_data, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    for name in ("val_0000.png", "val_0001.png"):
        shutil.copy(tiny_data / "images" / name, folder / name)
    return folder


@pytest.fixture
def no_model_loading(monkeypatch):
    """Output paths are checked before any model is loaded."""

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the output path was checked")

    monkeypatch.setattr(cosa.engine.trained, "load_trained", fail)


@pytest.fixture
def no_evaluation(monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("evaluated before the output path was checked")

    monkeypatch.setattr(cosa.engine.evaluate, "evaluate", fail)


def snapshot(*roots: Path) -> dict:
    """Every file under ``roots`` with its bytes and modification time."""
    files = [path for root in roots for path in ([root] if root.is_file() else sorted(root.rglob("*")))]
    return {path: (path.read_bytes(), path.stat().st_mtime_ns) for path in files if path.is_file()}


def assert_refused(capsys, argv, *fragments):
    """Exit status 2 and exactly one line on stderr, ``cosa: error: ...`` with ``fragments``."""
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("cosa: error: "), err
    for fragment in fragments:
        assert str(fragment) in err, err


def export(checkpoint, dataset, out, *options):
    return [
        "export-pseudo-labels",
        "--checkpoint",
        checkpoint,
        "--data",
        dataset,
        "--split",
        "val",
        "--out",
        out,
        "--device",
        "cpu",
        *options,
    ]


def evaluate(checkpoint, dataset, json_path):
    return ["evaluate", "--checkpoint", checkpoint, "--data", dataset, "--max-images", 2, "--json", json_path]


# --- 1. never overwrite inputs ------------------------------------------------------------------


def test_predict_refuses_to_write_into_its_input_folder(checkpoint, images, capsys):
    before = snapshot(images)
    assert_refused(capsys, predict_argv(checkpoint, images, images), f"--out {images} is the input folder")
    assert snapshot(images) == before


def test_predict_refuses_an_output_folder_inside_an_input_folder(checkpoint, images, capsys):
    before = snapshot(images)
    assert_refused(capsys, predict_argv(checkpoint, images, images / "masks"), "is inside the input folder")
    assert snapshot(images) == before


def test_predict_refuses_an_output_folder_that_holds_the_checkpoint(checkpoint, images, capsys):
    before = snapshot(checkpoint.parent)
    assert_refused(capsys, predict_argv(checkpoint, images, checkpoint.parent), "contains the checkpoint")
    assert snapshot(checkpoint.parent) == before


def test_export_refuses_to_write_into_the_dataset(checkpoint, dataset, capsys):
    before = snapshot(dataset)
    assert_refused(
        capsys,
        export(checkpoint, dataset, dataset / "masks"),
        f"--out {dataset / 'masks'} is inside the dataset {dataset} (the dataset would be overwritten)",
    )
    assert snapshot(dataset) == before


def test_export_refuses_the_dataset_the_checkpoint_names(dataset, tmp_path, capsys):
    trained_on = save_untrained_checkpoint(
        tmp_path / "own.pt", read_class_names(dataset / "classes.txt"), f"data.root={dataset}"
    )
    before = snapshot(dataset)
    assert_refused(
        capsys,
        ["export-pseudo-labels", "--checkpoint", trained_on, "--out", dataset / "pseudo"],
        "is inside the dataset",
    )
    assert snapshot(dataset) == before and not (dataset / "pseudo").exists()


def test_a_symbolic_link_does_not_hide_the_dataset(checkpoint, dataset, tmp_path, capsys):
    link = tmp_path / "link"
    link.symlink_to(dataset, target_is_directory=True)
    before = snapshot(dataset)
    assert_refused(capsys, export(checkpoint, dataset, link / "masks"), "is inside the dataset")
    assert snapshot(dataset) == before


def test_evaluate_refuses_a_json_file_in_the_dataset_before_evaluating(checkpoint, dataset, capsys, no_evaluation):
    assert_refused(capsys, evaluate(checkpoint, dataset, dataset / "metrics.json"), "is inside the dataset")
    assert not (dataset / "metrics.json").exists()


# --- 2. a non-empty output folder only with --overwrite, and then nothing stale ------------------


def test_a_non_empty_output_folder_is_refused_without_overwrite(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert_refused(capsys, predict_argv(checkpoint, images, out), f"--out {out} is not empty", "--overwrite")
    assert [path.name for path in out.iterdir()] == ["notes.txt"]


def test_overwrite_leaves_no_stale_outputs_of_an_earlier_export(checkpoint, tiny_data, tmp_path, capsys):
    out = tmp_path / "pseudo"
    assert run_cli(capsys, *export(checkpoint, tiny_data, out, "--max-images", 4))[0] == 0
    assert run_cli(capsys, *export(checkpoint, tiny_data, out, "--max-images", 2, "--overwrite"))[0] == 0
    assert sorted(path.name for path in out.iterdir()) == [MANIFEST, "summary.json", "val_0000.png", "val_0001.png"]
    assert '"num_images": 2' in (out / "summary.json").read_text()


def test_overwrite_keeps_files_the_command_did_not_write(checkpoint, images, tmp_path, capsys):
    out = tmp_path / "out"
    assert run_cli(capsys, *predict_argv(checkpoint, images, out, "--save-logits"))[0] == 0
    (out / "notes.txt").write_text("mine")
    assert run_cli(capsys, *predict_argv(checkpoint, images / "val_0000.png", out, "--overwrite"))[0] == 0
    assert sorted(path.name for path in out.iterdir()) == [
        MANIFEST,
        "notes.txt",
        "val_0000.png",
        "val_0000_cam.jpg",
        "val_0000_overlay.jpg",
    ]


@pytest.mark.parametrize("earlier", ["nothing of cosa", "another command"])
def test_overwrite_refuses_a_folder_without_outputs_of_the_same_command(
    checkpoint, images, tiny_data, tmp_path, capsys, earlier
):
    out = tmp_path / "out"
    if earlier == "another command":
        assert run_cli(capsys, *export(checkpoint, tiny_data, out, "--max-images", 1))[0] == 0
    else:
        out.mkdir()
        (out / "notes.txt").write_text("mine")
    before = snapshot(out)
    why = "holds the outputs of cosa export-pseudo-labels, not of cosa predict; choose another folder"
    if earlier == "nothing of cosa":
        why = "is not empty and holds no outputs of cosa predict (no .cosa-outputs)"
    assert_refused(capsys, predict_argv(checkpoint, images, out, "--overwrite"), f"--out {out} {why}")
    assert snapshot(out) == before


def test_data_synthetic_keeps_an_earlier_dataset_without_overwrite(tmp_path, capsys):
    root = tmp_path / "synthetic"
    command = ["data", "synthetic", "--out", root, "--train", 2, "--val", 1, "--size", 32]
    assert run_cli(capsys, *command)[0] == 0
    before = snapshot(root)
    assert_refused(capsys, [*command, "--seed", 1], "is not empty", "--overwrite")
    assert snapshot(root) == before
    assert run_cli(capsys, *command, "--seed", 1, "--overwrite")[0] == 0
    assert (root / "context.json").read_text() != before[root / "context.json"][0].decode()


def test_demo_keeps_an_earlier_demo_without_overwrite(tmp_path, capsys):
    out = tmp_path / "demo"
    out.mkdir()
    (out / ".cosa-demo").touch()  # what earlier versions marked their demo folder with
    (out / "report.md").write_text("an earlier demo")
    before = snapshot(out)
    assert_refused(
        capsys,
        ["demo", "--out", out, "--train-images", 4, "--val-images", 2, "--image-size", 64, *TINY_OVERRIDES],
        "is not empty",
    )
    assert snapshot(out) == before


# --- 3. output paths are checked before any work ------------------------------------------------


def test_evaluate_refuses_a_json_path_that_is_a_folder_before_evaluating(
    checkpoint, tiny_data, tmp_path, capsys, no_evaluation
):
    assert_refused(capsys, evaluate(checkpoint, tiny_data, tmp_path), f"--json {tmp_path} is a folder")


def test_evaluate_refuses_a_json_path_under_a_file_before_evaluating(
    checkpoint, tiny_data, tmp_path, capsys, no_evaluation
):
    (tmp_path / "notes.txt").write_text("mine")
    assert_refused(
        capsys,
        evaluate(checkpoint, tiny_data, tmp_path / "notes.txt" / "metrics.json"),
        f"{tmp_path / 'notes.txt'} is a file, not a folder",
    )


@pytest.mark.parametrize("command", ["predict", "export-pseudo-labels"])
def test_an_out_that_is_a_file_is_refused_before_the_model_is_loaded(
    checkpoint, images, tiny_data, tmp_path, capsys, no_model_loading, command
):
    taken = tmp_path / "taken.png"
    taken.write_bytes(b"mine")
    argv = predict_argv(checkpoint, images, taken) if command == "predict" else export(checkpoint, tiny_data, taken)
    assert_refused(capsys, argv, f"--out {taken} is a file")
    assert taken.read_bytes() == b"mine"


def test_an_unwritable_out_is_refused_before_the_model_is_loaded(
    checkpoint, images, tmp_path, capsys, monkeypatch, no_model_loading
):
    locked = tmp_path / "locked"
    locked.mkdir()
    real_access = os.access
    # Tests may run as root, for whom permission bits do not stop writing: the check itself is what is tested.
    monkeypatch.setattr(os, "access", lambda path, mode: Path(path) != locked and real_access(path, mode))
    assert_refused(capsys, predict_argv(checkpoint, images, locked / "out"), f"{locked} is not writable")


# --- 4. report with a relative path; --max-images below 1 ----------------------------------------


def test_report_accepts_a_relative_run_directory(checkpoint, tmp_path, capsys, monkeypatch):
    (tmp_path / "run" / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoint, tmp_path / "run" / "checkpoints" / "last.pt")
    monkeypatch.chdir(tmp_path)
    code, out, err = run_cli(capsys, "report", "run", "--no-eval")
    assert code == 0, err
    assert "checkpoints/last.pt" in (tmp_path / "run" / "report.html").read_text(encoding="utf-8")


@pytest.mark.parametrize(
    "command",
    [
        ["evaluate", "--checkpoint", "model.pt"],
        ["export-pseudo-labels", "--checkpoint", "model.pt", "--out", "pseudo"],
        ["report", "run"],
    ],
)
@pytest.mark.parametrize("count", [0, -1])
def test_max_images_below_one_is_refused(capsys, command, count):
    assert_refused(capsys, [*command, "--max-images", count], "--max-images", "must be at least 1")


# --- 5. a failed write is one line naming the file ------------------------------------------------


def disk_full(*args, **kwargs):
    raise OSError(errno.ENOSPC, "No space left on device")


@pytest.mark.parametrize("command", ["predict", "export-pseudo-labels", "evaluate --json"])
def test_a_full_disk_is_one_line_naming_the_file(checkpoint, images, tiny_data, tmp_path, capsys, monkeypatch, command):
    out = tmp_path / "out"
    if command == "predict":
        monkeypatch.setattr(cosa.reporting.predictions, "write_mask", disk_full)
        argv, written = predict_argv(checkpoint, images, out), out / "val_0000.png"
    elif command == "export-pseudo-labels":
        monkeypatch.setattr(cosa.engine.export, "write_mask", disk_full)
        argv, written = export(checkpoint, tiny_data, out), out / "val_0000.png"
    else:
        monkeypatch.setattr(os, "fsync", disk_full)  # the JSON is written as a stream, synced, renamed
        argv, written = evaluate(checkpoint, tiny_data, out / "metrics.json"), out / "metrics.json"
    code, _, err = run_cli(capsys, *argv)
    assert_one_line_error(code, err, f"{written}: cannot write (No space left on device)")
    assert not written.exists()


# --- 6. second pass: a run folder apart from the dataset ------------------------------------------------


@pytest.mark.parametrize("where", ["is", "inside", "contains"])
def test_train_refuses_a_run_folder_in_or_around_the_dataset(tmp_path, capsys, tiny_data, where):
    dataset = shutil.copytree(tiny_data, tmp_path / "top" / "dataset")
    run = {"is": dataset, "inside": dataset / "run", "contains": tmp_path / "top"}[where]
    before = snapshot(tmp_path / "top")
    relation = {"is": "is", "inside": "is inside", "contains": "contains"}[where]
    assert_refused(
        capsys,
        ["train", "--config", "demo", "--data", dataset, "--out", run, *TINY_OVERRIDES],
        f"--out {run} {relation} the dataset {dataset}",
        "choose another folder",
    )
    assert snapshot(tmp_path / "top") == before and not (dataset / "run").exists()


def plotted_run(run: Path, dataset: Path) -> Path:
    """A run folder with a metric log, whose config names ``dataset``."""
    from cosa.config.load import load_config, save_config

    run.mkdir()
    save_config(load_config("demo", None, str(dataset), TINY_OVERRIDES), run / "config.yaml")
    (run / "metrics.jsonl").write_text('{"iteration": 2, "train/loss": 1.0}\n{"iteration": 4, "train/loss": 0.5}\n')
    return run


# --- 7. no output in a run folder or a dataset, whether the command knows of it or not ------------------


def finished_run(run: Path, dataset: Path, checkpoint: Path) -> Path:
    """A run folder as ``cosa train`` leaves it (its checkpoints are the untrained one)."""
    plotted_run(run, dataset)
    (run / "checkpoints").mkdir()
    for name in ("last.pt", "best.pt"):
        shutil.copy(checkpoint, run / "checkpoints" / name)
    (run / "final_metrics.json").write_text("{}")
    return run


SYNTHETIC = ["--train", 2, "--val", 1, "--size", 32]


def evaluate_json(p, out, checkpoint=None):
    return ["evaluate", "--checkpoint", checkpoint or p.checkpoint, "--data", p.data, "--max-images", 1, "--json", out]


# A command and the output path it is given (in p.run, p.other_run, p.other_data: a run folder or
# dataset it does not read): (argv, the option, the output path, the run folder or dataset it lies in).
PROTECTED = {
    "evaluate --json RUN/checkpoints/last.pt": lambda p: (
        evaluate_json(p, p.run / "checkpoints" / "last.pt", checkpoint=p.run / "checkpoints" / "best.pt"),
        "--json",
        ("the run folder", p.run),
    ),
    "evaluate --json RUN/config.yaml": lambda p: (
        evaluate_json(p, p.run / "config.yaml"),
        "--json",
        ("the run folder", p.run),
    ),
    "evaluate --json RUN/final_metrics.json": lambda p: (
        evaluate_json(p, p.run / "final_metrics.json"),
        "--json",
        ("the run folder", p.run),
    ),
    "evaluate --json OTHER_DATA/val.csv": lambda p: (
        evaluate_json(p, p.other_data / "val.csv"),
        "--json",
        ("the dataset", p.other_data),
    ),
    "report --out OTHER_RUN/report.html": lambda p: (
        ["report", p.run, "--no-eval", "--out", p.other_run / "report.html"],
        "--out",
        ("the run folder", p.other_run),
    ),
    "convert-official IN.pth RUN/checkpoints/best.pt": lambda p: (
        ["convert-official", p.checkpoint, p.run / "checkpoints" / "best.pt", "--overwrite"],
        "OUT.pt",
        ("the run folder", p.run),
    ),
    "predict --out RUN --overwrite": lambda p: (
        predict_argv(p.checkpoint, p.images, p.run, "--overwrite"),
        "--out",
        ("the run folder", p.run),
    ),
    "predict --out RUN/predictions": lambda p: (
        predict_argv(p.checkpoint, p.images, p.run / "predictions"),
        "--out",
        ("the run folder", p.run),
    ),
    "export-pseudo-labels --out OTHER_DATA/pseudo": lambda p: (
        export(p.checkpoint, p.data, p.other_data / "pseudo"),
        "--out",
        ("the dataset", p.other_data),
    ),
    "data synthetic --out OTHER_DATA/more": lambda p: (
        ["data", "synthetic", *SYNTHETIC, "--out", p.other_data / "more"],
        "--out",
        ("the dataset", p.other_data),
    ),
    "demo --out RUN/demo": lambda p: (
        ["demo", "--train-images", 4, "--val-images", 2, "--image-size", 64, "--out", p.run / "demo"],
        "--out",
        ("the run folder", p.run),
    ),
    "train --out RUN/checkpoints/again": lambda p: (
        ["train", "--config", "demo", "--data", p.data, *TINY_OVERRIDES, "--out", p.run / "checkpoints" / "again"],
        "--out",
        ("the run folder", p.run),
    ),
}


@pytest.mark.parametrize("case", PROTECTED)
def test_no_command_writes_into_a_run_folder_or_a_dataset(checkpoint, dataset, images, tmp_path, capsys, case):
    p = SimpleNamespace(
        checkpoint=checkpoint,
        data=dataset,
        images=images,
        run=finished_run(tmp_path / "run", dataset, checkpoint),
        other_run=finished_run(tmp_path / "other_run", dataset, checkpoint),
        other_data=shutil.copytree(dataset, tmp_path / "other_data"),
    )
    argv, option, (what, folder) = PROTECTED[case](p)
    out = argv[argv.index(option) + 1] if option != "OUT.pt" else argv[2]
    before, existed = snapshot(p.run, p.other_run, p.data, p.other_data), out.exists()
    relation = "is" if out == folder else "is inside"
    assert_refused(
        capsys, argv, f"{option} {out} {relation} {what} {folder} ({what} would be overwritten); choose another"
    )
    assert snapshot(p.run, p.other_run, p.data, p.other_data) == before and out.exists() == existed


def test_a_folder_of_another_project_is_no_run_folder(checkpoint, images, tmp_path, capsys):
    project = tmp_path / "project"
    (project / "checkpoints").mkdir(parents=True)
    (project / "checkpoints" / "model.pt").write_bytes(b"not ours")
    (project / "tensorboard").mkdir()
    (project / "config.yaml").write_text("lr: 0.1\n")  # names other projects use too
    assert run_cli(capsys, *predict_argv(checkpoint, images, project / "predictions"))[0] == 0
    assert (project / "predictions" / "val_0000.png").is_file()


def test_a_run_stopped_before_its_first_log_is_a_run_folder(checkpoint, images, tmp_path, capsys):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    (run / "config.yaml").write_text("model: {}\n")
    (run / ".lock").write_text("123 host\n")  # what cosa train writes before its first step
    assert_refused(
        capsys,
        predict_argv(checkpoint, images, run / "predictions"),
        f"--out {run / 'predictions'} is inside the run folder {run}",
    )
    assert not (run / "predictions").exists()


def test_a_report_writes_into_its_own_run_but_not_over_its_files(checkpoint, dataset, tmp_path, capsys):
    run = finished_run(tmp_path / "run", dataset, checkpoint)
    before = snapshot(run)
    for argv in (
        ["report", run, "--no-eval", "--out", run / "checkpoints" / "last.pt"],
        ["report", run, "--no-eval", "--out", run / "tensorboard" / "page.html"],
    ):
        assert_refused(capsys, argv, f"--out {argv[-1]} is", "the run file")
    assert snapshot(run) == before
    assert run_cli(capsys, "report", run, "--no-eval", "--out", run / "pages" / "page.html")[0] == 0
    assert run_cli(capsys, "report", run, "--no-eval", "--png")[0] == 0
    assert (run / "report_figures" / "losses.png").is_file()


# --- 8. one command at a time in an output folder --------------------------------------------------


LOCKED = {
    "predict": lambda ckpt, data, images, run, out: predict_argv(ckpt, images, out),
    "export-pseudo-labels": lambda ckpt, data, images, run, out: export(ckpt, data, out, "--max-images", 1),
    "data synthetic": lambda ckpt, data, images, run, out: ["data", "synthetic", *SYNTHETIC, "--out", out],
}


@pytest.mark.parametrize("command", LOCKED)
def test_an_output_folder_another_command_writes_is_refused_naming_it(
    checkpoint, dataset, images, tmp_path, capsys, command
):
    run = plotted_run(tmp_path / "run", dataset)
    out = tmp_path / "out"
    out.mkdir()
    argv = LOCKED[command](checkpoint, dataset, images, run, out)
    with lock_held_by_another_process(out / LOCK) as holder:
        assert_refused(
            capsys,
            argv,
            f"--out {out}: another cosa command writes into this folder (pid {holder.pid} on {socket.gethostname()}); "
            "wait for it to end, or choose another folder",
        )
        assert os.listdir(out) == [LOCK]  # the holder's lock, nothing of ours
        holder.kill()  # kill -9 releases the lock with the process: the folder is free again
        holder.wait()
        code, _, err = run_cli(capsys, *argv)
    assert code == 0, err
    assert MANIFEST in os.listdir(out) and LOCK not in os.listdir(out)


def test_a_command_that_fails_before_writing_leaves_no_output_folder(images, tmp_path, capsys):
    out = tmp_path / "new" / "out"
    assert_refused(capsys, predict_argv(tmp_path / "missing.pt", images, out), "missing.pt")
    assert (tmp_path / "new").is_dir() and not out.exists()


@pytest.mark.slow
def test_two_predicts_into_one_folder_at_once_the_second_is_refused(checkpoint, tmp_path):
    images = tmp_path / "images"
    images.mkdir()
    for i in range(40):
        write_image(images / f"photo_{i:02d}.png", size=(256, 256))
    out = tmp_path / "out"
    slow = ["--size", 512, "--scales", 1.0, 0.5, 1.5, 0.75, 1.25]  # the first still runs when the second starts
    first = subprocess.Popen(
        cosa_command("predict", "--checkpoint", checkpoint, images, "--out", out, "--device", "cpu", *slow),
        env=SUBPROCESS_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.time() + 120
        while not (out / LOCK).exists() and time.time() < deadline:  # it checked and locked --out
            time.sleep(0.05)
        second = subprocess.run(
            cosa_command("predict", "--checkpoint", checkpoint, images, "--out", out, "--overwrite"),
            env=SUBPROCESS_ENV,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert first.poll() is None, "the first predict ended before the second started: make it slower"
    finally:
        first.kill()
        first.communicate()
    assert second.returncode == 2 and second.stderr.count("\n") == 1, second.stderr
    assert f"another cosa command writes into this folder (pid {first.pid} on " in second.stderr


def test_a_generated_dataset_cannot_be_overwritten_while_a_run_trains_on_it(tmp_path, capsys, monkeypatch):
    import cosa.engine.trainer as trainer_module

    data = tmp_path / "data"
    generate = ["data", "synthetic", *SYNTHETIC, "--out", data]
    assert run_cli(capsys, *generate)[0] == 0
    before = snapshot(data)
    refusals = []

    def overwrite_while_training(trainer):
        refusals.append(run_cli(capsys, *generate, "--overwrite", "--seed", 5))
        return {}

    monkeypatch.setattr(trainer_module.Trainer, "fit", overwrite_while_training)
    assert (
        run_cli(capsys, "train", "--config", "demo", "--data", data, "--out", tmp_path / "run", *TINY_OVERRIDES)[0] == 0
    )
    ((code, _, err),) = refusals
    assert_one_line_error(code, err, f"--out {data}: a cosa run trains on this dataset; wait for it to end")
    assert snapshot(data) == before
    assert run_cli(capsys, *generate, "--overwrite", "--seed", 5)[0] == 0  # the run has ended
