"""The Storm API client against a simulated cluster on a real port, and scripted servers."""

from __future__ import annotations

import asyncio
import io
import json
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import aiohttp
import msgspec
import pytest
from aiohttp import web

from notifier.logs import configure_logging
from notifier.simulator import (
    Faults,
    PopulationSettings,
    RunningSimulator,
    SimulatorSettings,
    running_simulator,
)
from notifier.storm import Poll, StormClient, create_session

from .conftest import FAST_BACKOFF, cluster_settings, scripted_storm

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable

    from notifier.config import ClusterSettings

    from .conftest import Handler


@asynccontextmanager
async def client_for(settings: ClusterSettings, **kwargs: Any) -> AsyncIterator[StormClient]:
    async with create_session(settings) as session:
        client = StormClient(settings, session, backoff=FAST_BACKOFF, **kwargs)
        try:
            yield client
        finally:
            await client.aclose()


@asynccontextmanager
async def simulated(
    viewers: int = 500, *, faults: Faults | None = None, **settings: Any
) -> AsyncIterator[RunningSimulator]:
    population = PopulationSettings(seed=7, viewers=viewers, extra_fields=True)
    async with running_simulator(
        SimulatorSettings(population=population, **settings), faults
    ) as sim:
        yield sim


def assert_exact(poll: Poll, sim: RunningSimulator) -> None:
    """The poll is complete and holds every viewer once, records verbatim."""
    assert poll.complete, poll.error
    assert set(poll.viewers) == sim.population.ids()
    for viewer_id, viewer in poll.viewers.items():
        assert msgspec.json.decode(viewer.raw) == sim.population.get(viewer_id)


async def test_reads_every_viewer_once_through_faults_and_a_capped_page_size() -> None:
    """5,000 viewers, 50 rows a page, token expiry, 5xx, 429, malformed pages: all 5,000, once."""
    faults = Faults(
        seed=3,
        max_rows_per_page=50,
        error_rate=0.05,
        rate_limit_rate=0.03,
        malformed_rate=0.03,
        retry_after=0.05,
    )
    faults.script(
        "expire-token",
        "500",
        "429",
        "truncated",
        "502-html",
        "html-200",
        "garbage",
        "disconnect",
        "503",
        "expire-token",
    )
    async with simulated(5000, faults=faults) as sim:
        settings = cluster_settings(sim.url, page_size=100, concurrency=4)
        async with client_for(settings) as client:
            poll = await client.poll()
            assert_exact(poll, sim)
            assert len(poll.viewers) == 5000
            assert poll.pages == 100
            assert poll.duplicates == 0
            assert sim.stats.rows_per_page_requested[100] > 0
            assert sim.stats.responses_by_status[429] >= 1
            assert sim.stats.responses_by_status[401] >= 1
            assert client.logins >= 2
            assert sim.stats.max_in_flight <= 4


async def test_pages_are_fetched_concurrently_but_within_the_limit() -> None:
    """Pages after the first go out `concurrency` at a time, never more."""
    faults = Faults(slow_rate=1.0, slow_seconds=0.02, max_rows_per_page=10)
    async with (
        simulated(200, faults=faults) as sim,
        client_for(cluster_settings(sim.url, page_size=10, concurrency=3)) as client,
    ):
        poll = await client.poll()
        assert_exact(poll, sim)
        assert sim.stats.max_in_flight == 3


async def test_static_token_and_api_key() -> None:
    """A static Bearer token with an X-Api-Key header reads the audience without logging in."""
    async with simulated(120, static_tokens=("tok-static",), api_key="key-1") as sim:
        settings = cluster_settings(sim.url, auth={"token": "tok-static", "api_key": "key-1"})
        async with client_for(settings) as client:
            assert_exact(await client.poll(), sim)
        assert sim.stats.logins == 0
        no_key = cluster_settings(sim.url, auth={"token": "tok-static"})
        async with client_for(no_key) as client:
            poll = await client.poll()
        assert not poll.complete
        assert poll.error is not None
        assert "configured token was rejected" in poll.error


@pytest.mark.parametrize("status", [401, 403])
async def test_a_dead_token_gets_exactly_one_fresh_login(status: int) -> None:
    """A token the server stops accepting (401 or 403) is replaced by one login, then reused."""
    faults = Faults(auth_failure_status=status, max_rows_per_page=20)
    async with (
        simulated(200, faults=faults) as sim,
        client_for(cluster_settings(sim.url, page_size=20)) as client,
    ):
        assert_exact(await client.poll(), sim)
        sim.simulator.expire_tokens()
        assert_exact(await client.poll(), sim)
        assert client.logins == 2
        assert sim.stats.logins == 2


