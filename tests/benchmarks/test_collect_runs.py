"""benchmarks/collect_runs.py: a run's settings as differences from the preset, grouped over seeds."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from cosa.config import load_config
from cosa.config.load import save_config

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "collect_runs.py"


def fake_run(root: Path, name: str, recipe: str, overrides: list[str], miou: float, edit=None) -> Path:
    run = root / name
    run.mkdir()
    save_config(load_config("demo", recipe, str(root), overrides), run / "config.yaml")
    if edit:  # a run made with another schema: rewrite its config file
        (run / "config.yaml").write_text(edit((run / "config.yaml").read_text()))
    metrics = {
        "miou_unmasked": miou,
        "cam_miou": 30.0,
        "cpl_precision": 80.0,
        "coexistence": 10.0,
        "coexistence_cam": 20.0,
    }
    (run / "final_metrics.json").write_text(json.dumps(metrics))
    return run


def with_key(key: str, value):
    """A run's config.yaml with ``key`` (section.name) set, as a schema that has the key writes it."""

    def edit(text: str) -> str:
        config = yaml.safe_load(text)
        section, name = key.rsplit(".", 1)
        node = config
        for part in section.split("."):
            node = node[part]
        node[name] = value
        return yaml.safe_dump(config)

    return edit


@pytest.mark.slow
def test_runs_are_grouped_by_their_differences_from_the_preset(tmp_path):
    runs = [
        fake_run(tmp_path, "a-seed0", "release", ["train.seed=0"], 40.0),
        fake_run(tmp_path, "a-seed1", "release", ["train.seed=1"], 42.0),
        fake_run(
            tmp_path, "b-seed0", "release", ["method.contrastive.enabled=true", "method.contrastive.weight=0.01"], 35.0
        ),
        fake_run(
            tmp_path,
            "b-seed1",
            "release",
            ["method.contrastive.enabled=true", "method.contrastive.weight=0.01", "train.seed=1"],
            37.0,
        ),
        # A disabled technique's settings are not a difference; a key the schema lacks is one.
        fake_run(
            tmp_path,
            "c-seed0",
            "release",
            ["method.raw.temperature=0.5", "method.contrastive.enabled=true"],
            30.0,
            edit=with_key("method.contrastive.space", "feature"),
        ),
    ]
    out = tmp_path / "runs.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(
        [sys.executable, str(SCRIPT), "demo", *map(str, runs), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=SCRIPT.parent,
    )
    assert finished.returncode == 0, finished.stderr[-3000:]
    rows = {tuple(row["changes"]): row for row in json.loads(out.read_text())["rows"]}
    assert rows[()]["seeds"] == [0, 1] and rows[()]["mean"]["miou_unmasked"] == 41.0
    assert rows[("method.contrastive.enabled=True", "method.contrastive.weight=0.01")]["seeds"] == [0, 1]
    assert rows[("method.contrastive.enabled=True", "method.contrastive.space=feature")]["seeds"] == [0]
    assert len(rows) == 3
