"""Writing the CAM pseudo-labels (CPL) of a trained network for a whole split, as PNG masks.

The labels are the ones a training step makes, on the whole image instead of a
crop: the assignment pass of :func:`multiscale_assignments` at ``method.assignment_scales`` (with
flips) and the image's true tags, on the image resized to ``eval.size``² as in evaluation; the
normalised CAMs are resized back to the image size and thresholded by the checkpoint's CPL
thresholds with the plain rule (class above δ_h, background below δ_l, ignore 255 between).
Where the split has masks, the labels are scored the way ``cosa evaluate`` scores its ``cpl``.
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from cosa.config.schema import Config
from cosa.data.datasets import EvaluationImages, collate_evaluation
from cosa.data.io import IGNORE_INDEX, write_mask
from cosa.data.layouts import DatasetSplit
from cosa.engine.inference import as_set
from cosa.engine.metrics import ConfusionMatrix
from cosa.method.pseudo_labels import cam_pseudo_labels, multiscale_assignments, resize
from cosa.method.thresholds import CplThresholds
from cosa.outputs import OutputFolder


def image_pseudo_labels(
    cams: torch.Tensor, tags: torch.Tensor, size: tuple[int, int], thresholds: CplThresholds
) -> torch.Tensor:
    """H×W CPL of one image's normalised CAMs (1×C×h×w) and tags (1×C) at ``size``."""
    cams = resize(cams, size)
    inside = torch.ones((1, *size), dtype=torch.bool, device=cams.device)
    return cam_pseudo_labels(cams, tags, inside, thresholds.cam_high, thresholds.cam_low)[0]


class PseudoLabelScore:
    """mIoU of the CPL on the pixels it labels, and its coverage, precision and recall (percent)."""

    def __init__(self, num_labels: int) -> None:
        self.matrix = ConfusionMatrix(num_labels)
        self.correct = self.labelled = self.valid = 0

    def update(self, pseudo: torch.Tensor, mask: torch.Tensor) -> None:
        pseudo, mask = pseudo.cpu(), mask.cpu()
        self.matrix.update(pseudo, mask)
        valid = mask != IGNORE_INDEX
        labelled = valid & (pseudo != IGNORE_INDEX)
        self.correct += int((labelled & (pseudo == mask)).sum())
        self.labelled += int(labelled.sum())
        self.valid += int(valid.sum())

    def summary(self, names: list[str]) -> dict:
        return {
            "miou": self.matrix.mean_iou(),
            "coverage": 100 * self.labelled / max(self.valid, 1),
            "precision": 100 * self.correct / max(self.labelled, 1),
            "recall": 100 * self.correct / max(self.valid, 1),
            "per_class": self.matrix.per_class(names),
        }


@torch.no_grad()
def export_pseudo_labels(
    network: nn.Module,
    split: DatasetSplit,
    cfg: Config,
    thresholds: CplThresholds,
    out: OutputFolder,
    device: torch.device,
    max_images: int | None = None,
    progress: bool = False,
) -> dict:
    """Write ``out/NAME.png`` (VOC palette, 0..C and 255) for the split's images.

    Returns the protocol, and with masks the scores; ``out/summary.json`` is the caller's to write.
    """
    network.eval()
    count = len(split.samples) if max_images is None else min(max_images, len(split.samples))
    loader = DataLoader(
        Subset(EvaluationImages(split, cfg.eval.size, with_masks=split.has_masks), range(count)),
        batch_size=cfg.eval.batch_size,
        num_workers=min(2, cfg.data.num_workers),
        collate_fn=collate_evaluation,
    )
    score = PseudoLabelScore(split.num_classes + 1) if split.has_masks else None
    for batch in tqdm(loader, desc=f"pseudo-labels {split.split}", unit="batch", disable=not progress):
        labels = batch["labels"].to(device)
        assigned = multiscale_assignments(
            network, batch["input"].to(device), labels, cfg.method.assignment_scales, cfg.method.aux_cam_last_scale_only
        )
        for i, (name, image) in enumerate(zip(batch["name"], batch["image"])):
            pseudo = image_pseudo_labels(
                assigned.cam[i : i + 1], labels[i : i + 1], tuple(image.shape[-2:]), thresholds
            )
            out.write(f"{name}.png", write_mask, pseudo)
            if score is not None:
                score.update(pseudo, batch["mask"][i])
    result = {
        "protocol": {
            "split": split.split,
            "num_images": count,
            "input_size": cfg.eval.size,
            "scales": list(cfg.method.assignment_scales),
            "flip": True,
            "cpl_thresholds": [as_set(thresholds.cam_high), as_set(thresholds.cam_low)],
            "rule": "released",
        },
    }
    if score is not None:
        result.update(score.summary(["background", *split.class_names]))
    return result
