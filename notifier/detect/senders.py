"""How the store sends a commit's chunks: in order, the next one on its way while Redis applies
the one before (``store`` says why the order matters: each chunk checks the generation the one
before it left).

A chunk goes as one of two things, the same writes either way:

- ``Transaction`` (a single Redis server): ``WATCH meta fence``, the ``CHECK`` script, then the
  writes as plain commands in ``MULTI``, and ``EXEC`` only once the check said "go" (else
  ``DISCARD``). Anything that moves the generation or the fence between the check and the EXEC
  makes Redis discard the transaction (the WATCH). Redis runs the commands natively: a script
  would first copy every argument into Lua and back (a first poll of 100k viewers sends 125 MB
  of them), which cost as much Redis time as the writes.
- ``OneByOne`` (a Redis Cluster client, which routes each call by its keys, or a client with no
  socket, the demo's embedded Redis): the ``COMMIT`` script, one chunk at a time.
"""

from __future__ import annotations

import asyncio
import collections
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

import hiredis
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import InvalidResponse, ResponseError

from notifier.detect.encoding import PollEvents
from notifier.detect.resp import XaddFrame, command
from notifier.events import ENTRY_FIELDS

if TYPE_CHECKING:
    from collections.abc import Sequence

    from redis.asyncio import Redis
    from redis.asyncio.connection import AbstractConnection
    from redis.commands.core import AsyncScript

    from notifier.detect.chunks import ChunkWrite
    from notifier.events import EncodedEvent
    from notifier.keys import ClusterKeys

__all__ = ["OneByOne", "Sender", "Transaction", "transaction"]


class Sender(Protocol):
    """Sends chunks and gives their replies back in the order sent: ``(status, generation)``,
    status one of "ok", "stale", "fenced" (``CommitOutcome``), or "moved": the chunk was
    discarded because another writer moved the generation or the fence after its check (which
    of the two, the lease says)."""

    window: int  # chunks in flight at most
    in_flight: int

    async def send(self, write: ChunkWrite) -> None: ...

    async def receive(self) -> tuple[str, int]: ...

    async def close(self) -> None: ...


_MULTI: Final = command("MULTI")
_EXEC: Final = command("EXEC")
_DISCARD: Final = command("DISCARD")
_READ: Final = 1 << 16


@dataclass(slots=True)
class _Sent:
    """A chunk on the wire, and how far its replies have been read."""

    queued: int  # the commands its MULTI queues
    answered: bool = False  # its EXEC (or DISCARD) went out
    checked: Any = None  # the check's reply, once read
    outcome: tuple[str, int] | ResponseError | None = None  # once every reply was read


