"""Checkpoint files: atomic writes and safe, clear loading."""

import pytest
import torch

from cosa.config import load_config
from cosa.engine import checkpoint as checkpoint_module
from cosa.engine.checkpoint import load_checkpoint, save_checkpoint
from cosa.engine.distributed import DistContext
from cosa.engine.trainer import Trainer
from cosa.errors import CosaError

from conftest import TINY_OVERRIDES


class NotATensor:
    """Loading a pickle of this class would run code: ``weights_only`` must refuse it."""


def test_round_trip(tmp_path):
    payload = {"iteration": 5, "online": {"w": torch.arange(3.0)}, "metrics": {"miou": 1.5, "none": None}}
    save_checkpoint(tmp_path / "a.pt", payload)
    loaded = load_checkpoint(tmp_path / "a.pt")
    assert loaded["iteration"] == 5 and torch.equal(loaded["online"]["w"], torch.arange(3.0))
    assert loaded["format"] == "cosa-checkpoint" and loaded["metrics"] == payload["metrics"]


def test_a_failed_write_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"iteration": 1})

    def crash(obj, stream):
        stream.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(checkpoint_module.torch, "save", crash)
    with pytest.raises(CosaError, match=r"last.pt: cannot write \(disk full\)"):
        save_checkpoint(path, {"iteration": 2})
    assert load_checkpoint(path)["iteration"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["last.pt"]  # no temporary file left behind


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (lambda p: torch.save({"model": {"w": torch.zeros(1)}}, p), "not a cosa checkpoint"),
        (lambda p: p.write_bytes(b"\x00garbage" * 10), "not a PyTorch checkpoint (neither a zip archive nor a pickle"),
        (lambda p: p.write_text("hello\n"), "not a PyTorch checkpoint (a text file)"),
        (lambda p: p.write_bytes(b"\xff\xd8\xff\xe0" + bytes(100)), "not a PyTorch checkpoint (a JPEG image)"),
        (lambda p: torch.save({"format": "cosa-checkpoint", "x": NotATensor()}, p), "cannot read checkpoint"),
        (lambda p: torch.save({"format": "cosa-checkpoint", "version": 99}, p), "newer than this cosa"),
    ],
)
def test_wrong_files_are_refused_with_one_line(tmp_path, content, message):
    path = tmp_path / "wrong.pt"
    content(path)
    with pytest.raises(CosaError) as error:
        load_checkpoint(path)
    assert message in str(error.value) and str(path) in str(error.value) and "\n" not in str(error.value)


def test_truncated_checkpoint_is_refused(tmp_path):
    path = tmp_path / "last.pt"
    save_checkpoint(path, {"online": {"w": torch.randn(1000)}})
    path.write_bytes(path.read_bytes()[:500])
    with pytest.raises(CosaError, match="cannot read checkpoint"):
        load_checkpoint(path)
    with pytest.raises(CosaError, match="checkpoint not found"):
        load_checkpoint(tmp_path / "missing.pt")


def test_weights_that_do_not_fit_are_named_in_one_line(tmp_path, untrained_checkpoint):
    from cosa.engine.trained import load_trained

    payload = load_checkpoint(untrained_checkpoint)
    state = dict(payload["assignment"])
    first, second = list(state)[:2]
    del state[first]
    state[second] = torch.zeros(3, 1)
    state["extra.weight"] = torch.zeros(1)
    save_checkpoint(tmp_path / "bad.pt", {**payload, "assignment": state})
    with pytest.raises(CosaError) as error:
        load_trained(tmp_path / "bad.pt", torch.device("cpu"))
    message = str(error.value)
    assert "\n" not in message
    assert message.startswith(f"{tmp_path / 'bad.pt'}: the assignment weights do not fit the network of its config (")
    assert f"1 key missing (first: {first})" in message
    assert "1 key unexpected (first: extra.weight)" in message
    assert f"1 key of another shape (first: {second} is (3, 1), not (" in message


def test_resume_refuses_a_checkpoint_of_weights_only(tiny_data, tmp_path):
    """best.pt, or a converted official file, put where last.pt belongs: no optimiser to resume."""
    last = tmp_path / "run" / "checkpoints" / "last.pt"
    last.parent.mkdir(parents=True)
    save_checkpoint(last, {"iteration": 3, "online": {}, "assignment": {}})
    cfg = load_config("demo", "release", str(tiny_data), TINY_OVERRIDES)
    with pytest.raises(CosaError, match=rf"^{last}: holds weights only; cannot resume from it$"):
        Trainer(cfg, tmp_path / "run", DistContext(0, 1, 0, torch.device("cpu")), resume=True)