async def test_wrong_password_is_a_clear_incomplete_poll_without_the_password() -> None:
    """Bad credentials: incomplete, the server's message, and the password appears nowhere."""
    log = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=log)
    async with simulated(10) as sim:
        settings = cluster_settings(sim.url, auth={"username": "admin", "password": "pa55-w0rd"})
        async with client_for(settings) as client:
            poll = await client.poll()
    assert not poll.complete
    assert poll.error == "login failed with HTTP 401: Username or password is incorrect"
    assert poll.viewers == {}
    assert "pa55-w0rd" not in log.getvalue()
    assert "storm.poll_incomplete" in log.getvalue()


async def test_a_failing_page_makes_the_poll_incomplete_within_the_budget() -> None:
    """A page that never succeeds ends the poll when the budget runs out, saying which and why."""
    faults = Faults(max_rows_per_page=10)
    async with simulated(50, faults=faults) as sim:
        settings = cluster_settings(sim.url, page_size=10, poll_budget="300ms")
        async with client_for(settings) as client:
            sim.faults.error_rate = 1.0
            poll = await client.poll()
    assert not poll.complete
    assert poll.error is not None
    assert poll.error.startswith("page 1: HTTP 50")
    assert "gave up after" in poll.error
    assert "poll budget 300ms" in poll.error


async def test_retry_after_is_honoured_and_pauses_every_page() -> None:
    """After a 429 with Retry-After, the client waits that long before any further request."""
    sleeps: list[float] = []

    async def record(delay: float) -> None:
        sleeps.append(delay)

    faults = Faults(max_rows_per_page=10, retry_after=0.25)
    faults.script("ok", "429")
    async with simulated(40, faults=faults) as sim:
        settings = cluster_settings(sim.url, page_size=10, concurrency=1)
        async with client_for(settings, sleep=record) as client:
            poll = await client.poll()
    assert_exact(poll, sim)
    assert sleeps[0] == pytest.approx(0.25)


async def test_retry_after_beyond_the_budget_fails_fast() -> None:
    """A Retry-After longer than the poll budget ends the poll at once, not after a long wait."""
    faults = Faults(retry_after=120)
    faults.script("429")
    async with (
        simulated(10, faults=faults) as sim,
        client_for(cluster_settings(sim.url, poll_budget="5s")) as client,
    ):
        poll = await client.poll()
    assert not poll.complete
    assert poll.error is not None
    assert "HTTP 429" in poll.error
    assert poll.duration < 1.0


async def test_slow_pages_time_out_and_are_retried() -> None:
    """A page slower than `timeout` is abandoned and fetched again."""
    faults = Faults(max_rows_per_page=25, slow_seconds=2.0)
    faults.script("ok", "slow")
    async with simulated(100, faults=faults) as sim:
        settings = cluster_settings(sim.url, page_size=25, timeout="200ms", concurrency=1)
        async with client_for(settings) as client:
            assert_exact(await client.poll(), sim)


async def test_a_schema_error_is_retried_once_then_reported() -> None:
    """One bad page is retried; a page that stays bad ends the poll with the reason."""
    faults = Faults(max_rows_per_page=10)
    async with (
        simulated(30, faults=faults) as sim,
        client_for(cluster_settings(sim.url, page_size=10)) as client,
    ):
        sim.faults.script("schema-no-id")
        assert_exact(await client.poll(), sim)
        sim.faults.script("schema-no-id", "schema-no-id")
        poll = await client.poll()
    assert not poll.complete
    assert poll.error is not None
    assert "has no id" in poll.error


async def test_paging_drift_never_fails_the_poll_and_duplicates_collapse() -> None:
    """Viewers joining and leaving mid-pass shift pages: the poll completes, each id once."""
    faults = Faults(seed=5, max_rows_per_page=20, churn_per_request=3, reorder_rate=0.3)
    async with simulated(400, faults=faults) as sim:
        before = sim.population.ids()
        async with client_for(cluster_settings(sim.url, page_size=20)) as client:
            poll = await client.poll()
        after = sim.population.ids()
    assert poll.complete
    assert poll.duplicates > 0
    assert poll.drift is False  # churn keeps the total constant: joins equal leaves
    assert all(json.loads(v.record_bytes())["id"] == key for key, v in poll.viewers.items())
    assert len(set(poll.viewers) - before - after) <= 3 * poll.requests  # only mid-pass joiners


