"""Checking a dataset: ``cosa data check`` lists every problem at once, ``cosa train`` stops at one.

Two levels of checks, one set of rules:

- :func:`split_findings` judges the training and validation splits from what loading them reads
  anyway: file lists, label tables, which masks exist, the names in the mask folders; and
  :func:`sampled_mask_findings` reads a few masks of each. They cost seconds, so ``cosa train``
  runs them (:func:`training_data`) before it builds a model or makes a run folder, and
  ``cosa data check`` runs the first on every split.
- :func:`check_dataset` also reads every image and mask of every split: unreadable files, masks
  of the wrong size, masks whose values cannot be labels, copies of training images among the
  validation images.

A *problem* makes ``cosa data check`` exit with status 1 and is fatal for ``cosa train``; a
*warning* is printed (or logged) and nothing stops. docs/reliability.md gives each one's reason.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import torch

from cosa.config.load import load_config
from cosa.config.schema import Config, DataConfig, MethodConfig
from cosa.data import IMAGE_SUFFIXES
from cosa.data.io import IGNORE_INDEX, read_image, read_mask
from cosa.data.layouts import (
    SPLIT_LISTS,
    DatasetSplit,
    Sample,
    available_splits,
    dataset_root,
    detect_layout,
    load_split,
)
from cosa.data.statistics import SplitStatistics
from cosa.errors import CosaError

log = logging.getLogger(__name__)

# The split that training evaluates on: data.val_split of the schema and of every preset.
VALIDATION_SPLIT = DataConfig.val_split
# The splits the presets train on (data.train_split: voc; coco, demo, own), in the order
# ``cosa data check`` takes its training split from.
TRAINING_SPLITS = ("train_aug", "train")
# The preset made for each layout, suggested when a config's training split is not in the dataset.
LAYOUT_PRESETS = {"folder": "own", "voc": "voc", "coco": "coco"}
# Layouts whose image labels are the classes in the masks (VOC and COCO, as released).
LABELS_FROM_MASKS = {"voc": "VOC", "coco": "COCO"}
SHOWN = 5  # names shown in a finding about many images
# Masks per split that ``cosa train`` reads before it starts (sampled_mask_findings).
SAMPLED_MASKS = 32


@dataclass(frozen=True)
class Finding:
    message: str
    problem: bool  # True: data check exits with 1 and train stops; False: a warning


def _problem(message: str) -> Finding:
    return Finding(message, problem=True)


def _warning(message: str) -> Finding:
    return Finding(message, problem=False)


def _some(names: list[str]) -> str:
    return ", ".join(names[:SHOWN]) + (", …" if len(names) > SHOWN else "")


def _images(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"


def _class_indices(split: DatasetSplit) -> str:
    """``cat=1, dog=2, …``: the value each class takes in a mask."""
    return _some([f"{name}={index}" for index, name in enumerate(split.class_names, start=1)])


# --- split-level findings (shared by cosa train and cosa data check) -----------------------------


def split_findings(train: DatasetSplit, validation: DatasetSplit | None, recipe: str) -> list[Finding]:
    """What is wrong with training on ``train`` and evaluating on ``validation`` with ``recipe``,
    from the file lists, label tables and mask folders alone (no pixel is decoded)."""
    findings = [*missing_image_findings(train), *training_findings(train, recipe), *mask_name_findings(train)]
    if validation is not None:
        if validation.split != train.split:
            findings += missing_image_findings(validation)
        findings += validation_findings(validation) + overlap_findings(train, validation)
        if validation.split != train.split:
            findings += mask_name_findings(validation)
    return findings


def missing_image_findings(split: DatasetSplit) -> list[Finding]:
    """Listed images that are not there: reading them would stop a run hours in. One ``stat`` per
    image; the first missing one is matched against its folder for the usual cause."""
    missing = [sample.image for sample in split.samples if not sample.image.is_file()]
    if not missing:
        return []
    names = [str(path.relative_to(split.root)) if path.is_relative_to(split.root) else str(path) for path in missing]
    verb = "is" if len(missing) == 1 else "are"
    return [
        _problem(
            f"{split.root}: split '{split.split}' lists {_images(len(missing))} that {verb} not there "
            f"({_some(names)}){_near_match(missing[0], split.root / 'images')}"
        )
    ]


def _near_match(path: Path, images: Path) -> str:
    """Why ``path`` is not found, when a file beside it tells: another case, a missing extension,
    a Windows separator, or a folder dataset's name written from the root (``images/a.jpg``)."""
    if "\\" in path.name:
        return "; write paths with '/', not '\\'"
    if path.is_relative_to(images / "images"):
        written = path.relative_to(images / "images")
        if (images / written).is_file():
            return f"; image names are relative to images/: write {written.as_posix()}, not images/{written.as_posix()}"
    try:
        beside = os.listdir(path.parent)
    except OSError:
        return f"; {path.parent} is not there" if not path.parent.exists() else ""
    same_but_case = [name for name in beside if name.lower() == path.name.lower()]
    if same_but_case:
        return f"; {same_but_case[0]} is there: file names are case-sensitive"
    with_suffix = sorted(name for name in beside if Path(name).stem == path.name and Path(name).suffix)
    if not path.suffix and with_suffix:
        return f"; {with_suffix[0]} is there: write image names with their extension"
    return ""


