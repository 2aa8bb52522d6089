"""The event envelope's bytes: the fast per-poll encoder against a plain reference."""

from __future__ import annotations

import json
import uuid
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.events import EVENT_TYPES, Envelope, encode_event, event_id, iso_time


def reference(
    *, cluster: str, kind: str, subject: str, record: bytes, data: dict[str, Any], sequence: int,
    epoch: str, time_ms: int,
) -> tuple[str, bytes]:  # fmt: skip
    """The envelope as a dict, encoded by msgspec: the straightforward way."""
    identifier = str(uuid.uuid5(uuid.UUID(epoch), f"{sequence}:{kind}:{subject}"))
    event = {
        "specversion": "1.0",
        "id": identifier,
        "source": f"/clusters/{cluster}",
        "type": kind,
        "subject": subject,
        "time": iso_time(time_ms),
        "datacontenttype": "application/json",
        "cluster": cluster,
        "sequence": sequence,
        "data": {"viewer": msgspec.Raw(record), **data},
    }
    return identifier, msgspec.json.encode(event)


records = st.dictionaries(st.text(max_size=8), st.one_of(st.integers(), st.text(max_size=20)))
datas = st.sampled_from(
    [
        {},
        {"lastSeenAt": "2026-02-05T08:22:40.071Z"},
        {"previous": {"healthScore": 82, "healthGrade": "Very Good"}, "threshold": 50},
        {"previous": {"healthScore": None, "healthGrade": None}, "threshold": 70.5},
    ]
)


@settings(max_examples=300, deadline=None)
@given(
    cluster=st.from_regex(r"[a-z0-9_-]{1,40}", fullmatch=True),
    kind=st.sampled_from(EVENT_TYPES),
    subject=st.text(max_size=40),
    record=records,
    data=datas,
    sequence=st.integers(1, 2**53),
    time_ms=st.integers(0, 4_102_444_800_000),
)
def test_the_fast_envelope_is_byte_for_byte_the_reference(  # noqa: PLR0917 - hypothesis
    cluster: str,
    kind: str,
    subject: str,
    record: dict[str, Any],
    data: dict[str, Any],
    sequence: int,
    time_ms: int,
) -> None:
    """Any cluster, type, subject (quotes, unicode), record, data, sequence: the same bytes
    and the same uuid5 id as the dict encoding; and the JSON parses back to the same event."""
    epoch = str(uuid.uuid4())
    raw = json.dumps(record).encode()
    envelope = Envelope(cluster=cluster, epoch=epoch, time_ms=time_ms)
    fast = envelope.encode(kind, subject, raw, data, sequence)  # type: ignore[arg-type]
    expected = reference(
        cluster=cluster, kind=kind, subject=subject, record=raw, data=data, sequence=sequence,
        epoch=epoch, time_ms=time_ms,
    )  # fmt: skip
    assert fast == expected
    assert event_id(epoch, sequence, kind, subject) == expected[0]
    kw: dict[str, Any] = {"cluster": cluster, "event_type": kind, "viewer_id": subject}
    assert (
        encode_event(**kw, record=raw, data=data, sequence=sequence, epoch=epoch, time_ms=time_ms)
        == expected
    )
    assert json.loads(fast[1])["data"]["viewer"] == record
