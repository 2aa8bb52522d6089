"""A Storm server that answers badly (issue 14, item 2), the bodies: every such poll is
incomplete or correct.

Never an invented connect or disconnect: each bad answer below ends as an incomplete poll that
says why (the ``storm.poll_incomplete`` line, ``poller.storm_unavailable``, and
``notifier_poll_incomplete_total{reason}``) and writes nothing, or as a complete poll whose events
are exactly the true ones. Here: bodies that are not the documented shape, paging that lies,
and generated bodies (hypothesis, ``testkit.storm_bodies``) through decode, paging and the rules
against an oracle, and through the real client: nothing escapes but an incomplete poll. The
servers are real aiohttp servers on 127.0.0.1, the poller a real one over a real redis-server
(``testkit.bad_storm``). Viewer ids and the limits of size and time:
``test_storm_bad_ids_and_limits.py``.
"""

from __future__ import annotations

import asyncio
import json
from collections import Counter
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from notifier.detect.rules import Track, detect
from notifier.errors import STORM_ERROR_KINDS, StormSchemaError
from notifier.storm import StormClient, create_session, paging
from notifier.storm.decode import MalformedBody, decode_page
from testkit.bad_storm import PLAIN, bad_run, page, poller_run
from testkit.storm_bodies import BodyServer, any_body, valid_bodies

from .conftest import FAST_BACKOFF, cluster_settings, scripted_storm

if TYPE_CHECKING:
    from collections.abc import Iterator

    from redis.asyncio import Redis

    from notifier.storm import Poll
    from testkit.reliability import Tally


def _rows(start: int, count: int) -> list[dict[str, Any]]:
    return [{"id": f"v_{i:04d}", "healthScore": 90} for i in range(start, start + count)]


# --- not the documented body ---------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.reliability(
    fault="Storm sends an HTML page with status 200",
    injected="the viewer list answers a login page (text/html, 200) to every request; two polls",
    checked="each poll retried within its budget, then incomplete (malformed, says why); nothing "
    "written to Redis",
)
async def test_an_html_page_with_status_200_is_incomplete_malformed(
    redis: Redis, tally: Tally
) -> None:
    """A login page served with 200 (a proxy in front of Storm) is retried, then incomplete."""
    served = Counter[str]()

    async def viewers(_request: web.Request) -> web.Response:
        served["html"] += 1
        return web.Response(text="<html><body>Sign in</body></html>", content_type="text/html")

    run = await bad_run(viewers, redis, cycles=2, poll_budget="300ms")
    tally.tried = served["html"]
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
@pytest.mark.reliability(
    fault="Storm sends JSON of the wrong shape",
    injected="the viewer list answers JSON with a wrong type or a missing field (data, list, "
    "totals, rows, id), one case each",
    checked="retried once, then the poll is incomplete (schema or viewer_id) with the path and "
    "what was found; nothing written",
)
async def test_wrong_types_and_missing_fields_are_incomplete(
    redis: Redis, tally: Tally, body: bytes, reason: str, says: str
) -> None:
    """JSON of the wrong shape: retried once, then incomplete with the path and what was found."""
    served = Counter[str]()

    async def viewers(_request: web.Request) -> web.Response:
        served["bad"] += 1
        return web.Response(body=body, content_type="application/json")

    run = await bad_run(viewers, redis)
    tally.tried = served["bad"]
    assert says in run.assert_incomplete(reason)
    assert served["bad"] == 2  # SCHEMA_ATTEMPTS


@pytest.mark.timeout(30)
@pytest.mark.reliability(
    fault="Storm sends records missing optional fields",
    injected="a viewer record with only an id, another with a score that is an object and a "
    "grade that is a number",
    checked="the poll is complete: one connect per viewer, the records kept verbatim, no "
    "measurement invented",
)
async def test_fields_the_rules_can_do_without_are_tolerated(redis: Redis, tally: Tally) -> None:
    """A record with only an id, or a score of an odd type: complete, no measurement invented."""
    rows = [{"id": "v_a"}, {"id": "v_b", "healthScore": {"x": 1}, "healthGrade": 7}]
    served = Counter[str]()

    async def viewers(_request: web.Request) -> web.Response:
        served["odd"] += 1
        return page(rows, totalItems=2)

    async with scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url:
        settings = cluster_settings(url, auth={"token": "t"})
        async with poller_run(url, redis, settings=settings) as run:
            await run.cycle()
    events = await run.events()
    tally.tried, tally.events = served["odd"], len(events)
    assert [(e["type"], e["subject"]) for e in events] == [
        ("viewer.connected", "v_a"),
        ("viewer.connected", "v_b"),
    ]
    assert [e["data"]["viewer"] for e in events] == rows  # verbatim


