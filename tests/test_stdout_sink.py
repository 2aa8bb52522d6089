"""The stdout sink: one JSON line per event, exactly as in the stream, or a line for people."""

from __future__ import annotations

import io
import json

from notifier.events import Event
from notifier.sinks.base import Delivered
from notifier.sinks.stdout import StdoutSink, StdoutSinkSettings


async def test_stdout_sink_writes_json_lines() -> None:
    """The stdout sink writes each event as one line, exactly as in the stream."""
    out = io.BytesIO()
    sink = StdoutSink(StdoutSinkSettings(name="out"), out)
    events = [
        Event(
            cluster="c",
            entry_id=f"{i}-0",
            id=str(i),
            type="viewer.connected",
            subject="v",
            sequence=i,
            body=json.dumps({"n": i}).encode(),
        )
        for i in range(3)
    ]
    assert (await sink.deliver(events)).__class__.__name__ == "Delivered"
    assert out.getvalue().splitlines() == [e.body for e in events]
    out.close()
    closed = await sink.deliver(events)
    assert closed.__class__.__name__ == "Failed"


def _event(body: bytes) -> Event:
    return Event(
        cluster="eu-1",
        entry_id="1-0",
        id="1",
        type="viewer.connected",
        subject="v_1",
        sequence=1,
        body=body,
    )


class _Terminal(io.BytesIO):
    def isatty(self) -> bool:
        return True


async def test_stdout_sink_text_format_writes_a_line_for_people() -> None:
    """`format: text`: one aligned line an event, no IP address; JSON stays the default."""
    assert StdoutSinkSettings(name="out").format == "json"
    record = {
        "id": "v_1",
        "streamKey": "live-1",
        "countryCode": "PL",
        "remoteAddress": "83.11.198.11",
        "healthScore": 92,
        "healthGrade": "Good",
    }
    payload = {
        "type": "viewer.connected",
        "time": "2026-02-05T08:22:40.071Z",
        "cluster": "eu-1",
        "data": {"viewer": record},
    }
    out = io.BytesIO()
    sink = StdoutSink(StdoutSinkSettings(name="out", format="text"), out, environ={})
    assert isinstance(await sink.deliver([_event(json.dumps(payload).encode())]), Delivered)
    line = out.getvalue().decode()
    assert line.endswith("\n")
    assert line.split() == [
        "08:22:40.071", "eu-1", "viewer.connected", "live-1", "v_1", "PL", "92", "Good",
    ]  # fmt: skip
    assert "83.11" not in line


async def test_stdout_sink_text_is_coloured_on_a_terminal_unless_no_color() -> None:
    """On a terminal the text line is coloured; NO_COLOR turns it off; odd bodies pass as is."""
    body = json.dumps({"type": "viewer.connected", "data": {"viewer": {"id": "v_1"}}}).encode()
    settings = StdoutSinkSettings(name="out", format="text")
    coloured, plain = _Terminal(), _Terminal()
    await StdoutSink(settings, coloured, environ={}).deliver([_event(body)])
    await StdoutSink(settings, plain, environ={"NO_COLOR": "1"}).deliver([_event(b"not json")])
    assert b"\x1b[32mviewer.connected" in coloured.getvalue()
    assert plain.getvalue() == b"not json\n"
