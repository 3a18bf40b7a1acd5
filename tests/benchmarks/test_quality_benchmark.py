"""benchmarks/quality.py: which finished runs it reuses instead of training them again."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest

from cosa.config import load_config
from cosa.config.load import save_config

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def quality(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("quality")
    yield module
    sys.modules.pop("quality", None)


def finished(root: Path, recipe: str, overrides: list[str], quality) -> Path:
    run = root / "run"
    run.mkdir()
    save_config(load_config("demo", recipe, str(root), overrides), run / "config.yaml")
    (run / "final_metrics.json").write_text(json.dumps({metric: 40.0 for metric in quality.METRICS}))
    return run


def test_settings_of_a_technique_that_is_off_do_not_force_a_new_run(tmp_path, quality):
    # RAW off: its temperature does not change the training, which is today's release.
    run = finished(tmp_path, "release", ["method.raw.temperature=0.5", "train.seed=0"], quality)
    assert quality.finished_run(run, load_config("demo", "release", str(tmp_path), ["train.seed=0"])) is not None


def test_a_setting_that_changes_the_training_forces_a_new_run(tmp_path, quality):
    run = finished(
        tmp_path, "release", ["method.raw.enabled=true", "method.raw.temperature=0.5", "train.seed=0"], quality
    )
    now = load_config("demo", "release", str(tmp_path), ["method.raw.enabled=true", "train.seed=0"])
    assert quality.finished_run(run, now) is None
    assert quality.finished_run(run, load_config("demo", "release", str(tmp_path), ["train.seed=1"])) is None
