"""``cosa data prepare-voc`` / ``prepare-coco``: turn the official downloads into the layouts we read.

VOC needs no conversion, only files from two sources (VOC 2012 and SBD's augmented masks), so
:func:`prepare_voc` checks that every listed image and mask is where :mod:`cosa.data.layouts`
looks for it, says what is missing and where it comes from, and caches the image labels.

COCO comes as instance annotations; :func:`prepare_coco` rasterises them with pycocotools into
the 81-label semantic masks of the CoSA release, ``SegmentationClass/{train,val}2014/NAME.png``
(VOC-palette PNGs whose indices are the labels), with these rules:

- labels: 0 background; category ``COCO_CATEGORY_IDS[k]`` (official ids 1..90 with gaps) is
  label ``k + 1``, so 1..80 follow the category-id order;
- crowd regions (``iscrowd: 1``) are 255 (ignored), but only where no single instance lies:
  an exact instance outline is better evidence than a crowd's rough one;
- overlapping instances are drawn largest first (pixel area, then annotation id), so the smaller
  one wins where they overlap — it is usually the object in front, and the rule is deterministic;
- only images with at least one annotation get a mask and a line in ``ROOT/{train,val}.txt``:
  images without any have no image labels and teach a weakly supervised model nothing.

Both commands finish by loading each split with :func:`cosa.data.layouts.load_split`, which
writes the label cache ``ROOT/.cosa/labels-{split}.json`` that training would otherwise build.
"""

from __future__ import annotations

import contextlib
import io
import json
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cosa.data.classes import COCO_CATEGORY_IDS, COCO_CLASSES
from cosa.data.io import IGNORE_INDEX, write_mask
from cosa.data.layouts import _read_list, dataset_root, detect_layout, load_split
from cosa.errors import CosaError

VOC_SPLITS = ("train_aug", "val")
COCO_SPLITS = {"train": "train2014", "val": "val2014"}
EXAMPLES = 3  # how many missing files a problem names


@dataclass
class SplitSummary:
    split: str
    listed: int  # images in the split's list
    images: int  # listed images found on disk
    masks: int  # listed images with a mask
    cache: Path | None = None  # the label cache, once the split is complete and loaded
    written: int = 0  # COCO: masks written by this run
    kept: int = 0  # COCO: masks already there and left as they were


@dataclass
class PrepareReport:
    root: Path
    layout: str
    splits: list[SplitSummary] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @property
    def ready(self) -> bool:
        return not self.problems


def _existing_dir(root: str | Path) -> Path:
    return dataset_root(root)


def _examples(names: list[str]) -> str:
    shown = ", ".join(names[:EXAMPLES])
    return shown + (f" and {len(names) - EXAMPLES} more" if len(names) > EXAMPLES else "")


def _cache_labels(report: PrepareReport, summary: SplitSummary) -> None:
    """Load the split as training will, which writes its label cache; failures become problems."""
    try:
        layout = detect_layout(report.root)
        if layout != report.layout:
            raise CosaError(f"{report.root}: the loader reads this folder as the {layout} layout, not {report.layout}")
        load_split(report.root, summary.split)
    except CosaError as error:
        report.problems.append(str(error))
        return
    summary.cache = report.root / ".cosa" / f"labels-{summary.split}.json"


# --- VOC ---------------------------------------------------------------------------------------


def prepare_voc(root: str | Path) -> PrepareReport:
    """Check a VOC 2012 + SBD tree split by split and cache the labels of the complete splits."""
    root = _existing_dir(root)
    report = PrepareReport(root, "voc")
    if not (root / "JPEGImages").is_dir():
        report.problems.append(
            f"{root / 'JPEGImages'}: not found — ROOT must be the VOC2012 folder of "
            "VOCtrainval_11-May-2012.tar (VOCdevkit/VOC2012)"
        )
        return report
    if not (root / "SegmentationClassAug").is_dir():
        report.problems.append(_missing_aug_message(root))
    for split in VOC_SPLITS:
        _check_voc_split(report, split)
    return report


