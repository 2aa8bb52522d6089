"""Durations as operators write them: ``500ms``, ``5s``, ``2m``, ``1h``; a bare number: seconds.

And as a person reads them in a message or on a screen: ``2 h 5 min`` (``spoken_duration``).
"""

from __future__ import annotations

import math
import re

__all__ = ["format_duration", "parse_duration", "spoken_duration"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, None: 1.0}


def parse_duration(value: object) -> float:
    """Return ``value`` in seconds; raise ``ValueError`` with a one-line reason if it is not one."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        seconds = float(value)
    elif isinstance(value, str) and (match := _DURATION.match(value)):
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
    else:
        raise ValueError("expected a duration such as 500ms, 5s, 2m or 1h")
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError("a duration must be a finite number of seconds, zero or more")
    return seconds


def format_duration(seconds: float) -> str:
    """Render seconds the way they are written in the config: ``500ms``, ``1.5s``, ``2m``,
    ``1h``, ``1d`` (the largest unit that divides them; ``90s`` stays ``90s``, ``0`` is ``0s``).
    ``parse_duration`` reads each result back."""
    if seconds and seconds < 1:
        return f"{_number(seconds * 1000)}ms"
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{_number(seconds / size)}{unit}"
    return f"{_number(seconds)}s"


def _number(value: float) -> str:
    """12 significant digits, never an exponent (``parse_duration`` takes none)."""
    text = f"{value:.12g}"
    if "e" in text:
        text = f"{value:.9f}".rstrip("0").rstrip(".")
    return text


def spoken_duration(ms: int) -> str:
    """Milliseconds as a person says them, two units at most, seconds cut: ``40 s``,
    ``3 min 20 s``, ``2 h 5 min``, ``3 d 4 h`` (a negative time is ``0 s``)."""
    seconds = max(ms, 0) // 1000
    if seconds < 60:
        return f"{seconds} s"
    if seconds >= 86_400:
        size, name, smaller, smaller_name = 86_400, "d", 3600, "h"
    elif seconds >= 3600:
        size, name, smaller, smaller_name = 3600, "h", 60, "min"
    else:
        size, name, smaller, smaller_name = 60, "min", 1, "s"
    big, rest = divmod(seconds, size)
    little = rest // smaller
    return f"{big} {name} {little} {smaller_name}" if little else f"{big} {name}"
