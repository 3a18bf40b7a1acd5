"""``cosa plot`` — training-analysis figures of a run (PNG)."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "plot",
        help="draw a run's thresholds, CPL quality by confidence, losses, mIoU and classifier fit",
        description="Reads RUN_DIR/metrics.jsonl and writes thresholds.png, cpl_confidence.png (when the "
        "training split has masks), losses.png, miou.png and classifier_fit.png.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument(
        "--out",
        help="output folder, apart from the run's files and its dataset; empty or new "
        "(default RUN_DIR/plots, which a new plot refreshes)",
    )
    parser.add_argument(
        "--overwrite", action="store_true", help="replace the figures of an earlier plot in --out (only those)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cosa.reporting.plots import plot_run

    for path in plot_run(args.run_dir, args.out, args.overwrite):
        print(path)
    return 0