def missing_masks(split: DatasetSplit) -> str | None:
    """``split 'val' lacks the masks of 2 of its 8 images (a, b)``, or None when none is missing."""
    missing = [sample.name for sample in split.samples if sample.mask is None]
    if not missing:
        return None
    return (
        f"split '{split.split}' lacks the masks of {len(missing)} of its {len(split.samples)} images ({_some(missing)})"
    )


def validation_findings(split: DatasetSplit) -> list[Finding]:
    """A validation split with some masks missing: evaluating only the images with masks would
    score another set than the one asked for, and skipping evaluation would hide the gap. One
    without any mask is users' unlabelled data: training goes on without evaluation."""
    lacking = missing_masks(split)
    if lacking is None or not any(sample.mask for sample in split.samples):
        return []
    return [_problem(f"{split.root}: {lacking}; evaluation needs all of them")]


def training_findings(split: DatasetSplit, recipe: str) -> list[Finding]:
    return [*_training_mask_findings(split, recipe), *_tag_findings(split)]


def _training_mask_findings(split: DatasetSplit, recipe: str) -> list[Finding]:
    lacking = missing_masks(split)
    if lacking is None:
        return []
    folder = split.mask_dirs[0].name
    if split.layout in LABELS_FROM_MASKS:
        return [
            _problem(
                f"{split.root}: {lacking}; {LABELS_FROM_MASKS[split.layout]} takes an image's labels from its mask, "
                f"so these would train as background only: add their masks to {folder}/, or remove them from the "
                "split's list"
            )
        ]
    if recipe == "supervised":
        return [
            _problem(
                f"{split.root}: {lacking}; --recipe supervised trains on the masks: add them to {folder}/, "
                "or choose a recipe that trains from the tags"
            )
        ]
    if any(sample.mask for sample in split.samples):
        return [
            _warning(f"{split.root}: {lacking}; only --recipe supervised needs them (the others train from the tags)")
        ]
    return []


def _tag_findings(split: DatasetSplit) -> list[Finding]:
    """The label table of a training split: the classifier learns a class from the images with its
    tag against those without, so a split without tags, or a tag on every image, teaches nothing."""
    if not any(sample.labels for sample in split.samples):
        if split.layout in LABELS_FROM_MASKS:
            why = (
                f"no mask of it holds a class ({LABELS_FROM_MASKS[split.layout]} takes the labels from the masks, "
                f"where 0 is background and {IGNORE_INDEX} ignore): write each object's pixels as its class's "
                f"index ({_class_indices(split)})"
            )
        else:
            why = "every labels cell is empty: tag each image with the classes it shows"
        return [
            _problem(
                f"{split.root}: no image of split '{split.split}' has a class label, so nothing can be learnt; {why}"
            )
        ]
    findings = []
    everywhere = [
        name for index, name in enumerate(split.class_names) if all(index in sample.labels for sample in split.samples)
    ]
    if everywhere:
        findings.append(
            _warning(
                f"{split.root}: {'class' if len(everywhere) == 1 else 'classes'} {', '.join(everywhere)} "
                f"tagged on every image of split '{split.split}' ({len(split.samples)}): a tag that never varies "
                "teaches the classifier nothing, so its CAMs and pseudo-labels are guesswork; add images without it"
            )
        )
    tagged = {label for sample in split.samples for label in sample.labels}
    never = [name for index, name in enumerate(split.class_names) if index not in tagged]
    if never and split.layout == "folder":  # VOC's and COCO's classes are fixed; a folder's are the user's
        noun, it = ("class", "it") if len(never) == 1 else ("classes", "them")
        findings.append(
            _warning(
                f"{split.root}: {noun} {', '.join(never)} of classes.txt tagged on no image of split "
                f"'{split.split}': the model can never predict {it}; tag the images that show {it}, or remove "
                f"{it} from classes.txt"
            )
        )
    return findings


