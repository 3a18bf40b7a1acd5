"""Data that would train into nonsense, caught by ``cosa data check`` and, before anything is built,
by ``cosa train`` (one rule set: ``cosa.data.check``). docs/reliability.md lists each case."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cosa.config.load import load_config
from cosa.data.check import training_data
from cosa.data.io import write_mask
from cosa.errors import CosaError

from conftest import (
    SIZE,
    TINY_OVERRIDES,
    assert_one_line_error,
    check_problems,
    folder_dataset,
    run_cli,
    square_mask,
)


def picture(path: Path, seed: int) -> None:
    """A noise image, its own for each seed: equal bytes would make two images copies."""
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.random.default_rng(seed).integers(0, 255, (SIZE[1], SIZE[0], 3), dtype=np.uint8)).save(path)


def mask(*values: int) -> np.ndarray:
    """A background mask with one square per value, side by side."""
    pixels = np.zeros(SIZE[::-1], np.uint8)
    for index, value in enumerate(values):
        pixels[2:6, 2 + 5 * index : 6 + 5 * index] = value
    return pixels


CAT, DOG = 1, 2


def folder(root: Path, splits: dict[str, list[tuple]], classes=("cat", "dog")) -> Path:
    """A folder dataset: ``splits`` maps a split to rows ``(name, labels, mask or None)``; every
    image is a picture of its own."""
    (root / "images").mkdir(parents=True)
    (root / "classes.txt").write_text("\n".join(classes) + "\n")
    seed = 0
    for split, rows in splits.items():
        lines = ["image,labels"]
        for name, labels, pixels in rows:
            if not (root / "images" / f"{name}.png").exists():
                picture(root / "images" / f"{name}.png", seed)
                seed += 1
            if pixels is not None:
                write_mask(root / "masks" / f"{name}.png", pixels)
            lines.append(f"{name}.png,{labels}")
        (root / f"{split}.csv").write_text("\n".join(lines) + "\n")
    return root


def good_splits() -> dict[str, list[tuple]]:
    return {
        "train": [("a", "cat", mask(CAT)), ("b", "dog", mask(DOG)), ("c", "cat;dog", mask(CAT, DOG))],
        "val": [("v1", "cat", mask(CAT)), ("v2", "dog", mask(DOG))],
    }


def voc(root: Path, train: dict[str, np.ndarray | None], val: dict[str, np.ndarray]) -> Path:
    """A VOC tree: image name → its mask (None: no mask) for train_aug and val."""
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    for seed, (name, pixels) in enumerate({**train, **val}.items()):
        picture(root / "JPEGImages" / f"{name}.jpg", seed)
        if pixels is not None:
            write_mask(root / "SegmentationClassAug" / f"{name}.png", pixels)
    (lists / "train_aug.txt").write_text("".join(f"{name}\n" for name in train))
    (lists / "val.txt").write_text("".join(f"{name}\n" for name in val))
    return root


def train_refusal(capsys, tmp_path: Path, root: Path, *options) -> str:
    """``cosa train`` on ``root``, which must stop with one line before it makes the run folder."""
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--data", root, "--out", run, *TINY_OVERRIDES, *options)
    assert_one_line_error(code, err)
    assert not run.exists()  # nothing built, nothing to clean up before the retry
    return next(line for line in err.splitlines() if line.startswith("cosa: error: ")).removeprefix("cosa: error: ")


def assert_the_one_problem(capsys, tmp_path: Path, root: Path, expected: str, config: str) -> None:
    """``expected`` is ``data check``'s only problem and the line ``cosa train --config CONFIG`` stops with."""
    code, problems, _ = check_problems(capsys, root)
    assert (code, problems) == (1, [expected])
    assert train_refusal(capsys, tmp_path, root, "--config", config) == expected


# --- mask values that are not labels -----------------------------------------------------------


def test_masks_saved_as_0_and_255_are_one_problem_naming_the_convention(tmp_path, capsys):
    splits = good_splits()
    splits["train"] = [(name, labels, mask(255, 255)) for name, labels, _ in splits["train"]]  # objects as 255
    root = folder(tmp_path / "ds", splits)
    expected = (
        f"{root}: the masks of split 'train' hold no class, only the values 0, 255; 255 marks pixels to ignore, "
        "not objects: write each object's pixels as its class's index (cat=1, dog=2)"
    )
    assert check_problems(capsys, root) == (1, [expected], [])  # not one line per mask
    # cosa train reads a sample of each split's masks before it starts: the convention holds in all.
    assert train_refusal(capsys, tmp_path, root, "--config", "demo") == expected
    splits = good_splits()
    splits["val"] = [(name, labels, mask(255)) for name, labels, _ in splits["val"]]
    root = folder(tmp_path / "val-255", splits)
    assert train_refusal(capsys, tmp_path, root, "--config", "demo").startswith(
        f"{root}: the masks of split 'val' hold no class, only the values 0, 255"
    )


