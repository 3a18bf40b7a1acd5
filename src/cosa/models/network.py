"""The CoSA network: backbone, classifiers W and W^a, and the LargeFOV decoder.

Module names follow the released checkpoints (``encoder``, ``classifier``, ``aux_classifier``,
``decoder.conv6/7/8``) so that importing them is a renaming of nothing but the encoder wrapper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from cosa.config.schema import ModelConfig
from cosa.models.backbone import build_backbone


@dataclass
class NetworkOutput:
    cam: torch.Tensor  # B×C×h×w CAM logits A = W ∗ F (no ReLU)
    aux_cam: torch.Tensor  # B×C×h'×w' auxiliary CAM logits A^a
    logits: torch.Tensor  # B×C classification logits z = W · GMP(F)
    aux_logits: torch.Tensor  # B×C z^a
    seg: torch.Tensor  # B×(C+1)×h×w segmentation logits
    features: torch.Tensor | None = None  # B×D×h×w final feature map F (L_csc reads W ∗ sg(F))


class LargeFOV(nn.Module):
    """conv3×3 (dilated) → ReLU → conv3×3 (dilated) → ReLU → conv1×1; no biases, no norms.

    The convolutions keep PyTorch's default initialisation, as released (the released LargeFOV
    has a Kaiming initialiser that is never called): the initial segmentation logits are small
    and the first L_c2s is about ln(C + 1).
    """

    def __init__(self, in_channels: int, out_channels: int, width: int = 512, dilation: int = 5) -> None:
        super().__init__()
        self.conv6 = nn.Conv2d(in_channels, width, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv7 = nn.Conv2d(width, width, 3, padding=dilation, dilation=dilation, bias=False)
        self.conv8 = nn.Conv2d(width, out_channels, 1, bias=False)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        hidden = torch.relu(self.conv6(features))
        hidden = torch.relu(self.conv7(hidden))
        return self.conv8(hidden)


class CoSANet(nn.Module):
    def __init__(
        self, encoder: nn.Module, num_classes: int, decoder_channels: int = 512, decoder_dilation: int = 5
    ) -> None:
        super().__init__()
        self.encoder = encoder
        self.num_classes = num_classes
        self.classifier = nn.Conv2d(encoder.channels, num_classes, 1, bias=False)
        self.aux_classifier = nn.Conv2d(encoder.aux_channels, num_classes, 1, bias=False)
        self.decoder = LargeFOV(encoder.channels, num_classes + 1, decoder_channels, decoder_dilation)

    def forward(self, images: torch.Tensor) -> NetworkOutput:
        features, aux_features = self.encoder(images)
        return NetworkOutput(
            cam=self.classifier(features),
            aux_cam=self.aux_classifier(aux_features),
            logits=self.classifier(features.amax(dim=(2, 3), keepdim=True)).flatten(1),
            aux_logits=self.aux_classifier(aux_features.amax(dim=(2, 3), keepdim=True)).flatten(1),
            seg=self.decoder(features),
            features=features,
        )

    def parameter_groups(self) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """(backbone parameters, head parameters); the heads train at a higher learning rate."""
        backbone = [p for p in self.encoder.parameters() if p.requires_grad]
        heads = [p for name, p in self.named_parameters() if not name.startswith("encoder.") and p.requires_grad]
        return backbone, heads


def build_network(cfg: ModelConfig, num_classes: int, pretrained: bool = True) -> CoSANet:
    """The network of ``cfg``; ``pretrained=False`` skips weight loading (weights come from a checkpoint)."""
    encoder = build_backbone(cfg.backbone, cfg.pretrained if pretrained else "none", cfg.aux_layer, cfg.output_stride)
    return CoSANet(encoder, num_classes, cfg.decoder_channels, cfg.decoder_dilation)
