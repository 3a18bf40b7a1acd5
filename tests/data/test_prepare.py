"""``cosa data prepare-voc`` / ``prepare-coco`` on tiny trees in the real download formats."""

import importlib.util
import json
import shutil
import sys

import numpy as np
import pytest
from PIL import Image

from cosa.cli.main import main
from cosa.data.io import read_mask, write_mask
from cosa.data.layouts import load_split
from cosa.data.prepare import prepare_coco, prepare_voc

needs_pycocotools = pytest.mark.skipif(
    importlib.util.find_spec("pycocotools") is None, reason="pycocotools is not installed (pip install 'cosa[coco]')"
)


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return code, out, err


def write_jpeg(path, height, width):
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(0).integers(0, 255, (height, width, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path, format="JPEG")


# --- VOC ---------------------------------------------------------------------------------------


def voc_mask(classes):
    mask = np.zeros((16, 20), np.uint8)
    for index, label in enumerate(classes):
        mask[2 + 4 * index : 5 + 4 * index, 3:9] = label
    mask[0, :] = 255  # object borders are 255 in VOC masks
    return mask


VOC_MASKS = {"2007_000032": voc_mask([1, 15]), "2007_000039": voc_mask([20]), "2008_000123": voc_mask([7, 8, 15])}


def make_voc(root):
    for name, mask in VOC_MASKS.items():
        write_jpeg(root / "JPEGImages" / f"{name}.jpg", 16, 20)
        write_mask(root / "SegmentationClassAug" / f"{name}.png", mask)  # palette PNG, as SBD ships them
    lists = root / "ImageSets" / "Segmentation"
    lists.mkdir(parents=True)
    (lists / "train_aug.txt").write_text(
        "/JPEGImages/2007_000032.jpg /SegmentationClassAug/2007_000032.png\n2007_000039\n"
    )
    (lists / "val.txt").write_text("2008_000123\n")
    return root


def mask_classes(name):
    return tuple(int(v) - 1 for v in np.unique(VOC_MASKS[name]) if 1 <= v <= 20)


def test_prepare_voc_caches_the_labels_of_a_complete_tree(tmp_path, capsys):
    root = make_voc(tmp_path / "VOC2012")
    code, out, _ = run_cli(capsys, "data", "prepare-voc", root)
    assert code == 0, out
    assert "train_aug: 2 listed, 2 images, 2 with masks; labels cached in" in out
    assert "val: 1 listed, 1 images, 1 with masks; labels cached in" in out and out.rstrip().endswith("ready")
    for split, names in (("train_aug", ["2007_000032", "2007_000039"]), ("val", ["2008_000123"])):
        cache = json.loads((root / ".cosa" / f"labels-{split}.json").read_text())
        assert cache["labels"] == [list(mask_classes(name)) for name in names]
        assert [sample.labels for sample in load_split(root, split).samples] == [mask_classes(n) for n in names]


def test_prepare_voc_explains_missing_augmented_masks(tmp_path, capsys):
    root = make_voc(tmp_path / "VOC2012")
    (root / "SegmentationClassAug").rename(root / "SegmentationClass")  # the official VOC masks only
    code, out, _ = run_cli(capsys, "data", "prepare-voc", root)
    assert code == 1
    problems = [line for line in out.splitlines() if line.startswith("problem: ")]
    assert len(problems) == 1 and f"{root / 'SegmentationClassAug'}: not found" in problems[0]
    assert "SegmentationClass/ here holds only the official VOC masks" in problems[0]
    assert "SBD" in problems[0] and "1 problem(s)" in out


def test_prepare_voc_counts_and_names_missing_files(tmp_path):
    root = make_voc(tmp_path / "VOC2012")
    missing = [f"2012_00000{i}" for i in range(5)]
    with open(root / "ImageSets" / "Segmentation" / "train_aug.txt", "a") as listing:
        listing.write("".join(f"{name}\n" for name in missing))
    (root / "SegmentationClassAug" / "2007_000039.png").unlink()
    report = prepare_voc(root)
    listing = root / "ImageSets" / "Segmentation" / "train_aug.txt"
    assert report.problems == [
        f"{listing}: 5 of 7 listed images are missing from JPEGImages/ "
        "(2012_000000.jpg, 2012_000001.jpg, 2012_000002.jpg and 2 more)",
        f"{listing}: 6 of 7 listed images have no mask in SegmentationClassAug/ or SegmentationClass/ "
        "(2007_000039.png, 2012_000000.png, 2012_000001.png and 3 more)",
    ]
    train, val = report.splits
    assert (train.listed, train.images, train.masks, train.cache) == (7, 2, 1, None)
    assert val.cache == root / ".cosa" / "labels-val.json" and val.cache.is_file()
    assert not (root / ".cosa" / "labels-train_aug.json").exists()


def test_prepare_voc_without_images_folder(tmp_path):
    (tmp_path / "VOC2012" / "SegmentationClassAug").mkdir(parents=True)
    report = prepare_voc(tmp_path / "VOC2012")
    assert not report.ready and report.splits == []
    assert report.problems[0].startswith(f"{tmp_path / 'VOC2012' / 'JPEGImages'}: not found")


# --- COCO --------------------------------------------------------------------------------------


def polygon(top, left, bottom, right):
    """A rectangle as a COCO polygon; pycocotools fills exactly rows top:bottom, columns left:right."""
    return [left, top, right, top, right, bottom, left, bottom]


def uncompressed_rle(mask):
    """COCO's crowd encoding, computed by brute force: run lengths in column-major order, zeros first."""
    counts, value, run = [], 0, 0
    for pixel in mask.flatten(order="F"):
        if pixel != value:
            counts.append(run)
            value, run = pixel, 0
        run += 1
    return {"counts": [*counts, run], "size": list(mask.shape)}


def box(shape, top, left, bottom, right):
    mask = np.zeros(shape, np.uint8)
    mask[top:bottom, left:right] = 1
    return mask


CATEGORIES = [
    {"id": 1, "name": "person", "supercategory": "person"},
    {"id": 3, "name": "car", "supercategory": "vehicle"},
    {"id": 90, "name": "toothbrush", "supercategory": "indoor"},
]  # labels 1, 3 and 80


def make_coco(root, annotations_dir=None):
    """val2014: image 42 (overlap and crowd), 73 (a two-part car), 99 (no annotation); train2014: image 9."""
    val = {
        "images": [
            {"id": 42, "file_name": "COCO_val2014_000000000042.jpg", "height": 24, "width": 32},
            {"id": 73, "file_name": "COCO_val2014_000000000073.jpg", "height": 20, "width": 30},
            {"id": 99, "file_name": "COCO_val2014_000000000099.jpg", "height": 10, "width": 10},
        ],
        "annotations": [
            # The toothbrush lies on the person and has the lower id: only the area rule puts it on top.
            {"id": 1, "image_id": 42, "category_id": 90, "iscrowd": 0, "segmentation": [polygon(5, 5, 9, 10)]},
            {"id": 2, "image_id": 42, "category_id": 1, "iscrowd": 0, "segmentation": [polygon(2, 2, 16, 20)]},
            {
                "id": 3,
                "image_id": 42,
                "category_id": 3,
                "iscrowd": 1,
                "segmentation": uncompressed_rle(box((24, 32), 12, 15, 22, 30)),
            },
            {
                "id": 4,
                "image_id": 73,
                "category_id": 3,
                "iscrowd": 0,
                "segmentation": [polygon(1, 1, 5, 6), polygon(10, 12, 18, 28)],
            },
        ],
        "categories": CATEGORIES,
    }
    train = {
        "images": [{"id": 9, "file_name": "COCO_train2014_000000000009.jpg", "height": 12, "width": 14}],
        "annotations": [
            {"id": 5, "image_id": 9, "category_id": 1, "iscrowd": 0, "segmentation": [polygon(0, 0, 6, 7)]}
        ],
        "categories": CATEGORIES,
    }
    annotations_dir = annotations_dir or root / "annotations"
    annotations_dir.mkdir(parents=True)
    for year, dataset in (("val2014", val), ("train2014", train)):
        (annotations_dir / f"instances_{year}.json").write_text(json.dumps(dataset))
        for image in dataset["images"]:
            write_jpeg(root / year / image["file_name"], image["height"], image["width"])
    return root


def expected_val_masks():
    first = np.zeros((24, 32), np.uint8)
    first[12:22, 15:30] = 255  # crowd car
    first[2:16, 2:20] = 1  # person, over the crowd
    first[5:9, 5:10] = 80  # toothbrush (category 90), smaller than the person
    second = np.zeros((20, 30), np.uint8)
    second[1:5, 1:6] = second[10:18, 12:28] = 3
    return {"COCO_val2014_000000000042": first, "COCO_val2014_000000000073": second}


@needs_pycocotools
def test_prepare_coco_rasterises_the_instances(tmp_path):
    root = make_coco(tmp_path / "coco")
    report = prepare_coco(root)
    assert report.ready, report.problems
    for name, expected in expected_val_masks().items():
        path = root / "SegmentationClass" / "val2014" / f"{name}.png"
        np.testing.assert_array_equal(read_mask(path).numpy(), expected)
        assert Image.open(path).mode == "P"
    assert not (root / "SegmentationClass" / "val2014" / "COCO_val2014_000000000099.png").exists()
    assert (root / "val.txt").read_text().split() == ["COCO_val2014_000000000042", "COCO_val2014_000000000073"]
    assert (root / "train.txt").read_text().split() == ["COCO_train2014_000000000009"]
    val = load_split(root, "val")
    assert [(s.name, s.labels) for s in val.samples] == [
        ("COCO_val2014_000000000042", (0, 79)),
        ("COCO_val2014_000000000073", (2,)),
    ]
    assert load_split(root, "train").samples[0].labels == (0,)
    assert (root / ".cosa" / "labels-val.json").is_file() and (root / ".cosa" / "labels-train.json").is_file()


@needs_pycocotools
def test_prepare_coco_cli_keeps_existing_masks_unless_overwrite(tmp_path, capsys):
    root = make_coco(tmp_path / "coco", annotations_dir=tmp_path / "downloads")
    code, out, _ = run_cli(capsys, "data", "prepare-coco", root, "--annotations", tmp_path / "downloads")
    assert code == 0, out
    assert "val: 2 listed, 2 images, 2 with masks (2 written, 0 already there); labels cached in" in out
    assert "train: 1 listed, 1 images, 1 with masks (1 written, 0 already there)" in out
    path = root / "SegmentationClass" / "val2014" / "COCO_val2014_000000000073.png"
    write_mask(path, np.zeros((20, 30), np.uint8))
    code, out, _ = run_cli(capsys, "data", "prepare-coco", root, "--annotations", tmp_path / "downloads")
    assert code == 0 and "(0 written, 2 already there)" in out and read_mask(path).max() == 0
    code, out, _ = run_cli(capsys, "data", "prepare-coco", root, "--annotations", tmp_path / "downloads", "--overwrite")
    assert code == 0 and "(2 written, 0 already there)" in out
    np.testing.assert_array_equal(read_mask(path).numpy(), expected_val_masks()[path.stem])


@needs_pycocotools
def test_prepare_coco_names_what_is_missing(tmp_path, capsys):
    root = make_coco(tmp_path / "coco")
    shutil.rmtree(root / "train2014")
    (root / "val2014" / "COCO_val2014_000000000073.jpg").unlink()
    code, out, _ = run_cli(capsys, "data", "prepare-coco", root)
    assert code == 1
    assert f"problem: {root / 'train2014'}: COCO image folder not found (unzip train2014.zip" in out
    assert f"problem: {root / 'val2014'}: 1 of 2 annotated images are missing (COCO_val2014_000000000073.jpg)" in out
    assert "val: 2 listed, 1 images, 2 with masks (2 written, 0 already there); not ready" in out


@needs_pycocotools
def test_prepare_coco_rejects_foreign_categories(tmp_path, capsys):
    root = make_coco(tmp_path / "coco")
    path = root / "annotations" / "instances_train2014.json"
    dataset = json.loads(path.read_text())
    dataset["categories"].append({"id": 91, "name": "hair brush", "supercategory": "indoor"})
    path.write_text(json.dumps(dataset))
    code, _, err = run_cli(capsys, "data", "prepare-coco", root)
    assert code == 2 and err.strip().splitlines()[-1] == (
        f"cosa: error: {path}: category 91 'hair brush' is not one of the 80 COCO 2014 categories"
    )


def test_prepare_coco_without_pycocotools_says_what_to_install(tmp_path, capsys, monkeypatch):
    monkeypatch.setitem(sys.modules, "pycocotools", None)  # makes the import fail
    monkeypatch.setitem(sys.modules, "pycocotools.coco", None)
    (tmp_path / "coco").mkdir()
    code, _, err = run_cli(capsys, "data", "prepare-coco", tmp_path / "coco")
    assert code == 2 and "pip install pycocotools" in err and len(err.strip().splitlines()) == 1