async def test_filters_become_query_parameters_one_series_per_harness_type() -> None:
    """harness_types lists several types: one pass each, and the union is the result."""
    async with simulated(600) as sim:
        wanted = ("STORM_HLS_VIEWER", "RTMP_VIEWER")
        settings = cluster_settings(sim.url, filters={"harness_types": list(wanted)})
        async with client_for(settings) as client:
            poll = await client.poll()
        assert poll.complete
        expected = {r["id"] for r in sim.population.records() if r["harnessType"] in wanted}
        assert set(poll.viewers) == expected
        system = cluster_settings(sim.url, filters={"system_clients": True})
        async with client_for(system) as client:
            poll = await client.poll()
        system_types = {"CLUSTER_DATA_CLIENT", "TRANSCODER", "FILE_WRITER", "RTMP_PUSH"}
        assert poll.complete
        assert set(poll.viewers) == {
            r["id"] for r in sim.population.records() if r["harnessType"] in system_types
        }
        some = next(iter(sim.population.ids()))
        search = cluster_settings(sim.url, filters={"search": some})
        async with client_for(search) as client:
            poll = await client.poll()
        assert set(poll.viewers) == {some}


async def test_batch_lookup_tells_found_from_gone() -> None:
    """lookup() asks the batch endpoint which viewers are still connected."""
    async with simulated(250) as sim:
        ids = sorted(sim.population.ids())[:150]
        async with client_for(cluster_settings(sim.url)) as client:
            result = await client.lookup([*ids, "v_gone000000000000"])
        assert set(result.found) == set(ids)
        assert result.not_found == {"v_gone000000000000"}


async def test_count_reports_the_total() -> None:
    """count() reads one row and returns totalItems (check-config's reachability test)."""
    async with simulated(321) as sim, client_for(cluster_settings(sim.url)) as client:
        assert await client.count() == 321
        assert sim.stats.rows_per_page_requested[1] == 1


# --- scripted servers for paging shapes the simulator does not produce --------------------------


def _rows(start: int, count: int) -> list[dict[str, Any]]:
    return [
        {"id": f"v_{i:04d}", "healthScore": 90, "healthGrade": "Very Good"}
        for i in range(start, start + count)
    ]


def _page(rows: list[dict[str, Any]], **data: Any) -> web.Response:
    return web.json_response({"data": {**data, "list": rows}, "meta": {"generatedAt": 1}})


def _token_settings(url: str, **overrides: Any) -> ClusterSettings:
    return cluster_settings(url, auth={"token": "tok"}, **overrides)


async def test_servers_without_totals_are_followed_by_has_next() -> None:
    """No totalPages or totalItems: pages are read one by one while hasNext is true."""

    async def viewers(request: web.Request) -> web.Response:
        number = int(request.query["page"])
        return _page(_rows((number - 1) * 10, 10 if number < 4 else 3), hasNext=number < 4)

    async with (
        scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url,
        client_for(_token_settings(url, page_size=10)) as client,
    ):
        poll = await client.poll()
    assert poll.complete
    assert len(poll.viewers) == 33


async def test_servers_without_any_paging_facts_are_read_until_a_short_page() -> None:
    """No totals and no hasNext: pages are read until one comes back short."""

    async def viewers(request: web.Request) -> web.Response:
        number = int(request.query["page"])
        return _page(_rows((number - 1) * 5, 5 if number < 3 else 0))

    async with (
        scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url,
        client_for(_token_settings(url, page_size=5)) as client,
    ):
        poll = await client.poll()
    assert poll.complete
    assert len(poll.viewers) == 10


async def test_an_audience_that_grows_mid_pass_is_read_to_its_new_end() -> None:
    """When a later page reports more pages (or hasNext on the last one), they are read too."""

    async def viewers(request: web.Request) -> web.Response:
        number = int(request.query["page"])
        total_pages = 2 if number == 1 else 4
        if number == 4:
            return _page(_rows(30, 10), totalPages=4, hasNext=True, currentPage=4)
        if number == 5:
            return _page(_rows(40, 2), totalPages=5, hasNext=False, currentPage=5)
        return _page(_rows((number - 1) * 10, 10), totalPages=total_pages, currentPage=number)

    async with (
        scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url,
        client_for(_token_settings(url, page_size=10, concurrency=1)) as client,
    ):
        poll = await client.poll()
    assert poll.complete
    assert len(poll.viewers) == 42
    assert poll.drift is False


