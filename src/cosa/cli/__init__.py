"""The ``cosa`` command line. Sub-command modules import the heavy libraries only when they run,
so that ``cosa --help`` answers at once.

Numeric options are checked by their argparse ``type`` while the arguments are parsed, so a value
out of range is the one line ``cosa: error: argument --OPTION: …`` before anything is read or
written (a traceback from deep inside, or a message naming an internal parameter, otherwise).
"""

import argparse
from collections.abc import Callable

from cosa.config.schema import AMP_MODES, MAX_SEED


def _whole_number(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not '{text}'") from None


def at_least(minimum: int) -> Callable[[str], int]:
    """argparse type: a whole number >= ``minimum``."""

    def parse(text: str) -> int:
        value = _whole_number(text)
        if value < minimum:
            raise argparse.ArgumentTypeError(f"must be at least {minimum}")
        return value

    parse.__name__ = f"at_least_{minimum}"  # argparse names the type in some messages
    return parse


# --max-images: 0 images would give NaN metrics, not an error.
at_least_one = at_least(1)


def seed(text: str) -> int:
    """argparse type of ``--seed``: numpy's generators take 0..2**32-1 (a traceback otherwise)."""
    value = _whole_number(text)
    if not 0 <= value <= MAX_SEED:
        raise argparse.ArgumentTypeError(f"must be in 0..{MAX_SEED}")
    return value


def add_amp_option(parser: argparse.ArgumentParser) -> None:
    """``--amp``: the evaluation's autocast instead of the checkpoint's ``eval.amp``."""
    parser.add_argument(
        "--amp",
        choices=AMP_MODES,
        help="autocast for the network's passes (default: the checkpoint's eval.amp); bf16 is about 3× faster on a GPU",
    )


def positive_number(text: str) -> float:
    """argparse type of ``--scales``: a number > 0."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, not '{text}'") from None
    if not value > 0:  # also NaN
        raise argparse.ArgumentTypeError(f"must be positive, not '{text}'")
    return value
