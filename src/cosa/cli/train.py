"""``cosa train`` — one process, or many under ``torchrun``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from cosa.config.schema import RECIPE_NAMES, Config
from cosa.errors import CosaError


def add_parser(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "train", help="train a model",
        description="Train CoSA (or a baseline recipe). Under torchrun, every process runs this command.",
    )
    parser.add_argument("--config", default="voc", help="preset (voc, coco, demo) or a YAML file (default voc)")
    parser.add_argument("--data", help="dataset root (VOC, COCO or folder layout)")
    parser.add_argument("--recipe", choices=RECIPE_NAMES, help="training recipe (default: the config's, release)")
    parser.add_argument("--out", help="run directory (default runs/CONFIG-RECIPE)")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out from its last checkpoint")
    parser.add_argument("--deterministic", action="store_true",
                        help="deterministic kernels only: bit-identical CPU runs for a seed (train.deterministic=true)")
    parser.add_argument("overrides", nargs="*", metavar="key=value", help="config overrides, e.g. train.iterations=100")
    parser.set_defaults(run=run)


def resolve_config(args: argparse.Namespace) -> tuple[Config, Path]:
    from cosa.config import load_config

    if args.deterministic:
        args.overrides = [*args.overrides, "train.deterministic=true"]
    if args.resume:
        if not args.out:
            raise CosaError("--resume needs --out RUN_DIR (the run to continue)")
        run_dir = Path(args.out)
        saved = run_dir / "config.yaml"
        if not saved.is_file():
            raise CosaError(f"{saved}: no run to resume here")
        return load_config(str(saved), args.recipe, args.data, args.overrides), run_dir
    cfg = load_config(args.config, args.recipe, args.data, args.overrides)
    run_dir = Path(args.out or f"runs/{Path(args.config).stem}-{cfg.method.recipe}")
    if (run_dir / "checkpoints" / "last.pt").exists():
        raise CosaError(f"{run_dir}: holds a run already; add --resume to continue it or choose another --out")
    return cfg, run_dir


def run_training(cfg: Config, run_dir: Path, resume: bool = False) -> dict | None:
    """Train in this process (joining torchrun's group if any); returns the final evaluation."""
    from cosa.cli.common import setup_logging
    from cosa.engine.distributed import init_distributed, shutdown
    from cosa.engine.trainer import Trainer

    dist = init_distributed(cfg.train.device)
    setup_logging(dist.is_main)
    try:
        result = Trainer(cfg, run_dir, dist, resume=resume).fit()
    finally:
        shutdown()
    return result


def run(args: argparse.Namespace) -> int:
    from cosa.engine.trainer import summarize

    cfg, run_dir = resolve_config(args)
    result = run_training(cfg, run_dir, args.resume)
    if os.environ.get("RANK", "0") == "0":
        print(summarize(result))
        print(f"run directory: {run_dir}")
    return 0
