"""Compose a run's configuration: schema defaults ← preset ← recipe ← the user's YAML file ← ``key=value``.

Unknown keys (with the closest valid ones), values of the wrong type and OmegaConf syntax
(``${…}``, ``???``) are user errors (:class:`CosaError`, one line naming the key), never
tracebacks. The result is a plain :class:`Config` dataclass. A resumed run keeps the
configuration it was trained with (:func:`resumed_config`).
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import asdict
from importlib import resources
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, ListConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from cosa.config.scaling import LR_WARMUP_SHARE, WARMUP_SHARE
from cosa.config.schema import (
    PSEUDO_LABEL_RECIPES,
    RECIPE_NAMES,
    TECHNIQUES,
    WEIGHTS_OF_ANY_BACKBONE,
    Config,
    ModelConfig,
    broken_rule,
)
from cosa.errors import CosaError, library_reason
from cosa.files import write_text_atomically

# voc is the schema's defaults; each other preset is presets/NAME.yaml, what it changes in them
# or in its ``base`` preset. Likewise a recipe is recipes/NAME.yaml where it changes a default.
PRESETS = ("voc", "coco", "demo", "own")
RECIPES = RECIPE_NAMES
_BASE_KEY = "base"  # a preset or a config file may start from a preset: ``base: demo``
# The one value a resumed run may raise but not lower: more iterations continue a run for longer.
RAISABLE_ON_RESUME = "train.iterations"
# What a resumed run may change freely: none of it alters the weights the run trains. Where it
# runs and from where it reads (the dataset at a new place: the trainer checks that it is the same
# one), how it logs and checkpoints, and how it evaluates (evaluation reads the networks and draws
# no random numbers). A key ending in "." stands for its whole section.
FREE_ON_RESUME = (
    "data.root",
    "data.num_workers",
    "data.val_split",
    "model.pretrained",  # a resumed run's weights come from its checkpoint
    "train.device",
    "train.log_every",
    "train.eval_every",
    "train.checkpoint_every",
    "train.monitor_cpl",
    "eval.",
)


def _bundled(kind: str, name: str) -> DictConfig | None:
    """The bundled file ``kind/name.yaml``; None for a preset or recipe that is the schema's defaults."""
    path = resources.files("cosa.config").joinpath(kind, f"{name}.yaml")
    return OmegaConf.create(path.read_text()) if path.is_file() else None


def _preset_layer(name: str) -> DictConfig | None:
    """What preset ``name`` changes in the schema's defaults, with what its ``base`` preset changes."""
    layer = _bundled("presets", name)
    if layer is None:
        return None
    base = layer.pop(_BASE_KEY, None)
    below = _preset_layer(base) if base is not None else None
    return layer if below is None else OmegaConf.merge(below, layer)


def _read_yaml(path: Path) -> DictConfig:
    if path.is_dir():
        raise CosaError(f"{path}: is a folder, not a YAML config file")
    try:
        loaded = OmegaConf.load(path)
    except FileNotFoundError:
        raise CosaError(f"{path}: config file not found") from None
    except Exception as error:  # YAML syntax errors come in several types, their messages in several lines
        raise CosaError(f"{path}: not a valid YAML config ({' '.join(str(error).split())})") from None
    if not isinstance(loaded, DictConfig):
        raise CosaError(f"{path}: a config file must be a mapping of sections")
    if not loaded:  # it would silently mean the schema defaults, which no one asks for with a file
        raise CosaError(f"{path}: the config file is empty (start it with 'base: PRESET', one of {', '.join(PRESETS)})")
    return loaded


def _omegaconf_syntax(value: Any, key: str = "") -> tuple[str, str] | None:
    """The first key and value that OmegaConf would not take as a plain value.

    ``${…}`` is resolved as an interpolation, and ``???`` marks a missing value (a merge skips it).
    """
    if isinstance(value, str):
        return (key, value) if "${" in value or value == "???" else None
    if isinstance(value, Mapping):
        children = [(f"{key}.{name}" if key else str(name), child) for name, child in value.items()]
    elif isinstance(value, list):
        children = [(key, child) for child in value]
    else:
        return None
    return next((found for name, child in children if (found := _omegaconf_syntax(child, name))), None)


