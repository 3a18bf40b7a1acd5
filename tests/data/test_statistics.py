"""What ``cosa data check`` measures of a dataset, checked on a hand-made one."""

import numpy as np

from cosa.data.check import check_dataset

from conftest import make_folder_dataset


def square_mask(label, side, at=0):
    mask = np.zeros((16, 20), np.uint8)
    mask[at : at + side, at : at + side] = label
    return mask


def test_sizes_counts_and_classes_never_alone(tmp_path):
    both = square_mask(1, 4)
    both[10:13, 10:13] = 2  # a dog of 9 pixels beside a cat of 16
    rows = [("a", "cat", square_mask(1, 6)), ("b", "cat;dog", both), ("c", "cat", None)]
    statistics = check_dataset(make_folder_dataset(tmp_path / "ds", rows)).statistics["train"]
    assert statistics.images == 3 and statistics.median_short_side == 16
    assert sorted(statistics.object_sides) == [3, 4, 6]  # √area per class and image, masks only
    assert statistics.median_object_side == 4
    assert statistics.object_fractions == [6 / 16, 4 / 16, 3 / 16]
    assert statistics.class_images == {"cat": 3, "dog": 1} and statistics.alone == {"cat": 2, "dog": 0}
    assert statistics.never_alone == ["dog"]
    text = "\n".join(statistics.describe())
    assert "classes never alone: dog" in text and "images per class: cat 3, dog 1" in text
    assert "median 4 px" in text
