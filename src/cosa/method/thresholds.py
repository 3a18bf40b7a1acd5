"""The CPL thresholds (δ_h, δ_l) of the final and auxiliary CAMs, fixed or searched.

The released recipe keeps them fixed. With ``method.threshold_search.enabled``
each step pushes the assignment network's per-pixel confidence m(i) = max_c M_c(i), downscaled,
into a ring buffer, fits a three-component 1-D Gaussian mixture to the buffer by EM, reads new
thresholds off the low and high components and moves the current ones towards them by an EMA.
EM runs on a 4096-bin histogram of the buffer (each bin at the mean of its values), so a fit
costs the same for any buffer size; thresholds agree with scikit-learn's exact fit within 0.01.

Everything stays on the training device as tensors, so a step never waits for the host. In a
distributed run the caller passes the confidence maps of the whole global batch (gathered), so
every process holds the same buffer and computes the same thresholds.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from cosa.config.schema import MethodConfig, ThresholdSearchConfig

# sklearn's GaussianMixture defaults, so that the fit can be checked against it.
_REG_VARIANCE = 1e-6
_EPS = 10 * torch.finfo(torch.float32).eps
_BUFFER_SEED = 20240
# The fit runs on a histogram of the buffer: its cost no longer grows with the buffer.
HISTOGRAM_BINS = 4096


@dataclass
class Histogram:
    """Per-bin count, mean, minimum and maximum of the valid values (values in [0, 1])."""

    counts: torch.Tensor
    means: torch.Tensor
    lows: torch.Tensor
    highs: torch.Tensor

    @classmethod
    def of(cls, values: torch.Tensor, valid: torch.Tensor, bins: int = HISTOGRAM_BINS) -> Histogram:
        values = values.float()
        index = (values.clamp(0, 1) * bins).long().clamp(max=bins - 1)
        weight = valid.float()
        zeros = values.new_zeros(bins)
        counts = zeros.scatter_add(0, index, weight)
        sums = zeros.scatter_add(0, index, values * weight)
        lows = zeros.fill_(math.inf).scatter_reduce(0, index, values.masked_fill(~valid, math.inf), "amin")
        highs = torch.full_like(lows, -math.inf).scatter_reduce(0, index, values.masked_fill(~valid, -math.inf), "amax")
        return cls(counts, sums / counts.clamp(min=1), lows, highs)

    def median(self) -> torch.Tensor:
        """The mean of the bin holding the median value (within one bin width of it)."""
        cumulative = self.counts.cumsum(0)
        middle = torch.searchsorted(cumulative, cumulative[-1:] / 2).clamp(max=len(self.counts) - 1)
        return self.means[middle][0]


@dataclass
class Mixture:
    """A 1-D Gaussian mixture (components in no particular order)."""

    weights: torch.Tensor  # K
    means: torch.Tensor  # K
    variances: torch.Tensor  # K
    converged: torch.Tensor  # bool, 0-dim

    def log_joint(self, values: torch.Tensor) -> torch.Tensor:
        """N×K: log w_k + log N(x | μ_k, σ²_k)."""
        diff = values[:, None] - self.means[None]
        log_normal = -0.5 * (math.log(2 * math.pi) + self.variances.log() + diff.square() / self.variances)
        return self.weights.log()[None] + log_normal


def fit_mixture(
    histogram: Histogram,
    components: int = 3,
    tolerance: float = ThresholdSearchConfig.tolerance,
    max_steps: int = ThresholdSearchConfig.max_em_steps,
) -> Mixture:
    """EM for a 1-D Gaussian mixture of the histogrammed values (each bin at its mean value).

    Initialisation and stopping follow scikit-learn's ``GaussianMixture``
    (means at min, median and max, equal weights, unit variances; stop when the mean
    log-likelihood changes by less than ``tolerance``). Converged parameters are frozen rather
    than leaving the loop at once, so on a GPU the loop asks the host only every 10 steps.
    """
    points, counts = histogram.means, histogram.counts
    total = counts.sum().clamp(min=1.0)
    low, high = histogram.lows.min(), histogram.highs.max()
    if components == 3:
        means = torch.stack([low, histogram.median(), high])
    else:
        means = low + (high - low) * torch.linspace(0, 1, components, device=points.device)
    mixture = Mixture(
        weights=torch.full((components,), 1.0 / components, device=points.device),
        means=means,
        variances=torch.ones(components, device=points.device),
        converged=torch.zeros((), dtype=torch.bool, device=points.device),
    )
    check_every = 1 if points.device.type == "cpu" else 10
    previous = torch.full((), -math.inf, device=points.device)
    for step in range(max_steps):
        joint = mixture.log_joint(points)
        log_likelihood = joint.logsumexp(dim=1)
        responsibilities = (joint - log_likelihood[:, None]).exp() * counts[:, None]
        mean_log_likelihood = (log_likelihood * counts).sum() / total

        totals = responsibilities.sum(0) + _EPS
        means = (responsibilities * points[:, None]).sum(0) / totals
        variances = (responsibilities * (points[:, None] - means).square()).sum(0) / totals + _REG_VARIANCE
        keep = mixture.converged
        mixture = Mixture(
            weights=torch.where(keep, mixture.weights, totals / totals.sum()),
            means=torch.where(keep, mixture.means, means),
            variances=torch.where(keep, mixture.variances, variances),
            converged=keep | ((mean_log_likelihood - previous).abs() < tolerance),
        )
        previous = mean_log_likelihood
        if step % check_every == check_every - 1 and bool(mixture.converged):
            break
    return mixture


def mixture_thresholds(histogram: Histogram, mixture: Mixture) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(δ_l*, δ_h*, found): the largest value assigned to the lowest-mean component and the
    smallest assigned to the highest-mean one (assigned by bin); ``found`` is False when either
    is empty."""
    assigned = mixture.log_joint(histogram.means).argmax(dim=1)
    order = mixture.means.argsort()
    occupied = histogram.counts > 0
    in_low = occupied & (assigned == order[0])
    in_high = occupied & (assigned == order[-1])
    low = histogram.highs.masked_fill(~in_low, -math.inf).max()
    high = histogram.lows.masked_fill(~in_high, math.inf).min()
    return low, high, in_low.any() & in_high.any()


