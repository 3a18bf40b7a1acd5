"""The assignment network follows the online network as an exponential moving average."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float, skip: torch.Tensor | None = None) -> None:
    """ξ ← ξ + (1−m)·(θ − ξ) over all parameters and floating-point buffers; other buffers are copied.

    ``skip``, a 0-dim bool tensor, leaves the floating-point tensors unchanged where it is true:
    decided on the device, so that a training step never waits for the host to read it.
    """
    target_floats, source_floats = [], []
    for mine, theirs in zip(
        list(target.parameters()) + list(target.buffers()), list(source.parameters()) + list(source.buffers())
    ):
        if mine.is_floating_point():
            target_floats.append(mine)
            source_floats.append(theirs.detach())
        else:
            mine.copy_(theirs)
    if not target_floats:
        return
    weight = 1.0 - momentum if skip is None else (~skip).float() * (1.0 - momentum)
    steps = torch._foreach_sub(source_floats, target_floats)
    torch._foreach_mul_(steps, weight)
    torch._foreach_add_(target_floats, steps)
