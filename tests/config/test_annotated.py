"""The configuration as YAML with each key's comment from schema.py (``cosa config show``)."""

from dataclasses import asdict

import pytest
import yaml

from cosa.config import PRESETS, RECIPES, load_config
from cosa.config.annotated import annotated_yaml, key_comments
from cosa.config.load import flat_keys
from cosa.config.schema import Config


def test_every_key_and_section_of_the_schema_has_a_comment():
    comments = key_comments()
    keys = set(flat_keys(asdict(Config())))
    sections = {key.rsplit(".", depth)[0] for key in keys for depth in (1, 2) if key.count(".") >= depth}
    assert set(comments) == keys | sections
    assert [key for key, comment in comments.items() if not comment] == []


def test_a_comment_is_the_lines_above_the_key_and_the_one_beside_it():
    comments = key_comments()
    assert comments["data.crop_size"] == "side of the square training crop, px"
    assert comments["train.batch_size"] == (
        "Images per optimiser step over all processes; each of N processes takes batch_size / N."
    )
    assert comments["method.aux_cam_thresholds"] == "The auxiliary CAM's CPL thresholds."
    # A section without a comment of its own: its class's docstring, first paragraph.
    assert comments["method.raw"] == (
        "Reliability-based adaptive weighting of the CPL, a reconstruction (method/pseudo_labels.py)."
    )
    assert comments["eval.crf_params.bilateral_srgb"] == "the appearance kernel's colour bandwidth, in 0–255 units"


def test_the_released_internals_are_not_keys():
    comments = key_comments()
    for fixed in ("threshold_search.min_confidence", "threshold_search.max_em_steps", "threshold_search.downscale"):
        assert f"method.{fixed}" not in comments
    assert "optim.warmup_ratio" not in comments


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("recipe", RECIPES)
def test_the_annotated_yaml_holds_the_config(preset, recipe):
    cfg = load_config(preset, recipe)
    assert yaml.safe_load(annotated_yaml(cfg)) == asdict(cfg)


def test_each_key_comes_under_its_comment():
    lines = annotated_yaml(load_config("demo"), ["a header"]).splitlines()
    assert lines[:4] == ["# a header", "", "# The dataset and the training views made from it.", "data:"]
    at = lines.index("  crop_size: 96")
    assert lines[at - 1] == "  # side of the square training crop, px"
    at = lines.index("    high: 0.8")  # method.cam_thresholds.high
    assert lines[at - 2 : at] == [
        "  cam_thresholds:",
        "    # δ_h: a pixel whose strongest class map is above this takes that class",
    ]
    assert all(len(line) <= 100 for line in lines if line.lstrip().startswith("#"))
