"""``cosa config show``: the configuration a run would use, as a config file with each key's comment."""

from dataclasses import asdict

import yaml

from cosa.config import load_config
from cosa.config.load import flat_keys
from cosa.data.scaled import load_config_for_data

from conftest import assert_one_line_error, run_cli


def test_show_prints_the_config_a_run_would_use_as_a_file_train_takes(tmp_path, capsys):
    code, out, _ = run_cli(capsys, "config", "show", "--config", "demo", "--recipe", "paper", "train.iterations=500")
    assert code == 0
    assert out.startswith("# The configuration of: cosa train --config demo --recipe paper train.iterations=500\n")
    expected = load_config("demo", "paper", overrides=["train.iterations=500"])
    assert yaml.safe_load(out) == asdict(expected)
    shown = tmp_path / "shown.yaml"
    shown.write_text(out)
    assert load_config(str(shown)) == expected  # complete: no base preset needed
    code, again, _ = run_cli(capsys, "config", "show", "--config", shown)
    assert code == 0 and again.split("\n", 1)[1] == out.split("\n", 1)[1]  # the same file, but for its header


def test_show_without_options_is_the_voc_preset_and_the_release_recipe(capsys):
    code, out, _ = run_cli(capsys, "config", "show")
    assert code == 0 and yaml.safe_load(out) == asdict(load_config("voc", "release"))
    assert "  # side of the square training crop, px\n  crop_size: 448\n" in out


def test_show_measures_the_data_where_the_config_scales_to_it(tiny_data, capsys):
    code, out, _ = run_cli(capsys, "config", "show", "--config", "own", "--data", tiny_data)
    cfg, scaled = load_config_for_data("own", None, str(tiny_data))
    assert code == 0 and yaml.safe_load(out) == asdict(cfg)
    assert out.splitlines()[1] == f"# {scaled}"
    assert flat_keys(asdict(cfg))["data.crop_size"] != load_config("own").data.crop_size  # 64 px images
    code, out, _ = run_cli(capsys, "config", "show", "--config", "own")
    assert out.splitlines()[1] == (
        "# Without --data: the values before cosa train measures the data (data.scale_to_data)."
    )


def test_a_mistyped_key_is_one_line(capsys):
    code, _, err = run_cli(capsys, "config", "show", "--config", "demo", "trian.iterations=5")
    assert_one_line_error(
        code, err, "override: unknown config key 'trian.iterations' (did you mean 'train.iterations'?)"
    )
