"""A configuration scaled to its data: with ``data.scale_to_data`` (the ``own`` preset), the
settings that follow from the data (:mod:`cosa.config.scaling`) are measured on the training split
when a run is configured, so that users need not copy what ``cosa data check`` suggests.

The measurement reads the headers and masks of at most ``MEASURED_IMAGES`` images spread evenly
over the split, a second or two for any dataset. The measured settings sit above the preset and
the recipe and below the user's file and overrides: a key the user sets keeps the user's value.
"""

from __future__ import annotations

from collections.abc import Sequence

from PIL import Image, UnidentifiedImageError

from cosa.config.load import keys_set_by_user, load_config
from cosa.config.scaling import as_overrides, scaled_settings
from cosa.config.schema import Config
from cosa.data.io import read_mask
from cosa.data.layouts import DatasetSplit, load_split
from cosa.data.statistics import SplitStatistics
from cosa.errors import CosaError

MEASURED_IMAGES = 400


def measure(split: DatasetSplit, limit: int = MEASURED_IMAGES) -> SplitStatistics:
    """The statistics of up to ``limit`` images spread evenly over ``split``: sizes from the image
    headers, object sizes from the masks that exist. Unreadable files are skipped: the data checks
    that run before training name them."""
    statistics = SplitStatistics(split.class_names)
    count, taken = len(split.samples), min(limit, len(split.samples))
    picked = sorted({round(k * (count - 1) / max(taken - 1, 1)) for k in range(taken)})
    for sample in (split.samples[index] for index in picked):
        try:
            with Image.open(sample.image) as image:
                size = (image.height, image.width)
            mask = read_mask(sample.mask, split.num_classes) if sample.mask is not None else None
        except (OSError, UnidentifiedImageError, CosaError):
            continue
        statistics.add(size, sample.labels, mask if mask is not None and tuple(mask.shape) == size else None)
    return statistics


def load_config_for_data(
    config: str | None,
    recipe: str | None,
    data: str | None,
    overrides: Sequence[str] = (),
    base: Config | None = None,
) -> tuple[Config, str]:
    """:func:`~cosa.config.load.load_config`, with the settings measured on the training split when
    the config asks for them (``data.scale_to_data``) and a preset or file is applied; and a line
    saying what was measured and set ("" when nothing was)."""
    cfg = load_config(config, recipe, data, overrides, base=base)
    if not (cfg.data.scale_to_data and config and cfg.data.root):
        return cfg, ""
    try:
        split = load_split(cfg.data.root, cfg.data.train_split)
    except CosaError:  # the data checks at the start of training say what is wrong, with their hints
        return cfg, ""
    statistics = measure(split)
    if not statistics.images:
        return cfg, ""
    yours = keys_set_by_user(config, overrides)
    object_side = statistics.median_object_side
    # A length the user sets takes the warm-ups and EMA with it; what else the user sets stays.
    iterations = cfg.train.iterations if "train.iterations" in yours else None
    measured = scaled_settings(
        statistics.median_short_side, object_side, len(split.samples), cfg.train.batch_size, iterations
    )
    kept = [key for key in measured if key in yours]
    applied = {key: value for key, value in measured.items() if key not in yours}
    cfg = load_config(config, recipe, data, overrides, base=base, measured=applied)
    objects = f", objects {object_side:.0f} px" if object_side is not None else ", no masks (object size unknown)"
    line = (
        f"settings scaled to split '{split.split}' ({len(split.samples)} images, median shorter side "
        f"{statistics.median_short_side:g} px{objects}): {as_overrides(applied)}"
    )
    return cfg, line + (f"; yours kept: {', '.join(kept)}" if kept else "")
