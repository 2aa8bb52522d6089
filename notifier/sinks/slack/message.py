"""One Slack message (Block Kit) for a group of events of one (cluster, streamKey).

Made to be read on a phone::

    header   eu-1 · stream live-1
    section  *3 joined* · *1 left* · *2 health dropped*
    section  🟢 `v_xh69zeigml96ts7p` joined · 🇵🇱 PL · Desktop · Chrome · 95 Very Good
             🔴 `v_k2…` health dropped 82 Very Good → 31 Bad (below 50) · 🇩🇪 DE · Mobile
             ...one line an event, in ``sequence`` order, several lines a section
    section  _…and 950 more (900 joined, 50 left)_        (only when summarised)
    context  eu-1 · 6 events · 2026-02-05 08:22:40-08:22:49 UTC

Slack rejects a message past its limits, so every text is measured in UTF-16 code units (never
fewer than the characters Slack counts) and the event lines stop before one would not fit:
50 blocks, 3000 a section text, 150 a header, ``max_lines`` lines, and well under the ~12,000
characters Slack accepts across all blocks (undocumented: ``msg_blocks_too_long``).

Values from the Storm API are untrusted: control and format characters are dropped, newlines
become spaces, long values are cut with "…", and ``& < >`` are escaped, so a value can neither
break the layout nor turn into a link or a mention. Missing or null values are left out.
"""

from __future__ import annotations

import math
import unicodedata
from collections import Counter
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

__all__ = ["MAX_LINES", "build_message"]

MAX_LINES: Final = 50
"""Event lines listed at most; the rest are counted in an "…and N more" line."""

MAX_BLOCKS: Final = 50
MAX_SECTION: Final = 3000
MAX_HEADER: Final = 150
MAX_TOTAL: Final = 10_000  # all block texts together; Slack refuses somewhere above 12,000
MAX_VALUE: Final = 40  # a field of the viewer record
MAX_ID: Final = 32  # a viewer id (the simulator's and Storm's are 18)
MAX_LABELS: Final = 3  # unknown event types named in the counts; the rest are "other"

_KINDS: Final[dict[str, tuple[str, str]]] = {
    "viewer.connected": ("🟢", "joined"),
    "viewer.disconnected": ("⚪", "left"),
    "viewer.health_dropped": ("🔴", "health dropped"),
    "viewer.health_recovered": ("🟡", "recovered"),
}
_UNKNOWN_EMOJI: Final = "🔹"
_EN_DASH: Final = "\u2013"

# ISO 3166-1 alpha-2, plus EU and XK (Kosovo), which geolocation databases use and which have flags.
_COUNTRY_CODES: Final = """
    AD AE AF AG AI AL AM AO AQ AR AS AT AU AW AX AZ BA BB BD BE BF BG BH BI BJ BL BM BN BO BQ
    BR BS BT BV BW BY BZ CA CC CD CF CG CH CI CK CL CM CN CO CR CU CV CW CX CY CZ DE DJ DK DM
    DO DZ EC EE EG EH ER ES ET EU FI FJ FK FM FO FR GA GB GD GE GF GG GH GI GL GM GN GP GQ GR
    GS GT GU GW GY HK HM HN HR HT HU ID IE IL IM IN IO IQ IR IS IT JE JM JO JP KE KG KH KI KM
    KN KP KR KW KY KZ LA LB LC LI LK LR LS LT LU LV LY MA MC MD ME MF MG MH MK ML MM MN MO MP
    MQ MR MS MT MU MV MW MX MY MZ NA NC NE NF NG NI NL NO NP NR NU NZ OM PA PE PF PG PH PK PL
    PM PN PR PS PT PW PY QA RE RO RS RU RW SA SB SC SD SE SG SH SI SJ SK SL SM SN SO SR SS ST
    SV SX SY SZ TC TD TF TG TH TJ TK TL TM TN TO TR TT TV TW TZ UA UG UM US UY UZ VA VC VE VG
    VI VN VU WF WS XK YE YT ZA ZM ZW
"""
_COUNTRIES: Final = frozenset(_COUNTRY_CODES.split())


def build_message(
    cluster: str,
    stream_key: str | None,
    events: Sequence[Mapping[str, Any]],
    *,
    max_lines: int = MAX_LINES,
) -> dict[str, Any]:
    """The incoming-webhook payload (``text`` fallback and ``blocks``) for one group of events."""
    ordered = sorted(events, key=_order)
    labels = [_label(event) for event in ordered]
    counts = Counter(labels)
    where = _fit(_clean(cluster), MAX_VALUE) or "?"
    stream = _clean(stream_key)

    if stream:
        header = f"{where} · stream {_fit(stream, MAX_HEADER - _units(where) - 10)}"
    else:
        header = f"{where} · no stream key"
    tally = " · ".join(f"*{n} {label}*" for n, label in _tally(counts)) or "_no events_"
    context = " · ".join([where, _plural(len(ordered), "event"), *_time_range(ordered)])

    used = _units(header) + _units(tally) + _units(context)
    sections, more = _pack(ordered, labels, counts, used=used, max_lines=max(max_lines, 0))
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        _section(tally),
        *(_section(text) for text in sections),
    ]
    if more:
        blocks.append(_section(more))
    blocks.append({"type": "context", "elements": [_mrkdwn(context)]})
    title = f"{where} · {_fit(stream, 100)}" if stream else where
    counted = ", ".join(f"{n} {label}" for n, label in _tally(counts)) or "no events"
    return {"text": f"{title}: {counted}", "blocks": blocks}


