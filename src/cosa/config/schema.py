"""The configuration schema. Defaults are the released VOC recipe (docs/method.md).

Every choice a run makes is a key here, so a run directory's ``config.yaml`` describes it
completely. The comment above or beside each key documents it; ``cosa config show`` prints them
beside the values a run would use (cosa.config.annotated). Presets (``presets/*.yaml``) and the
``paper`` recipe (``recipes/paper.yaml``) only change these defaults.

Values that reproduce the released code and that no run should change are class constants
(``ClassVar``): the code reads them like keys, a config cannot set them. Each section states the
rules its values follow (``rules``); cosa.config.load refuses a value that breaks one, naming the
key and what it takes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field, fields, is_dataclass
from typing import ClassVar

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
# model.pretrained values that fit every backbone: timm's own weights of it, or none (random).
# A file (or pkg:) holds the weights of one backbone.
WEIGHTS_OF_ANY_BACKBONE = ("hub", "none")
# The paper's techniques: sections of MethodConfig, each with its own `enabled` switch. Only the
# pseudo-label recipes read them; the others refuse them switched on (config.load.validate).
TECHNIQUES = ("threshold_search", "raw", "contrastive")

# One rule of a section: whether its values follow it, the key it is about (within the section;
# "" for the section as a whole) and what that key takes.
Rule = tuple[bool, str, str]


def is_device_name(name: str) -> bool:
    """Whether ``name`` is a device cosa runs on: ``train.device`` and every ``--device``.

    torch accepts more (``cpu:1``, ``mps``, ``meta``), which would be ignored or fail deep inside.
    """
    return _DEVICE.fullmatch(name) is not None


def _positive_scales(scales: list[float]) -> bool:
    return len(scales) > 0 and min(scales) > 0


@dataclass
class DataConfig:
    """The dataset and the training views made from it."""

    root: str | None = None  # the dataset folder (VOC, COCO or folder layout); --data sets it
    train_split: str = "train_aug"  # the split trained on
    val_split: str = "val"  # the split the evaluations during training score
    crop_size: int = 448  # side of the square training crop, px
    # Each training image is rescaled by a random ratio in [min, max] before it is cropped.
    scale_range: list[float] = field(default_factory=lambda: [0.5, 2.0])
    blur_probability: float = 0.5  # probability of the weak view's Gaussian blur
    num_workers: int = 4  # data-loading processes per training process (0: none)
    # When a run starts, measure the training split (image and object sizes, number of images) and
    # set what follows from them (cosa.config.scaling: crop, output stride, evaluation size, run
    # length, warm-ups, EMA, L_reg) above the preset and recipe; the user's file and overrides win.
    scale_to_data: bool = False

    def rules(self) -> list[Rule]:
        return [
            (self.crop_size >= 16, "crop_size", "must be at least 16"),
            (
                len(self.scale_range) == 2 and 0 < self.scale_range[0] <= self.scale_range[1],
                "scale_range",
                "must be [min, max] with 0 < min <= max",
            ),
            (0.0 <= self.blur_probability <= 1.0, "blur_probability", "must be in [0, 1]"),
            (self.num_workers >= 0, "num_workers", "must be >= 0"),
        ]


@dataclass
class ModelConfig:
    """The network: a backbone, two classifiers and a LargeFOV decoder (docs/method.md)."""

    # A timm model name, ViT or CNN (docs/usage.md lists those tested).
    backbone: str = "vit_base_patch16_224.orig_in21k_ft_in1k"
    # "hub" (timm's weights from the Hugging Face Hub: the local cache, else a download), "none",
    # a file path, or "pkg:MODULE/PATH" for a weights file shipped inside an installed Python package.
    pretrained: str = "hub"
    # Block (ViT) or feature stage (CNN) whose output is the auxiliary feature map.
    aux_layer: int = -3
    # CNN backbones only: dilate the last stages to keep this stride.
    output_stride: int = 16
    decoder_channels: int = 512  # channels of the decoder's two 3×3 convolutions
    decoder_dilation: int = 5  # dilation of those convolutions

    def rules(self) -> list[Rule]:
        pretrained = self.pretrained
        return [
            (
                pretrained in WEIGHTS_OF_ANY_BACKBONE or pretrained.lower() not in WEIGHTS_OF_ANY_BACKBONE,
                "pretrained",
                f"write {pretrained.lower()} in lower case ({' or '.join(WEIGHTS_OF_ANY_BACKBONE)}, else a file)",
            ),
            (self.output_stride in (8, 16, 32), "output_stride", "must be 8, 16 or 32"),
            (self.decoder_channels > 0, "decoder_channels", "must be positive"),
            (self.decoder_dilation >= 1, "decoder_dilation", "must be >= 1"),
        ]


@dataclass
class Thresholds:
    """The thresholds of one CAM's pseudo-label (CPL)."""

    high: float  # δ_h: a pixel whose strongest class map is above this takes that class
    low: float  # δ_l: below this it is background; between δ_l and δ_h it is ignored

    def rules(self) -> list[Rule]:
        return [(0.0 <= self.low < self.high <= 1.0, "", "needs 0 <= low < high <= 1")]


