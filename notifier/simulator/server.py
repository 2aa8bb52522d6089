"""The simulated Storm cluster API: an aiohttp application over a `Population`.

Routes (shapes from storm-api.md):

    POST /api/auth/login              credentials -> Bearer token (rate limited per IP)
    POST /api/auth/logout             revokes the presented login token
    GET  /api/cluster/viewers         paged, filtered list; the only route faults apply to
    GET  /api/cluster/viewers/{id}    one viewer with nested userAgentData/connectionData/healthData
    POST /api/cluster/viewers/batch   {"ids" | "connectionIds": [...]} -> found / notFound
    GET  /api/cluster/topology        a small fixed cluster description

Every `/api` request needs `X-Api-Key` when one is configured; every one but login needs a
live Bearer token. Errors are JSON `{"message"}` bodies. A viewer-list request is handled as:
validate the query (400, consumes no fault) -> draw a fault (scripted first, else random) ->
faults that replace the page answer now (5xx, 429, 401/403, expire-token, disconnect,
html-200, garbage) -> "slow" waits -> churn, maybe reorder -> slice and encode the page
("truncated" and "schema-no-id" then spoil it).

Record times (`startTime`, `generatedAt`) follow the population's virtual clock, which starts
at the injected `clock`'s now (unless the settings fix `epoch_ms`) and advances `tick_ms` per
tick; token expiry, login rate limiting and error `timestamp`s follow the injected `clock`. Reading
requests and writing responses live in `wire`; tokens and the login limit in `tokens`.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import time
from collections import Counter
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Any, Final

import msgspec
import structlog
from aiohttp import web

from notifier.simulator.faults import ERROR_FAULTS, Faults
from notifier.simulator.population import Change, Population, PopulationSettings
from notifier.simulator.tokens import Tokens
from notifier.simulator.wire import (
    GARBAGE,
    REASONS,
    BadRequest,
    Disconnect,
    bearer,
    detail_record,
    html,
    json_body,
    json_response,
    list_body,
    list_params,
    message,
    topology,
)

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Callable

    from aiohttp.typedefs import Handler

__all__ = ["RunningSimulator", "Simulator", "SimulatorSettings", "Stats", "running_simulator"]

log = structlog.get_logger("notifier.simulator")

AUTH_FAILED: Final = "Could not authorize with given access token"
_LOGIN_PATH: Final = "/api/auth/login"


@dataclass(frozen=True, slots=True)
class SimulatorSettings:
    """What the simulated cluster accepts; `Faults` holds what may change while it runs."""

    population: PopulationSettings = field(default_factory=PopulationSettings)
    username: str | None = "admin"
    password: str | None = "admin"  # noqa: S105 - the documented demo default
    static_tokens: tuple[str, ...] = ()
    api_key: str | None = None
    login_limit_per_minute: int = 5
    tick: float | None = None


@dataclass(slots=True)
class Stats:
    """Counters for tests and benchmarks."""

    logins: int = 0
    login_attempts: int = 0
    logouts: int = 0
    list_requests: int = 0
    detail_requests: int = 0
    batch_requests: int = 0
    disconnects: int = 0
    responses_by_status: Counter[int] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    rows_per_page_requested: Counter[int] = field(default_factory=Counter)


class Simulator:
    """One simulated cluster: population, faults, tokens and counters behind `app()`."""

    def __init__(
        self,
        settings: SimulatorSettings,
        faults: Faults | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings
        population = settings.population
        if population.epoch_ms is None:  # records start recently, as a live cluster's do
            population = replace(population, epoch_ms=int(clock() * 1000))
        self.population = Population(population)
        self.faults = faults if faults is not None else Faults()
        self.stats = Stats()
        self._clock = clock
        self._tokens = Tokens(settings.static_tokens, settings.login_limit_per_minute, clock=clock)
        #: Called with the changes of every automatic tick and of every request's churn
        #: (direct `population` calls are the caller's to record).
        self.change_listeners: list[Callable[[list[Change]], None]] = []

    def app(self) -> web.Application:
        """A fresh aiohttp application serving this simulator."""
        app = web.Application(middlewares=[self._outer_middleware, self._auth_middleware])
        app.router.add_post(_LOGIN_PATH, self._login)
        app.router.add_post("/api/auth/logout", self._logout)
        app.router.add_get("/api/cluster/viewers", self._list)
        app.router.add_post("/api/cluster/viewers/batch", self._batch)
        app.router.add_get("/api/cluster/viewers/{viewer_id}", self._detail)
        app.router.add_get("/api/cluster/topology", self._topology)
        if self.settings.tick:
            app.cleanup_ctx.append(self._ticker)
        return app

    def expire_tokens(self) -> None:
        """Revoke every login token now (static tokens stay valid)."""
        self._tokens.clear()

    def _now_ms(self) -> int:
        return int(self._clock() * 1000)

    # -- middlewares ---------------------------------------------------------------------

    @web.middleware
    async def _outer_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Count responses, turn router errors into JSON, drop connections on request."""
        try:
            response = await handler(request)
        except Disconnect:
            self.stats.disconnects += 1
            if request.transport is not None:
                request.transport.close()
            return web.Response()
        except BadRequest as exc:
            response = message(400, str(exc))
        except web.HTTPException as exc:
            response = message(exc.status, exc.reason)
        self.stats.responses_by_status[response.status] += 1
        return response

    @web.middleware
    async def _auth_middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        """Check X-Api-Key on /api, and the Bearer token on /api except login."""
        if not request.path.startswith("/api/"):
            return await handler(request)
        expected = self.settings.api_key
        if expected is not None:
            presented = request.headers.get("X-Api-Key")
            if presented is None:
                return message(401, "Missing API key")
            if not secrets.compare_digest(presented.encode(), expected.encode()):
                return message(403, "Invalid API key")
        if request.path != _LOGIN_PATH and not self._tokens.alive(bearer(request)):
            return self._auth_failure(self.faults.auth_failure_status)
        return await handler(request)

    def _auth_failure(self, status: int) -> web.Response:
        return json_response(status, {"message": AUTH_FAILED, "timestamp": self._now_ms()})

    # -- auth ----------------------------------------------------------------------------

    async def _login(self, request: web.Request) -> web.Response:
        self.stats.login_attempts += 1
        now = self._clock()
        retry_after = self._tokens.throttle(request.remote or "unknown", now)
        if retry_after is not None:
            return message(
                429, "Too many login attempts", {"Retry-After": str(math.ceil(retry_after))}
            )
        body = await json_body(request)
        username, password = body.get("username"), body.get("password")
        if not isinstance(username, str) or not isinstance(password, str):
            raise BadRequest("username and password are required")
        expected_user, expected_password = self.settings.username, self.settings.password
        if (
            expected_user is None
            or expected_password is None
            or not secrets.compare_digest(username.encode(), expected_user.encode())
            or not secrets.compare_digest(password.encode(), expected_password.encode())
        ):
            return message(401, "Username or password is incorrect")
        ttl = self.faults.token_ttl
        token = self._tokens.issue(username, now, ttl)
        self.stats.logins += 1
        expire_ms = int((now + ttl) * 1000)
        data = {
            "accessToken": token,
            "tokenType": "Bearer",
            "expireDate": expire_ms,
            "remainingTime": max(0, expire_ms - int(now * 1000) - 1),
            "username": username,
        }
        return json_response(200, {"data": data, "message": "Authentication successful"})

    async def _logout(self, request: web.Request) -> web.Response:
        token = bearer(request)
        if token is not None and self._tokens.revoke(token):
            self.stats.logouts += 1
        return message(200, "Logout successful")

    # -- viewers -------------------------------------------------------------------------

    async def _list(self, request: web.Request) -> web.Response:
        self.stats.list_requests += 1
        self.stats.in_flight += 1
        self.stats.max_in_flight = max(self.stats.max_in_flight, self.stats.in_flight)
        try:
            return await self._serve_list(request)
        finally:
            self.stats.in_flight -= 1

    async def _serve_list(self, request: web.Request) -> web.Response:
        started = time.perf_counter()
        page, rows, query = list_params(request)
        self.stats.rows_per_page_requested[rows] += 1
        faults = self.faults
        fault = faults.draw()
        if fault != "ok":
            log.debug("simulator.fault_injected", fault=fault, path=request.path)
        early = self._early_fault(fault, request)
        if early is not None:
            return early
        if fault == "slow":
            await asyncio.sleep(faults.slow_seconds)
        population = self.population
        if faults.churn_per_request > 0:
            self._publish(population.churn(faults.churn_per_request))
        if faults.draw_reorder():
            population.shuffle()
        per_page = max(1, min(rows, faults.max_rows_per_page))
        total, items = population.page((page - 1) * per_page, per_page, query)
        if fault == "schema-no-id" and items:
            record = msgspec.json.decode(items[0])
            del record["id"]
            items = [msgspec.json.encode(record), *items[1:]]
        elapsed_ms = int((time.perf_counter() - started) * 1000)
        body = list_body(
            total, per_page, page, items, elapsed_ms=elapsed_ms, generated_at=population.now_ms
        )
        if fault == "truncated":
            body = body[: len(body) // 2]
        return web.Response(body=body, content_type="application/json")

    def _early_fault(  # noqa: PLR0911 - one return per kind of fault reads best
        self, fault: str, request: web.Request
    ) -> web.Response | None:
        """The response for faults that replace the page entirely, else None."""
        if fault in ERROR_FAULTS:
            status = int(fault[:3])
            if fault.endswith("-html"):
                return html(status, REASONS[status])
            return message(status, REASONS[status])
        if fault == "429":
            return message(
                429, "Too Many Requests", {"Retry-After": self.faults.retry_after_header}
            )
        if fault in {"401", "403"}:
            return self._auth_failure(int(fault))
        if fault == "expire-token":
            token = bearer(request)
            if token is not None:
                self._tokens.revoke(token)
            return self._auth_failure(self.faults.auth_failure_status)
        if fault == "disconnect":
            raise Disconnect
        if fault == "html-200":
            return html(200, "Sign in")
        if fault == "garbage":
            return web.Response(body=GARBAGE, content_type="application/json")
        return None

    async def _detail(self, request: web.Request) -> web.Response:
        self.stats.detail_requests += 1
        record = self.population.get(request.match_info["viewer_id"])
        if record is None:
            return message(404, "Viewer not found")
        return json_response(200, {"data": detail_record(record)})

    async def _batch(self, request: web.Request) -> web.Response:
        self.stats.batch_requests += 1
        body = await json_body(request)
        ids = body.get("ids", body.get("connectionIds"))
        if not isinstance(ids, list) or not all(isinstance(i, str) for i in ids):
            raise BadRequest("ids must be a list of viewer ids")
        found: list[dict[str, Any]] = []
        not_found: list[str] = []
        for viewer_id in dict.fromkeys(ids):
            record = self.population.get(viewer_id)
            if record is None:
                not_found.append(viewer_id)
            else:
                found.append(record)
        return json_response(200, {"data": {"found": found, "notFound": not_found}})

    async def _topology(self, _request: web.Request) -> web.Response:
        data = topology(len(self.population))
        return json_response(200, {"data": data, "meta": {"generatedAt": self.population.now_ms}})

    def _publish(self, changes: list[Change]) -> None:
        for listener in self.change_listeners:
            listener(changes)

    # -- ticking -------------------------------------------------------------------------

    async def _ticker(self, _app: web.Application) -> AsyncIterator[None]:
        task = asyncio.create_task(self._tick_forever(self.settings.tick or 1.0))
        yield
        task.cancel()
        with suppress(asyncio.CancelledError):
            await task

    async def _tick_forever(self, interval: float) -> None:
        loop = asyncio.get_running_loop()
        due = loop.time()
        while True:
            due += interval  # on a fixed grid: a slow step does not put the clock behind
            await asyncio.sleep(max(0.0, due - loop.time()))  # pacing, not synchronisation
            changes = self.population.step()
            self._publish(changes)
            log.debug(
                "simulator.ticked",
                tick=self.population.tick,
                viewers=len(self.population),
                changes=len(changes),
            )


@dataclass(frozen=True, slots=True)
class RunningSimulator:
    """A simulator listening on a real port."""

    url: str
    port: int
    simulator: Simulator

    @property
    def population(self) -> Population:
        """The simulator's population."""
        return self.simulator.population

    @property
    def faults(self) -> Faults:
        """The simulator's fault switches."""
        return self.simulator.faults

    @property
    def stats(self) -> Stats:
        """The simulator's counters."""
        return self.simulator.stats


_DEFAULT_SETTINGS: Final = SimulatorSettings()


@asynccontextmanager
async def running_simulator(
    settings: SimulatorSettings = _DEFAULT_SETTINGS,
    faults: Faults | None = None,
    *,
    host: str = "127.0.0.1",
    port: int = 0,
    clock: Callable[[], float] = time.time,
    shutdown_timeout: float = 1.0,
) -> AsyncIterator[RunningSimulator]:
    """Serve a new `Simulator` on host:port (0 picks a free port) until the block exits."""
    simulator = Simulator(settings, faults, clock=clock)
    runner = web.AppRunner(simulator.app(), access_log=None, shutdown_timeout=shutdown_timeout)
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        actual_port: int = runner.addresses[0][1]
        shown = f"[{host}]" if ":" in host else host
        yield RunningSimulator(f"http://{shown}:{actual_port}", actual_port, simulator)
    finally:
        await runner.cleanup()
