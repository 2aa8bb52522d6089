"""The event envelope's bytes: the fast per-poll encoder against a plain reference."""

from __future__ import annotations

import json
import uuid
from typing import TYPE_CHECKING, Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from notifier.events import (
    EVENT_TYPES,
    STREAM_EVENT_TYPES,
    VIEWER_EVENT_TYPES,
    AudienceCrossed,
    AudienceEnded,
    AudienceStarted,
    AudienceSummary,
    Breakdown,
    BreakdownRow,
    Connected,
    Disconnected,
    Envelope,
    HealthChanged,
    Incident,
    Session,
    StreamDegraded,
    StreamRecovered,
    encode_emission,
    encode_event,
    event_id,
    iso_time,
    render_data,
)

if TYPE_CHECKING:
    from notifier.events import Emission, StreamEmission

EPOCH = "3b241101-e2bb-4255-8caf-4136c566a962"
TIME_MS = 1_770_279_760_071  # 2026-02-05T08:22:40.071Z
APP = "c_41pjso2krv6sk1wj"


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
    kind=st.sampled_from(VIEWER_EVENT_TYPES),
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


def stream_reference(
    *, cluster: str, kind: str, subject: str, data: dict[str, Any], sequence: int, epoch: str,
    time_ms: int,
) -> tuple[str, bytes]:  # fmt: skip
    """A stream event as a dict, encoded by msgspec: ``data`` is all of it, no viewer."""
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
        "data": data,
    }
    return identifier, msgspec.json.encode(event)


def encode(emission: Emission | StreamEmission, sequence: int = 900) -> bytes:
    """The event JSON of ``emission`` in cluster eu-1 at 2026-02-05T08:22:40.071Z."""
    _, body = encode_emission(
        emission, cluster="eu-1", sequence=sequence, epoch=EPOCH, time_ms=TIME_MS
    )
    return body


def data_of(body: bytes) -> bytes:
    """The bytes of the event's ``data``: what follows ``"data":``, without the last brace."""
    head, _, data = body.partition(b',"data":')
    assert head.count(b'"data"') == 0
    return data[:-1]


BREAKDOWN = Breakdown(
    country_code=(BreakdownRow("PL", 60, 21), BreakdownRow(None, 40, 6)),
    harness_type=(BreakdownRow("STORM_HLS_VIEWER", 100, 27),),
    device_type=(),
)
BREAKDOWN_JSON = (
    b'"breakdown":{"countryCode":[{"value":"PL","viewers":60,"dropped":21},'
    b'{"value":null,"viewers":40,"dropped":6}],'
    b'"harnessType":[{"value":"STORM_HLS_VIEWER","viewers":100,"dropped":27}],"deviceType":[]}'
)
STREAM_JSON = b'{"stream":{"applicationId":"c_41pjso2krv6sk1wj","streamKey":"live-1"},'


def test_a_stream_event_is_the_envelope_around_stream_and_figures_without_a_viewer() -> None:
    """stream.audience_started, byte for byte: subject the streamKey, the id uuid5 over it."""
    identifier, body = Envelope(cluster="eu-1", epoch=EPOCH, time_ms=TIME_MS).encode_emission(
        AudienceStarted(APP, "live-1", viewers=1, initial=False), 900
    )
    assert identifier == "5f618914-57e5-5296-93f1-5a57f21bba69"
    assert identifier == str(uuid.uuid5(uuid.UUID(EPOCH), "900:stream.audience_started:live-1"))
    assert body == (
        b'{"specversion":"1.0","id":"5f618914-57e5-5296-93f1-5a57f21bba69",'
        b'"source":"/clusters/eu-1","type":"stream.audience_started","subject":"live-1",'
        b'"time":"2026-02-05T08:22:40.071Z","datacontenttype":"application/json",'
        b'"cluster":"eu-1","sequence":900,'
        b'"data":{"stream":{"applicationId":"c_41pjso2krv6sk1wj","streamKey":"live-1"},'
        b'"viewers":1}}'
    )


