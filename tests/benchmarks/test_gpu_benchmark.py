"""benchmarks/gpu.py at toy sizes on the CPU: every section runs and the report and its tables make sense.

On a machine without a GPU its CUDA tests are all skipped, which the report counts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "gpu.py"


@pytest.mark.slow
def test_the_gpu_report_runs_every_section_at_toy_sizes(tmp_path):
    out = tmp_path / "gpu.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, str(SCRIPT), "--tiny", "--device", "cpu", "--out", str(out), "--budget", "900"]
    finished = subprocess.run(command, capture_output=True, text=True, timeout=900, env=env, cwd=tmp_path)
    assert finished.returncode == 0, finished.stderr[-3000:]
    report = json.loads(out.read_text())
    sections = report["sections"]
    assert not [name for name, section in sections.items() if "error" in section or "skipped" in section]
    assert report["command"].endswith(f"--out {out} --budget 900") and report["tiny"]
    counts = sections["tests"]["counts"]
    assert counts["failure"] == counts["error"] == 0 and counts["skipped"] >= 17  # every CUDA test, skipped here
    assert sections["demo"]["steps"] == 10 and "miou_unmasked" in sections["demo"]["trained"]
    steps = [section for name, section in sections.items() if name.startswith("step ")]
    assert len(steps) == 4 and all(section["pipelined_step_ms"] > 0 for section in steps)
    assert {section["config"]["amp"] for section in steps} == {"none", "bf16", "fp16"}
    assert sections["flops"]["flops_per_step"] > 0
    assert sections["evaluation bf16"]["images_per_s"] > 0
    table = subprocess.run([sys.executable, str(SCRIPT), "--table", str(out)], capture_output=True, text=True, env=env)
    assert table.returncode == 0 and "| fp32 |" in table.stdout and "| evaluation bf16 |" in table.stdout