@dataclass
class RegularizerConfig:
    """L_reg, the dense-energy (CRF) loss on the online network's segmentation."""

    sigma_rgb: float = 15.0  # σ_rgb: the kernel's colour bandwidth, in 0–255 units
    # σ_xy: the kernel's position bandwidth, in crop pixels; the loss runs at ``scale``
    # resolution, where it becomes sigma_xy·scale.
    sigma_xy: float = 100.0
    scale: float = 0.5  # the loss's resolution, as a share of the crop's
    # λ_e, for the released permutohedral lattice's sums (about 0.6 of the exact Gaussian's), the
    # one filter L_reg uses (method/dense_energy.py).
    energy_weight: float = 1e-7

    def rules(self) -> list[Rule]:
        return [
            (0 < self.scale <= 1, "scale", "must be in (0, 1]"),
            (self.sigma_rgb > 0, "sigma_rgb", "must be positive"),
            (self.sigma_xy > 0, "sigma_xy", "must be positive"),
            (self.energy_weight >= 0, "energy_weight", "must be >= 0"),
        ]


@dataclass
class ThresholdSearchConfig:
    """Dynamic threshold search (method/thresholds.py): δ_h and δ_l follow the assignment
    network's confidences during training."""

    # Search the thresholds, starting from method.cam_thresholds and method.aux_cam_thresholds.
    enabled: bool = False
    history: int = 100  # the ring buffer holds the last history × (global batch) images
    momentum: float = 0.99  # δ ← momentum·δ + (1 − momentum)·δ*

    # The released search's internals (docs/method.md): the confidence maps enter the buffer
    # downscaled ×16, values at or below min_confidence are left out of the fit, and EM stops
    # as scikit-learn's GaussianMixture does.
    downscale: ClassVar[int] = 16
    min_confidence: ClassVar[float] = 0.05
    tolerance: ClassVar[float] = 1e-3
    max_em_steps: ClassVar[int] = 100

    def rules(self) -> list[Rule]:
        return [
            (self.history >= 1, "history", "must be >= 1"),
            (0.0 <= self.momentum < 1.0, "momentum", "must be in [0, 1)"),
        ]


@dataclass
class RawConfig:
    """Reliability-based adaptive weighting of the CPL, a reconstruction (method/pseudo_labels.py).

    Pixels between δ_l and δ_h stay ignore, as in the CPL; RAW weights the labelled ones by how
    clearly one choice dominates. Labelling the band too shrank objects (docs/method.md).
    """

    enabled: bool = False  # weight the CPL's labelled pixels by their reliability
    temperature: float = 0.1  # τ_r
    power: float = 1.0  # β

    def rules(self) -> list[Rule]:
        return [
            (self.temperature > 0, "temperature", "must be positive"),
            (self.power > 0, "power", "must be positive"),
        ]


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

    enabled: bool = False  # add L_csc to the pseudo-label losses
    weight: float = 0.3  # λ_csc
    temperature: float = 0.3  # τ_c
    spl_confidence: float = 0.5  # hard SPL: ignore where max Q is below this
    # L_csc is off (weight 0) up to this iteration; None: the other pseudo-label losses' warm-up,
    # method.loss_warmup_iters. L_csc learns from the SPL, which is poor until the segmentation
    # has trained for a while: a later start (the demo preset's) lets it settle first.
    warmup_iters: int | None = None

    def rules(self) -> list[Rule]:
        return [
            (self.temperature > 0, "temperature", "must be positive"),
            (0.0 <= self.spl_confidence <= 1.0, "spl_confidence", "must be in [0, 1]"),
            (self.weight >= 0, "weight", "must be >= 0"),
            (
                self.warmup_iters is None or self.warmup_iters >= 0,
                "warmup_iters",
                "must be >= 0 (or null: method.loss_warmup_iters)",
            ),
        ]


