"""Dataset layouts: folder, VOC and COCO read into one interface; one-line errors naming the file
and line for bad split files and for paths that leave the dataset root, each also listed by
``cosa data check``. docs/reliability.md lists each case with the test that pins it."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cosa.data.check import check_dataset
from cosa.data.classes import COCO_CLASSES, VOC_CLASSES
from cosa.data.datasets import EvaluationImages, TrainingViews, label_vector
from cosa.data.io import IGNORE_INDEX, read_image, write_mask
from cosa.data.layouts import detect_layout, load_split
from cosa.errors import CosaError
from cosa.method.pseudo_labels import cam_pseudo_labels

from conftest import (
    SIZE,
    check_problems,
    cli_error,
    folder_dataset,
    good_dataset,
    make_folder_dataset,
    one_line,
    only_problem,
    square_mask,
    write_image,
)


def test_folder_layout(tmp_path):
    mask = np.zeros((16, 20), np.uint8)
    mask[2:5, 2:5] = 2
    root = make_folder_dataset(tmp_path / "ds", [("a", "dog", mask), ("b", "cat;dog", None)])
    split = load_split(root, "train")
    assert detect_layout(root) == "folder" and split.class_names == ("cat", "dog")
    assert [s.labels for s in split.samples] == [(1,), (0, 1)]
    assert split.samples[0].mask is not None and split.samples[1].mask is None and not split.has_masks


def test_folder_csv_with_bom_is_read(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", [("a", "cat", None)])
    (root / "train.csv").write_bytes("\ufeffimage,labels\na.png,cat\n".encode("utf-8"))
    assert load_split(root, "train").samples[0].labels == (0,)


@pytest.mark.parametrize(
    ("labels", "image", "message"),
    [
        ("cat;horse", "a.png", r"train.csv:2: unknown class name\(s\) \['horse'\]"),
        ("cat", "../a.png", "leaves the dataset directory"),
        ("cat", "/etc/passwd", "leaves the dataset directory"),
    ],
)
def test_folder_errors_name_the_file_and_line(tmp_path, labels, image, message):
    root = make_folder_dataset(tmp_path / "ds", [("a", "cat", None)])
    (root / "train.csv").write_text(f"image,labels\n{image},{labels}\n")
    with pytest.raises(CosaError, match=message):
        load_split(root, "train")


def test_a_class_name_in_another_case_is_named(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", [("a", "cat", None)], classes=("Cat", "dog"))
    with pytest.raises(CosaError) as error:
        load_split(root, "train")
    assert str(error.value) == (
        f"{root / 'train.csv'}:2: unknown class name(s) ['cat'] (not in classes.txt; did you mean 'Cat'? class "
        "names are case-sensitive)"
    )


@pytest.mark.parametrize(
    ("table", "why"),
    [
        pytest.param("image , labels\na.png,cat\n", None, id="spaces-are-dropped"),
        pytest.param(
            "image;labels\na.png;cat\n",
            "its fields are separated by ';': separate the two columns with ',' (and class names with ';')",
            id="semicolons",
        ),
        pytest.param("a.png,cat\n", "the first line is a row: add the line image,labels above it", id="no-header"),
        pytest.param("name,tags\na.png,cat\n", "its first line holds ['name', 'tags']", id="other-names"),
    ],
)
def test_a_header_that_is_not_image_labels_says_what_it_holds(tmp_path, table, why):
    root = make_folder_dataset(tmp_path / "ds", [("a", "cat", None)])
    (root / "train.csv").write_text(table)
    if why is None:
        assert load_split(root, "train").samples[0].labels == (0,)
        return
    with pytest.raises(CosaError) as error:
        load_split(root, "train")
    assert str(error.value) == f"{root / 'train.csv'}: header must contain the columns image,labels; {why}"


def test_the_folder_above_a_dataset_names_the_dataset_root(tmp_path):
    make_voc(tmp_path / "VOCdevkit" / "VOC2012")
    with pytest.raises(CosaError) as error:
        detect_layout(tmp_path / "VOCdevkit")
    assert str(error.value).endswith(f"(is the dataset root {tmp_path / 'VOCdevkit' / 'VOC2012'}?)")
    with pytest.raises(CosaError, match=r"is the dataset root .*VOC2012\?\)$"):
        detect_layout(tmp_path)  # two levels up


def test_missing_split_and_unknown_layout(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", [("a", "cat", None)])
    with pytest.raises(CosaError, match="val.csv: split file not found"):
        load_split(root, "val")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CosaError, match="cannot tell the dataset layout"):
        load_split(tmp_path / "empty", "train")


def make_voc(root):
    names = ["2007_000032", "2007_000039"]
    for index, name in enumerate(names):
        write_image(root / "JPEGImages" / f"{name}.jpg")
        mask = np.zeros((16, 20), np.uint8)
        mask[1:4, 1:4] = 1 + index * 14  # aeroplane, then person
        mask[0, :] = 255
        write_mask(root / "SegmentationClassAug" / f"{name}.png", mask)
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train_aug.txt").write_text(
        f"/JPEGImages/{names[0]}.jpg /SegmentationClassAug/{names[0]}.png\n{names[1]}\n"
    )
    (lists / "val.txt").write_text(names[1] + "\n")
    return root


def test_voc_layout_takes_labels_from_masks_and_caches_them(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    split = load_split(root, "train_aug")
    assert split.layout == "voc" and split.class_names == VOC_CLASSES
    assert [s.labels for s in split.samples] == [(0,), (14,)]
    cache = json.loads((root / ".cosa" / "labels-train_aug.json").read_text())
    assert cache["labels"] == [[0], [14]]
    assert load_split(root, "val").samples[0].name == "2007_000039"
    # An edited mask is noticed: its labels are recomputed, not taken from the cache.
    edited = np.zeros((16, 20), np.uint8)
    edited[2:5, 2:5] = 7  # car
    write_mask(root / "SegmentationClassAug" / "2007_000039.png", edited)
    assert [s.labels for s in load_split(root, "train_aug").samples] == [(0,), (6,)]


def test_coco_layout(tmp_path):
    root = tmp_path / "coco"
    for year in ("train2014", "val2014"):
        name = f"COCO_{year}_000000000009"
        write_image(root / year / f"{name}.jpg")
        mask = np.zeros((16, 20), np.uint8)
        mask[3:6, 3:6] = 80  # toothbrush, the last of 80
        write_mask(root / "SegmentationClass" / year / f"{name}.png", mask)
    split = load_split(root, "val")
    assert split.layout == "coco" and split.class_names == COCO_CLASSES
    assert split.samples[0].labels == (79,)
    (root / "val_part.txt").write_text("COCO_val2014_000000000009\n")
    assert len(load_split(root, "val_part").samples) == 1


def test_data_check_lists_every_problem_at_once(tmp_path):
    good = np.zeros((16, 20), np.uint8)
    good[2:6, 2:6] = 1
    root = make_folder_dataset(tmp_path / "ds", [("a", "cat", good), ("b", "cat", good), ("c", "dog", good)])
    (root / "images" / "b.png").write_bytes(b"not a png")
    write_mask(root / "masks" / "c.png", np.full((5, 5), 1, np.uint8))  # wrong size
    with open(root / "train.csv", "a") as stream:
        stream.write("d.png,horse\n")
    report = check_dataset(root)
    text = "\n".join(report.problems)
    assert "b.png: cannot read image" in text
    assert "c.png: mask is (5, 5) but its image is (16, 20)" in text
    assert "unknown class name(s) ['horse']" in text
    assert report.images == {"train": 2}


def test_data_check_passes_a_clean_dataset(tiny_data):
    report = check_dataset(tiny_data)
    assert report.problems == [] and report.images == {"train": 24, "val": 8}


def write_exif_rotated_jpeg(path, size=(20, 16)):
    """A non-square JPEG tagged EXIF orientation 6 (shown rotated 90° clockwise); its decoded stored pixels."""
    pixels = np.zeros((size[1], size[0], 3), np.uint8)
    pixels[:, : size[0] // 2] = 200  # left half bright, so a rotation shows in the values
    exif = Image.Exif()
    exif[0x0112] = 6
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path, exif=exif)
    with Image.open(path) as image:
        return np.asarray(image.convert("RGB"))  # JPEG is lossy: compare with what is decoded


def test_read_image_can_keep_the_stored_pixel_order(tmp_path):
    stored = write_exif_rotated_jpeg(tmp_path / "a.jpg")
    assert np.array_equal(read_image(tmp_path / "a.jpg", exif_orientation=False).permute(1, 2, 0).numpy(), stored)
    assert np.array_equal(read_image(tmp_path / "a.jpg").permute(1, 2, 0).numpy(), np.rot90(stored, k=-1))


def test_exif_orientation_only_in_the_folder_layout(tmp_path):
    """VOC and COCO masks are in stored pixel order (the released code ignores EXIF); folder masks are not."""
    voc = make_voc(tmp_path / "voc")
    (voc / "ImageSets" / "Segmentation" / "train_aug.txt").write_text("2007_000032\n")  # val's image: val only
    stored = write_exif_rotated_jpeg(voc / "JPEGImages" / "2007_000039.jpg")  # its mask is 16×20, as stored
    coco = tmp_path / "coco"
    mask = np.zeros((16, 20), np.uint8)
    mask[3:6, 3:6] = 80
    for year in ("train2014", "val2014"):  # `cosa data check` reads both splits
        write_exif_rotated_jpeg(coco / year / f"COCO_{year}_000000000009.jpg")
        write_mask(coco / "SegmentationClass" / year / f"COCO_{year}_000000000009.png", mask)
    write_image(coco / "train2014" / "COCO_train2014_000000000009.jpg")  # not a copy of the val image
    for root in (voc, coco):
        dataset = load_split(root, "val")
        assert not dataset.exif_orientation
        item = EvaluationImages(dataset, size=32)[0]
        assert item["mask"].shape == (16, 20)
        assert np.array_equal(item["image"].permute(1, 2, 0).numpy(), stored)
        views = TrainingViews(dataset, 16, (0.5, 2.0), 0.5, seed=0, with_masks=True)
        assert all("mask" in views[position] for position in range(3))  # no size error
        report = check_dataset(root)
        assert report.problems == [] and report.images["val"] == 1
    folder = make_folder_dataset(tmp_path / "ds", [("a", "cat", None)])
    write_exif_rotated_jpeg(folder / "images" / "b.jpg")
    (folder / "train.csv").write_text("image,labels\nb.jpg,cat\n")
    dataset = load_split(folder, "train")
    assert dataset.exif_orientation
    image = EvaluationImages(dataset, size=32, with_masks=False)[0]["image"]
    assert np.array_equal(image.permute(1, 2, 0).numpy(), np.rot90(stored, k=-1))


# --- split files ----------------------------------------------------------------------------------


def voc_dataset(root: Path, lines: list[str], names: tuple[str, ...] = ("x1", "x2")) -> Path:
    for name in names:
        write_image(root / "JPEGImages" / f"{name}.jpg")
        write_mask(root / "SegmentationClassAug" / f"{name}.png", square_mask(1))
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train_aug.txt").write_text("\n".join(lines) + "\n")
    return root


def test_corrupt_voc_mask_is_listed_once(tmp_path, capsys):
    root = voc_dataset(tmp_path / "voc", ["x1", "x2"])
    (root / "SegmentationClassAug" / "x2.png").write_bytes(b"broken")
    with pytest.raises(CosaError) as error:
        load_split(root, "train_aug")  # labels come from the masks
    one_line(error, "x2.png", "cannot read mask")
    only_problem(capsys, root, "x2.png", "cannot read mask")
    assert not (root / ".cosa" / "labels-train_aug.json").exists()  # no labels cached from a broken mask


@pytest.mark.parametrize("layout", ["folder", "voc"])
def test_empty_split_is_fatal_and_listed(tmp_path, capsys, layout):
    root = folder_dataset(tmp_path / "ds", []) if layout == "folder" else voc_dataset(tmp_path / "voc", [])
    split = "train" if layout == "folder" else "train_aug"
    with pytest.raises(CosaError) as error:
        load_split(root, split)
    one_line(error, root, f"split '{split}' has no images")
    only_problem(capsys, root, f"split '{split}' has no images")


def test_duplicate_names_in_a_csv_are_fatal_and_listed(tmp_path, capsys):
    root = folder_dataset(tmp_path / "ds", ["a.png,cat", "b.png,cat", "a.png,dog"])
    table = root / "train.csv"
    with pytest.raises(CosaError) as error:
        load_split(root, "train")
    assert one_line(error) == f"{table}:4: image 'a' is already listed at {table}:2"
    assert only_problem(capsys, root) == f"{table}:4: image 'a' is already listed at {table}:2"


def test_duplicate_names_in_a_voc_list_are_fatal_and_listed(tmp_path, capsys):
    root = voc_dataset(tmp_path / "voc", ["/JPEGImages/x1.jpg /SegmentationClassAug/x1.png", "x2", "x1"])
    listing = root / "ImageSets" / "Segmentation" / "train_aug.txt"
    with pytest.raises(CosaError) as error:
        load_split(root, "train_aug")
    assert one_line(error) == f"{listing}:3: image 'x1' is already listed at {listing}:1"
    only_problem(capsys, root, f"{listing}:3: image 'x1' is already listed")


def test_csv_with_bom_and_extra_columns_is_read(tmp_path):
    root = good_dataset(tmp_path / "ds")
    (root / "train.csv").write_bytes("\ufeffimage,labels,source\na.png,cat,web\nb.png,,web\n".encode())
    split = load_split(root, "train")
    assert [(sample.name, sample.labels) for sample in split.samples] == [("a", (0,)), ("b", ())]


def test_csv_row_with_more_fields_than_the_header_is_fatal(tmp_path, capsys):
    root = folder_dataset(tmp_path / "ds", ["a.png,cat,dog", "b.png,cat"])  # labels separated by ',', not ';'
    with pytest.raises(CosaError) as error:
        load_split(root, "train")
    one_line(error, f"{root / 'train.csv'}:2", "more fields than the header's 2", "';'")
    only_problem(capsys, root, "train.csv:2: more fields")


def test_unknown_class_names_are_fatal_and_listed(tmp_path, capsys):
    root = folder_dataset(tmp_path / "ds", ["a.png,cat;horse", "b.png,cat"])
    with pytest.raises(CosaError) as error:
        load_split(root, "train")
    one_line(error, f"{root / 'train.csv'}:2", "unknown class name(s) ['horse']")
    only_problem(capsys, root, "train.csv:2: unknown class name(s) ['horse']")


def test_split_file_that_is_not_utf8_is_fatal(tmp_path, capsys):
    root = good_dataset(tmp_path / "ds")
    (root / "train.csv").write_bytes("image,labels\na.png,ch\xe2t\n".encode("latin-1"))
    with pytest.raises(CosaError) as error:
        load_split(root, "train")
    one_line(error, root / "train.csv", "not UTF-8 text")
    only_problem(capsys, root, "train.csv", "not UTF-8 text")


def test_images_without_labels_are_background_only_images(tmp_path, capsys):
    root = folder_dataset(tmp_path / "ds", ["a.png,cat", "b.png,"])
    write_mask(root / "masks" / "b.png", np.zeros(SIZE[::-1], np.uint8))
    split = load_split(root, "train")
    assert split.samples[1].labels == () and label_vector((), 2).sum() == 0
    code, problems, warnings = check_problems(capsys, root)
    assert (code, problems) == (0, [])
    assert warnings[0] == f"{root / 'images' / 'b.png'}: no class labels (background only)"
    assert warnings[1:] == [  # a folder dataset's classes are the user's: one never tagged is named
        f"{root}: class dog of classes.txt tagged on no image of split 'train': the model can never predict it; "
        "tag the images that show it, or remove it from classes.txt"
    ]
    voc = voc_dataset(tmp_path / "voc", ["x1", "x2"])
    write_mask(voc / "SegmentationClassAug" / "x2.png", np.zeros(SIZE[::-1], np.uint8))  # labels come from masks
    assert load_split(voc, "train_aug").samples[1].labels == ()
    code, problems, warnings = check_problems(capsys, voc)
    assert (code, problems) == (0, [])
    assert warnings == [f"{voc / 'JPEGImages' / 'x2.jpg'}: no class labels (background only)"]
    # Their CAMs are all zero (no class present), so the CAM pseudo-label is background in the box.
    inside = torch.zeros(1, 4, 4, dtype=torch.bool)
    inside[:, 1:3] = True
    labels = cam_pseudo_labels(torch.zeros(1, 2, 4, 4), torch.zeros(1, 2), inside, high=0.7, low=0.25)
    assert (labels[inside] == 0).all() and (labels[~inside] == IGNORE_INDEX).all()


# --- paths that leave the dataset root ------------------------------------------------------------


@pytest.mark.parametrize("entry", ["../a.png", "images/../../a.png", "/etc/passwd", "/tmp/../etc/passwd"])
def test_csv_paths_leaving_the_root_are_refused(tmp_path, capsys, entry):
    root = folder_dataset(tmp_path / "ds", [f"{entry},cat", "b.png,cat"])
    with pytest.raises(CosaError) as error:
        load_split(root, "train")
    one_line(error, f"{root / 'train.csv'}:2", f"image path '{entry}' leaves the dataset directory")
    only_problem(capsys, root, "leaves the dataset directory")


@pytest.mark.parametrize("layout", ["voc", "coco"])
def test_list_entries_with_dotdot_are_refused(tmp_path, capsys, layout):
    if layout == "voc":
        root = voc_dataset(tmp_path / "voc", ["x1", "../../JPEGImages/x2.jpg"])
        listing, split = root / "ImageSets" / "Segmentation" / "train_aug.txt", "train_aug"
    else:
        root = tmp_path / "coco"
        for seed, year in enumerate(("train2014", "val2014")):  # two pictures: a copy in both splits is a problem
            write_image(root / year / "x1.jpg", seed=seed)
            write_mask(root / "SegmentationClass" / year / "x1.png", square_mask(1))
        listing, split = root / "val.txt", "val"
        listing.write_text("x1\n../secret\n")
    with pytest.raises(CosaError) as error:
        load_split(root, split)
    one_line(error, f"{listing}:2", "leaves the dataset directory")
    only_problem(capsys, root, f"{listing}:2")


def test_absolute_sbd_entries_only_name_files_inside_the_root(tmp_path):
    """SBD lists write '/JPEGImages/x.jpg': only the stem is used, so the file comes from ROOT."""
    secret = tmp_path / "secret.jpg"
    write_image(secret)
    root = voc_dataset(tmp_path / "voc", ["x1", f"{secret} {tmp_path / 'secret.png'}"])
    with pytest.raises(CosaError) as error:
        load_split(root, "train_aug")
    one_line(error, f"{root / 'JPEGImages' / 'secret'}.jpg: image listed in split 'train_aug' not found")


# --- dataset paths that name the wrong kind of thing ----------------------------------------------


def test_a_dataset_path_that_is_a_file_is_named_a_file(tmp_path, capsys):
    root = good_dataset(tmp_path / "ds")
    line = cli_error(capsys, "data", "check", root / "classes.txt")
    assert line == f"cosa: error: {root / 'classes.txt'}: is a file, not a dataset folder"


def test_the_images_folder_given_as_the_dataset_points_to_the_root(tmp_path, capsys):
    root = good_dataset(tmp_path / "ds")
    line = cli_error(capsys, "data", "check", root / "images")
    assert "cannot tell the dataset layout" in line and f"(is the dataset root {root}?)" in line