def _missing_aug_message(root: Path) -> str:
    target = root / "SegmentationClassAug"
    if (root / "SegmentationClass").is_dir():
        return (
            f"{target}: not found — SegmentationClass/ here holds only the official VOC masks "
            f"(2,913 images); train_aug's 10,582 images need SBD's augmented masks (SegmentationClassAug), "
            f"which must be unpacked to {target}/"
        )
    return f"{target}: not found — unpack SBD's augmented masks (SegmentationClassAug) to {target}/"


def _voc_list(root: Path, split: str) -> Path | None:
    """The split list, looked for where :func:`load_split` looks, in the same order."""
    candidates = (
        root / "ImageSets" / "SegmentationAug" / f"{split}.txt",
        root / "ImageSets" / "Segmentation" / f"{split}.txt",
        root / f"{split}.txt",
    )
    return next((path for path in candidates if path.is_file()), None)


def _any_file(folder: Path, name: str, suffixes: tuple[str, ...]) -> bool:
    return any((folder / f"{name}{suffix}").is_file() for suffix in suffixes)


def _check_voc_split(report: PrepareReport, split: str) -> None:
    root = report.root
    listing = _voc_list(root, split)
    if listing is None:
        source = "comes with SegmentationClassAug" if split == "train_aug" else "comes with VOC 2012"
        report.problems.append(
            f"{root / 'ImageSets' / 'Segmentation' / split}.txt: split list not found "
            f"({split}.txt {source}; put it in ImageSets/Segmentation/)"
        )
        return
    names = _read_list(listing)
    # The image suffixes and mask folders load_split tries.
    no_image = [name for name in names if not _any_file(root / "JPEGImages", name, (".jpg", ".png", ".jpeg"))]
    no_mask = [
        name
        for name in names
        if not any(
            _any_file(root / folder, name, (".png",)) for folder in ("SegmentationClassAug", "SegmentationClass")
        )
    ]
    if no_image:
        report.problems.append(
            f"{listing}: {len(no_image)} of {len(names)} listed images are missing from "
            f"JPEGImages/ ({_examples([f'{name}.jpg' for name in no_image])})"
        )
    if no_mask:
        examples = _examples([f"{name}.png" for name in no_mask])
        report.problems.append(
            f"{listing}: {len(no_mask)} of {len(names)} listed images have no mask in "
            f"SegmentationClassAug/ or SegmentationClass/ ({examples})"
        )
    summary = SplitSummary(split, len(names), len(names) - len(no_image), len(names) - len(no_mask))
    report.splits.append(summary)
    if not no_image and not no_mask:
        _cache_labels(report, summary)


# --- COCO --------------------------------------------------------------------------------------


def prepare_coco(root: str | Path, annotations: str | Path | None = None, overwrite: bool = False) -> PrepareReport:
    """Write the semantic masks and lists of COCO 2014 train and val, then cache their labels.

    Masks already on disk are kept unless ``overwrite``, so an interrupted run resumes.
    """
    root = _existing_dir(root)
    coco_api = _coco_api()
    annotations = Path(annotations).expanduser() if annotations else root / "annotations"
    report = PrepareReport(root, "coco")
    for split, year in COCO_SPLITS.items():
        _prepare_coco_split(report, split, year, annotations / f"instances_{year}.json", overwrite, coco_api)
    return report


def _coco_api():
    try:
        from pycocotools.coco import COCO
    except ImportError:
        raise CosaError("prepare-coco needs pycocotools: pip install pycocotools (or 'cosa[coco]')") from None
    return COCO


def _load_coco(path: Path, coco_api):
    """Read an instances file into a pycocotools index, with a one-line error for a bad file."""
    try:
        dataset = json.loads(path.read_text())
        if not isinstance(dataset, dict) or not {"images", "annotations", "categories"} <= dataset.keys():
            raise ValueError("expected the keys images, annotations and categories")
    except (OSError, ValueError) as error:
        raise CosaError(f"{path}: not a COCO instances file ({error})") from None
    coco = coco_api()
    coco.dataset = dataset
    with contextlib.redirect_stdout(io.StringIO()):  # pycocotools prints its progress
        try:
            coco.createIndex()
        except (KeyError, TypeError) as error:
            raise CosaError(f"{path}: not a COCO instances file (bad entry, missing {error})") from None
    return coco


