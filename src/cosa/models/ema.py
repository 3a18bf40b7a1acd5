"""The assignment network follows the online network as an exponential moving average."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float, skip: torch.Tensor | None = None) -> None:
    """ξ ← m·ξ + (1−m)·θ over all parameters and floating-point buffers; other buffers are copied.

    The products are rounded as released (ξ·m, then + (1−m)·θ), so that the assignment network
    follows the released trajectory to the bit. ``skip``, a 0-dim bool tensor, leaves the
    floating-point tensors unchanged where it is true (m = 1, 1 − m = 0): decided on the device,
    so that a training step never waits for the host to read it.
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
    keep, take = momentum, 1.0 - momentum
    if skip is not None:
        keep, take = torch.where(skip, 1.0, keep), torch.where(skip, 0.0, take)
    torch._foreach_mul_(target_floats, keep)
    torch._foreach_add_(target_floats, torch._foreach_mul(source_floats, take))
