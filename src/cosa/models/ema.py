"""The assignment network follows the online network as an exponential moving average."""

from __future__ import annotations

import torch
from torch import nn


@torch.no_grad()
def ema_update(target: nn.Module, source: nn.Module, momentum: float) -> None:
    """ξ ← m·ξ + (1−m)·θ over all parameters and floating-point buffers; other buffers are copied."""
    target_floats, source_floats = [], []
    for mine, theirs in zip(
        list(target.parameters()) + list(target.buffers()), list(source.parameters()) + list(source.buffers())
    ):
        if mine.is_floating_point():
            target_floats.append(mine)
            source_floats.append(theirs.detach())
        else:
            mine.copy_(theirs)
    if target_floats:
        torch._foreach_lerp_(target_floats, source_floats, 1.0 - momentum)
