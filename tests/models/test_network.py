"""Backbones, the network's heads and weight loading."""

import math

import pytest
import timm
import torch
import torch.nn.functional as F
import torchvision
from timm.layers import resample_abs_pos_embed

from cosa.config.schema import ModelConfig
from cosa.errors import CosaError
from cosa.models.backbone import build_backbone
from cosa.models.network import build_network


@pytest.fixture(scope="module")
def vit():
    torch.manual_seed(0)
    return build_backbone("vit_tiny_patch16_224", "none", aux_layer=-3, output_stride=16).eval()


def test_vit_maps_match_timm_at_the_native_size(vit):
    reference = timm.create_model("vit_tiny_patch16_224", num_classes=0)
    reference.load_state_dict({k: v for k, v in vit.state_dict().items()}, strict=False)
    reference.eval()
    images = torch.randn(2, 3, 224, 224)
    final, aux = vit(images)
    tokens = reference.forward_features(images)[:, 1:]
    assert final.shape == (2, 192, 14, 14)
    assert torch.allclose(final.flatten(2).transpose(1, 2), tokens, atol=1e-5)
    intermediate = reference.forward_intermediates(images, indices=[9], norm=False, intermediates_only=True)[0]
    assert torch.allclose(aux, intermediate, atol=1e-5)


def test_vit_positional_embedding_is_frozen_and_resampled_bicubically(vit):
    assert not vit.pos_embed.requires_grad
    resampled = vit.resampled_pos_embed(28, 21)
    expected = resample_abs_pos_embed(vit.pos_embed, [28, 21], num_prefix_tokens=1, antialias=False)
    assert torch.allclose(resampled, expected, atol=1e-6)
    final, aux = vit(torch.randn(1, 3, 448, 336))
    assert final.shape == aux.shape == (1, 192, 28, 21)


def test_vit_drops_the_pixels_past_the_last_whole_patch(vit):
    """As the released stride-16 patch convolution does: 170×175 px are 10×10 patches of 160×160."""
    images = torch.randn(1, 3, 170, 175)
    with torch.no_grad():
        for ours, cropped in zip(vit(images), vit(images[..., :160, :160])):
            assert ours.shape[-2:] == (10, 10) and torch.equal(ours, cropped)


def test_decoder_keeps_the_default_initialisation_and_starts_near_chance():
    """The released LargeFOV never calls its initialiser: weights within PyTorch's default bound
    1/√fan_in, so the first segmentation loss is about ln(C + 1), as in the released logs."""
    torch.manual_seed(0)
    cfg = ModelConfig(backbone="vit_tiny_patch16_224", pretrained="none")
    net = build_network(cfg, num_classes=20).eval()
    for conv in (net.decoder.conv6, net.decoder.conv7, net.decoder.conv8):
        bound = 1 / math.sqrt(conv.weight[0].numel())
        assert conv.weight.abs().max() <= bound and conv.weight.std() > 0.5 * bound / math.sqrt(3)
    with torch.no_grad():
        seg = net(torch.randn(2, 3, 64, 64)).seg
    labels = torch.randint(0, 21, (2, *seg.shape[-2:]), generator=torch.Generator().manual_seed(0))
    assert F.cross_entropy(seg, labels).item() == pytest.approx(math.log(21), abs=0.05)


def test_network_outputs_and_classification_by_global_max_pooling():
    cfg = ModelConfig(backbone="mobilenetv2_050", pretrained="none", aux_layer=-2, decoder_channels=32)
    net = build_network(cfg, num_classes=5).eval()
    out = net(torch.randn(2, 3, 64, 64))
    assert out.cam.shape == (2, 5, 4, 4) and out.seg.shape == (2, 6, 4, 4) and out.logits.shape == (2, 5)
    features, aux = net.encoder(torch.randn(1, 3, 64, 64))
    assert aux.shape[1] == net.aux_classifier.in_channels
    backbone, heads = net.parameter_groups()
    assert len(backbone) + len(heads) == len([p for p in net.parameters() if p.requires_grad])
    assert all(
        name.startswith(("classifier", "aux_classifier", "decoder"))
        for name, p in net.named_parameters()
        if any(p is h for h in heads)
    )


def test_torchvision_mobilenet_weights_load_by_position(tmp_path):
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v2().eval()
    path = tmp_path / "tv.pth"
    torch.save(reference.state_dict(), path)
    backbone = build_backbone("mobilenetv2_100", str(path), aux_layer=-2, output_stride=32).eval()
    images = torch.randn(1, 3, 96, 96)
    with torch.no_grad():
        final, _ = backbone(images)
        expected = reference.features[:18](images)
    assert torch.allclose(final, expected, atol=1e-5)


def test_weights_that_do_not_fit_are_a_clear_error(tmp_path):
    path = tmp_path / "other.pth"
    torch.save({"some.weight": torch.zeros(3, 3)}, path)
    with pytest.raises(CosaError, match="other.pth: weights do not fit this backbone"):
        build_backbone("mobilenetv2_050", str(path), -2, 16)
    with pytest.raises(CosaError, match="pretrained weights file not found"):
        build_backbone("mobilenetv2_050", str(tmp_path / "missing.pth"), -2, 16)
    with pytest.raises(CosaError, match="'no_such_package' is not installed"):
        build_backbone("mobilenetv2_050", "pkg:no_such_package/w.pth", -2, 16)
