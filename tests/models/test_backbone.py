"""ViT families through the encoder: its maps are timm's own intermediate outputs.

Random weights and small inputs. Each family lays out its tokens differently: the original ViT
(class token with its own positional entry), CLIP (``norm_pre``), DINOv2 with registers (patch 14,
four register tokens, ``no_embed_class``), DeiT-III (``no_embed_class``) and SigLIP (no class
token). timm's reference is built for the test's grid with the positional embedding resampled
as released (bicubic, no antialiasing), so that its own ``_pos_embed`` has nothing to resample.
"""

import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed

from cosa.config.schema import ModelConfig
from cosa.errors import CosaError
from cosa.models.backbone import build_backbone
from cosa.models.network import build_network

# name: (patch size, prefix tokens, tensor names only that family's encoder has)
FAMILIES = {
    "vit_base_patch16_224": (16, 1, set()),
    "vit_base_patch16_clip_224": (16, 1, {"norm_pre.weight", "norm_pre.bias"}),
    "vit_small_patch14_reg4_dinov2": (14, 5, {"reg_token"}),
    "deit3_small_patch16_224": (16, 1, set()),
    "vit_base_patch16_siglip_224": (16, 0, set()),
}
FAMILY_TENSORS = set.union(*(own for _, _, own in FAMILIES.values()))
NUM_CLASSES = 3


@pytest.fixture(scope="module", params=list(FAMILIES))
def family(request):
    """(backbone name, its CoSA network)."""
    torch.manual_seed(0)
    cfg = ModelConfig(backbone=request.param, pretrained="none", decoder_channels=16)
    return request.param, build_network(cfg, NUM_CLASSES, pretrained=False).eval()


def timm_reference(name: str, encoder: torch.nn.Module, grid: tuple[int, int]) -> torch.nn.Module:
    """timm's model for ``grid``, holding the encoder's weights and its positional embedding resampled as released."""
    patch = encoder.patch_size[0]
    reference = timm.create_model(
        name, pretrained=False, num_classes=0, img_size=(grid[0] * patch, grid[1] * patch), device="meta"
    )
    state = dict(encoder.state_dict())
    state["pos_embed"] = resample_abs_pos_embed(
        encoder.pos_embed,
        list(grid),
        old_size=list(encoder.pos_grid),
        num_prefix_tokens=0 if reference.no_embed_class else reference.num_prefix_tokens,
        antialias=False,
    )
    missing, unexpected = reference.load_state_dict(state, strict=False, assign=True)
    assert not unexpected and all(key.startswith(("attn_pool.", "head.")) for key in missing)
    return reference.eval()


@pytest.mark.parametrize("size", [(64, 80), (75, 101)])  # the second crops to whole patches
def test_final_and_auxiliary_maps_are_timms_intermediates(family, size):
    name, network = family
    encoder = network.encoder
    patch = encoder.patch_size[0]
    grid = (size[0] // patch, size[1] // patch)
    reference = timm_reference(name, encoder, grid)
    images = torch.randn(2, 3, *size)
    cropped = images[..., : grid[0] * patch, : grid[1] * patch]
    with torch.no_grad():
        final, aux = encoder(images)
        (expected_aux,) = reference.forward_intermediates(
            cropped, indices=[encoder.aux_index], norm=False, output_fmt="NCHW", intermediates_only=True
        )
        (expected_final,) = reference.forward_intermediates(
            cropped, indices=[len(reference.blocks) - 1], norm=True, output_fmt="NCHW", intermediates_only=True
        )
    assert final.shape == aux.shape == (2, encoder.channels, *grid)
    torch.testing.assert_close(final, expected_final, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(aux, expected_aux, rtol=1e-5, atol=1e-5)


def test_the_model_gives_patch_size_prefix_tokens_and_names(family):
    name, network = family
    encoder = network.encoder
    patch, prefix_tokens, own = FAMILIES[name]
    assert encoder.patch_size == (patch, patch) and encoder.stride == patch
    assert encoder.num_prefix_tokens == prefix_tokens
    names = set(encoder.state_dict())
    assert {"pos_embed", "patch_embed.proj.weight", "norm.weight"} <= names
    assert own <= names and not (FAMILY_TENSORS - own) & names
    assert ("cls_token" in names) == (prefix_tokens > 0)
    assert not any(name.startswith(("attn_pool.", "fc_norm.", "head.")) for name in names)


def test_positional_embedding_stays_frozen(family):
    _, network = family
    encoder = network.encoder
    assert not encoder.pos_embed.requires_grad
    backbone, _ = network.parameter_groups()
    assert not any(parameter is encoder.pos_embed for parameter in backbone)
    network.train()
    out = network(torch.randn(1, 3, 48, 64))
    (out.logits.sum() + out.seg.sum()).backward()
    frozen, trained = encoder.pos_embed.grad is None, encoder.patch_embed.proj.weight.grad is not None
    network.zero_grad(set_to_none=True)
    network.eval()
    assert frozen and trained


def test_network_outputs_are_on_the_patch_grid(family):
    _, network = family
    patch = network.encoder.patch_size[0]
    grid = (75 // patch, 101 // patch)  # 5×7 for patch 14, 4×6 for patch 16
    with torch.no_grad():
        out = network(torch.randn(2, 3, 75, 101))
    assert out.cam.shape == out.aux_cam.shape == (2, NUM_CLASSES, *grid)
    assert out.seg.shape == (2, NUM_CLASSES + 1, *grid)
    assert out.logits.shape == out.aux_logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(out.seg).all() and torch.isfinite(out.cam).all()


def test_a_vit_with_its_own_token_layout_is_refused():
    with pytest.raises(CosaError, match="deit_tiny_distilled_patch16_224.*own way"):
        build_backbone("deit_tiny_distilled_patch16_224", "none", aux_layer=-3, output_stride=16)