async def test_a_page_past_the_end_of_a_shrunken_audience_counts_as_empty() -> None:
    """A 404 for a page that no longer exists (page 1 now reports fewer) ends the pass cleanly."""
    calls = {"first": 0}

    async def viewers(request: web.Request) -> web.Response:
        number = int(request.query["page"])
        if number == 1:
            calls["first"] += 1
            pages = 3 if calls["first"] == 1 else 2
            return _page(_rows(0, 10), totalPages=pages, totalItems=pages * 10 - 5)
        if number == 3:
            return web.json_response({"message": "Page not found"}, status=404)
        return _page(_rows(10, 5), totalPages=2, totalItems=15)

    async with (
        scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url,
        client_for(_token_settings(url, page_size=10)) as client,
    ):
        poll = await client.poll()
    assert poll.complete, poll.error
    assert len(poll.viewers) == 15
    assert poll.drift is True


async def test_a_client_error_inside_the_audience_is_reported() -> None:
    """A 400 for a page that should exist is an error with the server's message."""

    async def viewers(request: web.Request) -> web.Response:
        if request.query["page"] == "2":
            return web.json_response({"message": "rowsPerPage too large"}, status=400)
        return _page(_rows(0, 10), totalPages=3)

    async with (
        scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url,
        client_for(_token_settings(url, page_size=10)) as client,
    ):
        poll = await client.poll()
    assert not poll.complete
    assert poll.error == "HTTP 400: rowsPerPage too large"


async def test_redirects_are_not_followed() -> None:
    """A redirect is an error that points at base_url, never a silent hop."""

    async def viewers(request: web.Request) -> web.Response:
        raise web.HTTPFound("https://elsewhere.example/api/cluster/viewers")

    async with (
        scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url,
        client_for(_token_settings(url)) as client,
    ):
        poll = await client.poll()
    assert not poll.complete
    assert poll.error is not None
    assert "HTTP 302" in poll.error
    assert "check base_url" in poll.error


async def test_a_dead_token_message_on_any_status_triggers_a_login() -> None:
    """The documented dead-token message is an auth failure even with an unexpected status."""
    tokens: list[str] = []

    async def login(request: web.Request) -> web.Response:
        token = f"tok-{len(tokens) + 1}"
        tokens.append(token)
        return web.json_response({"data": {"accessToken": token, "remainingTime": 899_999}})

    async def viewers(request: web.Request) -> web.Response:
        if request.headers["Authorization"] == "Bearer tok-1":
            body = {"message": "Could not authorize with given access token", "timestamp": 1}
            return web.json_response(body, status=400)
        return _page(_rows(0, 3), totalPages=1)

    routes = {("POST", "/api/auth/login"): login, ("GET", "/api/cluster/viewers"): viewers}
    async with scripted_storm(routes) as url, client_for(cluster_settings(url)) as client:
        poll = await client.poll()
    assert poll.complete
    assert tokens == ["tok-1", "tok-2"]


async def test_a_token_refused_after_a_fresh_login_is_an_auth_error() -> None:
    """401 that survives a re-login: incomplete, with a clear reason, and no login storm."""
    logins = []

    async def login(request: web.Request) -> web.Response:
        logins.append(1)
        return web.json_response({"data": {"accessToken": f"t{len(logins)}"}})

    async def viewers(request: web.Request) -> web.Response:
        return web.json_response({"message": "Forbidden for this user"}, status=403)

    routes = {("POST", "/api/auth/login"): login, ("GET", "/api/cluster/viewers"): viewers}
    async with scripted_storm(routes) as url, client_for(cluster_settings(url)) as client:
        poll = await client.poll()
    assert not poll.complete
    assert poll.error == "still refused after a fresh login: HTTP 403: Forbidden for this user"
    assert len(logins) == 2


