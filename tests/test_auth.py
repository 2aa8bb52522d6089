"""Login-based auth: renewal before expiry, one login per rejection, at most 5 logins a minute."""

from __future__ import annotations

import asyncio
import base64
import json

import pytest

from notifier.errors import StormAuthError
from notifier.storm._retry import RetryableFailure
from notifier.storm.auth import LoginAuth, LoginResponse, token_lifetime


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeServer:
    """Answers logins from a script; counts them."""

    def __init__(self, remaining_ms: int = 900_000) -> None:
        self.calls = 0
        self.logged_out: list[str] = []
        self.remaining_ms = remaining_ms
        self.script: list[LoginResponse] = []

    async def login(self) -> LoginResponse:
        self.calls += 1
        await asyncio.sleep(0)  # let concurrent callers pile up on the lock
        if self.script:
            return self.script.pop(0)
        data = {
            "accessToken": f"tok-{self.calls}",
            "tokenType": "Bearer",
            "remainingTime": self.remaining_ms,
            "username": "admin",
        }
        body = {"data": data, "message": "Authentication successful"}
        return LoginResponse(status=200, body=json.dumps(body).encode())

    async def logout(self, token: str) -> None:
        self.logged_out.append(token)


def make_auth(server: FakeServer, clock: FakeClock) -> LoginAuth:
    return LoginAuth(server.login, server.logout, clock=clock, wall_clock=lambda: 1_770_000_000.0)


async def test_token_is_reused_then_renewed_before_expiry() -> None:
    """One login serves until shortly before expiry; then a new login happens unprompted."""
    server, clock = FakeServer(), FakeClock()
    auth = make_auth(server, clock)
    assert await auth.token() == "tok-1"
    clock.now += 800
    assert await auth.token() == "tok-1"
    clock.now += 60  # 860 s: inside the 60 s renewal margin of a 900 s token
    assert await auth.token() == "tok-2"
    assert server.calls == 2


async def test_concurrent_rejections_of_one_token_share_one_login() -> None:
    """Four pages rejected with the same token cause one login, and all get the new token."""
    server, clock = FakeServer(), FakeClock()
    auth = make_auth(server, clock)
    old = await auth.token()
    tokens = await asyncio.gather(*(auth.rejected(old, "HTTP 401") for _ in range(4)))
    assert tokens == ["tok-2"] * 4
    assert server.calls == 2


async def test_never_more_than_five_logins_a_minute() -> None:
    """The sixth login inside a minute is refused locally with a clear reason."""
    server, clock = FakeServer(), FakeClock()
    auth = make_auth(server, clock)
    token = await auth.token()
    for _ in range(4):
        clock.now += 1
        token = await auth.rejected(token, "HTTP 401")
    assert server.calls == 5
    with pytest.raises(StormAuthError, match="5 logins in the last minute"):
        await auth.rejected(token, "HTTP 401")
    assert server.calls == 5
    clock.now += 60
    assert await auth.rejected(token, "HTTP 401") == "tok-6"


async def test_bad_credentials_are_an_auth_error_with_the_server_message() -> None:
    """A refused login says so, with the server's message and no password."""
    server, clock = FakeServer(), FakeClock()
    server.script.append(
        LoginResponse(status=401, body=b'{"message": "Username or password is incorrect"}')
    )
    with pytest.raises(StormAuthError) as info:
        await make_auth(server, clock).token()
    assert str(info.value) == "login failed with HTTP 401: Username or password is incorrect"


async def test_server_trouble_during_login_is_retryable() -> None:
    """5xx and 429 on login are passing trouble, with Retry-After carried along."""
    server, clock = FakeServer(), FakeClock()
    server.script.append(LoginResponse(status=429, body=b"{}", retry_after="7"))
    server.script.append(LoginResponse(status=503, body=b"<html>"))
    auth = make_auth(server, clock)
    with pytest.raises(RetryableFailure) as info:
        await auth.token()
    assert info.value.retry_after == 7.0
    with pytest.raises(RetryableFailure, match="HTTP 503"):
        await auth.token()
    assert await auth.token() == "tok-3"


async def test_a_login_without_a_token_is_an_auth_error() -> None:
    """A 200 that carries no accessToken cannot be used."""
    server, clock = FakeServer(), FakeClock()
    server.script.append(
        LoginResponse(status=200, body=b'{"message": "Authentication successful"}')
    )
    with pytest.raises(StormAuthError, match=r"without data\.accessToken"):
        await make_auth(server, clock).token()


async def test_flat_login_bodies_are_understood() -> None:
    """Fields beside data (not inside it) are read too."""
    server, clock = FakeServer(), FakeClock()
    server.script.append(
        LoginResponse(
            status=200, body=b'{"data": {"accessToken": "flat"}, "remainingTime": 120000}'
        )
    )
    auth = make_auth(server, clock)
    assert await auth.token() == "flat"
    clock.now += 89  # 120 s token, renewed 30 s (a quarter) before expiry
    assert await auth.token() == "flat"
    clock.now += 2
    assert await auth.token() == "tok-2"


async def test_aclose_logs_out_once() -> None:
    """Closing gives the token back; a second close does nothing."""
    server, clock = FakeServer(), FakeClock()
    auth = make_auth(server, clock)
    await auth.token()
    await auth.aclose()
    await auth.aclose()
    assert server.logged_out == ["tok-1"]


def _jwt(exp: float) -> str:
    payload = base64.urlsafe_b64encode(json.dumps({"exp": exp}).encode()).rstrip(b"=").decode()
    return f"eyJhbGciOiJIUzI1NiJ9.{payload}.sig"


def test_token_lifetime_sources_in_order() -> None:
    """remainingTime, else expireDate, else the JWT's exp, else 900 s."""
    now = 1_770_000_000.0
    assert token_lifetime("t", 899_999, None, now) == pytest.approx(900.0, abs=0.01)
    assert token_lifetime("t", None, (now + 600) * 1000, now) == pytest.approx(600.0)
    assert token_lifetime(_jwt(now + 300), None, None, now) == pytest.approx(300.0)
    assert token_lifetime("opaque", "soon", expire_ms=True, wall_now=now) == 900.0
    assert token_lifetime(_jwt(now - 5), 0, (now - 1) * 1000, now) == 900.0
