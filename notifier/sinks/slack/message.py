"""One Slack message (Block Kit) for a group of events of one (cluster, streamKey).

Made to be read on a phone::

    header   eu-1 · stream live-1
    section  🚨 *live-1 degraded*: 27% of 11,000 viewers dropped (2,970)   (a card a stream
             `c_41pjso2krv6sk1wj / live-1` · 08:22:40 UTC                 event, ``cards``)
             ...figures, and the breakdown as a table in a code block
    divider                                                   (when viewer events follow)
    section  *3 joined* · *1 left* · *2 health dropped*
    section  🟢 `v_xh69zeigml96ts7p` joined · 🇵🇱 PL · Desktop · Chrome · 95 Very Good
             🔴 `v_k2…` health dropped 82 Very Good → 31 Bad (below 50) · 🇩🇪 DE · Mobile
             ...one line an event, in ``sequence`` order, several lines a section
    section  _…and 950 more (900 joined, 50 left)_        (only when summarised)
    context  eu-1 · 6 events · 2026-02-05 08:22:40-08:22:49 UTC

Stream events come first, as cards in ``sequence`` order (at most ``MAX_CARDS``, the last ones
without their figures if they would take more than ``CARD_BUDGET``; the rest are counted in an
"…and N more stream events" line); the ``text`` fallback, what a notification shows, leads with
what they say. Viewer events follow as the digest: counts, then one line an event.

Slack rejects a message past its limits, so every text is measured in UTF-16 code units (never
fewer than the characters Slack counts) and the event lines stop before one would not fit:
50 blocks, 3000 a section text, 150 a header, ``max_lines`` lines, and well under the ~12,000
characters Slack accepts across all blocks (undocumented: ``msg_blocks_too_long``). Values are
untrusted and go through ``text``: they can neither break the layout nor become a link or a
mention, and missing or null values are left out.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Final

from notifier.sinks.slack.cards import DEGRADED, STREAM_LABELS, card, is_stream_event
from notifier.sinks.slack.text import (
    MAX_VALUE,
    clean,
    fit,
    mapping,
    moment,
    number,
    plural,
    units,
    value,
)

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence
    from datetime import datetime

    from notifier.sinks.slack.cards import Card

__all__ = ["CARD_BUDGET", "MAX_CARDS", "MAX_LINES", "build_message"]

MAX_LINES: Final = 50
"""Event lines listed at most; the rest are counted in an "…and N more" line."""

MAX_BLOCKS: Final = 50
MAX_SECTION: Final = 3000
MAX_HEADER: Final = 150
MAX_TOTAL: Final = 10_000  # all block texts together; Slack refuses somewhere above 12,000
MAX_CARDS: Final = 10
"""Stream events shown as cards at most; the rest are counted in an "…and N more" line."""
CARD_BUDGET: Final = 6000  # the cards' texts together, so that the viewer digest keeps room
MAX_HEADLINES: Final = 3  # stream events told in the text fallback
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
    streams = [event for event in ordered if is_stream_event(event)]
    viewers = [event for event in ordered if not is_stream_event(event)]
    labels = [_label(event) for event in viewers]
    counts = Counter(labels)
    where = fit(clean(cluster), MAX_VALUE) or "?"
    stream = clean(stream_key) or next(
        (clean(mapping(mapping(e.get("data")).get("stream")).get("streamKey")) for e in streams),
        "",
    )

    if stream:
        header = f"{where} · stream {fit(stream, MAX_HEADER - units(where) - 10)}"
    else:
        header = f"{where} · no stream key"
    cards, shown, more_streams = _cards(streams, stream_key)
    tally = " · ".join(f"*{n} {label}*" for n, label in _tally(counts))
    if not tally and not streams:
        tally = "_no events_"
    context = " · ".join([where, plural(len(ordered), "event"), *_time_range(ordered)])

    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        *(_section(text) for text in shown),
    ]
    if more_streams:
        blocks.append(_section(more_streams))
    if blocks[1:] and tally:
        blocks.append({"type": "divider"})
    if tally:
        blocks.append(_section(tally))
    used = sum(units(text) for text in [header, *shown, more_streams, tally, context])
    sections, more = _pack(
        viewers, labels, counts, used=used, blocks=len(blocks) + 1, max_lines=max(max_lines, 0)
    )
    blocks += [_section(text) for text in sections]
    if more:
        blocks.append(_section(more))
    blocks.append({"type": "context", "elements": [_mrkdwn(context)]})
    return {"text": _fallback(where, stream, cards, counts), "blocks": blocks}


def _cards(
    streams: Sequence[Mapping[str, Any]], stream_key: str | None
) -> tuple[list[Card], list[str], str]:
    """The stream events' cards, the section texts that fit, and the "…and N more" line.

    In ``sequence`` order, each whole while the texts stay within ``CARD_BUDGET``, then short
    (headline, where and when); at most ``MAX_CARDS``. Only the newest degradation shown has
    its breakdown table.
    """
    kinds = [mapping(event).get("type") for event in streams[:MAX_CARDS]]
    newest = max((n for n, kind in enumerate(kinds) if kind == DEGRADED), default=None)
    cards = [card(event, stream_key, table=n == newest) for n, event in enumerate(streams)]
    shown: list[str] = []
    used = 0
    for one in cards[:MAX_CARDS]:
        text = one.text if used + units(one.text) <= CARD_BUDGET else one.short
        if used + units(text) > CARD_BUDGET:
            break
        shown.append(text)
        used += units(text)
    left = Counter(
        STREAM_LABELS.get(str(mapping(event).get("type")), "other")
        for event in streams[len(shown) :]
    )
    if not left:
        return cards, shown, ""
    told = ", ".join(f"{n} {label}" for label, n in left.most_common())
    return cards, shown, f"_…and {plural(left.total(), 'more stream event')} ({told})_"


def _fallback(where: str, stream: str, cards: Sequence[Card], counts: Counter[str]) -> str:
    """The ``text`` a notification shows: what the stream events say first, then the counts."""
    counted = ", ".join(f"{n} {label}" for n, label in _tally(counts))
    title = f"{where} · {fit(stream, 100)}" if stream else where
    if not cards:
        return f"{title}: {counted or 'no events'}"
    told = [f"{one.key} {one.summary}" for one in cards[:MAX_HEADLINES]]  # escaped already
    if len(cards) > MAX_HEADLINES:
        told.append(plural(len(cards) - MAX_HEADLINES, "more stream event"))
    return "; ".join([f"{where} · {told[0]}", *told[1:], *([counted] if counted else [])])


def _pack(
    ordered: Sequence[Mapping[str, Any]],
    labels: Sequence[str],
    counts: Counter[str],
    *,
    used: int,
    blocks: int,
    max_lines: int,
) -> tuple[list[str], str]:
    """The event lines that fit, as section texts, and the "…and N more" line for the rest.

    ``used`` is what the other blocks (``blocks`` of them) already take of the total. A line
    is added only if the "more" line for what is left after it still fits too.
    """
    sections: list[list[str]] = []
    section_units = 0
    remaining = Counter(counts)
    more = _more(remaining)
    for event, label in zip(ordered[:max_lines], labels, strict=False):
        line = _line(event, label)
        remaining[label] -= 1
        after = _more(remaining)
        joins = bool(sections) and section_units + 1 + units(line) <= MAX_SECTION
        cost = units(line) + (1 if joins else 0)  # the newline
        total = blocks + len(sections) + (0 if joins else 1) + (1 if after else 0)
        if used + cost + units(after) > MAX_TOTAL or total > MAX_BLOCKS:
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
    return value(kind) or "unknown event"


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
    event = mapping(event)
    data = mapping(event.get("data"))
    viewer = mapping(data.get("viewer"))
    kind = event.get("type")
    emoji = _KINDS[kind][0] if isinstance(kind, str) and kind in _KINDS else _UNKNOWN_EMOJI
    ident = value(event.get("subject"), MAX_ID) or value(viewer.get("id"), MAX_ID)
    who = f"`{ident}`" if ident else "a viewer"
    now = _health(viewer.get("healthScore"), viewer.get("healthGrade"))
    where = [_country(viewer), _device(viewer.get("deviceType")), value(viewer.get("browserName"))]
    if kind == "viewer.disconnected":
        how_long = _duration(viewer.get("duration"))
        what = f"left after {how_long}" if how_long else "left"
        details = [*where, now]
    elif kind in ("viewer.health_dropped", "viewer.health_recovered"):
        previous = mapping(data.get("previous"))
        before = _health(previous.get("healthScore"), previous.get("healthGrade"))
        what = f"{label} {_transition(before, now)}".rstrip()
        threshold = number(data.get("threshold"))
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
    grade_text = value(grade, 24)
    if grade_text.casefold() == "no data":
        return grade_text
    score_text = number(score) or value(score, 12)
    return " ".join(part for part in (score_text, grade_text) if part)


def _country(viewer: Mapping[str, Any]) -> str:
    code = viewer.get("countryCode")
    if isinstance(code, str) and code.isascii() and code.strip().upper() in _COUNTRIES:
        code = code.strip().upper()
        flag = "".join(chr(0x1F1E6 + ord(letter) - ord("A")) for letter in code)
        return f"{flag} {code}"
    return value(code, 12) or value(viewer.get("countryName"))


def _device(raw: object) -> str:
    if isinstance(raw, str) and raw.isalpha() and raw.isupper():
        raw = raw.capitalize()  # DESKTOP -> Desktop
    return value(raw)


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
    return moment(event.get("time") if isinstance(event, Mapping) else None)
