"""How well the classifier fits the training tags: is the run long enough for CoSA?

CoSA's pseudo-labels come from the classifier's CAMs. A classifier that cannot yet tell which
classes are in its training images has CAMs that cannot tell where they are, and from the step
the pseudo-label losses switch on, the segmentation learns those mistakes. The fit is measured
for free on what training computes anyway: the online network's class scores of the last
``WINDOW`` training crops against their tags, as mean average precision (mAP) over the classes
present in the window. These are augmented crops, which can cut an object out while its tag
stays, so the number is below a held-out image-level mAP; it is a signal for the run's length,
not a quality metric.

AP is computed here rather than with a metrics library: it is a dozen lines over a few hundred
scores, and cosa depends on no metrics package.
"""

from __future__ import annotations

import torch

WINDOW = 256  # training crops the fit is measured on (a sliding window over the last steps)
# Below this training mAP, the CAMs are too poor to teach the segmentation: the warm-up (at the
# switch-on) or the run (at the end) is too short. On the real-photo benchmark's tuning dataset,
# runs whose classifier had reached it at the switch-on beat cam-only; runs far below did not
# (docs/method.md, "Own data").
MIN_FIT = 80.0


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """AP of each column (N×C scores, N×C 0/1 targets), in percent; NaN for a column without
    positives. AP is the mean, over the positives, of the precision at each positive's rank
    (ties ranked in input order)."""
    order = scores.argsort(dim=0, descending=True, stable=True)
    hits = targets.gather(0, order).float()
    ranks = torch.arange(1, len(scores) + 1, device=scores.device, dtype=torch.float32)[:, None]
    precision_at_hits = hits.cumsum(dim=0) / ranks * hits
    return 100 * precision_at_hits.sum(dim=0) / hits.sum(dim=0)


class LabelFit:
    """The last ``WINDOW`` training crops' class scores and tags, kept on the device."""

    def __init__(self, num_classes: int, device: torch.device, window: int = WINDOW) -> None:
        self.scores = torch.zeros(window, num_classes, device=device)
        self.tags = torch.zeros(window, num_classes, device=device)
        self.seen = 0

    @torch.no_grad()
    def update(self, logits: torch.Tensor, tags: torch.Tensor) -> None:
        rows = torch.arange(self.seen, self.seen + len(logits), device=logits.device) % len(self.scores)
        self.scores[rows] = logits.detach().float()
        self.tags[rows] = tags.float()
        self.seen += len(logits)

    def state_dict(self) -> dict:
        return {"scores": self.scores, "tags": self.tags, "seen": self.seen}

    def load_state_dict(self, state: dict) -> None:
        self.scores.copy_(state["scores"])
        self.tags.copy_(state["tags"])
        self.seen = int(state["seen"])

    def mean_average_precision(self, gather=lambda tensor: tensor) -> float | None:
        """mAP over the classes tagged in the window; ``gather`` concatenates the processes'
        windows. None before the window holds any crop."""
        filled = min(self.seen, len(self.scores))
        if filled == 0:
            return None
        ap = average_precision(gather(self.scores[:filled]), gather(self.tags[:filled]))
        present = ~ap.isnan()
        return float(ap[present].mean()) if present.any() else None