class Transaction:
    """Chunks as transactions on one connection: ``WATCH``, the check, ``MULTI`` and the writes
    go out at once; the ``EXEC`` follows once the check said "go" (else a ``DISCARD``), sent
    together with the next chunk. So a chunk whose check did not pass, or failed (a script
    Redis forgot, a key of the wrong type), is never applied, and Redis applies one chunk while
    the next is encoded: it is never idle for long between them.

    The replies (one per command, a thousand ``QUEUED`` per chunk) are read straight off the
    connection's socket by hiredis, not one ``read_response()`` each: that costs some 4 µs a
    reply, as much as encoding the event. The connection comes from the client's pool (its
    login, TLS and database done) and goes back to it only when every reply was read.
    """

    window = 3  # the chunk being applied, the one whose EXEC just went out, the newest

    def __init__(
        self,
        redis: Redis,
        connection: AbstractConnection,
        reader: asyncio.StreamReader,
        keys: ClusterKeys,
        *,
        check: str,
        maxlen: int,
        lease_ttl_ms: int,
    ) -> None:
        """Use ``transaction()``: it makes one when the connection has a socket to read."""
        self._pool = redis.connection_pool
        self._connection: AbstractConnection | None = connection
        self._socket = reader
        self._replies = hiredis.Reader(protocolError=InvalidResponse, replyError=ResponseError)
        timeout = getattr(connection, "socket_timeout", None)
        self._timeout = float(timeout) if timeout else None
        self._keys = keys
        self._check = check
        self._maxlen = maxlen
        self._ttl = lease_ttl_ms
        self._frame = XaddFrame(keys.events)
        self._watch = command("WATCH", keys.meta, keys.fence)
        self._sent: collections.deque[_Sent] = collections.deque()
        self.in_flight = 0

    async def send(self, write: ChunkWrite) -> None:
        if self._connection is None:
            raise AssertionError("the transaction sender is closed")
        parts, queued = self.commands(write)  # encoded while Redis applies the chunk before
        answer = await self._answer_newest() if self._sent else []
        self._sent.append(_Sent(queued))
        self.in_flight += 1  # before the first byte: a send cut off leaves the connection dirty
        await self._connection.send_packed_command([*answer, *parts], check_health=False)

    async def receive(self) -> tuple[str, int]:
        if not self._sent:
            raise AssertionError("no chunk in flight")
        oldest = self._sent[0]
        if not oldest.answered:  # the last chunk: no chunk after it takes its EXEC along
            answer = await self._answer_newest()
            if self._connection is None:
                raise AssertionError("the transaction sender is closed")
            await self._connection.send_packed_command(answer, check_health=False)
        outcome = await self._read_through(oldest)
        self._sent.popleft()  # every reply of the chunk read
        self.in_flight -= 1
        if isinstance(outcome, ResponseError):
            raise outcome
        return outcome

    async def close(self) -> None:
        connection, self._connection = self._connection, None
        if connection is None:
            return
        try:
            if self.in_flight or self._replies.has_data():  # a refused chunk, or a fault
                await connection.disconnect()
        finally:
            self.in_flight = 0
            self._sent.clear()
            await self._pool.release(connection)

    def commands(self, write: ChunkWrite) -> tuple[list[bytes], int]:
        """The chunk as the commands sent first (``WATCH``, the check, ``MULTI``, the
        writes; its ``EXEC`` follows the check), and how many of them ``MULTI`` queues."""
        keys = self._keys
        check = command(
            "EVALSHA", self._check, 3, keys.meta, keys.lease, keys.fence,
            write.generation, write.lease, write.commit, self._ttl,
        )  # fmt: skip
        writes: list[bytes] = []
        if write.keep == "1":
            writes.append(command("HSET", keys.meta, "audiences", 1))
        elif write.keep == "-1":
            writes += (command("HDEL", keys.meta, "audiences"), command("DEL", keys.streams))
        if write.upserts:
            writes.append(command("HSET", keys.viewers, *write.upserts))
        if write.deletes:
            writes.append(command("HDEL", keys.viewers, *write.deletes))
        if write.end > write.start:
            writes += _xadds(write.events, write.start, write.end, self._frame)
            writes.append(command("XTRIM", keys.events, "MAXLEN", "~", self._maxlen))
        if write.stream_upserts:
            writes.append(command("HSET", keys.streams, *write.stream_upserts))
        if write.stream_deletes:
            writes.append(command("HDEL", keys.streams, *write.stream_deletes))
        moved: list[str | int] = ["generation", write.generation + 1, "sequence", write.sequence]
        moved += ("commit", write.commit)
        if write.polled_at is not None:
            moved += ("polled_at", write.polled_at)
        writes.append(command("HSET", keys.meta, *moved))
        if write.polled_at is not None:
            writes.append(command("HINCRBY", keys.meta, "polls", 1))
        return [self._watch, check, _MULTI, *writes], len(writes)

    async def _answer_newest(self) -> list[bytes]:
        """Read the check of the newest chunk (it was sent without its EXEC) and answer it:
        ``EXEC`` if it said "go", ``DISCARD`` if it refused the chunk or failed."""
        newest = self._sent[-1]
        await self._read_through(newest, checked_only=True)
        await self._before_answer()
        newest.answered = True
        go = not isinstance(newest.checked, ResponseError) and newest.checked[0] == b"go"
        return [_EXEC if go else _DISCARD]

    async def _before_answer(self) -> None:
        """Called after a chunk's check was read and before its EXEC goes out (the seam where
        tests let another writer in between)."""

    async def _read_through(
        self, target: _Sent, *, checked_only: bool = False
    ) -> tuple[str, int] | ResponseError:
        """Read replies in order up to ``target``'s check, or all of them; its outcome."""
        for sent in self._sent:
            if sent.checked is None:
                watched = await self._reply()  # OK, or an error: then no EXEC either
                checked = await self._reply()
                sent.checked = watched if isinstance(watched, ResponseError) else checked
            if sent is target and checked_only:
                return ("", 0)
            if sent.outcome is None:
                sent.outcome = await self._rest(sent)
            if sent is target:
                return sent.outcome
        raise AssertionError("the chunk is not in flight")

    async def _rest(self, sent: _Sent) -> tuple[str, int] | ResponseError:
        """The replies of a chunk after its check: MULTI, one per command, EXEC or DISCARD."""
        if not sent.answered:
            raise AssertionError("a chunk's EXEC was not sent")
        await self._reply()  # MULTI: OK
        refused: ResponseError | None = None
        for _ in range(sent.queued):
            reply = await self._reply()
            if refused is None and isinstance(reply, ResponseError):
                refused = reply  # refused as it was queued (OOM): the EXEC discards them all
        applied = await self._reply()  # EXEC: its replies, or None; DISCARD: OK
        return _verdict(sent.checked, refused, applied)

    async def _reply(self) -> Any:
        while True:
            reply = self._replies.gets()
            if reply is not False:
                return reply
            async with asyncio.timeout(self._timeout):
                data = await self._socket.read(_READ)
            if not data:
                raise RedisConnectionError("Redis closed the connection during a commit")
            self._replies.feed(data)


