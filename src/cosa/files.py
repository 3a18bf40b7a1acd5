"""Writing files so that a crash, a kill or a full disk leaves the old file or the new one, never a part.

Two forms, for two kinds of writers, with the same guarantees: the new content goes to a hidden
sibling that replaces the file only once complete, and an ``OSError`` (disk full, permissions)
becomes a one-line :class:`CosaError` naming the file.

- :func:`write_atomically` hands the writer a stream (``torch.save``, text), and syncs it to disk
  before the rename: checkpoints and the run's other files.
- :func:`write_file` hands the writer a path (PIL's ``save``, ``numpy.savez``, which pick the
  format from the file's suffix, so the temporary name keeps it): the outputs of commands.
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from cosa.errors import CosaError


def _umask() -> int:
    mask = os.umask(0o022)  # the umask can only be read by setting it
    os.umask(mask)
    return mask


# Read once, while importing: setting the umask to read it would race with threads creating files.
FILE_MODE = 0o666 & ~_umask()  # what open() would give a new file; mkstemp gives 0600


@contextlib.contextmanager
def os_errors_named(path: str | Path, action: str = "write"):
    """An ``OSError`` inside becomes the one-line error ``PATH: cannot ACTION (reason)``."""
    try:
        yield
    except OSError as error:
        raise cannot(action, path, error) from None


def cannot(action: str, path: str | Path, error: OSError) -> CosaError:
    return CosaError(f"{path}: cannot {action} ({error.strerror or error})")


class _RecordingFile(io.BufferedWriter):
    """A file that remembers its write error: torch.save reports one only as 'unexpected pos …'."""

    error: OSError | None = None

    def write(self, data) -> int:
        try:
            return super().write(data)
        except OSError as error:
            self.error = error
            raise


def write_atomically(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Call ``write(stream)`` on a temporary file next to ``path``, fsync it, then rename it over ``path``.

    The temporary file is removed on any failure, Ctrl-C and SIGTERM included.
    """
    path = Path(path)
    with os_errors_named(path):
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    stream = _RecordingFile(io.FileIO(handle, "wb"))
    try:
        with stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        os.chmod(temporary, FILE_MODE)
        os.replace(temporary, path)
    except BaseException as error:
        Path(temporary).unlink(missing_ok=True)
        _raise_interrupt_behind(error)
        failure = stream.error or (error if isinstance(error, OSError) else None)
        if failure is None:
            raise
        raise cannot("write", path, failure) from None


def _raise_interrupt_behind(error: BaseException) -> None:
    """Raise the Ctrl-C or SIGTERM that ``error`` was raised while handling, if any.

    A writer interrupted mid-file may fail again while closing it (torch.save's zip writer then
    raises ``unexpected pos …``), which would turn a clean stop into a traceback.
    """
    cause = error.__context__
    while cause is not None:
        if isinstance(cause, KeyboardInterrupt):
            raise cause from None
        cause = cause.__context__


def write_text_atomically(path: str | Path, text: str) -> None:
    write_atomically(path, lambda stream: stream.write(text.encode()))


def write_file(path: str | Path, writer: Callable[..., object], *args, **kwargs) -> Path:
    """``writer(temporary, *args, **kwargs)`` on a sibling of ``path`` named by
    :func:`partial_path`, renamed to ``path`` once complete; returns ``path``."""
    path = Path(path)
    partial = partial_path(path)
    with os_errors_named(path):
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            writer(partial, *args, **kwargs)
            os.replace(partial, path)
        except BaseException as error:
            _raise_interrupt_behind(error)
            raise
        finally:
            with contextlib.suppress(OSError):
                partial.unlink(missing_ok=True)  # gone after the rename; a failed or interrupted write's rest
    return path


def partial_path(path: Path) -> Path:
    """Where :func:`write_file` writes ``path`` first: hidden, with the same suffix."""
    return path.with_name(f".{path.stem}.partial{path.suffix}")