def _shape_mismatch(base: DictConfig, update: Mapping, prefix: str = "") -> str | None:
    """Why ``update`` does not fit the sections of ``base``: a value for a section, or keys for a value.

    OmegaConf would name no key for the first (``method=3``) and a type for the second.
    Unknown keys are left to the merge, which names them.
    """
    for name, value in update.items():
        key = f"{prefix}{name}"
        if not isinstance(name, str) or name not in base:
            continue
        node = base[name]
        if isinstance(node, DictConfig):
            if not isinstance(value, Mapping):
                return f"config key '{key}' is a section; set its keys (e.g. {key}.KEY=VALUE), not a value"
            found = _shape_mismatch(node, value, f"{key}.")
            if found:
                return found
        elif isinstance(value, Mapping):
            return f"config key '{key}' is a value, not a section"
    return None


def _unknown_key(base: DictConfig, update: Mapping, prefix: str = "") -> str | None:
    """The first key of ``update`` that ``base`` lacks, in full (``trian.iterations``, not ``trian``)."""
    for name, value in update.items():
        key = f"{prefix}{name}"
        if not isinstance(name, str) or name not in base:
            while isinstance(value, Mapping) and value:  # the key as the user wrote it, to its value
                name, value = next(iter(value.items()))
                key = f"{key}.{name}"
            return key
        if isinstance(value, Mapping) and isinstance(base[name], DictConfig):
            found = _unknown_key(base[name], value, f"{key}.")
            if found:
                return found
    return None


# A suggestion must be about as close to the mistyped key as the closest one (difflib's ratio).
_SUGGESTION_SPREAD = 0.1


def _closest_keys(key: str, base: DictConfig) -> list[str]:
    """The valid keys closest to ``key`` (a typo, a missing plural, a wrong section), best first;
    else those whose last name is closest to its last name (``lr``: ``optim.lr``)."""
    keys = list(flat_keys(OmegaConf.to_container(base)))
    matches = difflib.get_close_matches(key, keys, n=3)
    if not matches:
        last_names = {valid.rsplit(".", 1)[-1] for valid in keys}
        closest = difflib.get_close_matches(key.rsplit(".", 1)[-1], last_names, n=1)
        return [valid for valid in keys if closest and valid.rsplit(".", 1)[-1] == closest[0]]
    ratios = [difflib.SequenceMatcher(None, key, match).ratio() for match in matches]
    return [match for match, ratio in zip(matches, ratios) if ratio >= ratios[0] - _SUGGESTION_SPREAD]


def _unknown_key_message(key: str, base: DictConfig) -> str:
    closest = _closest_keys(key, base)
    hint = f" (did you mean {' or '.join(repr(match) for match in closest)}?)" if closest else ""
    return f"unknown config key '{key}'{hint}"


def _merge(base: DictConfig, update: Any, source: str) -> DictConfig:
    plain = OmegaConf.to_container(update, resolve=False) if isinstance(update, DictConfig) else update
    syntax = _omegaconf_syntax(plain)
    if syntax:
        raise CosaError(
            f"{source}: config key '{syntax[0]}' is '{syntax[1]}': configs hold plain values, "
            "not OmegaConf interpolations ('${…}') or missing-value marks ('???')"
        )
    if isinstance(plain, Mapping):
        mismatch = _shape_mismatch(base, plain)
        if mismatch:
            raise CosaError(f"{source}: {mismatch}")
        unknown = _unknown_key(base, plain)
        if unknown:
            raise CosaError(f"{source}: {_unknown_key_message(unknown, base)}")
    try:
        return OmegaConf.merge(base, update)
    except OmegaConfBaseException as error:  # every key is known by now: a value of the wrong type
        key = getattr(error, "full_key", None) or ""
        reason = _type_reason(base, plain, key) or library_reason(error)
        raise CosaError(f"{source}: bad value for config key '{key}': {reason}") from None


def _type_reason(base: DictConfig, update: Any, key: str) -> str | None:
    """What a value of the wrong type should look like, from the type of the key's current value;
    None to keep the library's words."""
    given: Any = update
    for part in key.split(".") if key else ():
        given = given.get(part) if isinstance(given, Mapping) else None
    current = OmegaConf.select(base, key, default=None) if key else None
    if given is None or given == "":
        return "needs a value"
    if isinstance(current, ListConfig):
        inside = given.strip("()") if isinstance(given, str) else given
        return f"is a list: write {key}=[{inside}]"
    if isinstance(current, bool):
        return "must be true or false"
    if isinstance(current, int):
        whole = isinstance(given, float) and given.is_integer()
        return "must be a whole number" + (f" (write {key}={int(given)})" if whole else "")
    if isinstance(current, float):
        return "must be a number"
    return None