@pytest.mark.parametrize(
    ("emission", "data"),
    [
        pytest.param(
            AudienceStarted(APP, "live-1", viewers=3, initial=True),
            STREAM_JSON + b'"viewers":3,"initial":true}',
            id="started-initial",
        ),
        pytest.param(
            AudienceCrossed(APP, "live-1", 1000, "up", viewers=1003, peak_viewers=1003,
                            initial=False),
            STREAM_JSON + b'"threshold":1000,"direction":"up","viewers":1003,"peakViewers":1003}',
            id="crossed-up",
        ),
        pytest.param(
            AudienceCrossed(APP, "live-1", 100, "down", viewers=89, peak_viewers=1204,
                            initial=False),
            STREAM_JSON + b'"threshold":100,"direction":"down","viewers":89,"peakViewers":1204}',
            id="crossed-down",
        ),
        pytest.param(
            AudienceCrossed(APP, "live-1", 100, "up", viewers=150, peak_viewers=150, initial=True),
            STREAM_JSON
            + b'"threshold":100,"direction":"up","viewers":150,"peakViewers":150,"initial":true}',
            id="crossed-initial",
        ),
        pytest.param(
            StreamDegraded(APP, "live-1", viewers=110, measured=100, dropped=27, share=0.27,
                           breakdown=BREAKDOWN),
            STREAM_JSON + b'"viewers":110,"measured":100,"dropped":27,"share":0.27,'
            + BREAKDOWN_JSON + b"}",
            id="degraded",
        ),
        pytest.param(
            StreamRecovered(
                APP, "live-1", viewers=110, measured=100, dropped=4, share=0.04,
                breakdown=BREAKDOWN,
                incident=Incident(since=TIME_MS - 7_500_000, duration_ms=7_500_000,
                                  peak_dropped=31, peak_share=1.0),
            ),
            STREAM_JSON + b'"viewers":110,"measured":100,"dropped":4,"share":0.04,'
            + BREAKDOWN_JSON
            + b',"incident":{"since":"2026-02-05T06:17:40.071Z","durationMs":7500000,'
            b'"peakDropped":31,"peakShare":1}}',
            id="recovered",
        ),
        pytest.param(
            AudienceEnded(
                APP, "live-1",
                AudienceSummary(started_at=TIME_MS - 7_530_000, duration_ms=7_530_000,
                                peak_viewers=1204, peak_at=TIME_MS - 3_600_000, sessions=1830,
                                degraded_ms=600_000, ended_degraded=True),
            ),
            STREAM_JSON + b'"summary":{"startedAt":"2026-02-05T06:17:10.071Z",'
            b'"durationMs":7530000,"peakViewers":1204,"peakAt":"2026-02-05T07:22:40.071Z",'
            b'"sessions":1830,"degradedMs":600000,"endedDegraded":true}}',
            id="ended",
        ),
    ],
)  # fmt: skip
def test_each_stream_event_type_has_the_documented_data(
    emission: StreamEmission, data: bytes
) -> None:
    """Each stream type's data, byte for byte: camelCase figures, times in RFC 3339, whole
    shares as ints, ``initial`` only when true; the body is the reference encoding."""
    body = encode(emission)
    assert data_of(body) == data
    assert msgspec.json.decode(data) == render_data(emission)
    expected = stream_reference(
        cluster="eu-1", kind=emission.type, subject="live-1", data=render_data(emission),
        sequence=900, epoch=EPOCH, time_ms=TIME_MS,
    )  # fmt: skip
    assert (
        encode_emission(emission, cluster="eu-1", sequence=900, epoch=EPOCH, time_ms=TIME_MS)
        == expected
    )


