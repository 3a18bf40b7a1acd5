"""mIoU from one confusion matrix over a whole split, exact across processes."""

from __future__ import annotations

import torch

from cosa.data.io import IGNORE_INDEX
from cosa.engine.distributed import all_reduce_sum


class ConfusionMatrix:
    """Counts (ground truth, prediction) pairs over labelled pixels; ignore (255) is skipped.

    The counts live on ``device``, where the predictions are made: updating them never waits
    for a GPU, and the numbers are read once, at the end.
    """

    def __init__(self, num_labels: int, device: torch.device | str = "cpu") -> None:
        self.num_labels = num_labels
        # One bin more than the pairs, for the pixels left out: no host read of how many there are.
        self._bins = torch.zeros(num_labels**2 + 1, dtype=torch.int64, device=device)

    @property
    def counts(self) -> torch.Tensor:
        return self._bins[:-1].view(self.num_labels, self.num_labels)

    def update(self, prediction: torch.Tensor, target: torch.Tensor) -> None:
        device = self._bins.device
        prediction, target = prediction.to(device).long(), target.to(device, non_blocking=True).long()
        valid = (target != IGNORE_INDEX) & (prediction != IGNORE_INDEX)
        pairs = torch.where(valid, target * self.num_labels + prediction, self.num_labels**2)
        self._bins.scatter_add_(0, pairs.flatten(), torch.ones_like(pairs).flatten())

    def all_reduce(self) -> ConfusionMatrix:
        self._bins = all_reduce_sum(self._bins)
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
