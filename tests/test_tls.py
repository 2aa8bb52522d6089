"""TLS and credentials against real servers with a throw-away CA: Storm and webhooks over HTTPS
(verified by default, ``verify_tls: false``, ``ca_file``), Redis over ``rediss://`` with an ACL
user, and the endpoint's loopback default.
"""

from __future__ import annotations

from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

import pytest
from aiohttp import web
from redis.asyncio import Redis
from redis.asyncio.connection import SSLConnection
from structlog.testing import capture_logs

from notifier.config import DetectionSettings, RedisSettings, ServerSettings
from notifier.detect.encoding import encode_poll
from notifier.detect.rules import detect
from notifier.detect.store import CommitOutcome, StateStore
from notifier.errors import ConfigError
from notifier.events import Event
from notifier.http import client_ssl
from notifier.keys import ClusterKeys
from notifier.lease import Lease
from notifier.redis_client import connect_redis, redis_reason
from notifier.simulator import PopulationSettings, Simulator, SimulatorSettings
from notifier.sinks.base import Delivered, Retry
from notifier.sinks.webhook import WebhookSink
from notifier.storm import StormClient, Viewer, create_session
from testkit.sink_support import webhook
from testkit.tls import AclUser, TlsFiles, TlsRedisServer

from .conftest import FAST_BACKOFF, cluster_settings

if TYPE_CHECKING:
    from collections.abc import AsyncIterator, Iterator
    from pathlib import Path

    from notifier.sinks.base import Outcome
    from testkit.reliability import Tally

pytestmark = pytest.mark.timeout(30)

ALICE = AclUser("alice", "alice-acl-pass-7Q")


@asynccontextmanager
async def https_server(app: web.Application, tls: TlsFiles) -> AsyncIterator[str]:
    """``app`` served over TLS on 127.0.0.1 with the test CA's certificate."""
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0, ssl_context=tls.server_context())
    await site.start()
    try:
        yield f"https://127.0.0.1:{runner.addresses[0][1]}"
    finally:
        await runner.cleanup()


async def _accepted(_request: web.Request) -> web.Response:
    return web.Response(status=204)


async def deliver_once(url: str, **settings: Any) -> Outcome:
    """One event through a webhook sink of its own making."""
    sink = WebhookSink(webhook(url + "/hook", **settings))
    event = Event(
        cluster="sim",
        entry_id="1-0",
        id="e1",
        type="viewer.connected",
        subject="v_1",
        sequence=1,
        body=b'{"id":"e1"}',
    )
    try:
        return await sink.deliver([event])
    finally:
        await sink.aclose()


@pytest.fixture
async def receiver(tls_files: TlsFiles) -> AsyncIterator[str]:
    """An HTTPS receiver that takes every POST /hook."""
    app = web.Application()
    app.router.add_post("/hook", _accepted)
    async with https_server(app, tls_files) as url:
        yield url


@pytest.mark.reliability(
    fault="Receiver with an untrusted certificate",
    injected="a local HTTPS webhook receiver with a self-signed certificate, verify_tls left on",
    checked="the delivery is refused with a one-line certificate error; nothing is posted",
)
async def test_a_webhook_to_an_untrusted_certificate_is_refused_by_default(
    receiver: str, tally: Tally
) -> None:
    """No CA given: a retry whose one-line reason says the certificate failed verification."""
    outcome = await deliver_once(receiver)
    tally.tried += 1
    assert isinstance(outcome, Retry)
    assert outcome.reason.startswith("certificate verify failed: ")
    assert "\n" not in outcome.reason
    assert "/hook" not in outcome.reason


async def test_a_webhook_is_delivered_with_verify_tls_off_and_says_so_once(receiver: str) -> None:
    """``verify_tls: false``: delivered, and one warning at start naming the sink."""
    with capture_logs() as logs:
        outcome = await deliver_once(receiver, verify_tls=False)
    assert outcome == Delivered(status=204)
    warnings = [e for e in logs if e["event"] == "sink.tls_unverified"]
    assert [(w["log_level"], w["sink"]) for w in warnings] == [("warning", "hooks")]