def overlap_findings(train: DatasetSplit, validation: DatasetSplit) -> list[Finding]:
    """Images listed in both splits: a score on images the run trained on says nothing of new ones."""
    if train.split == validation.split:
        return [
            _problem(
                f"{train.root}: split '{train.split}' is both the training and the validation split; "
                "evaluate on images the run does not train on"
            )
        ]
    trained = {os.path.normpath(sample.image) for sample in train.samples}
    shared = [sample.name for sample in validation.samples if os.path.normpath(sample.image) in trained]
    if not shared:
        return []
    return [
        _problem(
            f"{train.root}: split '{validation.split}' shares {_images(len(shared))} with split '{train.split}' "
            f"({_some(shared)}); a validation score on training images is inflated: list each image in one split only"
        )
    ]


def mask_name_findings(split: DatasetSplit) -> list[Finding]:
    """Files in a mask folder that would be the mask of an image lacking one, but for their format or
    name (``a.jpg``, ``a.jpg.png``, ``A.PNG`` for ``a.png``): they are never read, so say so."""
    lacking = {sample.name.lower(): sample for sample in split.samples if sample.mask is None}
    findings = []
    for folder in split.mask_dirs:
        misnamed = []
        for path in _files_under(folder) if lacking else ():
            sample = lacking.pop(_bare_name(path.relative_to(folder)), None)
            if sample is not None:
                misnamed.append((path, folder / f"{sample.name}.png"))
        if not misnamed:
            continue
        jpeg = any(path.suffix.lower() in (".jpg", ".jpeg") for path, _ in misnamed)
        shown = _some([f"{path.relative_to(folder)} for {expected.name}" for path, expected in misnamed])
        findings.append(
            _problem(
                f"{folder}: files not read as masks of split '{split.split}', for their format or name: "
                f"{len(misnamed)} ({shown}); a mask is the PNG named after its image without the image's "
                "extension: rename them"
                + (", and save the JPEGs as PNG (JPEG compression changes label values)" if jpeg else "")
            )
        )
    return findings


def _files_under(folder: Path) -> list[Path]:
    return sorted(Path(parent, name) for parent, _, names in os.walk(folder) for name in names)


def _bare_name(relative: Path) -> str:
    """``sub/a.jpg.png`` → ``sub/a``: the name with every image extension dropped, in lower case."""
    while relative.suffix.lower() in IMAGE_SUFFIXES:
        relative = relative.with_suffix("")
    return relative.as_posix().lower()


# --- cosa train -------------------------------------------------------------------------------


class TrainingData(NamedTuple):
    train: DatasetSplit
    validation: DatasetSplit | None  # None: the run trains without evaluation


def training_data(cfg: Config) -> TrainingData:
    """The splits ``cosa train`` reads, checked before anything is built: the first problem stops
    the run (one line), warnings are logged. A missing validation split, or one without any mask,
    means training without evaluation, said once."""
    if cfg.data.root is None:
        raise CosaError("no dataset: pass --data ROOT (or set data.root)")
    root = dataset_root(cfg.data.root)
    layout = detect_layout(root)
    splits = available_splits(root, layout)
    if cfg.data.train_split not in splits:
        raise CosaError(_missing_training_split(root, layout, cfg.data.train_split, splits))
    train = load_split(root, cfg.data.train_split)
    validation = load_split(root, cfg.data.val_split) if cfg.data.val_split in splits else None
    findings = split_findings(train, validation, cfg.method.recipe)
    findings += [
        finding for split in (train, validation) if split is not None for finding in sampled_mask_findings(split)
    ]
    problems = [finding.message for finding in findings if finding.problem]
    if problems:
        recipe = "" if cfg.method.recipe == MethodConfig.recipe else f" --recipe {cfg.method.recipe}"
        more = f" ({len(problems) - 1} more: cosa data check {root}{recipe} lists them)" if len(problems) > 1 else ""
        raise CosaError(problems[0] + more)
    for finding in findings:
        log.warning("warning: %s", finding.message)
    if validation is None:
        log.warning("no evaluation during training: %s has no split '%s'", root, cfg.data.val_split)
    elif not validation.has_masks:
        log.warning("no evaluation during training: split '%s' of %s has no masks", validation.split, root)
        validation = None
    return TrainingData(train, validation)