@dataclass
class MethodConfig:
    """What is trained: the pseudo-labels, the losses and their weights (docs/method.md).

    The paper's three techniques (docs/method.md), threshold_search, raw and contrastive, are off in
    ``release`` and all on in ``paper``.
    """

    # release: the authors' released code (these defaults). paper: release plus the paper's three
    # techniques (recipes/paper.yaml). cam-only: the classification losses alone; masks are the
    # thresholded CAMs. supervised: the network trained on ground-truth masks, the upper bound.
    recipe: str = "release"
    # The assignment network's EMA momentum m: ξ ← m·ξ + (1 − m)·θ after each step.
    ema_momentum: float = 0.9994
    # Scales of the assignment network's pass on the weak view, each with its flip.
    assignment_scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5])
    # The final CAM's CPL thresholds. Theirs and the auxiliary CAM's are those of the run behind
    # the published VOC result (its logged arguments).
    cam_thresholds: Thresholds = field(default_factory=lambda: Thresholds(high=0.70, low=0.20))
    # The auxiliary CAM's CPL thresholds.
    aux_cam_thresholds: Thresholds = field(default_factory=lambda: Thresholds(high=0.70, low=0.25))
    # The released code builds the auxiliary CAM from the last assignment scale only.
    aux_cam_last_scale_only: bool = True
    # α of L_c2s: the foreground pixels' mean cross-entropy weighs α, the background's 1 − α.
    background_balance: float = 0.5
    spl_temperature: float = 0.01  # τ of the SPL, Q = softmax(Ŝ'/τ)
    # The pseudo-label losses (L_c2s, L_s2c, L_reg, L_csc) weigh 0 up to this iteration.
    loss_warmup_iters: int = 6000
    c2s_weight: float = 0.1  # weight of L_c2s in the total loss
    s2c_weight: float = 0.05  # weight of L_s2c
    reg_weight: float = 0.05  # weight of L_reg
    # `supervised` recipe: weight of the cross-entropy on ground-truth masks.
    supervised_weight: float = 1.0
    regularizer: RegularizerConfig = field(default_factory=RegularizerConfig)
    threshold_search: ThresholdSearchConfig = field(default_factory=ThresholdSearchConfig)
    raw: RawConfig = field(default_factory=RawConfig)
    contrastive: ContrastiveConfig = field(default_factory=ContrastiveConfig)

    def rules(self) -> list[Rule]:
        return [
            (self.recipe in RECIPE_NAMES, "recipe", f"must be one of {', '.join(RECIPE_NAMES)}"),
            (0.0 <= self.ema_momentum < 1.0, "ema_momentum", "must be in [0, 1)"),
            (
                _positive_scales(self.assignment_scales),
                "assignment_scales",
                "must be a non-empty list of positive scales",
            ),
            (0.0 <= self.background_balance <= 1.0, "background_balance", "must be in [0, 1]"),
            (self.spl_temperature > 0, "spl_temperature", "must be positive"),
            (self.loss_warmup_iters >= 0, "loss_warmup_iters", "must be >= 0"),
            (self.c2s_weight >= 0, "c2s_weight", "must be >= 0"),
            (self.s2c_weight >= 0, "s2c_weight", "must be >= 0"),
            (self.reg_weight >= 0, "reg_weight", "must be >= 0"),
            (self.supervised_weight >= 0, "supervised_weight", "must be >= 0"),
        ]


@dataclass
class OptimConfig:
    """AdamW, and its learning rate: a linear warm-up, then a polynomial decay (engine/schedule.py)."""

    lr: float = 6e-5  # the backbone's learning rate
    weight_decay: float = 0.01  # AdamW's decoupled weight decay
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])  # AdamW's (β1, β2)
    # The classifiers' and the decoder's learning rate, as a multiple of lr.
    head_lr_multiplier: float = 10.0
    warmup_iters: int = 1500  # iterations of the linear warm-up
    power: float = 0.9  # after the warm-up the rate decays as (1 − iteration/train.iterations)^power

    # The released warm-up starts at this share of the learning rate.
    warmup_ratio: ClassVar[float] = 1e-6

    def rules(self) -> list[Rule]:
        return [
            (self.lr > 0, "lr", "must be positive"),
            (
                len(self.betas) == 2 and all(0 <= beta < 1 for beta in self.betas),
                "betas",
                "must be two numbers in [0, 1)",
            ),
            (self.weight_decay >= 0, "weight_decay", "must be >= 0"),
            (self.head_lr_multiplier > 0, "head_lr_multiplier", "must be positive"),
            (self.warmup_iters >= 0, "warmup_iters", "must be >= 0"),
        ]