# --- paging that lies --------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.reliability(
    fault="Storm says hasNext forever, past its own totals",
    injected="totalItems 4 at 2 per page, yet every page says hasNext with fresh rows",
    checked="the poll stops 10 pages (EXTRA_PAGES) past the totals and is incomplete (paging); "
    "nothing written",
)
async def test_has_next_forever_past_lying_totals_is_cut_at_extra_pages(
    redis: Redis, tally: Tally
) -> None:
    """totalItems 4 (2 pages), yet hasNext forever with fresh rows: incomplete, not endless."""
    served = Counter[str]()

    async def viewers(request: web.Request) -> web.Response:
        number = int(request.query["page"])
        served["pages"] += 1
        return page(_rows(number * 2, 2), totalItems=4, itemsPerPage=2, hasNext=True)

    run = await bad_run(viewers, redis, page_size=2, poll_budget="20s")
    tally.tried = served["pages"]
    error = run.assert_incomplete("paging")
    assert error == (
        f"page {2 + paging.EXTRA_PAGES} still says hasNext, {paging.EXTRA_PAGES} pages past the 2"
        " its totals report (totalItems 4, itemsPerPage 2)"
    )
    assert served["pages"] == 2 + paging.EXTRA_PAGES


@pytest.mark.timeout(30)
@pytest.mark.reliability(
    fault="Storm says hasNext forever, with no totals",
    injected="every page says hasNext with fresh rows and no totalItems; a 300 ms poll budget",
    checked="the poll ends at its budget, incomplete (budget) and says so; nothing written",
)
async def test_has_next_forever_without_totals_ends_at_the_poll_budget(
    redis: Redis, tally: Tally
) -> None:
    """No totals to hold the server to: fresh pages forever stop at poll_budget (``budget``)."""
    served = Counter[str]()

    async def viewers(request: web.Request) -> web.Response:
        served["pages"] += 1
        return page(_rows(int(request.query["page"]) * 2, 2), hasNext=True)

    run = await bad_run(viewers, redis, page_size=2, poll_budget="300ms")
    tally.tried = served["pages"]
    assert (
        run.assert_incomplete("budget") == "the poll did not finish within the poll budget (300ms)"
    )
    assert served["pages"] > 2


# --- generated bodies ---------------------------------------------------------------------------

TRACKED = st.lists(st.sampled_from(["v_1", "0123", "123", "a:b/c", "x", "gone"]), unique=True)
FIXTURES = [HealthCheck.function_scoped_fixture]  # the tally: one per test, every example counts


def _detected(raw: bytes, tracked_ids: list[str]) -> dict[str, list[str]] | None:
    """Decode, count in and detect one body from ``tracked_ids``: each event type's subjects;
    None if the body is refused (the only exceptions allowed are the incomplete-poll ones)."""
    try:
        found = decode_page(raw)
        counted = paging.Tally()
        counted.start_pass()
        counted.add(found, 1, None)
    except (MalformedBody, StormSchemaError):
        return None
    for viewer in found.viewers:  # read as sent: never a converted or invented id
        assert json.loads(viewer.record_bytes())["id"] == viewer.id
    tracked = {vid: Track(record=b"{}", seen_at=0) for vid in tracked_ids}
    detection = detect(tracked, counted.viewers, polled_at=1, settings=PLAIN)
    subjects: dict[str, list[str]] = {}
    for emission in detection.emissions:
        subjects.setdefault(emission.type, []).append(emission.viewer_id)
    return subjects