def _category_labels(coco, path: Path) -> dict[int, int]:
    """Category id → mask label; the file's categories must be COCO's own (id and name)."""
    official = dict(zip(COCO_CATEGORY_IDS, COCO_CLASSES))
    for category in coco.cats.values():
        if official.get(category["id"]) != category["name"]:
            raise CosaError(
                f"{path}: category {category['id']} '{category['name']}' is not one of the 80 COCO 2014 categories"
            )
    return {category_id: label for label, category_id in enumerate(COCO_CATEGORY_IDS, start=1)}


def _semantic_mask(coco, image: dict, labels: dict[int, int], path: Path) -> np.ndarray:
    """One image's H×W label mask: crowd 255 first, then instances largest first (smaller wins)."""
    mask = np.zeros((image["height"], image["width"]), np.uint8)
    instances = []
    for annotation in coco.imgToAnns[image["id"]]:
        if annotation["category_id"] not in labels:
            raise CosaError(
                f"{path}: annotation {annotation['id']} has category {annotation['category_id']}, "
                "which is not a COCO category"
            )
        try:
            pixels = coco.annToMask(annotation).astype(bool)
        except (KeyError, TypeError, ValueError, IndexError) as error:
            raise CosaError(
                f"{path}: annotation {annotation['id']}: cannot rasterise its segmentation ({error!r})"
            ) from None
        if annotation.get("iscrowd"):
            mask[pixels] = IGNORE_INDEX
        else:
            instances.append((-int(pixels.sum()), annotation["id"], pixels, labels[annotation["category_id"]]))
    for _, _, pixels, label in sorted(instances, key=lambda item: item[:2]):
        mask[pixels] = label
    return mask


def _coco_image_dir(root: Path, year: str) -> Path | None:
    """The image folder, looked for where :func:`load_split` looks."""
    return next((folder for folder in (root / year, root / "JPEGImages" / year) if folder.is_dir()), None)


def _prepare_coco_split(report: PrepareReport, split: str, year: str, path: Path, overwrite: bool, coco_api) -> None:
    root = report.root
    image_dir = _coco_image_dir(root, year)
    if image_dir is None:
        report.problems.append(f"{root / year}: COCO image folder not found (unzip {year}.zip into {root})")
    if not path.is_file():
        report.problems.append(
            f"{path}: annotation file not found (unzip annotations_trainval2014.zip "
            f"into {root}, or give its folder with --annotations)"
        )
    if image_dir is None or not path.is_file():
        return
    coco = _load_coco(path, coco_api)
    labels = _category_labels(coco, path)
    images = sorted(
        (image for image in coco.imgs.values() if coco.imgToAnns[image["id"]]), key=lambda image: image["file_name"]
    )
    summary = SplitSummary(split, len(images), 0, len(images))
    report.splits.append(summary)
    mask_dir = root / "SegmentationClass" / year
    for image in tqdm(images, desc=f"{year} masks", unit="image"):
        target = mask_dir / f"{Path(image['file_name']).stem}.png"
        if target.is_file() and not overwrite:
            summary.kept += 1
            continue
        write_mask(target, _semantic_mask(coco, image, labels, path))
        summary.written += 1
    names = [Path(image["file_name"]).stem for image in images]
    (root / f"{split}.txt").write_text("".join(f"{name}\n" for name in names))
    absent = [image["file_name"] for image in images if not (image_dir / image["file_name"]).is_file()]
    summary.images = len(images) - len(absent)
    if absent:
        report.problems.append(
            f"{image_dir}: {len(absent)} of {len(images)} annotated images are missing ({_examples(absent)})"
        )
        return
    _cache_labels(report, summary)
