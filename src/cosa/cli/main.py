"""``cosa`` — train, evaluate and use CoSA models. Each sub-command lives in its own module."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import NoReturn

from cosa import __version__
from cosa.cli import config, convert, data, demo, evaluate, export, predict, report, train
from cosa.errors import CosaError, out_of_memory_message, user_message

COMMANDS = (train, evaluate, predict, export, convert, report, demo, data, config)


class Parser(argparse.ArgumentParser):
    """The parser of ``cosa`` and, through ``add_subparsers``, of every command.

    - Mistakes are one line, like every other user mistake.
    - A command's options and its positional words (``key=value`` overrides, images) come in
      any order: ``cosa train train.iterations=5 --config demo`` is ``cosa train --config demo
      train.iterations=5``. argparse's intermixed parsing does this for a command; it cannot
      parse a command group, which keeps the usual parsing.
    - A command group without its command (``cosa``, ``cosa data``) prints its usage and commands.
    """

    _intermixing = False  # set while argparse's intermixed parsing calls parse_known_args itself

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"cosa: error: {message}\n")

    def parse_known_args(self, args=None, namespace=None):
        if self._subparsers is not None or self._intermixing:
            return super().parse_known_args(args, namespace)
        self._intermixing = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._intermixing = False

    def add_subparsers(self, **kwargs):
        self.set_defaults(run=self._print_commands)
        return super().add_subparsers(**kwargs)

    def _print_commands(self, args: argparse.Namespace) -> int:
        self.print_help()
        return 2  # nothing was run


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill``, a scheduler's time limit), raised where Ctrl-C's KeyboardInterrupt would be,
    so that the same clean-up runs: partial files removed, the run folder's lock released."""


def _terminate(signum, frame) -> NoReturn:
    raise Terminated


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(prog="cosa", description="Weakly supervised semantic segmentation from image-level labels (CoSA).")
    parser.add_argument("--version", action="version", version=f"cosa {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(commands)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    previous = signal.signal(signal.SIGTERM, _terminate)
    try:
        code = args.run(args) or 0
        sys.stdout.flush()  # a reader that has gone (`| head`) is met here rather than at exit
        return code
    except BrokenPipeError:
        # The reader (`| head`, `| grep -m1`) has what it wanted: stop quietly, as `cat` does.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer whose reader went away
    except CosaError as error:
        print(f"cosa: error: {user_message(error)}", file=sys.stderr)
        return 2
    except (RuntimeError, MemoryError) as error:  # torch's out-of-memory errors are RuntimeErrors
        message = out_of_memory_message(error)
        if message is None:
            raise
        print(f"cosa: error: {message}", file=sys.stderr)
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
