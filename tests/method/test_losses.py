"""Each loss against values computed by hand."""

import math

import pytest
import torch

from cosa.config.schema import MethodConfig
from cosa.data.io import IGNORE_INDEX
from cosa.method.cosa import CoSAObjective
from cosa.method.losses import (
    balanced_segmentation_loss,
    cam_to_segmentation_loss,
    classification_loss,
    contrastive_separation_loss,
    hard_segmentation_labels,
    segmentation_to_cam_loss,
    supervised_segmentation_loss,
)
from cosa.models.network import NetworkOutput


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


# --- contrastive separation (L_csc) ---


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
    output = NetworkOutput(
        cam=network.classifier(features), aux_cam=None, logits=None, aux_logits=None, seg=None, features=features
    )
    spl = torch.zeros(1, 2, 3, 3)
    spl[0, 1, 1, 1] = 1.0  # class 1 in the centre, background around it
    spl[0, 0] = 1.0 - spl[0, 1]
    loss = CoSAObjective(MethodConfig(recipe="paper")).contrastive_separation(network, output, spl, torch.ones(1, 1))
    loss.backward()
    assert network.classifier.weight.grad.abs().sum() > 0  # W learns ...
    assert features.grad is None  # ... the encoder features do not: L_csc reads W ∗ sg(F)
    hard = hard_segmentation_labels(spl, (3, 3), 0.5)
    expected = contrastive_separation_loss(output.cam.detach(), hard, torch.ones(1, 1), 0.3)
    assert loss.item() == pytest.approx(expected.item())  # on the final CAM, not the auxiliary one


def test_contrastive_separation_uses_present_classes_and_survives_missing_background():
    cam = torch.randn(2, 2, 4, 4, requires_grad=True)
    spl = torch.ones(2, 4, 4, dtype=torch.long)  # class 1 everywhere: no background pixels
    spl[1] = 2
    labels = torch.tensor([[1.0, 0.0], [0.0, 0.0]])  # the second image's class 2 is not a tag
    loss = contrastive_separation_loss(cam, spl, labels, 0.1)
    loss.backward()
    assert float(loss.detach()) == pytest.approx(0.0, abs=1e-6) and torch.isfinite(cam.grad).all()
