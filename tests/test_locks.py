"""The folder lock (cosa.locks) that run folders and output folders share: one holder at a time,
named in a refusal, and released by the kernel however its holder ends."""

import os
import signal
import socket
import subprocess
import sys

import pytest

import cosa.locks
from cosa.locks import Busy, FolderLock

from conftest import lock_held_by_another_process


def test_a_held_lock_refuses_a_second_holder_naming_the_first_and_release_removes_it(tmp_path):
    lock = FolderLock(tmp_path / ".lock")
    lock.acquire()
    assert (tmp_path / ".lock").read_text() == f"{os.getpid()} {socket.gethostname()}\n"
    with pytest.raises(Busy) as refused:
        FolderLock(tmp_path / ".lock").acquire()  # a lock of its own, as another command would take it
    assert refused.value.holder == f"pid {os.getpid()} on {socket.gethostname()}"
    lock.release()
    assert not (tmp_path / ".lock").exists()
    again = FolderLock(tmp_path / ".lock")
    again.acquire()
    again.release()


def test_shared_locks_admit_each_other_and_refuse_an_exclusive_one_until_the_last_is_released(tmp_path):
    readers = [FolderLock(tmp_path / ".lock", shared=True) for _ in range(2)]
    for reader in readers:
        reader.acquire()
    with pytest.raises(Busy) as refused:
        FolderLock(tmp_path / ".lock").acquire()
    assert refused.value.holder == cosa.locks.READERS
    readers[0].release()
    assert (tmp_path / ".lock").exists()  # the other reader still holds it
    with pytest.raises(Busy):
        FolderLock(tmp_path / ".lock").acquire()
    readers[1].release()
    assert not (tmp_path / ".lock").exists()  # the last reader removed it
    writer = FolderLock(tmp_path / ".lock")
    writer.acquire()
    with pytest.raises(Busy, match=f"pid {os.getpid()} on "):  # and a writer refuses readers
        FolderLock(tmp_path / ".lock", shared=True).acquire()
    writer.release()


def test_a_live_process_holds_the_lock_and_kill_9_releases_it(tmp_path):
    with lock_held_by_another_process(tmp_path / ".lock") as holder:
        with pytest.raises(Busy, match=f"pid {holder.pid} on "):
            FolderLock(tmp_path / ".lock").acquire()
        holder.kill()  # SIGKILL: no clean-up runs, the lock file stays
        holder.wait()
        assert (tmp_path / ".lock").read_text().startswith(f"{holder.pid} ")
        lock = FolderLock(tmp_path / ".lock")
        lock.acquire()  # the kernel released the lock with its process: no stale lock to take over
    assert (tmp_path / ".lock").read_text().startswith(f"{os.getpid()} ")
    lock.release()


# The child prints its pid once it runs, so after its fork handlers closed the inherited lock.
FORK_AND_HOLD = (
    "import os, sys, time; from cosa.locks import FolderLock; FolderLock(sys.argv[1]).acquire(); "
    "child = os.fork()\nif child == 0: print(os.getpid(), flush=True)\ntime.sleep(600)"
)


def test_a_forked_child_does_not_keep_its_killed_parents_lock(tmp_path):
    """A data-loader worker outlives a killed run by seconds; the run's lock must not wait for it."""
    parent = subprocess.Popen(
        [sys.executable, "-c", FORK_AND_HOLD, str(tmp_path / ".lock")], stdout=subprocess.PIPE, text=True
    )
    child = int(parent.stdout.readline())
    try:
        parent.kill()
        parent.wait()
        os.kill(child, 0)  # the child lives on
        lock = FolderLock(tmp_path / ".lock")
        lock.acquire()
        lock.release()
    finally:
        parent.stdout.close()
        os.kill(child, signal.SIGKILL)


def test_a_lock_file_removed_while_it_is_locked_is_not_trusted(tmp_path, monkeypatch):
    """The holder removes the file as it releases it; who locked that removed file locks the new one."""
    path = tmp_path / ".lock"
    real_flock, calls = cosa.locks.fcntl.flock, []

    def flock_then_the_holder_releases(handle, operation):
        real_flock(handle, operation)
        calls.append(handle)
        if len(calls) == 1:  # the file we locked is removed, and another process makes and holds a new one
            path.unlink()
            path.write_text("")

    monkeypatch.setattr(cosa.locks.fcntl, "flock", flock_then_the_holder_releases)
    lock = FolderLock(path)
    lock.acquire()
    assert len(calls) == 2 and os.path.samestat(os.fstat(calls[1]), os.stat(path))
    assert path.read_text().startswith(f"{os.getpid()} ")
    lock.release()
