"""Decoding Storm API bodies: verbatim records, the fields detection needs, clear errors."""

from __future__ import annotations

import json

import pytest

from notifier.errors import StormSchemaError
from notifier.storm.decode import (
    MalformedBody,
    Viewer,
    decode_error_message,
    decode_found,
    decode_page,
    decode_viewer,
    describe_status,
)

RECORD = {
    "id": "v_xh69zeigml96ts7p",
    "state": "PUBLISHED",
    "harnessType": "STORM_MSE_VIEWER",
    "applicationId": "c_y7q39097ml5glmh6",
    "streamKey": "123",
    "remoteAddress": "203.0.113.7",
    "deviceType": "DESKTOP",
    "osName": "Windows 10/11",
    "browserName": "Chrome",
    "countryCode": "PL",
    "countryName": "Poland",
    "startTime": 1770279702104,
    "duration": 57701,
    "inBandwidth": 63,
    "outBandwidth": 443234,
    "inTotalBytes": 4083,
    "outTotalBytes": 26007754,
    "healthScore": 100,
    "healthGrade": "Very Good",
}


def body(rows: list[object], **data: object) -> bytes:
    return json.dumps({"data": {**data, "list": rows}, "meta": {"executionTime": 1}}).encode()


def fields(viewer: Viewer) -> tuple[str, float | None, str | None, bytes]:
    """A viewer's fields, its record as bytes (a list page's is a view of the body)."""
    return viewer.id, viewer.health, viewer.health_grade, viewer.record_bytes()


def test_records_travel_verbatim_with_unknown_fields() -> None:
    """Each viewer keeps its record byte for byte, including fields we do not know."""
    record = {**RECORD, "region": {"zone": "eu-central", "rack": 7}, "healthScore": 93.5}
    raw = json.dumps({"data": {"list": [record]}}, separators=(", ", ": ")).encode()
    page = decode_page(raw)
    (viewer,) = page.viewers
    assert viewer.record_bytes() == json.dumps(record, separators=(", ", ": ")).encode()
    assert viewer.record() == record
    assert (viewer.id, viewer.health, viewer.health_grade) == (
        "v_xh69zeigml96ts7p",
        93.5,
        "Very Good",
    )


def test_paging_facts_are_read_and_may_be_missing() -> None:
    """Paging fields are optional; numbers sent as strings are accepted."""
    page = decode_page(
        body([RECORD], totalItems=3, itemsPerPage="1", totalPages=3, currentPage=2, hasNext="true")
    )
    assert (page.total_items, page.items_per_page, page.total_pages) == (3, 1, 3)
    assert (page.current_page, page.has_next) == (2, True)
    bare = decode_page(body([RECORD]))
    assert (bare.total_items, bare.total_pages, bare.has_next) == (None, None, None)
    assert decode_page(b'{"data": {"list": null, "totalItems": 0}}').viewers == []


@pytest.mark.parametrize(
    ("score", "grade", "health"),
    [
        (100, "Very Good", 100.0),
        (0, "No Data", None),
        (0, None, None),
        (0, "Very Bad", 0.0),
        (55, "No Data", None),
        ("42", "Bad", 42.0),
        ("n/a", "Bad", None),
        (None, None, None),
        (True, "Good", None),
    ],
)
def test_health_is_none_when_the_server_has_no_measurement(
    score: object, grade: str | None, health: float | None
) -> None:
    """ "No Data", or score 0 without a grade, or no usable score: no measurement."""
    record = {"id": "v_1", "healthScore": score}
    if grade is not None:
        record["healthGrade"] = grade
    (viewer,) = decode_page(body([record])).viewers
    assert viewer.health == health


@pytest.mark.parametrize(
    ("score", "grade", "health"),
    [
        (0, "NO DATA", None),
        (0, "No data", None),
        (0, "no_data", None),
        (0, "no-data", None),
        (0, " No  Data ", None),
        (0, "", None),
        (0, "   ", None),
        (73, "NO_DATA", None),
        (0, "Very Bad", 0.0),
        (0, "Nodal", 0.0),
        (12, "", 12.0),
    ],
)
def test_no_data_is_recognised_in_any_spelling(
    score: object, grade: str, health: float | None
) -> None:
    """ "No Data" matches ignoring case, spaces and underscores; a 0 needs a real grade."""
    (viewer,) = decode_page(
        body([{"id": "v_1", "healthScore": score, "healthGrade": grade}])
    ).viewers
    assert viewer.health == health
    assert viewer.health_grade == grade


