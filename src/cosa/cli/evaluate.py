"""``cosa evaluate`` — metrics of a checkpoint on a split, with the protocol written next to them."""

from __future__ import annotations

import argparse
import dataclasses
import json

from cosa.cli import add_amp_option, at_least, at_least_one
from cosa.engine import NETWORKS
from cosa.files import write_text_atomically
from cosa.outputs import check_output_file


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "evaluate",
        help="evaluate a checkpoint",
        description="mIoU (unmasked and tag-masked), CAM mIoU and CPL quality of a checkpoint on a split, "
        "under the checkpoint's evaluation protocol (data.val_split, eval.size, eval.scales, eval.flip, eval.amp), "
        "that of its run's final_metrics.json; the protocol is printed beside the numbers.",
    )
    parser.add_argument("--checkpoint", required=True, help="a cosa checkpoint (RUN/checkpoints/last.pt)")
    parser.add_argument("--data", help="dataset root (default: the one the model was trained on)")
    parser.add_argument("--split", help="split to evaluate (default: the checkpoint's data.val_split)")
    parser.add_argument(
        "--fast",
        action="store_true",
        help="one scale (1.0), no flip, instead of the checkpoint's eval.scales and eval.flip: quicker, "
        "and not the number of the run's own evaluations",
    )
    parser.add_argument(
        "--crf", action="store_true", help="also report both mIoUs after a dense CRF (needs: pip install 'cosa[crf]')"
    )
    parser.add_argument(
        "--crf-workers",
        type=at_least(0),
        metavar="N",
        help="processes that run the CRF (default: min(4, CPU cores); 0 or 1: this process); "
        "the numbers do not depend on it",
    )
    parser.add_argument("--network", choices=NETWORKS, default="assignment", help="which network (default assignment)")
    add_amp_option(parser)
    parser.add_argument(
        "--max-images",
        type=at_least_one,
        metavar="N",
        help="evaluate the first N images only (default: all; the run's own evaluations take eval.max_images)",
    )
    parser.add_argument(
        "--json", metavar="FILE", help="write the metrics and protocol to this JSON file (replaced if it exists)"
    )
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cosa.engine.distributed import init_distributed, shutdown
    from cosa.engine.evaluate import evaluate, format_results
    from cosa.engine.runlog import setup_logging
    from cosa.engine.trained import load_trained, split_for

    dist = init_distributed("auto")
    setup_logging(dist.is_main)
    try:
        model = load_trained(args.checkpoint, dist.device, args.network)
        cfg = model.cfg
        split = split_for(model, args.checkpoint, args.data, args.split or cfg.data.val_split)
        if args.json:
            check_output_file(args.json, "--json", [("the checkpoint", args.checkpoint), ("the dataset", split.root)])
        if args.fast:
            cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, scales=[1.0], flip=False))
        if args.amp:
            cfg = dataclasses.replace(cfg, eval=dataclasses.replace(cfg.eval, amp=args.amp))
        result = evaluate(
            model.network,
            split,
            cfg,
            model.thresholds,
            dist,
            args.max_images,
            progress=True,
            crf=args.crf,
            crf_workers=args.crf_workers,
            which=args.network,
        )
        result["protocol"].update(checkpoint=str(args.checkpoint), iteration=model.iteration)
    finally:
        shutdown()
    if dist.is_main:
        print(format_results(result))
        if args.json:
            write_text_atomically(args.json, json.dumps(result, indent=2))
    return 0
