"""The simulated Storm cluster: population model, faults, HTTP API and `notifier simulate`."""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import re
import time
from collections import Counter
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import aiohttp
import pytest
import structlog

from notifier.commands import simulate as command
from notifier.commands._common import Parser, duration  # the argparse pieces under test
from notifier.errors import ConfigError
from notifier.simulator import (
    FAULT_NAMES,
    HARNESS_TYPES,
    NO_DATA,
    SYSTEM_HARNESS_TYPES,
    Change,
    Faults,
    Incident,
    Population,
    PopulationSettings,
    Ramp,
    RunningSimulator,
    Simulator,
    SimulatorSettings,
    ViewerQuery,
    health_grade,
    running_simulator,
)
from notifier.simulator.population import INITIAL_MAX_MS, INITIAL_MIN_MS

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator, MutableMapping

TOKEN = "static-test-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
RECORD_KEYS = [
    "id", "state", "harnessType", "applicationId", "streamKey", "remoteAddress", "deviceType",
    "osName", "browserName", "countryCode", "countryName", "startTime", "duration",
    "inBandwidth", "outBandwidth", "inTotalBytes", "outTotalBytes", "healthScore", "healthGrade",
]  # fmt: skip
VIEWER_ID = re.compile(r"v_[a-z0-9]{16}")

JSON = dict[str, Any]


