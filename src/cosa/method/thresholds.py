"""The CPL thresholds (δ_h, δ_l) of the final and auxiliary CAMs, fixed or searched.

The released recipe keeps them fixed. With ``method.threshold_search.enabled`` (METHOD.md §7.1)
each step pushes the assignment network's per-pixel confidence m(i) = max_c M_c(i), downscaled,
into a ring buffer, fits a three-component 1-D Gaussian mixture to the buffer by EM, reads new
thresholds off the low and high components and moves the current ones towards them by an EMA.

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


@dataclass
class Mixture:
    """A 1-D Gaussian mixture; components sorted by nothing in particular (as fitted)."""

    weights: torch.Tensor  # K
    means: torch.Tensor  # K
    variances: torch.Tensor  # K
    converged: torch.Tensor  # bool, 0-dim

    def log_joint(self, values: torch.Tensor) -> torch.Tensor:
        """N×K: log w_k + log N(x | μ_k, σ²_k)."""
        diff = values[:, None] - self.means[None]
        log_normal = -0.5 * (math.log(2 * math.pi) + self.variances.log() + diff.square() / self.variances)
        return self.weights.log()[None] + log_normal


def fit_mixture(values: torch.Tensor, valid: torch.Tensor, components: int = 3, tolerance: float = 1e-3,
                max_steps: int = 100) -> Mixture:
    """EM for a 1-D Gaussian mixture over ``values[valid]``, without boolean indexing.

    Initialisation and stopping follow METHOD.md §7.1 and scikit-learn's ``GaussianMixture``
    (means at min, median and max, equal weights, unit precisions; stop when the mean
    log-likelihood changes by less than ``tolerance``). Converged parameters are frozen rather
    than leaving the loop at once, so the loop syncs with the host only every 10 steps.
    """
    values = values.float()
    weight = valid.float()
    count = weight.sum().clamp(min=1.0)
    low = torch.where(valid, values, torch.full_like(values, math.inf)).min()
    high = torch.where(valid, values, torch.full_like(values, -math.inf)).max()
    middle = torch.where(valid, values, torch.full_like(values, math.nan)).nanmedian()
    if components == 3:
        means = torch.stack([low, middle, high])
    else:
        means = low + (high - low) * torch.linspace(0, 1, components, device=values.device)
    mixture = Mixture(
        weights=torch.full((components,), 1.0 / components, device=values.device),
        means=means,
        variances=torch.ones(components, device=values.device),
        converged=torch.zeros((), dtype=torch.bool, device=values.device),
    )
    previous = torch.full((), -math.inf, device=values.device)
    for step in range(max_steps):
        joint = mixture.log_joint(values)
        log_likelihood = joint.logsumexp(dim=1)
        responsibilities = (joint - log_likelihood[:, None]).exp() * weight[:, None]
        mean_log_likelihood = (log_likelihood * weight).sum() / count

        totals = responsibilities.sum(0) + _EPS
        means = (responsibilities * values[:, None]).sum(0) / totals
        variances = (responsibilities * (values[:, None] - means).square()).sum(0) / totals + _REG_VARIANCE
        keep = mixture.converged
        mixture = Mixture(
            weights=torch.where(keep, mixture.weights, totals / totals.sum()),
            means=torch.where(keep, mixture.means, means),
            variances=torch.where(keep, mixture.variances, variances),
            converged=keep | ((mean_log_likelihood - previous).abs() < tolerance),
        )
        previous = mean_log_likelihood
        if step % 10 == 9 and bool(mixture.converged):
            break
    return mixture


def mixture_thresholds(values: torch.Tensor, valid: torch.Tensor, mixture: Mixture) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(δ_l*, δ_h*, found): the largest value assigned to the lowest-mean component and the
    smallest assigned to the highest-mean one; ``found`` is False when either is empty."""
    assigned = mixture.log_joint(values.float()).argmax(dim=1)
    order = mixture.means.argsort()
    in_low = valid & (assigned == order[0])
    in_high = valid & (assigned == order[-1])
    low = torch.where(in_low, values, torch.full_like(values, -math.inf)).max()
    high = torch.where(in_high, values, torch.full_like(values, math.inf)).min()
    return low, high, in_low.any() & in_high.any()


class ThresholdSearch:
    """Searched (δ_l, δ_h) of one CAM: ring buffer of confidences, mixture fit, EMA (§7.1)."""

    def __init__(self, high: float, low: float, cfg: ThresholdSearchConfig) -> None:
        self.cfg = cfg
        self.high = torch.tensor(float(high))
        self.low = torch.tensor(float(low))
        self.buffer: torch.Tensor | None = None  # (history × images per step) × values per image
        self.position = 0

    def update(self, confidence: torch.Tensor) -> None:
        """Push ``confidence`` (N×H×W maps of m(i), the whole global batch), refit, smooth."""
        cfg = self.cfg
        small = F.interpolate(confidence[:, None].float(), scale_factor=1 / cfg.downscale, mode="bilinear",
                              align_corners=False, recompute_scale_factor=False).flatten(1)
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
        valid = values > cfg.min_confidence
        mixture = fit_mixture(values, valid, 3, cfg.tolerance, cfg.max_em_steps)
        low, high, found = mixture_thresholds(values, valid, mixture)
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
        self.position = int(state.get("position", 0))
        self.buffer = state.get("buffer")


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
    def from_config(cls, cfg: MethodConfig) -> "CplThresholds":
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
        if "cam" not in state:  # written before the search existed: four floats
            state = {"cam": {"high": state["cam_high"], "low": state["cam_low"]},
                     "aux": {"high": state["aux_high"], "low": state["aux_low"]}}
        self.cam.load_state_dict(state["cam"])
        self.aux.load_state_dict(state["aux"])