def _pack(
    ordered: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    counts: Counter[str],
    *,
    used: int,
    max_lines: int,
) -> tuple[list[str], str]:
    """The event lines that fit, as section texts, and the "…and N more" line for the rest.

    ``used`` is what the header, counts and context already take of the total. A line is
    added only if the "more" line for what is left after it still fits too.
    """
    sections: list[list[str]] = []
    section_units = 0
    remaining = Counter(counts)
    more = _more(remaining)
    for event, label in zip(ordered[:max_lines], labels, strict=False):
        line = _line(event, label)
        remaining[label] -= 1
        after = _more(remaining)
        joins = bool(sections) and section_units + 1 + _units(line) <= MAX_SECTION
        cost = _units(line) + (1 if joins else 0)  # the newline
        blocks = 3 + len(sections) + (0 if joins else 1) + (1 if after else 0)
        if used + cost + _units(after) > MAX_TOTAL or blocks > MAX_BLOCKS:
            remaining[label] += 1
            break
        if joins:
            sections[-1].append(line)
            section_units += cost
        else:
            sections.append([line])
            section_units = cost
        used += cost
        more = after
    return ["\n".join(lines) for lines in sections], more


def _mrkdwn(text: str) -> dict[str, Any]:
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _section(text: str) -> dict[str, Any]:
    return {"type": "section", "text": _mrkdwn(text)}


def _units(text: str) -> int:
    """The length of ``text`` in UTF-16 code units: an emoji counts 2, like JavaScript does."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def _escape(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _keep(char: str) -> str:
    """A character of an API value as it may be shown: controls go, line breaks become spaces."""
    if char.isspace():  # newlines, tabs, NEL, line and paragraph separators
        return " "
    category = unicodedata.category(char)
    if category in ("Cc", "Cs") or (category == "Cf" and char != "\u200d"):
        return ""  # controls, lone surrogates, bidi overrides; the emoji joiner stays
    return "'" if char == "`" else char  # a backquote would end the id's code span


def _clean(value: object) -> str:
    """An API value as one line of plain text, unescaped; "" when absent or not text."""
    if isinstance(value, str):
        raw = value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        raw = _number(value)
    else:
        return ""
    return " ".join("".join(_keep(char) for char in raw[:4000]).split())


def _fit(text: str, budget: int, *, escapes_count: bool = True) -> str:
    """``text`` escaped, cut with "…" when longer than ``budget`` UTF-16 units.

    ``escapes_count``: measure the escaped text, which Slack's limits apply to; else the text
    as a person reads it (a value inside a line, whose length is bounded anyway).
    """

    def cost(char: str) -> int:
        return _units(_escape(char) if escapes_count else char)

    if sum(cost(char) for char in text) <= budget:
        return _escape(text)
    kept: list[str] = []
    used = 1  # the ellipsis
    for char in text:
        used += cost(char)
        if used > budget:
            break
        kept.append(char)
    return _escape("".join(kept).rstrip()) + "…"


def _value(value: object, budget: int = MAX_VALUE) -> str:
    return _fit(_clean(value), budget, escapes_count=False)


def _number(value: object) -> str:
    """A score, threshold or count the way a person writes it; "" when not a finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    if isinstance(value, float):
        if not math.isfinite(value):
            return ""
        if not value.is_integer() or abs(value) >= 1e15:
            return f"{value:.4g}"
        value = int(value)
    text = str(value)
    return text if len(text) <= 15 else text[:14] + "…"


def _plural(count: int, noun: str) -> str:
    return f"{count} {noun}" if count == 1 else f"{count} {noun}s"


def _mapping(value: object) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _order(event: Mapping[str, Any]) -> tuple[int, int | float]:
    """Events by ``sequence``; those without one keep their place after the others."""
    sequence = event.get("sequence") if isinstance(event, Mapping) else None
    if isinstance(sequence, int) and not isinstance(sequence, bool):
        return (0, sequence)
    if isinstance(sequence, float) and math.isfinite(sequence):
        return (0, sequence)
    return (1, 0)


def _label(event: Mapping[str, Any]) -> str:
    """What an event is called in the counts: "joined", ..., or its type when unknown."""
    kind = event.get("type") if isinstance(event, Mapping) else None
    if isinstance(kind, str) and kind in _KINDS:
        return _KINDS[kind][1]
    return _value(kind) or "unknown event"