async def test_batch_lookup_falls_back_to_connection_ids() -> None:
    """A server that wants `connectionIds` (one doc page's spelling) is understood."""

    async def batch(request: web.Request) -> web.Response:
        body = await request.json()
        if "connectionIds" not in body:
            return web.json_response({"message": "connectionIds is required"}, status=400)
        found = [r for r in _rows(0, 3) if r["id"] in body["connectionIds"]]
        return web.json_response({"data": {"found": found, "notFound": []}})

    async with (
        scripted_storm({("POST", "/api/cluster/viewers/batch"): batch}) as url,
        client_for(_token_settings(url)) as client,
    ):
        result = await client.lookup(["v_0000", "v_0002", "v_9999"])
        again = await client.lookup(["v_0001"])
    assert set(result.found) == {"v_0000", "v_0002"}
    assert result.not_found == {"v_9999"}
    assert set(again.found) == {"v_0001"}


async def test_connection_refused_is_named_at_once_then_retried_then_reported() -> None:
    """Nobody listening: the first retry already says "connection refused" (not a timeout),
    and so does the incomplete poll at the end of the budget."""
    from .conftest import free_port  # noqa: PLC0415

    log = io.StringIO()
    configure_logging(fmt="json", level="debug", stream=log)
    settings = _token_settings(f"http://127.0.0.1:{free_port()}", poll_budget="300ms")
    async with client_for(settings) as client:
        poll = await client.poll()
    assert not poll.complete
    assert poll.error is not None
    assert poll.error.startswith("page 1: connection refused (gave up after")
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    retries = [line for line in lines if line["event"] == "storm.request_retry"]
    assert retries
    assert retries[0]["attempt"] == 1
    assert retries[0]["reason"] == "connection refused"


async def test_the_servers_login_limit_is_named_as_the_cause() -> None:
    """A 429 from the login endpoint says it is Storm's 5 logins a minute, and how long."""

    async def login(_request: web.Request) -> web.Response:
        return web.json_response(
            {"message": "Too many login attempts"}, status=429, headers={"Retry-After": "40"}
        )

    async def viewers(_request: web.Request) -> web.Response:
        return web.Response(status=500)

    routes = {("GET", "/api/cluster/viewers"): viewers, ("POST", "/api/auth/login"): login}
    async with scripted_storm(routes) as url:
        settings = cluster_settings(url, auth={"username": "admin", "password": "pw"})
        async with client_for(settings) as client:
            poll = await client.poll()
    assert not poll.complete
    assert poll.error is not None
    assert "Storm allows 5 logins a minute per address" in poll.error
    assert "wait 40s" in poll.error


async def test_incomplete_polls_keep_what_they_read_but_say_so() -> None:
    """Rows read before a failure are kept for display, and complete is False."""
    faults = Faults(max_rows_per_page=10)
    async with simulated(30, faults=faults) as sim:
        settings = cluster_settings(sim.url, page_size=10, concurrency=1, poll_budget="200ms")
        async with client_for(settings) as client:
            sim.faults.script("ok", *["503"] * 50)
            poll = await client.poll()
    assert not poll.complete
    assert len(poll.viewers) == 10
    assert json.loads(next(iter(poll.viewers.values())).record_bytes())["id"]


# --- paging that used to yield a "complete" poll missing viewers ---------------------------------


def _serve_pages(
    rows: list[dict[str, Any]], size: int, **paging: Any
) -> Callable[[web.Request], Awaitable[web.Response]]:
    """A viewer list over ``rows``, ``size`` a page, with ``paging`` facts sent as given."""

    async def viewers(request: web.Request) -> web.Response:
        number = int(request.query["page"])
        return _page(rows[(number - 1) * size : number * size], **paging)

    return viewers


async def _poll(viewers: Handler, **overrides: Any) -> Poll:
    async with (
        scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url,
        client_for(_token_settings(url, **overrides)) as client,
    ):
        return await client.poll()


async def test_has_next_on_page_one_is_followed_past_its_total_pages() -> None:
    """Page 1 saying totalPages 1 but hasNext true: page 2 is read too."""

    async def viewers(request: web.Request) -> web.Response:
        number = int(request.query["page"])
        rows = _rows((number - 1) * 2, 2) if number <= 2 else []
        return _page(rows, totalPages=1, hasNext=number < 2, currentPage=number)

    poll = await _poll(viewers, page_size=2)
    assert poll.complete, poll.error
    assert len(poll.viewers) == 4


