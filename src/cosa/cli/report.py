"""``cosa report`` — one self-contained HTML page that shows a run at a glance."""

from __future__ import annotations

import argparse

from cosa.cli import at_least_one


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "report",
        help="write one self-contained HTML page showing a run at a glance",
        description="Writes RUN_DIR/report.html: the run's config, headline and per-class metrics, the confusion "
        "matrix of its checkpoint on the validation split, the training and threshold curves and "
        "predictions on a few validation images, each number with its evaluation protocol. Images are "
        "embedded: the page is a single file. What the run directory lacks is named on the page.",
    )
    parser.add_argument("run_dir", metavar="RUN_DIR")
    parser.add_argument("--out", help="the HTML file to write (default RUN_DIR/report.html)")
    parser.add_argument("--data", help="dataset root (default: the one the run was trained on)")
    parser.add_argument(
        "--max-images",
        type=at_least_one,
        metavar="N",
        help="evaluate the first N validation images only (default: as the run's own evaluations, eval.max_images)",
    )
    parser.add_argument(
        "--no-eval",
        action="store_true",
        help="do not evaluate the checkpoint: no confusion matrix and no prediction pictures",
    )
    parser.add_argument(
        "--png",
        action="store_true",
        help="also write the page's figures as PNG files into a folder beside it, named after it "
        "(RUN_DIR/report_figures/: thresholds.png, losses.png, miou.png, ...); figures of an earlier page "
        "there are replaced",
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cosa.reporting.run_report import write_report

    written = write_report(
        args.run_dir, args.out, args.max_images, run_evaluation=not args.no_eval, data=args.data, png=args.png
    )
    for path in written:
        print(path)
    return 0