@dataclass
class TrainConfig:
    """The training run: its length, batch, precision, device, logs and checkpoints."""

    iterations: int = 32000  # optimiser steps
    # Images per optimiser step over all processes; each of N processes takes batch_size / N.
    batch_size: int = 4
    seed: int = 0  # the initial weights and every random draw of the views follow from it
    # Autocast for the online network's forward and losses: none, bf16 or fp16 (docs/benchmarks.md
    # measures them).
    amp: str = "none"
    assignment_amp: str = "same"  # autocast for the assignment network's no-grad pass; same: as amp
    device: str = "auto"  # auto (a GPU when there is one), cpu, cuda or cuda:N
    log_every: int = 50  # log the losses every this many iterations
    eval_every: int = 4000  # evaluate on data.val_split every this many iterations, and at the last
    checkpoint_every: int = 1000  # save checkpoints/last.pt every this many iterations, and at the last
    # Score the CAM pseudo-labels against the training masks when the split has them (logged).
    monitor_cpl: bool = True
    # A step with a non-finite loss or gradient never reaches the networks: ``stop`` saves the
    # state before it with its batch (RUN/nonfinite/) and ends the run; ``skip`` drops the step.
    nonfinite: str = "stop"
    # Deterministic kernels only (torch.use_deterministic_algorithms): bit-identical runs per seed.
    deterministic: bool = False

    def rules(self) -> list[Rule]:
        return [
            (self.iterations > 0, "iterations", "must be positive"),
            (self.batch_size > 0, "batch_size", "must be positive"),
            (self.amp in AMP_MODES, "amp", f"must be one of {', '.join(AMP_MODES)}"),
            (
                self.assignment_amp in ("same", *AMP_MODES),
                "assignment_amp",
                f"must be one of same, {', '.join(AMP_MODES)}",
            ),
            (self.nonfinite in NONFINITE_MODES, "nonfinite", f"must be one of {', '.join(NONFINITE_MODES)}"),
            (0 <= self.seed <= MAX_SEED, "seed", f"must be in 0..{MAX_SEED}"),
            (is_device_name(self.device), "device", f"must be {DEVICE_NAMES}"),
            (self.log_every > 0, "log_every", "must be positive"),
            (self.eval_every > 0, "eval_every", "must be positive"),
            (self.checkpoint_every > 0, "checkpoint_every", "must be positive"),
        ]


@dataclass
class CrfConfig:
    """The dense CRF of ``--crf`` and eval.crf, with the released code's parameters."""

    iterations: int = 1  # mean-field iterations
    gaussian_sxy: float = 1.0  # the smoothness kernel's position bandwidth, px
    gaussian_compat: float = 1.0  # the smoothness kernel's weight
    bilateral_sxy: float = 121.0  # the appearance kernel's position bandwidth, px
    bilateral_srgb: float = 5.0  # the appearance kernel's colour bandwidth, in 0–255 units
    bilateral_compat: float = 4.0  # the appearance kernel's weight

    def rules(self) -> list[Rule]:
        return [(self.iterations >= 1, "iterations", "must be >= 1")]


@dataclass
class EvalConfig:
    """Evaluation: during training, by cosa evaluate and by cosa predict."""

    size: int = 448  # each image is resized to size² before the scales apply
    # Scales of the multi-scale inference, relative to size; their logits are averaged.
    scales: list[float] = field(default_factory=lambda: [1.0, 0.5, 1.5, 0.75, 1.25])
    flip: bool = True  # add each scale's horizontal flip
    # Autocast for the network's passes (none, bf16, fp16); the labels are taken in fp32 either
    # way. docs/benchmarks.md measures bf16 against fp32 on a GPU.
    amp: str = "none"
    crf: bool = False  # refine the masks with the dense CRF of crf_params
    crf_params: CrfConfig = field(default_factory=CrfConfig)
    # CAMs: background where the strongest present-class CAM is at most this value.
    cam_threshold: float = 0.5
    batch_size: int = 4  # images per forward pass
    # Periodic evaluation during training may use the first N validation images only.
    max_images: int | None = None

    def rules(self) -> list[Rule]:
        return [
            (self.size >= MIN_EVAL_SIZE, "size", f"must be at least {MIN_EVAL_SIZE}"),
            (self.amp in AMP_MODES, "amp", f"must be one of {', '.join(AMP_MODES)}"),
            (_positive_scales(self.scales), "scales", "must be a non-empty list of positive scales"),
            (0.0 <= self.cam_threshold <= 1.0, "cam_threshold", "must be in [0, 1]"),
            (self.batch_size > 0, "batch_size", "must be positive"),
            (self.max_images is None or self.max_images > 0, "max_images", "must be positive or null"),
        ]


@dataclass
class Config:
    """A run's configuration."""

    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    method: MethodConfig = field(default_factory=MethodConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)


def broken_rule(section: object, prefix: str = "") -> tuple[str, str] | None:
    """The first rule that ``section`` or one of its sections breaks: (its dotted key, what the
    key takes); None when every value follows its rules."""
    own_rules: list[Rule] = section.rules() if hasattr(section, "rules") else []
    for follows, key, takes in own_rules:
        if not follows:
            return f"{prefix}{key}" if key else prefix.rstrip("."), takes
    for item in fields(section):
        value = getattr(section, item.name)
        if is_dataclass(value) and (found := broken_rule(value, f"{prefix}{item.name}.")):
            return found
    return None
