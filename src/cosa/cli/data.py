"""``cosa data`` — make the synthetic dataset, check a dataset, or prepare VOC and COCO downloads."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cosa.data.check import CheckReport
    from cosa.data.prepare import PrepareReport


def add_parser(commands: argparse._SubParsersAction) -> None:
    from cosa.cli import at_least, at_least_one, seed
    from cosa.config.schema import RECIPE_NAMES, MethodConfig
    from cosa.data import SYNTHETIC_MIN_SIZE

    parser = commands.add_parser("data", help="dataset tools (synthetic, check, prepare-voc, prepare-coco)")
    actions = parser.add_subparsers(dest="action", metavar="ACTION")

    synthetic = actions.add_parser(
        "synthetic",
        help="write the built-in synthetic dataset (folder layout)",
        description="Deterministic shapes-and-textures dataset with occlusion, clutter and class-tied context.",
    )
    synthetic.add_argument("--out", required=True, help="output folder, empty or new")
    synthetic.add_argument(
        "--overwrite", action="store_true", help="replace a synthetic dataset written there before (only its files)"
    )
    synthetic.add_argument("--seed", type=seed, default=0)
    synthetic.add_argument("--train", type=at_least_one, default=600, help="training images (default 600)")
    synthetic.add_argument("--val", type=at_least(0), default=150, help="validation images (default 150)")
    synthetic.add_argument(
        "--size", type=at_least(SYNTHETIC_MIN_SIZE), default=128, help="image side in pixels (default 128)"
    )
    synthetic.set_defaults(run=run_synthetic)

    check = actions.add_parser(
        "check",
        help="validate a dataset and list every problem",
        description="Read every image and mask of every split and list every problem (exit status 1) and "
        "warning at once; the training split (train_aug or train) and the validation split (val) are "
        "judged as cosa train --recipe RECIPE would.",
    )
    check.add_argument("root", help="dataset root")
    check.add_argument(
        "--recipe",
        choices=RECIPE_NAMES,
        default=MethodConfig.recipe,
        help=f"the recipe to check the training split for (default {MethodConfig.recipe}; supervised needs its masks)",
    )
    check.set_defaults(run=run_check)

    voc = actions.add_parser(
        "prepare-voc",
        help="check a VOC 2012 + SBD tree and cache its image labels",
        description="Say what is missing from ROOT (JPEGImages/, SegmentationClassAug/, "
        "ImageSets/Segmentation/{train_aug,val}.txt) and cache the labels of the complete splits. "
        "Exit status 1 if anything is missing.",
    )
    voc.add_argument("root", help="the VOC2012 folder")
    voc.set_defaults(run=run_prepare_voc)

    coco = actions.add_parser(
        "prepare-coco",
        help="write COCO 2014 semantic masks and lists from the instance annotations",
        description="Rasterise annotations/instances_{train,val}2014.json into SegmentationClass/{train,val}2014/ "
        "(81 labels, crowd 255), write {train,val}.txt and cache the image labels. Needs pycocotools.",
    )
    coco.add_argument("root", help="folder holding train2014/ and val2014/")
    coco.add_argument("--annotations", help="folder of instances_{train,val}2014.json (default ROOT/annotations)")
    coco.add_argument("--overwrite", action="store_true", help="rewrite masks that already exist")
    coco.set_defaults(run=run_prepare_coco)


def run_synthetic(args: argparse.Namespace) -> int:
    from cosa.data.synthetic import generate_synthetic_dataset

    summary = generate_synthetic_dataset(
        args.out, seed=args.seed, num_train=args.train, num_val=args.val, image_size=args.size, overwrite=args.overwrite
    )
    print(
        f"wrote {summary.root}: {', '.join(f'{n} {split}' for split, n in summary.split_counts.items())} images, "
        f"classes {', '.join(summary.class_names)}"
    )
    return 0


def run_check(args: argparse.Namespace) -> int:
    from cosa.data.check import check_dataset

    report = check_dataset(args.root, args.recipe)
    counts = ", ".join(f"{split}: {count}" for split, count in report.images.items())
    print(f"{report.root} ({report.layout} layout) — readable images per split: {counts or 'none'}")
    for split, statistics in report.statistics.items():
        print(f"{split}:")
        for line in statistics.describe():
            print(f"  {line}")
    _print_suggested_settings(report)
    for warning in report.warnings:
        print(f"warning: {warning}")
    for problem in report.problems:
        print(f"problem: {problem}")
    print(f"{len(report.problems)} problem(s), {len(report.warnings)} warning(s)")
    return 1 if report.problems else 0


def _print_suggested_settings(report: CheckReport) -> None:
    """The ``own`` preset's data-dependent settings for this dataset (cosa.config.scaling), from
    its training split."""
    from cosa.config.load import load_config
    from cosa.config.scaling import MIN_OBJECT_CELLS, as_overrides, scaled_settings

    split = report.training_split
    statistics = report.statistics.get(split)
    if statistics is None or not statistics.images:
        return
    settings = scaled_settings(statistics.median_short_side, statistics.median_object_side, statistics.images)
    if split != load_config("own").data.train_split:  # e.g. VOC's train_aug
        settings = {"data.train_split": split, **settings}
    print(
        f"settings scaled to '{split}' (docs/method.md, \"Own data\"), which --config own applies itself when "
        f"training starts: {as_overrides(settings)}"
    )
    if statistics.median_object_side is None:
        print(
            f"  (no masks, so no object size: model.output_stride stays the preset's; set 8 for objects "
            f"under {16 * MIN_OBJECT_CELLS} px)"
        )


def run_prepare_voc(args: argparse.Namespace) -> int:
    from cosa.data.prepare import prepare_voc

    return _print_prepare_report(prepare_voc(args.root))


def run_prepare_coco(args: argparse.Namespace) -> int:
    from cosa.data.prepare import prepare_coco

    return _print_prepare_report(prepare_coco(args.root, args.annotations, overwrite=args.overwrite))


def _print_prepare_report(report: PrepareReport) -> int:
    for split in report.splits:
        line = f"{split.split}: {split.listed} listed, {split.images} images, {split.masks} with masks"
        if report.layout == "coco":
            line += f" ({split.written} written, {split.kept} already there)"
        print(line + (f"; labels cached in {split.cache}" if split.cache else "; not ready"))
    for problem in report.problems:
        print(f"problem: {problem}")
    print(f"{report.root} ({report.layout}): " + ("ready" if report.ready else f"{len(report.problems)} problem(s)"))
    return 0 if report.ready else 1
