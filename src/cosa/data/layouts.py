"""Dataset layouts on disk, all read into one :class:`DatasetSplit`.

Three layouts are recognised by ``detect_layout``:

- ``folder`` — users' own data: ``classes.txt``, ``images/``, optional ``masks/``,
  ``{split}.csv`` with columns ``image,labels`` (labels ``;``-separated class names);
- ``voc`` — PASCAL VOC 2012 + SBD: ``JPEGImages/``, ``SegmentationClassAug/`` (or
  ``SegmentationClass/``), lists ``ImageSets/Segmentation{,Aug}/{split}.txt``;
- ``coco`` — COCO 2014 as the CoSA release lays it out: ``{train,val}2014/`` (optionally under
  ``JPEGImages/``), ``SegmentationClass/{train,val}2014/`` with 81 labels, optional lists
  ``{split}.txt``.

For VOC and COCO the image labels are the classes present in the masks, as in the released
code; they are computed once and cached in ``ROOT/.cosa/labels-{split}.json``.
"""

from __future__ import annotations

import csv
import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from cosa.data import IMAGE_SUFFIXES
from cosa.data.classes import COCO_CLASSES, VOC_CLASSES
from cosa.data.io import IGNORE_INDEX
from cosa.errors import CosaError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Sample:
    name: str
    image: Path
    labels: tuple[int, ...]  # foreground class indices 0..C-1
    mask: Path | None = None
    context: Path | None = None  # synthetic data only: class-tied context pixels


@dataclass
class DatasetSplit:
    root: Path
    layout: str
    split: str
    class_names: tuple[str, ...]
    samples: list[Sample] = field(default_factory=list)
    # Synthetic data: context id (its pixel value in context/NAME.png) → tied class index 0..C-1.
    context_classes: dict[int, int] = field(default_factory=dict)

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def has_masks(self) -> bool:
        return bool(self.samples) and all(sample.mask is not None for sample in self.samples)


def detect_layout(root: Path) -> str:
    if (root / "classes.txt").is_file():
        return "folder"
    if (root / "JPEGImages").is_dir() and ((root / "SegmentationClassAug").is_dir() or (root / "ImageSets").is_dir()):
        return "voc"
    if (root / "SegmentationClass" / "train2014").is_dir() or (root / "SegmentationClass" / "val2014").is_dir():
        return "coco"
    raise CosaError(
        f"{root}: cannot tell the dataset layout (expected classes.txt for a folder dataset, "
        "JPEGImages/ + SegmentationClassAug/ for VOC, or SegmentationClass/train2014/ for COCO)"
    )


