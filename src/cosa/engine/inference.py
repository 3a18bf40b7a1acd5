"""Turning network outputs into label maps: the evaluation protocol.

The same functions serve ``cosa evaluate``, ``cosa predict`` and the demo report, so a mask on
disk and a number in a table always come from one code path.
"""

from __future__ import annotations

import torch
from torch import nn

from cosa.method.pseudo_labels import MASKED_LOGIT, Assignments, channel_argmax, multiscale_assignments
from cosa.precision import autocast


def infer(network: nn.Module, inputs: torch.Tensor, scales: list[float], flip: bool, amp: str = "none") -> Assignments:
    """Segmentation logits and CAMs of all classes from every scale (+flip), at the input size, in
    fp32; the network's passes under autocast ``amp`` (``eval.amp``)."""
    with autocast(inputs.device.type, amp):
        return multiscale_assignments(network, inputs, None, scales, flip=flip)


def mask_absent(seg_logits: torch.Tensor, tags: torch.Tensor) -> torch.Tensor:
    """Set the logits of classes absent from ``tags`` (B×C) to −1e5; background is always kept."""
    present = torch.cat([torch.ones_like(tags[:, :1]), tags], dim=1) > 0
    return seg_logits.masked_fill(~present[:, :, None, None], MASKED_LOGIT)


def segmentation_labels(seg_logits: torch.Tensor, tags: torch.Tensor | None = None) -> torch.Tensor:
    """Argmax of the segmentation logits, tag-masked when ``tags`` is given."""
    return channel_argmax(seg_logits if tags is None else mask_absent(seg_logits, tags))


def cam_labels(cams: torch.Tensor, tags: torch.Tensor, threshold: float) -> torch.Tensor:
    """Background where the strongest CAM of a present class is at most ``threshold``, else that class."""
    present = cams * tags[:, :, None, None]
    strongest, index = present.max(dim=1)
    return torch.where(strongest > threshold, index + 1, torch.zeros_like(index))


def predicted_tags(logits: torch.Tensor) -> torch.Tensor:
    """Classes with σ(z) > 0.5; an image with none keeps its single most likely class."""
    tags = (logits > 0).float()
    top = torch.zeros_like(tags).scatter_(1, logits.argmax(dim=1, keepdim=True), 1.0)
    return torch.where(tags.sum(dim=1, keepdim=True) > 0, tags, top)
