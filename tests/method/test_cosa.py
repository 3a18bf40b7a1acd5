"""The objective of one step: the loss gate as released and the paper's techniques as switches."""

import torch

from cosa.config import load_config
from cosa.config.schema import MethodConfig
from cosa.engine.distributed import DistContext
from cosa.method.cosa import CoSAObjective
from cosa.method.losses import (
    hard_segmentation_labels,
)

from conftest import TINY_OVERRIDES

CPU = DistContext(0, 1, 0, torch.device("cpu"))
IGNORE = 255


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
