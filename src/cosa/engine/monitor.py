"""Training-time quality of the CAM pseudo-labels, when the training split has masks.

The masks are read for monitoring only; no loss sees them (except the ``supervised`` recipe's).
Per step, on the device, it counts:

- CPL precision (correct among the pixels the CPL labels) and recall (correct among all valid
  pixels) — how much the ignore band trades coverage for accuracy;
- by AN confidence m(i) = max_c M_c(i) in ten bins: how often the strongest class is the true
  label and how often the truth is background — the paper's Fig. 3 analysis, which shows where
  the thresholds should sit and how that drifts during training.

``summary()`` returns the counts accumulated since the last call as plain numbers (one host sync).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from cosa.data.io import IGNORE_INDEX

BINS = 10


class CplMonitor:
    def __init__(self, device: torch.device) -> None:
        self.device = device
        self._reset()

    def _reset(self) -> None:
        self.pixels = torch.zeros(3, dtype=torch.float64, device=self.device)  # correct, labelled, valid
        self.bins = torch.zeros(3, BINS, dtype=torch.float64, device=self.device)  # count, fg right, bg truth

    @torch.no_grad()
    def update(
        self,
        cams: torch.Tensor,
        cpl: torch.Tensor,
        mask: torch.Tensor,
        inside: torch.Tensor,
        skip: torch.Tensor | None = None,
    ) -> None:
        """``cams``: the AN's normalised CAMs M (B×C×H×W); ``cpl``, ``mask``, ``inside``: B×H×W;
        ``skip``: a 0-dim bool tensor, true for a step that counts nothing."""
        valid = (mask != IGNORE_INDEX) & inside
        if skip is not None:
            valid = valid & ~skip
        labelled = valid & (cpl != IGNORE_INDEX)
        self.pixels += torch.stack([(labelled & (cpl == mask)).sum(), labelled.sum(), valid.sum()]).double()

        confidence, strongest = cams.max(dim=1)
        # Every pixel is counted into its bin with weight 0 when invalid: selecting the valid
        # pixels first would make the GPU wait for their number.
        index = (confidence * BINS).long().clamp(0, BINS - 1).flatten()
        for row, hits in enumerate((valid, valid & (strongest + 1 == mask), valid & (mask == 0))):
            self.bins[row].scatter_add_(0, index, hits.flatten().double())

    def summary(self, reduce: Callable[[torch.Tensor], torch.Tensor] = lambda counts: counts) -> dict[str, float]:
        """Percentages since the last call; ``reduce`` sums the counts over processes."""
        correct, labelled, valid = reduce(self.pixels).tolist()
        counts, foreground_right, background_truth = reduce(self.bins).tolist()
        values = {}
        if valid:
            values["cpl/precision"] = 100 * correct / max(labelled, 1)
            values["cpl/recall"] = 100 * correct / valid
        for i in range(BINS):
            if counts[i]:
                values[f"cpl_bins/strongest_class_right_{i}"] = 100 * foreground_right[i] / counts[i]
                values[f"cpl_bins/background_truth_{i}"] = 100 * background_truth[i] / counts[i]
                values[f"cpl_bins/pixels_{i}"] = counts[i]
        self._reset()
        return values
