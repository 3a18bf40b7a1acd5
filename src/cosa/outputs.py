"""Where commands write: never over a run, a dataset or an input, one command at a time in a folder,
and earlier outputs replaced only on request.

Every command that writes files checks its output paths here before it starts working, and writes
through here (docs/reliability.md, "Outputs"):

- an output never is, contains or lies inside one of the command's inputs (a dataset root, an
  image folder, a checkpoint): real paths are compared, so a symbolic link or ``..`` hides nothing;
- an output never is or lies inside a run folder or a dataset, whether the command knows of it or
  not (:func:`runs_and_datasets`): their files are training's and the user's, and no command's
  output replaces them. Only the run a report or plot belongs to may hold that report or plot;
- a path that is a file where a folder is wanted (or the reverse), or that cannot be written, is
  refused before any model is loaded or image evaluated;
- an output folder is locked while a command fills it (:mod:`cosa.locks`): a second command
  writing there at the same time is refused, naming the first;
- an output folder that is not empty is refused unless ``--overwrite`` (:class:`OutputFolder`);
- files are written with :func:`cosa.files.write_file`: a failed write leaves the old file whole
  and is a one-line error naming the file.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import weakref
from collections.abc import Callable, Iterable
from pathlib import Path

from cosa.errors import CosaError
from cosa.files import os_errors_named, partial_path, write_file
from cosa.locks import READERS, Busy, FolderLock

MANIFEST = ".cosa-outputs"
LOCK = f"{MANIFEST}.lock"  # not the run folder's .lock: a user's own .lock must never be taken for ours

# What a training run writes into its folder (cosa.engine.run_dir): a folder holding any of them is
# no place for a new run.
RUN_ENTRIES = ("config.yaml", "metrics.jsonl", "final_metrics.json", "checkpoints", "tensorboard", "nonfinite")
# A folder holding all the entries of one of these is a run folder, which no output enters.
# config.yaml, tensorboard/ and other checkpoints are common in other projects' folders, so they
# alone do not make a run; config.yaml beside the run lock is a run stopped before its first log.
RUN_MARKERS = (
    ("metrics.jsonl",),
    ("final_metrics.json",),
    ("nonfinite",),
    ("checkpoints/last.pt",),
    ("checkpoints/best.pt",),
    ("config.yaml", ".lock"),
)

Inputs = Iterable[tuple[str, "str | Path"]]  # (what it is, e.g. "the dataset"; its path)


def check_output_file(path: str | Path, option: str, inputs: Inputs = (), own: str | Path | None = None) -> None:
    """Refuse an output file that is an input or inside one, in a run or a dataset (but ``own``, the
    run a report belongs to), a folder, or in a folder that cannot be written."""
    path = Path(path)
    refuse_inputs(path, option, [*inputs, *runs_and_datasets(path, own)], "file")
    if path.is_dir():
        raise CosaError(f"{option} {path} is a folder; name a file")
    _require_writable(path.parent, option, path)  # the file is replaced by a renamed sibling: its folder counts


def check_output_folder(path: str | Path, option: str, own: str | Path | None = None) -> None:
    """Refuse an output folder in a run or a dataset (but ``own``), a file, or one that cannot be
    written (or created)."""
    path = Path(path)
    refuse_inputs(path, option, runs_and_datasets(path, own), "folder")
    _require_writable_folder(path, option)


def runs_and_datasets(path: str | Path, own: str | Path | None = None) -> list[tuple[str, Path]]:
    """The run folders and datasets that ``path`` is or lies inside, as :data:`Inputs`, but ``own``.

    Found by their files wherever they are, so that no command needs to know of them: a run folder
    by :data:`RUN_MARKERS`, a dataset by its layout (``classes.txt``, VOC's or COCO's folders).
    """
    real = Path(path).expanduser().resolve()
    exempt = Path(own).expanduser().resolve() if own is not None else None
    found = []
    for folder in (real, *real.parents):
        if folder == exempt or not folder.is_dir():
            continue
        if any(all((folder / entry).exists() for entry in marker) for marker in RUN_MARKERS):
            found.append(("the run folder", folder))
        elif layout_of(folder) is not None:
            found.append(("the dataset", folder))
    return found


def layout_of(root: Path) -> str | None:
    """The layout of the dataset whose root is ``root`` (``folder``, ``voc`` or ``coco``), from its
    files; None for any other folder. It lives here, below every module that writes, because each
    of them keeps its outputs out of datasets (:func:`runs_and_datasets`); cosa.data reads by it."""
    if (root / "classes.txt").is_file():
        return "folder"
    if (root / "JPEGImages").is_dir() and ((root / "SegmentationClassAug").is_dir() or (root / "ImageSets").is_dir()):
        return "voc"
    if (root / "SegmentationClass" / "train2014").is_dir() or (root / "SegmentationClass" / "val2014").is_dir():
        return "coco"
    return None


class OutputFolder:
    """A folder that one command fills, e.g. ``cosa predict --out``; close it (or use it as a context
    manager) when the command is done. It is closed when it is garbage collected, too.

    Checked when made: not an input (nor inside or around one), not in a run or a dataset (but
    ``own``), writable, and empty unless ``overwrite``. With ``overwrite`` only a folder that the
    same command wrote before is accepted, and the files it wrote there are deleted before the
    first new one is written, so no stale output survives and files the command did not write are
    never touched.

    The folder is made and locked (``LOCK``) from the check until it is closed, so a second command
    writing into it at the same time is refused. A folder that it made and that is still empty when
    it is closed (the command failed before writing) is removed.

    Its files are known from the folder's manifest (``MANIFEST``), which names each one *before*
    it is written, so an interrupted run's files are known too. The alternative, writing a
    temporary sibling folder and swapping it in at the end, would be atomic, but it cannot replace
    a folder that is a mount point (a container's volume) or whose parent is read-only, and it
    would delete whatever else the folder holds.
    """

    def __init__(
        self,
        path: str | Path,
        option: str,
        command: str,
        overwrite: bool = False,
        inputs: Inputs = (),
        own: str | Path | None = None,
    ) -> None:
        self.path = Path(path).expanduser()
        self.option, self.command, self.overwrite, self.own = option, command, overwrite, own
        self.started = False
        self.check(inputs)
        lock = FolderLock(self.path / LOCK)
        self._finalizer = weakref.finalize(self, _release, lock, None if self.path.exists() else self.path)
        try:
            self._lock(lock)
            self._require_replaceable()
        except BaseException:
            self.close()
            raise

    def close(self) -> None:
        """Unlock the folder; remove it if this command made it and wrote nothing there."""
        self._finalizer()

    def __enter__(self) -> OutputFolder:
        return self

    def __exit__(self, *exception) -> None:
        self.close()

    def check(self, inputs: Inputs) -> None:
        """The checks of the path, again with ``inputs`` that became known later (a checkpoint's dataset)."""
        earlier = _read_manifest(self.path)[:1] == [self.command]
        # A folder this command wrote before (a dataset of ``cosa data synthetic``) is its own to replace.
        own_output = self.path.resolve() if earlier else None
        others = [(what, folder) for what, folder in runs_and_datasets(self.path, self.own) if folder != own_output]
        refuse_inputs(self.path, self.option, [*inputs, *others], "folder")
        _require_writable_folder(self.path, self.option)

    def entry(self, name: str | Path) -> Path:
        """The path of ``name`` in the folder, recorded as this command's output (a file or a folder)."""
        if not self.started:
            self._start()
        manifest = self.path / MANIFEST
        with os_errors_named(manifest, "write"), open(manifest, "a", encoding="utf-8") as lines:
            lines.write(json.dumps(Path(name).as_posix()) + "\n")
        return self.path / name

    def write(self, name: str | Path, writer: Callable[..., object], *args, **kwargs) -> Path:
        """Write the file ``name`` with ``writer(path, *args, **kwargs)``, as :func:`write_file`."""
        return write_file(self.entry(name), writer, *args, **kwargs)

    def _lock(self, lock: FolderLock) -> None:
        try:
            with os_errors_named(self.path, "write"):
                self.path.mkdir(parents=True, exist_ok=True)
                lock.acquire()
        except Busy as busy:
            if busy.holder == READERS:
                raise CosaError(
                    f"{self.option} {self.path}: a cosa run trains on this dataset; wait for it to end, or choose "
                    "another folder"
                ) from None
            raise CosaError(
                f"{self.option} {self.path}: another cosa command writes into this folder ({busy.holder}); "
                "wait for it to end, or choose another folder"
            ) from None

    def _require_replaceable(self) -> None:
        """Empty (but for the lock), or with ``overwrite`` holding the outputs of the same command."""
        with os_errors_named(self.path, "read"):
            if all(entry.name == LOCK for entry in self.path.iterdir()):
                return
        if not self.overwrite:
            raise CosaError(
                f"{self.option} {self.path} is not empty; choose another folder, or pass --overwrite to "
                f"replace the outputs of an earlier {self.command} there"
            )
        writer = _read_manifest(self.path)[:1]
        if writer and writer != [self.command]:
            raise CosaError(
                f"{self.option} {self.path} holds the outputs of {writer[0]}, not of {self.command}; "
                "choose another folder"
            )
        if not writer:
            raise CosaError(
                f"{self.option} {self.path} is not empty and holds no outputs of {self.command} "
                f"(no {MANIFEST}), so --overwrite would not know what to replace; choose another folder"
            )

    def _start(self) -> None:
        if self.overwrite:
            self._remove_previous_outputs()
        with os_errors_named(self.path / MANIFEST, "write"):
            (self.path / MANIFEST).write_text(json.dumps(self.command) + "\n", encoding="utf-8")
        self.started = True

    def _remove_previous_outputs(self) -> None:
        root = self.path.resolve()
        for name in _read_manifest(self.path)[1:]:
            path = self.path / name
            if not path.parent.resolve().is_relative_to(root):  # a hand-edited manifest must not reach outside
                continue
            for leftover in (path, partial_path(path)):
                with os_errors_named(leftover, "remove"):
                    if leftover.is_dir() and not leftover.is_symlink():
                        shutil.rmtree(leftover)
                    else:
                        leftover.unlink(missing_ok=True)


def read_lock(dataset: str | Path) -> FolderLock | None:
    """A shared lock on a folder that cosa wrote (a generated dataset) while a run reads it, so that
    ``--overwrite`` cannot replace it meanwhile; None for any other folder (no cosa command writes
    there) or one that cannot be written (nor overwritten). Release it when the run ends."""
    folder = Path(dataset)
    if not (folder / MANIFEST).is_file():
        return None
    lock = FolderLock(folder / LOCK, shared=True)
    try:
        lock.acquire()
    except Busy:
        raise CosaError(f"{folder}: a cosa command is writing this dataset; wait for it to end") from None
    except OSError:
        return None
    return lock


def _release(lock: FolderLock, made: Path | None) -> None:
    """Unlock; remove the folder ``made`` for the outputs if nothing was written there."""
    lock.release()
    if made is not None:
        with contextlib.suppress(OSError):  # not empty: outputs were written
            made.rmdir()


def _read_manifest(folder: Path) -> list[str]:
    """The command, then the names it recorded; nothing if there is no readable manifest."""
    try:
        return [json.loads(line) for line in (folder / MANIFEST).read_text(encoding="utf-8").splitlines()]
    except (OSError, ValueError):
        return []


def refuse_inputs(path: str | Path, option: str, inputs: Inputs, noun: str) -> None:
    """Refuse an output ``path`` that is, is inside or contains one of ``inputs``; ``noun``: file or folder."""
    path = Path(path).expanduser()
    real = path.resolve()
    for what, source in inputs:
        source_real = Path(source).expanduser().resolve()
        if real == source_real:
            relation = "is"
        elif source_real in real.parents:
            relation = "is inside"
        elif real in source_real.parents:
            relation = "contains"
        else:
            continue
        raise CosaError(
            f"{option} {path} {relation} {what} {source} ({what} would be overwritten); choose another {noun}"
        )


def _require_writable_folder(path: Path, option: str) -> None:
    if path.exists() and not path.is_dir():
        raise CosaError(f"{option} {path} is a file; name a folder")
    _require_writable(path, option, path)


def _require_writable(path: Path, option: str, shown: Path) -> None:
    """``path`` can be written, or created: its nearest existing ancestor is a writable folder."""
    existing = next(candidate for candidate in (path, *path.parents) if candidate.exists())
    if not existing.is_dir():
        raise CosaError(f"{option} {shown}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CosaError(f"{option} {shown}: {existing} is not writable")
