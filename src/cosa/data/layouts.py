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

EXIF orientation: folder images (and ``cosa predict`` inputs) are rotated by their EXIF tag, so
their masks must match the image as displayed; VOC and COCO images are read with pixels as
stored, like the released code, because their masks are in stored order.
"""

from __future__ import annotations

import csv
import io
import json
import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Protocol

import torch

from cosa.data import IMAGE_SUFFIXES
from cosa.data.classes import COCO_CLASSES, VOC_CLASSES
from cosa.data.io import IGNORE_INDEX, read_mask
from cosa.data.synthetic_metrics import Coexistence, read_tied_contexts
from cosa.errors import CosaError
from cosa.outputs import layout_of

log = logging.getLogger(__name__)

# Masks are 8-bit: label 0 is background, 255 ignore, so 1..254 are the classes.
MAX_CLASSES = IGNORE_INDEX - 1


class SplitMetric(Protocol):
    """A metric a dataset adds to the evaluation of its splits (:func:`cosa.engine.evaluate.evaluate`).

    ``update`` sees each evaluated image: its sample, its mask and the predictions (H×W labels on
    the CPU, by kind: ``unmasked``, ``tag_masked``, ``cam``, ``cpl``). ``counts`` (int64) is summed
    over processes before ``result`` turns it into the numbers to report.
    """

    counts: torch.Tensor

    def update(self, sample: Sample, mask: torch.Tensor, predictions: Mapping[str, torch.Tensor]) -> None: ...

    def result(self) -> dict[str, float]: ...


@dataclass(frozen=True)
class Sample:
    name: str
    image: Path
    labels: tuple[int, ...]  # foreground class indices 0..C-1
    mask: Path | None = None
    context: Path | None = None  # class-tied context pixels, where marked (cosa.data.synthetic_metrics)


@dataclass
class DatasetSplit:
    root: Path
    layout: str
    split: str
    class_names: tuple[str, ...]
    samples: list[Sample] = field(default_factory=list)
    # Metrics of the dataset's own that every evaluation adds (e.g. the synthetic data's coexistence):
    # each call gives a fresh accumulator.
    extra_metrics: tuple[Callable[[], SplitMetric], ...] = field(default=(), compare=False)
    # Where masks are looked for (NAME.png in the first that has it), for ``cosa.data.check`` to
    # name files there that are not read because of their format or name.
    mask_dirs: tuple[Path, ...] = ()

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def exif_orientation(self) -> bool:
        """Whether images are read rotated by their EXIF tag: not for VOC and COCO (masks in stored order)."""
        return self.layout not in ("voc", "coco")

    @property
    def has_masks(self) -> bool:
        return bool(self.samples) and all(sample.mask is not None for sample in self.samples)


def detect_layout(root: Path) -> str:
    layout = layout_of(root)
    if layout is not None:
        return layout
    # A folder inside a dataset (its images/ or JPEGImages/), or above one (VOCdevkit/), given for
    # the dataset: name the root.
    found = next((folder for folder in root.resolve().parents if layout_of(folder)), None)
    found = found or next((folder for folder in _folders_below(root, depth=2) if layout_of(folder)), None)
    hint = f" (is the dataset root {found}?)" if found is not None else ""
    raise CosaError(
        f"{root}: cannot tell the dataset layout (expected classes.txt for a folder dataset, "
        f"JPEGImages/ + SegmentationClassAug/ for VOC, or SegmentationClass/train2014/ for COCO){hint}"
    )


def _folders_below(root: Path, depth: int) -> list[Path]:
    """The folders up to ``depth`` levels below ``root``, nearest first, in name order."""
    level, found = [root], []
    for _ in range(depth):
        try:
            level = [child for folder in level for child in sorted(folder.iterdir()) if child.is_dir()]
        except OSError:
            break
        found += level
    return found


def available_splits(root: Path, layout: str) -> list[str]:
    if layout == "folder":
        return sorted(path.stem for path in root.glob("*.csv"))
    if layout == "voc":
        lists = [
            *(root / "ImageSets" / "Segmentation").glob("*.txt"),
            *(root / "ImageSets" / "SegmentationAug").glob("*.txt"),
        ]
        return sorted({path.stem for path in lists})
    return sorted({"train", "val", *(path.stem for path in root.glob("*.txt"))})


# Where a layout lists the images of a split.
SPLIT_LISTS = {"folder": "{split}.csv", "voc": "ImageSets/Segmentation/{split}.txt", "coco": "{split}.txt"}


def dataset_root(root: str | Path) -> Path:
    """``root`` as a path, when it is a folder: a dataset root (``--data``, ``cosa data …``) must be one."""
    root = Path(root).expanduser()
    if root.exists() and not root.is_dir():
        raise CosaError(f"{root}: is a file, not a dataset folder")
    if not root.is_dir():
        raise CosaError(f"{root}: dataset directory not found")
    return root


def load_split(root: str | Path, split: str, problems: list[str] | None = None) -> DatasetSplit:
    """Read one split of the dataset at ``root`` (layout detected from its contents).

    Bad entries raise :class:`CosaError`; with a ``problems`` list they are recorded there and
    skipped instead, so that ``cosa data check`` can report all of them at once.
    """
    root = dataset_root(root)
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
    """The class names of ``classes.txt``, one a line; spaces around a name are dropped (as in the CSVs)."""
    names = tuple(line.strip() for line in _read_text(path, "class list").splitlines() if line.strip())
    if not names:
        raise CosaError(f"{path}: no class names")
    if len(names) > MAX_CLASSES:
        raise CosaError(
            f"{path}: {len(names)} class names, at most {MAX_CLASSES} (masks are 8-bit: "
            f"0 is background, 1..{MAX_CLASSES} the classes, {IGNORE_INDEX} ignore)"
        )
    for name in names:
        separator = next((character for character in ";," if character in name), None)
        if separator:
            raise CosaError(
                f"{path}: class name '{name}' contains '{separator}', which separates "
                f"{'class names' if separator == ';' else 'columns'} in the split CSVs"
            )
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise CosaError(f"{path}: duplicate class names {duplicates}")
    if "background" in names:
        raise CosaError(f"{path}: list foreground classes only; 'background' is label 0")
    return names


def _read_text(path: Path, what: str) -> str:
    """A UTF-8 text file (a BOM is dropped); unreadable or undecodable files are one-line errors."""
    try:
        return path.read_text(encoding="utf-8-sig")
    except OSError as error:
        raise CosaError(f"{path}: cannot read {what} ({error.strerror})") from None
    except UnicodeDecodeError as error:
        raise CosaError(f"{path}: {what} is not UTF-8 text (byte {error.start})") from None


def _is_file(path: Path) -> bool:
    """Whether ``path`` is a file; a folder we may not search is an error, not a missing file."""
    try:
        return path.is_file()
    except PermissionError as error:
        raise CosaError(f"{path.parent}: cannot read folder ({error.strerror})") from None


def _leaves_root(relative: str) -> bool:
    candidate = Path(relative)
    return candidate.is_absolute() or ".." in candidate.parts


def _repeated(seen: dict[str, str], name: str, source: str) -> str | None:
    """Where ``name`` was listed before (``None`` the first time); records ``source`` for it.

    A split lists each image once: a repeat is a copy-paste slip or two conflicting label sets,
    and sample names key every per-image output (pseudo-label masks, predictions).
    """
    first = seen.setdefault(name, source)
    return None if first == source else first


def _read_folder(root: Path, split: str, problems: list[str] | None) -> DatasetSplit:
    class_names = read_class_names(root / "classes.txt")
    index = {name: i for i, name in enumerate(class_names)}
    table = root / f"{split}.csv"
    if not table.is_file():
        available = sorted(path.stem for path in root.glob("*.csv"))
        raise CosaError(f"{table}: split file not found (splits here: {', '.join(available) or 'none'})")
    samples, seen = [], {}
    for source, row in _csv_rows(table):
        image_name = (row["image"] or "").strip()
        names = [name.strip() for name in (row["labels"] or "").split(";") if name.strip()]
        unknown = [name for name in names if name not in index]
        stem = Path(image_name).with_suffix("").as_posix() if Path(image_name).name else ""
        if None in row:
            _report(problems, f"{source}: more fields than the header's {len(row) - 1} (separate class names with ';')")
        elif not stem:
            _report(problems, f"{source}: empty image name")
        elif _leaves_root(image_name):
            _report(problems, f"{source}: image path '{image_name}' leaves the dataset directory")
        elif unknown:
            _report(problems, unknown_class_names(source, unknown, class_names, "not in classes.txt"))
        elif first := _repeated(seen, stem, source):
            _report(problems, f"{source}: image '{stem}' is already listed at {first}")
        else:
            samples.append(_folder_sample(root, stem, image_name, tuple(sorted({index[name] for name in names}))))
    tied = read_tied_contexts(root, index)
    metrics = (partial(Coexistence, tied, class_names),) if tied else ()
    return DatasetSplit(root, "folder", split, class_names, samples, metrics, mask_dirs=(root / "masks",))


def require_label_table_header(table: Path, reader: csv.DictReader) -> None:
    """A label table (a split CSV, ``predict --tags``) starts with the header ``image,labels``;
    spaces around the names are dropped. A refusal says what the first line holds instead."""
    fields = [name.strip() for name in reader.fieldnames or []]
    reader.fieldnames = fields
    if {"image", "labels"} <= set(fields):
        return
    if len(fields) == 1 and ";" in fields[0]:
        why = "its fields are separated by ';': separate the two columns with ',' (and class names with ';')"
    elif any(Path(name).suffix.lower() in IMAGE_SUFFIXES for name in fields):
        why = "the first line is a row: add the line image,labels above it"
    else:
        why = f"its first line holds {fields}"
    raise CosaError(f"{table}: header must contain the columns image,labels; {why}")


def unknown_class_names(table_line: str, unknown: list[str], class_names: Sequence[str], whose: str) -> str:
    """``FILE:LINE: unknown class name(s) [...] (not in classes.txt)``, with the class meant when
    only the case differs."""
    by_case = {name.lower(): name for name in class_names}
    meant = [by_case[name.lower()] for name in unknown if name.lower() in by_case]
    hint = f"; did you mean {', '.join(map(repr, meant))}? class names are case-sensitive" if meant else ""
    return f"{table_line}: unknown class name(s) {unknown} ({whose}{hint})"


def _csv_rows(table: Path) -> list[tuple[str, dict]]:
    """``(file:line, row)`` of a split CSV; extra columns are kept in the row and ignored."""
    reader = csv.DictReader(io.StringIO(_read_text(table, "split file"), newline=""))
    try:
        require_label_table_header(table, reader)
        return [(f"{table}:{reader.line_num}", row) for row in reader]
    except csv.Error as error:
        raise CosaError(f"{table}:{reader.line_num}: not a valid CSV ({error})") from None


def _folder_sample(root: Path, stem: str, image_name: str, labels: tuple[int, ...]) -> Sample:
    mask = root / "masks" / f"{stem}.png"
    context = root / "context" / f"{stem}.png"
    return Sample(
        name=stem,
        image=root / "images" / image_name,
        labels=labels,
        mask=mask if _is_file(mask) else None,
        context=context if _is_file(context) else None,
    )


# --- VOC and COCO: labels from masks ---------------------------------------------------------


def _labels_from_mask(path: Path, num_classes: int) -> tuple[int, ...]:
    values = read_mask(path).unique().tolist()
    return tuple(v - 1 for v in values if 1 <= v <= num_classes)


def _labels_or_report(mask: Path | None, num_classes: int, problems: list[str] | None) -> tuple[int, ...]:
    if mask is None:
        return ()
    try:
        return _labels_from_mask(mask, num_classes)
    except CosaError as error:
        _report(problems, str(error))
        return ()


def _mask_identity(root: Path, mask: Path | None) -> list | None:
    """What the label cache remembers of a mask: its name, and its size and time to notice edits."""
    if mask is None:
        return None
    try:
        stat = mask.stat()
    except OSError:
        return [str(mask.relative_to(root))]  # unreadable: reported when its labels are computed
    return [str(mask.relative_to(root)), stat.st_size, stat.st_mtime_ns]


def _cached_labels(
    root: Path, split: str, masks: list[Path | None], num_classes: int, problems: list[str] | None
) -> list[tuple[int, ...]]:
    cache = root / ".cosa" / f"labels-{split}.json"
    key = [_mask_identity(root, mask) for mask in masks]
    if cache.is_file():
        try:
            stored = json.loads(cache.read_text())
            if stored.get("masks") == key:
                return [tuple(labels) for labels in stored["labels"]]
        except (ValueError, KeyError):
            log.warning("%s: ignoring an unreadable label cache", cache)
    reported = len(problems or ())
    labels = [_labels_or_report(mask, num_classes, problems) for mask in masks]
    if len(problems or ()) > reported:
        return labels  # not cached: the unreadable masks' labels would stay empty once they are fixed
    try:
        cache.parent.mkdir(exist_ok=True)
        cache.write_text(json.dumps({"masks": key, "labels": [list(item) for item in labels]}))
    except OSError:
        log.warning("%s: cannot write the label cache; labels will be recomputed next time", cache)
    return labels


def _read_list(path: Path, problems: list[str] | None = None) -> list[str]:
    """The image names of a split list, one per line.

    SBD-style lines hold "/JPEGImages/x.jpg /SegmentationClassAug/x.png": only the first entry's
    stem is used, so a listed name always resolves inside the image and mask folders. Entries
    with ``..`` are refused all the same, as signs of a list made for another tree.
    """
    names, seen = [], {}
    for number, line in enumerate(_read_text(path, "split list").splitlines(), start=1):
        if not line.strip():
            continue
        entry, source = line.split()[0], f"{path}:{number}"
        name = Path(entry).stem
        if ".." in Path(entry).parts:
            _report(problems, f"{source}: image path '{entry}' leaves the dataset directory")
        elif first := _repeated(seen, name, source):
            _report(problems, f"{source}: image '{name}' is already listed at {first}")
        else:
            names.append(name)
    return names


def _build_split(
    root: Path, layout: str, split: str, class_names, listed, image_dir: Path, mask_dirs, problems: list[str] | None
) -> DatasetSplit:
    names, images, masks = [], [], []
    for name in listed:
        image = next(
            (
                image_dir / f"{name}{suffix}"
                for suffix in (".jpg", ".png", ".jpeg")
                if _is_file(image_dir / f"{name}{suffix}")
            ),
            None,
        )
        if image is None:
            _report(problems, f"{image_dir / name}.jpg: image listed in split '{split}' not found")
            continue
        names.append(name)
        images.append(image)
        masks.append(next((d / f"{name}.png" for d in mask_dirs if _is_file(d / f"{name}.png")), None))
    labels = _cached_labels(root, split, masks, len(class_names), problems)
    samples = [Sample(name, image, label, mask) for name, image, label, mask in zip(names, images, labels, masks)]
    return DatasetSplit(root, layout, split, tuple(class_names), samples, mask_dirs=tuple(mask_dirs))


def _read_voc(root: Path, split: str, problems: list[str] | None) -> DatasetSplit:
    candidates = [
        root / "ImageSets" / "SegmentationAug" / f"{split}.txt",
        root / "ImageSets" / "Segmentation" / f"{split}.txt",
        root / f"{split}.txt",
    ]
    listing = next((path for path in candidates if path.is_file()), None)
    if listing is None:
        raise CosaError(
            f"{candidates[1]}: split list '{split}' not found (looked in ImageSets/Segmentation{{,Aug}}/ and {root})"
        )
    mask_dirs = [root / "SegmentationClassAug", root / "SegmentationClass"]
    names = _read_list(listing, problems)
    return _build_split(root, "voc", split, VOC_CLASSES, names, root / "JPEGImages", mask_dirs, problems)


def _read_coco(root: Path, split: str, problems: list[str] | None) -> DatasetSplit:
    year_dir = "train2014" if split.startswith("train") else "val2014"
    image_dir = next((d for d in (root / year_dir, root / "JPEGImages" / year_dir) if d.is_dir()), None)
    if image_dir is None:
        raise CosaError(f"{root / year_dir}: COCO image directory not found")
    mask_dir = root / "SegmentationClass" / year_dir
    listing = next((p for p in (root / f"{split}.txt", root / "ImageSets" / f"{split}.txt") if p.is_file()), None)
    if listing is not None:
        names = _read_list(listing, problems)
    elif split in ("train", "val"):
        source = mask_dir if mask_dir.is_dir() else image_dir
        names = sorted(path.stem for path in source.iterdir() if path.suffix.lower() in IMAGE_SUFFIXES)
    else:
        raise CosaError(f"{root / split}.txt: split list '{split}' not found")
    return _build_split(root, "coco", split, COCO_CLASSES, names, image_dir, [mask_dir], problems)
