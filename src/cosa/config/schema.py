"""The configuration schema. Defaults are the released VOC recipe (METHOD.md §1–9).

Every value a run uses lives here, so a run directory's ``config.yaml`` describes it completely.
Presets (``presets/*.yaml``) and recipes (``recipes/*.yaml``) only override these defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import List, Optional

RECIPE_NAMES = ("release", "paper", "cam-only", "supervised")
RAW_MODES = ("all", "confident")
# Recipes whose segmentation learns from the assignment network's pseudo-labels.
PSEUDO_LABEL_RECIPES = ("release", "paper")
AMP_MODES = ("none", "bf16", "fp16")
NONFINITE_MODES = ("stop", "skip")
DENSE_FILTERS = ("released", "gaussian")
CONTRASTIVE_SPACES = ("cam", "aux_cam", "feature")
# The paper's techniques: sections of MethodConfig, each with its own `enabled` switch.
# Seeds feed numpy's generators, which take 0..2**32-1 (a negative seed is a traceback there).
MAX_SEED = 2**32 - 1
# The smallest network input side for evaluation and prediction (eval.size, cosa predict --size).
MIN_EVAL_SIZE = 16
DEVICE_NAMES = "auto, cpu, cuda or cuda:N"
_DEVICE = re.compile(r"auto|cpu|cuda(:[0-9]+)?")


def is_device_name(name: str) -> bool:
    """Whether ``name`` is a device cosa runs on: ``train.device`` and every ``--device``.

    torch accepts more (``cpu:1``, ``mps``, ``meta``), which would be ignored or fail deep inside.
    """
    return _DEVICE.fullmatch(name) is not None


TECHNIQUES = ("threshold_search", "raw", "contrastive")


@dataclass
class DataConfig:
    root: Optional[str] = None
    train_split: str = "train_aug"
    val_split: str = "val"
    crop_size: int = 448
    scale_range: List[float] = field(default_factory=lambda: [0.5, 2.0])
    blur_probability: float = 0.5
    num_workers: int = 4


@dataclass
class ModelConfig:
    backbone: str = "vit_base_patch16_224.orig_in21k_ft_in1k"
    # "hub" (timm download, needs the network), "none", a file path, or "pkg:MODULE/PATH" for a
    # weights file shipped inside an installed Python package.
    pretrained: str = "hub"
    # Block (ViT) or feature stage (CNN) whose output is the auxiliary feature map.
    aux_layer: int = -3
    # CNN backbones only: dilate the last stages to keep this stride.
    output_stride: int = 16
    # CNN backbones only: keep BatchNorm statistics frozen (eval mode) in the online network.
    freeze_batchnorm: bool = False
    decoder_channels: int = 512
    decoder_dilation: int = 5


@dataclass
class Thresholds:
    high: float
    low: float


@dataclass
class RegularizerConfig:
    sigma_rgb: float = 15.0
    # In crop pixels; the loss runs at ``scale`` resolution where it becomes sigma_xy·scale.
    sigma_xy: float = 100.0
    scale: float = 0.5
    energy_weight: float = 1e-7
    # The filter Σ_j K(i,j)·v(j): ``released``, the released permutohedral lattice (its sums about
    # 0.6 of the Gaussian's, the scale the released energy_weight was chosen for), or ``gaussian``,
    # the exact Gaussian sums (L_reg about 1.6× larger). docs/method.md.
    filter: str = "released"


@dataclass
class ThresholdSearchConfig:
    """Dynamic threshold search (METHOD.md §7.1)."""

    enabled: bool = False
    history: int = 100  # the ring buffer holds the last history × (global batch) images
    downscale: int = 16
    min_confidence: float = 0.05  # buffer values at or below this are left out of the fit
    momentum: float = 0.99  # δ ← momentum·δ + (1 − momentum)·δ*
    tolerance: float = 1e-3
    max_em_steps: int = 100


@dataclass
class RawConfig:
    """Reliability-based adaptive weighting of the CPL (METHOD.md §7.2, a reconstruction)."""

    enabled: bool = False
    # all: every in-box pixel gets a label and a weight (METHOD.md's main form); confident: keep
    # the ignore band and weight the labelled pixels. confident is the default because "all"
    # shrank objects on the tuning data (docs/method.md).
    mode: str = "confident"
    temperature: float = 0.1  # τ_r
    power: float = 1.0  # β


@dataclass
class ContrastiveConfig:
    """Contrastive separation in CAMs, L_csc (METHOD.md §7.3, a reconstruction)."""

    enabled: bool = False
    # cam: each class CAM contrasted against its hardest background pixels (METHOD.md §7.3's
    # formula); aux_cam: the same on the auxiliary CAM A^a, whose layer the decoder does not read;
    # feature: pixel features pulled to their SPL class prototype, pushed from the
    # background's. The default, the CAM form with detached class pixels and features, τ_c 0.3
    # and λ_csc 0.3 (METHOD.md: 0.1 and 0.1), lowered coexistence on the tuning data without
    # costing the segmentation (docs/method.md).
    space: str = "cam"
    weight: float = 0.3  # λ_csc
    temperature: float = 0.3  # τ_c
    spl_confidence: float = 0.5  # hard SPL: ignore where max Q is below this
    # CAM spaces only: the class pixels' scores are constants, so L_csc only pushes the hardest
    # background down instead of also lifting the class over its SPL region (docs/method.md).
    detach_positives: bool = True
    # CAM spaces only, a trial: each class map's maximum, which M̂ divides by, is a constant, so
    # L_csc cannot lower the background by raising the class's peak. It then stopped lowering
    # coexistence (docs/method.md).
    detach_normalizer: bool = False
    # space=cam only: L_csc reaches the classifier W alone, not the encoder features that the
    # segmentation decoder also reads (through them it cost the segmentation mIoU).
    detach_features: bool = True
    # CAM spaces only: background within this many CAM cells of a class's pixels is not one of its
    # negatives, so L_csc does not push the object's own border down (0: every background pixel).
    negative_margin: int = 0
    # L_csc is off (weight 0) up to this iteration; None: the other pseudo-label losses' warm-up,
    # method.loss_warmup_iters. A later start lets the SPL it learns from settle first.
    warmup_iters: Optional[int] = None


@dataclass
class MethodConfig:
    recipe: str = "release"
    ema_momentum: float = 0.9994
    assignment_scales: List[float] = field(default_factory=lambda: [1.0, 0.5, 1.5])
    # (δ_h, δ_l) of the run behind the published VOC result (its logged arguments).
    cam_thresholds: Thresholds = field(default_factory=lambda: Thresholds(high=0.70, low=0.20))
    aux_cam_thresholds: Thresholds = field(default_factory=lambda: Thresholds(high=0.70, low=0.25))
    # The released code builds the auxiliary CAM from the last assignment scale only.
    aux_cam_last_scale_only: bool = True
    background_balance: float = 0.5
    spl_temperature: float = 0.01
    loss_warmup_iters: int = 6000
    c2s_weight: float = 0.1
    s2c_weight: float = 0.05
    reg_weight: float = 0.05
    # `supervised` recipe: weight of the cross-entropy on ground-truth masks.
    supervised_weight: float = 1.0
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    # The paper's three techniques (§7): off in `release`, all on in `paper`.
    threshold_search: ThresholdSearchConfig = field(default_factory=ThresholdSearchConfig)
    raw: RawConfig = field(default_factory=RawConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)


@dataclass
class OptimConfig:
    lr: float = 6e-5
    weight_decay: float = 0.01
    betas: List[float] = field(default_factory=lambda: [0.9, 0.999])
    head_lr_multiplier: float = 10.0
    warmup_iters: int = 1500
    warmup_ratio: float = 1e-6
    power: float = 0.9


@dataclass
class TrainConfig:
    iterations: int = 32000
    # Images per optimiser step over all processes; each of N processes takes batch_size / N.
    batch_size: int = 4
    seed: int = 0
    # Autocast for the online network's forward and losses (none, bf16, fp16), and separately for
    # the assignment network's no-grad pass ("same": as ``amp``). docs/benchmarks.md measures them.
    amp: str = "none"
    assignment_amp: str = "same"
    # Channels-last memory layout for the networks and image batches (helps some CNNs on GPU).
    channels_last: bool = False
    # torch.compile the backbones of both networks (in place; the first steps compile).
    compile: bool = False
    device: str = "auto"
    log_every: int = 50
    eval_every: int = 4000
    checkpoint_every: int = 1000
    # Score the CAM pseudo-labels against the training masks when the split has them (logged).
    monitor_cpl: bool = True
    # A step with a non-finite loss or gradient never reaches the networks: ``stop`` saves the
    # state before it with its batch (RUN/nonfinite/) and ends the run; ``skip`` drops the step.
    nonfinite: str = "stop"
    # Deterministic kernels only (torch.use_deterministic_algorithms): bit-identical runs per seed.
    deterministic: bool = False


@dataclass
class CrfConfig:
    iterations: int = 1
    gaussian_sxy: float = 1.0
    gaussian_compat: float = 1.0
    bilateral_sxy: float = 121.0
    bilateral_srgb: float = 5.0
    bilateral_compat: float = 4.0


@dataclass
class EvalConfig:
    size: int = 448
    scales: List[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 0.75, 1.25])
    flip: bool = True
    crf: bool = False
    crf_params: CrfConfig = field(default_factory=CrfConfig)
    # CAMs: background where the strongest present-class CAM is at most this value.
    cam_threshold: float = 0.5
    batch_size: int = 4
    # Periodic evaluation during training may use the first N validation images only.
    max_images: Optional[int] = None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
