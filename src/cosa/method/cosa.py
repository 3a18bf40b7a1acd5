"""The CoSA training objective, in one place.

Each step the assignment network (AN, an EMA of the online network) labels the weak view:
its CAMs become the CAM pseudo-label (CPL) that trains the online network's (ON's)
segmentation head, and its segmentation becomes the segmentation pseudo-label (SPL) that trains
the ON's CAMs — the swapped assignments. ``paper`` adds the paper's three techniques
(docs/method.md), each behind its own switch: searched thresholds, RAW weights in L_c2s and the
contrastive term L_csc. The two other recipes share the same network: ``cam-only``
(classification losses alone) and ``supervised`` (ground-truth masks).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from cosa.config.schema import PSEUDO_LABEL_RECIPES, MethodConfig
from cosa.data.views import IMAGENET_MEAN, IMAGENET_STD
from cosa.method.dense_energy import dense_energy_loss
from cosa.method.losses import (
    cam_to_segmentation_loss,
    classification_loss,
    contrastive_separation_loss,
    hard_segmentation_labels,
    segmentation_to_cam_loss,
    supervised_segmentation_loss,
)
from cosa.method.pseudo_labels import (
    Assignments,
    cam_pseudo_labels,
    multiscale_assignments,
    reliability_weighted_labels,
    resize,
    segmentation_pseudo_labels,
    tag_channels,
)
from cosa.method.thresholds import CplThresholds
from cosa.models.network import NetworkOutput
from cosa.precision import autocast
from cosa.profiling import section, timed


@dataclass
class StepLosses:
    total: torch.Tensor
    terms: dict[str, torch.Tensor]  # unweighted loss terms, for logging
    weights: dict[str, float]  # the weight each term entered the total with (0 while gated)
    cpl: torch.Tensor | None = None  # the step's CPL (B×H×W), for monitoring
    aux_cpl: torch.Tensor | None = None  # the auxiliary CAM's CPL (B×H×W)
    spl: torch.Tensor | None = None  # the SPL Q (B×(C+1)×H×W)
    assigned: Assignments | None = None  # what the AN computed, for monitoring
    inside: torch.Tensor | None = None  # the crop boxes (B×H×W bool), for monitoring
    logits: torch.Tensor | None = None  # the online network's class scores (B×C), for monitoring


def inside_box(boxes: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """B×H×W bool masks of the crop boxes (top, bottom, left, right), computed without a loop."""
    rows = torch.arange(size[0], device=boxes.device)[None, :, None]
    cols = torch.arange(size[1], device=boxes.device)[None, None, :]
    top, bottom, left, right = (boxes[:, i, None, None] for i in range(4))
    return (rows >= top) & (rows < bottom) & (cols >= left) & (cols < right)


def to_pixel_values(images: torch.Tensor) -> torch.Tensor:
    """Undo the ImageNet normalisation: 0–255 RGB, as the dense energy's colour kernel expects.

    Channel by channel with Python numbers: a tensor of the constants would be a copy from the
    host that waits for the GPU."""
    channels = [images[:, c] * std + mean for c, (mean, std) in enumerate(zip(IMAGENET_MEAN, IMAGENET_STD))]
    return torch.stack(channels, dim=1) * 255.0


def classifier_weight(network: nn.Module) -> torch.Tensor:
    """The CAM classifier W of ``network``, also when DistributedDataParallel wraps it."""
    return getattr(network, "module", network).classifier.weight


class CoSAObjective:
    """Computes one step's losses for the configured recipe."""

    def __init__(self, cfg: MethodConfig, assignment_amp: str = "same") -> None:
        self.cfg = cfg
        self.assignment_amp = assignment_amp  # the AN pass's autocast; "same" inherits the step's
        self.thresholds = CplThresholds.from_config(cfg)

    def __call__(
        self, online: nn.Module, assignment: nn.Module, batch: dict, step: int, max_tags: int | None = None
    ) -> StepLosses:
        """``step``: the 0-based index of this optimiser step. ``max_tags``: the most tags of any
        image in the batch, if known on the host; the pseudo-labels then resample only the CAM
        channels that can be tags (the same result)."""
        if self.cfg.recipe in PSEUDO_LABEL_RECIPES:
            return self.swapped_assignments(online, assignment, batch, step, max_tags)
        if self.cfg.recipe == "cam-only":
            return self.cam_only(online, batch)
        if self.cfg.recipe == "supervised":
            return self.supervised(online, batch)
        raise ValueError(f"unknown recipe {self.cfg.recipe!r}")

    def loss_gate(self, step: int, warmup_iters: int | None = None) -> float:
        """0 during the loss warm-up, then 1: as released, the pseudo-label losses count from the
        0-based step ``warmup_iters + 1``. Gated terms still run, weighted by 0."""
        return 1.0 if step > (self.cfg.loss_warmup_iters if warmup_iters is None else warmup_iters) else 0.0

    def swapped_assignments(
        self, online: nn.Module, assignment: nn.Module, batch: dict, step: int, max_tags: int | None = None
    ) -> StepLosses:
        cfg, thresholds = self.cfg, self.thresholds
        weak, strong, labels = batch["weak"], batch["strong"], batch["labels"]
        size = tuple(weak.shape[-2:])
        inside = inside_box(batch["box"], size)
        channels = None
        if max_tags is not None and max_tags < labels.shape[1]:
            channels = tag_channels(labels, max(max_tags, 1))

        with section("assignment_pass"), autocast(weak.device.type, self.assignment_amp):
            assigned = multiscale_assignments(
                assignment, weak, labels, cfg.assignment_scales, cfg.aux_cam_last_scale_only, channels=channels
            )
        timed("thresholds", thresholds.update, assigned.cam.amax(dim=1), assigned.aux_cam.amax(dim=1))
        with section("pseudo_labels"):
            cpl = cam_pseudo_labels(assigned.cam, labels, inside, thresholds.cam.high, thresholds.cam.low, channels)
            aux_cpl = cam_pseudo_labels(
                assigned.aux_cam, labels, inside, thresholds.aux.high, thresholds.aux.low, channels
            )
            spl = segmentation_pseudo_labels(assigned.seg, labels, cfg.spl_temperature)

        with section("online_forward"):
            output = online(strong)
            seg = resize(output.seg, size).float()
        reg = cfg.regularizer
        terms = {
            "cls": timed("loss/cls", classification_loss, output.logits.float(), labels),
            "cls_aux": timed("loss/cls_aux", classification_loss, output.aux_logits.float(), labels),
            "c2s": timed("loss/c2s", self.cam_to_segmentation, seg, assigned, labels, inside, cpl, aux_cpl),
            "s2c": timed("loss/s2c", segmentation_to_cam_loss, output.cam.float(), spl),
            "reg": timed(
                "loss/reg",
                dense_energy_loss,
                to_pixel_values(strong),
                seg.softmax(dim=1),
                inside.float(),
                cpl,
                sigma_rgb=reg.sigma_rgb,
                sigma_xy=reg.sigma_xy,
                scale=reg.scale,
                weight=reg.energy_weight,
            ),
        }
        gate = self.loss_gate(step)
        weights = {"cls": 1.0, "cls_aux": 1.0, "c2s": gate * cfg.c2s_weight, "s2c": gate * cfg.s2c_weight}
        weights["reg"] = gate * cfg.reg_weight
        if cfg.contrastive.enabled:
            with section("loss/csc"):
                terms["csc"] = self.contrastive_separation(online, output, spl, labels)
            weights["csc"] = self.loss_gate(step, cfg.contrastive.warmup_iters) * cfg.contrastive.weight
        # As released, gated terms are added with weight 0: their gradients are zeros, not none,
        # so AdamW's weight decay and moments act on the decoder during the warm-up.
        total = sum(weights[name] * term for name, term in terms.items())
        return StepLosses(
            total,
            terms,
            weights,
            cpl=cpl,
            aux_cpl=aux_cpl,
            spl=spl,
            assigned=assigned,
            inside=inside,
            logits=output.logits,
        )

    def contrastive_separation(
        self, online: nn.Module, output: NetworkOutput, spl: torch.Tensor, labels: torch.Tensor
    ) -> torch.Tensor:
        """L_csc on W ∗ sg(F), from the hard SPL: it trains the classifier W, not the encoder
        features that the segmentation decoder also reads."""
        csc = self.cfg.contrastive
        cam = F.conv2d(output.features.detach(), classifier_weight(online))
        hard_spl = hard_segmentation_labels(spl, tuple(cam.shape[-2:]), csc.spl_confidence)
        return contrastive_separation_loss(cam, hard_spl, labels, csc.temperature)

    def cam_to_segmentation(
        self,
        seg: torch.Tensor,
        assigned: Assignments,
        labels: torch.Tensor,
        inside: torch.Tensor,
        cpl: torch.Tensor,
        aux_cpl: torch.Tensor,
    ) -> torch.Tensor:
        """L_c2s on the CPLs, or with RAW on reliability-weighted labels of the same CAMs."""
        cfg = self.cfg
        if not cfg.raw.enabled:
            return cam_to_segmentation_loss(seg, cpl, aux_cpl, cfg.background_balance)
        raw = cfg.raw
        targets, weights = reliability_weighted_labels(
            assigned.cam,
            labels,
            inside,
            self.thresholds.cam.high,
            self.thresholds.cam.low,
            raw.temperature,
            raw.power,
        )
        aux_targets, aux_weights = reliability_weighted_labels(
            assigned.aux_cam,
            labels,
            inside,
            self.thresholds.aux.high,
            self.thresholds.aux.low,
            raw.temperature,
            raw.power,
        )
        return cam_to_segmentation_loss(seg, targets, aux_targets, cfg.background_balance, weights, aux_weights)

    def cam_only(self, online: nn.Module, batch: dict) -> StepLosses:
        output = online(batch["strong"])
        labels = batch["labels"]
        terms = {
            "cls": classification_loss(output.logits.float(), labels),
            "cls_aux": classification_loss(output.aux_logits.float(), labels),
        }
        return StepLosses(terms["cls"] + terms["cls_aux"], terms, {"cls": 1.0, "cls_aux": 1.0}, logits=output.logits)

    def supervised(self, online: nn.Module, batch: dict) -> StepLosses:
        output = online(batch["strong"])
        labels = batch["labels"]
        seg = resize(output.seg, tuple(batch["strong"].shape[-2:])).float()
        terms = {
            "cls": classification_loss(output.logits.float(), labels),
            "cls_aux": classification_loss(output.aux_logits.float(), labels),
            "seg": supervised_segmentation_loss(seg, batch["mask"]),
        }
        weights = {"cls": 1.0, "cls_aux": 1.0, "seg": self.cfg.supervised_weight}
        total = sum(weights[name] * term for name, term in terms.items())
        return StepLosses(total, terms, weights, logits=output.logits)