def _undotted(values: Mapping, source: str) -> dict:
    """``values`` with dotted keys (``train.iterations: 5``) turned into sections, as in overrides."""
    nested: dict = {}

    def leaves(node: Mapping, prefix: str = ""):
        for name, value in node.items():
            if isinstance(value, Mapping) and value:
                yield from leaves(value, f"{prefix}{name}.")
            else:
                yield f"{prefix}{name}", value

    for key, value in leaves(values):
        *sections, name = key.split(".")
        node = nested
        for depth, section in enumerate(sections):
            node = node.setdefault(section, {})
            if not isinstance(node, dict):
                raise CosaError(f"{source}: config key '{'.'.join(sections[: depth + 1])}' is set twice")
        if name in node:
            raise CosaError(f"{source}: config key '{key}' is set twice")
        node[name] = value
    return nested


def _is_complete(values: Mapping) -> bool:
    """Whether ``values`` sets every key of the schema, as a run's ``config.yaml`` does."""
    return set(flat_keys(asdict(Config()))) <= set(flat_keys(dict(values)))


def _preset_and_file(config: str) -> tuple[str | None, DictConfig | None, str]:
    """A preset name, or a YAML file: its ``base`` preset (or None) and its own keys, and its name."""
    if config in PRESETS:
        return config, None, f"preset {config}"
    path = Path(config)
    if path.suffix not in (".yaml", ".yml") and not path.exists():
        raise CosaError(f"unknown preset '{config}' (choose from {', '.join(PRESETS)} or give a YAML file)")
    loaded = _undotted(OmegaConf.to_container(_read_yaml(path), resolve=False), str(path))
    base = loaded.pop(_BASE_KEY, None)
    if base is not None and base not in PRESETS:
        raise CosaError(f"{path}: '{_BASE_KEY}: {base}' is not a preset ({', '.join(PRESETS)})")
    if base is None and not _is_complete(loaded):
        # The schema's defaults below it would be VOC's, whatever the file is for: a dataset of
        # another layout would then fail on VOC's split names, far from the cause.
        raise CosaError(
            f"{path}: the file names no preset; start it with '{_BASE_KEY}: PRESET' (one of {', '.join(PRESETS)}), "
            "whose values it changes (only a file that sets every key, like a run's config.yaml, needs none)"
        )
    return base, OmegaConf.create(loaded), str(path)


def _parse_overrides(overrides: Sequence[str]) -> DictConfig:
    for item in overrides:
        if "=" not in item or item.startswith("="):
            raise CosaError(f"override '{item}' is not of the form key=value")
        try:  # one at a time, to name the bad one; malformed values raise YAML's errors as well as OmegaConf's
            OmegaConf.from_dotlist([item])
        except Exception as error:
            reason = getattr(error, "problem", None) or library_reason(error)
            raise CosaError(f"override '{item}': not a valid value ({reason})") from None
    return OmegaConf.from_dotlist(list(overrides))


def keys_set_by_user(config: str | None, overrides: Sequence[str]) -> set[str]:
    """The dotted keys that the user's YAML file (``--config FILE``) and ``key=value`` overrides set."""
    user_file = _preset_and_file(config)[1] if config else None
    layers = [user_file or {}, _parse_overrides(overrides)]
    return {key for layer in layers for key in flat_keys(OmegaConf.to_container(OmegaConf.create(layer)))}


def _recipe_named_in(layer: DictConfig | None) -> str | None:
    if layer is None:
        return None
    return OmegaConf.select(layer, "method.recipe", throw_on_resolution_failure=False)  # ${…} is refused later