@pytest.mark.timeout(60)
@pytest.mark.reliability(
    fault="Storm sends generated bodies: valid, near-valid, garbage",
    injected="400 hypothesis bodies (odd ids and scores, one thing broken, any JSON or bytes) "
    "through decode, paging and the rules",
    checked="each is refused as an incomplete poll, or its events are exactly the oracle's "
    "(listed and not tracked, tracked and not listed)",
)
@settings(max_examples=400, deadline=None, suppress_health_check=FIXTURES)
@given(drawn=any_body(), tracked_ids=TRACKED)
def test_generated_bodies_through_decode_paging_and_the_rules(
    tally: Tally, drawn: tuple[bytes, list[str]], tracked_ids: list[str]
) -> None:
    """Valid, near-valid and garbage bodies: refused, or the events are exactly the oracle's
    (connected: listed and not tracked; disconnected: tracked and not listed; each once)."""
    raw, _ = drawn
    tally.tried += 1
    subjects = _detected(raw, tracked_ids)
    if subjects is None:
        return
    listed = [viewer.id for viewer in decode_page(raw).viewers]
    assert sorted(subjects.get("viewer.connected", [])) == sorted(set(listed) - set(tracked_ids))
    assert sorted(subjects.get("viewer.disconnected", [])) == sorted(set(tracked_ids) - set(listed))
    tally.events += sum(len(found) for found in subjects.values())


@pytest.mark.timeout(60)
@pytest.mark.reliability(
    fault="Storm sends valid bodies with odd content",
    injected="200 hypothesis bodies of the documented shape: Unicode ids, scores of any JSON "
    "type, unknown fields, with or without totals",
    checked="none is refused; every id is read as sent; the connects are exactly the oracle's",
)
@settings(max_examples=200, deadline=None, suppress_health_check=FIXTURES)
@given(drawn=valid_bodies(), tracked_ids=TRACKED)
def test_valid_but_odd_bodies_are_read_exactly(
    tally: Tally, drawn: tuple[bytes, list[str]], tracked_ids: list[str]
) -> None:
    """The documented shape with odd content is never refused, and every id is read as sent."""
    raw, ids = drawn
    tally.tried += 1
    subjects = _detected(raw, tracked_ids)
    assert subjects is not None
    assert [viewer.id for viewer in decode_page(raw).viewers] == ids
    assert sorted(subjects.get("viewer.connected", [])) == sorted(set(ids) - set(tracked_ids))
    tally.events += len(subjects.get("viewer.connected", []))


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
@pytest.mark.reliability(
    fault="Storm sends generated bodies over HTTP",
    injected="80 hypothesis bodies (valid, near-valid, garbage) served as page 1 of the viewer "
    "list to the real client",
    checked="poll() always returns: incomplete with a known reason and an error, or complete "
    "with only the ids the body listed, as listed",
)
@settings(max_examples=80, deadline=None, suppress_health_check=FIXTURES)
@given(drawn=any_body())
def test_generated_bodies_through_the_real_client(
    body_server: BodyServer, tally: Tally, drawn: tuple[bytes, list[str]]
) -> None:
    """Any body over HTTP: ``poll()`` returns (no exception escapes); incomplete says why in a
    kind of STORM_ERROR_KINDS; complete holds only ids the body listed, as listed."""
    raw, _ = drawn
    body_server.body = raw
    served = body_server.served
    poll = asyncio.run(_poll_once(body_server.url, "150ms"))
    tally.tried += body_server.served - served
    if not poll.complete:
        assert poll.reason in STORM_ERROR_KINDS
        assert poll.error
        return
    assert list(poll.viewers) == [viewer.id for viewer in decode_page(raw).viewers]
    assert all(json.loads(v.record_bytes())["id"] == vid for vid, v in poll.viewers.items())


@pytest.mark.timeout(120)
@pytest.mark.reliability(
    fault="Storm sends valid bodies with odd content over HTTP",
    injected="40 hypothesis bodies of the documented shape with odd content, served to the real "
    "client",
    checked="every poll is complete and holds every id exactly as sent",
)
@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURES)
@given(drawn=valid_bodies())
def test_valid_bodies_through_the_real_client_are_complete(
    body_server: BodyServer, tally: Tally, drawn: tuple[bytes, list[str]]
) -> None:
    """Valid but odd bodies over HTTP: complete, every id as sent."""
    raw, ids = drawn
    body_server.body = raw
    served = body_server.served
    poll = asyncio.run(_poll_once(body_server.url, "5s"))
    tally.tried += body_server.served - served
    assert poll.complete, poll.error
    assert list(poll.viewers) == ids
