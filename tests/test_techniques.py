"""The paper's three techniques: threshold search, RAW and contrastive separation."""

import math

import numpy as np
import pytest
import torch
from sklearn.mixture import GaussianMixture

from cosa.config import load_config
from cosa.config.schema import MethodConfig, ThresholdSearchConfig
from cosa.engine.distributed import DistContext
from cosa.method.cosa import CoSAObjective
from cosa.method.losses import (
    balanced_segmentation_loss,
    contrastive_separation_loss,
    hard_segmentation_labels,
)
from cosa.method.pseudo_labels import reliability_weighted_labels
from cosa.method.thresholds import CplThresholds, Histogram, ThresholdSearch, fit_mixture, mixture_thresholds
from cosa.models.network import NetworkOutput

from conftest import TINY_OVERRIDES

CPU = DistContext(0, 1, 0, torch.device("cpu"))

IGNORE = 255


def known_mixture(seed: int, means, spreads, counts) -> np.ndarray:
    rng = np.random.default_rng(seed)
    parts = [rng.normal(m, s, n) for m, s, n in zip(means, spreads, counts)]
    return np.clip(np.concatenate(parts), 0.0, 1.0).astype(np.float32)


def sklearn_thresholds(values: np.ndarray) -> tuple[float, float]:
    """The same rule on scikit-learn's exact fit, with our initialisation (means at min, median, max)."""
    data = values[:, None].astype(np.float64)
    gmm = GaussianMixture(3, tol=1e-3, max_iter=100, weights_init=[1 / 3] * 3,
                          means_init=[[values.min()], [np.median(values)], [values.max()]],
                          precisions_init=np.ones((3, 1, 1)), covariance_type="full").fit(data)
    assigned = gmm.predict(data)
    order = np.argsort(gmm.means_[:, 0])
    return float(values[assigned == order[0]].max()), float(values[assigned == order[-1]].min())


@pytest.mark.parametrize("seed, means, spreads, counts", [
    (0, (0.1, 0.45, 0.85), (0.05, 0.08, 0.06), (6000, 2000, 3000)),
    (1, (0.15, 0.5, 0.9), (0.04, 0.1, 0.03), (2000, 2000, 2000)),
    (2, (0.08, 0.35, 0.75), (0.03, 0.1, 0.1), (9000, 1500, 800)),
])
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


def test_the_search_moves_thresholds_towards_the_fit_by_the_momentum():
    search_cfg = ThresholdSearchConfig(enabled=True, history=2, downscale=1, momentum=0.9)
    search = ThresholdSearch(0.7, 0.25, search_cfg)
    maps = torch.from_numpy(known_mixture(5, (0.1, 0.5, 0.9), (0.03, 0.05, 0.03), (400, 400, 224))).view(4, 16, 16)
    search.update(maps)
    # The buffer starts as U(0, 1) noise for the other 4 of its 2 × 4 images.
    values = search.buffer.flatten()
    histogram = Histogram.of(values, values > search_cfg.min_confidence)
    low, high, _ = mixture_thresholds(histogram, fit_mixture(histogram))
    assert float(search.low) == pytest.approx(0.9 * 0.25 + 0.1 * float(low), abs=1e-6)
    assert float(search.high) == pytest.approx(0.9 * 0.7 + 0.1 * float(high), abs=1e-6)
    assert torch.equal(search.buffer[:4], maps.flatten(1))
    search.update(maps)
    search.update(maps)  # the ring wraps: the newest maps overwrite the oldest rows
    assert search.position == 4 and torch.equal(search.buffer[4:], maps.flatten(1))


def test_thresholds_stay_fixed_unless_searching_and_load_the_old_checkpoint_format():
    thresholds = CplThresholds.from_config(MethodConfig())
    thresholds.update(torch.rand(2, 32, 32), torch.rand(2, 32, 32))
    assert thresholds.values() == pytest.approx({"cam_high": 0.7, "cam_low": 0.2, "aux_high": 0.7, "aux_low": 0.25})
    thresholds.load_state_dict({"cam_high": 0.6, "cam_low": 0.2, "aux_high": 0.65, "aux_low": 0.3})
    assert thresholds.values() == pytest.approx({"cam_high": 0.6, "cam_low": 0.2, "aux_high": 0.65, "aux_low": 0.3})


# --- RAW ----------------------------------------------------------------------------------------

def raw_weight(score: float, middle: float, temperature: float = 0.1) -> float:
    """ρ for one present class, by hand: K = 2, q = softmax([δ_m, M] / τ)."""
    exps = [math.exp(middle / temperature), math.exp(score / temperature)]
    q = [e / sum(exps) for e in exps]
    perplexity = math.exp(-sum(p * math.log(p) for p in q))
    return (2 / perplexity - 1) / (2 - 1)


