"""The ``cosa`` command line. Sub-command modules import the heavy libraries only when they run,
so that ``cosa --help`` answers at once."""

import argparse

NETWORKS = ("assignment", "online")


def at_least_one(text: str) -> int:
    """argparse type of ``--max-images``: 0 images would give NaN metrics, not an error."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, not '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value
