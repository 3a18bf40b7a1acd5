"""Steps whose loss or gradients are not finite, and what ``train.nonfinite`` does about them.

:meth:`StepGuard.check` decides on the device whether a step must change nothing, so that the
host never waits for a step. The host reads the decision with the step's losses at the next
bookkeeping (engine/monitor.py), where each fault becomes a :class:`Fault` that
:meth:`StepGuard.handle` deals with: ``stop`` ends the run, saving the state before the fault and
its batch; ``skip`` counts the dropped step and goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cosa.engine.checkpoint import save_checkpoint
from cosa.engine.distributed import barrier
from cosa.errors import CosaError
from cosa.method.cosa import StepLosses

log = logging.getLogger(__name__)


@dataclass
class StepRecord:
    """A step as the host needs to know it, left on the device until the next bookkeeping."""

    iteration: int
    names: list[str]  # the loss terms, then "total" and "gradients"
    values: torch.Tensor  # the loss terms and the total on this process
    nonfinite: torch.Tensor  # bool per name: not finite on some process
    skipped: torch.Tensor  # 0-dim bool: the step changed nothing


@dataclass(frozen=True)
class Fault:
    """A step whose loss or gradients were not finite, as the host reads it."""

    iteration: int
    nonfinite: list[str]  # of StepRecord.names
    terms: dict[str, float]  # the non-finite loss terms' values

    def __str__(self) -> str:
        shown = ", ".join(f"{name}={value:g}" for name, value in self.terms.items())
        return f"step {self.iteration}: non-finite {', '.join(self.nonfinite)}" + (f" ({shown})" if shown else "")


class StepGuard:
    """Whether each step must change nothing, decided on the device.

    A non-finite loss term is a fault, and so are non-finite gradients, except with fp16, where
    overflowing gradients are how the gradient scaler finds its scale (the step is skipped
    without a fault). With ``stop``, a fault sets ``halted``, after which every step changes
    nothing until the host stops the run; the faulty step's batch is kept in ``fault_batch``.
    """

    def __init__(self, mode: str, fp16: bool, device: torch.device) -> None:
        self.stop = mode == "stop"
        self.fp16 = fp16
        self.halted = torch.zeros((), dtype=torch.bool, device=device)
        self.fault_batch: dict[str, torch.Tensor] | None = None
        self.skipped_steps = 0  # with skip: the steps dropped so far

    def check(
        self,
        iteration: int,
        batch: dict[str, torch.Tensor],
        losses: StepLosses,
        parameters: Iterable[torch.nn.Parameter],
        reduce_sum: Callable[[torch.Tensor], torch.Tensor],
    ) -> StepRecord:
        """The step as the host will read it; ``reduce_sum`` sums over processes, so that every
        process decides alike."""
        values = torch.stack([*losses.terms.values(), losses.total]).detach().float()
        grads = [p.grad for p in parameters if p.grad is not None]
        norm = torch.nn.utils.get_total_norm(grads) if grads else values.new_zeros(())
        nonfinite = reduce_sum((~torch.isfinite(torch.cat([values, norm.float()[None]]))).float()) > 0
        overflow = nonfinite[-1]
        if self.fp16:
            nonfinite = torch.cat([nonfinite[:-1], torch.zeros_like(nonfinite[-1:])])
        fault = nonfinite.any()
        skip = fault | overflow | self.halted
        if self.stop:
            first = fault & ~self.halted
            self.fault_batch = {
                key: value if self.fault_batch is None else torch.where(first, value, self.fault_batch[key])
                for key, value in batch.items()
            }
            self.halted = self.halted | fault
        return StepRecord(iteration, [*losses.terms, "total", "gradients"], values, nonfinite, skip)

    def handle(self, fault: Fault, run_dir: Path, state: Callable[[], dict[str, Any]], is_main: bool) -> None:
        """Count and name a dropped step (``skip``), or end the run (``stop``), first saving
        ``state()`` (the training checkpoint) as the state before the fault, with its batch."""
        if not self.stop:
            self.skipped_steps += 1
            log.warning("%s; step skipped, networks unchanged (%d skipped so far)", fault, self.skipped_steps)
            return
        # Every step from the fault on changed nothing: the networks, optimiser and thresholds are
        # those before it. With the batch, this file replays it (load it like last.pt).
        path = run_dir / "nonfinite" / f"step{fault.iteration}.pt"
        payload = {
            **state(),
            "iteration": fault.iteration - 1,
            "batch": {key: value.cpu() for key, value in self.fault_batch.items()},
        }
        if is_main:
            save_checkpoint(path, payload)
        barrier()
        raise CosaError(
            f"{fault}; saved the state before it and its batch to {path} (train.nonfinite=skip skips such steps)"
        )