class FakeClock:
    """A clock the tests move by hand."""

    def __init__(self, now: float = 1_780_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def settings(viewers: int = 57, seed: int = 7, **kwargs: Any) -> SimulatorSettings:
    """Simulator settings with a small seeded population and the static test token."""
    population = PopulationSettings(seed=seed, viewers=viewers)
    return SimulatorSettings(population=population, static_tokens=(TOKEN,), **kwargs)


@pytest.fixture
async def sim() -> AsyncIterator[RunningSimulator]:
    """A running simulator with 57 viewers, stepped by hand."""
    async with running_simulator(settings()) as running:
        yield running


@pytest.fixture
async def http() -> AsyncIterator[aiohttp.ClientSession]:
    """A client session, closed after the test."""
    async with aiohttp.ClientSession() as session:
        yield session


async def get_json(
    http: aiohttp.ClientSession,
    url: str,
    *,
    status: int = 200,
    headers: dict[str, str] | None = None,
    query: dict[str, str | int] | None = None,
    **params: str | int,
) -> JSON:
    """GET url with the static token, check the status, return the JSON body."""
    async with http.get(
        url, params={**(query or {}), **params}, headers=AUTH if headers is None else headers
    ) as resp:
        assert resp.status == status, await resp.text()
        assert resp.content_type == "application/json"
        body: JSON = await resp.json()
        return body


async def login(http: aiohttp.ClientSession, base: str, **credentials: str) -> tuple[int, JSON]:
    """POST the login route; return the status and the JSON body."""
    body = credentials or {"username": "admin", "password": "admin"}
    async with http.post(f"{base}/api/auth/login", json=body) as resp:
        return resp.status, await resp.json()


def viewers_url(running: RunningSimulator) -> str:
    """The viewer-list URL of a running simulator."""
    return f"{running.url}/api/cluster/viewers"


async def served(http: aiohttp.ClientSession, running: RunningSimulator) -> tuple[int, list[JSON]]:
    """Every viewer the simulator serves (pages of 1000), and the last page's generatedAt."""
    records: list[JSON] = []
    page = 1
    while True:
        body = await get_json(http, viewers_url(running), page=page, rowsPerPage=1000)
        records.extend(body["data"]["list"])
        if not body["data"]["hasNext"]:
            return body["meta"]["generatedAt"], records
        page += 1


def assert_documented(record: JSON, generated_at: int) -> None:
    """One list record has the storm-api.md keys, in order, with consistent values."""
    assert list(record) in (RECORD_KEYS, RECORD_KEYS[:-1])
    assert VIEWER_ID.fullmatch(record["id"])
    assert record["harnessType"] in HARNESS_TYPES
    assert record["deviceType"] in {"MOBILE", "TABLET", "DESKTOP"}
    assert record["startTime"] + record["duration"] == generated_at
    assert 0 <= record["healthScore"] <= 100
    if record["healthScore"] > 0:
        assert record["healthGrade"] == health_grade(record["healthScore"])
    else:
        assert record.get("healthGrade") in {NO_DATA, None}


# -- population (pure) ---------------------------------------------------------------------


def test_records_have_the_documented_shape() -> None:
    """Every record has the storm-api.md keys in order, with plausible values."""
    population = Population(PopulationSettings(seed=1, viewers=2000))
    records = population.records()
    assert len(records) == 2000
    for record in records:
        keys = list(record)
        assert keys == RECORD_KEYS or keys == RECORD_KEYS[:-1]  # grade occasionally missing
        assert VIEWER_ID.fullmatch(record["id"])
        assert record["harnessType"] in HARNESS_TYPES
        assert record["deviceType"] in {"MOBILE", "TABLET", "DESKTOP"}
        assert record["remoteAddress"].startswith(("203.0.113.", "198.51.100."))
        assert record["startTime"] + record["duration"] == population.now_ms
        assert 0 <= record["healthScore"] <= 100
        if record["healthScore"] > 0:
            assert record["healthGrade"] == health_grade(record["healthScore"])
        else:
            assert record.get("healthGrade") in {NO_DATA, None}
    harness = Counter(record["harnessType"] for record in records)
    assert harness.most_common(2)[0][0] in {"STORM_MSE_VIEWER", "STORM_HLS_VIEWER"}
    assert set(harness) & SYSTEM_HARNESS_TYPES
    assert len({record["applicationId"] for record in records}) in range(2, 6)
    assert len({record["id"] for record in records}) == 2000


def test_same_seed_and_calls_give_the_same_history() -> None:
    """Two populations with one seed and one sequence of calls agree on records and changes."""

    def history(seed: int) -> tuple[list[list[Change]], list[JSON]]:
        population = Population(PopulationSettings(seed=seed, viewers=300, extra_fields=True))
        changes = [population.step() for _ in range(3)]
        joined = population.join(4)
        population.leave(joined[:2])
        population.set_health(joined[2], 0, None, omit_grade=True)
        population.shuffle()
        changes.append(population.churn(5))
        changes.append(population.step())
        return changes, population.records()

    assert history(11) == history(11)
    assert history(11) != history(12)


def test_step_changes_are_the_ground_truth() -> None:
    """Applying a step's changes to the previous ids and health gives the new state."""
    population = Population(PopulationSettings(seed=3, viewers=500, health_change_rate=0.2))
    for _ in range(5):
        before = population.ids()
        changes = population.step()
        assert {change.tick for change in changes} == {population.tick}
        left = {c.viewer_id for c in changes if c.kind == "left"}
        joined = {c.viewer_id for c in changes if c.kind == "joined"}
        assert left <= before
        assert not joined & before
        assert population.ids() == (before - left) | joined
        for change in changes:
            if change.kind == "left":
                continue
            record = population.get(change.viewer_id)
            assert record is not None
            assert record["healthScore"] == change.health_score
            assert record.get("healthGrade") == change.health_grade
        assert any(c.kind == "health" for c in changes)


def test_health_changes_always_change_the_sample() -> None:
    """A "health" change never reports the sample the viewer already had."""
    population = Population(PopulationSettings(seed=5, viewers=400, health_change_rate=0.5))
    for _ in range(4):
        before = {
            r["id"]: (r["healthScore"], r.get("healthGrade", "-")) for r in population.records()
        }
        changes = population.step()
        after = {r["id"]: r for r in population.records()}
        for change in changes:
            if change.kind == "health":
                record = after[change.viewer_id]
                assert (record["healthScore"], record.get("healthGrade", "-")) != before[
                    change.viewer_id
                ]


def test_duration_and_bytes_grow_with_ticks() -> None:
    """Durations grow by tick_ms per step and byte totals never shrink."""
    population = Population(PopulationSettings(seed=2, viewers=100, leave_rate=0, join_rate=0))
    first = {record["id"]: record for record in population.records()}
    population.step()
    population.step()
    for record in population.records():
        old = first[record["id"]]
        assert record["duration"] == old["duration"] + 2000
        assert record["startTime"] == old["startTime"]
        assert record["inTotalBytes"] >= old["inTotalBytes"]
        assert record["outTotalBytes"] >= old["outTotalBytes"]
    assert any(
        record["outTotalBytes"] > first[record["id"]]["outTotalBytes"]
        for record in population.records()
    )


def test_no_data_health_samples_occur() -> None:
    """With a no-data rate, samples of score 0 graded "No Data", null or missing all occur."""
    population = Population(PopulationSettings(seed=4, viewers=3000, no_data_rate=0.2))
    changes = population.step()
    forms = Counter(
        record.get("healthGrade", "missing")
        for record in population.records()
        if record["healthScore"] == 0
    )
    assert set(forms) == {NO_DATA, None, "missing"}
    assert forms[NO_DATA] > forms[None]
    assert any(c.kind == "health" and c.health_grade == NO_DATA for c in changes)
    assert all(c.health_score == 0 for c in changes if c.health_grade == NO_DATA)


def test_set_health_controls_the_sample() -> None:
    """set_health writes the score and grade, or drops the grade key."""
    population = Population(PopulationSettings(seed=1, viewers=3))
    viewer_id = population.records()[0]["id"]
    population.set_health(viewer_id, 0, NO_DATA)
    record = population.get(viewer_id)
    assert record is not None
    assert (record["healthScore"], record["healthGrade"]) == (0, NO_DATA)
    population.set_health(viewer_id, 0, None)
    record = population.get(viewer_id)
    assert record is not None
    assert record["healthGrade"] is None
    population.set_health(viewer_id, 0, None, omit_grade=True)
    record = population.get(viewer_id)
    assert record is not None
    assert "healthGrade" not in record
    population.set_health(viewer_id, 15, "Very Bad")
    assert json.loads(population.page(0, 1)[1][0]) == population.get(viewer_id)
    with pytest.raises(KeyError):
        population.set_health("v_unknown", 10, "Very Bad")


@pytest.mark.parametrize(
    ("score", "grade"),
    [(100, "Very Good"), (80, "Very Good"), (79, "Good"), (60, "Good"), (59, "Average"),
     (40, "Average"), (39, "Bad"), (20, "Bad"), (19, "Very Bad"), (1, "Very Bad")],
)  # fmt: skip
def test_health_grade_thresholds(score: int, grade: str) -> None:
    """Grades follow the 80/60/40/20 thresholds."""
    assert health_grade(score) == grade


def test_extra_fields_add_an_undocumented_region() -> None:
    """extra_fields adds a "region" key after the documented ones."""
    population = Population(PopulationSettings(viewers=20, extra_fields=True))
    for record in population.records():
        assert list(record)[-1] == "region"
        assert isinstance(record["region"], str)


def test_join_leave_and_shuffle_keep_a_stable_order_until_shuffled() -> None:
    """Joins append, leaves remove in place, shuffle reorders the same members."""
    population = Population(PopulationSettings(seed=9, viewers=30))
    order = [record["id"] for record in population.records()]
    new = population.join(2)
    population.leave([order[3], "v_not_there"])
    expected = [i for i in order if i != order[3]] + new
    assert [record["id"] for record in population.records()] == expected
    population.shuffle()
    shuffled = [record["id"] for record in population.records()]
    assert shuffled != expected
    assert sorted(shuffled) == sorted(expected)


# -- faults (pure) ---------------------------------------------------------------------------


def test_script_rejects_unknown_faults() -> None:
    """Scripting a fault name that does not exist fails loudly and queues nothing."""
    faults = Faults()
    with pytest.raises(ValueError, match="nonsense"):
        faults.script("500", "nonsense")
    assert faults.pending == ()


def test_random_faults_are_seeded_and_off_by_default() -> None:
    """The random faults repeat for a seed, and with every rate at zero nothing is drawn."""

    def draws(seed: int) -> list[str]:
        faults = Faults(seed=seed, error_rate=0.2, rate_limit_rate=0.1, malformed_rate=0.1)
        return [faults.draw() for _ in range(200)]

    assert draws(1) == draws(1)
    assert draws(1) != draws(2)
    assert set(draws(1)) <= FAULT_NAMES
    assert set(draws(1)) >= {"ok", "429", "500", "500-html"}
    assert {Faults().draw() for _ in range(100)} == {"ok"}


# -- authentication --------------------------------------------------------------------------


async def test_login_returns_the_documented_shape(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """A good login returns a Bearer token with expiry fields and the success message."""
    status, body = await login(http, sim.url)
    assert status == 200
    assert body["message"] == "Authentication successful"
    data = body["data"]
    assert data["tokenType"] == "Bearer"
    assert data["username"] == "admin"
    assert data["accessToken"].count(".") == 2  # JWT-looking
    assert 899_000 <= data["remainingTime"] <= 900_000
    assert abs(data["expireDate"] - (time.time() + 900) * 1000) < 60_000
    headers = {"Authorization": f"Bearer {data['accessToken']}"}
    await get_json(http, viewers_url(sim), headers=headers)
    assert (sim.stats.logins, sim.stats.login_attempts) == (1, 1)


async def test_login_with_wrong_credentials_is_401(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """Wrong credentials get 401 and the documented message."""
    status, body = await login(http, sim.url, username="admin", password="wrong")
    assert (status, body) == (401, {"message": "Username or password is incorrect"})
    assert sim.stats.logins == 0


@pytest.mark.parametrize("body", [b"{not json", b"[1, 2]", b'{"username": "admin"}'])
async def test_login_with_a_malformed_body_is_400(
    sim: RunningSimulator, http: aiohttp.ClientSession, body: bytes
) -> None:
    """A login body that is not a JSON object with both credentials gets 400 {"message"}."""
    async with http.post(f"{sim.url}/api/auth/login", data=body) as resp:
        assert resp.status == 400
        assert isinstance((await resp.json())["message"], str)


async def test_login_is_rate_limited_per_minute(http: aiohttp.ClientSession) -> None:
    """The sixth attempt within a sliding minute gets 429 with Retry-After; later it works."""
    clock = FakeClock()
    async with running_simulator(settings(), clock=clock) as running:
        for attempt in range(5):
            clock.now += 1
            password = "admin" if attempt % 2 else "wrong"
            status, _ = await login(http, running.url, username="admin", password=password)
            assert status in {200, 401}
        async with http.post(
            f"{running.url}/api/auth/login", json={"username": "admin", "password": "admin"}
        ) as resp:
            assert resp.status == 429
            assert isinstance((await resp.json())["message"], str)
            assert (
                int(resp.headers["Retry-After"]) == 56
            )  # the first attempt (at +1 s) leaves at +61 s
        clock.now += 56
        status, _ = await login(http, running.url)
        assert status == 200
        assert running.stats.login_attempts == 7
        assert running.stats.responses_by_status[429] == 1


async def test_login_tokens_expire_by_the_clock(http: aiohttp.ClientSession) -> None:
    """A login token works until token_ttl has passed on the injected clock."""
    clock = FakeClock()
    faults = Faults(token_ttl=60)
    async with running_simulator(settings(), faults, clock=clock) as running:
        _, body = await login(http, running.url)
        assert body["data"]["expireDate"] == int((clock.now + 60) * 1000)
        headers = {"Authorization": f"Bearer {body['data']['accessToken']}"}
        clock.now += 59
        await get_json(http, viewers_url(running), headers=headers)
        clock.now += 1
        dead = await get_json(http, viewers_url(running), headers=headers, status=401)
        assert dead == {
            "message": "Could not authorize with given access token",
            "timestamp": int(clock.now * 1000),
        }


async def test_expire_tokens_revokes_login_tokens_but_not_static_ones(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """expire_tokens() kills every login token; static tokens keep working."""
    _, body = await login(http, sim.url)
    headers = {"Authorization": f"Bearer {body['data']['accessToken']}"}
    await get_json(http, viewers_url(sim), headers=headers)
    sim.simulator.expire_tokens()
    await get_json(http, viewers_url(sim), headers=headers, status=401)
    await get_json(http, viewers_url(sim))


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer nope"}, {"Authorization": f"Basic {TOKEN}"},
     {"Authorization": "Bearer"}],
)  # fmt: skip
async def test_requests_without_a_live_token_are_rejected(
    sim: RunningSimulator, http: aiohttp.ClientSession, headers: dict[str, str]
) -> None:
    """Missing, unknown or non-Bearer credentials get the auth-failure body."""
    body = await get_json(http, viewers_url(sim), headers=headers, status=401)
    assert body["message"] == "Could not authorize with given access token"
    assert isinstance(body["timestamp"], int)
    assert sim.stats.list_requests == 0


async def test_auth_failure_status_can_be_403(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """auth_failure_status switches dead-token answers to 403."""
    sim.faults.auth_failure_status = 403
    await get_json(http, viewers_url(sim), headers={"Authorization": "Bearer nope"}, status=403)


async def test_logout_revokes_the_token(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    """After logout the same token is refused."""
    _, body = await login(http, sim.url)
    headers = {"Authorization": f"Bearer {body['data']['accessToken']}"}
    async with http.post(f"{sim.url}/api/auth/logout", headers=headers) as resp:
        assert resp.status == 200
    await get_json(http, viewers_url(sim), headers=headers, status=401)
    assert sim.stats.logouts == 1


async def test_api_key_is_required_when_configured(http: aiohttp.ClientSession) -> None:
    """With an api_key, a missing X-Api-Key gets 401 and a wrong one 403, login included."""
    async with running_simulator(settings(api_key="k-123")) as running:
        await get_json(http, viewers_url(running), status=401)
        await get_json(http, viewers_url(running), headers={**AUTH, "X-Api-Key": "no"}, status=403)
        await get_json(http, viewers_url(running), headers={**AUTH, "X-Api-Key": "k-123"})
        status, _ = await login(http, running.url)
        assert status == 401
        async with http.post(
            f"{running.url}/api/auth/login",
            json={"username": "admin", "password": "admin"},
            headers={"X-Api-Key": "k-123"},
        ) as resp:
            assert resp.status == 200


async def test_login_can_be_disabled(http: aiohttp.ClientSession) -> None:
    """Without configured credentials no login succeeds, and static tokens still work."""
    async with running_simulator(settings(username=None, password=None)) as running:
        status, body = await login(http, running.url)
        assert (status, body["message"]) == (401, "Username or password is incorrect")
        await get_json(http, viewers_url(running))


# -- viewer list -----------------------------------------------------------------------------


async def test_list_defaults_to_page_one_of_ten(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """Without parameters the list is page 1 of 10 rows, with the documented envelope."""
    body = await get_json(http, viewers_url(sim))
    data = body["data"]
    assert list(data) == [
        "totalItems", "itemsPerPage", "totalPages", "currentPage", "hasPrevious", "hasNext", "list",
    ]  # fmt: skip
    assert (data["totalItems"], data["itemsPerPage"], data["totalPages"]) == (57, 10, 6)
    assert (data["currentPage"], data["hasPrevious"], data["hasNext"]) == (1, False, True)
    assert data["list"] == sim.population.records()[:10]
    assert set(body["meta"]) == {"executionTime", "generatedAt"}
    assert body["meta"]["generatedAt"] == sim.population.now_ms
    assert sim.stats.rows_per_page_requested == Counter({10: 1})


async def test_paging_walks_the_whole_population_in_order(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """Reading every page of 20 returns the population in server order; last page flags."""
    seen: list[JSON] = []
    for page in range(1, 4):
        data = (await get_json(http, viewers_url(sim), page=page, rowsPerPage=20))["data"]
        assert data["currentPage"] == page
        assert data["hasPrevious"] is (page > 1)
        assert data["hasNext"] is (page < 3)
        seen.extend(data["list"])
    assert seen == sim.population.records()
    assert sim.stats.list_requests == 3


async def test_rows_per_page_is_capped(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    """rowsPerPage above max_rows_per_page is served, and reported, as the cap."""
    sim.faults.max_rows_per_page = 25
    data = (await get_json(http, viewers_url(sim), rowsPerPage=1000))["data"]
    assert (data["itemsPerPage"], len(data["list"]), data["totalPages"]) == (25, 25, 3)
    assert sim.stats.rows_per_page_requested == Counter({1000: 1})


async def test_a_page_past_the_end_is_empty_with_totals(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """A page beyond the last returns an empty list and the real totals."""
    data = (await get_json(http, viewers_url(sim), page=9, rowsPerPage=10))["data"]
    assert data["list"] == []
    assert (data["totalItems"], data["totalPages"], data["currentPage"]) == (57, 6, 9)
    assert (data["hasPrevious"], data["hasNext"]) == (True, False)


@pytest.mark.parametrize(
    "params",
    [{"page": 0}, {"page": "two"}, {"rowsPerPage": 0}, {"rowsPerPage": "1.5"},
     {"harnessType": "WEBRTC_VIEWER"}, {"systemClients": "maybe"}],
)  # fmt: skip
async def test_invalid_list_parameters_are_400(
    sim: RunningSimulator, http: aiohttp.ClientSession, params: dict[str, str | int]
) -> None:
    """Bad page, rowsPerPage, harnessType or systemClients values get 400 {"message"}."""
    sim.faults.script("500")
    body = await get_json(http, viewers_url(sim), status=400, query=params)
    assert isinstance(body["message"], str)
    assert sim.faults.pending == ("500",)  # a rejected query does not consume a fault


@pytest.mark.parametrize(
    "query",
    [ViewerQuery(harness_type="STORM_HLS_VIEWER"), ViewerQuery(system_clients=True),
     ViewerQuery(system_clients=False), ViewerQuery(search="POLAND"), ViewerQuery(search="203.0"),
     ViewerQuery(search="chrome", system_clients=False, harness_type="STORM_MSE_VIEWER")],
)  # fmt: skip
async def test_filters_select_the_matching_viewers(
    http: aiohttp.ClientSession, query: ViewerQuery
) -> None:
    """harnessType, systemClients and search filter the list like ViewerQuery.matches."""
    async with running_simulator(settings(viewers=600)) as running:
        params: dict[str, str | int] = {"rowsPerPage": 100}
        if query.harness_type:
            params["harnessType"] = query.harness_type
        if query.system_clients is not None:
            params["systemClients"] = str(query.system_clients).lower()
        if query.search:
            params["search"] = query.search
        expected = [r for r in running.population.records() if query.matches(r)]
        assert 0 < len(expected) < 600
        seen: list[JSON] = []
        for page in range(1, len(expected) // 100 + 2):
            data = (await get_json(http, viewers_url(running), page=page, query=params))["data"]
            assert data["totalItems"] == len(expected)
            seen.extend(data["list"])
        assert seen == expected


@pytest.mark.parametrize(
    "field", ["id", "streamKey", "remoteAddress", "countryName", "browserName"]
)
async def test_search_looks_in_each_documented_field(
    sim: RunningSimulator, http: aiohttp.ClientSession, field: str
) -> None:
    """A case-insensitive piece of any searched field finds the viewer."""
    record = sim.population.records()[5]
    needle = str(record[field]).upper()[-6:] if field == "id" else str(record[field]).swapcase()
    data = (await get_json(http, viewers_url(sim), search=needle, rowsPerPage=100))["data"]
    assert record in data["list"]
    assert all(needle.lower() in json.dumps(r).lower() for r in data["list"])


# -- single and batch lookup -----------------------------------------------------------------


async def test_single_viewer_has_nested_detail(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """GET /viewers/{id} returns the record plus userAgentData, connectionData, healthData."""
    record = sim.population.records()[3]
    data = (await get_json(http, f"{viewers_url(sim)}/{record['id']}"))["data"]
    assert {k: v for k, v in data.items() if k in record} == record
    assert data["userAgentData"]["browserName"] == record["browserName"]
    assert data["connectionData"]["remoteAddress"] == record["remoteAddress"]
    assert data["healthData"]["healthScore"] == record["healthScore"]


async def test_unknown_single_viewer_is_404(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """An unknown viewer id gets 404 "Viewer not found"."""
    body = await get_json(http, f"{viewers_url(sim)}/v_0000000000000000", status=404)
    assert body == {"message": "Viewer not found"}


@pytest.mark.parametrize("field", ["ids", "connectionIds"])
async def test_batch_lookup_splits_found_and_not_found(
    sim: RunningSimulator, http: aiohttp.ClientSession, field: str
) -> None:
    """The batch route accepts either field name and returns found records and missing ids."""
    records = sim.population.records()
    ids = [records[0]["id"], "v_gone000000000000", records[7]["id"]]
    async with http.post(f"{viewers_url(sim)}/batch", json={field: ids}, headers=AUTH) as resp:
        assert resp.status == 200
        body = await resp.json()
    assert body == {"data": {"found": [records[0], records[7]], "notFound": [ids[1]]}}


@pytest.mark.parametrize("body", [b"nope", b'{"ids": "v_x"}', b'{"other": []}', b'{"ids": [1]}'])
async def test_malformed_batch_body_is_400(
    sim: RunningSimulator, http: aiohttp.ClientSession, body: bytes
) -> None:
    """A batch body without a list of id strings gets 400 {"message"}."""
    async with http.post(f"{viewers_url(sim)}/batch", data=body, headers=AUTH) as resp:
        assert resp.status == 400
        assert "message" in await resp.json()


async def test_topology_is_a_json_object(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """The topology route answers with nodes that account for every viewer."""
    data = (await get_json(http, f"{sim.url}/api/cluster/topology"))["data"]
    assert sum(node["viewers"] for node in data["nodes"]) == 57


async def test_unknown_routes_get_json_errors(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """Unknown paths get 404 and wrong methods 405, both as {"message"}."""
    assert "message" in await get_json(http, f"{sim.url}/api/cluster/nothing", status=404)
    assert "message" in await get_json(http, f"{sim.url}/elsewhere", status=404)
    async with http.delete(viewers_url(sim), headers=AUTH) as resp:
        assert resp.status == 405
        assert "message" in await resp.json()


# -- scripted and random faults --------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_scripted_5xx_faults_have_json_bodies(
    sim: RunningSimulator, http: aiohttp.ClientSession, status: int
) -> None:
    """A scripted 500/502/503 answers that status with {"message"}, once."""
    sim.faults.script(str(status))
    body = await get_json(http, viewers_url(sim), status=status)
    assert isinstance(body["message"], str)
    await get_json(http, viewers_url(sim))
    assert sim.stats.responses_by_status == Counter({status: 1, 200: 1})


async def test_scripted_html_error_page(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    """A scripted 500-html answers 500 with an HTML page."""
    sim.faults.script("500-html")
    async with http.get(viewers_url(sim), headers=AUTH) as resp:
        assert (resp.status, resp.content_type) == (500, "text/html")
        assert "<html>" in await resp.text()


@pytest.mark.parametrize(("retry_after", "header"), [(1.0, "1"), (2.5, "2.5"), (30, "30")])
async def test_scripted_429_sends_retry_after(
    sim: RunningSimulator, http: aiohttp.ClientSession, retry_after: float, header: str
) -> None:
    """A scripted 429 carries the message and Retry-After in (whole) seconds."""
    sim.faults.retry_after = retry_after
    sim.faults.script("429")
    async with http.get(viewers_url(sim), headers=AUTH) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == header
        assert await resp.json() == {"message": "Too Many Requests"}


async def test_scripted_slow_delays_the_page(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """A slow fault delays a normal page by slow_seconds; concurrent ones count as in flight."""
    sim.faults.slow_seconds = 0.5
    sim.faults.script("slow", "slow", "slow")
    started = time.monotonic()
    bodies = await asyncio.gather(*(get_json(http, viewers_url(sim)) for _ in range(3)))
    assert time.monotonic() - started >= 0.5
    assert all(body["data"]["totalItems"] == 57 for body in bodies)
    assert sim.stats.max_in_flight == 3


async def test_scripted_truncated_body_is_half_a_page(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """A truncated fault is a 200 JSON response whose body is cut in half."""
    sim.faults.script("truncated")
    async with http.get(viewers_url(sim), headers=AUTH) as resp:
        assert (resp.status, resp.content_type) == (200, "application/json")
        cut = await resp.read()
    whole = json.dumps((await get_json(http, viewers_url(sim)))["data"]["list"][0])
    assert cut.startswith(b'{"data":{"totalItems":57')
    assert len(cut) > len(whole)
    with pytest.raises(ValueError, match=r"Unterminated|Expecting"):
        json.loads(cut)


@pytest.mark.parametrize(("fault", "content_type"), [("html-200", "text/html"),
                                                      ("garbage", "application/json")])  # fmt: skip
async def test_scripted_malformed_200s(
    sim: RunningSimulator, http: aiohttp.ClientSession, fault: str, content_type: str
) -> None:
    """html-200 and garbage faults are 200 responses that do not parse as JSON."""
    sim.faults.script(fault)
    async with http.get(viewers_url(sim), headers=AUTH) as resp:
        assert (resp.status, resp.content_type) == (200, content_type)
        raw = await resp.read()
    with pytest.raises(ValueError):  # noqa: PT011 - any decode error will do
        json.loads(raw)


async def test_scripted_schema_no_id(sim: RunningSimulator, http: aiohttp.ClientSession) -> None:
    """schema-no-id serves valid JSON in which exactly one viewer lacks "id"."""
    sim.faults.script("schema-no-id")
    records = (await get_json(http, viewers_url(sim)))["data"]["list"]
    assert ["id" in record for record in records].count(False) == 1
    assert "id" not in records[0]
    assert records[1:] == sim.population.records()[1:10]


async def test_scripted_expire_token_revokes_the_presented_token(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """expire-token fails the request with the auth status and the token stays dead."""
    _, body = await login(http, sim.url)
    headers = {"Authorization": f"Bearer {body['data']['accessToken']}"}
    sim.faults.script("expire-token")
    failed = await get_json(http, viewers_url(sim), headers=headers, status=401)
    assert failed["message"] == "Could not authorize with given access token"
    await get_json(http, viewers_url(sim), headers=headers, status=401)
    sim.faults.script("expire-token")
    await get_json(http, viewers_url(sim), status=401)
    await get_json(http, viewers_url(sim))  # a static token fails once, then works again


@pytest.mark.parametrize("status", [401, 403])
async def test_scripted_auth_failures_leave_the_token_alive(
    sim: RunningSimulator, http: aiohttp.ClientSession, status: int
) -> None:
    """A scripted 401/403 answers with the auth-failure body once; the token still works."""
    sim.faults.script(str(status))
    body = await get_json(http, viewers_url(sim), status=status)
    assert body["message"] == "Could not authorize with given access token"
    await get_json(http, viewers_url(sim))


async def test_scripted_disconnect_closes_without_a_response(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """disconnect closes the connection with no byte of response; the next request is served."""
    sim.faults.script("disconnect")
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(
            b"GET /api/cluster/viewers HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            b"Authorization: Bearer %s\r\n\r\n" % TOKEN.encode()
        )
        assert await reader.read() == b""
    finally:
        writer.close()
        await writer.wait_closed()
    await get_json(http, viewers_url(sim))
    assert sim.stats.disconnects == 1
    assert sim.stats.responses_by_status == Counter({200: 1})


async def test_two_disconnects_defeat_aiohttps_single_retry(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """aiohttp retries a dropped GET once by itself, so a client sees the second drop."""
    sim.faults.script("disconnect", "disconnect")
    with pytest.raises(aiohttp.ServerDisconnectedError):
        await get_json(http, viewers_url(sim))
    assert (sim.stats.disconnects, sim.stats.list_requests) == (2, 2)


async def test_scripted_faults_are_consumed_in_order_before_random_ones(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """Scripted entries win in order ("ok" included) and random faults resume after them."""
    sim.faults.error_rate = 1.0
    sim.faults.script("503", "ok", "429")
    statuses = []
    for _ in range(4):
        async with http.get(viewers_url(sim), headers=AUTH) as resp:
            statuses.append(resp.status)
    assert statuses[:3] == [503, 200, 429]
    assert statuses[3] in {500, 502, 503}


async def test_random_faults_follow_their_rates(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """At rate 1 every page is a 5xx (JSON and HTML), a 429, or malformed."""
    faults = sim.faults
    faults.error_rate = 1.0
    kinds = set()
    for _ in range(30):
        async with http.get(viewers_url(sim), headers=AUTH) as resp:
            assert resp.status in {500, 502, 503}
            kinds.add(resp.content_type)
    assert kinds == {"application/json", "text/html"}
    faults.error_rate, faults.rate_limit_rate = 0.0, 1.0
    async with http.get(viewers_url(sim), headers=AUTH) as resp:
        assert (resp.status, resp.headers["Retry-After"]) == (429, "1")
    faults.rate_limit_rate, faults.malformed_rate = 0.0, 1.0
    for _ in range(10):
        async with http.get(viewers_url(sim), headers=AUTH) as resp:
            assert resp.status == 200
            with pytest.raises(ValueError):  # noqa: PT011 - any decode error will do
                json.loads(await resp.read())


async def test_reorder_fault_shuffles_before_the_page(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """With reorder_rate 1 the page follows the freshly shuffled order, same members."""
    before = sim.population.records()
    sim.faults.reorder_rate = 1.0
    data = (await get_json(http, viewers_url(sim), rowsPerPage=100))["data"]
    after = sim.population.records()
    assert data["list"] == after
    assert data["list"] != before
    assert sorted(r["id"] for r in after) == sorted(r["id"] for r in before)


async def test_churn_per_request_shifts_offsets(
    sim: RunningSimulator, http: aiohttp.ClientSession
) -> None:
    """Churn before each page moves viewers across page boundaries: one pass misses some."""
    sim.faults.churn_per_request = 3
    churned: list[Change] = []
    sim.simulator.change_listeners.append(churned.extend)
    initial = sim.population.ids()
    seen: list[str] = []
    for page in range(1, 7):
        before = [r["id"] for r in sim.population.records()]
        data = (await get_json(http, viewers_url(sim), page=page))["data"]
        assert data["totalItems"] == 57
        page_ids = [r["id"] for r in data["list"]]
        assert page_ids == [r["id"] for r in sim.population.records()][(page - 1) * 10 : page * 10]
        if page > 1:
            assert page_ids != before[(page - 1) * 10 : page * 10]
        seen.extend(page_ids)
    assert len(churned) == 6 * 6
    assert {c.kind for c in churned} == {"left", "joined"}
    still_there = initial & sim.population.ids()
    assert still_there - set(seen)  # a viewer present throughout was never served


async def test_automatic_ticks_step_the_population(http: aiohttp.ClientSession) -> None:
    """With tick set, the population steps by itself and listeners see the changes."""
    ticked = asyncio.Event()
    batches: list[list[Change]] = []

    def listen(changes: list[Change]) -> None:
        batches.append(changes)
        if len(batches) >= 2:
            ticked.set()

    async with running_simulator(settings(viewers=500, tick=0.01)) as running:
        running.simulator.change_listeners.append(listen)
        await asyncio.wait_for(ticked.wait(), timeout=10)
        assert running.population.tick >= 2
        data = (await get_json(http, viewers_url(running)))["data"]
        assert data["list"][0]["duration"] > 0


# -- scenarios: streams, incidents, ramps ---------------------------------------------------

EPOCH_MS = 1_780_000_000_000
ROWS = Faults(max_rows_per_page=1000)


def audience_of(records: list[JSON], stream_key: str) -> list[JSON]:
    """The records of one stream that count as its audience (no system clients)."""
    return [
        r
        for r in records
        if r["streamKey"] == stream_key and r["harnessType"] not in SYSTEM_HARNESS_TYPES
    ]


def test_counted_streams_spread_the_audience_zipf_like() -> None:
    """With streams=N the audience is on live-1 ... live-N, live-k watched about 1/k as much."""
    population = Population(PopulationSettings(seed=2, viewers=6000, streams=5))
    records = population.records()
    counts = Counter(record["streamKey"] for record in records)
    assert set(counts) == {f"live-{k}" for k in range(1, 6)}
    share = [counts[f"live-{k}"] / len(records) for k in range(1, 6)]
    harmonic = sum(1 / k for k in range(1, 6))
    for k, observed in enumerate(share, start=1):
        assert observed == pytest.approx(1 / k / harmonic, rel=0.15)
    apps: dict[str, set[str]] = {}
    for record in records:
        apps.setdefault(record["streamKey"], set()).add(record["applicationId"])
    assert all(len(ids) == 1 for ids in apps.values())  # a stream lives in one application
    assert len(set().union(*apps.values())) == 3


def test_scenario_texts_parse_into_incidents_and_ramps() -> None:
    """The --incident and --ramp forms parse into virtual milliseconds, share and hold."""
    assert Incident.parse("main:30s:2m") == Incident("main", 30_000, 120_000, 0.5)
    assert Incident.parse("live-1:0:500ms:0.25") == Incident("live-1", 0, 500, 0.25)
    assert Ramp.parse("launch:1500:2m") == Ramp("launch", 1500, 120_000, None)
    ramp = Ramp.parse("launch:100:10s:5s")
    assert ramp == Ramp("launch", 100, 10_000, 5_000)
    assert [ramp.target(t * 1000) for t in (0, 1, 5, 10, 15, 16, 20, 25, 99)] == [
        0, 10, 50, 100, 100, 90, 50, 0, 0,
    ]  # fmt: skip
    assert (ramp.end_ms, Ramp("x", 7, 1000).target(10**9)) == (25_000, 7)


def test_same_seed_plays_the_same_scenario() -> None:
    """Two populations with one seed and the same incident and ramp agree tick by tick."""

    def history(seed: int) -> tuple[list[list[Change]], list[JSON]]:
        population = Population(
            PopulationSettings(
                seed=seed,
                viewers=200,
                incidents=(Incident("main", 2000, 3000, 0.6),),
                ramps=(Ramp("launch", 30, 4000, 1000),),
            )
        )
        return [population.step() for _ in range(12)], population.records()

    assert history(4) == history(4)
    assert history(4) != history(5)


async def test_an_incident_holds_its_share_of_one_stream_and_leaves_the_rest_alone(
    http: aiohttp.ClientSession,
) -> None:
    """During an incident SHARE of its stream's viewers show bad graded scores, then >= 70;
    every other record is served exactly as by the same population without the incident."""
    base = PopulationSettings(seed=3, viewers=600, streams=4, epoch_ms=EPOCH_MS)
    incident = Incident("live-1", start_ms=5000, duration_ms=10_000, share=0.3)
    twin = Population(base)  # the ground truth: the same audience, no incident
    scenario = SimulatorSettings(
        population=replace(base, incidents=(incident,)), static_tokens=(TOKEN,)
    )
    async with running_simulator(scenario, ROWS) as sim:
        last_held: set[str] = set()
        ever_held: set[str] = set()
        for tick in range(20):
            if tick:
                sim.population.step()
                twin.step()
            generated_at, records = await served(http, sim)
            held = sim.population.incident_viewers()
            audience = audience_of(records, "live-1")
            expected = {record["id"]: record for record in twin.records()}
            assert [r["id"] for r in records] == list(expected)
            if 5 <= tick < 15:
                assert held <= {r["id"] for r in audience}
                assert abs(len(held) - incident.share * len(audience)) <= 0.5
                assert len(held) > 50
            else:
                assert held == set()
            ever_held |= held
            for record in records:
                assert_documented(record, generated_at)
                score, twin_record = record["healthScore"], expected[record["id"]]
                if record["id"] in held:
                    assert 10 <= score <= 40
                    assert record["healthGrade"] == health_grade(score)
                elif tick == 15 and record["id"] in last_held:  # just over: recovered
                    assert score >= 70
                    assert record["healthGrade"] == health_grade(score)
                elif record["id"] in ever_held and score != twin_record["healthScore"]:
                    assert score >= 70  # recovered until its modelled health next moves
                elif record["id"] in ever_held:  # sent less while it was held
                    del record["outTotalBytes"], twin_record["outTotalBytes"]
                    assert record == twin_record
                else:
                    assert record == twin_record
            last_held = held
        bad_after = [r for r in audience_of(records, "live-1") if 0 < r["healthScore"] < 50]
        assert len(bad_after) < 0.3 * len(audience_of(records, "live-1")) / 2


async def test_a_ramp_grows_its_stream_to_the_asked_size_then_ends_it(
    http: aiohttp.ClientSession,
) -> None:
    """A ramp's new stream grows monotonically to VIEWERS over DURATION, holds, falls to none;
    it holds only audience viewers, and every other record is as without the ramp."""
    base = PopulationSettings(seed=5, viewers=300, epoch_ms=EPOCH_MS)
    ramp = Ramp("launch", viewers=120, duration_ms=10_000, hold_ms=3000)
    twin = Population(base)
    scenario = SimulatorSettings(population=replace(base, ramps=(ramp,)), static_tokens=(TOKEN,))
    async with running_simulator(scenario, ROWS) as sim:
        sizes: list[int] = []
        for tick in range(26):
            if tick:
                sim.population.step()
                twin.step()
            generated_at, records = await served(http, sim)
            launch = [r for r in records if r["streamKey"] == "launch"]
            assert launch == audience_of(records, "launch")  # no system clients
            assert len({r["applicationId"] for r in launch}) <= 1
            sizes.append(len(launch))
            for record in records:
                assert_documented(record, generated_at)
            assert [r for r in records if r["streamKey"] != "launch"] == twin.records()
    up, held, down = sizes[:11], sizes[10:14], sizes[13:]
    assert up == [12 * t for t in range(11)]
    assert all(a <= b for a, b in itertools.pairwise(up))
    assert held == [120] * 4
    assert down == [120 - 12 * t for t in range(11)] + [0, 0]


async def test_record_times_start_at_the_simulator_clock(http: aiohttp.ClientSession) -> None:
    """startTime and generatedAt are recent by the simulator's clock, not a fixed epoch: the
    audience there at the start has watched for a minute to three hours, a viewer who joins
    later starts within the tick it joined."""
    clock = FakeClock(1_790_000_000.0)
    now_ms = 1_790_000_000_000
    async with running_simulator(settings(viewers=300), ROWS, clock=clock) as running:
        generated_at, records = await served(http, running)
        assert generated_at == now_ms
        started = [now_ms - r["startTime"] for r in records]
        assert all(INITIAL_MIN_MS <= age <= INITIAL_MAX_MS for age in started)
        assert max(started) - min(started) > 2 * 3_600_000  # spread over the hours
        before = {r["id"] for r in records}
        joined = {c.viewer_id for c in running.population.step() if c.kind == "joined"}
        generated_at, records = await served(http, running)
        assert generated_at == now_ms + 1000
        for record in records:
            assert_documented(record, generated_at)
        newcomers = [r for r in records if r["id"] in joined - before]
        assert newcomers
        assert all(now_ms <= r["startTime"] <= generated_at for r in newcomers)


def test_one_seed_plays_the_same_audience_at_any_clock() -> None:
    """Two simulators of one seed started a year apart serve the same viewers and changes;
    the only difference is their clock origin: every time is shifted by the year."""
    year_ms = 365 * 86_400_000
    twins = [
        Simulator(settings(viewers=400, seed=11), clock=FakeClock(1_790_000_000.0 + offset))
        for offset in (0.0, year_ms / 1000)
    ]
    histories = [[t.population.step() for _ in range(20)] for t in twins]
    assert histories[0] == histories[1]
    early, late = (t.population.records() for t in twins)
    assert [r["id"] for r in early] == [r["id"] for r in late]
    for a, b in zip(early, late, strict=True):
        assert b["startTime"] - a["startTime"] == year_ms
        assert {**b, "startTime": a["startTime"]} == a
    assert twins[1].population.now_ms - twins[0].population.now_ms == year_ms


# -- notifier simulate -----------------------------------------------------------------------


@contextmanager
def watch_logs(event: str) -> Iterator[tuple[list[MutableMapping[str, Any]], asyncio.Event]]:
    """Collect structlog events; the asyncio.Event is set when `event` is logged."""
    seen: list[MutableMapping[str, Any]] = []
    logged = asyncio.Event()

    def collect(_logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> Any:
        seen.append({**event_dict, "log_level": method})
        if event_dict["event"] == event:
            logged.set()
        raise structlog.DropEvent

    old = structlog.get_config()
    structlog.configure(processors=[collect])
    try:
        yield seen, logged
    finally:
        structlog.configure(**old)


def parse(*argv: str) -> argparse.Namespace:
    """Parse `notifier simulate` options."""
    parser = argparse.ArgumentParser()
    command.configure_parser(parser)
    return parser.parse_args(argv)


async def test_simulate_command_serves_until_stopped(http: aiohttp.ClientSession) -> None:
    """run() logs simulator.listening with the real url, serves, and stops on the event."""
    args = parse("--port", "0", "--viewers", "12", "--seed", "3", "--tick", "0", "--token", "t1")
    stop = asyncio.Event()
    with watch_logs("simulator.listening") as (events, listening):
        task = asyncio.create_task(command.serve(args, stop))
        await asyncio.wait_for(listening.wait(), timeout=10)
        url = events[-1]["url"]
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", url)
        body = await get_json(
            http, f"{url}/api/cluster/viewers", headers={"Authorization": "Bearer t1"}
        )
        assert body["data"]["totalItems"] == 12
        stop.set()
        await asyncio.wait_for(task, timeout=10)
    assert [e["event"] for e in events] == ["simulator.listening", "simulator.stopped"]
    assert events[-1]["list_requests"] == 1


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("500ms", 0.5), ("2s", 2.0), ("1m", 60.0), ("1.5", 1.5), ("1h", 3600.0), ("0", 0.0)],
)
def test_parse_duration(text: str, seconds: float) -> None:
    """Durations accept ms/s/m/h suffixes and bare seconds."""
    assert duration(text) == seconds


@pytest.mark.parametrize("text", ["", "fast", "5 days", "-1s"])
def test_parse_duration_rejects_nonsense(text: str) -> None:
    """Anything else is an argparse type error."""
    with pytest.raises(argparse.ArgumentTypeError):
        duration(text)


def test_options_map_to_settings_and_faults() -> None:
    """Every option lands in SimulatorSettings, PopulationSettings or Faults."""
    args = parse(
        "--seed", "5", "--viewers", "100000", "--tick", "500ms", "--join-rate", "0.1",
        "--leave-rate", "0.2", "--health-change-rate", "0.3", "--no-data-rate", "0.4",
        "--max-rows-per-page", "1000", "--username", "u", "--password", "p", "--token", "a",
        "--token", "b", "--api-key", "k", "--token-ttl", "10m", "--fault-5xx", "0.01",
        "--fault-429", "0.02", "--retry-after", "3", "--fault-slow", "0.03", "--slow-seconds",
        "4", "--fault-malformed", "0.04", "--fault-reorder", "0.05", "--churn-per-request", "6",
        "--extra-fields",
    )  # fmt: skip
    sim_settings, faults = command.settings_from_args(args)
    assert sim_settings == SimulatorSettings(
        population=PopulationSettings(
            seed=5, viewers=100_000, join_rate=0.1, leave_rate=0.2, health_change_rate=0.3,
            no_data_rate=0.4, tick_ms=500, extra_fields=True,
        ),
        username="u", password="p", static_tokens=("a", "b"), api_key="k", tick=0.5,
    )  # fmt: skip
    assert faults == Faults(
        seed=5, error_rate=0.01, rate_limit_rate=0.02, retry_after=3.0, slow_rate=0.03,
        slow_seconds=4.0, malformed_rate=0.04, reorder_rate=0.05, churn_per_request=6,
        max_rows_per_page=1000, token_ttl=600.0,
    )  # fmt: skip
    defaults, _ = command.settings_from_args(parse())
    assert (defaults.tick, defaults.username, defaults.static_tokens) == (1.0, "admin", ())


def test_invalid_rates_are_rejected() -> None:
    """A rate outside 0..1 is a usage error."""
    with pytest.raises(SystemExit):
        parse("--fault-5xx", "1.5")


def test_scenario_options_map_to_population_settings() -> None:
    """--streams, --incident and --ramp (repeatable) land in PopulationSettings."""
    args = parse(
        "--streams", "12", "--incident", "live-1:30s:2m", "--incident", "launch:1m:30s:0.25",
        "--ramp", "launch:1500:2m:1m",
    )  # fmt: skip
    population = command.settings_from_args(args)[0].population
    assert population.streams == 12
    assert population.incidents == (
        Incident("live-1", 30_000, 120_000, 0.5),
        Incident("launch", 60_000, 30_000, 0.25),
    )
    assert population.ramps == (Ramp("launch", 1500, 120_000, 60_000),)
    assert population.epoch_ms is None  # the simulator starts it at its clock
    defaults = command.settings_from_args(parse())[0].population
    assert (defaults.streams, defaults.incidents, defaults.ramps) == (None, (), ())


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--incident", "main"], "expected STREAM_KEY:START:DURATION[:SHARE]"),
        (["--incident", "main:5s"], "expected STREAM_KEY:START:DURATION[:SHARE]"),
        (["--incident", "main:soon:1m"], "start 'soon': expected a duration"),
        (["--incident", "main:5s:0s"], "duration '0s': must be above 0"),
        (["--incident", "main:5s:1m:1.5"], "share '1.5': must be above 0 and at most 1"),
        (["--incident", "main:5s:1m:half"], "share 'half': expected a number"),
        (["--ramp", "launch:many:1m"], "viewers 'many': expected a whole number"),
        (["--ramp", "launch:0:1m"], "viewers '0': expected a whole number, 1 or more"),
        (["--ramp", "launch:10:0s"], "duration '0s': must be above 0"),
        (["--ramp", "launch:10:1m:later"], "hold 'later': expected a duration"),
        (["--ramp", "launch:10:1m:1m:1m"], "expected STREAM_KEY:VIEWERS:DURATION[:HOLD]"),
        (["--streams", "0"], "expected a whole number, 1 or more"),
    ],
)
def test_malformed_scenario_options_are_one_line_usage_errors(
    argv: list[str], reason: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """A malformed --incident, --ramp or --streams exits 2 with one line naming the reason."""
    parser = Parser(prog="notifier simulate")
    command.configure_parser(parser)
    with pytest.raises(SystemExit) as exited:
        parser.parse_args(argv)
    err = capsys.readouterr().err
    assert exited.value.code == 2
    assert err.startswith(f"notifier: argument {argv[-2]}: ")
    assert err.endswith("(see 'notifier simulate --help')\n")
    assert err.count("\n") == 1
    assert reason in err


@pytest.mark.parametrize(
    ("argv", "reason"),
    [
        (["--incident", "live-1:0s:1m"], "stream 'live-1' is neither one of the streams (123,"),
        (["--streams", "3", "--incident", "live-4:0s:1m"], "(live-1, live-2, live-3)"),
        (["--streams", "30", "--incident", "live-40:0s:1m"], "(live-1 ... live-30)"),
        (["--ramp", "launch:10:1m", "--tick", "0"], "need --tick above 0"),
    ],
)
def test_inconsistent_scenario_options_are_config_errors(argv: list[str], reason: str) -> None:
    """An incident on a stream nobody watches, or scenarios without ticks, stop the command
    before it serves, with a one-line ConfigError (the CLI's exit status 2)."""
    with pytest.raises(ConfigError) as raised:
        command.main(parse("--port", "0", *argv))
    message = str(raised.value)
    assert reason in message
    assert message.endswith("(see 'notifier simulate --help')")
    assert "\n" not in message
