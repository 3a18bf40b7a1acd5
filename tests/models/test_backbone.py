"""ViT families through the encoder: its maps are timm's own intermediate outputs.

Random weights and small inputs. Each family lays out its tokens differently: the original ViT
(class token with its own positional entry), CLIP (``norm_pre``), DINOv2 with registers (patch 14,
four register tokens, ``no_embed_class``), DeiT-III (``no_embed_class``) and SigLIP (no class
token). timm's reference is built for the test's grid with the positional embedding resampled
as released (bicubic, no antialiasing), so that its own ``_pos_embed`` has nothing to resample.
"""

import socket
import time
from pathlib import Path

import pytest
import timm
import torch
from timm.layers import resample_abs_pos_embed

from cosa.config.schema import ModelConfig
from cosa.errors import CosaError
from cosa.models.backbone import build_backbone
from cosa.models.network import build_network
from cosa.models.pretrained import read_state_dict

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


# --- weights: where they come from, and one line when they cannot be had --------------------------

HUB_BACKBONE, HUB_REPO = "mobilenetv2_050", "timm/mobilenetv2_050.lamb_in1k"


@pytest.fixture
def hub_at(monkeypatch, tmp_path):
    """Points huggingface_hub at an empty cache in tmp_path and at ``endpoint``, e.g. a closed port."""
    from huggingface_hub import constants

    def point(endpoint: str) -> Path:
        cache = tmp_path / "hf-cache"
        monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
        monkeypatch.setattr(constants, "ENDPOINT", endpoint)
        template = endpoint + "/{repo_id}/resolve/{revision}/{filename}"
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE", template)
        return cache

    return point


def test_hub_weights_that_cannot_be_fetched_are_one_line_in_seconds(hub_at):
    with socket.socket() as closed:  # a port nothing listens on: every connection is refused at once
        closed.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{closed.getsockname()[1]}"
    cache = hub_at(endpoint)
    started = time.monotonic()
    with pytest.raises(CosaError) as error:
        build_backbone(HUB_BACKBONE, "hub", aux_layer=-2, output_stride=16)
    assert time.monotonic() - started < 20  # timm's retries took about a minute
    message = str(error.value)
    assert message.startswith(
        f"model.pretrained=hub: the weights of {HUB_BACKBONE} are not in the Hugging Face cache ({cache}) "
        f"and {endpoint} cannot be reached: "
    )
    assert message.endswith(
        f"; set model.pretrained=FILE to a downloaded copy of https://huggingface.co/{HUB_REPO}, "
        "or model.pretrained=none for random weights"
    )
    assert "\n" not in message


def test_hub_weights_in_the_cache_load_without_the_network(hub_at):
    from safetensors.torch import save_file

    with socket.socket() as hub:  # a Hub that accepts connections and never answers
        hub.bind(("127.0.0.1", 0))
        hub.listen()
        cache = hub_at(f"http://127.0.0.1:{hub.getsockname()[1]}")
        torch.manual_seed(0)
        weights = timm.create_model(HUB_BACKBONE, pretrained=False).state_dict()
        repo = cache / f"models--{HUB_REPO.replace('/', '--')}"
        commit = "0" * 40
        (repo / "snapshots" / commit).mkdir(parents=True)
        (repo / "refs").mkdir()
        (repo / "refs" / "main").write_text(commit)
        save_file(weights, str(repo / "snapshots" / commit / "model.safetensors"))
        backbone = build_backbone(HUB_BACKBONE, "hub", aux_layer=-2, output_stride=16)
        hub.setblocking(False)
        with pytest.raises(BlockingIOError):  # no connection is waiting: none was made
            hub.accept()
    assert torch.equal(backbone.body.state_dict()["conv_stem.weight"], weights["conv_stem.weight"])


def test_a_backbone_without_hub_weights_is_one_line():
    with pytest.raises(CosaError) as error:
        build_backbone("coatnet_0_224", "hub", aux_layer=-2, output_stride=16)
    assert str(error.value) == (
        "model.pretrained=hub, model.backbone=coatnet_0_224: No pretrained weights exist for coatnet_0_224; set "
        "model.pretrained=FILE to a weights file of coatnet_0_224, or model.pretrained=none for random weights"
    )


def test_weights_of_another_backbone_name_the_backbone_and_what_to_set(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(timm.create_model("resnet18", pretrained=False).state_dict(), path)
    with pytest.raises(CosaError) as error:
        build_backbone(HUB_BACKBONE, str(path), aux_layer=-2, output_stride=16)
    assert str(error.value).startswith(f"{path}: weights do not fit this backbone, model.backbone={HUB_BACKBONE} (")
    assert str(error.value).endswith(
        f"; set model.pretrained to a file of {HUB_BACKBONE}'s weights, hub (timm's) or none (random weights)"
    )


class Pickled:
    """An object a weights file must not hold: torch.load(weights_only=True) refuses it."""


def test_a_refused_weights_file_says_why_in_a_whole_sentence(tmp_path):
    path = tmp_path / "pickled.pth"
    torch.save({"weight": torch.zeros(1), "extra": Pickled()}, path)
    with pytest.raises(CosaError) as error:
        read_state_dict(path)
    # torch's message: a paragraph of advice, bold codes, then the reason; the reason is kept whole.
    assert str(error.value) == (
        f"{path}: cannot read weights (Unsupported global: GLOBAL {__name__}.Pickled was not an allowed global "
        "by default)"
    )
