"""``cosa data check``: every problem of a dataset, listed at once."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cosa.config.schema import DataConfig
from cosa.data.io import read_image, read_mask
from cosa.data.layouts import available_splits, dataset_root, detect_layout, load_split, partial_masks_problem
from cosa.data.statistics import SplitStatistics
from cosa.errors import CosaError

# The split that training evaluates on: data.val_split of the schema and of every preset.
VALIDATION_SPLIT = DataConfig.val_split


@dataclass
class CheckReport:
    root: Path
    layout: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    statistics: dict[str, SplitStatistics] = field(default_factory=dict)  # split → what it holds

    @property
    def images(self) -> dict[str, int]:
        """Split → readable images."""
        return {split: statistics.images for split, statistics in self.statistics.items()}


def check_dataset(root: str | Path) -> CheckReport:
    """Read every image and mask of every split, collecting problems instead of stopping at one.

    Problems make ``cosa data check`` exit with status 1; warnings do not: an image without
    labels is allowed (a background-only image) but may be a forgotten label. A validation split
    with some masks missing is a problem, as it stops training (one without any mask is not).
    """
    root = dataset_root(root)
    report = CheckReport(root, detect_layout(root))
    splits = available_splits(root, report.layout)
    if not splits:
        report.problems.append(f"{root}: no splits found")
    for split in splits:
        try:
            dataset = load_split(root, split, report.problems)
        except CosaError as error:
            report.problems.append(str(error))
            continue
        if split == VALIDATION_SPLIT and (problem := partial_masks_problem(dataset)):
            report.problems.append(problem)
        statistics = SplitStatistics(dataset.class_names)
        for sample in dataset.samples:
            try:
                image = read_image(sample.image, dataset.exif_orientation)
            except CosaError as error:
                report.problems.append(str(error))
                continue
            if not sample.labels:
                report.warnings.append(f"{sample.image}: no class labels (background only)")
            size = tuple(image.shape[-2:])
            mask = None
            if sample.mask is not None:
                try:
                    mask = read_mask(sample.mask, dataset.num_classes)
                except CosaError as error:
                    report.problems.append(str(error))
            if mask is not None and tuple(mask.shape) != size:
                report.problems.append(f"{sample.mask}: mask is {tuple(mask.shape)} but its image is {size}")
                mask = None
            statistics.add(size, sample.labels, mask)
            if mask is None:
                continue
            in_mask = {int(v) - 1 for v in mask.unique() if 1 <= v <= dataset.num_classes}
            listed = set(sample.labels)
            if in_mask != listed:
                names = dataset.class_names
                report.problems.append(
                    f"{sample.mask}: labels {[names[i] for i in sorted(listed)]} disagree with the mask's "
                    f"classes {[names[i] for i in sorted(in_mask)]}"
                )
        report.statistics[split] = statistics
    report.problems = list(dict.fromkeys(report.problems))  # a bad mask is met by the label cache and here
    return report