@pytest.mark.parametrize(
    "paging",
    [
        {"totalItems": 4, "itemsPerPage": 2, "totalPages": 0},
        {"totalItems": 5, "itemsPerPage": 2, "totalPages": 2},
        {"totalItems": 5},
    ],
    ids=["total-pages-0", "total-pages-rounded-down", "rows-of-page-1"],
)
async def test_the_last_page_is_the_larger_of_total_pages_and_total_items(
    paging: dict[str, int],
) -> None:
    """totalPages 0 or rounded down, or no itemsPerPage: totalItems still sets the last page."""
    rows = _rows(0, paging["totalItems"])
    poll = await _poll(_serve_pages(rows, 2, **paging), page_size=2)
    assert poll.complete, poll.error
    assert len(poll.viewers) == len(rows)


async def test_a_page_without_its_list_is_an_incomplete_poll() -> None:
    """A 200 reporting viewers but holding no list is a schema error, not an empty audience."""

    async def viewers(request: web.Request) -> web.Response:
        return web.json_response({"data": {"totalItems": 500}})

    poll = await _poll(viewers)
    assert not poll.complete
    assert poll.error == "the viewer list has no $.data.list but reports totalItems 500"


@pytest.mark.parametrize(
    ("first_page", "error"),
    [
        (1, "asked for page 2, the server answered page 1"),
        (0, "page 3 came back empty, but the same answer reports totalItems 6"),
    ],
    ids=["page-ignored", "zero-based"],
)
async def test_an_answer_for_another_page_is_an_incomplete_poll(
    first_page: int, error: str
) -> None:
    """A server ignoring `page` (always page 1), or counting pages from 0, is caught."""
    rows = _rows(0, 6)

    async def viewers(request: web.Request) -> web.Response:
        current = 1 if first_page == 1 else int(request.query["page"])
        start = (current - first_page) * 2  # the rows it serves as page `current`
        paging = {"totalItems": 6, "itemsPerPage": 2, "totalPages": 3, "currentPage": current}
        return _page(rows[start : start + 2], **paging)

    poll = await _poll(viewers, page_size=2, concurrency=1)
    assert not poll.complete
    assert poll.error is not None
    assert poll.error.startswith(error)


async def test_empty_pages_inside_huge_totals_end_the_poll_at_once() -> None:
    """totalPages 1e9 with empty pages after page 1: incomplete after a few requests."""

    async def viewers(request: web.Request) -> web.Response:
        number = int(request.query["page"])
        return _page(_rows(0, 2) if number == 1 else [], totalPages=10**9)

    poll = await _poll(viewers, page_size=2, concurrency=2)
    assert not poll.complete
    assert poll.error is not None
    assert poll.error.endswith(
        " came back empty, but the same answer reports totalPages 1000000000"
    )
    assert poll.requests <= 5


async def test_a_server_that_drops_a_whole_page_makes_the_poll_incomplete() -> None:
    """Page 4 answered with page 5's rows (page 4's viewers never seen): incomplete."""
    rows = _rows(0, 100)

    async def viewers(request: web.Request) -> web.Response:
        number = int(request.query["page"])
        served = number + 1 if number == 4 else number
        return _page(rows[(served - 1) * 10 : served * 10], totalItems=100, itemsPerPage=10)

    poll = await _poll(viewers, page_size=10, concurrency=1)
    assert not poll.complete
    assert poll.error is not None
    assert poll.error.startswith("pages 4 and 5 held the same 10 viewers")


async def test_a_pass_far_short_of_the_reported_total_is_incomplete() -> None:
    """Pages that together hold 90 of the 100 viewers reported: incomplete, saying so."""
    rows = _rows(0, 100)

    async def viewers(request: web.Request) -> web.Response:
        number = int(request.query["page"])
        page = rows[(number - 1) * 10 : number * 10]
        return _page(page[1:], totalItems=100, itemsPerPage=10)  # one row lost a page

    poll = await _poll(viewers, page_size=10)
    assert not poll.complete
    assert poll.error == "the server reported 100 viewers but its pages held 90"
    assert len(poll.viewers) == 90


async def test_a_one_viewer_shortfall_is_drift_and_stays_complete() -> None:
    """A viewer that left between the count and the last page does not fail the poll."""
    rows = _rows(0, 99)
    poll = await _poll(_serve_pages(rows, 10, totalItems=100, itemsPerPage=10), page_size=10)
    assert poll.complete, poll.error
    assert len(poll.viewers) == 99


