"""Dataset layouts: folder, VOC and COCO read into one interface; clear errors for bad data."""

import json

import numpy as np
import pytest
from PIL import Image

from cosa.data.check import check_dataset
from cosa.data.classes import COCO_CLASSES, VOC_CLASSES
from cosa.data.datasets import EvaluationImages, TrainingViews
from cosa.data.io import read_image, write_mask
from cosa.data.layouts import detect_layout, load_split
from cosa.errors import CosaError

from conftest import make_folder_dataset, write_image


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
