"""Shared fixtures: settings builders, a scripted Storm server, a real redis-server, TLS files,
the secret guard (``testkit.secrets``: any test whose output or logs hold a configured
secret fails) and the fault tests' tally (``testkit.reliability``)."""

from __future__ import annotations

import os
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
import structlog
from aiohttp import web
from redis.asyncio import Redis

from notifier.config import ClusterSettings
from notifier.storm import Backoff
from testkit import reliability, secrets
from testkit.redis_procs import RedisCluster3, RedisServer
from testkit.tls import TlsFiles, make_tls_files

if TYPE_CHECKING:
    from pathlib import Path


def pytest_configure(config: pytest.Config) -> None:
    """Install the secret guard for the whole suite (every test, no opt-in), and the record
    of the fault tests (``testkit.reliability``)."""
    secrets.install(config)
    reliability.install(config)


tally = reliability.tally
"""The fault test's tally (``testkit.reliability``)."""


FAST_BACKOFF = Backoff(base=0.01, cap=0.05)
"""The testing switch: retries wait milliseconds, not seconds."""


def cluster_settings(url: str, **overrides: Any) -> ClusterSettings:
    """A cluster pointed at ``url``, logging in as the simulator's default user."""
    data: dict[str, Any] = {
        "name": "sim",
        "base_url": url,
        "auth": {"username": "admin", "password": "admin"},
        "poll_budget": "20s",
        "timeout": "5s",
        **overrides,
    }
    return ClusterSettings.model_validate(data)


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


@asynccontextmanager
async def scripted_storm(routes: Mapping[tuple[str, str], Handler]) -> AsyncIterator[str]:
    """A bare HTTP server on 127.0.0.1 answering ``(method, path)`` with the given handlers."""
    app = web.Application()
    for (method, path), handler in routes.items():
        app.router.add_route(method, path, handler)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


def bare_env(**extra: str) -> dict[str, str]:
    """A minimal environment for a child ``python -m notifier``: PATH, HOME and LANG, plus
    coverage's ``COVERAGE_*`` variables, so that a ``--cov`` run measures the child too
    (``[tool.coverage.run] patch = ["subprocess"]``), and ``extra``."""
    kept = ("PATH", "HOME", "LANG", "SYSTEMROOT")
    env = {k: v for k, v in os.environ.items() if k in kept or k.startswith("COVERAGE_")}
    return {**env, **extra}


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private appendonly redis-server on a free port (never the shared one), stopped after."""
    with RedisServer(tmp_path / "redis", appendonly=True) as server:
        yield server


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    """``redis://127.0.0.1:PORT/0`` of the private ``redis_server``."""
    return redis_server.url


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[Redis]:
    """A client of the private redis-server."""
    client = Redis.from_url(redis_url)
    yield client
    await client.aclose()


@pytest.fixture
def redis_cluster(tmp_path: Path) -> Iterator[RedisCluster3]:
    """A private cluster of three masters (about 2 s to form), stopped after."""
    with RedisCluster3(tmp_path / "redis-cluster") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory: pytest.TempPathFactory) -> TlsFiles:
    """A throw-away CA and a certificate for 127.0.0.1 it signed (made once, with openssl)."""
    return make_tls_files(tmp_path_factory.mktemp("tls"))


@pytest.fixture(autouse=True)
def _fresh_logging() -> Iterator[None]:
    """Tests that configure structlog do not leak their level or output into the next test."""
    yield
    structlog.reset_defaults()
