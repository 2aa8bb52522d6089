"""How the store sends a commit's chunks: in order, the next one on its way while Redis applies
the one before (``store`` says why the order matters: each chunk checks the generation the one
before it left)."""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, Protocol

import hiredis

if TYPE_CHECKING:
    from redis.asyncio import Redis
    from redis.asyncio.connection import AbstractConnection
    from redis.commands.core import AsyncScript

__all__ = ["OneByOne", "Pipelined", "Sender"]


class Sender(Protocol):
    """Sends commit scripts and gives their replies back in the order sent."""

    window: int  # chunks in flight at most
    in_flight: int

    async def send(self, keys: list[str], args: list[Any]) -> None: ...

    async def receive(self) -> Any: ...

    async def close(self) -> None: ...


class Pipelined:
    """Chunks one after the other on one connection, the next sent before the reply to the
    one before is read: Redis applies one while the next is encoded and waits in its socket,
    so it never idles between chunks. Scripts on one connection run in the order sent.

    A chunk is packed by hiredis in C: a first poll of 100k viewers sends 140 MB of arguments,
    and redis-py's asyncio connection packs them in Python (about twice the time).
    """

    window = 2

    def __init__(self, redis: Redis, sha: str) -> None:
        self._pool = redis.connection_pool
        self._sha = sha
        self._connection: AbstractConnection | None = None
        self.in_flight = 0

    async def send(self, keys: list[str], args: list[Any]) -> None:
        if self._connection is None:
            self._connection = await self._pool.get_connection()  # type: ignore[no-untyped-call]
        command = hiredis.pack_command(("EVALSHA", self._sha, len(keys), *keys, *args))
        await self._connection.send_packed_command(command)
        self.in_flight += 1

    async def receive(self) -> Any:
        if self._connection is None or not self.in_flight:
            raise AssertionError("no chunk in flight")
        self.in_flight -= 1
        return await self._connection.read_response()

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if self.in_flight:  # a chunk after a refused one (it is refused too), or a fault
                await connection.disconnect()
        finally:
            self.in_flight = 0
            await self._pool.release(connection)


class OneByOne:
    """One chunk at a time, for a Redis Cluster client (it routes each call by its keys); the
    next chunk is still encoded while Redis applies the one before."""

    window = 1

    def __init__(self, script: AsyncScript) -> None:
        self._script = script
        self._pending: asyncio.Future[Any] | None = None
        self.in_flight = 0

    async def send(self, keys: list[str], args: list[Any]) -> None:
        self._pending = asyncio.ensure_future(self._script(keys=keys, args=args))
        self.in_flight = 1
        await asyncio.sleep(0)  # on its way before the next chunk is encoded

    async def receive(self) -> Any:
        pending, self._pending = self._pending, None
        if pending is None:
            raise AssertionError("no chunk in flight")
        self.in_flight = 0
        return await pending

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending, self.in_flight = None, 0
