"""Text for Slack from untrusted event values: cleaned, escaped, cut, measured, formatted.

Values from the Storm API (and anything else inside an event) are untrusted: control and format
characters are dropped, newlines become spaces, long values are cut with "…", and ``& < >`` are
escaped, so a value can neither break the layout nor turn into a link or a mention. Lengths
are counted in UTF-16 code units, never fewer than the characters Slack counts. Every helper
takes any value and gives "" (or None) for one it cannot show: missing or null values are left
out, never shown as "None".
"""

from __future__ import annotations

import math
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Final

from notifier.durations import spoken_duration

__all__ = [
    "MAX_VALUE",
    "clean",
    "count",
    "escape",
    "fit",
    "mapping",
    "moment",
    "number",
    "percent",
    "plural",
    "span",
    "units",
    "value",
    "whole",
]

MAX_VALUE: Final = 40  # a field of the viewer record
_CENTURY_MS: Final = 100 * 365 * 86_400_000  # longer is not a duration, it is a bug


def units(text: str) -> int:
    """The length of ``text`` in UTF-16 code units: an emoji counts 2, like JavaScript does."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def escape(text: str) -> str:
    """``& < >`` as Slack wants them in any text."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _keep(char: str) -> str:
    """A character of an API value as it may be shown: controls go, line breaks become spaces."""
    if char.isspace():  # newlines, tabs, NEL, line and paragraph separators
        return " "
    category = unicodedata.category(char)
    if category in ("Cc", "Cs") or (category == "Cf" and char != "\u200d"):
        return ""  # controls, lone surrogates, bidi overrides; the emoji joiner stays
    return "'" if char == "`" else char  # a backquote would end a code span or block


def clean(raw: object) -> str:
    """An API value as one line of plain text, unescaped; "" when absent or not text."""
    if isinstance(raw, str):
        text = raw
    elif isinstance(raw, int | float) and not isinstance(raw, bool):
        text = number(raw)
    else:
        return ""
    return " ".join("".join(_keep(char) for char in text[:4000]).split())


def fit(text: str, budget: int, *, escapes_count: bool = True) -> str:
    """``text`` escaped, cut with "…" when longer than ``budget`` UTF-16 units.

    ``escapes_count``: measure the escaped text, which Slack's limits apply to; else the text
    as a person reads it (a value inside a line, whose length is bounded anyway).
    """

    def cost(char: str) -> int:
        return units(escape(char) if escapes_count else char)

    if sum(cost(char) for char in text) <= budget:
        return escape(text)
    kept: list[str] = []
    used = 1  # the ellipsis
    for char in text:
        used += cost(char)
        if used > budget:
            break
        kept.append(char)
    return escape("".join(kept).rstrip()) + "…"


def value(raw: object, budget: int = MAX_VALUE) -> str:
    """An API value cleaned, cut to ``budget`` and escaped."""
    return fit(clean(raw), budget, escapes_count=False)


def number(raw: object) -> str:
    """A score, threshold or count the way a person writes it; "" when not a finite number."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return ""
    if isinstance(raw, float):
        if not math.isfinite(raw):
            return ""
        if not raw.is_integer() or abs(raw) >= 1e15:
            return f"{raw:.4g}"
        raw = int(raw)
    text = str(raw)
    return text if len(text) <= 15 else text[:14] + "…"


def whole(raw: object) -> int | None:
    """A count or a number of milliseconds: a non-negative whole number under 10**15, or None."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return None
    if isinstance(raw, float) and not (math.isfinite(raw) and raw.is_integer()):
        return None
    return int(raw) if 0 <= raw < 10**15 else None


def count(raw: object) -> str:
    """A count with thousands separators, "11,000"; "" when not one."""
    n = whole(raw)
    return "" if n is None else f"{n:,}"


def percent(raw: object) -> str:
    """A share (0 to 1) as a percentage: "27%", "4%", "0.4%"; "" when not a share."""
    if isinstance(raw, bool) or not isinstance(raw, int | float):
        return ""
    if not (math.isfinite(raw) and 0 <= raw <= 1):
        return ""
    pct = raw * 100
    if pct == 0 or pct >= 1:
        return f"{pct:.0f}%"
    return f"{pct:.1f}%"


def span(raw: object) -> str:
    """Milliseconds as a person says them, two units at most: "40 s", "3 min 20 s",
    "2 h 5 min", "3 d 4 h"; "" unless a plausible duration (under a hundred years)."""
    ms = whole(raw)
    if ms is None or ms >= _CENTURY_MS:
        return ""
    return spoken_duration(ms)


def plural(n: int, noun: str) -> str:
    """ "1 event", "2 events"."""
    return f"{n} {noun}" if n == 1 else f"{n} {noun}s"


def mapping(raw: object) -> Mapping[str, Any]:
    """``raw`` if it is an object, else an empty one."""
    return raw if isinstance(raw, Mapping) else {}


def moment(raw: object) -> datetime | None:
    """An RFC 3339 time in UTC; None when ``raw`` is not one."""
    if not isinstance(raw, str) or len(raw) > 64:
        return None
    try:
        parsed = datetime.fromisoformat(raw)
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
