"""The Storm cluster API client: every viewer of a cluster, read correctly and fast.

A poll reads page 1, then the remaining pages ``concurrency`` at a time, following what the
server reports as it goes (a capped ``rowsPerPage``, totals that grow or shrink mid-pass);
``paging`` decides what the pages add up to. Failed pages are retried with backoff; the whole
poll, successful requests included, ends when ``poll_budget`` runs out. ``Retry-After`` pauses
every request of the cluster (for ``MAX_RETRY_AFTER`` at most). How one request is sent,
retried and cut short lives in ``requester``; this module decides what to fetch. The result
says whether the poll is complete: an incomplete poll must never be mistaken for "everyone left";
it says why in words (``error``) and in one word of ``STORM_ERROR_KINDS`` (``reason``).
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgspec
import structlog

from notifier.errors import StormError, StormRequestError

from ._retry import RetryableFailure
from .decode import MalformedBody, Page, Viewer, decode_found, decode_page
from .paging import MAX_PAGES, Tally, check_page, extended, last_page, more_after, repeating
from .requester import Requester, create_session

if TYPE_CHECKING:
    import random
    from collections.abc import Awaitable, Callable, Iterable, Mapping

    import aiohttp

    from notifier.storm.settings import ClusterSettings

    from ._retry import Backoff

__all__ = ["Failing", "Lookup", "Poll", "StormClient", "create_session"]

VIEWERS_PATH = "/api/cluster/viewers"
BATCH_PATH = "/api/cluster/viewers/batch"
BATCH_SIZE = 100


@dataclass(frozen=True, slots=True)
class Poll:
    """The outcome of reading every page once.

    ``complete`` is true only when every page was fetched and parsed; otherwise ``error`` says
    why, ``reason`` is its kind (``notifier.errors.STORM_ERROR_KINDS``) and ``viewers`` holds
    only what was read (never to be taken as the audience).
    """

    cluster: str
    complete: bool
    viewers: Mapping[str, Viewer]
    error: str | None
    reason: str | None
    pages: int
    requests: int
    duplicates: int
    drift: bool
    started_at: float
    duration: float


@dataclass(frozen=True, slots=True)
class Failing:
    """A request of the operation under way that failed and is being retried (``failing``)."""

    what: str
    """``"page 3"``, ``"batch lookup of 100 ids"``."""
    reason: str
    """``"cannot connect (...)"``, ``"503 Service Unavailable"``: never a URL or a secret."""
    attempts: int
    """Failed attempts so far."""
    kind: str = "unavailable"
    """Of the last failure (``notifier.errors.STORM_ERROR_KINDS``)."""

    def __str__(self) -> str:
        return f"{self.what}: {self.reason}"


@dataclass(frozen=True, slots=True)
class Lookup:
    """Result of a batch lookup: the viewers found, and the ids the server does not know."""

    found: Mapping[str, Viewer]
    not_found: frozenset[str]


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
        self._clock = clock
        self._wall_clock = wall_clock
        self._log = structlog.get_logger("notifier.storm").bind(cluster=settings.name)
        self._requester = Requester(
            settings,
            session,
            backoff=backoff,
            clock=clock,
            wall_clock=wall_clock,
            sleep=sleep,
            rng=rng,
            log=self._log,
        )
        self._batch_field = "ids"

    @property
    def logins(self) -> int:
        """Successful logins so far (0 with a static token)."""
        return self._requester.logins

    @property
    def failing(self) -> Failing | None:
        """The request being retried right now, if any: whoever watches a poll in flight can
        say why it is late before ``poll_budget`` runs out (the poller warns at once)."""
        failing = self._requester.failing
        return None if failing is None else Failing(*failing)

    # --- public operations --------------------------------------------------------------------

    async def poll(self) -> Poll:
        """Read every page once; never raises a ``StormError``, the result says what happened."""
        started, wall = self._clock(), self._wall_clock()
        deadline = started + self._settings.poll_budget
        requests_before = self._requester.requests
        gathered = Tally()
        error: str | None = None
        reason: str | None = None
        try:
            async with self._requester.budget("the poll"):
                for index, query in enumerate(self._queries()):
                    await self._read_pass(query, deadline, gathered, index)
        except StormError as exc:
            error, reason = str(exc), exc.kind
        poll = Poll(
            cluster=self._settings.name,
            complete=error is None,
            viewers=gathered.viewers,
            error=error,
            reason=reason,
            pages=gathered.pages,
            requests=self._requester.requests - requests_before,
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
            self._log.debug("storm.poll_incomplete", reason=reason, error=error, pages=poll.pages)
        return poll

    async def count(self) -> int | None:
        """How many viewers the cluster reports (one small request): a reachability check."""
        deadline = self._clock() + self._settings.poll_budget
        async with self._requester.budget("counting viewers"):
            page = await self._fetch_page(self._base_query(), 1, deadline, rows=1)
        return page.total_items

    async def lookup(self, viewer_ids: Iterable[str]) -> Lookup:
        """Ask ``POST /api/cluster/viewers/batch`` which of ``viewer_ids`` are connected."""
        ids = list(dict.fromkeys(viewer_ids))
        deadline = self._clock() + self._settings.poll_budget
        found: dict[str, Viewer] = {}
        not_found: set[str] = set()
        async with self._requester.budget("the batch lookup"):
            for start in range(0, len(ids), BATCH_SIZE):
                chunk = ids[start : start + BATCH_SIZE]
                what = f"batch lookup of {len(chunk)} ids"
                chunk_found = await self._requester.retrying(
                    what, deadline, functools.partial(self._batch, chunk)
                )
                found.update(chunk_found)
                not_found.update(i for i in chunk if i not in chunk_found)
        return Lookup(found=found, not_found=frozenset(not_found))

    async def aclose(self) -> None:
        """Log out if logged in (best effort). The session belongs to the caller."""
        await self._requester.aclose()

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

    async def _read_pass(
        self, query: dict[str, str], deadline: float, into: Tally, index: int = 0
    ) -> None:
        into.start_pass(index)
        first = await self._fetch_page(query, 1, deadline)
        per_page = first.items_per_page or len(first.viewers) or None
        new = into.add(first, 1, per_page)
        target = last_page(first, per_page)
        if target is None:
            await self._read_sequentially(query, deadline, into, first, per_page)
        else:
            target = extended(target, 1, first, new, per_page)
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
                        target = extended(target, number, page, new, per_page)
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

        return await self._requester.retrying(
            f"page {number}", deadline, attempt, schema_attempts=True
        )

    async def _get_page(self, params: dict[str, str]) -> Page:
        status, headers, body = await self._requester.call("GET", VIEWERS_PATH, params=params)
        self._requester.raise_for_status(status, headers, body)
        try:
            return decode_page(body)
        except MalformedBody as exc:
            kind = headers.get("Content-Type", "")
            if "html" in kind.lower() or body.lstrip()[:1] == b"<":
                raise RetryableFailure("an HTML page instead of JSON", kind="malformed") from None
            raise RetryableFailure(str(exc), kind="malformed") from None

    async def _batch(self, ids: list[str]) -> dict[str, Viewer]:
        for field_name in dict.fromkeys((self._batch_field, "connectionIds", "ids")):
            payload = msgspec.json.encode({field_name: ids})
            status, headers, body = await self._requester.call("POST", BATCH_PATH, data=payload)
            if status == 400 and field_name != "connectionIds":
                continue  # some deployments call the field connectionIds
            self._requester.raise_for_status(status, headers, body)
            self._batch_field = field_name
            try:
                return {viewer.id: viewer for viewer in decode_found(body)}
            except MalformedBody as exc:
                raise RetryableFailure(str(exc), kind="malformed") from None
        raise StormRequestError("batch lookup refused both 'ids' and 'connectionIds'", status=400)
