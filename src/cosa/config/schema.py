"""The configuration schema. Defaults are the released VOC recipe (docs/method.md).

Every value a run uses lives here, so a run directory's ``config.yaml`` describes it completely.
Presets (``presets/*.yaml``) and recipes (``recipes/*.yaml``) only override these defaults.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

RECIPE_NAMES = ("release", "paper", "cam-only", "supervised")
# Recipes whose segmentation learns from the assignment network's pseudo-labels.
PSEUDO_LABEL_RECIPES = ("release", "paper")
AMP_MODES = ("none", "bf16", "fp16")
NONFINITE_MODES = ("stop", "skip")
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


# The paper's techniques: sections of MethodConfig, each with its own `enabled` switch. Only the
# pseudo-label recipes read them; the others refuse them switched on (config.load.validate).
TECHNIQUES = ("threshold_search", "raw", "contrastive")


@dataclass
class DataConfig:
    root: str | None = None
    train_split: str = "train_aug"
    val_split: str = "val"
    crop_size: int = 448
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    blur_probability: float = 0.5
    num_workers: int = 4
    # When a run starts, measure the training split (image and object sizes, number of images) and
    # set what follows from them (cosa.config.scaling: crop, output stride, evaluation size, run
    # length, warm-ups, EMA, L_reg) above the preset and recipe; the user's file and overrides win.
    scale_to_data: bool = False


# model.pretrained values that fit every backbone: timm's own weights of it, or none (random).
# A file (or pkg:) holds the weights of one backbone.
WEIGHTS_OF_ANY_BACKBONE = ("hub", "none")


@dataclass
class ModelConfig:
    backbone: str = "vit_base_patch16_224.orig_in21k_ft_in1k"
    # "hub" (timm's weights from the Hugging Face Hub: the local cache, else a download), "none",
    # a file path, or "pkg:MODULE/PATH" for a weights file shipped inside an installed Python package.
    pretrained: str = "hub"
    # Block (ViT) or feature stage (CNN) whose output is the auxiliary feature map.
    aux_layer: int = -3
    # CNN backbones only: dilate the last stages to keep this stride.
    output_stride: int = 16
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
    # For the released permutohedral lattice's sums (about 0.6 of the exact Gaussian's), the one
    # filter L_reg uses (method/dense_energy.py).
    energy_weight: float = 1e-7


@dataclass
class ThresholdSearchConfig:
    """Dynamic threshold search."""

    enabled: bool = False
    history: int = 100  # the ring buffer holds the last history × (global batch) images
    downscale: int = 16
    min_confidence: float = 0.05  # buffer values at or below this are left out of the fit
    momentum: float = 0.99  # δ ← momentum·δ + (1 − momentum)·δ*
    tolerance: float = 1e-3
    max_em_steps: int = 100


@dataclass
class RawConfig:
    """Reliability-based adaptive weighting of the CPL, a reconstruction (method/pseudo_labels.py).

    Pixels between δ_l and δ_h stay ignore, as in the CPL; RAW weights the labelled ones by how
    clearly one choice dominates. Labelling the band too shrank objects (docs/method.md).
    """

    enabled: bool = False
    temperature: float = 0.1  # τ_r
    power: float = 1.0  # β


@dataclass
class ContrastiveConfig:
    """Contrastive separation in CAMs, L_csc, a reconstruction (method/losses.py).

    Each present class's CAM is contrasted against its hardest background pixels, every
    background pixel of the hard SPL a candidate. It reads W ∗ sg(F): L_csc trains the classifier
    W alone, not the encoder features the segmentation decoder also reads (through them it cost
    the segmentation mIoU). The class pixels' scores are constants, so it pushes the background
    down instead of also lifting the class over its SPL region; each class map's maximum, which
    M̂ divides by, keeps its gradient (held constant, L_csc stopped lowering coexistence).
    """

    enabled: bool = False
    weight: float = 0.3  # λ_csc
    temperature: float = 0.3  # τ_c
    spl_confidence: float = 0.5  # hard SPL: ignore where max Q is below this
    # L_csc is off (weight 0) up to this iteration; None: the other pseudo-label losses' warm-up,
    # method.loss_warmup_iters. L_csc learns from the SPL, which is poor until the segmentation
    # has trained for a while: a later start (the demo preset's) lets it settle first.
    warmup_iters: int | None = None


@dataclass
class MethodConfig:
    recipe: str = "release"
    ema_momentum: float = 0.9994
    assignment_scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5])
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
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
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
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 0.75, 1.25])
    flip: bool = True
    # Autocast for the network's passes (none, bf16, fp16); the labels are taken in fp32 either
    # way. docs/benchmarks.md measures bf16 against fp32 on a GPU.
    amp: str = "none"
    crf: bool = False
    crf_params: CrfConfig = field(default_factory=CrfConfig)
    # CAMs: background where the strongest present-class CAM is at most this value.
    cam_threshold: float = 0.5
    batch_size: int = 4
    # Periodic evaluation during training may use the first N validation images only.
    max_images: int | None = None


@dataclass
class Config:
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