def test_a_missing_list_is_a_schema_error_only_when_viewers_are_reported() -> None:
    """No list (or a null one) beside totalItems > 0 is misshapen; beside 0 or nothing, empty."""
    for raw in (b'{"data": {"totalItems": 500}}', b'{"data": {"list": null, "totalItems": 3}}'):
        with pytest.raises(StormSchemaError, match=r"no \$\.data\.list but reports totalItems"):
            decode_page(raw)
    for raw in (
        b'{"data": {"list": null, "totalItems": 0}}',
        b'{"data": {"list": null}}',
        b'{"data": {}}',
    ):
        assert decode_page(raw).viewers == []


def test_batch_lookup_bodies_yield_the_found_records() -> None:
    """data.found decodes to viewers like list items; a wrong shape or non-JSON is reported."""
    raw = json.dumps({"data": {"found": [RECORD], "notFound": ["v_gone"]}}).encode()
    assert list(map(fields, decode_found(raw))) == list(
        map(fields, decode_page(body([RECORD])).viewers)
    )
    assert decode_found(b'{"data": {"found": null, "notFound": []}}') == []
    with pytest.raises(StormSchemaError, match="batch lookup shape"):
        decode_found(b'{"found": []}')
    with pytest.raises(StormSchemaError, match=r"\$\.data\.found\[1\] has no id"):
        decode_found(json.dumps({"data": {"found": [RECORD, {"healthScore": 3}]}}).encode())
    with pytest.raises(MalformedBody):
        decode_found(b"<html>")


def test_missing_optional_fields_are_tolerated() -> None:
    """A record with only an id is a viewer with no health data."""
    (viewer,) = decode_page(body([{"id": "v_1", "healthGrade": None, "streamKey": None}])).viewers
    assert (viewer.id, viewer.health, viewer.health_grade) == ("v_1", None, None)


def test_numeric_ids_are_refused() -> None:
    """An integer id is not turned into a string ("0123" and 123 would be two viewers)."""
    with pytest.raises(StormSchemaError, match=r"\$\.data\.list\[0\] has an id of type number"):
        decode_page(body([{"id": 12345}]))


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        ([RECORD, {"healthScore": 3}], r"\$.data.list\[1\] has no id"),
        ([{"id": ""}], "has an empty id"),
        ([{"id": ["x"]}], "has an id of type array"),
        (["v_1"], "Expected `object`"),
    ],
)
def test_schema_violations_are_clear(rows: list[object], message: str) -> None:
    """A viewer without an id, or a list of non-objects, is a schema error that says where."""
    with pytest.raises(StormSchemaError, match=message):
        decode_page(body(rows))


def test_a_body_without_data_is_a_schema_error() -> None:
    """JSON of the wrong shape is a schema error, not a crash."""
    with pytest.raises(StormSchemaError, match="missing required field `data`"):
        decode_page(b'{"message": "ok"}')
    with pytest.raises(StormSchemaError, match="totalPages"):
        decode_page(body([], totalPages="many"))


@pytest.mark.parametrize(
    "raw", [b"<html><body>502</body></html>", b'{"data": {"list": [{"id"', b""]
)
def test_non_json_is_malformed(raw: bytes) -> None:
    """HTML pages, truncated and empty bodies are malformed (worth a retry)."""
    with pytest.raises(MalformedBody):
        decode_page(raw)


def test_single_records_decode_like_list_items() -> None:
    """A batch lookup's record decodes to the same Viewer."""
    raw = json.dumps(RECORD).encode()
    assert fields(decode_viewer(raw)) == fields(decode_page(body([RECORD])).viewers[0])


def test_error_messages_are_one_short_line() -> None:
    """Error bodies yield their message on one line, or None."""
    assert decode_error_message(b'{"message": "Too\\nMany  Requests", "timestamp": 1}') == (
        "Too Many Requests"
    )
    assert decode_error_message(b"<html>") is None
    assert decode_error_message(b'{"message": 5}') is None
    assert len(decode_error_message(json.dumps({"message": "x" * 5000}).encode()) or "") == 200
    assert describe_status(503, b'{"message": "busy"}') == "HTTP 503: busy"
    assert describe_status(502, b"<html>") == "HTTP 502"
