"""Summarise finished training runs: what each changed against a preset, and its final metrics.

    python benchmarks/collect_runs.py demo runs/tune*/*-seed* [--out benchmarks/results/runs.json]

Each RUN_DIR must hold ``config.yaml`` and ``final_metrics.json``. A run's settings are given as
the ``key=value`` differences between its resolved config and ``PRESET`` with the run's recipe
(``data.root``, ``train.seed`` and the settings of a technique that is off left out); a key of the
run that the schema lacks is a difference too. Runs with the same differences form a row of the
Markdown table: mean over their seeds, each seed's value listed.
Writes a JSON file (rows, runs, machine, versions, command).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import statistics
from pathlib import Path

import yaml
from common import environment

from cosa.config import load_config
from cosa.config.load import flat_keys
from cosa.config.schema import TECHNIQUES

METRICS = ("miou_unmasked", "cam_miou", "cpl_precision", "coexistence", "coexistence_cam")
IGNORED = {"data.root", "train.seed"}


def differences(config: dict, preset: str) -> list[str]:
    """``key=value`` for each setting of ``config`` (a run's config.yaml) that ``preset`` lacks or sets otherwise."""
    base = flat_keys(dataclasses.asdict(load_config(preset, config["method"]["recipe"], None, [])))
    settings = flat_keys(config)
    disabled = [f"method.{technique}" for technique in TECHNIQUES if not settings[f"method.{technique}.enabled"]]
    changed = []
    for key, value in sorted(settings.items()):
        if key in IGNORED or (key in base and base[key] == value):
            continue
        if any(key.startswith(f"{technique}.") and key != f"{technique}.enabled" for technique in disabled):
            continue  # the settings of a technique that is off
        changed.append(f"{key}={value}")
    return changed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset")
    parser.add_argument("runs", nargs="+", type=Path)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    runs = []
    for run_dir in sorted(args.runs):
        if not (run_dir / "final_metrics.json").is_file():
            continue
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        metrics = json.loads((run_dir / "final_metrics.json").read_text())
        runs.append(
            {
                "run": str(run_dir),
                "recipe": config["method"]["recipe"],
                "changes": differences(config, args.preset),
                "seed": config["train"]["seed"],
                **{m: metrics[m] for m in METRICS if m in metrics},
            }
        )
    rows = {}
    for run in runs:
        rows.setdefault((run["recipe"], tuple(run["changes"])), []).append(run)
    table = []
    lines = [
        "| recipe | changes against the preset | seeds | " + " | ".join(METRICS) + " |",
        "|---|---|---|" + "---:|" * len(METRICS),
    ]
    for (recipe, changed), members in rows.items():
        members.sort(key=lambda run: run["seed"])
        means = {m: statistics.fmean(run[m] for run in members) for m in METRICS if all(m in run for run in members)}
        table.append(
            {"recipe": recipe, "changes": list(changed), "seeds": [run["seed"] for run in members], "mean": means}
        )
        seeds = {m: f" ({' / '.join(f'{run[m]:.1f}' for run in members)})" if len(members) > 1 else "" for m in means}
        cells = [f"{means[m]:.2f}{seeds[m]}" if m in means else "–" for m in METRICS]
        lines.append(f"| {recipe} | {' '.join(changed) or '—'} | {len(members)} | " + " | ".join(cells) + " |")
    print("\n".join(lines))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**environment(), "preset": args.preset, "rows": table, "runs": runs}, indent=2))
        print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
