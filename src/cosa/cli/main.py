"""``cosa`` — train, evaluate and use CoSA models. Each sub-command lives in its own module."""

from __future__ import annotations

import argparse
import sys

from cosa import __version__
from cosa.cli import convert, data, demo, evaluate, export, plot, predict, report, train
from cosa.errors import CosaError, user_message

COMMANDS = (train, evaluate, predict, export, convert, plot, report, demo, data)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="cosa", description="Weakly supervised semantic segmentation from image-level labels (CoSA)."
    )
    parser.add_argument("--version", action="version", version=f"cosa {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.run(args) or 0
    except CosaError as error:
        print(f"cosa: error: {user_message(error)}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("cosa: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
