"""Authentication against a Storm cluster: a static Bearer token, or login with renewal.

Login tokens live 900 s and cannot be refreshed, so ``LoginAuth`` logs in again shortly before
expiry and once after a rejection. Several page requests that see the same rejected token share
one login. Logins are capped at 5 a minute (the server's limit per IP), counted here; a failed
login is remembered for ``LOGIN_FAILURE_HOLD`` seconds (or a 429's longer Retry-After) so that
waiting requests share its outcome instead of each spending one of the minute's logins. A
renewal that cannot happen yet (limit reached, login failing) leaves the current token in use
until it actually expires.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

import msgspec
import structlog

from notifier.errors import StormAuthError
from notifier.http import parse_retry_after, storm_retryable

from ._retry import RetryableFailure
from .decode import decode_error_message, describe_status

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from pydantic import SecretStr
    from structlog.typing import FilteringBoundLogger

__all__ = [
    "Auth",
    "LoginAuth",
    "LoginResponse",
    "StaticTokenAuth",
    "is_auth_failure",
    "token_lifetime",
]

DEFAULT_TOKEN_LIFETIME = 900.0
MIN_PLAUSIBLE_LIFETIME = 60.0  # shorter is taken for seconds sent where ms were documented
LOGINS_PER_MINUTE = 5
LOGIN_FAILURE_HOLD = 12.0  # 60 s / 5 logins: a failed login is not retried sooner
DEAD_TOKEN_MESSAGE = "could not authorize with given access token"  # noqa: S105 - a message


def is_auth_failure(status: int, body: bytes) -> bool:
    """Whether a response says the token is not (or no longer) accepted."""
    if status in (401, 403):
        return True
    if status < 300 and b'"data"' in body[:4096]:
        return False
    message = decode_error_message(body)
    return message is not None and message.lower().startswith(DEAD_TOKEN_MESSAGE)


class Auth(Protocol):
    """What the client asks of an authentication method."""

    async def token(self) -> str:
        """A token to send now (logging in first if needed)."""
        ...

    async def rejected(self, token: str, reason: str) -> str:
        """``token`` was refused: return a fresh one, or raise ``StormAuthError``."""
        ...

    async def aclose(self) -> None:
        """Give the token back (logout) if there is one."""
        ...


class StaticTokenAuth:
    """A configured Bearer token; a rejection cannot be repaired."""

    def __init__(self, token: SecretStr) -> None:
        self._token = token

    async def token(self) -> str:
        """The configured token."""
        return self._token.get_secret_value()

    async def rejected(self, token: str, reason: str) -> str:  # noqa: ARG002 - the Protocol's
        """A static token that is refused stays refused."""
        raise StormAuthError(f"the configured token was rejected: {reason}")

    async def aclose(self) -> None:
        """Nothing to give back: the token belongs to the operator."""


class LoginResponse(msgspec.Struct, frozen=True):
    """What a login call returned: HTTP status, Retry-After header and body."""

    status: int
    body: bytes
    retry_after: str | None = None


class _LoginData(msgspec.Struct):
    accessToken: object = None  # noqa: N815 - the API's spelling
    expireDate: object = None  # noqa: N815
    remainingTime: object = None  # noqa: N815


class _LoginBody(msgspec.Struct):
    data: _LoginData | None = None
    accessToken: object = None  # noqa: N815 - some deployments may flatten the body
    expireDate: object = None  # noqa: N815
    remainingTime: object = None  # noqa: N815


class LoginAuth:
    """Tokens from ``POST /api/auth/login``, renewed before they expire."""

    def __init__(
        self,
        login: Callable[[], Awaitable[LoginResponse]],
        logout: Callable[[str], Awaitable[None]],
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
        log: FilteringBoundLogger | None = None,
    ) -> None:
        self._login = login
        self._logout = logout
        self._clock = clock
        self._wall_clock = wall_clock
        self._log: FilteringBoundLogger = log or structlog.get_logger("notifier.storm")
        self._current: str | None = None
        self._renew_at = 0.0
        self._expires_at = 0.0
        self._lock = asyncio.Lock()
        self._attempts: deque[float] = deque()
        self._failure: StormAuthError | RetryableFailure | None = None
        self._failed_at = 0.0
        self._lifetime_noted = False
        self.logins = 0

    async def token(self) -> str:
        """The current token, after a login if there is none or it is about to expire."""
        current = self._current
        if current is not None and self._clock() < self._renew_at:
            return current
        async with self._lock:
            current, now = self._current, self._clock()
            if current is not None and now < self._renew_at:
                return current  # another request renewed it meanwhile
            try:
                return await self._log_in()
            except (StormAuthError, RetryableFailure) as exc:
                if current is None or now >= self._expires_at:
                    raise
                # A renewal ahead of expiry: the token still works, so keep using it for now.
                self._renew_at = min(self._expires_at, now + LOGIN_FAILURE_HOLD)
                self._log.info(
                    "storm.token_renewal_deferred",
                    reason=str(exc),
                    expires_in=round(self._expires_at - now, 1),
                )
                return current

    async def rejected(self, token: str, reason: str) -> str:  # noqa: ARG002 - the Protocol's
        """Log in again once per rejected token; callers holding the same token share it."""
        async with self._lock:
            if self._current is not None and self._current != token:
                return self._current  # another request already renewed it
            self._current = None  # refused: never to be offered again
            return await self._log_in()

    async def aclose(self) -> None:
        """Log out, so the token stops working; best effort."""
        token, self._current = self._current, None
        if token is not None:
            await self._logout(token)

    async def _log_in(self) -> str:
        """One login (the caller holds the lock), unless the limit or a fresh failure forbids."""
        now = self._clock()
        self._refuse_if_held(now)
        self._attempts.append(now)
        try:
            token, lifetime = await self._attempt()
        except (StormAuthError, RetryableFailure) as exc:
            self._failure, self._failed_at = exc, now
            raise
        self._failure = None
        self._current = token
        self._expires_at = now + lifetime
        self._renew_at = now + lifetime - min(60.0, lifetime / 4)
        self.logins += 1
        return token

    def _refuse_if_held(self, now: float) -> None:
        """Raise instead of logging in when a login just failed or the minute's are spent."""
        failure = self._failure
        if failure is not None:
            hold = LOGIN_FAILURE_HOLD
            if isinstance(failure, RetryableFailure) and failure.retry_after is not None:
                hold = max(hold, failure.retry_after)  # the server's wait, when it said one
            left = hold - (now - self._failed_at)
            if left > 0:
                if isinstance(failure, RetryableFailure):
                    raise RetryableFailure(failure.reason, retry_after=left)
                raise StormAuthError(str(failure))
        while self._attempts and now - self._attempts[0] >= 60.0:
            self._attempts.popleft()
        if len(self._attempts) >= LOGINS_PER_MINUTE:
            wait = 60.0 - (now - self._attempts[0])
            raise StormAuthError(
                f"not logging in again for {wait:.0f}s: {LOGINS_PER_MINUTE} logins in the last"
                " minute already (the server's limit)"
            )

    async def _attempt(self) -> tuple[str, float]:
        """Call the login endpoint: the token and its lifetime in seconds, or an error."""
        response = await self._login()
        if storm_retryable(response.status):
            retry_after = parse_retry_after(response.retry_after, self._wall_clock())
            reason = f"login answered {describe_status(response.status, response.body)}"
            if response.status == 429:
                reason = _limited(retry_after)
            raise RetryableFailure(reason, retry_after=retry_after)
        if not 200 <= response.status < 300:
            raise StormAuthError(
                f"login failed with {describe_status(response.status, response.body)}"
            )
        parsed = _parse_login(response.body)
        if parsed is None:
            message = decode_error_message(response.body)
            raise StormAuthError(
                "login answered without data.accessToken" + (f": {message}" if message else "")
            )
        token, remaining, expire = parsed
        lifetime, suspect = _lifetime(token, remaining, expire, self._wall_clock())
        if suspect is not None and not self._lifetime_noted:
            self._lifetime_noted = True
            self._log.info("storm.token_lifetime_suspect", reported=suspect, used=round(lifetime))
        return token, lifetime


