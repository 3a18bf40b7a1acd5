"""Smoke test of benchmarks/speed.py on a tiny configuration: it runs and its JSON makes sense."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "speed.py"
TOP_LEVEL = ("cosa/objective", "cosa/backward", "cosa/nonfinite_check", "cosa/optimizer", "cosa/ema")
IN_OBJECTIVE = (
    "cosa/assignment_pass",
    "cosa/thresholds",
    "cosa/pseudo_labels",
    "cosa/online_forward",
    "cosa/loss/cls",
    "cosa/loss/cls_aux",
    "cosa/loss/c2s",
    "cosa/loss/s2c",
    "cosa/loss/reg",
)


@pytest.mark.slow
def test_speed_benchmark_writes_sane_json(tiny_data, tmp_path):
    out = tmp_path / "speed.json"
    command = [
        sys.executable,
        str(SCRIPT),
        "demo",
        "--data",
        str(tiny_data),
        "--steps",
        "2",
        "--warmup",
        "1",
        "--profile-steps",
        "2",
        "--infer-batches",
        "1",
        "--device",
        "cpu",
        "--out",
        str(out),
        "model.backbone=mobilenetv2_050",
        "model.pretrained=none",
        "data.crop_size=64",
        "train.batch_size=2",
        "eval.size=64",
        "eval.scales=[1.0,0.5]",
        "eval.batch_size=2",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    finished = subprocess.run(command, capture_output=True, text=True, timeout=120, env=env, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    result = json.loads(out.read_text())

    assert result["label"] == "mobilenetv2_050-crop64-b2"
    assert result["config"]["device"] == "cpu" and result["config"]["crop_size"] == 64
    assert result["counts"] == {"warmup": 1, "measured": 2, "profiled": 2}
    for key in ("step_ms", "floor_ms", "profiled_step_ms"):
        assert 0 < result[key]["median"] and 0 < result[key]["mean"], key
    waits, steps = result["data_wait_ms"], result["step_ms"]
    # The share of the wall time spent waiting for data: Σwait / (Σwait + Σstep), from the means.
    assert result["data_wait_share_pct"] == pytest.approx(100 * waits["mean"] / (waits["mean"] + steps["mean"]))
    assert result["step_over_floor"] > 0

    phases = result["phases"]
    for name in TOP_LEVEL:
        assert phases[name]["parent"] is None and phases[name]["cpu_ms"]["median"] > 0, name
    for name in IN_OBJECTIVE:
        assert phases[name]["parent"] == "cosa/objective", name
    assert "cosa/loss/csc" not in phases  # the release recipe has no contrastive term
    assert "device_ms" not in phases["cosa/objective"]
    top_shares = sum(phase["share_pct"] for phase in phases.values() if phase["parent"] is None)
    assert math.isclose(top_shares, 100.0, abs_tol=1e-6)  # "other" completes the top-level ranges

    memory = result["memory"]
    assert memory["rss_peak_at_end_mib"] >= memory["rss_peak_after_steps_mib"] > 0
    assert memory["cuda_step_peak_mib"] is None
    inference = result["inference"]
    assert inference["size"] == 64 and inference["batch"] == 2
    assert inference["eval_protocol"]["scales"] == [1.0, 0.5] and inference["eval_protocol"]["flip"]
    assert inference["single_scale"]["images_per_s"] > 0 and inference["eval_protocol"]["images_per_s"] > 0
    assert "| mobilenetv2_050-crop64-b2 | step / floor |" in finished.stdout
