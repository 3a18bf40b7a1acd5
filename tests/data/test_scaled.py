"""A configuration scaled to its data (``data.scale_to_data``, the ``own`` preset): what is
measured, which images are read, and where the measured settings sit among the user's."""

import numpy as np

from cosa.config.scaling import scaled_settings
from cosa.data.layouts import load_split
from cosa.data.scaled import load_config_for_data, measure

from conftest import make_folder_dataset


def square_mask(label, side):
    mask = np.zeros((16, 20), np.uint8)
    mask[:side, :side] = label
    return mask


def test_a_sample_spread_over_the_split_is_measured_skipping_unreadable_files(tmp_path):
    rows = [(f"i{k}", "cat", square_mask(1, 2 + k)) for k in range(10)]
    root = make_folder_dataset(tmp_path / "ds", rows)
    split = load_split(root, "train")
    assert measure(split, limit=4).object_sides == [2, 5, 8, 11]  # images 0, 3, 6 and 9
    (root / "images" / "i9.png").write_bytes(b"broken")
    statistics = measure(split)
    assert statistics.images == 9 and statistics.median_short_side == 16 and statistics.median_object_side == 6


def test_the_measured_settings_sit_below_the_users_file_and_overrides(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", [(f"i{k}", "cat;dog" if k % 2 else "cat", None) for k in range(40)])
    user_file = tmp_path / "mine.yaml"
    user_file.write_text("base: own\ndata:\n  crop_size: 96\n")
    cfg, line = load_config_for_data(str(user_file), None, str(root), ["train.iterations=300"])
    # No masks: the object size, and so the stride, unknown; the warm-ups follow the user's length.
    measured = scaled_settings(16, None, 40, iterations=300)
    assert cfg.data.crop_size == 96 and cfg.train.iterations == 300  # the user's
    assert cfg.method.loss_warmup_iters == measured["method.loss_warmup_iters"] == 120  # 40% of 300
    assert cfg.optim.warmup_iters == 15 and cfg.method.ema_momentum == measured["method.ema_momentum"]
    assert cfg.model.output_stride == 16  # the preset's
    assert line.startswith("settings scaled to split 'train' (40 images, median shorter side 16 px, no masks")
    assert line.endswith("; yours kept: data.crop_size, train.iterations")


def test_nothing_is_measured_without_the_switch_or_without_the_split(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", [("a", "cat", None), ("b", "dog", None)])
    assert load_config_for_data("demo", None, str(root))[1] == ""
    assert load_config_for_data("own", None, str(root), ["data.scale_to_data=false"])[1] == ""
    # A split that is not there is for the data checks at the start of training to explain.
    assert load_config_for_data("own", None, str(root), ["data.train_split=nowhere"])[1] == ""


def test_a_key_the_user_sets_is_theirs_even_at_the_measured_value(tmp_path):
    root = make_folder_dataset(tmp_path / "ds", [(f"i{k}", "cat", None) for k in range(40)])
    cfg, line = load_config_for_data("own", None, str(root), ["data.crop_size=64"])  # what it would measure
    assert cfg.data.crop_size == 64 and "data.crop_size=64" not in line
    assert line.endswith("; yours kept: data.crop_size")
