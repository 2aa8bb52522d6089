"""The simulated cluster's credentials: login tokens, static tokens and the login rate limit.

Login tokens look like JWTs (random signature, never verified) and expire by the injected
clock; static tokens never expire. Login attempts are limited per IP over a sliding minute.
"""

from __future__ import annotations

import base64
import secrets
from collections import deque
from typing import TYPE_CHECKING

import msgspec

if TYPE_CHECKING:
    from collections.abc import Callable, Iterable

__all__ = ["Tokens"]


class Tokens:
    """Which Bearer tokens are alive, and how many logins each IP has tried this minute."""

    def __init__(
        self,
        static_tokens: Iterable[str],
        login_limit_per_minute: int,
        *,
        clock: Callable[[], float],
    ) -> None:
        self._clock = clock
        self._tokens: dict[str, float] = {}  # login token -> expiry, by `clock`
        self._static_tokens = frozenset(static_tokens)
        self._login_limit = login_limit_per_minute
        self._login_times: dict[str, deque[float]] = {}

    def alive(self, token: str | None) -> bool:
        """Whether `token` is a static token or an unexpired login token."""
        if token is None:
            return False
        if token in self._static_tokens:
            return True
        expiry = self._tokens.get(token)
        if expiry is None:
            return False
        if self._clock() >= expiry:
            del self._tokens[token]
            return False
        return True

    def issue(self, username: str, now: float, ttl: float) -> str:
        """A new login token for `username`, alive until `now + ttl`; drops expired ones."""
        self._tokens = {t: exp for t, exp in self._tokens.items() if exp > now}
        token = _jwt_like(username, now, now + ttl)
        self._tokens[token] = now + ttl
        return token

    def revoke(self, token: str) -> bool:
        """Revoke one login token; whether it was known."""
        return self._tokens.pop(token, None) is not None

    def clear(self) -> None:
        """Revoke every login token (static tokens stay valid)."""
        self._tokens.clear()

    def throttle(self, ip: str, now: float) -> float | None:
        """Record a login attempt; seconds to wait if it is over the per-minute limit."""
        times = self._login_times.setdefault(ip, deque())
        while times and times[0] <= now - 60.0:
            times.popleft()
        if len(times) >= self._login_limit:
            return max(times[0] + 60.0 - now, 1.0) if times else 60.0
        times.append(now)
        return None


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _jwt_like(username: str, issued: float, expires: float) -> str:
    header = _b64(b'{"alg":"HS256","typ":"JWT"}')
    claims = {"sub": username, "iat": int(issued), "exp": int(expires), "jti": secrets.token_hex(8)}
    return f"{header}.{_b64(msgspec.json.encode(claims))}.{_b64(secrets.token_bytes(32))}"
