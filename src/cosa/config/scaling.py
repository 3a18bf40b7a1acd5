"""Settings that follow from the data: image size, object size and the number of images.

The ``own`` preset is these rules applied to its reference dataset (the real-photo benchmark's:
128 px images, objects of about 34 px, 1,500 training images); ``cosa data check`` applies them
to the dataset it reads and prints the overrides. docs/method.md ("Own data") gives the reasons.
"""

from __future__ import annotations

import json

from cosa.config.schema import DataConfig

# The own preset's reference dataset (benchmarks/real_photos.py, tuning seed): median shorter
# side (px), median object √area (px), training images.
REFERENCE_DATASET = (128, 34, 1500)

# The crop: 3/4 of the images' median shorter side, rounded to a multiple of 32, within these
# bounds; evaluation at 1.5× that side, so a stride-16 network's maps are not coarser than needed.
CROP_BOUNDS = (64, 448)
CROP_SHARE, EVAL_SCALE = 0.75, 1.5
# Larger images are trained and evaluated as if their shorter side were this, where the crop
# reaches its bound: the training rescaling (data.scale_range) shrinks them by the same factor as
# the evaluation's resizing, so both see objects at one scale. Evaluating at 1.5× their own side
# instead would need memory in proportion to its square: 4512² for 12-megapixel phone photos,
# 100× the VOC protocol's 448², more than any CPU or GPU here has.
MAX_SHORT_SIDE = CROP_BOUNDS[1] / CROP_SHARE  # 597 px: evaluation at 896
# A CNN's output stride: 16, unless the median object would then span fewer CAM cells than this.
MIN_OBJECT_CELLS = 2
# Passes over the training images, and the share of the run before the pseudo-label losses switch on.
EPOCHS = 8
WARMUP_SHARE = 0.4
# The assignment network's EMA time constant 1 / (1 − momentum), and the learning-rate warm-up,
# as shares of the run: the released 1/(1 − 0.9994) ≈ 1,667 and 1,500 of 32,000 steps.
EMA_SHARE = 1 / 20
LR_WARMUP_SHARE = 1 / 20
# L_reg at the released crop: sigma_xy and the energy weight scale from there (docs/method.md).
RELEASED_CROP, RELEASED_SIGMA_XY, RELEASED_ENERGY_WEIGHT = 448, 100.0, 1e-7
ENERGY_WEIGHT_DAMPING = 10  # the full (448/crop)^4 rescaling collapsed classes at small crops


def _multiple_of_32(side: float) -> int:
    return 32 * max(1, round(side / 32))


def crop_size(short_side: float) -> int:
    low, high = CROP_BOUNDS
    return min(high, max(low, _multiple_of_32(CROP_SHARE * short_side)))


def output_stride(object_side: float | None) -> int:
    """16, or 8 for objects (median √area, px) under MIN_OBJECT_CELLS cells of 16 px."""
    return 8 if object_side is not None and object_side < 16 * MIN_OBJECT_CELLS else 16


def scaled_settings(
    short_side: float, object_side: float | None, num_images: int, batch_size: int = 8, iterations: int | None = None
) -> dict[str, int | float]:
    """``key=value`` settings for a dataset whose images have this median shorter side (px),
    whose objects this median √area (px; None without masks), with ``num_images`` training images.
    Images above MAX_SHORT_SIDE are worked on shrunk to it (``data.scale_range`` is then set).
    ``iterations`` sets the run's length instead of EPOCHS passes; the warm-ups and EMA follow it."""
    shrink = min(1.0, MAX_SHORT_SIDE / short_side)
    short_side *= shrink
    crop = crop_size(short_side)
    if iterations is None:
        iterations = max(100, 50 * round(EPOCHS * num_images / batch_size / 50))
    settings: dict[str, int | float | list[float]] = {
        "data.crop_size": crop,
        "model.output_stride": output_stride(object_side * shrink if object_side is not None else None),
        "eval.size": _multiple_of_32(EVAL_SCALE * short_side),
        "train.iterations": iterations,
        "method.loss_warmup_iters": round(WARMUP_SHARE * iterations),
        "method.ema_momentum": max(0.0, round(1 - 1 / (EMA_SHARE * iterations), 4)),  # 0 for runs under 20 steps
        "optim.warmup_iters": round(LR_WARMUP_SHARE * iterations),
        "method.regularizer.sigma_xy": round(RELEASED_SIGMA_XY * crop / RELEASED_CROP, 1),
        "method.regularizer.energy_weight": float(
            f"{RELEASED_ENERGY_WEIGHT * (RELEASED_CROP / crop) ** 4 / ENERGY_WEIGHT_DAMPING:.2g}"
        ),
    }
    if object_side is None:  # without masks the object size is unknown: the preset's stride stays
        del settings["model.output_stride"]
    scale_range = [float(f"{bound * shrink:.2g}") for bound in DataConfig().scale_range]
    if scale_range != DataConfig().scale_range:
        settings["data.scale_range"] = scale_range
    return settings


def as_overrides(settings: dict[str, int | float | list[float]]) -> str:
    """The settings as ``key=value`` words for a command line: a list has no spaces (``[0.1,0.4]``)."""
    return " ".join(
        f"{key}={value if isinstance(value, str) else json.dumps(value, separators=(',', ':'))}"
        for key, value in settings.items()
    )