def test_every_event_type_is_listed_once_viewer_types_first() -> None:
    """The nine types: the four viewer types as before, then the five stream types."""
    assert (*VIEWER_EVENT_TYPES, *STREAM_EVENT_TYPES) == EVENT_TYPES
    assert VIEWER_EVENT_TYPES == (
        "viewer.connected",
        "viewer.disconnected",
        "viewer.health_dropped",
        "viewer.health_recovered",
    )
    assert STREAM_EVENT_TYPES == (
        "stream.audience_started",
        "stream.audience_crossed",
        "stream.health_degraded",
        "stream.health_recovered",
        "stream.audience_ended",
    )


RECORD = b'{"id":"v_1","streamKey":"live-1","healthScore":83}'


@pytest.mark.parametrize("initial", [False, True])
def test_the_connected_fast_path_is_the_general_encoder(initial: bool) -> None:
    """viewer.connected skips render_data, yet gives the bytes of the general encoder and the
    reference; ``data.initial: true`` follows the record only when ``initial``."""
    emission = Connected("v_1", RECORD, initial=initial)
    envelope = Envelope(cluster="eu-1", epoch=EPOCH, time_ms=TIME_MS)
    fast = envelope.encode_emission(emission, 41)
    assert fast == envelope.encode("viewer.connected", "v_1", RECORD, render_data(emission), 41)
    assert fast == reference(
        cluster="eu-1", kind="viewer.connected", subject="v_1", record=RECORD,
        data=render_data(emission), sequence=41, epoch=EPOCH, time_ms=TIME_MS,
    )  # fmt: skip
    assert data_of(fast[1]) == b'{"viewer":' + RECORD + (b',"initial":true}' if initial else b"}")


def test_viewer_event_ids_do_not_change() -> None:
    """A viewer event's id is still uuid5 over "sequence:type:viewer id", initial or not."""
    expected = str(uuid.uuid5(uuid.UUID(EPOCH), "41:viewer.connected:v_1"))
    for initial in (False, True):
        identifier, _ = encode_emission(
            Connected("v_1", RECORD, initial=initial),
            cluster="eu-1", sequence=41, epoch=EPOCH, time_ms=TIME_MS,
        )  # fmt: skip
        assert identifier == expected == event_id(EPOCH, 41, "viewer.connected", "v_1")


def session(**changes: Any) -> Session:
    """A two-hour session with three measured polls and one drop, with ``changes``."""
    fields: dict[str, Any] = {
        "connected_at": TIME_MS - 7_200_000,
        "duration_ms": 7_190_000,
        "polls": 720,
        "health_min": 31.0,
        "health_max": 95.0,
        "health_avg": 81.23456,
        "measured_polls": 700,
        "drops": 1,
        "degraded_ms": 40_000,
        "complete": True,
    } | changes
    return Session(**fields)


@pytest.mark.parametrize(
    ("summary", "data"),
    [
        pytest.param(None, b'"lastSeenAt":"2026-02-05T08:22:30.071Z"}', id="no-session"),
        pytest.param(
            session(),
            b'"lastSeenAt":"2026-02-05T08:22:30.071Z","session":{'
            b'"connectedAt":"2026-02-05T06:22:40.071Z","durationMs":7190000,"polls":720,'
            b'"health":{"min":31,"max":95,"avg":81.23,"measuredPolls":700},'
            b'"drops":1,"degradedMs":40000,"complete":true}}',
            id="session",
        ),
        pytest.param(
            session(health_min=30.5, health_avg=80.0, complete=False),
            b'"lastSeenAt":"2026-02-05T08:22:30.071Z","session":{'
            b'"connectedAt":"2026-02-05T06:22:40.071Z","durationMs":7190000,"polls":720,'
            b'"health":{"min":30.5,"max":95,"avg":80,"measuredPolls":700},'
            b'"drops":1,"degradedMs":40000,"complete":false}}',
            id="fractions-and-incomplete",
        ),
        pytest.param(
            session(health_min=None, health_max=None, health_avg=None, measured_polls=0,
                    drops=0, degraded_ms=0),
            b'"lastSeenAt":"2026-02-05T08:22:30.071Z","session":{'
            b'"connectedAt":"2026-02-05T06:22:40.071Z","durationMs":7190000,"polls":720,'
            b'"health":null,"drops":0,"degradedMs":0,"complete":true}}',
            id="never-measured",
        ),
    ],
)  # fmt: skip
def test_disconnected_carries_the_session_summary(summary: Session | None, data: bytes) -> None:
    """data.session after lastSeenAt: whole scores as ints, avg to 2 decimals, health null when
    no poll had data; omitted when the emission has none."""
    emission = Disconnected("v_1", RECORD, last_seen_at=TIME_MS - 10_000, session=summary)
    assert data_of(encode(emission)) == b'{"viewer":' + RECORD + b"," + data


