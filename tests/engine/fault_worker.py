"""Run by engine/test_faults.py: ``cosa train`` that fails at a chosen point (also under torchrun).

    python fault_worker.py POINT cosa-train-arguments...

Most points SIGKILL the process (a real kill -9): ``step:N`` (as iteration N starts), ``ema:N``
(iteration N's optimiser step is applied, its EMA update is not), ``evaluation`` (inside the first
evaluation), ``checkpoint-write:K`` (half of the K-th checkpoint file written) and
``checkpoint-replace:K`` (the K-th file written, not yet renamed). ``raise:N:R`` raises an
exception on rank R as iteration N starts, after printing the time to stderr. ``none`` trains
normally.
"""

import io
import os
import signal
import sys
import time

import cosa.engine.checkpoint as checkpoint_module
import cosa.engine.trainer as trainer_module
import cosa.files as files_module
from cosa.cli.main import main


def die() -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def kill_at_step(iteration: int) -> None:
    original = trainer_module.Trainer.train_step

    def train_step(self, batch):
        if self.iteration == iteration:
            die()
        return original(self, batch)

    trainer_module.Trainer.train_step = train_step


def raise_at_step(iteration: int, rank: int) -> None:
    original = trainer_module.Trainer.train_step

    def train_step(self, batch):
        if self.iteration == iteration and self.dist.rank == rank:
            print(f"raising at {time.time()}", file=sys.stderr, flush=True)
            raise RuntimeError(f"injected failure on rank {rank} at iteration {iteration}")
        return original(self, batch)

    trainer_module.Trainer.train_step = train_step


def kill_in_ema_update(iteration: int) -> None:
    """Die in the EMA update of ``iteration``: the online network has stepped, the AN has not."""
    original, calls = trainer_module.ema_update, []

    def ema_update(*args, **kwargs):
        calls.append(None)
        if len(calls) == iteration:
            die()
        return original(*args, **kwargs)

    trainer_module.ema_update = ema_update


def kill_in_checkpoint_write(count: int, halfway: bool) -> None:
    """Die while writing the ``count``-th checkpoint: halfway through the bytes, or before the rename."""
    save, replace = checkpoint_module.torch.save, files_module.os.replace
    state = {"writes": 0}

    def partial_save(payload, stream):
        state["writes"] += 1
        if halfway and state["writes"] == count:
            buffer = io.BytesIO()
            save(payload, buffer)
            stream.write(buffer.getvalue()[: len(buffer.getvalue()) // 2])
            stream.flush()
            os.fsync(stream.fileno())
            die()
        return save(payload, stream)

    def interrupted_replace(source, target):
        if not halfway and state["writes"] == count:
            die()
        return replace(source, target)

    checkpoint_module.torch.save = partial_save
    files_module.os.replace = interrupted_replace


def install(point: str) -> None:
    kind, _, number = point.partition(":")
    if kind == "step":
        kill_at_step(int(number))
    elif kind == "raise":
        iteration, rank = number.split(":")
        raise_at_step(int(iteration), int(rank))
    elif kind == "ema":
        kill_in_ema_update(int(number))
    elif kind == "evaluation":
        trainer_module.evaluate = lambda *args, **kwargs: die()
    elif kind in ("checkpoint-write", "checkpoint-replace"):
        kill_in_checkpoint_write(int(number), halfway=kind == "checkpoint-write")
    elif kind != "none":
        raise SystemExit(f"unknown kill point {point}")


if __name__ == "__main__":
    install(sys.argv[1])
    sys.exit(main(sys.argv[2:]))
