"""The objective of one step: the loss gate as released and the paper's techniques as switches."""

from pathlib import Path

import numpy as np
import pytest
import torch

from cosa.config import load_config
from cosa.config.schema import MethodConfig
from cosa.data.classes import VOC_CLASSES
from cosa.engine.distributed import DistContext
from cosa.method.cosa import CoSAObjective
from cosa.method.losses import (
    hard_segmentation_labels,
)
from cosa.models.network import build_network

from conftest import TINY_OVERRIDES

CPU = DistContext(0, 1, 0, torch.device("cpu"))
IGNORE = 255
RELEASED_TRAJECTORY = Path(__file__).parents[1] / "fixtures" / "official" / "released_trajectory.npz"
RELEASED_TERMS = ("cls", "cls_aux", "c2s", "s2c", "reg")  # the columns of its loss_weights


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


def test_the_total_is_the_weighted_sum_of_the_terms_with_the_released_weights():
    """The six released steps (loss warm-up 2, VOC weights), on the fixture's batches: at each, the
    objective's weights are the released ones, its total is Σ weight·term, and these weights on the
    released terms give the released total. A tiny network stands in for ViT-B: the weighting does
    not depend on it (tests/test_release_trajectory.py replays the same steps with ViT-B)."""
    with np.load(RELEASED_TRAJECTORY) as arrays:
        released = dict(arrays)
    cfg = load_config("voc", "release", overrides=TINY_OVERRIDES)
    assert cfg.method.loss_warmup_iters == 2  # the fixture's warm-up
    torch.manual_seed(0)
    online = build_network(cfg.model, len(VOC_CLASSES), pretrained=False)
    assignment = build_network(cfg.model, len(VOC_CLASSES), pretrained=False)
    objective = CoSAObjective(cfg.method)
    for step, total in enumerate(released["loss_total"]):
        batch = {
            "weak": torch.from_numpy(released["weak"][step]),
            "strong": torch.from_numpy(released["strong"][step]),
            "labels": torch.from_numpy(released["labels"][step]),
            "box": torch.from_numpy(released["box"][step].astype(np.int64)),
        }
        with torch.no_grad():
            losses = objective(online, assignment, batch, step)
        assert tuple(losses.weights) == RELEASED_TERMS, step
        weights = [losses.weights[name] for name in RELEASED_TERMS]
        assert weights == pytest.approx(released["loss_weights"][step], rel=1e-12), step
        weighted_terms = sum(weight * losses.terms[name] for weight, name in zip(weights, RELEASED_TERMS))
        assert float(losses.total) == pytest.approx(float(weighted_terms), rel=1e-6), step
        released_terms = [float(released[f"loss_{name}"][step]) for name in RELEASED_TERMS]
        assert sum(w * t for w, t in zip(weights, released_terms)) == pytest.approx(total, rel=1e-6), step
