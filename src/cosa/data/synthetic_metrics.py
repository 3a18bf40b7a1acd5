"""The coexistence score of the synthetic dataset (:mod:`cosa.data.synthetic`), lower is better.

Its contexts are tied to classes (water to boats, rails to blocks) and are background in the
masks. The score is the share of context pixels, background in the mask, that a prediction labels
as the context's tied class: ``coexistence`` for the unmasked segmentation, ``coexistence_cam``
for the thresholded CAMs of the true classes, ``coexistence_cpl`` for the CAM pseudo-labels.
``where_classes_go`` breaks each class down: the share of its objects, of its context and of the
rest of the background that each of the three labels as the class. A folder dataset whose ``context.json`` names tied
contexts adds :class:`Coexistence` to its splits' ``extra_metrics``, so every evaluation of them
(``cosa evaluate``, the trainer's, ``cosa report``, the benchmarks) reports both.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from cosa.data.io import read_mask
from cosa.errors import CosaError

if TYPE_CHECKING:
    from cosa.data.layouts import Sample


def read_tied_contexts(root: Path, index: dict[str, int]) -> dict[int, int]:
    """Context id (its pixel value in ``context/NAME.png``) → tied class index 0..C-1, from the
    ``context.json`` the generator wrote; empty for a dataset without one."""
    path = root / "context.json"
    if not path.is_file():
        return {}
    try:
        contexts = json.loads(path.read_text())["contexts"]
        return {int(entry["id"]): index[entry["class"]] for entry in contexts}
    except (ValueError, KeyError, TypeError) as error:
        raise CosaError(f"{path}: not a valid context description ({error!r})") from None


KINDS = {"unmasked": "segmentation", "cam": "cam", "cpl": "cpl"}  # evaluation kind → name in the result
REGIONS = ("object", "context", "background")


class Coexistence:
    """Counts, over the images of one evaluation and per tied context, where each prediction puts
    the context's class: on the class's objects, on the context (background in the mask), or on the
    rest of the background of the images that show the class."""

    def __init__(self, tied: dict[int, int], class_names: tuple[str, ...]) -> None:
        self.tied = tied
        self.class_names = class_names
        # per context (in id order), kind, region: [pixels labelled as the tied class, pixels]
        self.counts = torch.zeros(len(tied), len(KINDS), len(REGIONS), 2, dtype=torch.int64)

    def update(self, sample: Sample, mask: torch.Tensor, predictions: Mapping[str, torch.Tensor]) -> None:
        if sample.context is None:
            return
        context = read_mask(sample.context).long()
        self.counts += where_labels_go(context, mask, predictions, self.tied)

    def result(self) -> dict:
        totals = self.counts.sum(0)
        share = {
            kind: 100 * int(totals[k, 1, 0]) / max(int(totals[k, 1, 1]), 1) for k, kind in enumerate(KINDS.values())
        }
        result = {
            "coexistence": share["segmentation"],
            "coexistence_cam": share["cam"],
            "coexistence_cpl": share["cpl"],
        }
        where = {}
        for row, index in zip(self.counts, (self.tied[key] for key in sorted(self.tied))):
            where[self.class_names[index]] = {
                kind: {region: 100 * int(hits) / max(int(pixels), 1) for region, (hits, pixels) in zip(REGIONS, row[k])}
                for k, kind in enumerate(KINDS.values())
            }
        return result | {"where_classes_go": where}


def where_labels_go(
    context: torch.Tensor, mask: torch.Tensor, predictions: Mapping[str, torch.Tensor], tied: dict[int, int]
) -> torch.Tensor:
    """Per context id (in order), kind (:data:`KINDS`) and region (:data:`REGIONS`): [pixels the
    prediction labels as the tied class, pixels]. The context counts only where the mask is
    background (objects occlude it); the rest of the background only in images that show the class."""
    counts = torch.zeros(len(tied), len(KINDS), len(REGIONS), 2, dtype=torch.int64)
    background = mask == 0
    for row, context_id in enumerate(sorted(tied)):
        label = tied[context_id] + 1
        on_object = mask == label
        regions = (on_object, (context == context_id) & background, background & (context == 0) & on_object.any())
        for k, kind in enumerate(KINDS):
            if kind not in predictions:
                continue
            labelled = predictions[kind] == label
            for r, region in enumerate(regions):
                counts[row, k, r] = torch.stack([(labelled & region).sum(), region.sum()])
    return counts
