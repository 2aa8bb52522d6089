"""One request to a Storm cluster: auth, retries, ``Retry-After`` pauses and the poll budget.

``StormClient`` decides what to fetch; a ``Requester`` sends it. Every request carries the
configured headers and a Bearer token; a rejected token gets one fresh login, then is an error.
A retryable failure is retried with backoff until the deadline; ``Retry-After`` pauses every
request of the cluster (for ``MAX_RETRY_AFTER`` at most); ``budget`` cuts a whole operation at
``poll_budget`` and, when the time went on a failing request, says which one.

A body is read as it arrives and never past ``max_page_bytes``: a server that sends 200 MB (or
says it will, in ``Content-Length``) gets a ``too_large`` error, not a 200 MB buffer. Every
error carries its ``kind`` (``notifier.errors.STORM_ERROR_KINDS``): a request that kept timing
out is ``timeout``, one that kept failing otherwise is the kind of its last failure.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from typing import TYPE_CHECKING, TypeVar

import aiohttp
import msgspec
import structlog

from notifier import __version__
from notifier.durations import format_duration
from notifier.errors import StormAuthError, StormRequestError, StormSchemaError, StormUnavailable
from notifier.http import client_ssl, parse_retry_after, storm_retryable, transport_reason

from ._retry import Backoff, RetryableFailure
from .auth import Auth, LoginAuth, LoginResponse, StaticTokenAuth, is_auth_failure
from .decode import describe_status

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Awaitable, Callable, Mapping

    from multidict import CIMultiDictProxy
    from structlog.typing import FilteringBoundLogger

    from notifier.storm.settings import ClusterSettings

__all__ = ["MAX_RETRY_AFTER", "SCHEMA_ATTEMPTS", "Requester", "create_session"]

SCHEMA_ATTEMPTS = 2  # a schema error is retried once: it is rarely transient
MAX_RETRY_AFTER = 300.0  # one Retry-After pauses the cluster for 5 minutes at most
LOGIN_PATH = "/api/auth/login"
LOGOUT_PATH = "/api/auth/logout"

T = TypeVar("T")


def create_session(settings: ClusterSettings) -> aiohttp.ClientSession:
    """An aiohttp session suited to one cluster: pooled keep-alive, TLS as configured.

    ``verify_tls: false`` is said once, here, as a warning: the session is made at start-up.
    """
    if not settings.verify_tls:
        structlog.get_logger("notifier.storm").warning(
            "storm.tls_unverified",
            cluster=settings.name,
            effect="the cluster's certificate is not checked: anyone on the path can read tokens",
            hint="give ca_file for a private CA, or remove verify_tls: false",
        )
    connector = aiohttp.TCPConnector(
        limit=settings.concurrency + 2,
        ssl=client_ssl(verify_tls=settings.verify_tls, ca_file=settings.ca_file),
        ttl_dns_cache=300,
    )
    return aiohttp.ClientSession(connector=connector, trust_env=False)


class Requester:
    """Sends the requests of one cluster, with auth and retries. The session is the caller's."""

    def __init__(
        self,
        settings: ClusterSettings,
        session: aiohttp.ClientSession,
        *,
        backoff: Backoff | None,
        clock: Callable[[], float],
        wall_clock: Callable[[], float],
        sleep: Callable[[float], Awaitable[None]],
        rng: random.Random | None,
        log: FilteringBoundLogger,
    ) -> None:
        self._settings = settings
        self._session = session
        self._base = settings.base_url
        self._backoff = backoff or Backoff()
        self._clock = clock
        self._wall_clock = wall_clock
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._log = log
        self._headers = {
            "Accept": "application/json",
            "User-Agent": f"storm-notifier/{__version__}",
        }
        if settings.auth.api_key is not None:
            self._headers["X-Api-Key"] = settings.auth.api_key.get_secret_value()
        self._auth: Auth
        if settings.auth.token is not None:
            self._auth = StaticTokenAuth(settings.auth.token)
        else:
            self._auth = LoginAuth(
                self._post_login,
                self._post_logout,
                clock=clock,
                wall_clock=wall_clock,
                log=log,
            )
        self._paused_until = 0.0
        self._requests = 0
        self._failing: tuple[str, str, int] | None = None  # the latest request being retried
        self._failing_kind = "unavailable"  # the kind of its last failure

    @property
    def requests(self) -> int:
        """HTTP requests sent so far, logins and retries included."""
        return self._requests

    @property
    def logins(self) -> int:
        """Successful logins so far (0 with a static token)."""
        return self._auth.logins if isinstance(self._auth, LoginAuth) else 0

    @property
    def failing(self) -> tuple[str, str, int, str] | None:
        """The latest request of the operation under way that failed and is being retried:
        (what, reason, failed attempts, the kind of its last failure); None once it succeeded,
        or if none failed."""
        return None if self._failing is None else (*self._failing, self._failing_kind)

    async def aclose(self) -> None:
        """Log out if logged in (best effort)."""
        await self._auth.aclose()

    @contextlib.asynccontextmanager
    async def budget(self, what: str) -> AsyncIterator[None]:
        """Cut the work inside at ``poll_budget``, however well its requests are going."""
        self._failing = None
        try:
            async with asyncio.timeout(self._settings.poll_budget) as timeout:
                yield
        except TimeoutError:
            if not timeout.expired():
                raise
            if self._failing is not None:  # the time went on a failing request: say which
                raise self._gave_up(*self._failing, self._failing_kind) from None
            budget = format_duration(self._settings.poll_budget)
            raise StormUnavailable(
                f"{what} did not finish within the poll budget ({budget})", kind="budget"
            ) from None

    async def retrying(
        self,
        what: str,
        deadline: float,
        attempt: Callable[[], Awaitable[T]],
        *,
        schema_attempts: bool = False,
    ) -> T:
        """Run ``attempt`` until it succeeds, retrying ``RetryableFailure`` until ``deadline``.

        With ``schema_attempts`` a ``StormSchemaError`` is retried too, ``SCHEMA_ATTEMPTS`` times
        in all; any other ``StormError`` is raised at once.
        """
        failures = 0
        schema_failures = 0
        while True:
            await self._wait_for_pause(deadline, what)
            try:
                result = await attempt()
            except StormSchemaError as exc:
                schema_failures += 1
                if not schema_attempts or schema_failures >= SCHEMA_ATTEMPTS:
                    raise
                reason, retry_after = "the body did not have the documented shape", None
                kind = exc.kind
            except RetryableFailure as failure:
                reason, retry_after = failure.reason, self._capped(failure.retry_after, what)
                kind = failure.kind
            except StormUnavailable as exc:
                if exc.kind == "too_large":  # raised where ``what`` is not known
                    raise StormUnavailable(f"{what}: {exc}", kind=exc.kind) from None
                raise
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
            self._failing, self._failing_kind = (what, reason, failures), kind
            if now + delay > deadline:
                raise self._gave_up(what, reason, failures, kind)
            self._log.info(
                "storm.request_retry",
                what=what,
                attempt=failures,
                reason=reason,
                delay=round(delay, 3),
            )
            await self._sleep(delay)

    async def call(
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

    def raise_for_status(self, status: int, headers: Mapping[str, str], body: bytes) -> None:
        """Nothing for a 2xx; ``RetryableFailure`` if another attempt may help; else an error."""
        if 200 <= status < 300:
            return
        reason = describe_status(status, body)
        if storm_retryable(status):
            retry_after = parse_retry_after(headers.get("Retry-After"), self._wall_clock())
            raise RetryableFailure(reason, retry_after=retry_after)
        if 300 <= status < 400:
            reason += " (redirects are not followed: check base_url)"
        raise StormRequestError(reason, status=status)

    # --- retry bookkeeping ----------------------------------------------------------------------

    def _gave_up(self, what: str, reason: str, failures: int, kind: str) -> StormUnavailable:
        budget = format_duration(self._settings.poll_budget)
        return StormUnavailable(
            f"{what}: {reason} (gave up after {failures} attempts; poll budget {budget})",
            kind=kind,
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

    # --- the wire -------------------------------------------------------------------------------

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
                body = await self._read(response)
                return response.status, response.headers, body
        except (TimeoutError, aiohttp.ClientError) as exc:
            kind = "timeout" if isinstance(exc, TimeoutError) else "unavailable"
            raise RetryableFailure(transport_reason(exc, timeout), kind=kind) from None

    async def _read(self, response: aiohttp.ClientResponse) -> bytes:
        """The body, read as it arrives; ``too_large`` past ``max_page_bytes`` (module doc)."""
        limit = self._settings.max_page_bytes
        declared = response.content_length
        if declared is not None and declared > limit:
            response.close()
            raise StormUnavailable(
                f"the answer declares {declared} bytes, over max_page_bytes ({limit}): not read",
                kind="too_large",
            )
        chunks: list[bytes] = []
        size = 0
        async for chunk in response.content.iter_any():
            size += len(chunk)
            if size > limit:
                response.close()  # the rest is never read; the connection is not reused
                raise StormUnavailable(
                    f"the answer ran past max_page_bytes ({limit} bytes): stopped reading",
                    kind="too_large",
                )
            chunks.append(chunk)
        return b"".join(chunks)

    async def _post_login(self) -> LoginResponse:
        auth = self._settings.auth
        if auth.username is None or auth.password is None:
            raise StormAuthError("login needs a username and a password")
        payload = msgspec.json.encode(
            {"username": auth.username, "password": auth.password.get_secret_value()}
        )
        status, headers, body = await self._send("POST", LOGIN_PATH, None, data=payload)
        return LoginResponse(status=status, body=body, retry_after=headers.get("Retry-After"))

    async def _post_logout(self, token: str) -> None:
        try:
            await self._send("POST", LOGOUT_PATH, token)
        except RetryableFailure as failure:
            self._log.info("storm.logout_failed", reason=failure.reason)
