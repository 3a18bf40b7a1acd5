"""``cosa`` — train, evaluate and use CoSA models. Each sub-command lives in its own module."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import NoReturn

from cosa import __version__
from cosa.cli import convert, data, demo, evaluate, export, plot, predict, report, train
from cosa.errors import CosaError, user_message

COMMANDS = (train, evaluate, predict, export, convert, plot, report, demo, data)


class Parser(argparse.ArgumentParser):
    """Command-line mistakes are one line too, like every other user mistake (sub-commands inherit it)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"cosa: error: {message}\n")


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit), raised where Ctrl-C's KeyboardInterrupt would be,
    so that the same clean-up runs: partial files removed, the run folder's lock released."""


def _terminate(signum, frame) -> NoReturn:
    raise Terminated


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cosa", description="Weakly supervised semantic segmentation from image-level labels (CoSA).")
    parser.add_argument("--version", action="version", version=f"cosa {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        return args.run(args) or 0
    except CosaError as error:
        print(f"cosa: error: {user_message(error)}", file=sys.stderr)
        return 2
    except Terminated:
        print("cosa: terminated", file=sys.stderr)
        return 143  # 128 + SIGTERM, what a shell reports for a process that SIGTERM ended
    except KeyboardInterrupt:
        print("cosa: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


if __name__ == "__main__":
    sys.exit(main())
