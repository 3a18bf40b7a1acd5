"""PyTorch datasets over a :class:`DatasetSplit`: training views and evaluation images.

Training randomness is a pure function of (seed, stream position): the sampler hands out
positions in an endless stream of epochs, each epoch a seeded permutation, and each position
seeds its own augmentation. A run therefore sees the same global batches whatever the number of
processes or data-loader workers, and resuming at step t needs nothing but t.
"""

from __future__ import annotations

from collections.abc import Iterator
from functools import lru_cache

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, Sampler

from cosa.data.io import read_image, read_mask
from cosa.data.layouts import DatasetSplit
from cosa.data.views import make_views, normalize, sample_view_params
from cosa.errors import CosaError


def label_vector(labels: tuple[int, ...], num_classes: int) -> torch.Tensor:
    vector = torch.zeros(num_classes)
    vector[list(labels)] = 1.0
    return vector


def read_sample_mask(split: DatasetSplit, index: int, image_size: tuple[int, int]) -> torch.Tensor:
    sample = split.samples[index]
    if sample.mask is None:
        raise CosaError(f"{split.root}: image '{sample.name}' has no mask (needed here)")
    mask = read_mask(sample.mask, split.num_classes)
    if tuple(mask.shape) != tuple(image_size):
        raise CosaError(f"{sample.mask}: mask is {tuple(mask.shape)} but its image is {tuple(image_size)}")
    return mask


class TrainingViews(Dataset):
    """Item ``position`` (any non-negative int) → the two views of one image of the stream."""

    def __init__(
        self,
        split: DatasetSplit,
        crop_size: int,
        scale_range: tuple[float, float],
        blur_probability: float,
        seed: int,
        with_masks: bool = False,
    ) -> None:
        self.split = split
        self.crop_size = crop_size
        self.scale_range = tuple(scale_range)
        self.blur_probability = blur_probability
        self.seed = seed
        self.with_masks = with_masks

    def __len__(self) -> int:
        return len(self.split.samples)

    @lru_cache(maxsize=2)  # noqa: B019 - the sampler lives as long as its loader; two epochs meet at a boundary
    def epoch_order(self, epoch: int) -> np.ndarray:
        return np.random.default_rng([self.seed, epoch]).permutation(len(self))

    def index_at(self, position: int) -> int:
        epoch, offset = divmod(position, len(self))
        return int(self.epoch_order(epoch)[offset])

    def __getitem__(self, position: int) -> dict[str, torch.Tensor]:
        index = self.index_at(position)
        sample = self.split.samples[index]
        image = read_image(sample.image, self.split.exif_orientation)
        mask = read_sample_mask(self.split, index, image.shape[-2:]) if self.with_masks else None
        rng = np.random.default_rng([self.seed, 1_000_003, position])
        params = sample_view_params(
            rng, image.shape[1], image.shape[2], self.crop_size, self.scale_range, self.blur_probability
        )
        views = make_views(image, mask, params, self.crop_size)
        views["labels"] = label_vector(sample.labels, self.split.num_classes)
        views["index"] = torch.tensor(index)
        return views


def per_process_batch(global_batch: int, world_size: int) -> int:
    """Each process's share of ``train.batch_size``, the global batch; it must divide evenly.

    ``cosa train`` checks it before it touches the run folder (a refusal then leaves nothing behind).
    """
    if global_batch % world_size:
        raise CosaError(f"train.batch_size={global_batch} must be divisible by the number of processes ({world_size})")
    return global_batch // world_size


class StreamSampler(Sampler[int]):
    """This process's share of global batches ``start_step .. total_steps - 1``.

    Global batch t is stream positions [t·G, (t+1)·G); process r of W takes the r-th slice of
    G/W positions, so consecutive ``per_process`` items form its batch.
    """

    def __init__(self, global_batch: int, rank: int, world_size: int, start_step: int, total_steps: int) -> None:
        self.per_process = per_process_batch(global_batch, world_size)
        self.global_batch = global_batch
        self.rank = rank
        self.start_step = start_step
        self.total_steps = total_steps

    def __len__(self) -> int:
        return max(0, self.total_steps - self.start_step) * self.per_process

    def __iter__(self) -> Iterator[int]:
        for step in range(self.start_step, self.total_steps):
            first = step * self.global_batch + self.rank * self.per_process
            yield from range(first, first + self.per_process)


class EvaluationImages(Dataset):
    """Whole images resized to ``size``×``size`` for the network, with their original mask."""

    def __init__(self, split: DatasetSplit, size: int, with_masks: bool = True) -> None:
        self.split = split
        self.size = size
        self.with_masks = with_masks

    def __len__(self) -> int:
        return len(self.split.samples)

    def __getitem__(self, index: int) -> dict:
        sample = self.split.samples[index]
        image = read_image(sample.image, self.split.exif_orientation)
        resized = F.interpolate(image[None].float(), size=(self.size, self.size), mode="bilinear", align_corners=False)
        item = {
            "input": normalize(resized.clamp(0, 255)[0]),
            "image": image,
            "labels": label_vector(sample.labels, self.split.num_classes),
            "name": sample.name,
            "index": index,
        }
        if self.with_masks:
            item["mask"] = read_sample_mask(self.split, index, image.shape[-2:]).long()
        return item


def collate_evaluation(items: list[dict]) -> dict:
    """Stack the fixed-size parts; keep per-image sizes (images, masks, names) as lists."""
    batch = {
        "input": torch.stack([item["input"] for item in items]),
        "labels": torch.stack([item["labels"] for item in items]),
    }
    for key in ("image", "mask", "name", "index"):
        if key in items[0]:
            batch[key] = [item[key] for item in items]
    return batch
