"""Argument types of the benchmarks' command lines (``python -m bench.<name> --help``)."""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from collections.abc import Callable

__all__ = ["int_list", "positive_int"]


def positive_int(text: str) -> int:
    """A whole number, 1 or more."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {text}")
    return value


def int_list(
    what: str, *, low: int = 1, high: int | None = None, descending: bool = False
) -> Callable[[str], list[int]]:
    """An argparse type for ``"1000,10000"``: distinct whole numbers from ``low`` to ``high``,
    sorted (largest first with ``descending``)."""

    def parse(text: str) -> list[int]:
        try:
            values = sorted({int(part) for part in text.split(",")}, reverse=descending)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a list of {what}: {text!r}") from None
        if not values or min(values) < low or (high is not None and max(values) > high):
            bound = f"between {low} and {high}" if high is not None else f"at least {low}"
            raise argparse.ArgumentTypeError(f"{what} are {bound}")
        return values

    return parse
