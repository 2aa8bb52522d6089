"""How many partitions deliver a sink's events of one cluster, and changing it live.

``P:{C}:sinklayout:<sink>`` holds K. Its consumer groups (``partition.Partition.group``) are made
by one script, ``ensure``, run when a service starts and whenever a worker is about to lead:

- **fresh** (no groups yet): the K groups start at the end of the stream, as one group did.
- **ok**: the layout already is K.
- **migrated**: the layout was K' and no worker of it holds a lease any more. In one atomic step
  the script records what the K' groups had done (``P:{C}:sinkcarry:<sink>``: each group's last
  delivered id and the ids it had read and not acknowledged), destroys them, and starts the K new
  groups at the oldest entry any of them still owed. A new partition then skips an entry that
  the old group of the entry's old partition had already delivered (``Carry.handled``), and
  delivers the rest: the owed ones (retries, deliveries cut short) again, at least once, the
  unread ones for the first time. Nothing is lost, and nothing is delivered twice beyond what
  at-least-once already allows.
- **busy**: a worker of the old layout still holds a lease (a replica with the old
  configuration), or the groups have not yet read past the previous change. The caller waits
  and tries again; the old layout keeps delivering meanwhile.

The flip guard: a worker takes its lease only while the layout is its own K (``guard_key``
of ``lease.Lease``), so after a change the replicas still configured with the old K stand by
instead of delivering beside the new partitions; and the change waits for the old leases,
so no old worker is delivering while the script looks at its group.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from notifier.sinks.partition import Partition, partition_of

if TYPE_CHECKING:
    from notifier.events import Event
    from notifier.keys import ClusterKeys
    from notifier.redis_client import AnyRedis

__all__ = ["Carry", "Layout", "Outcome", "parse_id"]

Outcome = Literal["fresh", "ok", "migrated", "busy"]

_ENSURE = """
local sink, want, seen = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local current = redis.call('GET', KEYS[2]) or ''
if current ~= seen then return {'changed', current} end
local function group(k, n)
  if n == 1 then return 'sink:' .. sink end
  return 'sink:' .. sink .. ':' .. k
end
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)-(%d+)$')
  return tonumber(ms), tonumber(seq)
end
local function less(a, b)
  local am, as = parse(a)
  local bm, bs = parse(b)
  return am < bm or (am == bm and as < bs)
end
local groups = {}
if redis.call('EXISTS', KEYS[1]) == 1 then
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local name, last
    for i = 1, #g, 2 do
      if g[i] == 'name' then name = g[i + 1] end
      if g[i] == 'last-delivered-id' then last = g[i + 1] end
    end
    groups[name] = last
  end
end
local from = nil
if current ~= '' then
  if not string.match(current, '^[1-9]%d*$') then
    return {'busy', 'the layout key holds ' .. string.sub(current, 1, 20)
      .. ', not a number of partitions: set it to the K whose groups exist'}
  end
  from = tonumber(current)
elseif groups[group(0, 1)] ~= nil then
  from = 1
else
  for name in pairs(groups) do
    if string.sub(name, 1, string.len(sink) + 6) == 'sink:' .. sink .. ':' then
      return {'busy', 'the layout key is missing but group ' .. name
        .. ' exists: set the layout key to the K of those groups'}
    end
  end
end
if from == nil or from == want then
  for k = 0, want - 1 do
    if groups[group(k, want)] == nil then
      redis.call('XGROUP', 'CREATE', KEYS[1], group(k, want), '$', 'MKSTREAM')
    end
  end
  redis.call('SET', KEYS[2], want)
  if from == nil then return {'fresh'} end
  return {'ok'}
end
for i = 4, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    return {'busy', 'a worker of the ' .. from .. '-partition layout still holds its lease'}
  end
end
local settling = redis.call('HGET', KEYS[3], 'until')
if settling then
  for k = 0, from - 1 do
    local last = groups[group(k, from)]
    if last ~= nil and less(last, settling) then
      return {'busy', 'the previous change of partitions has not been read past yet'}
    end
  end