def _tally(counts: Counter[str]) -> Iterable[tuple[int, str]]:
    """Counts of the known types in a fixed order, then at most a few others by frequency."""
    known = [label for _, label in _KINDS.values()]
    for label in known:
        if counts[label] > 0:
            yield counts[label], label
    others = sorted(
        ((n, label) for label, n in counts.items() if label not in known and n > 0),
        key=lambda item: (-item[0], item[1]),
    )
    yield from others[:MAX_LABELS]
    rest = sum(n for n, _ in others[MAX_LABELS:])
    if rest:
        yield rest, "other"


def _more(remaining: Counter[str]) -> str:
    left = sum(n for n in remaining.values() if n > 0)
    if not left:
        return ""
    return f"_…and {left} more ({', '.join(f'{n} {label}' for n, label in _tally(remaining))})_"


def _line(event: Mapping[str, Any], label: str) -> str:
    """One event as one line: who, what happened, and where they watch from."""
    event = _mapping(event)
    data = _mapping(event.get("data"))
    viewer = _mapping(data.get("viewer"))
    kind = event.get("type")
    emoji = _KINDS[kind][0] if isinstance(kind, str) and kind in _KINDS else _UNKNOWN_EMOJI
    ident = _value(event.get("subject"), MAX_ID) or _value(viewer.get("id"), MAX_ID)
    who = f"`{ident}`" if ident else "a viewer"
    now = _health(viewer.get("healthScore"), viewer.get("healthGrade"))
    where = [_country(viewer), _device(viewer.get("deviceType")), _value(viewer.get("browserName"))]
    if kind == "viewer.disconnected":
        how_long = _duration(viewer.get("duration"))
        what = f"left after {how_long}" if how_long else "left"
        details = [*where, now]
    elif kind in ("viewer.health_dropped", "viewer.health_recovered"):
        previous = _mapping(data.get("previous"))
        before = _health(previous.get("healthScore"), previous.get("healthGrade"))
        what = f"{label} {_transition(before, now)}".rstrip()
        threshold = _number(data.get("threshold"))
        if threshold:
            what += (
                f" (below {threshold})" if kind == "viewer.health_dropped" else f" (≥ {threshold})"
            )
        details = where
    else:
        what = label
        details = [*where, now]
    return " · ".join([f"{emoji} {who} {what}", *(part for part in details if part)])


def _transition(before: str, after: str) -> str:
    if before and after:
        return f"{before} → {after}"
    if after:
        return f"to {after}"
    return f"from {before}" if before else ""


def _health(score: object, grade: object) -> str:
    """ "95 Very Good"; a score that comes with "No Data" is no measurement and is left out."""
    grade_text = _value(grade, 24)
    if grade_text.casefold() == "no data":
        return grade_text
    score_text = _number(score) or _value(score, 12)
    return " ".join(part for part in (score_text, grade_text) if part)


def _country(viewer: Mapping[str, Any]) -> str:
    code = viewer.get("countryCode")
    if isinstance(code, str) and code.isascii() and code.strip().upper() in _COUNTRIES:
        code = code.strip().upper()
        flag = "".join(chr(0x1F1E6 + ord(letter) - ord("A")) for letter in code)
        return f"{flag} {code}"
    return _value(code, 12) or _value(viewer.get("countryName"))


def _device(value: object) -> str:
    if isinstance(value, str) and value.isalpha() and value.isupper():
        value = value.capitalize()  # DESKTOP -> Desktop
    return _value(value)


def _duration(value: object) -> str:
    """Milliseconds as "12m 3s"; "" unless a plausible duration (under a hundred years)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return ""
    if not math.isfinite(value) or not 0 <= value < 100 * 365 * 86_400_000:
        return ""
    seconds = int(value // 1000)
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m {seconds}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 24:
        return f"{hours}h {minutes}m"
    days, hours = divmod(hours, 24)
    return f"{days}d {hours}h"


def _time_range(events: Iterable[Mapping[str, Any]]) -> list[str]:
    """The first and last event ``time`` in UTC, e.g. "2026-02-05 08:22:40-08:22:49 UTC"."""
    times = [moment for event in events if (moment := _time(event)) is not None]
    if not times:
        return []
    first, last = min(times), max(times)
    start = first.strftime("%Y-%m-%d %H:%M:%S")
    if first == last:
        return [f"{start} UTC"]
    end = last.strftime("%H:%M:%S" if first.date() == last.date() else "%Y-%m-%d %H:%M:%S")
    return [f"{start}{_EN_DASH}{end} UTC"]


def _time(event: Mapping[str, Any]) -> datetime | None:
    value = event.get("time") if isinstance(event, Mapping) else None
    if not isinstance(value, str) or len(value) > 64:
        return None
    try:
        moment = datetime.fromisoformat(value)
        if moment.tzinfo is None:
            return moment.replace(tzinfo=UTC)
        return moment.astimezone(UTC)
    except (ValueError, OverflowError):
        return None
