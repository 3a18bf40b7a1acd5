"""Predictions for new images (``cosa predict``), as arrays.

The arrays serve without files (a notebook, a service), and the files of ``cosa predict`` are
made from them (:class:`cosa.reporting.predictions.PredictionWriter`): :func:`predict_images`
yields one :class:`Prediction` per image. Masks come from :mod:`cosa.engine.inference`, the code
path of ``cosa evaluate``, so a mask on disk matches what the metrics score.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader

from cosa.config.schema import Config
from cosa.data.classes import VOC_CLASSES
from cosa.data.datasets import EvaluationImages, collate_evaluation
from cosa.data.layouts import DatasetSplit, Sample, require_label_table_header, unknown_class_names
from cosa.engine.crf import CrfPool
from cosa.engine.inference import infer, mask_absent, predicted_labels, predicted_tags, segments_from_cams
from cosa.errors import CosaError
from cosa.method.pseudo_labels import resize

# The PASCAL VOC devkit's result folder for segmentation. comp5 is for methods trained on VOC 2012
# data only; CoSA uses an ImageNet-pre-trained backbone and SBD's extra images (train_aug), so its
# entries belong to comp6 ("trained on own data").
VOC_SUBMISSION_DIR = Path("results", "VOC2012", "Segmentation", "comp6_test_cls")


@dataclass(frozen=True)
class Prediction:
    """Everything predicted for one image, on the CPU, at the image's own size."""

    name: str
    image: torch.Tensor  # 3×H×W uint8
    seg: torch.Tensor  # (C+1)×H×W float32: segmentation logits summed over scales and flips, never masked
    cam: torch.Tensor  # C×H×W float32: CAMs of all classes, normalised to [0, 1]
    present: torch.Tensor  # C: 1 for the classes of the image's tags, or of the classifier without tags
    mask: torch.Tensor  # H×W int64 labels: argmax of seg (tag-masked with tags, after the CRF with one)


def read_tags(path: str | Path, class_names: Sequence[str], image_names: Sequence[str]) -> dict[str, tuple[int, ...]]:
    """Image name (file stem) → class indices, from a CSV ``image,labels`` like the folder layout's.

    Every input needs a row and every row an input: a misspelt name must not silently turn
    tag-masked prediction into unmasked prediction.
    """
    path = Path(path)
    index = {name: i for i, name in enumerate(class_names)}
    wanted = set(image_names)
    tags: dict[str, tuple[int, ...]] = {}
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            require_label_table_header(path, reader)
            for line, row in enumerate(reader, start=2):
                if None in row:  # labels separated by ',': the extra ones would be dropped
                    raise CosaError(
                        f"{path}:{line}: more fields than the header's {len(row) - 1} (separate class names with ';')"
                    )
                image = (row["image"] or "").strip()
                name = Path(image).stem
                names = [label.strip() for label in (row["labels"] or "").split(";") if label.strip()]
                unknown = [label for label in names if label not in index]
                if unknown:
                    raise CosaError(
                        unknown_class_names(
                            f"{path}:{line}", unknown, class_names, f"the model's classes: {', '.join(class_names)}"
                        )
                    )
                if name not in wanted:
                    raise CosaError(f"{path}:{line}: image '{image}' is not among the inputs")
                if name in tags:
                    raise CosaError(f"{path}:{line}: image '{image}' is listed twice")
                tags[name] = tuple(sorted({index[label] for label in names}))
    except (OSError, UnicodeDecodeError) as error:
        raise CosaError(f"{path}: cannot read tags file ({getattr(error, 'strerror', None) or error})") from None
    missing = [name for name in image_names if name not in tags]
    if missing:
        raise CosaError(f"{path}: no row for {len(missing)} input image(s), e.g. '{missing[0]}'")
    return tags


def check_voc_classes(class_names: Sequence[str], source: str | Path) -> None:
    """The VOC server reads label k as the k-th VOC class, so only a model of those 20, in order, fits."""
    if tuple(class_names) != VOC_CLASSES:
        shown = ", ".join(class_names[:4]) + (", ..." if len(class_names) > 4 else "")
        raise CosaError(
            f"{source}: --voc-submission needs a model of the 20 PASCAL VOC classes in VOC order; "
            f"this one has {len(class_names)} ({shown})"
        )


def predict_images(
    network: nn.Module,
    class_names: Sequence[str],
    images: Sequence[Path],
    cfg: Config,
    device: torch.device,
    tags: dict[str, tuple[int, ...]] | None = None,
    crf_pool: CrfPool | None = None,
    batch_size: int = 4,
) -> Iterator[Prediction]:
    """Predictions for ``images``, in order, at ``cfg.eval``'s size, scales and flip.

    With ``tags`` (from :func:`read_tags`) the masks are tag-masked; with a ``crf_pool`` they
    are the CRF of the softmax of the logits the mask came from.
    """
    if crf_pool and segments_from_cams(cfg):
        raise CosaError("--crf refines segmentation logits; a cam-only model's masks are thresholded CAMs")
    samples = [Sample(path.stem, path, tags[path.stem] if tags else ()) for path in images]
    split = DatasetSplit(Path("."), "files", "predict", tuple(class_names), samples)
    loader = DataLoader(
        EvaluationImages(split, cfg.eval.size, with_masks=False),
        batch_size=batch_size,
        collate_fn=collate_evaluation,
        num_workers=2,
    )
    for batch in loader:
        predictions = predict_batch(network, batch, cfg, device, tagged=tags is not None)
        if crf_pool:
            predictions = refine_with_crf(predictions, crf_pool, tagged=tags is not None)
        yield from predictions


@torch.no_grad()
def predict_batch(network: nn.Module, batch: dict, cfg: Config, device: torch.device, tagged: bool) -> list[Prediction]:
    """One batch of :func:`collate_evaluation`; ``tagged``: its ``labels`` are the images' tags."""
    outputs = infer(network, batch["input"].to(device), cfg.eval.scales, cfg.eval.flip, cfg.eval.amp)
    present = batch["labels"].to(device) if tagged else predicted_tags(outputs.logits)
    predictions = []
    for i, image in enumerate(batch["image"]):
        size = tuple(image.shape[-2:])
        seg, cam, tags = resize(outputs.seg[i : i + 1], size), resize(outputs.cam[i : i + 1], size), present[i : i + 1]
        mask = predicted_labels(seg, cam, outputs.logits[i : i + 1], cfg, tags if tagged else None)
        predictions.append(
            Prediction(
                batch["name"][i], image, seg[0].float().cpu(), cam[0].float().cpu(), tags[0].cpu(), mask[0].cpu()
            )
        )
    return predictions


def refine_with_crf(predictions: list[Prediction], crf_pool: CrfPool, tagged: bool) -> list[Prediction]:
    """The predictions with CRF masks; a batch's images go to the CRF workers together."""
    logits = [mask_absent(p.seg[None], p.present[None])[0] if tagged else p.seg for p in predictions]
    labels = crf_pool.labels([(p.image, seg) for p, seg in zip(predictions, logits)])
    return [replace(p, mask=torch.from_numpy(mask)) for p, mask in zip(predictions, labels)]
