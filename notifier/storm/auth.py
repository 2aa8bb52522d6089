"""Authentication against a Storm cluster: a static Bearer token, or login with renewal.

Login tokens live 900 s and cannot be refreshed, so ``LoginAuth`` logs in again shortly before
expiry and once after a rejection. Several page requests that see the same rejected token share
one login. Logins are capped at 5 a minute (the server's limit per IP), counted here.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import time
from collections import deque
from typing import TYPE_CHECKING, Protocol

import msgspec

from notifier.errors import StormAuthError

from ._retry import RetryableFailure, parse_retry_after
from .decode import decode_error_message

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from pydantic import SecretStr

__all__ = ["Auth", "LoginAuth", "LoginResponse", "StaticTokenAuth", "token_lifetime"]

DEFAULT_TOKEN_LIFETIME = 900.0
LOGINS_PER_MINUTE = 5


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
    ) -> None:
        self._login = login
        self._logout = logout
        self._clock = clock
        self._wall_clock = wall_clock
        self._current: str | None = None
        self._renew_at = 0.0
        self._lock = asyncio.Lock()
        self._attempts: deque[float] = deque()
        self.logins = 0

    async def token(self) -> str:
        """The current token, after a login if there is none or it is about to expire."""
        current = self._current
        if current is not None and self._clock() < self._renew_at:
            return current
        async with self._lock:
            if self._current is None or self._clock() >= self._renew_at:
                await self._log_in()
            assert self._current is not None  # noqa: S101 - _log_in sets it or raises
            return self._current

    async def rejected(self, token: str, reason: str) -> str:  # noqa: ARG002 - the Protocol's
        """Log in again once per rejected token; callers holding the same token share it."""
        async with self._lock:
            if self._current is not None and self._current != token:
                return self._current  # another request already renewed it
            await self._log_in()
            assert self._current is not None  # noqa: S101
            return self._current

    async def aclose(self) -> None:
        """Log out, so the token stops working; best effort."""
        token, self._current = self._current, None
        if token is not None:
            await self._logout(token)

    async def _log_in(self) -> None:
        now = self._clock()
        while self._attempts and now - self._attempts[0] >= 60.0:
            self._attempts.popleft()
        if len(self._attempts) >= LOGINS_PER_MINUTE:
            wait = 60.0 - (now - self._attempts[0])
            raise StormAuthError(
                f"not logging in again for {wait:.0f}s: {LOGINS_PER_MINUTE} logins in the last"
                " minute already (the server's limit)"
            )
        self._attempts.append(now)
        self._current = None
        response = await self._login()
        message = decode_error_message(response.body)
        if response.status in (408, 429) or response.status >= 500:
            raise RetryableFailure(
                f"login answered HTTP {response.status}" + (f": {message}" if message else ""),
                retry_after=parse_retry_after(response.retry_after, self._wall_clock()),
            )
        if not 200 <= response.status < 300:
            raise StormAuthError(
                f"login failed with HTTP {response.status}" + (f": {message}" if message else "")
            )
        token, lifetime = _parse_login(response.body, self._wall_clock())
        if token is None:
            raise StormAuthError(
                "login answered without data.accessToken" + (f": {message}" if message else "")
            )
        self._current = token
        self._renew_at = now + lifetime - min(60.0, lifetime / 4)
        self.logins += 1


def _parse_login(body: bytes, wall_now: float) -> tuple[str | None, float]:
    try:
        parsed = msgspec.json.decode(body, type=_LoginBody)
    except (msgspec.DecodeError, msgspec.ValidationError):
        return None, 0.0
    data = parsed.data or _LoginData()
    token = data.accessToken if data.accessToken is not None else parsed.accessToken
    if not isinstance(token, str) or not token:
        return None, 0.0
    remaining = data.remainingTime if data.remainingTime is not None else parsed.remainingTime
    expire = data.expireDate if data.expireDate is not None else parsed.expireDate
    return token, token_lifetime(token, remaining, expire, wall_now)


def token_lifetime(token: str, remaining_ms: object, expire_ms: object, wall_now: float) -> float:
    """Seconds the token lives: remainingTime, else expireDate, else the JWT's exp, else 900."""
    if _is_number(remaining_ms) and float(remaining_ms) > 0:  # type: ignore[arg-type]
        return float(remaining_ms) / 1000  # type: ignore[arg-type]
    if _is_number(expire_ms):
        left = float(expire_ms) / 1000 - wall_now  # type: ignore[arg-type]
        if left > 0:
            return left
    exp = _jwt_exp(token)
    if exp is not None and exp - wall_now > 0:
        return exp - wall_now
    return DEFAULT_TOKEN_LIFETIME


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