def _limited(retry_after: float | None) -> str:
    """A login refused with 429: the server's per-address login limit, said plainly. Every
    ``notifier snapshot`` or ``check-config`` run logs in once, and so does every replica."""
    wait = f", wait {retry_after:.0f}s" if retry_after is not None else ""
    return (
        f"login refused: Storm allows {LOGINS_PER_MINUTE} logins a minute per address and they are"
        f" spent (HTTP 429{wait}); every snapshot or check-config run and every replica logs in"
    )


def _parse_login(body: bytes) -> tuple[str, object, object] | None:
    """The token, remainingTime and expireDate of a login body (inside data or beside it)."""
    try:
        parsed = msgspec.json.decode(body, type=_LoginBody)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None
    data = parsed.data or _LoginData()
    token = data.accessToken if data.accessToken is not None else parsed.accessToken
    if not isinstance(token, str) or not token:
        return None
    remaining = data.remainingTime if data.remainingTime is not None else parsed.remainingTime
    expire = data.expireDate if data.expireDate is not None else parsed.expireDate
    return token, remaining, expire


def token_lifetime(token: str, remaining_ms: object, expire_ms: object, wall_now: float) -> float:
    """Seconds the token lives: remainingTime, else expireDate, else the JWT's exp, else 900.

    remainingTime and expireDate are documented in ms; one that gives under a minute is taken
    for seconds sent by mistake and skipped (see ``MIN_PLAUSIBLE_LIFETIME``).
    """
    return _lifetime(token, remaining_ms, expire_ms, wall_now)[0]


def _lifetime(
    token: str, remaining_ms: object, expire_ms: object, wall_now: float
) -> tuple[float, str | None]:
    """The lifetime, and a description of any reported value skipped as implausible."""
    suspect: str | None = None
    if _is_number(remaining_ms) and float(remaining_ms) > 0:  # type: ignore[arg-type]
        seconds = float(remaining_ms) / 1000  # type: ignore[arg-type]
        if seconds >= MIN_PLAUSIBLE_LIFETIME:
            return seconds, None
        suspect = f"remainingTime {remaining_ms}"
    if _is_number(expire_ms):
        left = float(expire_ms) / 1000 - wall_now  # type: ignore[arg-type]
        if left >= MIN_PLAUSIBLE_LIFETIME:
            return left, suspect
        if left > 0:
            suspect = suspect or f"expireDate {expire_ms}"
    exp = _jwt_exp(token)
    if exp is not None and exp - wall_now > 0:
        return exp - wall_now, suspect  # the token's own claim, in seconds by definition
    return DEFAULT_TOKEN_LIFETIME, suspect


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _jwt_exp(token: str) -> float | None:
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        payload = base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4))
        exp = msgspec.json.decode(payload).get("exp")
    except (binascii.Error, ValueError, msgspec.DecodeError, AttributeError):
        return None
    return float(exp) if _is_number(exp) else None