def test_raw_weights_at_hand_computed_points():
    middle = (0.7 + 0.25) / 2
    scores = [middle, 1.0, 0.0, 0.6, 0.8, 0.2]
    cams = torch.tensor([[scores]]).view(1, 1, 1, 6).repeat(1, 2, 1, 1)
    cams[:, 1] = 0.0  # the second class is absent
    labels = torch.tensor([[1.0, 0.0]])
    inside = torch.ones(1, 1, 6, dtype=torch.bool)
    target, weights = reliability_weighted_labels(cams, labels, inside, 0.7, 0.25, 0.1, 1.0)
    # The band between δ_l and δ_h (middle, 0.6) stays ignore; never the absent class.
    assert target.tolist() == [[[IGNORE, 1, 0, IGNORE, 1, 0]]]
    expected = [0.0 if 0.25 <= s <= 0.7 else raw_weight(s, middle) for s in scores]
    assert expected[1] > 0.9 and 0 < expected[4] < expected[1]
    assert weights[0, 0].tolist() == pytest.approx(expected, abs=1e-5)
    squared = reliability_weighted_labels(cams, labels, inside, 0.7, 0.25, 0.1, 2.0)[1]
    assert squared[0, 0].tolist() == pytest.approx([w * w for w in expected], abs=1e-5)


def test_raw_ignores_outside_the_box_and_the_band():
    cams = torch.tensor([0.1, 0.5, 0.9, 0.9]).view(1, 1, 1, 4)
    labels = torch.ones(1, 1)
    inside = torch.tensor([[[True, True, True, False]]])
    target, weights = reliability_weighted_labels(cams, labels, inside, 0.7, 0.25, 0.1, 1.0)
    assert target.tolist() == [[[0, IGNORE, 1, IGNORE]]]
    assert weights[0, 0, 1] == 0 and weights[0, 0, 3] == 0 and weights[0, 0, 0] > 0 and weights[0, 0, 2] > 0
    no_tags = reliability_weighted_labels(cams, torch.zeros(1, 1), inside, 0.7, 0.25, 0.1, 1.0)
    assert no_tags[0].tolist() == [[[0, IGNORE, 0, IGNORE]]] and no_tags[1][0, 0, [0, 2]].tolist() == [1.0, 1.0]


def test_weighted_balanced_loss_divides_by_counts_not_weights():
    logits = torch.zeros(1, 2, 1, 3)  # CE = log 2 everywhere
    target = torch.tensor([[[0, 1, 1]]])
    weights = torch.tensor([[[0.5, 1.0, 0.0]]])
    loss = balanced_segmentation_loss(logits, target, 0.5, weights)
    assert float(loss) == pytest.approx(0.5 * 0.5 * math.log(2) + 0.5 * (1.0 + 0.0) / 2 * math.log(2))


# --- contrastive separation -----------------------------------------------------------------------

def test_contrastive_separation_at_a_hand_computed_point():
    # One class, one pixel of it at M̂ = 1 and two background pixels at 0.5 and 0: k = 1, so the
    # one negative is the 0.5 pixel.
    cam = torch.tensor([2.0, 1.0, 0.0]).view(1, 1, 1, 3)
    spl = torch.tensor([[[1, 0, 0]]])
    loss = contrastive_separation_loss(cam, spl, torch.ones(1, 1), temperature=0.1)
    expected = -math.log(math.exp(10) / (math.exp(10) + math.exp(5)))
    assert float(loss) == pytest.approx(expected, rel=1e-4)


def test_contrastive_separation_falls_as_the_class_leaves_the_background():
    spl = torch.zeros(1, 8, 8, dtype=torch.long)
    spl[0, 2:5, 2:5] = 1
    context = torch.zeros(8, 8)
    context[6:, :] = 1.0  # a strip of background the class map also fires on
    values = []
    for leak in (1.0, 0.6, 0.3, 0.0):
        cam = (spl[0] == 1).float() * 3.0 + context * 3.0 * leak
        values.append(float(contrastive_separation_loss(cam.view(1, 1, 8, 8), spl, torch.ones(1, 1), 0.1)))
    assert values == sorted(values, reverse=True) and values[0] > values[-1] + 1


