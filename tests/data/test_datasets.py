"""A split's training views and evaluation images: a mask must have its image's size, and an image
smaller than the crop is padded. docs/reliability.md lists each case with the test that pins it."""

import numpy as np
import pytest
import torch

from cosa.data.datasets import TrainingViews
from cosa.data.io import IGNORE_INDEX, write_mask
from cosa.data.layouts import load_split
from cosa.data.views import normalize
from cosa.errors import CosaError

from conftest import (
    evaluation_item,
    folder_dataset,
    good_dataset,
    one_line,
    only_problem,
    square_mask,
    write_image,
)


def test_mask_of_another_size_is_fatal(tmp_path, capsys):
    root = good_dataset(tmp_path / "ds")
    write_mask(root / "masks" / "b.png", square_mask(1, size=(8, 8)))
    with pytest.raises(CosaError) as error:
        evaluation_item(root, "b")
    expected = f"{root / 'masks' / 'b.png'}: mask is (8, 8) but its image is (16, 20)"
    assert one_line(error) == expected
    assert only_problem(capsys, root) == expected


def test_image_smaller_than_the_crop_is_padded(tmp_path):
    root = folder_dataset(tmp_path / "ds", ["tiny.png,cat"], names=())
    write_image(root / "images" / "tiny.png", size=(5, 3))
    write_mask(root / "masks" / "tiny.png", np.ones((3, 5), np.uint8))
    views = TrainingViews(load_split(root, "train"), 64, (0.5, 2.0), blur_probability=0.0, seed=0, with_masks=True)
    for position in range(8):  # eight draws of scale, offset and flip
        item = views[position]
        top, bottom, left, right = item["box"].tolist()
        inside = torch.zeros(64, 64, dtype=torch.bool)
        inside[top:bottom, left:right] = True
        assert item["weak"].shape == (3, 64, 64) and 0 < bottom - top <= 6 and 0 < right - left <= 10
        black = normalize(torch.zeros(3, 1, 1, dtype=torch.uint8))  # the padding, as released
        assert torch.equal(item["weak"][:, ~inside], black[:, :, 0].expand(-1, int((~inside).sum())))
        assert (item["mask"][~inside] == IGNORE_INDEX).all()
        assert (item["mask"][inside] == 1).all()
