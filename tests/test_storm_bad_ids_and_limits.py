"""A Storm server that answers badly (issue 14, item 2), ids and limits: every such poll is
incomplete or correct.

Never an invented connect or disconnect (``test_storm_bad_bodies.py`` says how an incomplete
poll says why). Here: answers too large, cut off or too slow (a body over ``max_page_bytes`` is
not read whole, and a child process shows the memory stays bounded), and viewer ids: a number
never becomes the string, unusual strings round-trip exactly, ids the notifier will not carry
and an id listed twice make the poll incomplete, and a viewer that drifts across pages keeps
the later page's record. The servers are real aiohttp servers on 127.0.0.1, the poller a real
one over a real redis-server (``testkit.bad_storm``).
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

from notifier.storm import paging
from notifier.storm.decode import MAX_ID_LENGTH, Page, Viewer
from testkit.bad_storm import KEYS, MEMORY_PROBE, bad_run, page, poller_run

from .conftest import cluster_settings, scripted_storm

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable, Iterator

    from redis.asyncio import Redis

    from testkit.reliability import Tally

    Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

MIB = 1024 * 1024


async def _until(condition: Callable[[], bool], seconds: float = 5.0) -> None:
    deadline = asyncio.get_running_loop().time() + seconds
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


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
@pytest.mark.reliability(
    fault="Storm sends a 200 MB body",
    injected="the viewer list streams 200 MB, declared in Content-Length or chunked; "
    "max_page_bytes 1 MiB",
    checked="refused on its length or cut at 1 MiB: incomplete (too_large), not retried, under "
    "32 MB of it sent",
)
async def test_a_body_over_max_page_bytes_is_not_read_whole(
    redis: Redis, tally: Tally, declare: bool
) -> None:
    """200 MB: refused on its Content-Length, or cut at max_page_bytes (1 MiB) while streaming;
    not retried, and the server got to send only a small part of it."""
    sent = Counter[str]()
    run = await bad_run(_streaming(sent, declare=declare), redis, max_page_bytes=MIB, timeout="20s")
    tally.tried = sent["requests"]
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
@pytest.mark.reliability(
    fault="Storm sends a 200 MB body: the memory it costs",
    injected="a child process polls a 200 MB chunked body with max_page_bytes at its default "
    "(64 MiB) or 8 MiB",
    checked="too_large, and the child's peak memory (VmHWM) grows by about the limit, far below "
    "200 MB",
)
def test_memory_stays_bounded_while_a_200_mb_body_streams(
    tally: Tally, limit: str, most_mib: float
) -> None:
    """A child process polls a 200 MB chunked body: its peak memory (VmHWM) grows by about the
    limit, far below 200 MB. A limit above the body shows the probe sees the difference."""
    probe = _probe(limit)
    tally.tried = probe["served"]
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
@pytest.mark.reliability(
    fault="Storm resets the connection mid-body",
    injected="every answer declares 1,000 bytes, sends 32 and aborts the TCP connection (RST)",
    checked="retried within the budget, then incomplete (unavailable, says it gave up); nothing "
    "written",
)
async def test_connection_resets_mid_body_are_retried_then_incomplete(
    redis: Redis, tally: Tally
) -> None:
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

    run = await bad_run(viewers, redis, poll_budget="300ms")
    tally.tried = served["resets"]
    error = run.assert_incomplete("unavailable")
    assert error.startswith("page 1: ")
    assert "gave up after" in error
    assert served["resets"] >= 2


@pytest.mark.timeout(30)
@pytest.mark.reliability(
    fault="Storm drips its answer (slow loris)",
    injected="every answer sends one byte every 20 ms, forever; timeout 200 ms, poll budget 700 ms",
    checked="each request ends at the timeout, the poll at its budget, incomplete (timeout), "
    "within 5 s; nothing written",
)
async def test_a_slow_loris_server_is_cut_by_the_timeout_and_the_budget(
    redis: Redis, tally: Tally
) -> None:
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
    run = await bad_run(viewers, redis, timeout="200ms", poll_budget="700ms")
    tally.tried = served["drips"]
    assert asyncio.get_running_loop().time() - began < 5
    error = run.assert_incomplete("timeout")
    assert "no answer within 200ms" in error
    assert served["drips"] >= 2


# --- viewer ids ----------------------------------------------------------------------------------


@pytest.mark.timeout(30)
@pytest.mark.reliability(
    fault="Storm sends a viewer id as a number",
    injected='three polls list the viewer as "0123", then as the number 123, then as "0123"',
    checked="one connect for the string, never a disconnect; the middle poll incomplete "
    "(viewer_id) and says the type",
)
async def test_a_number_id_never_becomes_the_string_id(redis: Redis, tally: Tally) -> None:
    """ "0123", then 123, then "0123": one connect, and the middle poll incomplete."""
    answers: Iterator[list[dict[str, Any]]] = iter(
        [[{"id": "0123"}], [{"id": 123}], [{"id": 123}], [{"id": "0123"}]]
    )
    served = Counter[str]()

    async def viewers(_request: web.Request) -> web.Response:
        rows = next(answers)
        served["number"] += isinstance(rows[0]["id"], int)
        return page(rows, totalItems=len(rows), hasNext=False)

    async with (
        scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url,
        poller_run(url, redis, settings=cluster_settings(url, auth={"token": "t"})) as run,
    ):
        for _ in range(3):
            await run.cycle()
    events = await run.events()
    tally.tried, tally.events = served["number"], len(events)
    assert [(e["type"], e["subject"]) for e in events] == [("viewer.connected", "0123")]
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
@pytest.mark.reliability(
    fault="Storm sends unusual string ids",
    injected="10 ids with Unicode, ':' '/' '?' '#', spaces, a zero-width space, braces, quotes, "
    "256 characters; listed, then gone",
    checked="the same strings as Redis fields and event subjects: each connected, then "
    "disconnected, once",
)
async def test_unusual_string_ids_round_trip_exactly(redis: Redis, tally: Tally) -> None:
    """Unicode, ':' and '/', spaces, 256 characters: the same string in Redis and the events,
    connected then disconnected, once each."""
    answers = iter([[{"id": i, "healthScore": 80} for i in ODD_IDS], []])
    served = Counter[str]()

    async def viewers(_request: web.Request) -> web.Response:
        rows = next(answers)
        served["ids"] += len(rows)
        return page(rows, totalItems=len(rows), hasNext=False)

    async with (
        scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url,
        poller_run(url, redis, settings=cluster_settings(url, auth={"token": "t"})) as run,
    ):
        await run.cycle()
        fields: list[bytes] = await redis.hkeys(KEYS.viewers)  # type: ignore[assignment]
        await run.cycle()
    assert sorted(f.decode() for f in fields) == sorted(ODD_IDS)
    events = await run.events()
    tally.tried, tally.events = served["ids"], len(events)
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
@pytest.mark.reliability(
    fault="Storm sends an id the notifier will not carry",
    injected="a page lists a good viewer and one whose id is empty, over 256 characters, holds a "
    "control character or a lone surrogate",
    checked="the poll is incomplete (viewer_id or malformed) and says why; the good viewer is "
    "not connected",
)
async def test_refused_ids_make_the_poll_incomplete(
    redis: Redis, tally: Tally, viewer_id: str, reason: str, says: str
) -> None:
    """Ids the notifier will not carry: incomplete, and the other viewers are not connected."""
    served = Counter[str]()

    async def viewers(_request: web.Request) -> web.Response:
        served["refused"] += 1
        return page([{"id": "v_fine"}, {"id": viewer_id}])

    run = await bad_run(viewers, redis, poll_budget="300ms")
    tally.tried = served["refused"]
    assert says in run.assert_incomplete(reason)


@pytest.mark.timeout(30)
@pytest.mark.reliability(
    fault="Storm lists a viewer twice in one page",
    injected="one page lists viewer v_1 twice, with different health scores",
    checked="the poll is incomplete (viewer_id: the page lists it twice); nothing written",
)
async def test_an_id_twice_in_one_page_is_incomplete(redis: Redis, tally: Tally) -> None:
    """One page listing a viewer twice with different records is a broken answer, not drift."""
    served = Counter[str]()

    async def viewers(_request: web.Request) -> web.Response:
        served["twice"] += 1
        return page([{"id": "v_1", "healthScore": 90}, {"id": "v_1", "healthScore": 10}])

    run = await bad_run(viewers, redis)
    tally.tried = served["twice"]
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
    counted = paging.Tally()
    counted.start_pass()
    counted.add(_tally_page(_viewer("v_a", 90), _viewer("v_x", 90)), 1, 2)
    for number in order:
        counted.add(pages[number], number, 2)
    assert counted.viewers["v_moved"].health == 80
    assert (len(counted.viewers), counted.duplicates) == (5, 1)
    counted.add(_tally_page(_viewer("v_d", 30), _viewer("v_e", 90)), 5, 2)  # after the first repeat
    counted.add(_tally_page(_viewer("v_d", 60), _viewer("v_f", 90)), 4, 2)
    assert counted.viewers["v_d"].health == 30  # page 5's, read before page 4
    assert (len(counted.viewers), counted.duplicates) == (8, 2)
