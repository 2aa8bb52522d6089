"""Shared fixtures: settings builders, a scripted Storm server, a real redis-server."""

from __future__ import annotations

import shutil
import socket
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web

from notifier.config import ClusterSettings
from notifier.storm import Backoff

if TYPE_CHECKING:
    from pathlib import Path

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


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    """A private redis-server on a free port (never the shared one), stopped afterwards."""
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail("redis-server is not installed (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen(
        [
            binary,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            "--dir",
            str(tmp_path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait_for_port(port, process)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


def _wait_for_port(port: int, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        if process.poll() is not None:
            pytest.fail(f"redis-server exited with {process.returncode}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.1):
                return
        except OSError:
            time.sleep(0.01)  # polling a port for readiness, not synchronising test logic
    pytest.fail("redis-server did not start within 10 s")
