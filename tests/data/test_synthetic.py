"""The synthetic dataset: deterministic, well-formed, labels that match masks, class-tied context,
and its coexistence score."""

import csv
import json
import re
import shutil

import numpy as np
import pytest
import torch
from PIL import Image

from cosa.data.io import read_mask
from cosa.data.layouts import Sample, load_split
from cosa.data.synthetic import CLASS_NAMES, CONTEXTS, generate_synthetic_dataset, min_visible_pixels
from cosa.data.synthetic_metrics import where_labels_go
from cosa.errors import CosaError

from conftest import TINY_OVERRIDES

SIZE = 64


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    root = tmp_path_factory.mktemp("small")
    generate_synthetic_dataset(root, seed=0, num_train=40, num_val=10, image_size=SIZE)
    return root


@pytest.fixture(scope="module")
def large(tmp_path_factory):
    """Enough images for the co-occurrence rates to be stable."""
    root = tmp_path_factory.mktemp("large")
    summary = generate_synthetic_dataset(root, seed=3, num_train=200, num_val=0, image_size=SIZE)
    return root, summary


def rows(root, split):
    with open(root / f"{split}.csv", newline="") as handle:
        return list(csv.DictReader(handle))


def labels_of(row):
    return [name for name in row["labels"].split(";") if name]


def read(path):
    with Image.open(path) as image:
        return np.asarray(image)