def test_voc_masks_saved_as_0_and_255_stop_training_and_are_listed(tmp_path, capsys):
    # VOC labels come from the masks: masks without a class make every image background only.
    root = voc(tmp_path / "voc", {"x1": mask(255), "x2": mask(255)}, {"v1": mask(CAT)})
    code, problems, _ = check_problems(capsys, root)
    no_class = (
        f"{root}: no image of split 'train_aug' has a class label, so nothing can be learnt; no mask of it holds "
        "a class (VOC takes the labels from the masks, where 0 is background and 255 ignore): write each "
        "object's pixels as its class's index (aeroplane=1, bicycle=2, bird=3, boat=4, bottle=5, …)"
    )
    assert code == 1 and no_class in problems
    assert f"{root}: the masks of split 'train_aug' hold no class, only the values 0, 255" in "\n".join(problems)
    assert train_refusal(capsys, tmp_path, root, "--config", "voc") == (
        f"{no_class} (1 more: cosa data check {root} lists them)"  # the masks' values, as above
    )


def test_binary_masks_of_a_dataset_with_classes_are_named(tmp_path, capsys):
    splits = good_splits()
    splits["train"][1] = ("b", "dog", mask(CAT))  # one slip is named alone, as before
    root = folder(tmp_path / "ds", splits)
    slip = f"{root / 'masks' / 'b.png'}: labels ['dog'] disagree with the mask's classes ['cat']"
    assert check_problems(capsys, root) == (1, [slip], [])
    for name in ("a", "c"):
        write_mask(root / "masks" / f"{name}.png", mask(1))  # now every mask is 0/1, whatever its class
    expected = (
        f"{root}: the masks of split 'train' all hold one class value, 1 (cat), though their images are tagged "
        "with 2 classes: binary masks (0/1)? write each object's pixels as its class's index (cat=1, dog=2)"
    )
    assert check_problems(capsys, root) == (1, [expected], [])
    assert train_refusal(capsys, tmp_path, root, "--config", "demo") == expected


@pytest.mark.parametrize(
    ("classes", "rows"),
    [
        pytest.param(
            ("cat", "dog", "fox"),
            [("a", "cat", mask(0)), ("b", "dog", mask(1)), ("c", "dog;fox", mask(1, 2)), ("d", "fox", mask(2))],
            id="three-classes",
        ),
        pytest.param(  # every mask holds one class value, as binary masks would: the cats tell them apart
            ("cat", "dog"),
            [("a", "cat", mask(0)), ("b", "dog", mask(1)), ("c", "cat;dog", mask(0, 1))],
            id="two-classes",
        ),
    ],
)
def test_classes_numbered_from_0_in_the_masks_are_named(tmp_path, capsys, classes, rows):
    root = folder(tmp_path / "ds", {"train": rows}, classes)
    indices = ", ".join(f"{name}={index}" for index, name in enumerate(classes, start=1))
    expected = (
        f"{root}: the masks of split 'train' number the classes from 0, but 0 is background and the classes "
        f"start at 1: write each object's pixels as its class's index ({indices})"
    )
    assert check_problems(capsys, root) == (1, [expected], [])


# --- masks missing, or in another format or name -------------------------------------------------


def test_a_missing_voc_training_mask_is_a_problem_before_training(tmp_path, capsys):
    root = voc(tmp_path / "voc", {"x1": mask(CAT), "x2": None, "x3": mask(DOG)}, {"v1": mask(CAT)})
    expected = (
        f"{root}: split 'train_aug' lacks the masks of 1 of its 3 images (x2); VOC takes an image's labels from "
        "its mask, so these would train as background only: add their masks to SegmentationClassAug/, or remove "
        "them from the split's list"
    )
    assert_the_one_problem(capsys, tmp_path, root, expected, "voc")


