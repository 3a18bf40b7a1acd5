"""How well the classifier fits the training tags: is the run long enough for CoSA?

CoSA's pseudo-labels come from the classifier's CAMs. A classifier that cannot yet tell which
classes are in its training images has CAMs that cannot tell where they are, and from the step
the pseudo-label losses switch on, the segmentation learns those mistakes. The fit is measured
for free on what training computes anyway: the online network's class scores of the last
``WINDOW`` training crops against their tags, as mean average precision (mAP) over the classes
tagged in the window. These are augmented crops, which can cut an object out while its tag
stays, so the number sits well below a held-out image-level mAP; it is a signal for the run's
length, not a quality metric. Two warnings follow from it (docs/method.md, "Own data"):

- at the switch-on, a fit less than ``MIN_GAIN`` points above chance (random scores' mAP, the
  tags' frequency in the window): the warm-up is too short;
- at the end, a fit that rose more than ``MAX_LATE_RISE`` points over the last quarter of the
  run: the classifier was still learning, so the run is too short. The rise is taken between
  the means over two eighths of the run a quarter apart, as one window's fit moves by a few
  points from one measurement to the next.

AP is computed here rather than with a metrics library: it is a dozen lines over a few hundred
scores, and cosa depends on no metrics package.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass

import torch

WINDOW = 256  # training crops the fit is measured on (a sliding window over the last steps)
MIN_GAIN = 10.0
MAX_LATE_RISE = 5.0


def average_precision(scores: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """AP of each column (N×C scores, N×C 0/1 targets), in percent; NaN for a column without
    positives. AP is the mean, over the positives, of the precision at each positive's rank
    (ties ranked in input order)."""
    order = scores.argsort(dim=0, descending=True, stable=True)
    hits = targets.gather(0, order).float()
    ranks = torch.arange(1, len(scores) + 1, device=scores.device, dtype=torch.float32)[:, None]
    precision_at_hits = hits.cumsum(dim=0) / ranks * hits
    return 100 * precision_at_hits.sum(dim=0) / hits.sum(dim=0)


@dataclass(frozen=True)
class Fit:
    map: float  # mAP of the class scores, %
    chance: float  # mAP of random scores: the mean frequency of the tagged classes, %


class LabelFit:
    """The last ``WINDOW`` training crops' class scores and tags, kept on the device, and the fit
    measured at each log step."""

    def __init__(self, num_classes: int, device: torch.device, window: int = WINDOW) -> None:
        self.scores = torch.zeros(window, num_classes, device=device)
        self.tags = torch.zeros(window, num_classes, device=device)
        self.seen = 0
        self.history: dict[int, float] = {}  # iteration → mAP
        self._measured: tuple[int, Fit] | None = None  # the last measurement, reused at the same iteration

    @torch.no_grad()
    def update(self, logits: torch.Tensor, tags: torch.Tensor, skip: torch.Tensor | None = None) -> None:
        """Add a step's crops; ``skip`` (a 0-dim bool tensor) keeps the window as it was, on the device."""
        rows = torch.arange(self.seen, self.seen + len(logits), device=logits.device) % len(self.scores)
        scores, tags = logits.detach().float(), tags.float()
        if skip is not None:
            scores, tags = torch.where(skip, self.scores[rows], scores), torch.where(skip, self.tags[rows], tags)
        self.scores[rows] = scores
        self.tags[rows] = tags
        self.seen += len(logits)

    def measure(self, iteration: int, gather=lambda tensor: tensor) -> Fit | None:
        """The fit over the window (``gather`` concatenates the processes' windows), kept in the
        history; None before the window holds a tagged crop."""
        if self._measured is not None and self._measured[0] == iteration:
            return self._measured[1]
        filled = min(self.seen, len(self.scores))
        if filled == 0:
            return None
        tags = gather(self.tags[:filled])
        ap = average_precision(gather(self.scores[:filled]), tags)
        tagged = ~ap.isnan()
        if not tagged.any():
            return None
        fit = Fit(float(ap[tagged].mean()), float(100 * tags.mean(dim=0)[tagged].mean()))
        self.history[iteration] = fit.map
        self._measured = (iteration, fit)
        return fit

    def late_rise(self, iteration: int) -> float | None:
        """The mean fit over the last eighth of a run ending at ``iteration``, less the mean over
        the eighth that ends three quarters in; None without measurements in both."""
        last = [fit for at, fit in self.history.items() if at > iteration * 7 / 8]
        earlier = [fit for at, fit in self.history.items() if iteration * 5 / 8 < at <= iteration * 6 / 8]
        return statistics.fmean(last) - statistics.fmean(earlier) if last and earlier else None

    def switch_on_warning(self, fit: Fit, warmup_iters: int) -> str | None:
        """What to say when the pseudo-label losses switch on at this fit, if it is too early."""
        if fit.map - fit.chance >= MIN_GAIN:
            return None
        return (
            f"the pseudo-label losses switch on while the classifier fits the training tags at mAP {fit.map:.1f}, "
            f"within {MIN_GAIN:.0f} points of chance ({fit.chance:.1f}): its CAMs cannot teach the segmentation "
            f"yet; raise method.loss_warmup_iters (now {warmup_iters}) and train.iterations with it"
        )

    def end_warning(self, fit: Fit, iteration: int) -> str | None:
        """What to say when the run ends at ``iteration`` with this fit, if the classifier was
        still learning over the last quarter of the run."""
        rise = self.late_rise(iteration)
        if rise is None or rise <= MAX_LATE_RISE:
            return None
        return (
            f"the run ends while the classifier is still learning the training tags (mAP +{rise:.1f} over the "
            f"last quarter, to {fit.map:.1f}): raise train.iterations (now {iteration})"
        )

    def state_dict(self) -> dict:
        return {"scores": self.scores, "tags": self.tags, "seen": self.seen, "history": dict(self.history)}

    def load_state_dict(self, state: dict) -> None:
        self.scores.copy_(state["scores"])
        self.tags.copy_(state["tags"])
        self.seen = int(state["seen"])
        self.history = {int(i): float(v) for i, v in state["history"].items()}
