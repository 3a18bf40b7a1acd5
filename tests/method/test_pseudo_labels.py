"""Assignments and pseudo-labels: CPL thresholds and box, SPL masking, multi-scale merging."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cosa.data.io import IGNORE_INDEX
from cosa.method.cosa import inside_box
from cosa.method.losses import (
    balanced_segmentation_loss,
)
from cosa.method.pseudo_labels import (
    cam_pseudo_labels,
    multiscale_assignments,
    normalize_cams,
    reliability_weighted_labels,
    segmentation_pseudo_labels,
    tag_channels,
)
from cosa.models.network import NetworkOutput

IGNORE = 255


def test_cam_pseudo_labels_follow_the_two_thresholds_and_the_box():
    # One constant 4×4 map per image (resampling leaves it as it is): confident class 1,
    # confident class 2, background, in the band, confident but outside the box.
    strongest = torch.tensor([[0.9, 0.5], [0.2, 0.8], [0.1, 0.05], [0.5, 0.4], [0.9, 0.1]])
    cams = strongest[:, :, None, None].expand(-1, -1, 4, 4).contiguous()
    labels = torch.ones(5, 2)
    inside = torch.ones(5, 4, 4, dtype=torch.bool)
    inside[4] = False
    pseudo = cam_pseudo_labels(cams, labels, inside, high=0.7, low=0.25)
    assert pseudo[:, 0, 0].tolist() == [1, 2, 0, IGNORE_INDEX, IGNORE_INDEX]
    assert all(bool((image == image[0, 0]).all()) for image in pseudo)


def test_cam_pseudo_labels_resample_at_half_resolution_as_released():
    """A 16×16 map of blocks: labels follow the blocks, and the ×2 resampling smooths their edges."""
    cams = torch.zeros(1, 2, 16, 16)
    cams[0, 0, :8, :8] = 0.9  # class 1 block
    cams[0, 1, 8:, 8:] = 0.5  # ignore band block
    inside = torch.ones(1, 16, 16, dtype=torch.bool)
    pseudo = cam_pseudo_labels(cams, torch.ones(1, 2), inside, 0.7, 0.25)[0]
    assert (pseudo[1:6, 1:6] == 1).all() and (pseudo[10:15, 10:15] == IGNORE_INDEX).all()
    assert (pseudo[1:6, 10:15] == 0).all() and (pseudo[10:15, 1:6] == 0).all()
    # At half resolution the block edge at 8 falls between cells 3 and 4, interpolated over pixels 7–8.
    assert pseudo[3, :7].tolist() == [1] * 7 and pseudo[3, 9:].tolist() == [0] * 7


def test_absent_classes_take_no_part_in_the_cam_pseudo_label():
    """Only the threshold and the present classes enter the softmax, whatever the other maps hold."""
    generator = torch.Generator().manual_seed(0)
    cams = F.interpolate(torch.rand(2, 6, 4, 4, generator=generator), size=(16, 16), mode="bilinear")
    labels = torch.tensor([[1.0, 0, 1, 0, 0, 0], [0, 1, 0, 0, 0, 1]])
    inside = torch.ones(2, 16, 16, dtype=torch.bool)
    zeroed = cam_pseudo_labels(cams * labels[:, :, None, None], labels, inside, 0.6, 0.3)
    assert torch.equal(cam_pseudo_labels(cams, labels, inside, 0.6, 0.3), zeroed)
    assert set(zeroed.unique().tolist()) == {0, 1, 2, 3, 6, IGNORE_INDEX}


def test_normalize_cams_is_per_class_min_max_and_zeroes_absent_classes():
    cams = torch.tensor([[1.0, 3.0], [2.0, 2.0]]).view(1, 1, 2, 2).repeat(1, 2, 1, 1)
    cams[0, 1] *= 10
    out = normalize_cams(cams, torch.tensor([[1.0, 0.0]]))
    assert out[0, 0].flatten().tolist() == pytest.approx(
        [0.0, 1 / (1 + 5e-6), 0.5 / (1 + 5e-6), 0.5 / (1 + 5e-6)], rel=1e-5
    )
    assert out[0, 1].abs().sum() == 0


def test_segmentation_pseudo_labels_mask_absent_classes_and_sharpen():
    seg = torch.tensor([0.0, 0.02, 5.0]).view(1, 3, 1, 1)  # background, class 1, class 2 (absent)
    q = segmentation_pseudo_labels(seg, torch.tensor([[1.0, 0.0]]), temperature=0.01)
    assert q[0, 2].item() == 0.0
    expected = torch.softmax(torch.tensor([0.0, 2.0]), 0)  # (0, 0.02) / 0.01
    assert q[0, :2, 0, 0].tolist() == pytest.approx(expected.tolist(), rel=1e-5)
    assert q.sum(1).item() == pytest.approx(1.0)


class ColumnNetwork(nn.Module):
    """CAM logits = the input's first channel (so a flip is visible), seg = the input itself."""

    def forward(self, images):
        first = images[:, :1]
        return NetworkOutput(
            cam=first, aux_cam=2 * first, logits=first.mean((2, 3)), aux_logits=first.mean((2, 3)), seg=images[:, :2]
        )


