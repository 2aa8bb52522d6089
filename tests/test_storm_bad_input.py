"""A Storm server that answers badly (issue 14, item 2): every such poll is incomplete or correct.

Never an invented connect or disconnect: each bad answer below ends as an incomplete poll that
says why (the ``storm.poll_incomplete`` line, ``poller.storm_unavailable``, and
``notifier_poll_incomplete_total{reason}``) and writes nothing, or as a complete poll whose events
are exactly the true ones. The servers are real aiohttp servers on 127.0.0.1, the poller a real
one over a real redis-server (``testkit.bad_storm``). At the end, generated bodies (hypothesis,
``testkit.storm_bodies``) go through decode, paging and the rules against an oracle, and through
the real client: nothing escapes but an incomplete poll.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.detect.rules import Track, detect
from notifier.errors import STORM_ERROR_KINDS, StormSchemaError
from notifier.storm import StormClient, create_session
from notifier.storm.decode import MAX_ID_LENGTH, MalformedBody, Page, Viewer, decode_page
from notifier.storm.paging import EXTRA_PAGES, Tally
from testkit.bad_storm import KEYS, MEMORY_PROBE, PLAIN, poller_run
from testkit.storm_bodies import BodyServer, any_body, valid_bodies

from .conftest import FAST_BACKOFF, cluster_settings, scripted_storm

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from redis.asyncio import Redis

    from notifier.storm import Poll
    from testkit.bad_storm import PollerRun

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MIB = 1024 * 1024


def _page(rows: list[Any], **data: Any) -> web.Response:
    return web.json_response({"data": {**data, "list": rows}})


def _rows(start: int, count: int) -> list[dict[str, Any]]:
    return [{"id": f"v_{i:04d}", "healthScore": 90} for i in range(start, start + count)]


async def _run(viewers: Handler, redis: Redis, cycles: int = 1, **cluster: Any) -> PollerRun:
    """``cycles`` poll cycles against a server answering the viewer list with ``viewers``."""
    cluster = {"auth": {"token": "t"}, "poll_budget": "2s", "timeout": "1s", **cluster}
    async with scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url:
        settings = cluster_settings(url, **cluster)
        async with poller_run(url, redis, settings=settings) as run:
            for _ in range(cycles):
                await run.cycle()
    assert await run.events() == []
    assert await run.committed() == 0
    return run


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


# --- not the documented body ---------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_an_html_page_with_status_200_is_incomplete_malformed(redis: Redis) -> None:
    """A login page served with 200 (a proxy in front of Storm) is retried, then incomplete."""
    served = Counter[str]()

    async def viewers(_request: web.Request) -> web.Response:
        served["html"] += 1
        return web.Response(text="<html><body>Sign in</body></html>", content_type="text/html")

    run = await _run(viewers, redis, cycles=2, poll_budget="300ms")
    error = run.assert_incomplete("malformed", polls=2)
    assert error.startswith("page 1: an HTML page instead of JSON (gave up after")
    assert served["html"] >= 4  # retried within each poll's budget


@pytest.mark.parametrize(
    ("body", "reason", "says"),
    [
        (b'{"data": []}', "schema", "Expected `object`, got `array`"),
        (b'{"data": {"list": {"id": "v_1"}}}', "schema", "Expected `array | null`, got `object`"),
        (b'{"data": {"list": [], "totalItems": "many"}}', "schema", "totalItems"),
        (b'{"data": {"list": ["v_1"]}}', "schema", "Expected `object`"),
        (b"[1, 2]", "schema", "Expected `object`"),
        (b"null", "schema", "Expected `object`"),
        (b'{"data": {"list": [{"id": true}]}}', "viewer_id", "list[0] has an id of type boolean"),
        (b'{"data": {"list": [{"id": {"v": 1}}]}}', "viewer_id", "has an id of type object"),
        (b"{}", "schema", "missing required field `data`"),
        (b'{"data": {"list": [{"healthScore": 5}]}}', "schema", "list[0] has no id"),
        (b'{"data": {"totalItems": 3}}', "schema", "no $.data.list but reports totalItems 3"),
    ],
    ids=[
        "data-array",
        "list-object",
        "total-text",
        "rows-strings",
        "top-array",
        "null",
        "id-bool",
        "id-object",
        "no-data",
        "no-id",
        "no-list",
    ],
)
@pytest.mark.timeout(30)
async def test_wrong_types_and_missing_fields_are_incomplete(
    redis: Redis, body: bytes, reason: str, says: str
) -> None:
    """JSON of the wrong shape: retried once, then incomplete with the path and what was found."""
    served = Counter[str]()

    async def viewers(_request: web.Request) -> web.Response:
        served["bad"] += 1
        return web.Response(body=body, content_type="application/json")

    run = await _run(viewers, redis)
    assert says in run.assert_incomplete(reason)
    assert served["bad"] == 2  # SCHEMA_ATTEMPTS


@pytest.mark.timeout(30)
async def test_fields_the_rules_can_do_without_are_tolerated(redis: Redis) -> None:
    """A record with only an id, or a score of an odd type: complete, no measurement invented."""
    rows = [{"id": "v_a"}, {"id": "v_b", "healthScore": {"x": 1}, "healthGrade": 7}]

    async def viewers(_request: web.Request) -> web.Response:
        return _page(rows, totalItems=2)

    async with scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url:
        settings = cluster_settings(url, auth={"token": "t"})
        async with poller_run(url, redis, settings=settings) as run:
            await run.cycle()
    events = await run.events()
    assert [(e["type"], e["subject"]) for e in events] == [
        ("viewer.connected", "v_a"),
        ("viewer.connected", "v_b"),
    ]
    assert [e["data"]["viewer"] for e in events] == rows  # verbatim


# --- paging that lies --------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_has_next_forever_past_lying_totals_is_cut_at_extra_pages(redis: Redis) -> None:
    """totalItems 4 (2 pages), yet hasNext forever with fresh rows: incomplete, not endless."""
    served = Counter[str]()

    async def viewers(request: web.Request) -> web.Response:
        number = int(request.query["page"])
        served["pages"] += 1
        return _page(_rows(number * 2, 2), totalItems=4, itemsPerPage=2, hasNext=True)

    run = await _run(viewers, redis, page_size=2, poll_budget="20s")
    error = run.assert_incomplete("paging")
    assert error == (
        f"page {2 + EXTRA_PAGES} still says hasNext, {EXTRA_PAGES} pages past the 2 its totals"
        " report (totalItems 4, itemsPerPage 2)"
    )
    assert served["pages"] == 2 + EXTRA_PAGES


@pytest.mark.timeout(30)
async def test_has_next_forever_without_totals_ends_at_the_poll_budget(redis: Redis) -> None:
    """No totals to hold the server to: fresh pages forever stop at poll_budget (``budget``)."""
    served = Counter[str]()

    async def viewers(request: web.Request) -> web.Response:
        served["pages"] += 1
        return _page(_rows(int(request.query["page"]) * 2, 2), hasNext=True)

    run = await _run(viewers, redis, page_size=2, poll_budget="300ms")
    assert (
        run.assert_incomplete("budget") == "the poll did not finish within the poll budget (300ms)"
    )
    assert served["pages"] > 2


# --- too much, cut off, too slow -----------------------------------------------------------------


def _streaming(sent: Counter[str], *, declare: bool) -> Handler:
    """A 200 MB answer written 1 MiB at a time until the client hangs up; ``sent`` counts."""
    total, chunk = 200 * MIB, b" " * MIB

    async def viewers(request: web.Request) -> web.StreamResponse:
        sent["requests"] += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        if declare:
            response.content_length = total
        await response.prepare(request)
        try:
            while sent["bytes"] < total:
                await response.write(chunk)
                sent["bytes"] += len(chunk)
        except (ConnectionError, RuntimeError):
            pass
        finally:
            sent["done"] += 1
        return response

    return viewers


@pytest.mark.parametrize("declare", [True, False], ids=["content-length", "chunked"])
@pytest.mark.timeout(60)
async def test_a_body_over_max_page_bytes_is_not_read_whole(redis: Redis, declare: bool) -> None:
    """200 MB: refused on its Content-Length, or cut at max_page_bytes (1 MiB) while streaming;
    not retried, and the server got to send only a small part of it."""
    sent = Counter[str]()
    run = await _run(_streaming(sent, declare=declare), redis, max_page_bytes=MIB, timeout="20s")
    error = run.assert_incomplete("too_large")
    if declare:
        assert error == (
            f"page 1: the answer declares {200 * MIB} bytes, over max_page_bytes ({MIB}): not read"
        )
    else:
        assert error == f"page 1: the answer ran past max_page_bytes ({MIB} bytes): stopped reading"
    await _until(lambda: sent["done"] == 1)
    assert sent["requests"] == 1
    assert sent["bytes"] < 32 * MIB


@pytest.mark.parametrize(
    ("limit", "most_mib"), [("default", 100), (str(8 * MIB), 40)], ids=["64MiB", "8MiB"]
)
@pytest.mark.timeout(120)
def test_memory_stays_bounded_while_a_200_mb_body_streams(limit: str, most_mib: float) -> None:
    """A child process polls a 200 MB chunked body: its peak memory (VmHWM) grows by about the
    limit, far below 200 MB. A limit above the body shows the probe sees the difference."""
    probe = _probe(limit)
    assert probe["reason"] == "too_large", probe
    assert probe["growth_mib"] < most_mib, probe
    assert probe["sent_mib"] < 200, probe


@pytest.mark.timeout(120)
def test_the_memory_probe_sees_a_body_read_whole() -> None:
    """The control: with max_page_bytes over 200 MB the body is read, and the peak shows it."""
    probe = _probe(str(256 * MIB))
    assert probe["complete"], probe
    assert probe["growth_mib"] > 190, probe


def _probe(limit: str) -> dict[str, Any]:
    done = subprocess.run(
        [sys.executable, "-c", MEMORY_PROBE, limit],
        capture_output=True,
        text=True,
        timeout=100,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


@pytest.mark.timeout(30)
async def test_connection_resets_mid_body_are_retried_then_incomplete(redis: Redis) -> None:
    """A server that resets every connection halfway through the body: retried, incomplete."""
    served = Counter[str]()

    async def viewers(request: web.Request) -> web.StreamResponse:
        served["resets"] += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        response.content_length = 1000
        await response.prepare(request)
        await response.write(b'{"data": {"list": [{"id": "v_1"}')
        assert request.transport is not None
        request.transport.abort()  # RST, not a clean close
        return response

    run = await _run(viewers, redis, poll_budget="300ms")
    error = run.assert_incomplete("unavailable")
    assert error.startswith("page 1: ")
    assert "gave up after" in error
    assert served["resets"] >= 2


@pytest.mark.timeout(30)
async def test_a_slow_loris_server_is_cut_by_the_timeout_and_the_budget(redis: Redis) -> None:
    """One byte every 20 ms forever: each request ends at ``timeout``, the poll at the budget."""
    served = Counter[str]()

    async def viewers(request: web.Request) -> web.StreamResponse:
        served["drips"] += 1
        response = web.StreamResponse(headers={"Content-Type": "application/json"})
        await response.prepare(request)
        try:
            while True:
                await response.write(b" ")
                await asyncio.sleep(0.02)  # the fault itself: a server that drips
        except (ConnectionError, RuntimeError):
            return response

    began = asyncio.get_running_loop().time()
    run = await _run(viewers, redis, timeout="200ms", poll_budget="700ms")
    assert asyncio.get_running_loop().time() - began < 5
    error = run.assert_incomplete("timeout")
    assert "no answer within 200ms" in error
    assert served["drips"] >= 2


# --- viewer ids ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
async def test_a_number_id_never_becomes_the_string_id(redis: Redis) -> None:
    """ "0123", then 123, then "0123": one connect, and the middle poll incomplete."""
    answers: Iterator[list[dict[str, Any]]] = iter(
        [[{"id": "0123"}], [{"id": 123}], [{"id": 123}], [{"id": "0123"}]]
    )

    async def viewers(_request: web.Request) -> web.Response:
        rows = next(answers)
        return _page(rows, totalItems=len(rows), hasNext=False)

    async with (
        scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url,
        poller_run(url, redis, settings=cluster_settings(url, auth={"token": "t"})) as run,
    ):
        for _ in range(3):
            await run.cycle()
    assert [(e["type"], e["subject"]) for e in await run.events()] == [("viewer.connected", "0123")]
    assert run.incomplete("viewer_id") == 1
    (line,) = run.lines("storm.poll_incomplete")
    assert line["error"] == (
        "viewer record at $.data.list[0] has an id of type number (the API documents a string)"
    )
    assert await run.committed() == 2


ODD_IDS = [
    "v_ü日本🎥",
    "a:b/c?d#e",
    "with space",
    " leading",
    "zero\u200bwidth",
    "nbsp\u00a0",
    "{sim}",
    "x" * MAX_ID_LENGTH,
    '"quoted"\\',
    "0123",
]


@pytest.mark.timeout(30)
async def test_unusual_string_ids_round_trip_exactly(redis: Redis) -> None:
    """Unicode, ':' and '/', spaces, 256 characters: the same string in Redis and the events,
    connected then disconnected, once each."""
    answers = iter([[{"id": i, "healthScore": 80} for i in ODD_IDS], []])

    async def viewers(_request: web.Request) -> web.Response:
        rows = next(answers)
        return _page(rows, totalItems=len(rows), hasNext=False)

    async with (
        scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url,
        poller_run(url, redis, settings=cluster_settings(url, auth={"token": "t"})) as run,
    ):
        await run.cycle()
        fields: list[bytes] = await redis.hkeys(KEYS.viewers)  # type: ignore[assignment]
        await run.cycle()
    assert sorted(f.decode() for f in fields) == sorted(ODD_IDS)
    events = await run.events()
    assert [(e["type"], e["subject"]) for e in events] == [
        *(("viewer.connected", i) for i in ODD_IDS),
        *(("viewer.disconnected", i) for i in ODD_IDS),
    ]
    assert all(e["data"]["viewer"]["id"] == e["subject"] for e in events)


@pytest.mark.parametrize(
    ("viewer_id", "reason", "says"),
    [
        ("", "viewer_id", "has an empty id"),
        ("x" * (MAX_ID_LENGTH + 1), "viewer_id", f"an id of {MAX_ID_LENGTH + 1} characters"),
        ("a\nb", "viewer_id", "control character U+000A"),
        ("a\x00b", "viewer_id", "control character U+0000"),
        ("\x7f", "viewer_id", "control character U+007F"),
        ("a\x85b", "viewer_id", "control character U+0085"),
        ("\ud800", "malformed", "body is not valid JSON"),
    ],
    ids=["empty", "long", "newline", "nul", "del", "c1", "lone-surrogate"],
)
@pytest.mark.timeout(30)
async def test_refused_ids_make_the_poll_incomplete(
    redis: Redis, viewer_id: str, reason: str, says: str
) -> None:
    """Ids the notifier will not carry: incomplete, and the other viewers are not connected."""

    async def viewers(_request: web.Request) -> web.Response:
        return _page([{"id": "v_fine"}, {"id": viewer_id}])

    run = await _run(viewers, redis, poll_budget="300ms")
    assert says in run.assert_incomplete(reason)


@pytest.mark.timeout(30)
async def test_an_id_twice_in_one_page_is_incomplete(redis: Redis) -> None:
    """One page listing a viewer twice with different records is a broken answer, not drift."""

    async def viewers(_request: web.Request) -> web.Response:
        return _page([{"id": "v_1", "healthScore": 90}, {"id": "v_1", "healthScore": 10}])

    run = await _run(viewers, redis)
    assert run.assert_incomplete("viewer_id") == "page 1 lists viewer 'v_1' twice"


def _viewer(viewer_id: str, score: int) -> Viewer:
    raw = json.dumps({"id": viewer_id, "healthScore": score}).encode()
    return Viewer(viewer_id, float(score), None, raw)


def _tally_page(*viewers: Viewer) -> Page:
    return Page(list(viewers), 6, 2, 3, None, None)


@pytest.mark.parametrize("order", [(2, 3), (3, 2)], ids=["in-order", "page-3-first"])
def test_a_viewer_drift_returns_twice_keeps_the_later_pages_record(order: tuple[int, int]) -> None:
    """Across pages (drift), the record of the later page wins whichever arrived first."""
    pages = {
        2: _tally_page(_viewer("v_moved", 20), _viewer("v_b", 90)),
        3: _tally_page(_viewer("v_c", 90), _viewer("v_moved", 80)),
    }
    tally = Tally()
    tally.start_pass()
    tally.add(_tally_page(_viewer("v_a", 90), _viewer("v_x", 90)), 1, 2)
    for number in order:
        tally.add(pages[number], number, 2)
    assert tally.viewers["v_moved"].health == 80
    assert (len(tally.viewers), tally.duplicates) == (5, 1)
    tally.add(_tally_page(_viewer("v_d", 30), _viewer("v_e", 90)), 5, 2)  # after the first repeat
    tally.add(_tally_page(_viewer("v_d", 60), _viewer("v_f", 90)), 4, 2)
    assert tally.viewers["v_d"].health == 30  # page 5's, read before page 4
    assert (len(tally.viewers), tally.duplicates) == (8, 2)


# --- generated bodies ---------------------------------------------------------------------------

TRACKED = st.lists(st.sampled_from(["v_1", "0123", "123", "a:b/c", "x", "gone"]), unique=True)


def _detected(raw: bytes, tracked_ids: list[str]) -> dict[str, list[str]] | None:
    """Decode, count in and detect one body from ``tracked_ids``: each event type's subjects;
    None if the body is refused (the only exceptions allowed are the incomplete-poll ones)."""
    try:
        page = decode_page(raw)
        tally = Tally()
        tally.start_pass()
        tally.add(page, 1, None)
    except (MalformedBody, StormSchemaError):
        return None
    for viewer in page.viewers:  # read as sent: never a converted or invented id
        assert json.loads(viewer.raw)["id"] == viewer.id
    tracked = {vid: Track(record=b"{}", seen_at=0) for vid in tracked_ids}
    detection = detect(tracked, tally.viewers, polled_at=1, settings=PLAIN)
    subjects: dict[str, list[str]] = {}
    for emission in detection.emissions:
        subjects.setdefault(emission.type, []).append(emission.viewer_id)
    return subjects


@pytest.mark.timeout(60)
@settings(max_examples=400, deadline=None)
@given(drawn=any_body(), tracked_ids=TRACKED)
def test_generated_bodies_through_decode_paging_and_the_rules(
    drawn: tuple[bytes, list[str]], tracked_ids: list[str]
) -> None:
    """Valid, near-valid and garbage bodies: refused, or the events are exactly the oracle's
    (connected: listed and not tracked; disconnected: tracked and not listed; each once)."""
    raw, _ = drawn
    subjects = _detected(raw, tracked_ids)
    if subjects is None:
        return
    listed = [viewer.id for viewer in decode_page(raw).viewers]
    assert sorted(subjects.get("viewer.connected", [])) == sorted(set(listed) - set(tracked_ids))
    assert sorted(subjects.get("viewer.disconnected", [])) == sorted(set(tracked_ids) - set(listed))


@pytest.mark.timeout(60)
@settings(max_examples=200, deadline=None)
@given(drawn=valid_bodies(), tracked_ids=TRACKED)
def test_valid_but_odd_bodies_are_read_exactly(
    drawn: tuple[bytes, list[str]], tracked_ids: list[str]
) -> None:
    """The documented shape with odd content is never refused, and every id is read as sent."""
    raw, ids = drawn
    subjects = _detected(raw, tracked_ids)
    assert subjects is not None
    assert [viewer.id for viewer in decode_page(raw).viewers] == ids
    assert sorted(subjects.get("viewer.connected", [])) == sorted(set(ids) - set(tracked_ids))


@pytest.fixture(scope="module")
def body_server() -> Iterator[BodyServer]:
    """One threaded server for every example of a test."""
    with BodyServer() as server:
        yield server


async def _poll_once(url: str, budget: str) -> Poll:
    cluster = cluster_settings(url, auth={"token": "t"}, poll_budget=budget, timeout=budget)
    async with create_session(cluster) as session:
        return await StormClient(cluster, session, backoff=FAST_BACKOFF).poll()


@pytest.mark.timeout(120)
@settings(
    max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=any_body())
def test_generated_bodies_through_the_real_client(
    body_server: BodyServer, drawn: tuple[bytes, list[str]]
) -> None:
    """Any body over HTTP: ``poll()`` returns (no exception escapes); incomplete says why in a
    kind of STORM_ERROR_KINDS; complete holds only ids the body listed, as listed."""
    raw, _ = drawn
    body_server.body = raw
    poll = asyncio.run(_poll_once(body_server.url, "150ms"))
    if not poll.complete:
        assert poll.reason in STORM_ERROR_KINDS
        assert poll.error
        return
    assert list(poll.viewers) == [viewer.id for viewer in decode_page(raw).viewers]
    assert all(json.loads(v.raw)["id"] == vid for vid, v in poll.viewers.items())


@pytest.mark.timeout(120)
@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(drawn=valid_bodies())
def test_valid_bodies_through_the_real_client_are_complete(
    body_server: BodyServer, drawn: tuple[bytes, list[str]]
) -> None:
    """Valid but odd bodies over HTTP: complete, every id as sent."""
    raw, ids = drawn
    body_server.body = raw
    poll = asyncio.run(_poll_once(body_server.url, "5s"))
    assert poll.complete, poll.error
    assert list(poll.viewers) == ids
