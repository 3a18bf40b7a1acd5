"""The coexistence score of the synthetic dataset (:mod:`cosa.data.synthetic`), lower is better.

Its contexts are tied to classes (water to boats, rails to blocks) and are background in the
masks. The score is the share of context pixels, background in the mask, that a prediction labels
as the context's tied class: ``coexistence`` for the unmasked segmentation, ``coexistence_cam``
for the thresholded CAMs of the true classes. A folder dataset whose ``context.json`` names tied
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


class Coexistence:
    """Counts, over the images of one evaluation, the context pixels and those labelled as their tied class."""

    def __init__(self, tied: dict[int, int]) -> None:
        self.tied = tied
        self.counts = torch.zeros(3, dtype=torch.int64)  # segmentation hits, CAM hits, context pixels

    def update(self, sample: Sample, mask: torch.Tensor, predictions: Mapping[str, torch.Tensor]) -> None:
        if sample.context is None:
            return
        context = read_mask(sample.context).long()
        self.counts += context_hits(context, mask, predictions["unmasked"], predictions["cam"], self.tied).sum(0)

    def result(self) -> dict[str, float]:
        hits_seg, hits_cam, pixels = self.counts.tolist()
        return {"coexistence": 100 * hits_seg / max(pixels, 1), "coexistence_cam": 100 * hits_cam / max(pixels, 1)}


def context_hits(
    context: torch.Tensor, mask: torch.Tensor, segmentation: torch.Tensor, cam: torch.Tensor, tied: dict[int, int]
) -> torch.Tensor:
    """Per context id (in order): [pixels the segmentation labels as the tied class, same for the CAM,
    pixels], counting only context pixels that are background in the mask."""
    rows = []
    for context_id in sorted(tied):
        region = (context == context_id) & (mask == 0)
        label = tied[context_id] + 1
        rows.append([int((segmentation[region] == label).sum()), int((cam[region] == label).sum()), int(region.sum())])
    return torch.tensor(rows, dtype=torch.int64)
