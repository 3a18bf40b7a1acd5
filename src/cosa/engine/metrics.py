"""mIoU from one confusion matrix over a whole split, exact across processes."""

from __future__ import annotations

import torch

from cosa.data.io import IGNORE_INDEX
from cosa.engine.distributed import all_reduce_sum


class ConfusionMatrix:
    """Counts (ground truth, prediction) pairs over labelled pixels; ignore (255) is skipped."""

    def __init__(self, num_labels: int) -> None:
        self.num_labels = num_labels
        self.counts = torch.zeros(num_labels, num_labels, dtype=torch.int64)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        valid = (target != IGNORE_INDEX) & (prediction != IGNORE_INDEX)
        pairs = target[valid].long().cpu() * self.num_labels + prediction[valid].long().cpu()
        self.counts += torch.bincount(pairs, minlength=self.num_labels**2).view(self.num_labels, self.num_labels)

    def all_reduce(self) -> ConfusionMatrix:
        self.counts = all_reduce_sum(self.counts)
        return self

    def iou(self) -> torch.Tensor:
        """Per-label IoU; NaN for labels that never occur in the ground truth."""
        counts = self.counts.double()
        true_positive = counts.diagonal()
        union = counts.sum(0) + counts.sum(1) - true_positive
        occurs = counts.sum(1) > 0
        return torch.where(occurs, true_positive / union.clamp(min=1), torch.full_like(true_positive, float("nan")))

    def mean_iou(self) -> float:
        """Mean IoU (percent) over the labels that occur in the ground truth."""
        return float(self.iou().nanmean() * 100)

    def per_class(self, names: list[str]) -> dict[str, float | None]:
        return {
            name: (None if torch.isnan(value) else round(float(value) * 100, 2))
            for name, value in zip(names, self.iou())
        }

    def pixel_accuracy(self) -> float:
        total = self.counts.sum()
        return float(self.counts.diagonal().sum() / total * 100) if total else float("nan")
