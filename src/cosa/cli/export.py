"""``cosa export-pseudo-labels`` — the CAM pseudo-labels a trained network assigns, as PNG masks."""

from __future__ import annotations

import argparse

from cosa.cli import at_least_one

COMMAND = "cosa export-pseudo-labels"


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "export-pseudo-labels",
        help="write the CAM pseudo-labels of a split",
        description="Writes OUT/NAME.png (VOC palette; 0 background, 1..C classes, 255 ignore): the CAM "
        "pseudo-labels the assignment network makes from each whole image and its true tags, with "
        "the checkpoint's thresholds. With masks, also OUT/summary.json (mIoU on labelled pixels, "
        "coverage, precision, recall).",
    )
    parser.add_argument("--checkpoint", required=True, help="a cosa checkpoint (or an official CoSA file)")
    parser.add_argument("--data", help="dataset root (default: the one the model was trained on)")
    parser.add_argument("--split", help="split to label (default: the training split of the checkpoint's config)")
    parser.add_argument("--out", required=True, help="output folder, outside the dataset; empty or new")
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="replace the outputs of an earlier export-pseudo-labels in --out (only those)",
    )
    parser.add_argument("--max-images", type=at_least_one, metavar="N", help="the first N images only")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from cosa.engine.distributed import resolve_device
    from cosa.engine.export import export_pseudo_labels
    from cosa.engine.runlog import setup_logging
    from cosa.engine.trained import load_trained, split_for
    from cosa.outputs import OutputFolder

    setup_logging()
    given = [("the checkpoint", args.checkpoint)] + ([("the dataset", args.data)] if args.data else [])
    with OutputFolder(args.out, "--out", COMMAND, args.overwrite, given) as out:
        device = resolve_device(args.device)
        model = load_trained(args.checkpoint, device)
        split = split_for(model, args.checkpoint, args.data, args.split or model.cfg.data.train_split)
        out.check([("the dataset", split.root)])  # without --data, the dataset is known once the checkpoint is read
        result = export_pseudo_labels(
            model.network, split, model.cfg, model.thresholds, out, device, args.max_images, progress=True
        )
        count = result["protocol"]["num_images"]
        print(f"wrote {count} pseudo-label mask{'' if count == 1 else 's'} to {out.path}")
        if "miou" in result:
            result["protocol"].update(checkpoint=str(args.checkpoint), iteration=model.iteration)
            out.write("summary.json", Path.write_text, json.dumps(result, indent=2))
            print(
                f"pseudo-label mIoU {result['miou']:.2f} on the {result['coverage']:.1f}% of pixels they label "
                f"(precision {result['precision']:.1f}%, recall {result['recall']:.1f}%)"
            )
    return 0
