"""The stdout sink: one JSON line per event, exactly as in the stream."""

from __future__ import annotations

import io
import json

from notifier.events import Event
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
