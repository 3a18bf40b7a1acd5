"""Quality of the recipes and the ablation of the paper's techniques on one dataset.

    python benchmarks/quality.py demo --data DATA --seeds 3 [--variants cam-only release ...]
                                 [--out benchmarks/results/quality-demo.json] [key=value ...]

A variant is a recipe plus overrides (``VARIANTS``): the baselines (cam-only, supervised), the
released recipe, the released recipe with each of the paper's three techniques alone, and the
paper recipe (all three). Every run trains the preset with ``train.seed`` = 0..N-1 on the same
data and is evaluated by the trainer at its last iteration (assignment network, the preset's eval
protocol, validation split). Writes a JSON file (runs with their per-class IoUs, summary, machine,
versions, command) and prints two Markdown tables: the metrics, and the IoU of each class.

A run whose directory already holds ``final_metrics.json`` and a ``config.yaml`` equal to the
config it would train is not trained again, so an interrupted benchmark continues where it
stopped (its recorded minutes are then those of the original run). When the two configs differ
only in the ``eval`` section, the run's last checkpoint is evaluated again under the new protocol
instead of training again (the trainer's final evaluation is that same checkpoint's); so is a run
whose stored metrics predate a column of the table.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import math
import statistics
import time
from pathlib import Path

import yaml
from common import environment

from cosa.config import Config
from cosa.config.load import config_from_dict
from cosa.config.schema import TECHNIQUES
from cosa.data.layouts import load_split
from cosa.data.scaled import load_config_for_data
from cosa.engine.distributed import DistContext, resolve_device
from cosa.engine.evaluate import evaluate
from cosa.engine.launch import run_training
from cosa.engine.trained import load_trained

VARIANTS = {
    "cam-only": ("cam-only", []),
    "release": ("release", []),
    "release+thresholds": ("release", ["method.threshold_search.enabled=true"]),
    "release+raw": ("release", ["method.raw.enabled=true"]),
    "release+contrastive": ("release", ["method.contrastive.enabled=true"]),
    "paper": ("paper", []),
    "supervised": ("supervised", []),
}
# Reported only on datasets that add them (the synthetic data's class-tied contexts).
DATASET_METRICS = ("coexistence", "coexistence_cam", "coexistence_cpl")
METRICS = (
    "miou_unmasked",
    "miou_tag_masked",
    "cam_miou",
    "cpl_precision",
    "cpl_recall",
    *DATASET_METRICS,
)
HEADERS = (
    "mIoU unmasked",
    "mIoU tag-masked",
    "CAM mIoU",
    "CPL precision",
    "CPL recall",
    "coexistence (seg)",
    "coexistence (CAM)",
    "coexistence (CPL)",
)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def markdown(summary: dict) -> str:
    lines = ["| variant | " + " | ".join(HEADERS) + " | minutes/run |", "|---|" + "---:|" * (len(HEADERS) + 1)]
    for variant, row in summary.items():
        cells = [f"{row[m]['mean']:.2f} ± {row[m]['std']:.2f}" if m in row else "–" for m in METRICS]
        lines.append(f"| {variant} | " + " | ".join(cells) + f" | {row['minutes']:.1f} |")
    return "\n".join(lines)


def per_class_markdown(runs: list[dict], variants: list[str]) -> str:
    """Class × variant: the segmentation's IoU per class, mean over seeds (where the weak recipe loses)."""
    names = list(runs[0]["per_class"])
    lines = ["| class | " + " | ".join(variants) + " |", "|---|" + "---:|" * len(variants)]
    for name in names:
        cells = [statistics.fmean(run["per_class"][name] for run in runs if run["variant"] == v) for v in variants]
        lines.append(f"| {name} | " + " | ".join(f"{cell:.1f}" for cell in cells) + " |")
    return "\n".join(lines)


def without_unused_settings(cfg: Config) -> Config:
    """``cfg`` with the settings of each technique that is off at their defaults: they do not
    change the training, so a run made before a default changed still counts."""
    method = cfg.method
    unused = {name: type(getattr(method, name))() for name in TECHNIQUES if not getattr(method, name).enabled}
    return dataclasses.replace(cfg, method=dataclasses.replace(method, **unused))


