"""Named ranges of a training step for ``torch.profiler``; ``benchmarks/speed.py`` times them.

A range costs a few microseconds when nobody profiles, so the step keeps them always on.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from torch.profiler import record_function

T = TypeVar("T")


def section(name: str) -> record_function:
    """The profiler range ``cosa/NAME``."""
    return record_function(f"cosa/{name}")


def timed(name: str, function: Callable[..., T], *args, **kwargs) -> T:
    """``function(*args, **kwargs)`` inside the range ``cosa/NAME``."""
    with section(name):
        return function(*args, **kwargs)
