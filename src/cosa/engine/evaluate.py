"""Evaluation of a network on a split, exact across processes.

Every image is resized to ``eval.size``², run at ``eval.scales`` (+ flip), and its logits are
resized back to the label size. One confusion matrix per prediction kind covers the whole split:

- ``unmasked`` — argmax of the segmentation, no label information;
- ``tag_masked`` — absent ground-truth classes masked out before the argmax (the released Seg_vd);
- ``cam`` — CAMs of the true classes, background at ``eval.cam_threshold`` or below;
- ``cpl`` — the CAM pseudo-label rule (two thresholds, ignore band), scored on the pixels it labels.

A dataset may add metrics of its own (``DatasetSplit.extra_metrics``, e.g. the synthetic data's
coexistence score): they see every image's predictions, and their numbers join the result.

For the ``cam-only`` recipe the segmentation *is* the thresholded CAM: unmasked with the classes
the classifier predicts, tag-masked with the true ones (:func:`cosa.engine.inference.predicted_labels`).
"""

from __future__ import annotations

import torch
from torch import nn
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from cosa.config.schema import Config
from cosa.data.datasets import EvaluationImages, collate_evaluation
from cosa.data.io import IGNORE_INDEX
from cosa.data.layouts import DatasetSplit
from cosa.engine.crf import CrfPool
from cosa.engine.distributed import DistContext, all_reduce_sum
from cosa.engine.inference import (
    as_set,
    cam_labels,
    infer,
    inference_protocol,
    mask_absent,
    predicted_labels,
    protocol_text,
    segments_from_cams,
)
from cosa.engine.metrics import ConfusionMatrix
from cosa.errors import CosaError
from cosa.method.pseudo_labels import cam_pseudo_labels, resize
from cosa.method.thresholds import CplThresholds

KINDS = ("unmasked", "tag_masked", "cam", "cpl")
# What evaluate() reports itself; other keys come from the dataset's extra_metrics.
RESULT_KEYS = (
    "miou_unmasked",
    "miou_tag_masked",
    "cam_miou",
    "cpl_miou",
    "cpl_coverage",
    "cpl_precision",
    "cpl_recall",
    "pixel_accuracy",
    "per_class",
    "per_class_tag_masked",
    "per_class_cam",
    "protocol",
    "confusion",
    "crf",
)


def _shard(split: DatasetSplit, dist: DistContext, max_images: int | None) -> list[int]:
    count = len(split.samples) if max_images is None else min(max_images, len(split.samples))
    return list(range(dist.rank, count, dist.world_size))