@pytest.mark.parametrize(
    ("stored", "shown"),
    [
        pytest.param(lambda pixels, path: Image.fromarray(pixels).save(path.with_suffix(".jpg")), "a.jpg", id="jpeg"),
        pytest.param(
            lambda pixels, path: write_mask(path.with_suffix(".jpg.png"), pixels), "a.jpg.png", id="NAME.jpg.png"
        ),
        pytest.param(lambda pixels, path: write_mask(path.with_suffix(".PNG"), pixels), "a.PNG", id="upper-case"),
    ],
)
def test_masks_in_another_format_or_name_are_named_not_ignored(tmp_path, capsys, stored, shown):
    root = folder(tmp_path / "ds", good_splits())
    (root / "masks" / "a.png").unlink()
    stored(mask(CAT), root / "masks" / "a.png")
    expected = (
        f"{root / 'masks'}: files not read as masks of split 'train', for their format or name: 1 ({shown} for "
        "a.png); a mask is the PNG named after its image without the image's extension: rename them"
        + (", and save the JPEGs as PNG (JPEG compression changes label values)" if shown.endswith(".jpg") else "")
    )
    assert_the_one_problem(capsys, tmp_path, root, expected, "demo")


def test_validation_masks_under_other_names_stop_training_instead_of_dropping_evaluation(tmp_path, capsys):
    root = folder(tmp_path / "ds", good_splits())
    for name in ("v1", "v2"):
        (root / "masks" / f"{name}.png").rename(root / "masks" / f"{name}_mask.png")
    assert check_problems(capsys, root)[:2] == (
        0,
        [],
    )  # another naming scheme cannot be guessed: no mask, no evaluation
    for name in ("v1", "v2"):
        (root / "masks" / f"{name}_mask.png").rename(root / "masks" / f"{name}.png.png")
    expected = (
        f"{root / 'masks'}: files not read as masks of split 'val', for their format or name: "
        "2 (v1.png.png for v1.png, v2.png.png for v2.png); a mask is the PNG named after its image without the "
        "image's extension: rename them"
    )
    assert_the_one_problem(capsys, tmp_path, root, expected, "demo")


def test_supervised_training_with_half_the_masks_missing_stops_before_the_run_folder(tmp_path, capsys):
    splits = good_splits()
    splits["train"] = [*splits["train"][:2], ("c", "cat;dog", None), ("d", "dog", None)]
    root = folder(tmp_path / "ds", splits)
    lacking = f"{root}: split 'train' lacks the masks of 2 of its 4 images (c, d); "
    supervised = (
        "--recipe supervised trains on the masks: add them to masks/, or choose a recipe that trains from the tags"
    )
    assert train_refusal(capsys, tmp_path, root, "--config", "demo", "--recipe", "supervised") == lacking + supervised
    assert check_problems(capsys, root, "--recipe", "supervised") == (1, [lacking + supervised], [])
    # The other recipes train from the tags: the gap is a warning.
    assert check_problems(capsys, root) == (
        0,
        [],
        [lacking + "only --recipe supervised needs them (the others train from the tags)"],
    )


# --- tags --------------------------------------------------------------------------------------


def test_a_class_on_every_training_image_is_a_warning_in_check_and_train(tmp_path, capsys, caplog):
    splits = good_splits()
    splits["train"] = [("a", "cat", mask(CAT)), ("b", "cat;dog", mask(CAT, DOG)), ("c", "cat", mask(CAT))]
    root = folder(tmp_path / "ds", splits)
    expected = (
        f"{root}: class cat tagged on every image of split 'train' (3): a tag that never varies teaches the "
        "classifier nothing, so its CAMs and pseudo-labels are guesswork; add images without it"
    )
    assert check_problems(capsys, root) == (0, [], [expected])
    with caplog.at_level(logging.WARNING):
        training_data(load_config("demo", None, str(root), TINY_OVERRIDES))
    assert f"warning: {expected}" in caplog.messages


def test_a_class_tagged_on_no_training_image_is_a_warning_in_check_and_train(tmp_path, capsys, caplog):
    root = folder(tmp_path / "ds", good_splits(), classes=("cat", "dog", "zebra"))
    expected = (
        f"{root}: class zebra of classes.txt tagged on no image of split 'train': the model can never predict "
        "it; tag the images that show it, or remove it from classes.txt"
    )
    assert check_problems(capsys, root) == (0, [], [expected])
    with caplog.at_level(logging.WARNING):
        training_data(load_config("demo", None, str(root), TINY_OVERRIDES))
    assert f"warning: {expected}" in caplog.messages


