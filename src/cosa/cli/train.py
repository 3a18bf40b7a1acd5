"""``cosa train`` — one process, or many under ``torchrun``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cosa.config.schema import RECIPE_NAMES, Config
from cosa.errors import CosaError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train",
        help="train a model",
        description="Train CoSA (or a baseline recipe). Under torchrun, every process runs this command.",
    )
    parser.add_argument(
        "--config", help="preset (voc, coco, demo, own) or a YAML file (default voc; with --resume, the run's)"
    )
    parser.add_argument("--data", help="dataset root (VOC, COCO or folder layout)")
    parser.add_argument("--recipe", choices=RECIPE_NAMES, help="training recipe (default: the config's, release)")
    parser.add_argument("--out", help="run directory (default runs/CONFIG-RECIPE)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument(
        "--deterministic",
        action="store_true",
        help="deterministic kernels only: bit-identical CPU runs for a seed (train.deterministic=true)",
    )
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.batch_size=8")
    parser.set_defaults(run=run)


def resolve_config(args: argparse.Namespace) -> tuple[Config, Path, str]:
    """The run's configuration and folder, and a line saying which settings were measured on the
    data ("" if none). ``--resume`` keeps the stored configuration: the options given with it may
    repeat its values, or raise ``train.iterations``; other changes are refused."""
    from cosa.config.load import resumed_config
    from cosa.data.scaled import load_config_for_data
    from cosa.engine.run_dir import stored_config

    if args.deterministic:
        args.overrides = [*args.overrides, "train.deterministic=true"]
    if args.resume:
        if not args.out:
            raise CosaError("--resume needs --out RUN_DIR (the run to continue)")
        run_dir = Path(args.out).expanduser()
        stored = stored_config(run_dir)
        # A --config given again is resolved as a new run would be, so that another preset is
        # refused by what it changes; without one, the options apply to the stored configuration.
        data = args.data or stored.data.root
        base = None if args.config else stored
        requested, _ = load_config_for_data(args.config, args.recipe, data, args.overrides, base=base)
        return resumed_config(stored, requested, f"{run_dir}: --resume"), run_dir, ""
    config = args.config or "voc"
    cfg, scaled = load_config_for_data(config, args.recipe, args.data, args.overrides)
    return cfg, Path(args.out or f"runs/{Path(config).stem}-{cfg.method.recipe}").expanduser(), scaled


def run(args: argparse.Namespace) -> int:
    from cosa.engine.launch import run_training, summarize

    cfg, run_dir, scaled = resolve_config(args)
    if os.environ.get("RANK", "0") == "0":
        print(f"run directory: {run_dir}")
        if scaled:
            print(scaled)
    result = run_training(cfg, run_dir, args.resume)
    if os.environ.get("RANK", "0") == "0":
        print(summarize(result))
        print(f"run directory: {run_dir}")
    return 0
