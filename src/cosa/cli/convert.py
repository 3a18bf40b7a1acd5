"""``cosa convert-official`` — turn the authors' released weights into a cosa checkpoint."""

from __future__ import annotations

import argparse


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "convert-official",
        help="convert a released CoSA checkpoint",
        description="Convert an official CoSA file (a dict whose 'model' is the released state dict) "
        "into a cosa checkpoint that evaluate, predict and export-pseudo-labels read. "
        "Those commands also accept the official file directly.",
    )
    parser.add_argument("source", metavar="IN.pth", help="the official checkpoint")
    parser.add_argument("target", metavar="OUT.pt", help="the cosa checkpoint to write")
    parser.add_argument("--overwrite", action="store_true", help="replace OUT.pt if it exists")
    parser.add_argument("--config", help="preset or YAML file (default: voc for 20 classes, coco for 80)")
    parser.add_argument("--classes", help="a file of class names, one per line (needed unless 20 or 80 classes)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. eval.size=512")
    parser.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from cosa.data.layouts import read_class_names
    from cosa.engine.checkpoint import save_checkpoint
    from cosa.engine.official import convert_official
    from cosa.errors import CosaError
    from cosa.outputs import check_output_file

    check_output_file(args.target, "OUT.pt", [("the official checkpoint", args.source)])
    if Path(args.target).exists() and not args.overwrite:  # it may be a run's checkpoint: never replaced unasked
        raise CosaError(f"{args.target} exists; choose another name, or pass --overwrite to replace it")
    class_names = read_class_names(Path(args.classes)) if args.classes else None
    payload = convert_official(args.source, args.config, args.overrides, class_names)
    save_checkpoint(args.target, payload)
    cfg = payload["config"]
    held = {"online": "the online network (s_or_t='s')", "assignment": "the assignment network (s_or_t='t')"}
    print(
        f"wrote {args.target}: {len(payload['class_names'])} classes, backbone {cfg['model']['backbone']}, "
        f"aux layer {cfg['model']['aux_layer']}, iteration {payload['iteration']}, "
        f"{held.get(payload['official']['network'], 'network not recorded (no s_or_t)')}"
    )
    return 0
