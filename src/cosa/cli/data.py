"""``cosa data`` — make the synthetic dataset, or check a dataset."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("data", help="dataset tools (synthetic, check)")
    actions = parser.add_subparsers(dest="action", required=True, metavar="ACTION")

    synthetic = actions.add_parser(
        "synthetic", help="write the built-in synthetic dataset (folder layout)",
        description="Deterministic shapes-and-textures dataset with occlusion, clutter and class-tied context.",
    )
    synthetic.add_argument("--out", required=True, help="output folder")
    synthetic.add_argument("--seed", type=int, default=0)
    synthetic.add_argument("--train", type=int, default=600, help="training images (default 600)")
    synthetic.add_argument("--val", type=int, default=150, help="validation images (default 150)")
    synthetic.add_argument("--size", type=int, default=128, help="image side in pixels (default 128)")
    synthetic.set_defaults(run=run_synthetic)

    check = actions.add_parser("check", help="validate a dataset and list every problem")
    check.add_argument("root", help="dataset root")
    check.set_defaults(run=run_check)


def run_synthetic(args: argparse.Namespace) -> int:
    from cosa.data.synthetic import generate_synthetic_dataset

    summary = generate_synthetic_dataset(args.out, seed=args.seed, num_train=args.train, num_val=args.val,
                                         image_size=args.size)
    print(f"wrote {summary.root}: {', '.join(f'{n} {split}' for split, n in summary.split_counts.items())} images, "
          f"classes {', '.join(summary.class_names)}")
    return 0


def run_check(args: argparse.Namespace) -> int:
    from cosa.data.check import check_dataset

    report = check_dataset(args.root)
    counts = ", ".join(f"{split}: {count}" for split, count in report.images.items())
    print(f"{report.root} ({report.layout} layout) — readable images per split: {counts or 'none'}")
    for warning in report.warnings:
        print(f"warning: {warning}")
    for problem in report.problems:
        print(f"problem: {problem}")
    print(f"{len(report.problems)} problem(s), {len(report.warnings)} warning(s)")
    return 1 if report.problems else 0