def _missing_training_split(root: Path, layout: str, split: str, splits: list[str]) -> str:
    preset = LAYOUT_PRESETS[layout]
    preset_split = load_config(preset).data.train_split
    if preset_split != split and preset_split in splits:
        fix = f"pass --config {preset} (the preset for {layout} datasets), or data.train_split={preset_split}"
    elif splits:
        fix = "set data.train_split to one of its splits"
    else:
        fix = f"add the list of its images, {root / SPLIT_LISTS[layout].format(split=split)}"
    return (
        f"{root}: the configuration trains on split '{split}', which this {layout} dataset does not have "
        f"(its splits: {', '.join(splits) or 'none'}); {fix}"
    )


# --- cosa data check --------------------------------------------------------------------------


@dataclass
class CheckReport:
    root: Path
    layout: str
    problems: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    statistics: dict[str, SplitStatistics] = field(default_factory=dict)  # split → what it holds
    training_split: str | None = None  # the split judged as the training split

    @property
    def images(self) -> dict[str, int]:
        """Split → readable images."""
        return {split: statistics.images for split, statistics in self.statistics.items()}

    def add(self, findings: list[Finding]) -> None:
        for finding in findings:
            (self.problems if finding.problem else self.warnings).append(finding.message)


def check_dataset(root: str | Path, recipe: str = MethodConfig.recipe) -> CheckReport:
    """Read every image and mask of every split, collecting problems instead of stopping at one,
    and judge the training split (``train_aug`` or ``train``, else the largest) and the validation
    split as ``cosa train --recipe RECIPE`` would."""
    root = dataset_root(root)
    report = CheckReport(root, detect_layout(root))
    names = available_splits(root, report.layout)
    if not names:
        expected = (load_config(LAYOUT_PRESETS[report.layout]).data.train_split, VALIDATION_SPLIT)
        lists = " and ".join(SPLIT_LISTS[report.layout].format(split=split) for split in expected)
        report.problems.append(f"{root}: no splits found: add the lists of their images, {lists}")
    splits, contents = {}, {}
    for name in names:
        try:
            splits[name] = load_split(root, name, report.problems)
        except CosaError as error:
            report.problems.append(str(error))
            continue
        contents[name] = _read_every_file(splits[name], report)
    report.training_split = _training_split(report.statistics)
    train, validation = splits.get(report.training_split), splits.get(VALIDATION_SPLIT)
    if train is not None:
        report.add(split_findings(train, validation, recipe))
        if validation is not None and validation is not train:
            report.add(_copies(train, validation, contents))
    elif validation is not None:
        report.add(validation_findings(validation) + mask_name_findings(validation))
    for split in splits.values():
        if split not in (train, validation):
            report.add(mask_name_findings(split))
    report.problems = list(dict.fromkeys(report.problems))  # a bad mask is met by the label cache and here
    report.warnings = list(dict.fromkeys(report.warnings))
    return report


def _training_split(statistics: dict[str, SplitStatistics]) -> str | None:
    named = [split for split in TRAINING_SPLITS if split in statistics]
    others = [split for split in statistics if split != VALIDATION_SPLIT]
    return named[0] if named else max(others, key=lambda split: statistics[split].images, default=None)


@dataclass
class _MaskValues:
    """What the masks of a split hold, to tell masks written in the wrong convention (objects as
    255, binary masks, classes counted from 0) from single bad masks."""

    values: set[int] = field(default_factory=set)  # every value of every mask
    classes: set[int] = field(default_factory=set)  # class indices 0..C-1 in any mask
    tagged: set[int] = field(default_factory=set)  # class indices tagged on an image with a mask
    disagreements: list[tuple[Sample, set[int]]] = field(default_factory=list)  # (sample, its mask's classes)
    agreements: int = 0  # masks holding a class, and exactly their image's tags

    def add(self, sample: Sample, mask: torch.Tensor, num_classes: int) -> None:
        values = set(mask.unique().tolist())
        in_mask = {value - 1 for value in values if 1 <= value <= num_classes}
        self.values |= values
        self.classes |= in_mask
        self.tagged |= set(sample.labels)
        if in_mask != set(sample.labels):
            self.disagreements.append((sample, in_mask))
        elif in_mask:
            self.agreements += 1


