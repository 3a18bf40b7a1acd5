"""What a network makes of images, as files and pictures: the outputs of ``cosa predict`` and the
grid of the run report, next to the images' ground truth."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image
from torch import nn

from cosa.config.schema import Config
from cosa.data.datasets import EvaluationImages, collate_evaluation
from cosa.data.io import write_mask
from cosa.data.layouts import DatasetSplit
from cosa.engine.inference import infer, predicted_labels
from cosa.engine.predict import VOC_SUBMISSION_DIR, Prediction
from cosa.method.pseudo_labels import cam_pseudo_labels, resize
from cosa.method.thresholds import CplThresholds
from cosa.outputs import OutputFolder
from cosa.reporting.pictures import blend, colorize, heatmap, image_grid, overlay, save_picture, to_numpy_image

GRID_COLUMNS = ["image", "ground truth", "CAM (true classes)", "CPL", "prediction"]


class PredictionWriter:
    """Writes ``OUT/NAME.png`` (VOC-palette mask), ``NAME_overlay.jpg`` (mask over the image) and
    ``NAME_cam.jpg`` (CAMs of the present classes), and on request ``NAME.npz`` (``seg``, ``cam``)
    and the VOC evaluation server's layout under ``voc_submission``."""

    def __init__(
        self, out: OutputFolder, save_logits: bool = False, voc_submission: OutputFolder | None = None
    ) -> None:
        self.out = out
        self.save_logits = save_logits
        self.voc_submission = voc_submission

    def write(self, prediction: Prediction) -> None:
        name, mask = prediction.name, prediction.mask
        picture = to_numpy_image(prediction.image)
        self.out.write(f"{name}.png", write_mask, mask)
        self.out.write(f"{name}_overlay.jpg", save_picture, overlay(picture, mask))
        cams = prediction.cam * prediction.present[:, None, None]
        self.out.write(f"{name}_cam.jpg", save_picture, blend(picture, heatmap(cams.amax(0))))
        if self.save_logits:
            self.out.write(f"{name}.npz", np.savez, seg=prediction.seg.numpy(), cam=prediction.cam.numpy())
        if self.voc_submission is not None:
            self.voc_submission.write(VOC_SUBMISSION_DIR / f"{name}.png", write_mask, mask)


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
        cams = resize(outputs.cam[i : i + 1], size)
        true_cams = cams * tags[:, :, None, None]
        picture = to_numpy_image(image)
        cpl = cam_pseudo_labels(
            true_cams,
            tags,
            torch.ones(1, *size, dtype=torch.bool, device=device),
            thresholds.cam_high,
            thresholds.cam_low,
        )
        prediction = predicted_labels(resize(outputs.seg[i : i + 1], size), cams, outputs.logits[i : i + 1], cfg)
        truth = colorize(batch["mask"][i]) if "mask" in batch else np.zeros_like(picture)
        rows.append(
            [
                picture,
                truth,
                blend(picture, heatmap(true_cams[0].amax(0))),
                colorize(cpl[0]),
                colorize(prediction[0]),
            ]
        )
    return image_grid(rows, GRID_COLUMNS)
