"""The CPL thresholds, fixed and searched: the mixture fit against scikit-learn, the search's update,
its state in a checkpoint."""

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from cosa.config.schema import MethodConfig, ThresholdSearchConfig
from cosa.method.thresholds import CplThresholds, Histogram, ThresholdSearch, fit_mixture, mixture_thresholds


def known_mixture(seed: int, means, spreads, counts) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [rng.normal(m, s, n) for m, s, n in zip(means, spreads, counts)]
    return np.clip(np.concatenate(parts), 0.0, 1.0).astype(np.float32)


def sklearn_thresholds(values: np.ndarray) -> tuple[float, float]:
    """The same rule on scikit-learn's exact fit, with our initialisation (means at min, median, max)."""
    data = values[:, None].astype(np.float64)
    gmm = GaussianMixture(
        3,
        tol=1e-3,
        max_iter=100,
        weights_init=[1 / 3] * 3,
        means_init=[[values.min()], [np.median(values)], [values.max()]],
        precisions_init=np.ones((3, 1, 1)),
        covariance_type="full",
    ).fit(data)
    assigned = gmm.predict(data)
    order = np.argsort(gmm.means_[:, 0])
    return float(values[assigned == order[0]].max()), float(values[assigned == order[-1]].min())


@pytest.mark.parametrize(
    "seed, means, spreads, counts",
    [
        (0, (0.1, 0.45, 0.85), (0.05, 0.08, 0.06), (6000, 2000, 3000)),
        (1, (0.15, 0.5, 0.9), (0.04, 0.1, 0.03), (2000, 2000, 2000)),
        (2, (0.08, 0.35, 0.75), (0.03, 0.1, 0.1), (9000, 1500, 800)),
    ],
)
def test_mixture_thresholds_match_scikit_learn(seed, means, spreads, counts):
    values = known_mixture(seed, means, spreads, counts)
    tensor = torch.from_numpy(values)
    histogram = Histogram.of(tensor, torch.ones_like(tensor, dtype=torch.bool))
    low, high, found = mixture_thresholds(histogram, fit_mixture(histogram))
    expected_low, expected_high = sklearn_thresholds(values)
    assert bool(found)
    assert float(low) == pytest.approx(expected_low, abs=0.01)
    assert float(high) == pytest.approx(expected_high, abs=0.01)
    assert 0 < float(low) < float(high) < 1


def test_values_outside_the_valid_mask_do_not_count():
    values = known_mixture(3, (0.1, 0.5, 0.9), (0.03, 0.05, 0.03), (1000, 1000, 1000))
    noise = np.random.default_rng(4).uniform(0, 1, 2000).astype(np.float32)
    combined = torch.from_numpy(np.concatenate([values, noise]))
    valid = torch.arange(len(combined)) < len(values)
    histogram = Histogram.of(combined, valid)
    low, high, _ = mixture_thresholds(histogram, fit_mixture(histogram))
    expected_low, expected_high = sklearn_thresholds(values)
    assert (float(low), float(high)) == pytest.approx((expected_low, expected_high), abs=0.01)


def confidence_maps(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Four confidence maps, and what the search's ×16 downscale makes of them: each of their
    16 × 16 values fills a block of 16 × 16 pixels, which the bilinear downscale reads back."""
    values = torch.from_numpy(known_mixture(seed, (0.1, 0.5, 0.9), (0.03, 0.05, 0.03), (400, 400, 224))).view(4, 16, 16)
    block = ThresholdSearchConfig.downscale
    return values.repeat_interleave(block, 1).repeat_interleave(block, 2), values


def test_the_search_moves_thresholds_towards_the_fit_by_the_momentum():
    search_cfg = ThresholdSearchConfig(enabled=True, history=2, momentum=0.9)
    search = ThresholdSearch(0.7, 0.25, search_cfg)
    maps, downscaled = confidence_maps(5)
    search.update(maps)
    # The buffer starts as U(0, 1) noise for the other 4 of its 2 × 4 images.
    values = search.buffer.flatten()
    histogram = Histogram.of(values, values > ThresholdSearchConfig.min_confidence)
    low, high, _ = mixture_thresholds(histogram, fit_mixture(histogram))
    assert float(search.low) == pytest.approx(0.9 * 0.25 + 0.1 * float(low), abs=1e-6)
    assert float(search.high) == pytest.approx(0.9 * 0.7 + 0.1 * float(high), abs=1e-6)
    assert torch.equal(search.buffer[:4], downscaled.flatten(1))
    search.update(maps)
    search.update(maps)  # the ring wraps: the newest maps overwrite the oldest rows
    assert search.position == 4 and torch.equal(search.buffer[4:], downscaled.flatten(1))


def test_thresholds_stay_fixed_unless_searching():
    thresholds = CplThresholds.from_config(MethodConfig())
    thresholds.update(torch.rand(2, 32, 32), torch.rand(2, 32, 32))
    assert thresholds.values() == pytest.approx({"cam_high": 0.7, "cam_low": 0.2, "aux_high": 0.7, "aux_low": 0.25})


def test_searched_thresholds_resume_from_their_state():
    method = MethodConfig(recipe="paper", threshold_search=ThresholdSearchConfig(enabled=True, history=2))
    searched, resumed = CplThresholds.from_config(method), CplThresholds.from_config(method)
    maps, _ = confidence_maps(6)
    searched.update(maps, maps)
    resumed.load_state_dict(searched.state_dict())
    assert resumed.values() == searched.values() != CplThresholds.from_config(method).values()
    searched.update(maps, maps)
    resumed.update(maps, maps)  # the same buffer and position: the same next step
    assert resumed.values() == searched.values()
    assert torch.equal(resumed.aux.buffer, searched.aux.buffer)
    assert resumed.aux.position == searched.aux.position == 0  # two steps of 4 images fill the ring of 2 × 4
