"""``cosa demo`` — synthetic data, a short CoSA training run, evaluation and the run report, on a CPU."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cosa.cli import at_least, at_least_one, seed
from cosa.data import SYNTHETIC_MIN_SIZE
from cosa.outputs import OutputFolder

CPL_IMAGES = 150  # training images whose CAM pseudo-labels the report scores


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo",
        help="train and evaluate on built-in synthetic data (minutes on a CPU)",
        description="Builds the synthetic dataset in OUT/data, trains the demo preset with the release recipe in "
        "OUT/run, evaluates it and writes OUT/report.html (the run report of cosa report: metrics, "
        "confusion matrix, training curves, prediction pictures) and OUT/metrics.json.",
    )
    parser.add_argument("--out", default="demo", help="output folder, empty or new (default ./demo)")
    parser.add_argument("--overwrite", action="store_true", help="replace a demo written in --out before")
    parser.add_argument("--seed", type=seed, default=0, help="dataset and training seed")
    parser.add_argument(
        "--train-images", type=at_least_one, default=600, help="synthetic training images (default 600)"
    )
    parser.add_argument(
        "--val-images", type=at_least_one, default=150, help="synthetic validation images (default 150)"
    )
    parser.add_argument(
        "--image-size", type=at_least(SYNTHETIC_MIN_SIZE), default=128, help="synthetic image side (default 128)"
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for the demo preset")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cosa.config import load_config
    from cosa.data.layouts import load_split
    from cosa.data.synthetic import generate_synthetic_dataset
    from cosa.engine.distributed import DistContext, resolve_device
    from cosa.engine.evaluate import evaluate, format_results
    from cosa.engine.launch import run_training
    from cosa.engine.trained import load_trained
    from cosa.reporting.run_report import read_run, report_page

    started = time.time()
    with OutputFolder(args.out, "--out", "cosa demo", args.overwrite) as out:
        data = out.entry("data")
        generate_synthetic_dataset(
            data, seed=args.seed, num_train=args.train_images, num_val=args.val_images, image_size=args.image_size
        )
        cfg = load_config("demo", "release", str(data), [f"train.seed={args.seed}", *args.overrides])
        run_dir = out.entry("run")
        result = run_training(cfg, run_dir)  # ends with an evaluation of the whole validation split

        device = resolve_device(cfg.train.device, setting="train.device")
        model = load_trained(run_dir / "checkpoints" / "last.pt", device)
        train_result = evaluate(
            model.network,
            load_split(data, cfg.data.train_split),
            cfg,
            model.thresholds,
            DistContext(0, 1, 0, device),
            max_images=CPL_IMAGES,
            progress=True,
        )
        out.write("metrics.json", Path.write_text, json.dumps({"val": result, "train": train_result}, indent=2))
        report = out.write("report.html", Path.write_text, report_page(read_run(run_dir)), encoding="utf-8")
    print(format_results(result))
    images = train_result["protocol"]["num_images"]
    print(
        f"CPL on {images} training images: mIoU {train_result['cpl_miou']:.2f} "
        f"on {train_result['cpl_coverage']:.1f}% of pixels"
    )
    print(f"report: {report} ({(time.time() - started) / 60:.1f} min)")
    return 0