def test_a_training_split_without_any_tag_is_a_problem(tmp_path, capsys):
    splits = good_splits()
    splits["train"] = [(name, "", None) for name, _, _ in splits["train"]]
    root = folder(tmp_path / "ds", splits)
    expected = (
        f"{root}: no image of split 'train' has a class label, so nothing can be learnt; every labels cell is "
        "empty: tag each image with the classes it shows"
    )
    assert expected in check_problems(capsys, root)[1]
    assert train_refusal(capsys, tmp_path, root, "--config", "demo") == expected


# --- images in two splits ----------------------------------------------------------------------


def test_an_image_in_both_splits_is_a_problem(tmp_path, capsys):
    assert check_problems(capsys, folder(tmp_path / "clean", good_splits())) == (
        0,
        [],
        [],
    )  # the datasets here are clean
    splits = good_splits()
    splits["val"].append(("a", "cat", mask(CAT)))  # the training image a, listed for validation too
    root = folder(tmp_path / "ds", splits)
    expected = (
        f"{root}: split 'val' shares 1 image with split 'train' (a); a validation score on training images is "
        "inflated: list each image in one split only"
    )
    assert check_problems(capsys, root) == (1, [expected], [])
    assert train_refusal(capsys, tmp_path, root, "--config", "demo") == expected
    same = (
        f"{root}: split 'train' is both the training and the validation split; evaluate on images the run "
        "does not train on"
    )
    assert train_refusal(capsys, tmp_path, root, "--config", "demo", "data.val_split=train") == same


def test_a_copy_of_a_training_image_in_the_validation_split_is_found_by_content(tmp_path, capsys):
    root = folder(tmp_path / "ds", good_splits())
    shutil.copy(root / "images" / "b.png", root / "images" / "v2.png")  # the same picture under another name
    expected = (
        f"{root}: split 'val' holds copies of 1 image of split 'train' (images/v2.png = images/b.png); a validation "
        "score on training images is inflated: keep each picture in one split only"
    )
    assert check_problems(capsys, root) == (1, [expected], [])


# --- layout and preset -------------------------------------------------------------------------


def test_a_folder_dataset_with_the_voc_preset_is_pointed_to_the_own_preset(tmp_path, capsys):
    root = folder(tmp_path / "ds", good_splits())
    expected = (
        f"{root}: the configuration trains on split 'train_aug', which this folder dataset does not have "
        "(its splits: train, val); pass --config own (the preset for folder datasets), or data.train_split=train"
    )
    assert train_refusal(capsys, tmp_path, root) == expected  # the default preset is voc
    assert train_refusal(capsys, tmp_path, root, "--config", "voc") == expected


def test_a_voc_tree_without_train_aug_names_its_splits(tmp_path, capsys):
    root = voc(tmp_path / "voc", {"x1": mask(CAT), "x2": mask(DOG)}, {"v1": mask(CAT)})
    (root / "ImageSets" / "Segmentation" / "train_aug.txt").rename(root / "ImageSets" / "Segmentation" / "train.txt")
    expected = (
        f"{root}: the configuration trains on split 'train_aug', which this voc dataset does not have "
        "(its splits: train, val); set data.train_split to one of its splits"
    )
    assert train_refusal(capsys, tmp_path, root, "--config", "voc") == expected


def test_training_data_stops_at_the_first_problem_and_counts_the_others(tmp_path):
    splits = good_splits()
    splits["val"].append(("a", "cat", mask(CAT)))
    splits["train"] = [*splits["train"][:2], ("c", "cat;dog", None)]
    root = folder(tmp_path / "ds", splits)
    with pytest.raises(CosaError) as error:
        training_data(load_config("demo", "supervised", str(root), TINY_OVERRIDES))
    message = str(error.value)
    assert message.startswith(f"{root}: split 'train' lacks the masks of 1 of its 3 images (c)")
    assert message.endswith(f"(1 more: cosa data check {root} --recipe supervised lists them)")


