"""Checkpoints read by ``cosa evaluate`` and ``cosa predict``: a wrong, truncated or empty file, a
folder, a stored config that is invalid, or a model of other classes than the dataset's is refused
in one line naming the file. docs/reliability.md lists each case with the test that pins it."""

import shutil
from pathlib import Path

import pytest
import torch

from cosa.engine.checkpoint import save_checkpoint

from conftest import cli_error, good_dataset


def with_stored(checkpoint: Path, path: Path, section: str, key: str, value) -> Path:
    """A copy of ``checkpoint`` at ``path`` whose stored config sets ``section.key`` to ``value``."""
    payload = torch.load(checkpoint, weights_only=True)
    node = payload["config"]
    for name in section.split("."):
        node = node[name]
    node[key] = value
    save_checkpoint(path, payload)
    return path


@pytest.mark.parametrize(
    ("section", "key", "value", "message"),
    [
        pytest.param(
            "data", "crop_size", 8, "bad value for config key 'data.crop_size': must be at least 16", id="invalid-value"
        ),
        pytest.param(
            "method.raw",
            "enabled",
            True,
            "'method.raw.enabled' is true, but recipe cam-only ignores it",
            id="ignored-technique",
        ),
    ],
)
def test_a_checkpoint_whose_config_is_invalid_is_refused_in_one_line(
    tmp_path, capsys, checkpoint, section, key, value, message
):
    path = with_stored(checkpoint, tmp_path / "bad.pt", section, key, value)
    if key == "enabled":
        with_stored(path, path, "method", "recipe", "cam-only")
    for command in (
        ["evaluate", "--checkpoint", path, "--data", good_dataset(tmp_path / "ds"), "--split", "train"],
        ["predict", "--checkpoint", path, tmp_path / "ds" / "images", "--out", tmp_path / "o"],
    ):
        line = cli_error(capsys, *command)
        assert f"{path} (config): " in line and message in line
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        pytest.param(lambda p, good: p.write_bytes(b"\x00garbage" * 8), "not a PyTorch checkpoint", id="garbage"),
        pytest.param(lambda p, good: p.write_bytes(good.read_bytes()[:4000]), "cannot read checkpoint", id="truncated"),
        pytest.param(lambda p, good: torch.save({"state_dict": {}}, p), "not a cosa checkpoint", id="other-torch-file"),
        pytest.param(
            lambda p, good: save_checkpoint(p, {"iteration": 3}),
            "checkpoint lacks the entries config",
            id="missing-entries",
        ),
    ],
)
def test_wrong_or_truncated_checkpoint_is_fatal(tmp_path, capsys, checkpoint, damage, message):
    path = tmp_path / "bad.pt"
    damage(path, checkpoint)
    line = cli_error(
        capsys, "evaluate", "--checkpoint", path, "--data", good_dataset(tmp_path / "ds"), "--split", "train"
    )
    assert str(path) in line and message in line


@pytest.mark.parametrize(
    ("classes", "message"),
    [
        pytest.param(("cat", "dog", "bird"), "the model has 2 classes but {root} has 3", id="count"),
        pytest.param(("cat", "fox"), "label 2 is 'dog' for the model but 'fox' in {root}", id="names"),
    ],
)
def test_evaluate_refuses_a_dataset_with_other_classes(tmp_path, capsys, checkpoint, classes, message):
    root = good_dataset(tmp_path / "ds")
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    line = cli_error(capsys, "evaluate", "--checkpoint", checkpoint, "--data", root, "--split", "train")
    assert line == f"cosa: error: {checkpoint}: " + message.format(root=root)


# --- checkpoint paths that name the wrong kind of thing -------------------------------------------


@pytest.mark.parametrize("what", ["checkpoints folder", "run folder"])
def test_a_checkpoint_path_that_is_a_folder_is_named_a_folder(tmp_path, capsys, checkpoint, what):
    run = tmp_path / "run"
    (run / "checkpoints").mkdir(parents=True)
    shutil.copy(checkpoint, run / "checkpoints" / "last.pt")
    given = run if what == "run folder" else run / "checkpoints"
    line = cli_error(capsys, "evaluate", "--checkpoint", given, "--data", good_dataset(tmp_path / "ds"))
    assert f"{given}: is a folder, not a checkpoint" in line
    if what == "run folder":
        assert f"(its last checkpoint is {run / 'checkpoints' / 'last.pt'})" in line


def test_an_empty_checkpoint_file_is_named_empty(tmp_path, capsys):
    (tmp_path / "empty.pt").write_bytes(b"")
    line = cli_error(capsys, "evaluate", "--checkpoint", tmp_path / "empty.pt", "--data", good_dataset(tmp_path / "ds"))
    assert line == f"cosa: error: {tmp_path / 'empty.pt'}: cannot read checkpoint (the file is empty)"
