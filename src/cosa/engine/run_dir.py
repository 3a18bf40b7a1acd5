"""A run folder holds one run: locked while it trains, checked before a run starts or resumes in it.

- ``RUN/.lock`` is locked (:mod:`cosa.locks`, holding ``PID HOST``) while a run trains, by rank 0
  only under torchrun. A live run's lock refuses the second run, naming it; the kernel releases
  the lock of a killed run, so a lock file left behind blocks nobody.
- A fresh run needs a folder of its own: new, empty, or holding only a lock file. It refuses a
  folder that holds a run, or anything else; ``--resume`` needs ``checkpoints/last.pt`` and
  refuses a folder with history but no checkpoint. Nothing in the folder is deleted.
- A resumed run's configuration is its checkpoint's (:func:`stored_config`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cosa.config.load import config_from_dict, read_saved_config, resumed_config
from cosa.config.schema import Config
from cosa.engine.checkpoint import load_checkpoint
from cosa.engine.distributed import DistContext, any_process
from cosa.errors import CosaError
from cosa.files import os_errors_named
from cosa.locks import Busy, FolderLock
from cosa.outputs import RUN_ENTRIES, refuse_inputs, runs_and_datasets

LOCK = ".lock"


def last_checkpoint(run_dir: Path) -> Path:
    return run_dir / "checkpoints" / "last.pt"


@contextmanager
def claim(run_dir: Path, resume: bool, dist: DistContext) -> Iterator[None]:
    """Hold ``run_dir`` for this run, and release it on every exit (errors, Ctrl-C and SIGTERM too).

    Rank 0 locks and checks the folder; every process learns the outcome in one collective, so a
    refusal ends them all instead of leaving the others waiting for rank 0. A folder that the
    claim made and that is still empty at the end (the run failed before writing anything: no
    dataset, an unknown backbone) is removed, so that nothing is left to clear up.
    """
    lock = None
    made = not run_dir.exists()
    try:
        refusal = None
        if dist.is_main:
            try:
                lock = _lock(run_dir)
                (_require_checkpoint if resume else _require_no_run)(run_dir)
            except CosaError as error:
                refusal = error
        if any_process(refusal is not None, dist.device):
            raise refusal or CosaError(f"{run_dir}: rank 0 could not start the run (its error says why)")
        yield
    finally:
        if lock is not None:
            lock.release()
            if made:
                with contextlib.suppress(OSError):  # not empty (a file written, another run's lock): kept
                    run_dir.rmdir()


def stored_config(run_dir: Path) -> Config:
    """The configuration of the run to resume in ``run_dir``.

    Its last checkpoint's is the truth; ``config.yaml`` is its copy, which may raise only
    ``train.iterations`` (an edit that changes anything else is refused, naming the keys).
    """
    _require_checkpoint(run_dir)
    checkpoint = last_checkpoint(run_dir)
    payload = load_checkpoint(checkpoint)
    if "config" not in payload:
        raise CosaError(f"{checkpoint}: checkpoint lacks the entry config")
    trained = config_from_dict(payload["config"], f"{checkpoint} (config)")
    copy = run_dir / "config.yaml"
    if not copy.is_file():
        return trained
    return resumed_config(trained, read_saved_config(copy), f"{copy}: its edits")


# --- the lock -----------------------------------------------------------------------------------


def _lock(run_dir: Path) -> FolderLock:
    """Lock the folder, first creating it: the check that ``--out`` is writable, before any model is built.

    A run folder may not lie in another run's folder or in a dataset (:mod:`cosa.outputs`).
    """
    _require_folder(run_dir)
    refuse_inputs(run_dir, "--out", runs_and_datasets(run_dir, own=run_dir), "folder")
    lock = FolderLock(run_dir / LOCK)
    try:
        with os_errors_named(run_dir, "write"):
            run_dir.mkdir(parents=True, exist_ok=True)
            lock.acquire()
    except Busy as busy:
        raise CosaError(
            f"{run_dir}: another run trains in this folder ({busy.holder}); wait for it to end or choose another --out"
        ) from None
    return lock


# --- what the folder holds ----------------------------------------------------------------------


def _contents(run_dir: Path) -> list[str]:
    """The run files in ``run_dir``, e.g. ``config.yaml``, ``metrics.jsonl``, ``checkpoints/best.pt``."""
    found = []
    for name in RUN_ENTRIES:
        entry = run_dir / name
        if name == "checkpoints" and entry.is_dir():
            found += [f"{name}/{path.name}" for path in sorted(entry.glob("*.pt"))] or [f"{name}/"]
        elif entry.exists():
            found.append(f"{name}/" if entry.is_dir() else name)
    return found


def _require_no_run(run_dir: Path) -> None:
    found = _contents(run_dir)
    if not found:
        _require_empty(run_dir)
        return
    if last_checkpoint(run_dir).is_file():
        raise CosaError(
            f"{run_dir}: holds a run already ({', '.join(found)}); use --resume to continue it, or another --out"
        )
    raise CosaError(
        f"{run_dir}: holds a run that wrote no checkpoint ({', '.join(found)}); delete the folder "
        "to start over, or use another --out"
    )


def _require_empty(run_dir: Path) -> None:
    """A new run's folder holds nothing but its lock (a killed run's lock file included)."""
    with os_errors_named(run_dir, "read"):
        entries = sorted(f"{path.name}/" if path.is_dir() else path.name for path in run_dir.iterdir())
    others = [name for name in entries if name != LOCK]
    if others:
        shown = ", ".join(others[:5]) + (f", … ({len(others)} entries)" if len(others) > 5 else "")
        raise CosaError(
            f"{run_dir}: is not empty and holds no cosa run ({shown}); a run needs a folder of its own: "
            "choose another --out (a new or empty folder)"
        )


def _require_folder(run_dir: Path) -> None:
    if run_dir.exists() and not run_dir.is_dir():
        raise CosaError(f"{run_dir}: not a folder (--out names the run's folder)")


def _require_checkpoint(run_dir: Path) -> None:
    _require_folder(run_dir)
    if last_checkpoint(run_dir).is_file():
        return
    found = _contents(run_dir)
    if not found:
        raise CosaError(f"{run_dir}: no run to resume here")
    raise CosaError(
        f"{run_dir}: nothing to resume from (no checkpoints/last.pt) but the folder holds "
        f"{', '.join(found)}; it was left as it is: delete it to start over, or use another --out"
    )