# --- images listed but not there ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("rename", "hint"),
    [
        pytest.param(None, "", id="deleted"),
        pytest.param(("b.png", "b.PNG"), "; b.PNG is there: file names are case-sensitive", id="case"),
        pytest.param(("b.png", None), "; b.png is there: write image names with their extension", id="no-extension"),
        pytest.param(("b.png", "b\\c.png"), "; write paths with '/', not '\\'", id="windows-path"),
        pytest.param(
            ("b.png", "images/b.png"),
            "; image names are relative to images/: write b.png, not images/b.png",
            id="from-the-root",
        ),
    ],
)
def test_listed_images_that_are_not_there_stop_training_at_the_start(tmp_path, capsys, rename, hint):
    root = folder(tmp_path / "ds", good_splits())
    table = root / "train.csv"
    if rename is None:
        (root / "images" / "b.png").unlink()
        missing = "images/b.png"
    elif rename[1] is None:  # listed without its extension
        table.write_text(table.read_text().replace("b.png,", "b,"))
        missing = "images/b"
    elif "\\" in rename[1]:
        table.write_text(table.read_text().replace("b.png,", "b\\c.png,"))
        missing = "images/b\\c.png"
    elif rename[1].startswith("images/"):  # the name written from the dataset's root
        table.write_text(table.read_text().replace("b.png,", "images/b.png,"))
        missing = "images/images/b.png"
    else:
        (root / "images" / rename[0]).rename(root / "images" / rename[1])
        missing = "images/b.png"
    expected = f"{root}: split 'train' lists 1 image that is not there ({missing}){hint}"
    assert train_refusal(capsys, tmp_path, root, "--config", "own") == expected
    code, problems, _ = check_problems(capsys, root)
    assert code == 1 and expected in problems  # beside the line of the file itself


def test_the_settings_data_check_prints_for_a_voc_tree_start_an_own_run(tmp_path, capsys):
    root = voc(tmp_path / "voc", {"a": mask(CAT), "b": mask(DOG)}, {"v": mask(CAT)})
    code, out, _ = run_cli(capsys, "data", "check", root)
    line = next(line for line in out.splitlines() if line.startswith("settings scaled to 'train_aug'"))
    settings = line.split("training starts: ", 1)[1].split(" ")
    assert settings[0] == "data.train_split=train_aug"  # the own preset trains on 'train'
    run = tmp_path / "run"
    code, _, err = run_cli(capsys, "train", "--config", "own", "--data", root, "--out", run, *TINY_OVERRIDES, *settings)
    assert code == 0, err


def test_a_voc_tree_without_its_split_lists_names_them(tmp_path, capsys):
    root = voc(tmp_path / "voc", {"a": mask(CAT)}, {"v": mask(CAT)})
    shutil.rmtree(root / "ImageSets")
    code, problems, _ = check_problems(capsys, root)
    assert code == 1 and problems == [
        f"{root}: no splits found: add the lists of their images, ImageSets/Segmentation/train_aug.txt and "
        "ImageSets/Segmentation/val.txt"
    ]
    expected = (
        f"{root}: the configuration trains on split 'train_aug', which this voc dataset does not have (its "
        f"splits: none); add the list of its images, {root / 'ImageSets/Segmentation/train_aug.txt'}"
    )
    assert train_refusal(capsys, tmp_path, root, "--config", "voc") == expected


# --- every problem in one pass --------------------------------------------------------------------


def test_data_check_reports_every_case_in_one_pass(tmp_path, capsys):
    rows = [
        "ok.png,cat",
        "corrupt.png,cat",
        "values.png,cat",
        "size.png,cat",
        "empty.png,",
        "ok.png,dog",
        "ok2.png,cat;horse",
        "../out.png,cat",
        "ok3.png,cat,dog",
    ]
    root = folder_dataset(tmp_path / "ds", rows, names=("ok", "corrupt", "values", "size", "empty"))
    (root / "images" / "corrupt.png").write_bytes(b"not an image")
    write_mask(root / "masks" / "values.png", square_mask(9))
    write_mask(root / "masks" / "size.png", square_mask(1, size=(4, 4)))
    write_mask(root / "masks" / "empty.png", np.zeros(SIZE[::-1], np.uint8))
    code, problems, warnings = check_problems(capsys, root)
    expected = [
        "train.csv:7: image 'ok' is already listed at",
        "train.csv:8: unknown class name(s) ['horse']",
        "train.csv:9: image path '../out.png' leaves the dataset directory",
        "train.csv:10: more fields",
        "corrupt.png: cannot read image",
        "values.png: mask values [9]",
        "size.png: mask is (4, 4)",
    ]
    assert code == 1 and len(problems) == len(expected)
    for fragment, problem in zip(expected, problems):
        assert fragment in problem
    assert len(warnings) == 2 and "empty.png: no class labels" in warnings[0] and "class dog of" in warnings[1]
