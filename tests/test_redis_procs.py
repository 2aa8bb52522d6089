"""The redis-server helpers, driven as the notifier will drive Redis: redis-py asyncio clients."""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING

import pytest
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import ClusterCrossSlotError, RedisClusterException

from testkit.redis_procs import RedisProcessError, RedisServer

if TYPE_CHECKING:
    from pathlib import Path

    from testkit.redis_procs import RedisCluster3

pytestmark = pytest.mark.timeout(30)

SET_BOTH = "redis.call('SET', KEYS[1], ARGV[1]); redis.call('SET', KEYS[2], ARGV[1]); return 2"


async def test_server_answers_on_its_own_port(redis_server: RedisServer) -> None:
    """The private server answers PING and SET/GET on its own port, with appendonly on."""
    assert redis_server.port != 6379
    assert redis_server.url == f"redis://127.0.0.1:{redis_server.port}/0"
    async with Redis.from_url(redis_server.url) as client:
        assert await client.ping()
        await client.set("greeting", "hello")
        assert await client.get("greeting") == b"hello"
        server = await client.info("server")
        persistence = await client.info("persistence")
    assert server["tcp_port"] == redis_server.port
    assert str(server["redis_version"]).startswith("7.")
    assert persistence["aof_enabled"] == 1


async def test_appendonly_data_survives_stop_and_restart(redis_server: RedisServer) -> None:
    """What was written before stop() is there after restart(), on the same port."""
    port = redis_server.port
    async with Redis.from_url(redis_server.url) as client:
        await client.set("kept", "yes")
        await client.xadd("events", {"n": "1"})
    redis_server.stop()
    redis_server.stop()  # idempotent
    assert not redis_server.running
    redis_server.restart()
    assert redis_server.port == port
    async with Redis.from_url(redis_server.url) as client:
        assert await client.get("kept") == b"yes"
        assert await client.xlen("events") == 1


async def test_without_appendonly_a_restart_starts_empty(tmp_path: Path) -> None:
    """Without appendonly (and with save off) restart() really is a fresh server."""
    with RedisServer(tmp_path / "plain") as server:
        async with Redis.from_url(server.url) as client:
            await client.set("lost", "yes")
        server.restart()
        async with Redis.from_url(server.url) as client:
            assert await client.dbsize() == 0


async def test_kill_makes_the_port_refuse_connections(redis_server: RedisServer) -> None:
    """After kill() nothing listens on the port any more."""
    redis_server.kill()
    assert not redis_server.running
    with pytest.raises(ConnectionRefusedError):
        await asyncio.open_connection("127.0.0.1", redis_server.port)


def test_a_server_that_cannot_start_fails_with_its_log(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """A second server on a taken port fails to start, says why, and leaves nothing running."""
    second = RedisServer(tmp_path / "second", port=redis_server.port)
    with pytest.raises(RedisProcessError, match="Address already in use"):
        second.start()
    assert not second.running


def test_a_picked_port_taken_before_start_is_replaced(tmp_path: Path) -> None:
    """If someone binds the picked port before the first start, start() moves to a free one."""
    server = RedisServer(tmp_path / "moved")
    taken = server.port
    with socket.socket() as squatter:
        squatter.bind(("127.0.0.1", taken))
        squatter.listen()
        with server:
            assert server.port != taken
            assert server.running
    assert not server.running


async def test_cluster_spreads_keys_over_three_masters(redis_cluster: RedisCluster3) -> None:
    """RedisCluster.from_url(url) sees three masters, and SET/GET reach each of them."""
    async with RedisCluster.from_url(redis_cluster.url) as cluster:
        masters = {int(node.port) for node in cluster.get_primaries()}
        assert masters == {port for _, port in redis_cluster.startup_nodes}
        key_on: dict[int, str] = {}
        for index in range(100):
            key = f"key:{index}"
            owner = cluster.get_node_from_key(key)
            assert owner is not None
            key_on.setdefault(int(owner.port), key)
        assert set(key_on) == masters
        for key in key_on.values():
            await cluster.set(key, key.upper())
        for key in key_on.values():
            assert await cluster.get(key) == key.upper().encode()
    for port, key in key_on.items():
        async with Redis(host="127.0.0.1", port=port) as node:
            assert await node.keys() == [key.encode()]


async def test_cluster_lua_needs_keys_in_one_slot(redis_cluster: RedisCluster3) -> None:
    """EVAL on two `{c}` keys runs; on keys in two slots the server answers CROSSSLOT."""
    async with RedisCluster.from_url(redis_cluster.url) as cluster:
        assert await cluster.eval(SET_BOTH, 2, "{c}:a", "{c}:b", "v") == 2
        assert await cluster.mget("{c}:a", "{c}:b") == [b"v", b"v"]

        assert cluster.keyslot("a") != cluster.keyslot("b")
        with pytest.raises(RedisClusterException, match="same key slot"):
            await cluster.eval(SET_BOTH, 2, "a", "b", "v")  # redis-py refuses before sending
        with pytest.raises(ClusterCrossSlotError, match="same slot"):
            await cluster.execute_command(
                "EVAL", SET_BOTH, 2, "a", "b", "v", target_nodes=cluster.get_node_from_key("a")
            )
        assert await cluster.exists("a") + await cluster.exists("b") == 0


async def test_cluster_stream_with_hash_tag(redis_cluster: RedisCluster3) -> None:
    """XADD and XREAD work on a hash-tagged stream, which lives in the slot of its tag."""
    stream = "{c}:events"
    async with RedisCluster.from_url(redis_cluster.url) as cluster:
        assert cluster.keyslot(stream) == cluster.keyslot("c")
        first = await cluster.xadd(stream, {"n": "1"})
        second = await cluster.xadd(stream, {"n": "2"})
        replies = await cluster.xread({stream: "0"})
        assert replies == [[stream.encode(), [(first, {b"n": b"1"}), (second, {b"n": b"2"})]]]
        assert await cluster.xread({stream: second}) == []