def test_multiscale_assignments_undo_the_flip_and_sum_scales():
    ramp = torch.arange(8.0).view(1, 1, 1, 8).expand(1, 3, 8, 8).clone()
    out = multiscale_assignments(ColumnNetwork(), ramp, torch.ones(1, 1), scales=[1.0])
    # max(ramp, un-flipped flip of ramp) = ramp: the flip is undone, so the ramp survives.
    assert torch.allclose(out.cam[0, 0, 0], torch.arange(8.0) / (7 + 1e-5))
    assert torch.allclose(out.seg[0, 0], 2 * ramp[0, 0])  # summed over the flip pair
    two_scales = multiscale_assignments(ColumnNetwork(), ramp, torch.ones(1, 1), scales=[1.0, 0.5])
    assert torch.allclose(two_scales.seg[0, 0, 0, 3:5], 4 * ramp[0, 0, 0, 3:5], atol=0.6)


def test_segmentation_merge_equals_upsampling_each_flip_first():
    # The pair is summed before the one upsampling; upsampling each copy and un-flipping it
    # first (the method's order) must give the same logits, at sizes that do not divide evenly.
    images = torch.rand(2, 3, 13, 11)
    net = ColumnNetwork()
    out = multiscale_assignments(net, images, None, scales=[1.0, 0.6])
    expected = 0
    for scale in (1.0, 0.6):
        scaled = (
            images
            if scale == 1.0
            else F.interpolate(images, size=(int(13 * scale), int(11 * scale)), mode="bilinear", align_corners=False)
        )
        seg = F.interpolate(
            net(torch.cat([scaled, scaled.flip(-1)])).seg, size=(13, 11), mode="bilinear", align_corners=False
        )
        expected = expected + seg[:2] + seg[2:].flip(-1)
    assert torch.allclose(out.seg, expected, rtol=1e-5, atol=1e-6)


def test_aux_cam_of_the_last_scale_only_reproduces_the_released_behaviour():
    images = torch.rand(1, 3, 8, 8)
    summed = multiscale_assignments(ColumnNetwork(), images, torch.ones(1, 1), [1.0, 0.5])
    last = multiscale_assignments(ColumnNetwork(), images, torch.ones(1, 1), [1.0, 0.5], aux_last_scale_only=True)
    only_half = multiscale_assignments(ColumnNetwork(), images, torch.ones(1, 1), [0.5])
    assert torch.allclose(last.aux_cam, only_half.aux_cam)
    assert not torch.allclose(summed.aux_cam, last.aux_cam)
    assert torch.allclose(summed.cam, last.cam)


def test_inside_box_marks_the_crop_box():
    boxes = torch.tensor([[1, 3, 0, 2], [0, 4, 2, 4]])
    masks = inside_box(boxes, (4, 4))
    assert masks[0].nonzero().tolist() == [[1, 0], [1, 1], [2, 0], [2, 1]]
    assert masks[1].sum() == 8 and masks[1][:, 2:].all()


class RandomHeads(nn.Module):
    """Fixed random 1×1 heads: CAMs of 5 classes, their auxiliary CAMs and 6 segmentation logits."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.cam, self.aux, self.seg = nn.Conv2d(3, 5, 1), nn.Conv2d(3, 5, 1), nn.Conv2d(3, 6, 1)

    def forward(self, images):
        small = F.avg_pool2d(images, 4)
        cam = self.cam(small)
        return NetworkOutput(
            cam=cam, aux_cam=self.aux(small), logits=cam.mean((2, 3)), aux_logits=cam.mean((2, 3)), seg=self.seg(small)
        )


def test_tag_channels_alone_give_the_same_cams_and_pseudo_labels():
    """What the training step does with the most tags of its batch (``max_tags``)."""
    images = torch.randn(3, 3, 32, 40)
    labels = torch.tensor([[0.0, 1, 0, 1, 0], [1, 0, 0, 0, 0], [0, 0, 0, 0, 1]])
    channels = tag_channels(labels, 2)
    assert channels[0].tolist() == [1, 3] and channels[2, 1] == 4 and channels[1, 0] == 0  # ascending, tags kept
    with torch.no_grad():
        full = multiscale_assignments(RandomHeads(), images, labels, [1.0, 0.5, 1.5])
        compact = multiscale_assignments(RandomHeads(), images, labels, [1.0, 0.5, 1.5], channels=channels)
    # Resizing fewer channels may vectorise differently: equal up to the last bit or so.
    assert torch.allclose(full.cam, compact.cam, rtol=0, atol=1e-6)
    assert torch.allclose(full.aux_cam, compact.aux_cam, rtol=0, atol=1e-6) and torch.equal(full.seg, compact.seg)
    inside = torch.ones(3, 32, 40, dtype=torch.bool)
    inside[:, :4] = False
    for high, low in ((0.7, 0.25), (0.5, 0.1)):
        expected = cam_pseudo_labels(full.cam, labels, inside, high, low)
        got = cam_pseudo_labels(full.cam, labels, inside, high, low, channels)
        assert (expected != got).sum() <= 2  # rounding (another softmax sum order) may flip a near-tie
        assert set(expected.unique().tolist()) > {0, IGNORE_INDEX}


# --- RAW: reliability-weighted CAM pseudo-labels ---


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
