"""Configuration: typed schema, presets, recipes and ``key=value`` overrides."""

from cosa.config.load import PRESETS, RECIPES, load_config, save_config
from cosa.config.schema import Config

__all__ = ["Config", "PRESETS", "RECIPES", "load_config", "save_config"]
