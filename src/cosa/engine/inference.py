"""Turning network outputs into label maps: the evaluation protocol.

The same functions serve ``cosa evaluate``, ``cosa predict``, training's evaluations and the run
report, so a mask on disk and a number in a table always come from one code path, and every number
is printed and written with the protocol that made it (:func:`inference_protocol`, :func:`protocol_text`).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cosa.config.schema import Config
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


def segments_from_cams(cfg: Config) -> bool:
    """Whether the model's segmentation is its thresholded CAMs: a ``cam-only`` model never trains its decoder."""
    return cfg.method.recipe == "cam-only"


def predicted_labels(
    seg_logits: torch.Tensor,
    cams: torch.Tensor,
    class_logits: torch.Tensor,
    cfg: Config,
    tags: torch.Tensor | None = None,
) -> torch.Tensor:
    """A model's label map: the argmax of its segmentation logits, tag-masked when ``tags`` (B×C) is
    given. For a cam-only model (:func:`segments_from_cams`) it is the CAMs thresholded at
    ``eval.cam_threshold``, over ``tags``, else over the classes its classifier predicts."""
    if segments_from_cams(cfg):
        present = predicted_tags(class_logits) if tags is None else tags
        return cam_labels(cams, present, cfg.eval.cam_threshold)
    return segmentation_labels(seg_logits, tags)


def inference_protocol(cfg: Config, network: str = "assignment") -> dict:
    """How ``cfg.eval`` turns a network's outputs into labels, as written beside its numbers."""
    return {
        "network": network,
        "recipe": cfg.method.recipe,
        "segmentation_from": "cam" if segments_from_cams(cfg) else "decoder",
        "input_size": cfg.eval.size,
        "scales": list(cfg.eval.scales),
        "flip": cfg.eval.flip,
        "amp": cfg.eval.amp,
    }


def protocol_text(protocol: dict) -> str:
    """A protocol in words, to print beside its numbers: 'val, 1449 images, 5 scales + flip, size 448,
    assignment network'. Reads :func:`inference_protocol`'s keys, and ``split``, ``num_images``,
    ``tag_masked`` and ``crf`` where present."""
    scales = protocol["scales"]
    parts = [f"{protocol['split']}, {protocol['num_images']} images"] if "split" in protocol else []
    parts += [
        (f"scale {scales[0]}" if len(scales) == 1 else f"{len(scales)} scales")
        + (" + flip" if protocol["flip"] else ""),
        f"size {protocol['input_size']}",
        f"{protocol['network']} network",
    ]
    if protocol["segmentation_from"] == "cam":
        parts.append("thresholded CAMs")
    if protocol.get("tag_masked"):
        parts.append("tag-masked")
    if protocol["amp"] != "none":
        parts.append(f"{protocol['amp']} autocast")
    if protocol.get("crf"):
        parts.append("CRF")
    return ", ".join(parts)


def as_set(value: float) -> float:
    """A float32 setting read back as the number it was set to: 0.8, not 0.800000011920929. The
    shortest decimal that rounds to the same float32, so the value stays exact in float32."""
    return float(str(np.float32(value)))
