"""Where commands write: outputs never overwrite inputs, and earlier outputs are replaced only on request.

Every command that writes files checks its output paths here before it starts working, and writes
through here (docs/reliability.md, "Outputs"):

- an output never is, contains or lies inside one of the command's inputs (a dataset root, an
  image folder, a checkpoint): real paths are compared, so a symbolic link or ``..`` hides nothing;
- a path that is a file where a folder is wanted (or the reverse), or that cannot be written, is
  refused before any model is loaded or image evaluated;
- an output folder that is not empty is refused unless ``--overwrite`` (:class:`OutputFolder`);
- files are written with :func:`cosa.files.write_file`: a failed write leaves the old file whole
  and is a one-line error naming the file.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Iterable
from pathlib import Path

from cosa.errors import CosaError
from cosa.files import os_errors_named, partial_path, write_file

MANIFEST = ".cosa-outputs"

Inputs = Iterable[tuple[str, "str | Path"]]  # (what it is, e.g. "the dataset"; its path)


def check_output_file(path: str | Path, option: str, inputs: Inputs = ()) -> None:
    """Refuse an output file that is an input or inside one, a folder, or in a folder that cannot be written."""
    path = Path(path)
    refuse_inputs(path, option, inputs, "file")
    if path.is_dir():
        raise CosaError(f"{option} {path} is a folder; name a file")
    _require_writable(path.parent, option, path)  # the file is replaced by a renamed sibling: its folder counts


def check_output_folder(path: str | Path, option: str) -> None:
    """Refuse an output folder that is a file or cannot be written (or created)."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise CosaError(f"{option} {path} is a file; name a folder")
    _require_writable(path, option, path)


class OutputFolder:
    """A folder that one command fills, e.g. ``cosa predict --out``.

    Checked when made: not an input (nor inside or around one), writable, and empty unless
    ``overwrite``. With ``overwrite`` only a folder that the same command wrote before is accepted,
    and the files it wrote there are deleted before the first new one is written, so no stale
    output survives and files the command did not write are never touched.

    Those files are known from the folder's manifest (``MANIFEST``), which names each one *before*
    it is written, so an interrupted run's files are known too. The alternative, writing a
    temporary sibling folder and swapping it in at the end, would be atomic, but it cannot replace
    a folder that is a mount point (a container's volume) or whose parent is read-only, and it
    would delete whatever else the folder holds.
    """

    def __init__(
        self, path: str | Path, option: str, command: str, overwrite: bool = False, inputs: Inputs = ()
    ) -> None:
        self.path = Path(path).expanduser()
        self.option, self.command, self.overwrite = option, command, overwrite
        self.started = False
        self.check(inputs)

    def check(self, inputs: Inputs) -> None:
        """The checks, again with ``inputs`` that became known later (a checkpoint's dataset)."""
        refuse_inputs(self.path, self.option, inputs, "folder")
        check_output_folder(self.path, self.option)
        with os_errors_named(self.path, "read"):
            if not self.path.is_dir() or not any(self.path.iterdir()):
                return
        if not self.overwrite:
            raise CosaError(
                f"{self.option} {self.path} is not empty; choose another folder, or pass --overwrite to "
                f"replace the outputs of an earlier {self.command} there"
            )
        if next(iter(self._read_manifest()), None) != self.command:
            raise CosaError(
                f"{self.option} {self.path} is not empty and holds no outputs of {self.command} "
                f"(no {MANIFEST}), so --overwrite would not know what to replace; choose another folder"
            )

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

    def _start(self) -> None:
        if self.path.is_dir() and self.overwrite:
            self._remove_previous_outputs()
        with os_errors_named(self.path / MANIFEST, "write"):
            self.path.mkdir(parents=True, exist_ok=True)
            (self.path / MANIFEST).write_text(json.dumps(self.command) + "\n", encoding="utf-8")
        self.started = True

    def _read_manifest(self) -> list[str]:
        """The command, then the names it recorded; nothing if there is no readable manifest."""
        try:
            return [json.loads(line) for line in (self.path / MANIFEST).read_text(encoding="utf-8").splitlines()]
        except (OSError, ValueError):
            return []

    def _remove_previous_outputs(self) -> None:
        root = self.path.resolve()
        for name in self._read_manifest()[1:]:
            path = self.path / name
            if not path.parent.resolve().is_relative_to(root):  # a hand-edited manifest must not reach outside
                continue
            for leftover in (path, partial_path(path)):
                with os_errors_named(leftover, "remove"):
                    if leftover.is_dir() and not leftover.is_symlink():
                        shutil.rmtree(leftover)
                    else:
                        leftover.unlink(missing_ok=True)


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


def _require_writable(path: Path, option: str, shown: Path) -> None:
    """``path`` can be written, or created: its nearest existing ancestor is a writable folder."""
    existing = next(candidate for candidate in (path, *path.parents) if candidate.exists())
    if not existing.is_dir():
        raise CosaError(f"{option} {shown}: {existing} is a file, not a folder")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise CosaError(f"{option} {shown}: {existing} is not writable")