def finished_run(run_dir: Path, cfg: Config) -> dict | None:
    """The metrics of a finished run of ``cfg`` in ``run_dir`` (re-evaluated if only ``eval``
    differs), or None when the run must be trained."""
    metrics, config = run_dir / "final_metrics.json", run_dir / "config.yaml"
    if not (metrics.is_file() and config.is_file()):
        return None
    trained = without_unused_settings(config_from_dict(yaml.safe_load(config.read_text()), str(config)))
    cfg = without_unused_settings(cfg)
    if dataclasses.replace(trained, eval=cfg.eval) != cfg:
        return None
    if trained == cfg:
        stored = json.loads(metrics.read_text())
        missing = {metric for metric in METRICS if metric not in stored}
        if not missing:
            return stored
        if missing <= set(DATASET_METRICS) and not load_split(cfg.data.root, cfg.data.val_split).extra_metrics:
            return stored
    cached = run_dir / f"metrics-eval-{hashlib.sha1(repr(cfg.eval).encode()).hexdigest()[:10]}.json"
    if not cached.is_file():
        device = resolve_device(cfg.train.device)
        model = load_trained(run_dir / "checkpoints" / "last.pt", device)
        result = evaluate(
            model.network,
            load_split(cfg.data.root, cfg.data.val_split),
            cfg,
            model.thresholds,
            DistContext(0, 1, 0, device),
            max_images=cfg.eval.max_images,
            progress=True,
        )
        cached.write_text(json.dumps(result, indent=2))
    return json.loads(cached.read_text())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("preset")
    parser.add_argument("--data", required=True)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--runs", default="runs/quality", help="where the runs go")
    parser.add_argument("--out", help="JSON output (default benchmarks/results/quality-PRESET.json)")
    parser.add_argument("overrides", nargs="*", metavar="key=value")
    args = parser.parse_intermixed_args()
    out = Path(args.out or f"benchmarks/results/quality-{Path(args.preset).stem}.json")

    runs = []
    # Seed-major, so that an interrupted benchmark already holds every variant for the first seeds.
    for seed in range(args.seeds):
        for variant in args.variants:
            recipe, variant_overrides = VARIANTS[variant]
            overrides = [*variant_overrides, *args.overrides, f"train.seed={seed}"]
            cfg, _ = load_config_for_data(args.preset, recipe, args.data, overrides)
            run_dir = Path(args.runs) / f"{variant}-seed{seed}"
            started = time.time()
            result = finished_run(run_dir, cfg)
            if result is None:
                result = run_training(cfg, run_dir)
                (run_dir / "minutes").write_text(f"{(time.time() - started) / 60:.3f}\n")
            scores = {m: result[m] for m in METRICS if m in result}
            minutes = float((run_dir / "minutes").read_text()) if (run_dir / "minutes").is_file() else None
            runs.append(
                {
                    "variant": variant,
                    "recipe": recipe,
                    "overrides": variant_overrides,
                    "seed": seed,
                    "minutes": minutes,
                    **scores,
                    "per_class": result["per_class"],
                    "per_class_cam": result["per_class_cam"],
                    **({"where_classes_go": result["where_classes_go"]} if "where_classes_go" in result else {}),
                    "protocol": result["protocol"],
                }
            )
            print(f"{variant} seed {seed}: " + ", ".join(f"{m} {v:.2f}" for m, v in scores.items()), flush=True)

    summary = {}
    for variant in args.variants:
        mine = [run for run in runs if run["variant"] == variant]
        summary[variant] = {
            m: dict(zip(("mean", "std"), mean_std([run[m] for run in mine])))
            for m in METRICS
            if all(m in run for run in mine)
        }
        times = [run["minutes"] for run in mine if run["minutes"] is not None]
        summary[variant]["minutes"] = statistics.fmean(times) if times else math.nan
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(
        json.dumps(
            {
                **environment(),
                "preset": args.preset,
                "data": args.data,
                "seeds": args.seeds,
                "overrides": args.overrides,
                "summary": summary,
                "runs": runs,
            },
            indent=2,
        )
    )
    print(markdown(summary))
    print(per_class_markdown(runs, args.variants))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
