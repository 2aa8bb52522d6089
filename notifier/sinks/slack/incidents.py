"""The two messages Slack app mode edits in place (SPEC 5.1), rendered from their records.

An incident message, while open and once resolved::

    header   🚨 Incident · live-1 · eu-1                 ✅ Resolved · live-1 · eu-1
    section                                              ✅ *live-1 recovered after 5 min*: …
                                                         Incident: since 08:22:40 UTC · peak …
    divider                                              (resolved only)
    section  🚨 *live-1 degraded*: 27% of 11,000 viewers dropped (2,970)     (the card of
             `c_41… / live-1` · 08:22:40 UTC                                the degradation,
             11,000 viewers · 11,000 measured · 2,970 dropped (27%)         ``cards``, with
             ```breakdown table```                                          its breakdown)
    section  *In the thread:* 12 viewers dropped · 5 recovered · latest 08:25:10 UTC
    context  eu-1 · open since 08:22:40 UTC · viewer details in the thread
             eu-1 · resolved after 5 min, at 08:27:40 UTC

An audience message: its start, its latest crossings (``MAX_CROSSINGS_SHOWN``, the earlier ones
counted) and its end, one card each, then when it began and ended. Both stay far inside Block
Kit's limits whatever the events hold: the cards are bounded (``cards``), the header is cut.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Final

from notifier.sinks.slack.cards import card
from notifier.sinks.slack.text import clean, fit, mapping, moment, plural, span

if TYPE_CHECKING:
    from datetime import datetime

    from notifier.sinks.slack.book import AudienceRecord, IncidentRecord

__all__ = ["MAX_CROSSINGS_SHOWN", "audience_message", "incident_message"]

MAX_HEADER: Final = 150
MAX_CROSSINGS_SHOWN: Final = 8
_RECOVERED: Final = "stream.health_recovered"


def incident_message(cluster: str, record: IncidentRecord) -> dict[str, Any]:
    """The ``text`` and ``blocks`` of an incident message, open or resolved."""
    name = _stream_name(record.opened)
    opened = card(record.opened, name)
    where = fit(clean(cluster), 40) or "?"
    resolved = card(record.resolved, name) if record.resolved is not None else None
    state = "✅ Resolved" if resolved else "🚨 Incident"
    blocks: list[dict[str, Any]] = [_header(f"{state} · {name} · {clean(cluster)}")]
    if resolved is not None:
        blocks += [_section(resolved.text), {"type": "divider"}]
    blocks.append(_section(opened.text))
    if told := _thread(record):
        blocks.append(_section(told))
    since = _clock(moment(mapping(record.opened).get("time")))
    if resolved is None:
        context = [
            where,
            f"open since {since}" if since else "open",
            "viewer details in the thread",
        ]
        text = f"{where} · {opened.key} {opened.summary} (open)"
    else:
        lasted = _lasted(record)
        ended = _clock(moment(mapping(record.resolved).get("time")))
        context = [where, (f"resolved after {lasted}" if lasted else "resolved")]
        if ended:
            context[-1] += f", at {ended}"
        text = f"{where} · {opened.key} resolved: {resolved.summary}"
    blocks.append(_context(" · ".join(context)))
    return {"text": text, "blocks": blocks}


def audience_message(cluster: str, record: AudienceRecord) -> dict[str, Any]:
    """The ``text`` and ``blocks`` of an audience message: start, crossings, end."""
    where = fit(clean(cluster), 40) or "?"
    events = [e for e in (record.started, *record.crossings, record.ended) if e is not None]
    name = _stream_name(events[0]) if events else "a stream"
    blocks: list[dict[str, Any]] = [_header(f"📺 Audience · {name} · {clean(cluster)}")]
    if record.started is not None:
        blocks.append(_section(card(record.started, name).text))
    hidden = len(record.crossings) - MAX_CROSSINGS_SHOWN
    if hidden > 0:
        blocks.append(_section(f"_…{plural(hidden, 'earlier crossing')}_"))
    blocks += [_section(card(c, name).short) for c in record.crossings[-MAX_CROSSINGS_SHOWN:]]
    if record.ended is not None:
        blocks.append(_section(card(record.ended, name).text))
    begun = _clock(moment(mapping(record.started).get("time")))
    ended = _clock(moment(mapping(record.ended).get("time")))
    context = [where, f"live since {begun}" if begun else ""]
    if record.ended is not None:
        context.append(f"ended at {ended}" if ended else "ended")
    blocks.append(_context(" · ".join(part for part in context if part)))
    if not events:
        return {"text": f"{where} · audience", "blocks": blocks}
    latest = card(events[-1], name)
    return {"text": f"{where} · {latest.key} {latest.summary}", "blocks": blocks}


def _stream_name(event: object) -> str:
    """The stream's key as shown, unescaped (``fit`` escapes it where it goes)."""
    event = mapping(event)
    stream = mapping(mapping(event.get("data")).get("stream"))
    return clean(stream.get("streamKey"))[:100] or clean(event.get("subject"))[:100] or "a stream"


def _thread(record: IncidentRecord) -> str:
    """What the thread told so far, in one line; "" before it told anything."""
    if not record.dropped and not record.recovered:
        return ""
    parts = [
        f"{record.dropped:,} {'viewer' if record.dropped == 1 else 'viewers'} dropped",
        f"{record.recovered:,} recovered",
    ]
    latest = _clock(moment(record.latest), moment(mapping(record.opened).get("time")))
    if latest:
        parts.append(f"latest {latest}")
    return "*In the thread:* " + " · ".join(parts)


def _lasted(record: IncidentRecord) -> str:
    """How long the incident lasted: the recovery's own figure, else from the two times."""
    resolved = mapping(record.resolved)
    if resolved.get("type") == _RECOVERED:
        duration = mapping(mapping(resolved.get("data")).get("incident")).get("durationMs")
        if told := span(duration):
            return told
    began, ended = moment(mapping(record.opened).get("time")), moment(resolved.get("time"))
    if began is None or ended is None or ended < began:
        return ""
    return span(int((ended - began).total_seconds() * 1000))


def _clock(when: datetime | None, ref: datetime | None = None) -> str:
    """ "2026-02-05 08:22:40 UTC", or "08:22:40 UTC" on the day of ``ref``."""
    if when is None:
        return ""
    same_day = ref is not None and when.date() == ref.date()
    return when.strftime("%H:%M:%S UTC" if same_day else "%Y-%m-%d %H:%M:%S UTC")


def _header(text: str) -> dict[str, Any]:
    """A header of plain text, escaped and cut to Slack's 150."""
    return {
        "type": "header",
        "text": {"type": "plain_text", "text": fit(text, MAX_HEADER), "emoji": True},
    }


def _section(text: str) -> dict[str, Any]:
    """A section of ready mrkdwn (cards are bounded far below Slack's 3000)."""
    return {"type": "section", "text": {"type": "mrkdwn", "text": text, "verbatim": True}}


def _context(text: str) -> dict[str, Any]:
    return {"type": "context", "elements": [{"type": "mrkdwn", "text": text, "verbatim": True}]}
