"""One process at a time in a folder: a lock that the kernel releases when its holder ends.

A command that writes a folder (a run folder while it trains, an output folder while a command
fills it) holds an advisory lock, ``flock``, on a lock file in it. The file holds ``PID HOST`` of
its holder, so that a refusal names the process. The kernel releases the lock however its holder
ends, ``kill -9`` included, so a lock file left behind by a killed process blocks nobody: there
is no stale lock to detect or take over.

The holder removes the file on release while it still holds the lock. Whoever locks the file
next checks that the path still names the file it locked; if that file was removed meanwhile it
locks the new one, so removing the file never lets two holders in.

A forked child (a data-loader worker) would share its parent's lock and keep it locked after the
parent is killed, until the child notices and ends; children close their copies at once, so the
lock ends with the process that took it.
"""

from __future__ import annotations

import fcntl
import os
import socket
from pathlib import Path

_held: set[int] = set()  # the descriptors of the lock files this process holds


def _drop_inherited_locks() -> None:
    """In a forked child: close the parent's lock files (closing a copy does not unlock them)."""
    for handle in _held:
        os.close(handle)
    _held.clear()


os.register_at_fork(after_in_child=_drop_inherited_locks)


READERS = "readers"  # Busy.holder of a lock that readers hold


class Busy(Exception):
    """Another process holds the lock; ``holder`` names it, e.g. ``pid 4242 on gpu-node-3``."""

    def __init__(self, holder: str) -> None:
        super().__init__(holder)
        self.holder = holder


class FolderLock:
    """The lock file ``path`` (in the folder it locks), held between :meth:`acquire` and :meth:`release`."""

    def __init__(self, path: str | Path, shared: bool = False) -> None:
        self.path = Path(path)
        # A shared lock (a reader's: a run reading a dataset) admits other readers and refuses a
        # writer; it does not name its holder, and the last reader to release it removes the file.
        self.shared = shared
        self._handle: int | None = None
        self._holder_pid: int | None = None

    def acquire(self) -> None:
        """Lock, or raise :class:`Busy`; an ``OSError`` if the folder cannot be written (it must exist)."""
        while True:
            handle = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o666)
            try:
                fcntl.flock(handle, (fcntl.LOCK_SH if self.shared else fcntl.LOCK_EX) | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _described(os.read(handle, 4096).decode(errors="replace"))
                if not self.shared and _shared_only(handle):
                    holder = READERS
                os.close(handle)
                raise Busy(holder) from None
            except BaseException:
                os.close(handle)
                raise
            if _still_named(self.path, handle):
                break
            os.close(handle)  # its holder removed it as it released it: lock the file that replaced it
        if not self.shared:
            os.ftruncate(handle, 0)
            os.write(handle, f"{os.getpid()} {socket.gethostname()}\n".encode())
        self._handle, self._holder_pid = handle, os.getpid()
        _held.add(handle)

    def release(self) -> None:
        """Remove the lock file and unlock (closing it unlocks); nothing if not held by this process."""
        if self._handle is None or self._holder_pid != os.getpid():  # a forked child holds nothing
            return
        try:
            if not self.shared or _last_reader(self._handle):
                self.path.unlink(missing_ok=True)
        finally:
            _held.discard(self._handle)
            os.close(self._handle)
            self._handle = None


def _still_named(path: Path, handle: int) -> bool:
    try:
        return os.path.samestat(os.fstat(handle), os.stat(path))
    except FileNotFoundError:
        return False


def _last_reader(handle: int) -> bool:
    """Whether a reader's lock becomes exclusive: no other reader holds the file, which its last
    reader removes as a writer does (the conversion may drop the shared lock; it is being released)."""
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    return True


def _shared_only(handle: int) -> bool:
    """Whether the lock on ``handle`` that refused an exclusive one is held by readers only."""
    try:
        fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    fcntl.flock(handle, fcntl.LOCK_UN)
    return True


def _described(holder: str) -> str:
    """``PID HOST`` as words; a holder that has not yet written its line is unknown."""
    pid, _, host = holder.strip().partition(" ")
    return f"pid {pid or '?'} on {host or '?'}"