def load_split(root: str | Path, split: str, problems: list[str] | None = None) -> DatasetSplit:
    """Read one split of the dataset at ``root`` (layout detected from its contents).

    Bad entries raise :class:`CosaError`; with a ``problems`` list they are recorded there and
    skipped instead, so that ``cosa data check`` can report all of them at once.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise CosaError(f"{root}: dataset directory not found")
    layout = detect_layout(root)
    reader = {"folder": _read_folder, "voc": _read_voc, "coco": _read_coco}[layout]
    dataset = reader(root, split, problems)
    if not dataset.samples:
        raise CosaError(f"{root}: split '{split}' has no images")
    return dataset


def _report(problems: list[str] | None, message: str) -> None:
    if problems is None:
        raise CosaError(message)
    problems.append(message)


# --- folder ------------------------------------------------------------------------------------

def read_class_names(path: Path) -> tuple[str, ...]:
    try:
        lines = path.read_text(encoding="utf-8-sig").splitlines()
    except OSError as error:
        raise CosaError(f"{path}: cannot read class list ({error.strerror})") from None
    names = tuple(line.strip() for line in lines if line.strip())
    if not names:
        raise CosaError(f"{path}: no class names")
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise CosaError(f"{path}: duplicate class names {duplicates}")
    if "background" in names:
        raise CosaError(f"{path}: list foreground classes only; 'background' is label 0")
    return names


def _leaves_root(relative: str) -> bool:
    candidate = Path(relative)
    return candidate.is_absolute() or ".." in candidate.parts


def _read_folder(root: Path, split: str, problems: list[str] | None) -> DatasetSplit:
    class_names = read_class_names(root / "classes.txt")
    index = {name: i for i, name in enumerate(class_names)}
    table = root / f"{split}.csv"
    if not table.is_file():
        available = sorted(path.stem for path in root.glob("*.csv"))
        raise CosaError(f"{table}: split file not found (splits here: {', '.join(available) or 'none'})")
    samples = []
    with open(table, newline="", encoding="utf-8-sig") as handle:
        reader = csv.DictReader(handle)
        if not reader.fieldnames or not {"image", "labels"} <= set(reader.fieldnames):
            raise CosaError(f"{table}: header must contain the columns image,labels")
        for line, row in enumerate(reader, start=2):
            source = f"{table}:{line}"
            image_name = (row["image"] or "").strip()
            names = [name.strip() for name in (row["labels"] or "").split(";") if name.strip()]
            unknown = [name for name in names if name not in index]
            if not image_name:
                _report(problems, f"{source}: empty image name")
                continue
            if _leaves_root(image_name):
                _report(problems, f"{source}: image path '{image_name}' leaves the dataset directory")
                continue
            if unknown:
                _report(problems, f"{source}: unknown class name(s) {unknown} (not in classes.txt)")
                continue
            stem = Path(image_name).with_suffix("").as_posix()
            mask = root / "masks" / f"{stem}.png"
            context = root / "context" / f"{stem}.png"
            samples.append(
                Sample(
                    name=stem,
                    image=root / "images" / image_name,
                    labels=tuple(sorted({index[name] for name in names})),
                    mask=mask if mask.is_file() else None,
                    context=context if context.is_file() else None,
                )
            )
    return DatasetSplit(root, "folder", split, class_names, samples, _read_context_classes(root, index))


def _read_context_classes(root: Path, index: dict[str, int]) -> dict[int, int]:
    """The class-tied contexts the synthetic generator recorded in ``context.json``, if any."""
    path = root / "context.json"
    if not path.is_file():
        return {}
    try:
        contexts = json.loads(path.read_text())["contexts"]
        return {int(entry["id"]): index[entry["class"]] for entry in contexts}
    except (ValueError, KeyError, TypeError) as error:
        raise CosaError(f"{path}: not a valid context description ({error!r})") from None


# --- VOC and COCO: labels from masks ---------------------------------------------------------

def _labels_from_mask(path: Path, num_classes: int) -> tuple[int, ...]:
    try:
        with Image.open(path) as image:
            values = np.unique(np.asarray(image))
    except (OSError, ValueError) as error:
        raise CosaError(f"{path}: cannot read mask ({error})") from None
    return tuple(int(v) - 1 for v in values if 1 <= v <= num_classes and v != IGNORE_INDEX)


def _labels_or_report(mask: Path | None, num_classes: int, problems: list[str] | None) -> tuple[int, ...]:
    if mask is None:
        return ()
    try:
        return _labels_from_mask(mask, num_classes)
    except CosaError as error:
        _report(problems, str(error))
        return ()


def _cached_labels(
    root: Path, split: str, masks: list[Path | None], num_classes: int, problems: list[str] | None
) -> list[tuple[int, ...]]:
    cache = root / ".cosa" / f"labels-{split}.json"
    key = [str(mask.relative_to(root)) if mask else None for mask in masks]
    if cache.is_file():
        try:
            stored = json.loads(cache.read_text())
            if stored.get("masks") == key:
                return [tuple(labels) for labels in stored["labels"]]
        except (ValueError, KeyError):
            log.warning("%s: ignoring an unreadable label cache", cache)
    labels = [_labels_or_report(mask, num_classes, problems) for mask in masks]
    try:
        cache.parent.mkdir(exist_ok=True)
        cache.write_text(json.dumps({"masks": key, "labels": [list(item) for item in labels]}))
    except OSError:
        log.warning("%s: cannot write the label cache; labels will be recomputed next time", cache)
    return labels


def _read_list(path: Path) -> list[str]:
    names = []
    for line in path.read_text().splitlines():
        if line.strip():
            # SBD-style lists hold "/JPEGImages/x.jpg /SegmentationClassAug/x.png".
            names.append(Path(line.split()[0]).stem)
    return names


def _build_split(root: Path, layout: str, split: str, class_names, listed, image_dir: Path, mask_dirs,
                 problems: list[str] | None) -> DatasetSplit:
    names, images, masks = [], [], []
    for name in listed:
        image = next((image_dir / f"{name}{suffix}" for suffix in (".jpg", ".png", ".jpeg") if (image_dir / f"{name}{suffix}").is_file()), None)
        if image is None:
            _report(problems, f"{image_dir / name}.jpg: image listed in split '{split}' not found")
            continue
        names.append(name)
        images.append(image)
        masks.append(next((d / f"{name}.png" for d in mask_dirs if (d / f"{name}.png").is_file()), None))
    labels = _cached_labels(root, split, masks, len(class_names), problems)
    samples = [Sample(name, image, label, mask) for name, image, label, mask in zip(names, images, labels, masks)]
    return DatasetSplit(root, layout, split, tuple(class_names), samples)


def _read_voc(root: Path, split: str, problems: list[str] | None) -> DatasetSplit:
    candidates = [root / "ImageSets" / "SegmentationAug" / f"{split}.txt",
                  root / "ImageSets" / "Segmentation" / f"{split}.txt",
                  root / f"{split}.txt"]
    listing = next((path for path in candidates if path.is_file()), None)
    if listing is None:
        raise CosaError(f"{candidates[1]}: split list '{split}' not found (looked in ImageSets/Segmentation{{,Aug}}/ and {root})")
    mask_dirs = [root / "SegmentationClassAug", root / "SegmentationClass"]
    return _build_split(root, "voc", split, VOC_CLASSES, _read_list(listing), root / "JPEGImages", mask_dirs, problems)


def _read_coco(root: Path, split: str, problems: list[str] | None) -> DatasetSplit:
    year_dir = "train2014" if split.startswith("train") else "val2014"
    image_dir = next((d for d in (root / year_dir, root / "JPEGImages" / year_dir) if d.is_dir()), None)
    if image_dir is None:
        raise CosaError(f"{root / year_dir}: COCO image directory not found")
    mask_dir = root / "SegmentationClass" / year_dir
    listing = next((p for p in (root / f"{split}.txt", root / "ImageSets" / f"{split}.txt") if p.is_file()), None)
    if listing is not None:
        names = _read_list(listing)
    elif split in ("train", "val"):
        source = mask_dir if mask_dir.is_dir() else image_dir
        names = sorted(path.stem for path in source.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise CosaError(f"{root / split}.txt: split list '{split}' not found")
    return _build_split(root, "coco", split, COCO_CLASSES, names, image_dir, [mask_dir], problems)