async def test_the_last_page_served_again_past_the_end_is_not_a_repeat() -> None:
    """A page past a shrunken audience's end answered with the last page again is no error."""
    calls = {"n": 0}
    rows = _rows(0, 30)

    async def viewers(request: web.Request) -> web.Response:
        calls["n"] += 1
        number = int(request.query["page"])
        total = 30 if calls["n"] == 1 else 25  # five leave after page 1 is read
        served = min(number, 3)
        return _page(rows[(served - 1) * 10 : min(served * 10, total)], totalItems=total)

    poll = await _poll(viewers, page_size=10, concurrency=1)
    assert poll.complete, poll.error
    assert len(poll.viewers) == 25


async def test_repeats_while_has_next_says_more_end_the_pass() -> None:
    """No totals, hasNext forever, pages of viewers already read: incomplete, not endless."""

    async def viewers(request: web.Request) -> web.Response:
        number = int(request.query["page"])
        rows = _rows(0, 2)
        return _page(rows if number % 2 else rows[::-1], hasNext=True)

    poll = await _poll(viewers, page_size=2)
    assert not poll.complete
    assert poll.error is not None
    assert poll.error.startswith("page 2 held only viewers already read")
    assert poll.requests == 2


# --- the poll budget bounds successful requests too ----------------------------------------------


def _fetches_running() -> list[asyncio.Task[Any]]:
    return [
        task
        for task in asyncio.all_tasks()
        if getattr(task.get_coro(), "__qualname__", "") == "StormClient._fetch_page"
    ]


@pytest.mark.parametrize("mode", ["has-next", "total-pages"])
async def test_the_budget_ends_a_poll_whose_pages_keep_coming(mode: str) -> None:
    """Endless fresh pages (hasNext forever, or totalPages 1e9) stop at the poll budget."""

    async def viewers(request: web.Request) -> web.Response:
        number = int(request.query["page"])
        paging = {"hasNext": True} if mode == "has-next" else {"totalPages": 10**9}
        return _page(_rows(number * 2, 2), **paging)

    poll = await _poll(viewers, page_size=2, poll_budget="300ms")
    assert not poll.complete
    assert poll.error == "the poll did not finish within the poll budget (300ms)"
    assert poll.pages > 2
    assert poll.duration < 2.0
    assert _fetches_running() == []


async def test_a_slow_page_that_would_succeed_is_cut_by_the_budget() -> None:
    """A page slower than the budget (but within `timeout`) ends the poll at the budget."""
    release = asyncio.Event()

    async def viewers(request: web.Request) -> web.Response:
        if request.query["page"] == "2":
            await release.wait()
        return _page(_rows(0, 2), totalPages=2)

    try:
        poll = await _poll(viewers, page_size=2, poll_budget="300ms", timeout="30s")
    finally:
        release.set()
    assert not poll.complete
    assert poll.error == "the poll did not finish within the poll budget (300ms)"
    assert poll.duration < 2.0
    assert _fetches_running() == []


async def test_one_retry_after_of_a_day_pauses_the_cluster_for_five_minutes_at_most() -> None:
    """Retry-After 86400 is honoured for 300 s only, and the cap is logged."""
    log = io.StringIO()
    configure_logging(fmt="json", level="info", stream=log)
    now = [0.0]

    async def sleep(delay: float) -> None:
        now[0] += delay

    answers = {"n": 0}

    async def viewers(request: web.Request) -> web.Response:
        answers["n"] += 1
        if answers["n"] == 1:
            busy = {"message": "busy"}
            return web.json_response(busy, status=503, headers={"Retry-After": "86400"})
        return _page(_rows(0, 3), totalPages=1)

    async with (
        scripted_storm({("GET", "/api/cluster/viewers"): viewers}) as url,
        client_for(_token_settings(url), clock=lambda: now[0], sleep=sleep) as client,
    ):
        first = await client.poll()  # 300 s is past the 20 s budget: gives up at once
        now[0] += 300
        second = await client.poll()
    assert not first.complete
    assert second.complete, second.error
    lines = [json.loads(line) for line in log.getvalue().splitlines()]
    (capped,) = [line for line in lines if line["event"] == "storm.retry_after_capped"]
    assert (capped["retry_after"], capped["honoured"]) == (86400, 300.0)


async def test_session_is_plain_aiohttp() -> None:
    """create_session returns an aiohttp session the caller owns and closes."""
    async with simulated(1) as sim:
        session = create_session(cluster_settings(sim.url))
        assert isinstance(session, aiohttp.ClientSession)
        await session.close()