async def test_a_webhook_is_delivered_when_ca_file_names_the_ca(
    receiver: str, tls_files: TlsFiles
) -> None:
    """``ca_file`` pointing at the CA: delivered, nothing warned."""
    with capture_logs() as logs:
        outcome = await deliver_once(receiver, ca_file=str(tls_files.ca_cert))
    assert outcome == Delivered(status=204)
    assert not [e for e in logs if e["event"] == "sink.tls_unverified"]


def test_ca_file_with_verify_tls_off_is_a_config_error(tls_files: TlsFiles) -> None:
    """The two contradict each other: the settings say so."""
    with pytest.raises(ValueError, match="ca_file has no effect with verify_tls: false"):
        webhook("https://x/hook", verify_tls=False, ca_file=str(tls_files.ca_cert))
    with pytest.raises(ValueError, match="ca_file has no effect with verify_tls: false"):
        cluster_settings("https://x", verify_tls=False, ca_file=str(tls_files.ca_cert))


def test_a_ca_file_that_is_no_certificate_is_a_config_error(tmp_path: Path) -> None:
    """A file without PEM certificates: one line naming the file, at start."""
    bogus = tmp_path / "ca.pem"
    bogus.write_text("not a certificate\n")
    with pytest.raises(ConfigError, match=r"^ca_file .*ca\.pem: cannot load CA certificates"):
        client_ssl(verify_tls=True, ca_file=bogus)


@pytest.fixture
async def storm(tls_files: TlsFiles) -> AsyncIterator[str]:
    """The simulator (20 viewers) over HTTPS."""
    simulator = Simulator(SimulatorSettings(population=PopulationSettings(seed=3, viewers=20)))
    async with https_server(simulator.app(), tls_files) as url:
        yield url


async def poll(url: str, **settings: Any) -> tuple[bool, str | None, int]:
    """(complete, error, viewers) of one poll of the simulator at ``url``."""
    cluster = cluster_settings(url, poll_budget="1s", **settings)
    async with create_session(cluster) as session:
        client = StormClient(cluster, session, backoff=FAST_BACKOFF)
        try:
            result = await client.poll()
        finally:
            await client.aclose()
    return result.complete, result.error, len(result.viewers)


@pytest.mark.reliability(
    fault="Storm with an untrusted certificate",
    injected="a local HTTPS Storm with a self-signed certificate, verify_tls left on",
    checked="the poll is incomplete with a certificate error; nothing is detected",
)
async def test_storm_with_an_untrusted_certificate_is_an_incomplete_poll(
    storm: str, tally: Tally
) -> None:
    """By default the poll is incomplete, and its reason says "certificate verify failed"."""
    complete, error, _ = await poll(storm)
    tally.tried += 1
    assert not complete
    assert error is not None
    assert "certificate verify failed: " in error
    assert "\n" not in error


async def test_storm_is_read_with_verify_tls_off_or_with_the_ca(
    storm: str, tls_files: TlsFiles
) -> None:
    """``verify_tls: false`` (warned once) and ``ca_file`` both read every viewer."""
    with capture_logs() as logs:
        assert await poll(storm, verify_tls=False) == (True, None, 20)
    warned = [e["cluster"] for e in logs if e["event"] == "storm.tls_unverified"]
    assert warned == ["sim"]
    with capture_logs() as logs:
        assert await poll(storm, ca_file=str(tls_files.ca_cert)) == (True, None, 20)
    assert not [e for e in logs if e["event"] == "storm.tls_unverified"]


@pytest.fixture
def tls_redis(tmp_path: Path, tls_files: TlsFiles) -> Iterator[TlsRedisServer]:
    """A private redis-server with TLS and the ACL user ``alice``."""
    with TlsRedisServer(tmp_path / "redis-tls", tls_files, users=[ALICE]) as server:
        yield server


async def test_rediss_with_an_acl_user_and_ca_file(
    tls_redis: TlsRedisServer, tls_files: TlsFiles
) -> None:
    """``rediss://alice:…@`` with ``redis.ca_file``: connected over TLS as alice."""
    settings = RedisSettings(url=tls_redis.tls_url(ALICE), ca_file=tls_files.ca_cert)
    client = connect_redis(settings)
    try:
        assert await client.acl_whoami() == "alice"
        assert isinstance(client, Redis)
        assert client.connection_pool.connection_class is SSLConnection
        assert await client.set("k", "v")
    finally:
        await client.aclose()
    assert ALICE.password not in settings.display_url()


