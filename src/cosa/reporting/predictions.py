"""A picture grid of what a network makes of a few images, next to their ground truth."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from cosa.config.schema import Config
from cosa.data.datasets import EvaluationImages, collate_evaluation
from cosa.data.layouts import DatasetSplit
from cosa.engine.inference import cam_labels, infer, predicted_tags, segmentation_labels
from cosa.method.pseudo_labels import cam_pseudo_labels, resize
from cosa.method.thresholds import CplThresholds
from cosa.reporting.pictures import blend, colorize, heatmap, image_grid, to_numpy_image

GRID_COLUMNS = ["image", "ground truth", "CAM (true classes)", "CPL", "prediction"]


@torch.no_grad()
def prediction_grid(
    network: nn.Module,
    split: DatasetSplit,
    cfg: Config,
    thresholds: CplThresholds,
    device: torch.device,
    indices: list[int],
) -> Image.Image:
    """Rows of image | ground truth | CAM | CPL | prediction (unmasked) for the given images."""
    dataset = EvaluationImages(split, cfg.eval.size, with_masks=split.has_masks)
    batch = collate_evaluation([dataset[i] for i in indices])
    outputs = infer(network.eval(), batch["input"].to(device), cfg.eval.scales, cfg.eval.flip, cfg.eval.amp)
    rows = []
    for i, image in enumerate(batch["image"]):
        size = tuple(image.shape[-2:])
        tags = batch["labels"][i : i + 1].to(device)
        cams = resize(outputs.cam[i : i + 1], size) * tags[:, :, None, None]
        picture = to_numpy_image(image)
        cpl = cam_pseudo_labels(
            cams, tags, torch.ones(1, *size, dtype=torch.bool, device=device), thresholds.cam_high, thresholds.cam_low
        )
        if cfg.method.recipe == "cam-only":
            prediction = cam_labels(cams, predicted_tags(outputs.logits[i : i + 1]), cfg.eval.cam_threshold)
        else:
            prediction = segmentation_labels(resize(outputs.seg[i : i + 1], size))
        truth = colorize(batch["mask"][i]) if "mask" in batch else np.zeros_like(picture)
        rows.append(
            [
                picture,
                truth,
                blend(picture, heatmap(cams[0].amax(0))),
                colorize(cpl[0]),
                colorize(prediction[0]),
            ]
        )
    return image_grid(rows, GRID_COLUMNS)