@torch.no_grad()
def evaluate(
    network: nn.Module,
    split: DatasetSplit,
    cfg: Config,
    thresholds: CplThresholds,
    dist: DistContext,
    max_images: int | None = None,
    progress: bool = False,
    crf: bool = False,
    crf_workers: int | None = None,
    return_confusion: bool = False,
    which: str = "assignment",
) -> dict:
    """Metrics of ``network`` (put in eval mode) on ``split``; every process gets the same dict,
    with the ``protocol`` that made them (``which`` names the network in it).

    ``crf_workers`` processes run the dense CRF (default :func:`cosa.engine.crf.default_workers`;
    0 or 1: in this process); the numbers do not depend on it.
    ``return_confusion`` adds ``confusion``: the unmasked segmentation's confusion matrix (rows
    ground truth, columns prediction, background first; ints), from which every ``per_class``
    IoU follows — for pictures of which classes get confused, e.g. ``cosa report``.
    """
    if not split.has_masks:
        raise_missing_masks(split)
    network.eval()
    device = dist.device
    if crf and segments_from_cams(cfg):
        crf = False  # the CAM baseline has no segmentation probabilities to refine
    crf_pool = CrfPool(cfg.eval.crf_params, crf_workers) if crf else None
    num_labels = split.num_classes + 1
    # Everything is counted on the device: no image waits for the previous one's numbers.
    matrices = {kind: ConfusionMatrix(num_labels, device) for kind in KINDS}
    if crf_pool:
        matrices.update({kind: ConfusionMatrix(num_labels, device) for kind in ("unmasked_crf", "tag_masked_crf")})
    labelled = torch.zeros(3, dtype=torch.int64, device=device)  # CPL: correct, labelled, valid pixels
    extras = [make() for make in split.extra_metrics]

    indices = _shard(split, dist, max_images)
    loader = DataLoader(
        Subset(EvaluationImages(split, cfg.eval.size), indices),
        batch_size=cfg.eval.batch_size,
        num_workers=min(2, cfg.data.num_workers),
        collate_fn=collate_evaluation,
    )
    try:
        for batch in tqdm(loader, desc=f"evaluate {split.split}", disable=not (progress and dist.is_main), leave=False):
            crf_jobs: list[tuple[torch.Tensor, torch.Tensor]] = []
            outputs = infer(network, batch["input"].to(device), cfg.eval.scales, cfg.eval.flip, cfg.eval.amp)
            for i, mask in enumerate(batch["mask"]):
                size = tuple(mask.shape)
                mask = mask.to(device, non_blocking=True)
                tags = batch["labels"][i : i + 1].to(device)
                seg = resize(outputs.seg[i : i + 1], size)
                cams = resize(outputs.cam[i : i + 1], size)
                logits = outputs.logits[i : i + 1]
                true_cam = cam_labels(cams, tags, cfg.eval.cam_threshold)
                unmasked = predicted_labels(seg, cams, logits, cfg)
                tag_masked = predicted_labels(seg, cams, logits, cfg, tags)
                inside = torch.ones_like(true_cam, dtype=torch.bool)
                cpl = cam_pseudo_labels(cams, tags, inside, thresholds.cam_high, thresholds.cam_low)
                predictions = dict(zip(KINDS, (unmasked[0], tag_masked[0], true_cam[0], cpl[0])))
                for kind, prediction in predictions.items():
                    matrices[kind].update(prediction, mask)
                valid = mask != IGNORE_INDEX
                cpl_labelled = (cpl[0] != IGNORE_INDEX) & valid
                labelled += torch.stack([(cpl_labelled & (cpl[0] == mask)).sum(), cpl_labelled.sum(), valid.sum()])
                if extras:
                    on_cpu = {kind: prediction.cpu() for kind, prediction in predictions.items()}
                    for extra in extras:
                        extra.update(split.samples[batch["index"][i]], mask.cpu(), on_cpu)
                if crf_pool:
                    image = batch["image"][i]
                    crf_jobs += [(image, seg[0]), (image, mask_absent(seg, tags)[0])]
            if crf_pool:
                _update_crf(matrices, crf_pool, crf_jobs, batch["mask"])
    finally:
        if crf_pool:
            crf_pool.close()

    for matrix in matrices.values():
        matrix.all_reduce()
    labelled = all_reduce_sum(labelled)
    for extra in extras:
        extra.counts = all_reduce_sum(extra.counts)
    names = ["background", *split.class_names]
    result = {
        "miou_unmasked": matrices["unmasked"].mean_iou(),
        "miou_tag_masked": matrices["tag_masked"].mean_iou(),
        "cam_miou": matrices["cam"].mean_iou(),
        "cpl_miou": matrices["cpl"].mean_iou(),
        "cpl_coverage": float(labelled[1] / max(int(labelled[2]), 1) * 100),
        "cpl_precision": float(labelled[0] / max(int(labelled[1]), 1) * 100),
        "cpl_recall": float(labelled[0] / max(int(labelled[2]), 1) * 100),
        "pixel_accuracy": matrices["unmasked"].pixel_accuracy(),
        "per_class": matrices["unmasked"].per_class(names),
        "per_class_tag_masked": matrices["tag_masked"].per_class(names),
        "per_class_cam": matrices["cam"].per_class(names),
        "protocol": {
            **inference_protocol(cfg, which),
            "split": split.split,
            "num_images": len(split.samples) if max_images is None else min(max_images, len(split.samples)),
            "cam_threshold": cfg.eval.cam_threshold,
            "cpl_thresholds": [as_set(thresholds.cam_high), as_set(thresholds.cam_low)],
            "crf": bool(crf_pool),
        },
    }
    if return_confusion:
        result["confusion"] = matrices["unmasked"].counts.tolist()
    for extra in extras:
        result.update(extra.result())
    if crf_pool:
        result["crf"] = {
            "miou_unmasked": matrices["unmasked_crf"].mean_iou(),
            "miou_tag_masked": matrices["tag_masked_crf"].mean_iou(),
            "per_class_tag_masked": matrices["tag_masked_crf"].per_class(names),
        }
    return result


