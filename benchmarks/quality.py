"""Quality of the recipes on one dataset: train each recipe with several seeds, evaluate, tabulate.

    python benchmarks/quality.py demo --data DATA --seeds 3 [--recipes release cam-only supervised]
                                 [--out benchmarks/results/quality-demo.json] [key=value ...]

Every run trains the preset with ``train.seed`` = 0..N-1 on the same data and is evaluated by the
trainer at its last iteration (assignment network, the preset's eval protocol, validation split).
Writes a JSON file (runs, summary, machine, versions, command) and prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

from common import environment

from cosa.cli.train import run_training
from cosa.config import load_config
from cosa.config.schema import RECIPE_NAMES

METRICS = ("miou_unmasked", "miou_tag_masked", "cam_miou", "cpl_miou")


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def markdown(summary: dict) -> str:
    lines = ["| recipe | mIoU unmasked | mIoU tag-masked | CAM mIoU | CPL mIoU | minutes/run |",
             "|---|---:|---:|---:|---:|---:|"]
    for recipe, row in summary.items():
        cells = [f"{row[m]['mean']:.2f} ± {row[m]['std']:.2f}" for m in METRICS]
        lines.append(f"| {recipe} | " + " | ".join(cells) + f" | {row['minutes']:.1f} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset")
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--recipes", nargs="+", default=["cam-only", "release", "supervised"], choices=RECIPE_NAMES)
    parser.add_argument("--runs", default="runs/quality", help="where the runs go")
    parser.add_argument("--out", help="JSON output (default benchmarks/results/quality-PRESET.json)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_args()
    out = Path(args.out or f"benchmarks/results/quality-{Path(args.preset).stem}.json")

    runs = []
    for recipe in args.recipes:
        for seed in range(args.seeds):
            cfg = load_config(args.preset, recipe, args.data, [*args.overrides, f"train.seed={seed}"])
            run_dir = Path(args.runs) / f"{recipe}-seed{seed}"
            started = time.time()
            result = run_training(cfg, run_dir)
            runs.append({"recipe": recipe, "seed": seed, "minutes": (time.time() - started) / 60,
                         **{m: result[m] for m in METRICS}, "protocol": result["protocol"]})
            print(f"{recipe} seed {seed}: " + ", ".join(f"{m} {result[m]:.2f}" for m in METRICS), flush=True)

    summary = {}
    for recipe in args.recipes:
        mine = [run for run in runs if run["recipe"] == recipe]
        summary[recipe] = {m: dict(zip(("mean", "std"), mean_std([run[m] for run in mine]))) for m in METRICS}
        summary[recipe]["minutes"] = statistics.fmean(run["minutes"] for run in mine)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({**environment(), "preset": args.preset, "data": args.data, "seeds": args.seeds,
                               "overrides": args.overrides, "summary": summary, "runs": runs}, indent=2))
    print(markdown(summary))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
