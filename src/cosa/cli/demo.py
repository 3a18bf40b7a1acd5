"""``cosa demo`` — synthetic data, a short CoSA training run, evaluation and a report, on a CPU."""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from cosa.cli import at_least, at_least_one, seed
from cosa.data import SYNTHETIC_MIN_SIZE
from cosa.outputs import OutputFolder

GRID_IMAGES = 6
CPL_IMAGES = 150  # training images whose CAM pseudo-labels the report scores


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "demo", help="train and evaluate on built-in synthetic data (minutes on a CPU)",
        description="Builds the synthetic dataset, trains the demo preset with the release recipe, evaluates "
                    "it and writes OUT/report.md with a picture grid.",
    )
    parser.add_argument("--out", default="demo", help="output folder, empty or new (default ./demo)")
    parser.add_argument("--overwrite", action="store_true", help="replace a demo written in --out before")
    parser.add_argument("--seed", type=seed, default=0, help="dataset and training seed")
    parser.add_argument("--train-images", type=at_least_one, default=600, help="synthetic training images (default 600)")
    parser.add_argument("--val-images", type=at_least_one, default=150, help="synthetic validation images (default 150)")
    parser.add_argument("--image-size", type=at_least(SYNTHETIC_MIN_SIZE), default=128, help="synthetic image side (default 128)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides for the demo preset")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cosa.config import load_config
    from cosa.data.layouts import load_split
    from cosa.data.synthetic import generate_synthetic_dataset
    from cosa.engine.distributed import DistContext, resolve_device
    from cosa.engine.evaluate import evaluate, format_results
    from cosa.engine.trained import load_trained
    from cosa.engine.trainer import run_training
    from cosa.report import prediction_grid

    started = time.time()
    out = OutputFolder(args.out, "--out", "cosa demo", args.overwrite)
    data = out.entry("data")
    generate_synthetic_dataset(data, seed=args.seed, num_train=args.train_images, num_val=args.val_images,
                               image_size=args.image_size)
    cfg = load_config("demo", "release", str(data), [f"train.seed={args.seed}", *args.overrides])
    run_dir = out.entry("run")
    result = run_training(cfg, run_dir)  # ends with an evaluation of the whole validation split
    train_minutes = (time.time() - started) / 60

    device = resolve_device(cfg.train.device, setting="train.device")
    model = load_trained(run_dir / "checkpoints" / "last.pt", device)
    single = DistContext(0, 1, 0, device)
    val = load_split(data, cfg.data.val_split)
    train_result = evaluate(model.network, load_split(data, cfg.data.train_split), cfg, model.thresholds, single,
                            max_images=CPL_IMAGES, progress=True)
    out.write("metrics.json", Path.write_text, json.dumps({"val": result, "train": train_result}, indent=2))
    grid = prediction_grid(model.network, val, cfg, model.thresholds, device,
                           list(range(min(GRID_IMAGES, len(val.samples)))))
    out.write("grid.png", grid.save)
    minutes = (time.time() - started) / 60
    report = out.write("report.md", Path.write_text, render_report(cfg, result, train_result, train_minutes, minutes))
    print(format_results(result))
    print(f"CPL on {train_result['protocol']['num_images']} training images: mIoU {train_result['cpl_miou']:.2f} on {train_result['cpl_coverage']:.1f}% of pixels")
    print(f"report: {report} ({minutes:.1f} min)")
    return 0


def render_report(cfg, result: dict, train_result: dict, train_minutes: float, minutes: float) -> str:
    from cosa.report import metrics_table

    protocol = result["protocol"]
    return f"""# cosa demo report

CoSA (`release` recipe, preset `demo`) trained from image-level labels only on the built-in synthetic
dataset (`{cfg.data.root}`), backbone `{cfg.model.backbone}`, {cfg.train.iterations} iterations of
{cfg.train.batch_size} images at crop {cfg.data.crop_size}. Training took {train_minutes:.1f} min, everything
{minutes:.1f} min.

## Headline (assignment network, {protocol['split']} split, {protocol['num_images']} images)

| metric | value |
|---|---:|
| segmentation mIoU, unmasked (no labels at test time) | {result['miou_unmasked']:.2f} |
| segmentation mIoU, tag-masked (true tags mask the logits) | {result['miou_tag_masked']:.2f} |
| CAM mIoU (true classes, background at ≤ {protocol['cam_threshold']}) | {result['cam_miou']:.2f} |
| CPL mIoU on the first {train_result['protocol']['num_images']} training images (on the {train_result['cpl_coverage']:.1f}% of pixels it labels) | {train_result['cpl_miou']:.2f} |

Protocol: input {protocol['input_size']}², scales {protocol['scales']}{' + flip' if protocol['flip'] else ''}, no CRF.

## Per class

{metrics_table(result)}

## Pictures

![predictions](grid.png)

Columns: image, ground truth, CAM of the true classes, CAM pseudo-label (beige: ignored), prediction.
"""
