"""Assignments: what the assignment network (AN) computes each step, and the two pseudo-labels.

- ``multiscale_assignments`` — CAMs M, M^a and summed segmentation logits Ŝ;
- ``cam_pseudo_labels`` — the CPL P (fg / bg / ignore by two thresholds) supervising the
  segmentation decoder;
- ``segmentation_pseudo_labels`` — the SPL Q = softmax(Ŝ'/τ) supervising the CAMs;
- ``reliability_weighted_labels`` — RAW (a reconstruction, docs/method.md): a label and a weight for
  every in-box pixel instead of an ignore band.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cosa.data.io import IGNORE_INDEX

MASKED_LOGIT = -1e5


@dataclass
class Assignments:
    cam: torch.Tensor  # M: B×C×H×W in [0, 1]; absent classes 0 when labels were given
    aux_cam: torch.Tensor  # M^a
    seg: torch.Tensor  # Ŝ: B×(C+1)×H×W, logits summed over scales and flips
    logits: torch.Tensor  # B×C classification logits at the first scale (mean over the flip pair)


def channel_argmax(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor.argmax(dim=1)``, the same indices (the first maximum on ties), but through
    ``max``: on a CPU argmax across the channels of a large map is 2–7× slower."""
    return tensor.max(dim=1).indices


def resize(tensor: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False)


def normalize_cams(cams: torch.Tensor, labels: torch.Tensor | None = None) -> torch.Tensor:
    """Per image and class min–max normalisation to [0, 1]; classes absent from ``labels`` → 0."""
    shifted = cams - cams.amin(dim=(2, 3), keepdim=True)
    normalized = shifted / (shifted.amax(dim=(2, 3), keepdim=True) + 1e-5)
    return normalized if labels is None else normalized * labels[:, :, None, None]


@torch.no_grad()
def multiscale_assignments(
    network: nn.Module,
    images: torch.Tensor,
    labels: torch.Tensor | None,
    scales: list[float],
    aux_last_scale_only: bool = False,
    flip: bool = True,
    channels: torch.Tensor | None = None,
) -> Assignments:
    """Run ``network`` on ``images`` at each scale (with its flip) and merge.

    CAMs: upsample, un-flip, max over the flip pair, ReLU, sum over scales, normalise.
    Segmentation: un-flip, sum over the flip pair, upsample, sum over scales. With
    ``aux_last_scale_only`` the auxiliary CAM comes from the last scale alone, as released.

    With ``labels`` and ``channels`` (B×K, from :func:`tag_channels`) only those CAM channels are
    merged at full resolution; the others, absent classes that the normalisation would zero, are
    0. Every channel is computed on its own, so the result is the same up to rounding (resizing
    fewer channels may vectorise differently).
    """
    batch, _, height, width = images.shape
    size = (height, width)
    copies = 2 if flip else 1
    if channels is not None:
        flipped_channels = channels.repeat(copies, 1)

    def merge(tensor: torch.Tensor, reduce) -> torch.Tensor:
        if channels is not None:
            tensor = gather_channels(tensor, flipped_channels)
        tensor = resize(tensor.float(), size)
        return reduce(tensor[:batch], tensor[batch:].flip(-1)) if flip else tensor

    def merge_sum(tensor: torch.Tensor) -> torch.Tensor:
        # Bilinear resizing is linear and commutes with the flip, so the pair is summed first
        # and resized once: the same values up to rounding, half the full-resolution work.
        tensor = tensor.float()
        return resize(tensor[:batch] + tensor[batch:].flip(-1) if flip else tensor, size)

    cam_sum = aux_sum = seg_sum = logits = None
    for scale in scales:
        scaled = (
            images
            if scale == 1.0
            else F.interpolate(
                images, size=(int(height * scale), int(width * scale)), mode="bilinear", align_corners=False
            )
        )
        output = network(torch.cat([scaled, scaled.flip(-1)]) if flip else scaled)
        if logits is None:
            logits = output.logits.float().view(copies, batch, -1).mean(0)
        seg = merge_sum(output.seg)
        seg_sum = seg if seg_sum is None else seg_sum + seg
        cam = merge(output.cam, torch.maximum).relu()
        cam_sum = cam if cam_sum is None else cam_sum + cam
        if not aux_last_scale_only or scale == scales[-1]:  # others would be discarded: not upsampled
            aux = merge(output.aux_cam, torch.maximum).relu()
            aux_sum = aux if aux_sum is None else aux_sum + aux
    if channels is None:
        return Assignments(normalize_cams(cam_sum, labels), normalize_cams(aux_sum, labels), seg_sum, logits)
    tags = labels.gather(1, channels)
    cam, aux = (
        scatter_channels(normalize_cams(merged, tags), channels, labels.shape[1]) for merged in (cam_sum, aux_sum)
    )
    return Assignments(cam, aux, seg_sum, logits)


def tag_channels(labels: torch.Tensor, count: int) -> torch.Tensor:
    """B×``count`` class indices, ascending, that hold every tag of each image (the rest are absent
    classes); ``count`` must be at least the most tags of any image."""
    return labels.topk(count, dim=1).indices.sort(dim=1).values


def gather_channels(tensor: torch.Tensor, channels: torch.Tensor) -> torch.Tensor:
    """The channels ``channels`` (B×K) of a B×C×H×W tensor, as B×K×H×W."""
    return tensor.gather(1, channels[:, :, None, None].expand(-1, -1, *tensor.shape[-2:]))