def test_health_events_are_encoded_as_before() -> None:
    """viewer.health_dropped's data is unchanged by the new types."""
    emission = HealthChanged("viewer.health_dropped", "v_1", RECORD, 88.0, "Very Good", 50.0)
    assert data_of(encode(emission)) == (
        b'{"viewer":' + RECORD + b',"previous":{"healthScore":88,"healthGrade":"Very Good"},'
        b'"threshold":50}'
    )


_ROWS = st.lists(
    st.builds(BreakdownRow, st.none() | st.text(max_size=12), st.integers(0, 10**6),
              st.integers(0, 10**6)),
    max_size=5,
).map(tuple)  # fmt: skip
_BREAKDOWNS = st.builds(Breakdown, _ROWS, _ROWS, _ROWS)
_KEYS = {"application_id": st.text(max_size=20), "stream_key": st.text(max_size=40)}
_COUNT = st.integers(0, 10**7)
_SHARE = st.floats(0, 1)
_STREAM_EMISSIONS = st.one_of(
    st.builds(AudienceStarted, **_KEYS, viewers=_COUNT, initial=st.booleans()),
    st.builds(AudienceCrossed, **_KEYS, threshold=st.integers(1, 10**6),
              direction=st.sampled_from(["up", "down"]), viewers=_COUNT, peak_viewers=_COUNT,
              initial=st.booleans()),
    st.builds(StreamDegraded, **_KEYS, viewers=_COUNT, measured=_COUNT, dropped=_COUNT,
              share=_SHARE, breakdown=_BREAKDOWNS),
    st.builds(StreamRecovered, **_KEYS, viewers=_COUNT, measured=_COUNT, dropped=_COUNT,
              share=_SHARE, breakdown=_BREAKDOWNS,
              incident=st.builds(Incident, st.integers(0, 4 * 10**12), _COUNT, _COUNT, _SHARE)),
    st.builds(AudienceEnded, **_KEYS,
              summary=st.builds(AudienceSummary, st.integers(0, 4 * 10**12), _COUNT, _COUNT,
                                st.integers(0, 4 * 10**12), _COUNT, _COUNT, st.booleans())),
)  # fmt: skip


@settings(max_examples=200, deadline=None)
@given(
    emission=_STREAM_EMISSIONS,
    cluster=st.from_regex(r"[a-z0-9_-]{1,40}", fullmatch=True),
    sequence=st.integers(1, 2**53),
)
def test_any_stream_emission_encodes_like_the_reference(
    emission: StreamEmission, cluster: str, sequence: int
) -> None:
    """Any stream emission (quotes and unicode in its keys): the reference's bytes and id, the
    streamKey as subject, ``data.stream`` naming the stream, and one of the stream types."""
    encoded = encode_emission(
        emission, cluster=cluster, sequence=sequence, epoch=EPOCH, time_ms=TIME_MS
    )
    assert encoded == stream_reference(
        cluster=cluster, kind=emission.type, subject=emission.stream_key,
        data=render_data(emission), sequence=sequence, epoch=EPOCH, time_ms=TIME_MS,
    )  # fmt: skip
    event = json.loads(encoded[1])
    assert event["type"] in STREAM_EVENT_TYPES
    assert event["subject"] == emission.stream_key
    assert event["data"]["stream"] == {
        "applicationId": emission.application_id,
        "streamKey": emission.stream_key,
    }
