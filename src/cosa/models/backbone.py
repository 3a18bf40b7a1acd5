"""Backbones from timm that give a final and an auxiliary feature map.

- Vision transformers (timm's ``VisionTransformer``: the original ViT, CLIP, DINOv2 with
  registers, DeiT-III, SigLIP, ...): patch tokens reshaped to D×h×w, h and w the input size over
  the model's patch size; the final map is the last block after the final norm, the auxiliary
  map the output of block ``aux_layer`` without normalisation. The positional embedding is
  resampled bicubically to the input grid and frozen. Parameter names are timm's, as in the
  released checkpoints' ``encoder.*``.
- Any other timm model with ``features_only`` (CNNs): the last feature stage is the final map,
  stage ``aux_layer`` the auxiliary one, with the last stages dilated to ``output_stride``.
"""

from __future__ import annotations

import timm
import torch
from timm.layers import resample_abs_pos_embed
from timm.models.vision_transformer import VisionTransformer
from torch import nn

from cosa.errors import CosaError
from cosa.models.pretrained import match_state_dict, read_state_dict, resolve_weights_file, with_hub_weights


class ViTBackbone(nn.Module):
    """A timm ``VisionTransformer`` without its pooling and head: the model's patch embedding,
    prefix tokens (class and register tokens, those it has), positional embedding, ``norm_pre``,
    blocks and final norm, under the model's names. Tokens are laid out as the model's
    ``_pos_embed`` lays them out, with the positional embedding resampled as released."""

    def __init__(self, vit: VisionTransformer, aux_layer: int) -> None:
        super().__init__()
        self.patch_embed = vit.patch_embed
        for name in ("cls_token", "reg_token", "pos_embed"):
            self.register_parameter(name, getattr(vit, name))
        self.pos_embed.requires_grad_(False)
        self.norm_pre = vit.norm_pre
        self.blocks = vit.blocks
        self.norm = vit.norm
        self.num_prefix_tokens = vit.num_prefix_tokens
        # How many prefix tokens have an entry of their own in pos_embed: all of them in the
        # original ViT and CLIP, none with no_embed_class (DeiT-III, DINOv2) or no class token (SigLIP).
        self.pos_prefix_tokens = 0 if vit.no_embed_class else vit.num_prefix_tokens
        self.pos_grid = tuple(vit.patch_embed.grid_size)
        self.aux_index = aux_layer % len(vit.blocks)
        self.channels = self.aux_channels = vit.embed_dim
        self.patch_size = tuple(vit.patch_embed.patch_size)
        self.stride = self.patch_size[0]

    def resampled_pos_embed(self, height: int, width: int) -> torch.Tensor:
        # timm's own _pos_embed resamples with antialias=True and cannot be told otherwise; the
        # released bicubic resampling has no antialiasing, which gives other values both when the
        # grid shrinks and, through another cubic kernel, when it grows.
        return resample_abs_pos_embed(
            self.pos_embed,
            new_size=[height, width],
            old_size=list(self.pos_grid),
            num_prefix_tokens=self.pos_prefix_tokens,
            interpolation="bicubic",
            antialias=False,
            align_corners=False,
        )

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        # As the released ViT's patch convolution does, drop the pixels past the last whole patch
        # (at 224 px the evaluation scale 0.75 gives 168 px: ten patches of 16 and 8 pixels).
        height, width = images.shape[-2:]
        images = images[..., : height - height % self.patch_size[0], : width - width % self.patch_size[1]]
        patches = self.patch_embed(images)  # B×h×w×D
        batch, height, width, dim = patches.shape
        patches = patches.reshape(batch, height * width, dim)
        pos_embed = self.resampled_pos_embed(height, width)
        # The layout of the model's _pos_embed, which cannot take the resampled embedding.
        prefix = [token.expand(batch, -1, -1) for token in (self.cls_token, self.reg_token) if token is not None]
        if self.pos_prefix_tokens:
            tokens = torch.cat([*prefix, patches], dim=1) + pos_embed
        else:
            tokens = torch.cat([*prefix, patches + pos_embed], dim=1)
        tokens = self.norm_pre(tokens)
        for index, block in enumerate(self.blocks):
            tokens = block(tokens)
            if index == self.aux_index:
                aux = tokens
        final = self.norm(tokens)

        def to_map(sequence: torch.Tensor) -> torch.Tensor:
            return sequence[:, self.num_prefix_tokens :].transpose(1, 2).reshape(batch, dim, height, width)

        return to_map(final), to_map(aux)


class FeatureStageBackbone(nn.Module):
    def __init__(self, body: nn.Module, aux_layer: int) -> None:
        super().__init__()
        self.body = body
        info = body.feature_info
        self.aux_index = aux_layer % len(info)
        self.channels = info.channels()[-1]
        self.aux_channels = info.channels()[self.aux_index]
        self.stride = info.reduction()[-1]

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        stages = self.body(images)
        return stages[-1], stages[self.aux_index]


# Classification heads in a weights file are not part of a feature extractor.
HEAD_PREFIXES = ("head.", "fc.", "classifier", "_fc.")


def _load_file_into(model: nn.Module, spec: str, name: str) -> None:
    path = resolve_weights_file(spec)
    if path is None:
        return
    state = {k: v for k, v in read_state_dict(path).items() if not k.startswith(HEAD_PREFIXES)}
    reference = {k: v for k, v in model.state_dict().items() if not k.startswith(HEAD_PREFIXES)}
    model.load_state_dict(match_state_dict(state, reference, str(path), name), strict=False)


def build_backbone(name: str, pretrained: str, aux_layer: int, output_stride: int) -> nn.Module:
    """A backbone module with ``channels``, ``aux_channels``, ``stride`` and forward → (final, aux)."""
    try:
        with torch.device("meta"):  # only its type and layout are read: no memory, no initialisation
            probe = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as error:
        raise CosaError(f"model.backbone={name}: {error}") from None

    def create(**options) -> nn.Module:
        """timm's model ``name``, with timm's pretrained weights for ``model.pretrained=hub``."""
        if pretrained != "hub":
            return timm.create_model(name, pretrained=False, **options)
        hub_id = probe.pretrained_cfg.get("hf_hub_id")
        return with_hub_weights(lambda: timm.create_model(name, pretrained=True, **options), name, hub_id)

    if isinstance(probe, VisionTransformer):
        if type(probe)._pos_embed is not VisionTransformer._pos_embed or probe.pos_embed is None:
            raise CosaError(
                f"model.backbone={name}: {type(probe).__name__} lays out its tokens in its own way "
                "(a distillation token, no positional embedding); only the token layouts of "
                "timm's VisionTransformer are supported"
            )
        vit = create(
            num_classes=0,
            dynamic_img_size=True,
            drop_rate=0.0,
            drop_path_rate=0.0,
            attn_drop_rate=0.0,
        )
        _load_file_into(vit, pretrained, name)
        return ViTBackbone(vit, aux_layer)
    full = create(num_classes=0)
    _load_file_into(full, pretrained, name)
    body = timm.create_model(name, pretrained=False, features_only=True, output_stride=output_stride)
    body.load_state_dict({k: v for k, v in full.state_dict().items() if k in body.state_dict()}, strict=True)
    return FeatureStageBackbone(body, aux_layer)
