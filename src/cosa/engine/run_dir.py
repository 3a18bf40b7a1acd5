"""A run folder holds one run: locked while it trains, checked before a run starts or resumes in it.

- ``RUN/.lock`` (created with ``O_EXCL``, holding ``PID HOST``) is held while a run trains, by
  rank 0 only under torchrun. A lock whose process is gone from this host was left by a killed
  run: it is taken over with a warning. A live one refuses the second run.
- A fresh run refuses a folder that already holds a run; ``--resume`` needs ``checkpoints/last.pt``
  and refuses a folder with history but no checkpoint. Nothing in the folder is deleted.
- A resumed run's configuration is its checkpoint's (:func:`stored_config`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from cosa.config.load import config_from_dict, read_saved_config, resumed_config
from cosa.config.schema import Config
from cosa.engine.checkpoint import load_checkpoint
from cosa.engine.distributed import DistContext, any_process
from cosa.errors import CosaError

log = logging.getLogger(__name__)

LOCK = ".lock"
# What a run writes; a folder holding any of them holds a run.
RUN_ENTRIES = ("config.yaml", "metrics.jsonl", "final_metrics.json", "checkpoints", "tensorboard", "nonfinite")


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
    locked = False
    made = not run_dir.exists()
    try:
        refusal = None
        if dist.is_main:
            try:
                _lock(run_dir)
                locked = True
                (_require_checkpoint if resume else _require_no_run)(run_dir)
            except CosaError as error:
                refusal = error
        if any_process(refusal is not None, dist.device):
            raise refusal or CosaError(f"{run_dir}: rank 0 could not start the run (its error says why)")
        yield
    finally:
        if locked:
            _unlock(run_dir)
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


def _owner() -> str:
    return f"{os.getpid()} {socket.gethostname()}\n"


def _lock(run_dir: Path) -> None:
    """Create the lock, first creating the folder: the check that ``--out`` is writable, before any model is built."""
    _require_folder(run_dir)
    path = run_dir / LOCK
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        if _create(path):
            return
        _remove_stale_lock(path)
        if not _create(path):
            raise CosaError(f"{run_dir}: another run took its lock at the same moment; choose another --out")
    except OSError as error:
        raise CosaError(f"{run_dir}: cannot write ({error.strerror})") from None


def _create(path: Path) -> bool:
    """Create the lock atomically with our pid and host; False if it exists."""
    try:
        handle = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except FileExistsError:
        return False
    with os.fdopen(handle, "w") as stream:
        stream.write(_owner())
    return True


def _remove_stale_lock(path: Path) -> None:
    """Remove a lock left by a killed run on this host; refuse one whose run may be alive."""
    try:
        holder = path.read_text()
    except FileNotFoundError:
        return  # released meanwhile
    pid, _, host = holder.strip().partition(" ")
    if host != socket.gethostname() or not pid.isdigit() or _alive(int(pid)):
        raise CosaError(
            f"{path.parent}: another run trains in this folder (pid {pid or '?'} on {host or '?'}); "
            f"wait for it to end or choose another --out (delete {path} if that run is gone)"
        )
    log.warning("%s: taking over the lock of pid %s, which is no longer running", path.parent, pid)
    path.unlink(missing_ok=True)


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    return True


def _unlock(run_dir: Path) -> None:
    path = run_dir / LOCK
    if path.is_file() and path.read_text() == _owner():  # never another run's lock
        path.unlink()


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
        return
    if last_checkpoint(run_dir).is_file():
        raise CosaError(
            f"{run_dir}: holds a run already ({', '.join(found)}); use --resume to continue it, or another --out"
        )
    raise CosaError(
        f"{run_dir}: holds a run that wrote no checkpoint ({', '.join(found)}); delete the folder "
        "to start over, or use another --out"
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
