"""The Storm cluster API client: every viewer of a cluster, read correctly and fast.

A poll reads page 1, then the remaining pages ``concurrency`` at a time, following what the
server reports as it goes (a capped ``rowsPerPage``, totals that grow or shrink mid-pass);
``paging`` decides what the pages add up to. Failed pages are retried with backoff; the whole
poll, successful requests included, ends when ``poll_budget`` runs out. ``Retry-After`` pauses
every request of the cluster (for ``MAX_RETRY_AFTER`` at most). The result says whether the poll
is complete: an incomplete poll must never be mistaken for "everyone left".
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import random
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

import aiohttp
import msgspec
import structlog

from notifier import __version__
from notifier.durations import format_duration
from notifier.errors import (
    StormAuthError,
    StormError,
    StormRequestError,
    StormSchemaError,
    StormUnavailable,
)

from ._retry import Backoff, RetryableFailure, is_retryable_status, parse_retry_after
from .auth import Auth, LoginAuth, LoginResponse, StaticTokenAuth, is_auth_failure
from .decode import MalformedBody, Page, Viewer, decode_found, decode_page, describe_status
from .paging import MAX_PAGES, Tally, check_page, extended, last_page, more_after, repeating

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping

    from multidict import CIMultiDictProxy

    from notifier.config import ClusterSettings

__all__ = ["Lookup", "Poll", "StormClient", "create_session"]

VIEWERS_PATH = "/api/cluster/viewers"
BATCH_PATH = "/api/cluster/viewers/batch"
SCHEMA_ATTEMPTS = 2  # a schema error is retried once: it is rarely transient
BATCH_SIZE = 100
MAX_RETRY_AFTER = 300.0  # one Retry-After pauses the cluster for 5 minutes at most

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Poll:
    """The outcome of reading every page once.

    ``complete`` is true only when every page was fetched and parsed; otherwise ``error`` says
    why and ``viewers`` holds only what was read (never to be taken as the audience).
    """

    cluster: str
    complete: bool
    viewers: Mapping[str, Viewer]
    error: str | None
    pages: int
    requests: int
    duplicates: int
    drift: bool
    started_at: float
    duration: float


@dataclass(frozen=True, slots=True)
class Lookup:
    """Result of a batch lookup: the viewers found, and the ids the server does not know."""

    found: Mapping[str, Viewer]
    not_found: frozenset[str]


def create_session(settings: ClusterSettings) -> aiohttp.ClientSession:
    """An aiohttp session suited to one cluster: pooled keep-alive, TLS as configured."""
    connector = aiohttp.TCPConnector(
        limit=settings.concurrency + 2,
        ssl=settings.verify_tls,
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(connector=connector, trust_env=False)


class StormClient:
    """Reads one Storm cluster. Pass in the aiohttp session (see ``create_session``)."""

    def __init__(
        self,
        settings: ClusterSettings,
        session: aiohttp.ClientSession,
        *,
        backoff: Backoff | None = None,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._settings = settings
        self._session = session
        self._base = settings.base_url
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._headers = {
            "Accept": "application/json",
            "User-Agent": f"storm-notifier/{__version__}",
        }
        if settings.auth.api_key is not None:
            self._headers["X-Api-Key"] = settings.auth.api_key.get_secret_value()
        self._log = structlog.get_logger("notifier.storm").bind(cluster=settings.name)
        self._auth: Auth
        if settings.auth.token is not None:
            self._auth = StaticTokenAuth(settings.auth.token)
        else:
            self._auth = LoginAuth(
                self._post_login,
                self._post_logout,
                clock=clock,
                wall_clock=wall_clock,
                log=self._log,
            )
        self._paused_until = 0.0
        self._requests = 0
        self._failing: tuple[str, str, int] | None = None  # the latest request being retried
        self._batch_field = "ids"

    @property
    def logins(self) -> int:
        """Successful logins so far (0 with a static token)."""
        return self._auth.logins if isinstance(self._auth, LoginAuth) else 0

    # --- public operations --------------------------------------------------------------------

    async def poll(self) -> Poll:
        """Read every page once; never raises a ``StormError``, the result says what happened."""
        started, wall = self._clock(), self._wall_clock()
        deadline = started + self._settings.poll_budget
        requests_before = self._requests
        gathered = Tally()
        error: str | None = None
        try:
            async with self._budget("the poll"):
                for query in self._queries():
                    await self._read_pass(query, deadline, gathered)
        except StormError as exc:
            error = str(exc)
        poll = Poll(
            cluster=self._settings.name,
            complete=error is None,
            viewers=gathered.viewers,
            error=error,
            pages=gathered.pages,
            requests=self._requests - requests_before,
            duplicates=gathered.duplicates,
            drift=gathered.drift,
            started_at=wall,
            duration=self._clock() - started,
        )
        if error is None:
            self._log.debug(
                "storm.poll_completed",
                viewers=len(poll.viewers),
                pages=poll.pages,
                duration=round(poll.duration, 3),
            )
        else:
            self._log.debug("storm.poll_incomplete", error=error, pages=poll.pages)
        return poll

    async def count(self) -> int | None:
        """How many viewers the cluster reports (one small request): a reachability check."""
        deadline = self._clock() + self._settings.poll_budget
        async with self._budget("counting viewers"):
            page = await self._fetch_page(self._base_query(), 1, deadline, rows=1)
        return page.total_items

    async def lookup(self, viewer_ids: Iterable[str]) -> Lookup:
        """Ask ``POST /api/cluster/viewers/batch`` which of ``viewer_ids`` are connected."""
        ids = list(dict.fromkeys(viewer_ids))
        deadline = self._clock() + self._settings.poll_budget
        found: dict[str, Viewer] = {}
        not_found: set[str] = set()
        async with self._budget("the batch lookup"):
            for start in range(0, len(ids), BATCH_SIZE):
                chunk = ids[start : start + BATCH_SIZE]
                what = f"batch lookup of {len(chunk)} ids"
                chunk_found = await self._retrying(
                    what, deadline, functools.partial(self._batch, chunk)
                )
                found.update(chunk_found)
                not_found.update(i for i in chunk if i not in chunk_found)
        return Lookup(found=found, not_found=frozenset(not_found))

    async def aclose(self) -> None:
        """Log out if logged in (best effort). The session belongs to the caller."""
        await self._auth.aclose()

    @contextlib.asynccontextmanager
    async def _budget(self, what: str) -> AsyncIterator[None]:
        """Cut the work inside at ``poll_budget``, however well its requests are going."""
        self._failing = None
        try:
            async with asyncio.timeout(self._settings.poll_budget) as timeout:
                yield
        except TimeoutError:
            if not timeout.expired():
                raise
            if self._failing is not None:  # the time went on a failing request: say which
                raise self._gave_up(*self._failing) from None
            budget = format_duration(self._settings.poll_budget)
            raise StormUnavailable(
                f"{what} did not finish within the poll budget ({budget})"
            ) from None

    # --- paging -------------------------------------------------------------------------------

    def _base_query(self) -> dict[str, str]:
        filters = self._settings.filters
        query: dict[str, str] = {}
        if filters.search:
            query["search"] = filters.search
        if filters.system_clients is not None:
            query["systemClients"] = "true" if filters.system_clients else "false"
        return query

    def _queries(self) -> list[dict[str, str]]:
        base = self._base_query()
        types = self._settings.filters.harness_types
        if not types:
            return [base]
        return [{**base, "harnessType": harness} for harness in types]

    async def _read_pass(self, query: dict[str, str], deadline: float, into: Tally) -> None:
        into.start_pass()
        first = await self._fetch_page(query, 1, deadline)
        per_page = first.items_per_page or len(first.viewers) or None
        new = into.add(first, 1, per_page)
        target = last_page(first, per_page)
        if target is None:
            await self._read_sequentially(query, deadline, into, first, per_page)
        else:
            target = extended(target, 1, first, new)
            await self._read_concurrently(query, deadline, into, target, per_page)
        into.check_pass()

    async def _read_concurrently(
        self, query: dict[str, str], deadline: float, into: Tally, target: int, per_page: int | None
    ) -> None:
        """Pages 2 to ``target``, ``concurrency`` at a time, moving the target as totals change."""
        next_page = 2
        in_flight: dict[asyncio.Task[Page], int] = {}
        try:
            while True:
                while next_page <= target and len(in_flight) < self._settings.concurrency:
                    fetch = self._fetch_page(query, next_page, deadline, per_page=per_page)
                    in_flight[asyncio.create_task(fetch)] = next_page
                    next_page += 1
                if not in_flight:
                    return
                done, _ = await asyncio.wait(in_flight, return_when=asyncio.FIRST_COMPLETED)
                for task in done:
                    number = in_flight.pop(task)
                    try:
                        page = task.result()
                    except StormRequestError as exc:
                        if not await self._is_past_end(query, number, deadline, per_page, exc):
                            raise
                        continue
                    new = into.add(page, number, per_page)
                    reported = last_page(page, per_page)
                    if reported is not None and reported > target:
                        target = reported  # the audience grew mid-pass
                    if number == target:
                        target = extended(target, number, page, new)
        finally:
            for task in in_flight:
                task.cancel()
            if in_flight:
                await asyncio.wait(in_flight)

    async def _read_sequentially(
        self, query: dict[str, str], deadline: float, into: Tally, first: Page, size: int | None
    ) -> None:
        """For servers that report no totals: follow hasNext (or full pages) one at a time."""
        page, number, new = first, 1, len(first.viewers)
        while number < MAX_PAGES and more_after(page, size or 0):
            if not new:
                raise repeating(number)
            number += 1
            page = await self._fetch_page(query, number, deadline, per_page=size)
            new = into.add(page, number, size)

    async def _is_past_end(
        self,
        query: dict[str, str],
        number: int,
        deadline: float,
        per_page: int | None,
        exc: StormRequestError,
    ) -> bool:
        """A 400/404 for a page past the end of a shrunken audience means "no more rows"."""
        if exc.status not in (400, 404, 416):
            return False
        current = last_page(await self._fetch_page(query, 1, deadline), per_page)
        return current is not None and number > current

    async def _fetch_page(
        self,
        query: dict[str, str],
        number: int,
        deadline: float,
        *,
        rows: int | None = None,
        per_page: int | None = None,
    ) -> Page:
        """Page ``number``, checked against the request (``per_page``: what page 1 held)."""
        params = {
            **query,
            "page": str(number),
            "rowsPerPage": str(rows or self._settings.page_size),
        }

        async def attempt() -> Page:
            page = await self._get_page(params)
            check_page(page, number, per_page)
            return page

        return await self._retrying(f"page {number}", deadline, attempt, schema_attempts=True)

    async def _get_page(self, params: dict[str, str]) -> Page:
        status, headers, body = await self._call("GET", VIEWERS_PATH, params=params)
        self._raise_for_status(status, headers, body)
        try:
            return decode_page(body)
        except MalformedBody as exc:
            kind = headers.get("Content-Type", "")
            if "html" in kind.lower() or body.lstrip()[:1] == b"<":
                raise RetryableFailure("an HTML page instead of JSON") from None
            raise RetryableFailure(str(exc)) from None

    async def _batch(self, ids: list[str]) -> dict[str, Viewer]:
        for field_name in dict.fromkeys((self._batch_field, "connectionIds", "ids")):
            payload = msgspec.json.encode({field_name: ids})
            status, headers, body = await self._call("POST", BATCH_PATH, data=payload)
            if status == 400 and field_name != "connectionIds":
                continue  # some deployments call the field connectionIds
            self._raise_for_status(status, headers, body)
            self._batch_field = field_name
            try:
                return {viewer.id: viewer for viewer in decode_found(body)}
            except MalformedBody as exc:
                raise RetryableFailure(str(exc)) from None
        raise StormRequestError("batch lookup refused both 'ids' and 'connectionIds'", status=400)

    # --- one request, with auth and retries -----------------------------------------------------

    async def _retrying(
        self,
        what: str,
        deadline: float,
        attempt: Callable[[], Awaitable[T]],
        *,
        schema_attempts: bool = False,
    ) -> T:
        failures = 0
        schema_failures = 0
        while True:
            await self._wait_for_pause(deadline, what)
            try:
                result = await attempt()
            except StormSchemaError:
                schema_failures += 1
                if not schema_attempts or schema_failures >= SCHEMA_ATTEMPTS:
                    raise
                reason, retry_after = "the body did not have the documented shape", None
            except RetryableFailure as failure:
                reason, retry_after = failure.reason, self._capped(failure.retry_after, what)
            else:
                if failures and self._failing is not None and self._failing[0] == what:
                    self._failing = None
                return result
            failures += 1
            delay = (
                retry_after if retry_after is not None else self._backoff.delay(failures, self._rng)
            )
            now = self._clock()
            if retry_after is not None:
                self._paused_until = max(self._paused_until, now + retry_after)
            self._failing = (what, reason, failures)
            if now + delay > deadline:
                raise self._gave_up(what, reason, failures)
            self._log.info(
                "storm.request_retry",
                what=what,
                attempt=failures,
                reason=reason,
                delay=round(delay, 3),
            )
            await self._sleep(delay)

    def _gave_up(self, what: str, reason: str, failures: int) -> StormUnavailable:
        budget = format_duration(self._settings.poll_budget)
        return StormUnavailable(
            f"{what}: {reason} (gave up after {failures} attempts; poll budget {budget})"
        )

    def _capped(self, retry_after: float | None, what: str) -> float | None:
        """A Retry-After, cut to ``MAX_RETRY_AFTER``: one answer must not silence a cluster."""
        if retry_after is None or retry_after <= MAX_RETRY_AFTER:
            return retry_after
        self._log.warning(
            "storm.retry_after_capped",
            what=what,
            retry_after=round(retry_after),
            honoured=MAX_RETRY_AFTER,
        )
        return MAX_RETRY_AFTER

    async def _wait_for_pause(self, deadline: float, what: str) -> None:
        wait = self._paused_until - self._clock()
        if wait <= 0:
            return
        if self._clock() + wait > deadline:
            raise StormUnavailable(
                f"{what}: the cluster asked to wait {wait:.0f}s (Retry-After), past the poll budget"
            )
        await self._sleep(wait)

    async def _call(
        self,
        method: str,
        path: str,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        """One authenticated request; a rejected token gets one fresh login, then is an error."""
        token = await self._auth.token()
        status, headers, body = await self._send(method, path, token, params=params, data=data)
        if is_auth_failure(status, body):
            token = await self._auth.rejected(token, describe_status(status, body))
            status, headers, body = await self._send(method, path, token, params=params, data=data)
            if is_auth_failure(status, body):
                raise StormAuthError(
                    f"still refused after a fresh login: {describe_status(status, body)}"
                )
        return status, headers, body

    async def _send(
        self,
        method: str,
        path: str,
        token: str | None,
        *,
        params: Mapping[str, str] | None = None,
        data: bytes | None = None,
    ) -> tuple[int, CIMultiDictProxy[str], bytes]:
        headers = dict(self._headers)
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if data is not None:
            headers["Content-Type"] = "application/json"
        timeout = self._settings.timeout
        self._requests += 1
        try:
            async with self._session.request(
                method,
                self._base + path,
                params=params,
                data=data,
                headers=headers,
                timeout=aiohttp.ClientTimeout(total=timeout),
                allow_redirects=False,
            ) as response:
                body = await response.read()
                return response.status, response.headers, body
        except TimeoutError:
            raise RetryableFailure(f"no answer within {format_duration(timeout)}") from None
        except aiohttp.ClientError as exc:
            raise RetryableFailure(_transport_reason(exc)) from None

    def _raise_for_status(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        if 200 <= status < 300:
            return
        reason = describe_status(status, body)
        if is_retryable_status(status):
            retry_after = parse_retry_after(headers.get("Retry-After"), self._wall_clock())
            raise RetryableFailure(reason, retry_after=retry_after)
        if 300 <= status < 400:
            reason += " (redirects are not followed: check base_url)"
        raise StormRequestError(reason, status=status)

    # --- login ----------------------------------------------------------------------------------

    async def _post_login(self) -> LoginResponse:
        auth = self._settings.auth
        if auth.username is None or auth.password is None:
            raise StormAuthError("login needs a username and a password")
        payload = msgspec.json.encode(
            {"username": auth.username, "password": auth.password.get_secret_value()}
        )
        status, headers, body = await self._send("POST", "/api/auth/login", None, data=payload)
        return LoginResponse(status=status, body=body, retry_after=headers.get("Retry-After"))

    async def _post_logout(self, token: str) -> None:
        try:
            await self._send("POST", "/api/auth/logout", token)
        except RetryableFailure as failure:
            self._log.info("storm.logout_failed", reason=failure.reason)


def _transport_reason(exc: aiohttp.ClientError) -> str:
    if isinstance(exc, aiohttp.ClientPayloadError):
        return "the body was cut off"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the server closed the connection"
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect ({exc.os_error.strerror or type(exc.os_error).__name__})"
    return f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"