def all_files(root):
    return {path.relative_to(root).as_posix(): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_same_seed_gives_identical_files(small, tmp_path):
    generate_synthetic_dataset(tmp_path, seed=0, num_train=40, num_val=10, image_size=SIZE)
    assert all_files(tmp_path) == all_files(small)


def test_images_do_not_depend_on_dataset_size_and_change_with_seed(small, tmp_path):
    fewer, other_seed = tmp_path / "fewer", tmp_path / "other"
    generate_synthetic_dataset(fewer, seed=0, num_train=3, num_val=2, image_size=SIZE)
    generate_synthetic_dataset(other_seed, seed=1, num_train=3, num_val=2, image_size=SIZE)
    for name in ("train_0000", "train_0002", "val_0001"):
        for folder in ("images", "masks", "context"):
            assert (fewer / folder / f"{name}.png").read_bytes() == (small / folder / f"{name}.png").read_bytes()
        assert not np.array_equal(read(other_seed / "images" / f"{name}.png"), read(small / "images" / f"{name}.png"))


def test_layout_and_file_formats(small):
    assert (small / "classes.txt").read_text().split() == list(CLASS_NAMES)
    metadata = json.loads((small / "context.json").read_text())
    assert metadata["seed"] == 0 and metadata["generator_version"] == 1
    contexts = [(c["id"], c["name"], c["class"]) for c in metadata["contexts"]]
    assert contexts == [(1, "water", "boat"), (2, "rails", "block")]
    for split, count in (("train", 40), ("val", 10)):
        assert (small / f"{split}.csv").read_text().splitlines()[0] == "image,labels"
        table = rows(small, split)
        assert len(table) == count
        for row in table:
            stem = row["image"].removesuffix(".png")
            with Image.open(small / "images" / row["image"]) as image:
                assert image.mode == "RGB" and image.size == (SIZE, SIZE)
            with Image.open(small / "masks" / f"{stem}.png") as mask:
                assert mask.mode == "P" and mask.size == (SIZE, SIZE)
                assert np.asarray(mask).max() <= len(CLASS_NAMES)
            with Image.open(small / "context" / f"{stem}.png") as context:
                assert context.mode == "L" and context.size == (SIZE, SIZE)
                assert set(np.unique(np.asarray(context))) <= {0, 1, 2}


def test_labels_agree_with_masks(small):
    threshold = min_visible_pixels(SIZE)
    for split in ("train", "val"):
        for row in rows(small, split):
            listed = labels_of(row)
            assert listed, f"{row['image']} has no labels"
            assert listed == [name for name in CLASS_NAMES if name in listed], "labels out of class order"
            mask = read(small / "masks" / row["image"])
            for index, name in enumerate(CLASS_NAMES, start=1):
                pixels = np.count_nonzero(mask == index)
                if name in listed:
                    assert pixels >= threshold, f"{row['image']}: {name} has only {pixels} pixels"
                else:
                    assert pixels == 0, f"{row['image']}: unlisted {name} in the mask"


def test_context_pixels_are_background(small):
    for row in rows(small, "train"):
        context = read(small / "context" / row["image"])
        assert not read(small / "masks" / row["image"])[context > 0].any()


def test_contexts_co_occur_with_their_class(large):
    root, summary = large
    threshold = min_visible_pixels(SIZE)
    for tied in CONTEXTS:
        present = {True: [], False: []}  # class in image -> context present per image
        for row in rows(root, "train"):
            context = read(root / "context" / row["image"])
            present[tied.class_name in labels_of(row)].append(np.count_nonzero(context == tied.id) >= threshold)
        with_class, without_class = np.mean(present[True]), np.mean(present[False])
        assert with_class > 0.6 and without_class < 0.25, (tied.name, with_class, without_class)
        assert summary.context_rates[tied.name] == pytest.approx((with_class, without_class))


def test_classes_are_roughly_balanced(large):
    root, summary = large
    counts = {name: sum(name in labels_of(row) for row in rows(root, "train")) for name in CLASS_NAMES}
    assert counts == summary.class_image_counts
    assert min(counts.values()) >= 0.5 * max(counts.values())
    assert summary.split_counts == {"train": 200, "val": 0}


def test_readable_as_a_folder_dataset(small):
    split = load_split(small, "val")
    assert split.layout == "folder" and split.class_names == CLASS_NAMES and len(split.samples) == 10
    assert all(sample.mask is not None and sample.context is not None for sample in split.samples)


def test_refuses_an_unrelated_nonempty_directory(tmp_path):
    (tmp_path / "notes.txt").write_text("mine")
    with pytest.raises(CosaError, match=re.escape(str(tmp_path))):
        generate_synthetic_dataset(tmp_path, num_train=2, num_val=1, image_size=SIZE)
    assert [path.name for path in tmp_path.iterdir()] == ["notes.txt"]


def test_replaces_a_previous_synthetic_dataset_only_when_asked(tmp_path):
    generate_synthetic_dataset(tmp_path, seed=0, num_train=6, num_val=2, image_size=SIZE)
    with pytest.raises(CosaError, match="--overwrite"):
        generate_synthetic_dataset(tmp_path, seed=5, num_train=3, num_val=1, image_size=SIZE)
    generate_synthetic_dataset(tmp_path, seed=5, num_train=3, num_val=1, image_size=SIZE, overwrite=True)
    assert sorted(path.name for path in (tmp_path / "images").iterdir()) == [
        "train_0000.png",
        "train_0001.png",
        "train_0002.png",
        "val_0000.png",
    ]
    assert json.loads((tmp_path / "context.json").read_text())["seed"] == 5


# --- the coexistence score --------------------------------------------------------------------


def test_where_labels_go_counts_objects_their_context_and_the_rest_of_the_background():
    context = torch.tensor([[1, 1, 1, 2], [2, 2, 0, 0]])
    mask = torch.tensor([[0, 0, 6, 0], [0, 0, 0, 2]])  # a boat (6) occludes one water pixel; a block (2)
    segmentation = torch.tensor([[6, 0, 6, 2], [6, 2, 6, 6]])
    cam = torch.tensor([[6, 6, 6, 0], [0, 0, 0, 0]])
    predictions = {"unmasked": segmentation, "cam": cam}  # no CPL: its counts stay zero
    counts = where_labels_go(context, mask, predictions, {1: 5, 2: 1})  # water→boat (6), rails→block (2)
    # [labelled as the class, pixels] per region: object, context, the rest of the background
    assert counts[0].tolist() == [
        [[1, 1], [1, 2], [1, 1]],  # segmentation: the boat; 1 of 2 water pixels; the one other background pixel
        [[1, 1], [2, 2], [0, 1]],  # CAM
        [[0, 0], [0, 0], [0, 0]],  # CPL
    ]
    assert counts[1].tolist() == [[[0, 1], [2, 3], [0, 1]], [[0, 1], [0, 3], [0, 1]], [[0, 0], [0, 0], [0, 0]]]


def test_coexistence_adds_up_the_images_of_an_evaluation(small):
    split = load_split(small, "val")
    (make,) = split.extra_metrics
    metric = make()
    tied = {tied.id: CLASS_NAMES.index(tied.class_name) for tied in CONTEXTS}
    pixels = 0
    for sample in split.samples:
        mask = read_mask(sample.mask).long()
        context = read_mask(sample.context).long()
        tied_label = torch.zeros_like(mask)  # every context pixel taken as its class by the segmentation
        for context_id, index in tied.items():
            tied_label[context == context_id] = index + 1
        pixels += int(((context > 0) & (mask == 0)).sum())
        zeros = torch.zeros_like(mask)
        metric.update(sample, mask, {"unmasked": tied_label, "cam": zeros, "cpl": zeros})
    metric.update(Sample("plain", small / "images" / "val_0000.png", ()), mask, {})  # no context: nothing to count
    context_counts = metric.counts[:, :, 1].sum(0)  # per kind: [labelled as the class, pixels]
    assert pixels > 0 and context_counts.tolist() == [[pixels, pixels], [0, pixels], [0, pixels]]
    result = metric.result()
    assert {key: result[key] for key in ("coexistence", "coexistence_cam", "coexistence_cpl")} == {
        "coexistence": 100.0,
        "coexistence_cam": 0.0,
        "coexistence_cpl": 0.0,
    }
    assert set(result["where_classes_go"]) == {tied.class_name for tied in CONTEXTS}
    for kinds in result["where_classes_go"].values():
        assert kinds["segmentation"]["context"] in (0.0, 100.0) and kinds["cam"]["context"] == 0.0


def test_evaluation_reports_coexistence_only_for_data_with_tied_contexts(small, tmp_path):
    from cosa.config.load import load_config
    from cosa.engine.distributed import DistContext
    from cosa.engine.evaluate import evaluate, format_results
    from cosa.method.thresholds import CplThresholds
    from cosa.models.network import build_network

    cfg = load_config("demo", None, None, TINY_OVERRIDES)
    torch.manual_seed(0)
    network = build_network(cfg.model, len(CLASS_NAMES), pretrained=False)
    thresholds = CplThresholds.from_config(cfg.method)

    def scores(root):
        return evaluate(
            network, load_split(root, "val"), cfg, thresholds, DistContext(0, 1, 0, torch.device("cpu")), max_images=3
        )

    with_contexts = scores(small)
    assert 0 <= with_contexts["coexistence"] <= 100 and 0 <= with_contexts["coexistence_cam"] <= 100
    assert "metrics of the dataset: coexistence" in format_results(with_contexts)
    plain = shutil.copytree(small, tmp_path / "plain")
    (plain / "context.json").unlink()
    assert load_split(plain, "val").extra_metrics == ()
    without = scores(plain)
    dataset_keys = ("coexistence", "coexistence_cam", "coexistence_cpl", "where_classes_go")
    assert without == {key: value for key, value in with_contexts.items() if key not in dataset_keys}
