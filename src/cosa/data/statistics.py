"""What a dataset is, in the numbers that settings scale with: image and object sizes, images per
class, classes that never appear alone. ``cosa data check`` gathers them while it reads a split."""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

import torch


@dataclass
class SplitStatistics:
    class_names: tuple[str, ...]
    short_sides: list[int] = field(default_factory=list)  # each readable image's shorter side, px
    # √(pixels of a class in an image), px, one per tagged class of each image with a mask: the
    # side of the square the class would fill (all its instances in that image together).
    object_sides: list[float] = field(default_factory=list)
    object_fractions: list[float] = field(default_factory=list)  # the same, ÷ the image's short side
    class_images: dict[str, int] = field(default_factory=dict)  # images tagged with each class
    alone: dict[str, int] = field(default_factory=dict)  # images where it is the only tag

    def __post_init__(self) -> None:
        self.class_images = dict.fromkeys(self.class_names, 0)
        self.alone = dict.fromkeys(self.class_names, 0)

    def add(self, image_size: tuple[int, int], labels: tuple[int, ...], mask: torch.Tensor | None) -> None:
        short = min(image_size)
        self.short_sides.append(short)
        for label in labels:
            self.class_images[self.class_names[label]] += 1
        if len(labels) == 1:
            self.alone[self.class_names[labels[0]]] += 1
        if mask is not None:
            areas = torch.bincount(mask.flatten().long(), minlength=256)
            for label in labels:
                side = float(areas[label + 1]) ** 0.5
                if side:
                    self.object_sides.append(side)
                    self.object_fractions.append(side / short)

    @property
    def images(self) -> int:
        return len(self.short_sides)

    @property
    def median_short_side(self) -> float | None:
        return statistics.median(self.short_sides) if self.short_sides else None

    @property
    def median_object_side(self) -> float | None:
        return statistics.median(self.object_sides) if self.object_sides else None

    @property
    def never_alone(self) -> list[str]:
        """Tagged classes never the only tag of an image: the classifier cannot learn them apart
        from the classes they come with, so their CAMs may cover those too."""
        return [name for name, count in self.class_images.items() if count and not self.alone[name]]

    def describe(self) -> list[str]:
        lines = []
        if self.short_sides:
            lines.append(
                f"images: {self.images}, shorter side {min(self.short_sides)}–{max(self.short_sides)} px "
                f"(median {self.median_short_side:g})"
            )
        if self.object_sides:
            deciles = statistics.quantiles(self.object_sides, n=10) if len(self.object_sides) > 1 else self.object_sides
            lines.append(
                f"objects (√area of a class in an image, from the masks): median {self.median_object_side:.0f} px, "
                f"{deciles[0]:.0f}–{deciles[-1]:.0f} px from the 10th to the 90th percentile, median "
                f"{statistics.median(self.object_fractions):.2f} of the shorter side"
            )
        counts = ", ".join(f"{name} {count}" for name, count in self.class_images.items())
        lines.append(f"images per class: {counts}")
        if missing := [name for name, count in self.class_images.items() if not count]:
            lines.append(f"classes never tagged: {', '.join(missing)}")
        lines.append(f"classes never alone: {', '.join(self.never_alone) or 'none'}")
        return lines
