"""benchmarks/quality.py: which finished runs it reuses instead of training them again."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from cosa.config import load_config
from cosa.config.load import save_config

from conftest import make_folder_dataset

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture
def quality(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    module = importlib.import_module("quality")
    yield module
    sys.modules.pop("quality", None)


def finished(root: Path, recipe: str, overrides: list[str], quality, metrics=None) -> Path:
    run = root / "run"
    run.mkdir()
    save_config(load_config("demo", recipe, str(root), overrides), run / "config.yaml")
    metrics = quality.METRICS if metrics is None else metrics
    (run / "final_metrics.json").write_text(json.dumps({metric: 40.0 for metric in metrics}))
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


def test_metrics_the_dataset_does_not_report_do_not_force_a_new_evaluation(tmp_path, quality):
    # Photos without the synthetic data's class-tied contexts have no coexistence score.
    data = make_folder_dataset(tmp_path / "photos", [("a", "cat", np.ones((16, 20), np.uint8))])
    (data / "val.csv").write_text((data / "train.csv").read_text())
    without = [metric for metric in quality.METRICS if metric not in quality.DATASET_METRICS]
    run = finished(data, "release", ["train.seed=0"], quality, metrics=without)
    assert quality.finished_run(run, load_config("demo", "release", str(data), ["train.seed=0"])) is not None