async def transaction(
    redis: Redis, keys: ClusterKeys, *, check: str, maxlen: int, lease_ttl_ms: int
) -> Transaction | None:
    """A ``Transaction`` on a connection of ``redis``'s pool; None if that connection has no
    socket to read (the embedded Redis of the demo)."""
    pool = redis.connection_pool
    connection = await pool.get_connection()  # type: ignore[no-untyped-call]
    if not isinstance(getattr(connection, "_reader", None), asyncio.StreamReader):
        await pool.release(connection)
        return None
    try:
        try:  # an idle connection to a Redis that restarted since may not know it yet
            usable = await _transactions_allowed(connection)
        except (RedisConnectionError, OSError):
            await connection.disconnect()
            await connection.connect()
            usable = await _transactions_allowed(connection)
    except BaseException:
        await pool.release(connection)
        raise
    reader = getattr(connection, "_reader", None)
    if not usable or not isinstance(reader, asyncio.StreamReader):
        await pool.release(connection)
        return None
    return Transaction(
        redis, connection, reader, keys, check=check, maxlen=maxlen, lease_ttl_ms=lease_ttl_ms
    )


async def _transactions_allowed(connection: AbstractConnection) -> bool:
    """``MULTI`` then ``DISCARD``: whether this connection may open a transaction (an ACL
    user may not: its chunks go as scripts then), and that it is alive."""
    await connection.send_packed_command([_MULTI, _DISCARD], check_health=False)
    allowed = True
    for _ in range(2):
        try:
            await connection.read_response()
        except ResponseError:  # (read whole: the connection stays in step)
            allowed = False
    return allowed


def _verdict(
    checked: Any, refused: ResponseError | None, applied: Any
) -> tuple[str, int] | ResponseError:
    """A chunk's outcome from its check's reply, the first command refused as it was queued,
    and the reply to its EXEC (or DISCARD)."""
    for error in (checked, refused, applied):
        if isinstance(error, ResponseError):
            return error  # (a failed check: the chunk was discarded)
    status, generation = checked[0].decode(), int(checked[1])
    if status != "go":
        return status, generation  # (discarded)
    if applied is None:  # the generation or the fence moved between the check and the EXEC
        return "moved", generation
    failed = next((reply for reply in applied if isinstance(reply, ResponseError)), None)
    return failed if failed is not None else ("ok", generation + 1)  # (failed: a key of the
    # wrong type, the rest applied)


def _xadds(events: Sequence[EncodedEvent], start: int, end: int, frame: XaddFrame) -> list[bytes]:
    if isinstance(events, PollEvents):
        return events.xadds(start, end, frame)
    return [frame.entry(e.type, e.id.encode(), e.body) for e in events[start:end]]


class OneByOne:
    """One chunk at a time as one ``COMMIT`` script; the next chunk is still encoded while Redis
    applies the one before."""

    window = 1

    def __init__(self, script: AsyncScript, keys: ClusterKeys, *, maxlen: int, lease_ttl_ms: int):
        self._script = script
        self._keys = [keys.meta, keys.lease, keys.viewers, keys.events, keys.streams, keys.fence]
        self._maxlen = maxlen
        self._ttl = lease_ttl_ms
        self._pending: asyncio.Future[Any] | None = None
        self.in_flight = 0

    async def send(self, write: ChunkWrite) -> None:
        args = self.arguments(write)
        self._pending = asyncio.ensure_future(self._script(keys=self._keys, args=args))
        self.in_flight = 1
        await asyncio.sleep(0)  # on its way before the next chunk is encoded

    async def receive(self) -> tuple[str, int]:
        pending, self._pending = self._pending, None
        if pending is None:
            raise AssertionError("no chunk in flight")
        self.in_flight = 0
        status, generation = await pending
        text = status.decode() if isinstance(status, bytes) else str(status)
        return text, int(generation)

    async def close(self) -> None:
        if self._pending is not None:
            self._pending.cancel()
            self._pending, self.in_flight = None, 0

    def arguments(self, write: ChunkWrite) -> list[Any]:
        """The script's ARGV for ``write`` (``scripts.COMMIT`` names them)."""
        events = write.events[write.start : write.end]
        args: list[Any] = [
            write.generation,
            write.lease,
            write.commit,
            write.sequence,
            "" if write.polled_at is None else write.polled_at,
            self._maxlen,
            len(write.upserts) // 2,
            len(write.deletes),
            len(events),
            len(write.stream_upserts) // 2,
            len(write.stream_deletes),
            write.keep,
            *ENTRY_FIELDS,
            self._ttl,
            *write.upserts,
            *write.deletes,
        ]
        for event in events:
            args += event.values()
        return [*args, *write.stream_upserts, *write.stream_deletes]