class ThresholdSearch:
    """Searched (δ_l, δ_h) of one CAM: ring buffer of confidences, mixture fit, EMA."""

    def __init__(self, high: float, low: float, cfg: ThresholdSearchConfig) -> None:
        self.cfg = cfg
        self.high = torch.tensor(float(high))
        self.low = torch.tensor(float(low))
        self.buffer: torch.Tensor | None = None  # (history × images per step) × values per image
        self.position = 0

    def update(self, confidence: torch.Tensor) -> None:
        """Push ``confidence`` (N×H×W maps of m(i), the whole global batch), refit, smooth."""
        cfg = self.cfg
        small = F.interpolate(
            confidence[:, None].float(),
            scale_factor=1 / cfg.downscale,
            mode="bilinear",
            align_corners=False,
            recompute_scale_factor=False,
        ).flatten(1)
        if self.buffer is None or self.buffer.shape[1] != small.shape[1]:
            generator = torch.Generator().manual_seed(_BUFFER_SEED)
            rows = cfg.history * small.shape[0]
            self.buffer = torch.rand(rows, small.shape[1], generator=generator).to(small.device)
            self.position = 0
        self.buffer = self.buffer.to(small.device)
        self.high, self.low = self.high.to(small.device), self.low.to(small.device)
        rows = (self.position + torch.arange(small.shape[0])) % self.buffer.shape[0]
        self.buffer[rows.to(small.device)] = small
        self.position = int(rows[-1] + 1) % self.buffer.shape[0]

        values = self.buffer.flatten()
        histogram = Histogram.of(values, values > cfg.min_confidence)
        mixture = fit_mixture(histogram, 3, cfg.tolerance, cfg.max_em_steps)
        low, high, found = mixture_thresholds(histogram, mixture)
        step = 1.0 - cfg.momentum
        self.low = torch.where(found, self.low * cfg.momentum + low * step, self.low)
        self.high = torch.where(found, self.high * cfg.momentum + high * step, self.high)

    def state_dict(self) -> dict:
        state = {"high": float(self.high), "low": float(self.low), "position": self.position}
        if self.buffer is not None:
            state["buffer"] = self.buffer.cpu()
        return state

    def load_state_dict(self, state: dict) -> None:
        self.high, self.low = torch.tensor(float(state["high"])), torch.tensor(float(state["low"]))
        self.position = int(state["position"])
        self.buffer = state.get("buffer")  # None before the first update


class CplThresholds:
    """The thresholds of the final (``cam``) and auxiliary (``aux``) CAMs, as run state.

    ``cam.high`` etc. are 0-dim tensors for the training step; ``cam_high`` etc. are floats for
    evaluation and logging.
    """

    def __init__(self, cam: ThresholdSearch, aux: ThresholdSearch, searching: bool) -> None:
        self.cam, self.aux, self.searching = cam, aux, searching
        # Collects the confidence maps of every process (set by the trainer under DDP).
        self.gather: Callable[[torch.Tensor], torch.Tensor] = lambda maps: maps

    @classmethod
    def from_config(cls, cfg: MethodConfig) -> CplThresholds:
        search = cfg.threshold_search
        return cls(
            ThresholdSearch(cfg.cam_thresholds.high, cfg.cam_thresholds.low, search),
            ThresholdSearch(cfg.aux_cam_thresholds.high, cfg.aux_cam_thresholds.low, search),
            searching=search.enabled,
        )

    def update(self, cam_confidence: torch.Tensor, aux_confidence: torch.Tensor) -> None:
        if self.searching:
            self.cam.update(self.gather(cam_confidence))
            self.aux.update(self.gather(aux_confidence))

    @property
    def cam_high(self) -> float:
        return float(self.cam.high)

    @property
    def cam_low(self) -> float:
        return float(self.cam.low)

    @property
    def aux_high(self) -> float:
        return float(self.aux.high)

    @property
    def aux_low(self) -> float:
        return float(self.aux.low)

    def values(self) -> dict[str, float]:
        return {"cam_high": self.cam_high, "cam_low": self.cam_low, "aux_high": self.aux_high, "aux_low": self.aux_low}

    def state_dict(self) -> dict:
        return {"cam": self.cam.state_dict(), "aux": self.aux.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.cam.load_state_dict(state["cam"])
        self.aux.load_state_dict(state["aux"])
