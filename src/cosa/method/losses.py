"""The CoSA losses as small functions. L_reg lives in ``dense_energy``."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from cosa.data.io import IGNORE_INDEX
from cosa.method.pseudo_labels import resize

_EXCLUDED = -1e4


def classification_loss(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """MLSM(z, y) = −(1/C) Σ_c [y log σ(z) + (1−y) log(1−σ(z))], averaged over the batch."""
    return F.multilabel_soft_margin_loss(logits, labels)


def balanced_segmentation_loss(
    logits: torch.Tensor, target: torch.Tensor, alpha: float = 0.5, weights: torch.Tensor | None = None
) -> torch.Tensor:
    """ℓ(S, P) = (1−α)·mean_{P=0} CE + α·mean_{1≤P≤C} CE over the batch's pixels.

    With RAW ``weights`` (B×H×W) each pixel's CE is weighted; the means still divide by pixel
    counts, not weight sums. As released, each count has 1e-6 added, so a group
    with no pixels contributes 0.
    """
    ce = F.cross_entropy(logits, target, ignore_index=IGNORE_INDEX, reduction="none")
    if weights is not None:
        ce = ce * weights
    background = target == 0
    foreground = (target > 0) & (target != IGNORE_INDEX)
    background_term = (ce * background).sum() / (background.sum() + 1e-6)
    foreground_term = (ce * foreground).sum() / (foreground.sum() + 1e-6)
    return (1 - alpha) * background_term + alpha * foreground_term


def cam_to_segmentation_loss(
    seg_logits: torch.Tensor,
    cpl: torch.Tensor,
    aux_cpl: torch.Tensor,
    alpha: float = 0.5,
    weights: torch.Tensor | None = None,
    aux_weights: torch.Tensor | None = None,
) -> torch.Tensor:
    """L_c2s = ½ ℓ(S, P) + ½ ℓ(S, P^a), with S at the pseudo-labels' size (RAW: weighted ℓ)."""
    return 0.5 * balanced_segmentation_loss(seg_logits, cpl, alpha, weights) + 0.5 * balanced_segmentation_loss(
        seg_logits, aux_cpl, alpha, aux_weights
    )


def segmentation_to_cam_loss(cam_logits: torch.Tensor, spl: torch.Tensor) -> torch.Tensor:
    """L_s2c = mean over pixels of MLSM(ReLU(A(i)), Q^fg(i)), Q^fg resized to the CAM grid."""
    targets = resize(spl[:, 1:], cam_logits.shape[-2:])
    return F.binary_cross_entropy_with_logits(cam_logits.relu(), targets)


def hard_segmentation_labels(spl: torch.Tensor, size: tuple[int, int], confidence: float) -> torch.Tensor:
    """The SPL made hard for L_csc: argmax of Q, ignore where max Q < ``confidence``, at ``size``."""
    best, label = spl.max(dim=1)
    label = label.masked_fill(best < confidence, IGNORE_INDEX)
    return F.interpolate(label[:, None].float(), size=size, mode="nearest")[:, 0].long()


def contrastive_separation_loss(
    cam_logits: torch.Tensor, hard_spl: torch.Tensor, labels: torch.Tensor, temperature: float
) -> torch.Tensor:
    """L_csc, a reconstruction: push each present class's CAM off the background.

    ``cam_logits`` are the ON's CAMs A (B×C×h×w), ``hard_spl`` the AN's hard SPL at h×w (0
    background, 1..C classes, 255 ignore). Per image and present class c: M̂_c = ReLU(A_c) /
    (max ReLU(A_c) + 1e-5); each pixel i of c is contrasted, InfoNCE-style at temperature τ_c,
    against the k = min(|B|, max(|F_c|, 1)) background pixels where M̂_c is highest. The mean
    runs over all (class, pixel) pairs of the batch; 0 when there are none. The class pixels'
    scores are constants: the loss pushes the background down rather than lifting the class over
    its SPL region (the maximum in M̂'s normalisation still takes gradients).
    """
    classes = cam_logits.shape[1]
    activation = cam_logits.float().relu().flatten(2)
    normalized = activation / (activation.amax(dim=2, keepdim=True) + 1e-5)
    scores = normalized / temperature  # B×C×N
    target = hard_spl.flatten(1)[:, None, :]  # B×1×N
    class_ids = torch.arange(1, classes + 1, device=cam_logits.device)[None, :, None]
    present = labels[:, :, None] > 0
    foreground = (target == class_ids) & present  # B×C×N
    background = (target == 0).expand_as(foreground)

    k = torch.minimum(background.sum(2), foreground.sum(2).clamp(min=1))  # B×C
    # A large finite "minus infinity" keeps the gradient finite when an image has no background.
    hardest = scores.masked_fill(~background, _EXCLUDED).sort(dim=2, descending=True).values
    within_k = torch.arange(hardest.shape[2], device=hardest.device)[None, None, :] < k[:, :, None]
    negatives = hardest.masked_fill(~within_k, _EXCLUDED).logsumexp(dim=2, keepdim=True)
    positives = scores.detach()
    per_pixel = torch.logaddexp(positives, negatives) - positives  # −log(e^s / (e^s + Σ_N e^n))
    pairs = foreground.sum()
    return (per_pixel * foreground).sum() / pairs.clamp(min=1)


def supervised_segmentation_loss(seg_logits: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
    """Cross-entropy on ground-truth masks, mean over labelled pixels (the ``supervised`` upper bound)."""
    ce = F.cross_entropy(seg_logits, masks, ignore_index=IGNORE_INDEX, reduction="sum")
    return ce / (masks != IGNORE_INDEX).sum().clamp(min=1)