def raise_missing_masks(split: DatasetSplit) -> None:
    missing = next(sample for sample in split.samples if sample.mask is None)
    raise CosaError(f"{split.root}: split '{split.split}' cannot be evaluated: image '{missing.name}' has no mask")


def _update_crf(
    matrices: dict[str, ConfusionMatrix],
    crf_pool: CrfPool,
    jobs: list[tuple[torch.Tensor, torch.Tensor]],
    masks: list[torch.Tensor],
) -> None:
    """Score a batch's CRF labels: its images' unmasked and tag-masked logits go to the workers together."""
    labels = iter(crf_pool.labels(jobs))
    for mask in masks:
        for kind in ("unmasked_crf", "tag_masked_crf"):
            matrices[kind].update(torch.from_numpy(next(labels)), mask)


def format_results(result: dict) -> str:
    """A readable per-class table, then the headline numbers with their protocol."""
    lines = []
    protocol = result["protocol"]
    if "checkpoint" in protocol:  # which weights were scored matters for a run that is still training
        lines.append(f"checkpoint {protocol['checkpoint']} (iteration {protocol['iteration']})")
    lines.append(f"{'class':<16}{'unmasked':>10}{'tag-masked':>12}{'CAM':>8}")
    for name, value in result["per_class"].items():
        cells = [value, result["per_class_tag_masked"][name], result["per_class_cam"][name]]
        lines.append(
            f"{name:<16}" + "".join(f"{'-' if v is None else f'{v:.2f}':>{w}}" for v, w in zip(cells, (10, 12, 8)))
        )
    lines.append(
        f"{'mIoU':<16}{result['miou_unmasked']:>10.2f}{result['miou_tag_masked']:>12.2f}{result['cam_miou']:>8.2f}"
    )
    lines.append(
        f"CPL mIoU {result['cpl_miou']:.2f} on the {result['cpl_coverage']:.1f}% of pixels it labels "
        f"(precision {result['cpl_precision']:.1f}%, recall {result['cpl_recall']:.1f}%)"
    )
    extra = [
        f"{key} {value:.1f}%" for key, value in result.items() if key not in RESULT_KEYS and isinstance(value, float)
    ]
    if extra:
        lines.append("metrics of the dataset: " + ", ".join(extra))
    if "crf" in result:
        crf = result["crf"]
        lines.append(f"with CRF: unmasked {crf['miou_unmasked']:.2f}, tag-masked {crf['miou_tag_masked']:.2f}")
    lines.append(headline(result))
    return "\n".join(lines)


def headline(result: dict) -> str:
    """The segmentation mIoUs beside their protocol, in one line: 'mIoU 40.41 unmasked, 41.02
    tag-masked (val, 1449 images, 5 scales + flip, size 448, assignment network)'. The CRF's
    numbers have a line of their own: these are without it."""
    protocol = {**result["protocol"], "crf": False}
    return (
        f"mIoU {result['miou_unmasked']:.2f} unmasked, {result['miou_tag_masked']:.2f} tag-masked "
        f"({protocol_text(protocol)})"
    )