def sampled_mask_findings(split: DatasetSplit) -> list[Finding]:
    """Masks written in another convention (objects as 255, binary masks, classes from 0), judged
    on :data:`SAMPLED_MASKS` masks spread over ``split``: a convention holds in every mask, so a
    sample finds it in a fraction of a second where reading every mask would take minutes."""
    with_masks = [sample for sample in split.samples if sample.mask is not None]
    masks = _MaskValues()
    for sample in with_masks[:: max(1, len(with_masks) // SAMPLED_MASKS)][:SAMPLED_MASKS]:
        masks.add(sample, read_mask(sample.mask, split.num_classes), split.num_classes)
    problem = _mask_convention_problem(split, masks)
    return [_problem(problem)] if problem else []


def _read_every_file(split: DatasetSplit, report: CheckReport) -> dict[str, Path]:
    """Read each image and mask of ``split`` into ``report``; returns its images by content digest."""
    statistics = SplitStatistics(split.class_names)
    masks = _MaskValues()
    contents: dict[str, Path] = {}
    unlabelled = []
    for sample in split.samples:
        try:
            image = read_image(sample.image, split.exif_orientation)
        except CosaError as error:
            report.problems.append(str(error))
            continue
        contents.setdefault(hashlib.blake2b(sample.image.read_bytes(), digest_size=16).hexdigest(), sample.image)
        if not sample.labels:
            unlabelled.append(sample.image)
        size = tuple(image.shape[-2:])
        mask = None
        if sample.mask is not None:
            try:
                mask = read_mask(sample.mask, split.num_classes)
            except CosaError as error:
                report.problems.append(str(error))
        if mask is not None and tuple(mask.shape) != size:
            report.problems.append(f"{sample.mask}: mask is {tuple(mask.shape)} but its image is {size}")
            mask = None
        statistics.add(size, sample.labels, mask)
        if mask is not None:
            masks.add(sample, mask, split.num_classes)
    report.statistics[split.split] = statistics
    if unlabelled and len(unlabelled) == len(split.samples):
        report.warnings.append(f"{split.root}: no image of split '{split.split}' has class labels (background only)")
    else:
        report.warnings += [f"{image}: no class labels (background only)" for image in unlabelled]
    convention = _mask_convention_problem(split, masks)
    if convention is not None:
        report.problems.append(convention)  # it explains every disagreement below
    else:
        names = split.class_names
        report.problems += [
            f"{sample.mask}: labels {[names[i] for i in sample.labels]} disagree with the mask's "
            f"classes {[names[i] for i in sorted(in_mask)]}"
            for sample, in_mask in masks.disagreements
        ]
    return contents


def _mask_convention_problem(split: DatasetSplit, masks: _MaskValues) -> str | None:
    """Masks of a split whose values are not class labels, the same way in every mask."""
    if not masks.values:
        return None
    where = f"{split.root}: the masks of split '{split.split}'"
    fix = f"write each object's pixels as its class's index ({_class_indices(split)})"
    if not masks.classes:
        ignore = f"; {IGNORE_INDEX} marks pixels to ignore, not objects" if IGNORE_INDEX in masks.values else ""
        values = ", ".join(map(str, sorted(masks.values)))
        return f"{where} hold no class, only the values {values}{ignore}: {fix}"
    if not masks.disagreements:
        return None
    # Classes numbered from 0 (the first class saved as 0, background) read one class lower: no
    # mask agrees with its tags, and each holds them shifted down by one.
    shifted = all(in_mask == {label - 1 for label in sample.labels if label} for sample, in_mask in masks.disagreements)
    if shifted and not masks.agreements and any(in_mask for _, in_mask in masks.disagreements):
        return f"{where} number the classes from 0, but 0 is background and the classes start at 1: {fix}"
    if len(masks.classes) == 1 and len(masks.tagged) > 1:
        (index,) = masks.classes
        return (
            f"{where} all hold one class value, {index + 1} ({split.class_names[index]}), though their images are "
            f"tagged with {len(masks.tagged)} classes: binary masks (0/{index + 1})? {fix}"
        )
    return None


def _copies(train: DatasetSplit, validation: DatasetSplit, contents: dict[str, dict[str, Path]]) -> list[Finding]:
    """Validation images whose bytes are a training image's under another name (the same file
    listed in both splits is :func:`overlap_findings`'s)."""
    trained, validated = contents.get(train.split, {}), contents.get(validation.split, {})
    pairs = [
        (image, trained[digest])
        for digest, image in validated.items()
        if digest in trained and os.path.normpath(trained[digest]) != os.path.normpath(image)
    ]
    if not pairs:
        return []
    shown = _some([f"{image.relative_to(train.root)} = {copy.relative_to(train.root)}" for image, copy in pairs])
    return [
        _problem(
            f"{train.root}: split '{validation.split}' holds copies of {_images(len(pairs))} of split "
            f"'{train.split}' ({shown}); a validation score on training images is inflated: keep each picture "
            "in one split only"
        )
    ]
