"""The CoSA losses as small functions (METHOD.md §4–6). L_reg lives in ``dense_energy``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cosa.data.io import IGNORE_INDEX
from cosa.method.pseudo_labels import resize


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MLSM(z, y) = −(1/C) Σ_c [y log σ(z) + (1−y) log(1−σ(z))], averaged over the batch."""
    return F.multilabel_soft_margin_loss(logits, labels)


def balanced_segmentation_loss(logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.5) -> torch.Tensor:
    """ℓ(S, P) = (1−α)·mean_{P=0} CE + α·mean_{1≤P≤C} CE over the batch's pixels.

    A group with no pixels contributes 0 (the released code would give NaN there).
    """
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    background = target == 0
    foreground = (target > 0) & (target != IGNORE_INDEX)
    background_term = (ce * background).sum() / background.sum().clamp(min=1)
    foreground_term = (ce * foreground).sum() / foreground.sum().clamp(min=1)
    return (1 - alpha) * background_term + alpha * foreground_term


def cam_to_segmentation_loss(
    seg_logits: torch.Tensor, cpl: torch.Tensor, aux_cpl: torch.Tensor, alpha: float = 0.5
) -> torch.Tensor:
    """L_c2s = ½ ℓ(S, P) + ½ ℓ(S, P^a), with S at the pseudo-labels' size."""
    return 0.5 * balanced_segmentation_loss(seg_logits, cpl, alpha) + 0.5 * balanced_segmentation_loss(
        seg_logits, aux_cpl, alpha
    )


def segmentation_to_cam_loss(cam_logits: torch.Tensor, spl: torch.Tensor) -> torch.Tensor:
    """L_s2c = mean over pixels of MLSM(ReLU(A(i)), Q^fg(i)), Q^fg resized to the CAM grid."""
    targets = resize(spl[:, 1:], cam_logits.shape[-2:])
    return F.binary_cross_entropy_with_logits(cam_logits.relu(), targets)


def supervised_segmentation_loss(seg_logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on ground-truth masks, mean over labelled pixels (the ``supervised`` upper bound)."""
    ce = F.cross_entropy(seg_logits, masks, ignore_index=IGNORE_INDEX, reduction="sum")
    return ce / (masks != IGNORE_INDEX).sum().clamp(min=1)
