"""Each loss against values computed by hand."""

import math

import pytest
import torch

from cosa.data.io import IGNORE_INDEX
from cosa.method.losses import (
    balanced_segmentation_loss,
    cam_to_segmentation_loss,
    classification_loss,
    segmentation_to_cam_loss,
    supervised_segmentation_loss,
)


def log_sigmoid(x: float) -> float:
    return -math.log1p(math.exp(-x))


def test_classification_loss_is_multilabel_soft_margin():
    logits = torch.tensor([[0.0, 2.0], [-1.0, 3.0]])
    labels = torch.tensor([[1.0, 0.0], [0.0, 1.0]])
    # −(1/C) Σ_c [y log σ(z) + (1−y) log σ(−z)], then the batch mean.
    first = -(log_sigmoid(0.0) + log_sigmoid(-2.0)) / 2
    second = -(log_sigmoid(1.0) + log_sigmoid(3.0)) / 2
    assert classification_loss(logits, labels).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_balanced_segmentation_loss_averages_each_group_separately():
    # Two classes (background, class 1); pixels: bg [0,0], bg [2,0], fg [1,3], ignored.
    logits = torch.tensor([[0.0, 2.0, 1.0, 5.0], [0.0, 0.0, 3.0, -5.0]]).view(1, 2, 1, 4)
    target = torch.tensor([[[0, 0, 1, IGNORE_INDEX]]])
    ce_bg = [math.log(2.0), math.log(1 + math.exp(-2.0))]
    ce_fg = math.log(1 + math.exp(-2.0))
    expected = 0.5 * sum(ce_bg) / 2 + 0.5 * ce_fg
    assert balanced_segmentation_loss(logits, target).item() == pytest.approx(expected, rel=1e-6)
    weighted = 0.75 * sum(ce_bg) / 2 + 0.25 * ce_fg
    assert balanced_segmentation_loss(logits, target, alpha=0.25).item() == pytest.approx(weighted, rel=1e-6)


def test_balanced_segmentation_loss_with_an_empty_group_is_finite():
    logits = torch.zeros(1, 3, 2, 2)
    only_background = torch.zeros(1, 2, 2, dtype=torch.long)
    assert balanced_segmentation_loss(logits, only_background).item() == pytest.approx(0.5 * math.log(3))
    all_ignored = torch.full((1, 2, 2), IGNORE_INDEX)
    assert balanced_segmentation_loss(logits, all_ignored).item() == 0.0


def test_cam_to_segmentation_loss_averages_the_two_pseudo_labels():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, 5)
    cpl = torch.randint(0, 4, (2, 5, 5))
    aux = torch.randint(0, 4, (2, 5, 5))
    aux[0, 0] = IGNORE_INDEX
    expected = 0.5 * balanced_segmentation_loss(logits, cpl) + 0.5 * balanced_segmentation_loss(logits, aux)
    assert cam_to_segmentation_loss(logits, cpl, aux).item() == pytest.approx(expected.item())


def test_segmentation_to_cam_loss_uses_relu_cams_and_soft_targets():
    cam_logits = torch.tensor([-1.0, 2.0]).view(1, 2, 1, 1)
    spl = torch.tensor([0.0, 0.25, 0.75]).view(1, 3, 1, 1)  # background, class 1, class 2
    # ReLU(−1) = 0 → −[.25 log σ(0) + .75 log σ(0)] = log 2; z = 2, t = .75.
    first = math.log(2.0)
    second = -(0.75 * log_sigmoid(2.0) + 0.25 * log_sigmoid(-2.0))
    assert segmentation_to_cam_loss(cam_logits, spl).item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_segmentation_to_cam_loss_resizes_targets_to_the_cam_grid():
    cam_logits = torch.full((1, 1, 2, 2), 3.0)
    spl = torch.zeros(1, 2, 8, 8)
    spl[:, 1] = 1.0  # every pixel certain of class 1
    expected = -log_sigmoid(3.0)
    assert segmentation_to_cam_loss(cam_logits, spl).item() == pytest.approx(expected, rel=1e-6)


def test_supervised_loss_is_mean_cross_entropy_over_labelled_pixels():
    logits = torch.tensor([[0.0, 0.0], [1.0, -1.0]]).view(1, 2, 1, 2)  # pixel 0: (0, 1)
    masks = torch.tensor([[[1, IGNORE_INDEX]]])
    assert supervised_segmentation_loss(logits, masks).item() == pytest.approx(math.log(1 + math.exp(-1.0)))