def load_config(
    config: str | None = "voc",
    recipe: str | None = None,
    data: str | None = None,
    overrides: Sequence[str] = (),
    base: Config | None = None,
    measured: Mapping[str, object] | None = None,
) -> Config:
    """Build a validated :class:`Config`: preset < recipe < ``measured`` < the user's YAML file <
    ``data`` < overrides. ``measured`` holds the settings that follow from the data (dotted keys,
    :func:`cosa.data.scaled.load_config_for_data`).

    A YAML file with ``base: PRESET`` puts that preset below the recipe, its own keys above it.
    ``base`` (a run's stored configuration, for ``--resume``) takes the place of the schema
    defaults; then, without ``config`` and ``recipe``, no preset, recipe or file is applied.
    """
    merged = OmegaConf.structured(base if base is not None else Config)
    preset, user_file, source = _preset_and_file(config) if config else (None, None, "")
    preset_layer = _preset_layer(preset) if preset is not None else None
    if preset_layer is not None:
        merged = _merge(merged, preset_layer, f"preset {preset}")
    dotlist = _parse_overrides(overrides)
    if config or recipe:
        recipe = recipe or _recipe_named_in(dotlist) or _recipe_named_in(user_file) or merged.method.recipe
        if recipe not in RECIPES:
            raise CosaError(f"unknown recipe '{recipe}' (choose from {', '.join(RECIPES)})")
        recipe_layer = _bundled("recipes", recipe)
        if recipe_layer is not None:
            merged = _merge(merged, recipe_layer, f"recipe {recipe}")
    if measured:
        layer = OmegaConf.create()
        for key, value in measured.items():
            OmegaConf.update(layer, key, value)
        merged = _merge(merged, layer, "settings measured on the data")
    if user_file is not None:
        merged = _merge(merged, user_file, source)
    if recipe:
        merged.method.recipe = recipe
    if data is not None:
        merged = _merge(merged, {"data": {"root": data}}, "--data")
    cfg = _validated(_merge(merged, dotlist, "override"))
    if base is None:  # a resumed run's weights come from its checkpoint
        _check_weights_fit_the_backbone(
            [(f"preset {preset}", preset_layer), (source, user_file), ("override", dotlist)]
        )
    return cfg


def _check_weights_fit_the_backbone(layers: Sequence[tuple[str, DictConfig | None]]) -> None:
    """Refuse a weights file (``model.pretrained``) chosen for one backbone under another: the
    layer that set it had one ``model.backbone``, a later layer set another.

    Loading would fail only once the model is built, without saying that the file came, e.g.,
    from the preset; ``hub`` and ``none`` fit any backbone.
    """
    backbone, backbone_source = ModelConfig.backbone, "the schema default"
    weights, weights_source, chosen_for = ModelConfig.pretrained, "the schema default", backbone
    for source, layer in layers:
        if layer is None:
            continue
        if (named := OmegaConf.select(layer, "model.backbone")) is not None:
            backbone, backbone_source = named, source
        if (named := OmegaConf.select(layer, "model.pretrained")) is not None:
            weights, weights_source, chosen_for = named, source, backbone
    if weights in WEIGHTS_OF_ANY_BACKBONE or chosen_for == backbone:
        return
    raise CosaError(
        f"model.backbone={backbone} ({backbone_source}) is not the backbone of model.pretrained={weights}, "
        f"which {weights_source} sets for model.backbone={chosen_for}; set model.pretrained as well: "
        f"hub (timm's weights of {backbone}), a file of {backbone}'s weights, or none (random weights)"
    )


def _validated(merged: DictConfig) -> Config:
    cfg: Config = OmegaConf.to_object(merged)
    validate(cfg)
    return cfg


def config_from_dict(values: Mapping, source: str) -> Config:
    """Rebuild a :class:`Config` saved as a plain dict (in a checkpoint or config.yaml), checked
    like a user's: a key the schema lacks is named with the closest valid keys."""
    if isinstance(values, DictConfig):
        values = OmegaConf.to_container(values, resolve=False)
    merged = _merge(OmegaConf.structured(Config), values, source)
    try:
        return _validated(merged)
    except CosaError as error:  # the values come from one file: name it
        raise CosaError(f"{source}: {error}") from None


def read_saved_config(path: Path) -> Config:
    """A run's ``config.yaml``: complete values, no preset, recipe or ``base``."""
    return config_from_dict(_read_yaml(path), str(path))


def save_config(cfg: Config, path: str | Path) -> None:
    write_text_atomically(path, OmegaConf.to_yaml(OmegaConf.create(asdict(cfg))))


