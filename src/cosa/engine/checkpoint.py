"""Checkpoints: what a run's state puts into one and takes out of it, written atomically, read
without unpickling (``weights_only=True``).

A checkpoint is a dict with ``format: cosa-checkpoint``, the resolved config, the class names, the
training dataset's fingerprint, the iteration, the online and assignment networks, the CPL
thresholds and the classifier-fit window (:func:`training_checkpoint`). ``last.pt`` adds what an
exact resume needs besides (optimiser, AMP scaler, RNG states), which :func:`restore_training`
puts back after checking that the run can go on from it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from cosa.config.load import flat_keys
from cosa.data.fingerprint import differences
from cosa.errors import CosaError, library_reason
from cosa.files import write_atomically

if TYPE_CHECKING:
    from cosa.engine.trainer import Trainer

log = logging.getLogger(__name__)

CHECKPOINT_FORMAT = "cosa-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` so that a crash leaves either the old or the new file."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    write_atomically(path, lambda stream: torch.save(payload, stream))


def remove_partial_writes(*directories: str | Path) -> None:
    """Delete the temporary files of atomic writes (:mod:`cosa.files`) that a crash interrupted."""
    for directory in directories:
        for partial in Path(directory).glob(".*.tmp"):
            partial.unlink(missing_ok=True)


def training_checkpoint(trainer: Trainer, full: bool = True) -> dict[str, Any]:
    """The checkpoint payload of ``trainer``'s run; ``full`` (``last.pt``) with what resuming needs."""
    payload = {
        "config": asdict(trainer.cfg),
        "class_names": list(trainer.class_names),
        "dataset": trainer.dataset,
        "iteration": trainer.iteration,
        "online": trainer.online.state_dict(),
        "assignment": trainer.assignment.state_dict(),
        "thresholds": trainer.objective.thresholds.state_dict(),
        "label_fit": trainer.monitor.label_fit.state_dict(),
        "best_miou": trainer.best_miou,
        "skipped_steps": trainer.guard.skipped_steps,
        "metrics": trainer.last_metrics,
    }
    if full:
        payload.update(
            optimizer=trainer.optimizer.state_dict(),
            scaler=trainer.scaler.state_dict(),
            rng={
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
            },
        )
    return payload


def restore_training(trainer: Trainer, checkpoint: dict[str, Any], path: Path) -> None:
    """Put ``trainer`` where the run stood at ``checkpoint`` (read from ``path``); refuse a
    checkpoint of weights only, another training dataset, or a run that is finished."""
    if "optimizer" not in checkpoint:
        raise CosaError(f"{path}: holds weights only; cannot resume from it")
    moved = differences(checkpoint["dataset"], trainer.dataset)
    if moved:
        raise CosaError(
            f"{trainer.train_split.root}: not the dataset this run trained on ({moved}); "
            "resume with --data naming that dataset"
        )
    iteration = int(checkpoint["iteration"])
    if iteration >= trainer.cfg.train.iterations and (trainer.run_dir / "final_metrics.json").is_file():
        raise CosaError(
            f"{trainer.run_dir}: the run finished at iteration {iteration} (final_metrics.json); raise "
            "train.iterations to continue it, or evaluate it again with cosa evaluate"
        )
    trainer.online.load_state_dict(checkpoint["online"])
    trainer.assignment.load_state_dict(checkpoint["assignment"])
    trainer.optimizer.load_state_dict(checkpoint["optimizer"])
    trainer.scaler.load_state_dict(checkpoint["scaler"])
    trainer.objective.thresholds.load_state_dict(checkpoint["thresholds"])
    trainer.monitor.label_fit.load_state_dict(checkpoint["label_fit"])
    trainer.iteration = iteration
    trainer.best_miou = float(checkpoint["best_miou"])
    trainer.guard.skipped_steps = int(checkpoint["skipped_steps"])
    trainer.last_metrics = checkpoint["metrics"]
    torch.set_rng_state(checkpoint["rng"]["torch"])
    if checkpoint["rng"]["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(checkpoint["rng"]["cuda"])
    log.info("resumed from %s at iteration %d", path, iteration)
    stored, now = flat_keys(checkpoint["config"]), flat_keys(asdict(trainer.cfg))
    changed = [f"{key} ({stored[key]} → {now[key]})" for key in now if stored[key] != now[key]]
    if changed:
        log.info("changed since the checkpoint: %s", ", ".join(changed))


def read_torch_file(path: str | Path, allowed_globals: Sequence[Callable | tuple[Callable, str]] = ()) -> Any:
    """The contents of a torch file, read with ``weights_only=True``; one-line errors.

    ``allowed_globals`` are the only pickled classes or functions, beyond tensors and plain
    containers, that the file may name (``torch.serialization.safe_globals`` entries).
    """
    path = Path(path)
    if path.is_dir():
        inside = next(
            (candidate for candidate in (path / "checkpoints" / "last.pt", path / "last.pt") if candidate.is_file()),
            None,
        )
        hint = f" (its last checkpoint is {inside})" if inside else ""
        raise CosaError(f"{path}: is a folder, not a checkpoint{hint}")
    if not path.is_file():
        raise CosaError(f"{path}: checkpoint not found")
    if path.stat().st_size == 0:
        raise CosaError(f"{path}: cannot read checkpoint (the file is empty)")
    if kind := _not_a_torch_file(path):
        raise CosaError(f"{path}: not a PyTorch checkpoint ({kind})")
    try:
        allowing = contextlib.nullcontext()
        if allowed_globals:  # safe_globals is torch>=2.5 (name tuples >=2.6): plain loads must not need it
            allowing = torch.serialization.safe_globals(list(allowed_globals))
        with allowing:
            return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated files, pickles with code, non-torch files
        raise CosaError(f"{path}: cannot read checkpoint ({library_reason(error)})") from None


def load_checkpoint(path: str | Path) -> dict[str, Any]:
    payload = read_torch_file(path)
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise CosaError(f"{path}: not a cosa checkpoint (no 'format: {CHECKPOINT_FORMAT}' entry)")
    if payload.get("version", 0) > CHECKPOINT_VERSION:
        raise CosaError(f"{path}: checkpoint version {payload['version']} is newer than this cosa")
    return payload


# The first bytes of files often given where a checkpoint is expected.
_OTHER_FORMATS = {
    b"\xff\xd8\xff": "a JPEG image",
    b"\x89PNG": "a PNG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF file",
}


def _not_a_torch_file(path: Path) -> str | None:
    """What ``path`` is when it is plainly not a file of ``torch.save`` (a zip archive, or a pickle
    in the legacy format), so that a refusal can say so; None when it may be one."""
    with path.open("rb") as handle:
        head = handle.read(512)
    if head.startswith(b"PK") or head.startswith(b"\x80"):
        return None
    kind = next((name for magic, name in _OTHER_FORMATS.items() if head.startswith(magic)), None)
    if kind is None:
        try:
            kind = "a text file" if b"\x00" not in head and head.decode("utf-8") else None
        except UnicodeDecodeError:
            pass
    return kind or "neither a zip archive nor a pickle, the formats of torch.save"
