"""Login-based auth: renewal before expiry, one login per rejection, at most 5 logins a minute."""

from __future__ import annotations

import asyncio
import base64
import io
import json

import pytest

from notifier.errors import StormAuthError
from notifier.logs import configure_logging
from notifier.storm._retry import RetryableFailure
from notifier.storm.auth import (
    LOGIN_FAILURE_HOLD,
    LoginAuth,
    LoginResponse,
    is_auth_failure,
    token_lifetime,
)


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
    """5xx, 429 and 425 on login are passing trouble, with Retry-After carried along."""
    server, clock = FakeServer(), FakeClock()
    server.script.append(LoginResponse(status=429, body=b"{}", retry_after="7"))
    server.script.append(LoginResponse(status=503, body=b"<html>"))
    server.script.append(LoginResponse(status=425, body=b"{}"))
    auth = make_auth(server, clock)
    with pytest.raises(RetryableFailure) as info:
        await auth.token()
    assert info.value.retry_after == 7.0
    clock.now += LOGIN_FAILURE_HOLD
    with pytest.raises(RetryableFailure, match="HTTP 503"):
        await auth.token()
    clock.now += LOGIN_FAILURE_HOLD
    with pytest.raises(RetryableFailure, match="HTTP 425"):
        await auth.token()
    clock.now += LOGIN_FAILURE_HOLD
    assert await auth.token() == "tok-4"


async def test_a_login_limited_by_the_server_waits_its_retry_after_and_says_how_long() -> None:
    """A 429 with Retry-After 40: no login before 40 s, and each refusal carries the time left."""
    server, clock = FakeServer(), FakeClock()
    server.script.append(LoginResponse(status=429, body=b"{}", retry_after="40"))
    auth = make_auth(server, clock)
    with pytest.raises(RetryableFailure, match="Storm allows 5 logins a minute") as info:
        await auth.token()
    assert info.value.retry_after == 40.0
    clock.now += 30
    with pytest.raises(RetryableFailure) as info:
        await auth.token()
    assert info.value.retry_after == pytest.approx(10.0)
    assert server.calls == 1
    clock.now += 10
    assert await auth.token() == "tok-2"


@pytest.mark.parametrize(
    ("response", "error"),
    [
        (LoginResponse(status=503, body=b'{"message": "busy"}'), RetryableFailure),
        (
            LoginResponse(status=401, body=b'{"message": "Username or password is incorrect"}'),
            StormAuthError,
        ),
    ],
)
async def test_concurrent_rejections_while_login_fails_share_one_attempt(
    response: LoginResponse, error: type[Exception]
) -> None:
    """Six rejected requests while login fails cost one login, not the minute's five."""
    server, clock = FakeServer(), FakeClock()
    server.script.extend([response, response])
    auth = make_auth(server, clock)
    outcomes = await asyncio.gather(
        *(auth.rejected("old", "HTTP 401") for _ in range(6)), return_exceptions=True
    )
    assert server.calls == 1
    assert all(type(outcome) is error for outcome in outcomes)
    assert len({str(outcome) for outcome in outcomes}) == 1  # the same message for all
    clock.now += LOGIN_FAILURE_HOLD - 1
    with pytest.raises(error):
        await auth.token()
    assert server.calls == 1
    clock.now += 1
    with pytest.raises(error):
        await auth.token()
    assert server.calls == 2
    clock.now += LOGIN_FAILURE_HOLD
    assert await auth.token() == "tok-3"


async def test_a_renewal_refused_by_the_login_limit_keeps_the_current_token() -> None:
    """When the 5-a-minute limit blocks a renewal ahead of expiry, the live token is used."""
    server, clock = FakeServer(remaining_ms=70_000), FakeClock()  # renewed 17.5 s early
    auth = make_auth(server, clock)
    token = await auth.token()
    for _ in range(4):
        clock.now += 1
        token = await auth.rejected(token, "HTTP 401")
    assert (token, server.calls) == ("tok-5", 5)  # at 1004 s, expiring at 1074 s
    clock.now = 1057.0  # inside the renewal margin, with all five logins in the last minute
    assert await auth.token() == "tok-5"
    assert await auth.token() == "tok-5"
    assert server.calls == 5
    clock.now = 1075.0  # expired: the limit has passed too
    assert await auth.token() == "tok-6"


async def test_a_failed_renewal_never_extends_an_expired_token() -> None:
    """A token past its expiry is not kept when the renewal fails: the failure is raised."""
    server, clock = FakeServer(remaining_ms=70_000), FakeClock()
    auth = make_auth(server, clock)
    assert await auth.token() == "tok-1"
    server.script.extend([LoginResponse(status=503, body=b"{}")] * 2)
    clock.now += 60  # renewal margin: the login fails, the token is kept
    assert await auth.token() == "tok-1"
    clock.now += 11  # expired now
    with pytest.raises(RetryableFailure, match="HTTP 503"):
        await auth.token()


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


def test_a_lifetime_under_a_minute_is_taken_for_seconds_sent_as_ms() -> None:
    """remainingTime 900 (seconds, not ms) falls back to the JWT's exp, else 900 s."""
    now = 1_770_000_000.0
    assert token_lifetime("opaque", 900, None, now) == 900.0
    assert token_lifetime(_jwt(now + 600), 900, None, now) == pytest.approx(600.0)
    assert token_lifetime("opaque", 900, (now + 30) * 1000, now) == 900.0
    assert token_lifetime("opaque", 60_000, None, now) == 60.0


async def test_a_suspect_lifetime_is_logged_once_and_the_token_kept() -> None:
    """Logins answering remainingTime 900 keep their token ~15 minutes, with one info line."""
    log = io.StringIO()
    configure_logging(fmt="json", level="info", stream=log)
    server, clock = FakeServer(remaining_ms=900), FakeClock()
    auth = make_auth(server, clock)
    assert await auth.token() == "tok-1"
    clock.now += 800
    assert await auth.token() == "tok-1"
    clock.now += 60
    assert await auth.token() == "tok-2"
    events = [json.loads(line)["event"] for line in log.getvalue().splitlines()]
    assert events.count("storm.token_lifetime_suspect") == 1


def test_dead_token_answers_are_auth_failures() -> None:
    """401, 403 and the documented dead-token message on any status mean a rejected token."""
    dead = b'{"message": "Could not authorize with given access token", "timestamp": 1}'
    assert is_auth_failure(401, b"")
    assert is_auth_failure(403, b"{}")
    assert is_auth_failure(400, dead)
    assert not is_auth_failure(200, b'{"data": {"list": []}}')
    assert not is_auth_failure(500, b'{"message": "Internal error"}')


def test_token_lifetime_sources_in_order() -> None:
    """remainingTime, else expireDate, else the JWT's exp, else 900 s."""
    now = 1_770_000_000.0
    assert token_lifetime("t", 899_999, None, now) == pytest.approx(900.0, abs=0.01)
    assert token_lifetime("t", None, (now + 600) * 1000, now) == pytest.approx(600.0)
    assert token_lifetime(_jwt(now + 300), None, None, now) == pytest.approx(300.0)
    assert token_lifetime("opaque", "soon", expire_ms=True, wall_now=now) == 900.0
    assert token_lifetime(_jwt(now - 5), 0, (now - 1) * 1000, now) == 900.0