def flat_keys(values: dict, prefix: str = "") -> dict[str, Any]:
    """A nested dict as one level of dotted keys: ``{'train.seed': 0, …}``."""
    flat = {}
    for key, value in values.items():
        if isinstance(value, dict):
            flat.update(flat_keys(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _free_on_resume(key: str) -> bool:
    return any(key == free or free.endswith(".") and key.startswith(free) for free in FREE_ON_RESUME)


def resumed_config(stored: Config, requested: Config, what: str) -> Config:
    """``requested``, when it differs from ``stored`` only in what cannot alter the trained weights
    (:data:`FREE_ON_RESUME`) and in more ``train.iterations``.

    Anything else would silently make the rest of the run another experiment than its start:
    a one-line error ``WHAT would change KEY (OLD → NEW), …`` lists every such difference.
    """
    old, new = flat_keys(asdict(stored)), flat_keys(asdict(requested))
    changed = [key for key in old if old[key] != new[key]]
    refused = [
        f"{key} ({old[key]} → {new[key]})"
        for key in changed
        if not _free_on_resume(key) and not (key == RAISABLE_ON_RESUME and new[key] > old[key])
    ]
    if refused:
        raise CosaError(
            f"{what} would change {', '.join(refused)}; a resumed run keeps what shapes its weights "
            f"({RAISABLE_ON_RESUME} may be raised; where it runs, reads its data, logs, checkpoints "
            "and evaluates may change)"
        )
    return requested


def check_run_length(cfg: Config) -> None:
    """Refuse a new run that ends within a warm-up: what the warm-up delays would never happen,
    silently. Every such warm-up is named in one line, with a value at the share of the run that
    ``cosa data check`` suggests (cosa.config.scaling).

    Intervals longer than the run are fine: the last iteration logs, checkpoints and evaluates.
    """
    iterations, method = cfg.train.iterations, cfg.method
    loss_warmup = round(WARMUP_SHARE * iterations)
    # (key, its warm-up, whether this run has what it delays, what would never happen, a value that fits)
    warmups = [
        (
            "method.loss_warmup_iters",
            method.loss_warmup_iters,
            method.recipe in PSEUDO_LABEL_RECIPES,
            "the pseudo-label losses would never switch on: the run would train the classifier alone, "
            "as recipe cam-only does",
            loss_warmup,
        ),
        (
            "method.contrastive.warmup_iters",
            method.contrastive.warmup_iters,  # None: the loss warm-up's, checked above
            method.contrastive.enabled,
            "L_csc would never switch on, though method.contrastive.enabled is true",
            loss_warmup,
        ),
        (
            "optim.warmup_iters",
            cfg.optim.warmup_iters,
            True,
            "the learning rate would never reach optim.lr",
            round(LR_WARMUP_SHARE * iterations),
        ),
    ]
    too_long = [warmup for warmup in warmups if warmup[2] and warmup[1] is not None and warmup[1] >= iterations]
    if too_long:
        reasons = " and ".join(f"{key}={value} ({what})" for key, value, _, what, _ in too_long)
        examples = " ".join(f"{key}={example}" for key, _, _, _, example in too_long)
        raise CosaError(
            f"train.iterations={iterations} ends within the warm-up of {reasons}; "
            f"set {'them' if len(too_long) > 1 else 'it'} below {iterations} (e.g. {examples}) "
            "or raise train.iterations"
        )


def validate(cfg: Config) -> None:
    """The rules of the schema's sections, and no technique switched on that the recipe ignores."""
    broken = broken_rule(cfg)
    if broken:
        key, takes = broken
        raise CosaError(f"bad value for config key '{key}': {takes}")
    if cfg.method.recipe not in PSEUDO_LABEL_RECIPES:
        # The techniques act on the pseudo-labels, which only these recipes train with: a switch
        # left on would silently do nothing.
        for technique in TECHNIQUES:
            if getattr(cfg.method, technique).enabled:
                raise CosaError(
                    f"config key 'method.{technique}.enabled' is true, but recipe {cfg.method.recipe} "
                    f"ignores it: it trains without pseudo-labels, which the techniques act on "
                    f"(recipes {' and '.join(PSEUDO_LABEL_RECIPES)} use them)"
                )