end
local tail = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
local newest = (tail[1] and tail[1][1]) or '0-0'
local record = {'from', from}
local at, last_of_all = nil, '0-0'
for k = 0, from - 1 do
  local name = group(k, from)
  local last = groups[name] or newest
  local ids = {}
  if groups[name] ~= nil then
    for _, p in ipairs(redis.call('XPENDING', KEYS[1], name, '-', '+', 1000000)) do
      ids[#ids + 1] = p[1]
    end
  end
  local start = last
  if #ids > 0 then
    local before = redis.call('XREVRANGE', KEYS[1], '(' .. ids[1], '-', 'COUNT', 1)
    local previous = (before[1] and before[1][1]) or '0-0'
    if less(previous, start) then start = previous end
  end
  if at == nil or less(start, at) then at = start end
  if less(last_of_all, last) then last_of_all = last end
  record[#record + 1] = 'last:' .. k
  record[#record + 1] = last
  record[#record + 1] = 'pending:' .. k
  record[#record + 1] = table.concat(ids, ',')
  if groups[name] ~= nil then
    redis.call('XGROUP', 'DESTROY', KEYS[1], name)
    groups[name] = nil
  end
end
record[#record + 1] = 'at'
record[#record + 1] = at
record[#record + 1] = 'until'
record[#record + 1] = last_of_all
redis.call('DEL', KEYS[3])
redis.call('HSET', KEYS[3], unpack(record))
for k = 0, want - 1 do
  if groups[group(k, want)] ~= nil then
    redis.call('XGROUP', 'SETID', KEYS[1], group(k, want), at)
  else
    redis.call('XGROUP', 'CREATE', KEYS[1], group(k, want), at, 'MKSTREAM')
  end
end
redis.call('SET', KEYS[2], want)
return {'migrated', at, last_of_all}
"""


def parse_id(entry_id: str) -> tuple[int, int]:
    """A stream entry id ``ms-seq`` as a pair that compares the way Redis orders ids."""
    ms, _, seq = entry_id.partition("-")
    return int(ms), int(seq or 0)


@dataclass(frozen=True, slots=True)
class Carry:
    """What the groups of the previous layout had done when K last changed."""

    count: int
    last: tuple[tuple[int, int], ...]  # per old partition: its last delivered id
    pending: tuple[frozenset[str], ...]  # per old partition: read and not acknowledged
    until: tuple[int, int]  # past this id, no entry was seen by an old group

    def applies(self, entry_id: str) -> bool:
        """True while the entry is one an old group may have seen."""
        return parse_id(entry_id) <= self.until

    def handled(self, entry_id: str, event: Event) -> bool:
        """True if the old group of the event's old partition delivered it (or filtered it
        out, or dead-lettered it): it was read and acknowledged there."""
        old = partition_of(event, self.count)
        return parse_id(entry_id) <= self.last[old] and entry_id not in self.pending[old]

    def unreadable_done(self, entry_id: str) -> bool:
        """True if the old layout already dead-lettered this unreadable entry (partition 0 of
        every layout moves unreadable entries; the others only acknowledge them)."""
        return parse_id(entry_id) <= self.last[0] and entry_id not in self.pending[0]

    def owed(self, entry_id: str, event: Event) -> bool:
        """True if an old group had read the entry but not finished it (its retry state, if
        any, carries over)."""
        return entry_id in self.pending[partition_of(event, self.count)]

    @classmethod
    def decode(cls, raw: dict[bytes, bytes]) -> Carry | None:
        """The record of ``P:{C}:sinkcarry:<sink>``; None if there is none (or it is unreadable)."""
        text = {k.decode(): v.decode() for k, v in raw.items()}
        try:
            count = int(text["from"])
            last = tuple(parse_id(text[f"last:{q}"]) for q in range(count))
            pending = tuple(
                frozenset(filter(None, text[f"pending:{q}"].split(","))) for q in range(count)
            )
            until = parse_id(text["until"])
        except (KeyError, ValueError):
            return None
        return cls(count, last, pending, until)


class Layout:
    """The layout of one sink's delivery of one cluster, as a service configured with
    ``count`` partitions wants it."""

    def __init__(self, redis: AnyRedis, keys: ClusterKeys, sink: str, count: int) -> None:
        self._redis = redis
        self._keys = keys
        self.sink = sink
        self.count = count
        self.key = keys.sink_layout(sink)
        self._ensure = redis.register_script(_ENSURE)
        self.reason = ""  # why the last ``ensure`` was busy

    async def ensure(self) -> Outcome:
        """Make the layout this service's K if that can be done now (see the module)."""
        for _ in range(3):  # the layout changed between the read and the script: read again
            raw = await self._redis.get(self.key)
            seen = raw.decode() if isinstance(raw, bytes) else (raw or "")
            old = int(seen) if seen.isdigit() and int(seen) > 0 else 1
            leases = [Partition(self.sink, k, old).lease_key(self._keys) for k in range(old)]
            reply = await self._ensure(
                keys=[self._keys.events, self.key, self._keys.sink_carry(self.sink), *leases],
                args=[self.sink, self.count, seen],
            )
            outcome = reply[0].decode() if isinstance(reply[0], bytes) else str(reply[0])
            if outcome != "changed":
                detail = reply[1] if len(reply) > 1 else b""
                self.reason = detail.decode() if isinstance(detail, bytes) else str(detail)
                return outcome  # type: ignore[return-value]
        self.reason = "the layout keeps changing"
        return "busy"

    async def carry(self) -> Carry | None:
        """The record of the last change of K, if there was one."""
        raw = await self._redis.hgetall(self._keys.sink_carry(self.sink))
        return Carry.decode({_bytes(k): _bytes(v) for k, v in raw.items()}) if raw else None


def _bytes(value: bytes | str) -> bytes:
    return value if isinstance(value, bytes) else value.encode()
