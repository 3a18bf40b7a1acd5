"""The settings that follow from the data, by hand, and the own preset as their reference case."""

import pytest

from cosa.config import load_config
from cosa.config.scaling import (
    MAX_SHORT_SIDE,
    REFERENCE_DATASET,
    as_overrides,
    crop_size,
    output_stride,
    scaled_settings,
)


@pytest.mark.parametrize("side, crop", [(128, 96), (100, 64), (375, 288), (30, 64), (1000, 448)])
def test_the_crop_is_three_quarters_of_the_shorter_side_rounded_to_32_within_bounds(side, crop):
    assert crop_size(side) == crop


@pytest.mark.parametrize("object_side, stride", [(20, 8), (31.9, 8), (32, 16), (200, 16), (None, 16)])
def test_stride_8_for_objects_under_two_cells_of_16(object_side, stride):
    assert output_stride(object_side) == stride


def test_settings_by_hand_for_an_imagined_dataset():
    settings = scaled_settings(short_side=375, object_side=150, num_images=10000, batch_size=8)
    # Crop 3/4 × 375 → 288, evaluation 1.5 × 375 → 576; 8 epochs of 10,000 images at 8 per step:
    # 10,000 steps, 40% warm-up, EMA time constant and LR warm-up 500.
    assert settings == {
        "data.crop_size": 288,
        "model.output_stride": 16,
        "eval.size": 576,
        "train.iterations": 10000,
        "method.loss_warmup_iters": 4000,
        "method.ema_momentum": 0.998,
        "optim.warmup_iters": 500,
        "method.regularizer.sigma_xy": round(100 * 288 / 448, 1),
        "method.regularizer.energy_weight": float(f"{1e-7 * (448 / 288) ** 4 / 10:.2g}"),
    }


def test_without_masks_the_stride_is_left_to_the_preset():
    assert "model.output_stride" not in scaled_settings(128, None, 1500)


def test_the_own_preset_is_the_rules_applied_to_its_reference_dataset():
    cfg = load_config("own")
    short_side, object_side, images = REFERENCE_DATASET
    for key, value in scaled_settings(short_side, object_side, images, cfg.train.batch_size).items():
        section, *path = key.split(".")
        actual = getattr(cfg, section)
        for name in path:
            actual = getattr(actual, name)
        assert actual == pytest.approx(value), key


def test_large_photos_are_worked_on_at_the_largest_side_the_crop_needs():
    # 12-megapixel phone photos (3024 px shorter side): evaluation at 1.5 × 3024 = 4512 px would run
    # out of memory. Both training and evaluation work at a shorter side of MAX_SHORT_SIDE instead.
    settings = scaled_settings(short_side=3024, object_side=800, num_images=1500)
    shrink = MAX_SHORT_SIDE / 3024
    assert settings["data.crop_size"] == 448 and settings["eval.size"] == 896 == round(1.5 * MAX_SHORT_SIDE / 32) * 32
    assert settings["data.scale_range"] == [0.099, 0.4]  # the default 0.5–2.0 times the shrink
    assert settings["data.scale_range"] == pytest.approx([0.5 * shrink, 2.0 * shrink], rel=0.02)  # two digits
    assert settings["model.output_stride"] == output_stride(800 * shrink) == 16
    assert "data.scale_range" not in scaled_settings(MAX_SHORT_SIDE, 100, 1500)  # up to it, nothing shrinks


def test_the_suggested_settings_are_one_word_each_and_load_with_the_own_preset():
    words = as_overrides(scaled_settings(3024, 800, 1500)).split(" ")
    assert "data.scale_range=[0.099,0.4]" in words
    cfg = load_config("own", overrides=words)
    assert cfg.data.scale_range == [0.099, 0.4] and cfg.eval.size == 896
