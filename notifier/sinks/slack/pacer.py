"""One ``chat.postMessage`` a second per Slack channel, shared by every process posting to it.

Slack allows about one message a second per channel and answers ``ratelimited`` beyond that.
Several replicas, sinks and clusters may post to one channel, so the pace is kept in Redis,
under ``keys.slack_pace``: the time (ms, Redis's own clock, so no two hosts need agree on the
time) before which the channel's next message may not go. ``turn`` runs one script that takes
the channel if that time has passed (and moves it one ``interval`` on) or says how long is
left; the caller waits that long and asks again. A turn is taken at the moment the message
goes, so however late a process wakes, no two messages of the channel leave closer than
``interval``, whichever processes send them.

A turn further away than ``longest_wait`` is not waited for: ``turn`` returns how far off it
is, and the delivery hands the wait back to the schedule (a rate limit: no attempt used)
instead of holding a lane. ``hold`` pushes the next turn out when Slack asks for a pause
(``Retry-After``), so every process honours it, not only the one that was told.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable

    from notifier.redis_client import AnyRedis

__all__ = ["INTERVAL", "LONGEST_WAIT", "ChannelPacer"]

INTERVAL: Final = 1.05
"""Seconds between two messages of a channel: Slack's one a second, with a margin for the
difference between taking a turn and the request's arrival at Slack."""
LONGEST_WAIT: Final = 5.0
"""A turn further away is not waited for inside a delivery (shutdown would wait for it)."""

_TAKE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
if free > now then return free - now end
redis.call('SET', KEYS[1], now + tonumber(ARGV[1]), 'PX', tonumber(ARGV[1]) + 1000)
return -1
"""

_HOLD = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local free = tonumber(redis.call('GET', KEYS[1]) or '0')
local until_ms = now + tonumber(ARGV[1])
if until_ms > free then
  redis.call('SET', KEYS[1], until_ms, 'PX', tonumber(ARGV[1]) + 1000)
end
return 1
"""


class ChannelPacer:
    """The turns of one Slack channel. Pass in the Redis client and the key (``slack_pace``)."""

    def __init__(
        self,
        redis: AnyRedis,
        key: str,
        *,
        interval: float = INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        self._key = key
        self._interval_ms = max(int(interval * 1000), 1)
        self._take = redis.register_script(_TAKE)
        self._hold = redis.register_script(_HOLD)
        self._clock = clock
        self._sleep = sleep

    async def turn(self, longest_wait: float = LONGEST_WAIT) -> float | None:
        """Wait for the channel's turn and take it: None once taken; or, when it is more than
        ``longest_wait`` away, the seconds to it (nothing taken)."""
        deadline = self._clock() + longest_wait
        while True:
            left_ms = await self._take(keys=[self._key], args=[self._interval_ms])
            if left_ms < 0:
                return None
            wait = float(left_ms) / 1000
            if wait > deadline - self._clock():
                return wait
            await self._sleep(wait)

    async def hold(self, seconds: float) -> None:
        """No message to the channel for ``seconds`` (Slack said ``Retry-After``)."""
        await self._hold(keys=[self._key], args=[max(int(seconds * 1000), 1)])