def test_contrastive_separation_only_pushes_the_background_down():
    # Class pixels at 3 (the maximum) and 1, background at 2 and 0.5: k = 2 negatives. The class
    # pixels' scores are constants: the weak class pixel is not lifted, only through M̂'s
    # normalisation does the peak take a gradient.
    spl = torch.tensor([[[1, 1, 0, 0]]])
    cam = torch.tensor([3.0, 1.0, 2.0, 0.5]).view(1, 1, 1, 4).requires_grad_()
    loss = contrastive_separation_loss(cam, spl, torch.ones(1, 1), 0.3)
    loss.backward()
    grad = cam.grad.flatten()
    assert grad[1] == 0  # the weak class pixel is left alone
    assert grad[2] > 0 and grad[3] > 0  # the background is pushed down
    assert grad[0] < 0  # the normaliser (the class's peak) keeps its gradient
    scores = torch.tensor([3.0, 1.0, 2.0, 0.5]) / 3.00001 / 0.3
    negatives = torch.logsumexp(scores[2:], 0)
    expected = sum(float(torch.logaddexp(scores[i], negatives) - scores[i]) for i in (0, 1)) / 2
    assert float(loss.detach()) == pytest.approx(expected, rel=1e-5)


def test_contrastive_separation_trains_the_classifier_not_the_features():
    torch.manual_seed(0)
    network = torch.nn.Module()
    network.classifier = torch.nn.Conv2d(4, 1, 1, bias=False)
    features = torch.randn(1, 4, 3, 3, requires_grad=True)
    output = NetworkOutput(cam=network.classifier(features), aux_cam=None, logits=None, aux_logits=None,
                           seg=None, features=features)
    spl = torch.zeros(1, 2, 3, 3)
    spl[0, 1, 1, 1] = 1.0  # class 1 in the centre, background around it
    spl[0, 0] = 1.0 - spl[0, 1]
    loss = CoSAObjective(MethodConfig(recipe="paper")).contrastive_separation(network, output, spl, torch.ones(1, 1))
    loss.backward()
    assert network.classifier.weight.grad.abs().sum() > 0  # W learns ...
    assert features.grad is None  # ... the encoder features do not: L_csc reads W ∗ sg(F)
    hard = hard_segmentation_labels(spl, (3, 3), 0.5)
    expected = contrastive_separation_loss(output.cam.detach(), hard, torch.ones(1, 1), 0.3)
    assert float(loss) == pytest.approx(float(expected))  # on the final CAM, not the auxiliary one


def test_contrastive_separation_uses_present_classes_and_survives_missing_background():
    cam = torch.randn(2, 2, 4, 4, requires_grad=True)
    spl = torch.ones(2, 4, 4, dtype=torch.long)  # class 1 everywhere: no background pixels
    spl[1] = 2
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # the second image's class 2 is not a tag
    loss = contrastive_separation_loss(cam, spl, labels, 0.1)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6) and torch.isfinite(cam.grad).all()


def test_pseudo_label_losses_count_from_the_step_after_the_warm_up_as_released():
    """The released loop adds them when its 0-based ``n_iter > warmup_iters``; the trainer passes
    that index, so with a warm-up of 5 the seventh step (index 6) is the first to use them."""
    cfg = MethodConfig(recipe="release", loss_warmup_iters=5)
    cfg.contrastive.warmup_iters = 20
    objective = CoSAObjective(cfg)
    assert [objective.loss_gate(step) for step in (0, 5, 6)] == [0.0, 0.0, 1.0]
    assert objective.loss_gate(20, cfg.contrastive.warmup_iters) == 0.0
    assert objective.loss_gate(21, cfg.contrastive.warmup_iters) == 1.0


def test_the_trainer_passes_the_0_based_step(tiny_data, tmp_path, monkeypatch):
    from cosa.engine.trainer import Trainer

    steps = []
    original = CoSAObjective.__call__

    def recording(self, online, assignment, batch, step, max_tags=None):
        steps.append(step)
        return original(self, online, assignment, batch, step, max_tags)

    monkeypatch.setattr(CoSAObjective, "__call__", recording)
    cfg = load_config("demo", "release", str(tiny_data), [*TINY_OVERRIDES, "train.iterations=3", "eval.max_images=2"])
    Trainer(cfg, tmp_path / "run", CPU).fit()
    assert steps == [0, 1, 2]


def test_hard_spl_ignores_unsure_pixels_and_takes_the_cam_grid():
    spl = torch.zeros(1, 3, 4, 4)
    spl[0, 1] = 0.9
    spl[0, 0] = 0.1
    spl[0, :, 0, 0] = torch.tensor([0.3, 0.4, 0.3])
    hard = hard_segmentation_labels(spl, (2, 2), 0.5)
    assert hard.shape == (1, 2, 2) and hard[0, 0, 0] == IGNORE and hard[0, 1, 1] == 1


def test_paper_terms_are_switches_of_the_objective():
    cfg = MethodConfig(recipe="paper")
    cfg.contrastive.enabled = True
    cfg.raw.enabled = True
    cfg.threshold_search.enabled = True
    objective = CoSAObjective(cfg)
    assert objective.thresholds.searching
    assert not CoSAObjective(MethodConfig(recipe="release")).thresholds.searching