def scatter_channels(tensor: torch.Tensor, channels: torch.Tensor, num_channels: int) -> torch.Tensor:
    """B×K×H×W placed at ``channels`` (B×K) of a B×``num_channels``×H×W tensor of zeros."""
    full = tensor.new_zeros(tensor.shape[0], num_channels, *tensor.shape[-2:])
    return full.scatter_(1, channels[:, :, None, None].expand_as(tensor), tensor)


def _label_above(
    halved: torch.Tensor, present: torch.Tensor, threshold: float | torch.Tensor, size: tuple[int, int]
) -> torch.Tensor:
    """0 where no CAM exceeds ``threshold``, else 1 + the strongest of the ``halved`` channels.

    As released: the threshold channel and the present classes' CAMs, at half resolution, go
    through a softmax over those channels only (``present``: B×K bool), are upsampled
    bilinearly to ``size`` and compared there. Absent classes take no part in the softmax.
    """
    stacked = torch.cat([torch.ones_like(halved[:, :1]) * threshold, halved], dim=1)
    with_threshold = torch.cat([torch.ones_like(present[:, :1]), present], dim=1)[:, :, None, None]
    probabilities = stacked.masked_fill(~with_threshold, float("-inf")).softmax(dim=1)
    return channel_argmax(resize(probabilities, size))


def cam_pseudo_labels(
    cams: torch.Tensor,
    labels: torch.Tensor,
    inside: torch.Tensor,
    high: float | torch.Tensor,
    low: float | torch.Tensor,
    channels: torch.Tensor | None = None,
) -> torch.Tensor:
    """CPL: class where the strongest CAM exceeds ``high``, background below ``low``, else ignore.

    ``cams`` (B×C×H×W) are normalised, ``labels`` (B×C) the image tags; ``inside`` (B×H×W bool)
    marks the crop box, and everything outside it is ignore. The comparison is the released one:
    at half resolution, through a softmax over the threshold and the present classes, upsampled
    (:func:`_label_above`). With ``channels`` (B×K, from :func:`tag_channels`) only those
    channels are resampled: the others are absent classes, which take no part.
    """
    size = tuple(cams.shape[-2:])
    present = labels > 0
    if channels is not None:
        cams, present = gather_channels(cams, channels), present.gather(1, channels)
    halved = F.interpolate(cams, size=(size[0] // 2, size[1] // 2), mode="bilinear", align_corners=False)
    confident = _label_above(halved, present, high, size)
    if channels is not None:  # channel k → class channels[k − 1]
        lookup = torch.cat([torch.zeros_like(channels[:, :1]), channels + 1], dim=1)
        confident = lookup.gather(1, confident.flatten(1)).view_as(confident)
    pseudo = torch.where(confident > 0, confident, torch.full_like(confident, IGNORE_INDEX))
    return pseudo.masked_fill(_label_above(halved, present, low, size) == 0, 0).masked_fill(~inside, IGNORE_INDEX)


def reliability_weighted_labels(
    cams: torch.Tensor,
    labels: torch.Tensor,
    inside: torch.Tensor,
    high: float | torch.Tensor,
    low: float | torch.Tensor,
    temperature: float,
    power: float,
) -> tuple[torch.Tensor, torch.Tensor]:
    """RAW (a reconstruction): hard labels and reliability weights, both B×H×W.

    Each pixel chooses among background, scored δ_m = (δ_l + δ_h)/2, and the present classes,
    scored by their CAM. With q = softmax(scores / τ_r) over those K = 1 + #present choices,
    PPL = exp(entropy(q)) and the weight is ρ^β with ρ = (K/PPL − 1)/(K − 1): 0 where the pixel
    sits on the threshold, towards 1 where one choice dominates. Outside the crop box the label
    is ignore and the weight 0, and so are they where the strongest CAM lies between δ_l and δ_h:
    the CPL's ignore band stays (labelling it too shrank objects).
    """
    middle = (torch.as_tensor(high) + torch.as_tensor(low)).to(cams) / 2
    present = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1)[:, :, None, None] > 0
    scores = torch.cat([torch.ones_like(cams[:, :1]) * middle, cams], dim=1)
    scores = scores.masked_fill(~present, float("-inf"))
    choice = channel_argmax(scores)
    log_q = (scores / temperature).log_softmax(dim=1)
    entropy = -(log_q.exp() * log_q.masked_fill(~present, 0.0)).sum(dim=1)
    choices = present.sum(dim=1).to(cams)  # K, B×1×1
    reliability = ((choices / entropy.exp() - 1) / (choices - 1).clamp(min=1)).clamp(0, 1)
    reliability = torch.where(choices > 1, reliability, torch.ones_like(reliability))  # no class: sure
    weights = reliability.pow(power) * inside
    strongest = cams.amax(dim=1)
    band = (strongest >= low) & (strongest <= high)
    choice = choice.masked_fill(band, IGNORE_INDEX)
    weights = weights.masked_fill(band, 0.0)
    return choice.masked_fill(~inside, IGNORE_INDEX), weights


def segmentation_pseudo_labels(seg_logits: torch.Tensor, labels: torch.Tensor, temperature: float) -> torch.Tensor:
    """SPL Q = softmax(Ŝ'/τ) where Ŝ' has the logits of absent classes set to −1e5 (background kept)."""
    present = torch.cat([torch.ones_like(labels[:, :1]), labels], dim=1) > 0
    masked = seg_logits.masked_fill(~present[:, :, None, None], MASKED_LOGIT)
    return (masked / temperature).softmax(dim=1)
