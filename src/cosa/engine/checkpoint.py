"""Checkpoints: written atomically, read without unpickling (``weights_only=True``).

A checkpoint is a dict with ``format: cosa-checkpoint``, the resolved config, the class names, the
iteration, the online and assignment networks and, in ``last.pt``, everything needed to resume
exactly (optimiser, AMP scaler, thresholds, RNG states).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from cosa.errors import CosaError, library_reason
from cosa.files import write_atomically

CHECKPOINT_FORMAT = "cosa-checkpoint"
CHECKPOINT_VERSION = 1


def save_checkpoint(path: str | Path, payload: dict[str, Any]) -> None:
    """Write ``payload`` to ``path`` so that a crash leaves either the old or the new file."""
    payload = {"format": CHECKPOINT_FORMAT, "version": CHECKPOINT_VERSION, **payload}
    write_atomically(path, lambda stream: torch.save(payload, stream))


def remove_partial_writes(directory: str | Path) -> None:
    """Delete the temporary files of atomic writes (:mod:`cosa.files`) that a crash interrupted."""
    for partial in Path(directory).glob(".*.tmp"):
        partial.unlink(missing_ok=True)


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