async def test_a_chunked_commit_over_rediss_goes_as_transactions(
    tls_redis: TlsRedisServer, tls_files: TlsFiles
) -> None:
    """A first poll of 300 viewers in chunks of 50 writes, over TLS as an ACL user: each chunk
    a transaction whose replies are read off the TLS socket; every event once, in order."""
    settings = RedisSettings(url=tls_redis.tls_url(ALICE), ca_file=tls_files.ca_cert)
    client = connect_redis(settings)
    assert isinstance(client, Redis)
    keys = ClusterKeys("tls", "big")
    try:
        lease = Lease(client, keys.lease, keys.fence, "me", ttl=30)
        assert await lease.acquire()
        assert lease.value is not None
        store = StateStore(client, keys, maxlen=10_000, chunk_ops=50)
        snapshot = await store.load()
        seen = {
            f"v{n}": Viewer(f"v{n}", 90.0, "Good", f'{{"id":"v{n}"}}'.encode()) for n in range(300)
        }
        detection = detect({}, seen, polled_at=1000, settings=DetectionSettings())
        events = encode_poll(
            detection.emissions, cluster="big", epoch=snapshot.epoch, after=0, time_ms=1000
        )
        outcome, generation = await store.commit(
            snapshot, detection, events, lease=lease.value, polled_at=1000
        )
        assert outcome is CommitOutcome.COMMITTED
        assert generation == store.chunks_applied == 12
        stored: list[tuple[bytes, dict[bytes, bytes]]] = await client.xrange(keys.events)  # type: ignore[assignment]
        assert [fields[b"id"].decode() for _, fields in stored] == [e.id for e in events]
        assert await client.hlen(keys.viewers) == 300
        stats = await client.info("commandstats")
        assert stats["cmdstat_exec"]["calls"] == 12  # a transaction per chunk, no script
    finally:
        await client.aclose()


async def test_rediss_takes_the_ca_from_the_url_query_too(
    tls_redis: TlsRedisServer, tls_files: TlsFiles
) -> None:
    """``?ssl_ca_certs=/path`` in the URL is the same as ``ca_file`` (redis-py reads it)."""
    url = tls_redis.tls_url(ALICE) + f"?ssl_ca_certs={tls_files.ca_cert}"
    client = connect_redis(RedisSettings(url=url))
    try:
        assert await client.ping()
    finally:
        await client.aclose()


@pytest.mark.reliability(
    fault="Redis over TLS with a wrong password or an unknown CA",
    injected=(
        "rediss:// to a local TLS redis-server with an ACL user: a wrong password, then a CA that"
        " did not sign it"
    ),
    checked="one clear line each, never the password",
)
async def test_rediss_wrong_password_or_unknown_ca_is_one_clear_line(
    tls_redis: TlsRedisServer, tls_files: TlsFiles, tally: Tally
) -> None:
    """A wrong password and a server the CAs do not vouch for: one line each, no password."""
    wrong = RedisSettings(
        url=tls_redis.tls_url(ALICE, password="wrong-pass-123"), ca_file=tls_files.ca_cert
    )
    untrusted = RedisSettings(url=tls_redis.tls_url(ALICE))
    reasons = []
    for settings in (wrong, untrusted):
        client = connect_redis(settings, connect_timeout=2.0, timeout=2.0)
        try:
            with pytest.raises(Exception) as caught:  # noqa: PT011 - the reason is what we check
                await client.ping()
            tally.tried += 1
        finally:
            await client.aclose()
        reasons.append(redis_reason(caught.value))
    assert reasons[0] == "invalid username-password pair or user is disabled."
    assert "certificate verify failed" in reasons[1]
    for reason in reasons:
        assert "\n" not in reason
        assert "wrong-pass-123" not in reason
        assert ALICE.password not in reason


def test_redis_ca_file_needs_rediss(tls_files: TlsFiles) -> None:
    """``ca_file`` with a plain redis:// URL is a mistake the settings name."""
    with pytest.raises(ValueError, match=r"ca_file needs a rediss:// url"):
        RedisSettings(url="redis://127.0.0.1:6379/0", ca_file=tls_files.ca_cert)


def test_the_endpoint_listens_on_loopback_by_default() -> None:
    """``server.listen`` defaults to 127.0.0.1: nothing is exposed unless asked for."""
    assert ServerSettings().listen.rpartition(":")[0] == "127.0.0.1"
