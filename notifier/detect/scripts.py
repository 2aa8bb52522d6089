"""The Lua scripts of the store (``store`` says when each runs and why it gives exactly once).

Every script touches only keys of one cluster (one hash tag), so each is atomic on a Redis
Cluster too, and each does a bounded amount of work: at most ``detection.commit_chunk`` writes.
``COMMIT`` is a whole chunk in one script (a Redis Cluster, the demo's embedded Redis);
``CHECK`` only its checks, in front of the chunk's MULTI (a single Redis server).
"""

from __future__ import annotations

__all__ = ["CHECK", "COMMIT", "META"]

META = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""


# The generation the chunk was computed against, a re-sent copy of the same chunk, the
# fencing token. A lease that ran out with nobody taking it since (the fence still at the
# chunk's token: Redis was paused, or restarted from its AOF) is still the writer's: the chunk
# takes it back for the lease's TTL and goes on. ``refused`` is why the chunk must not be
# applied: "ok" (it was, a copy of it came first), "stale" or "fenced".
def _checks(fence: str, ttl: str) -> str:
    return f"""
local meta = KEYS[1]
local generation = tonumber(redis.call('HGET', meta, 'generation') or '0')
local refused
if generation ~= tonumber(ARGV[1]) then
  refused = redis.call('HGET', meta, 'commit') == ARGV[3] and 'ok' or 'stale'
else
  local holder = redis.call('GET', KEYS[2])
  if holder ~= ARGV[2] then
    local token = string.match(ARGV[2], ':(%d+)$')
    if holder or not token or redis.call('GET', {fence}) ~= token then
      refused = 'fenced'
    else
      redis.call('SET', KEYS[2], ARGV[2], 'PX', {ttl})
    end
  end
end
"""


# One HSET of the meta hash per chunk (a poll's first chunk also counts the poll).
_MOVE_ON = """
if ARGV[5] == '' then
  redis.call('HSET', meta, 'generation', generation + 1, 'sequence', ARGV[4], 'commit', ARGV[3])
else
  redis.call('HSET', meta, 'generation', generation + 1, 'sequence', ARGV[4], 'commit', ARGV[3],
             'polled_at', ARGV[5])
  redis.call('HINCRBY', meta, 'polls', 1)
end
"""

# One chunk of a commit. KEYS: meta, lease, viewers, events, streams, fence. ARGV: generation,
# lease, commit (chunk) id, sequence after it, polled_at ('' for none), maxlen, upserts,
# deletes, events, stream upserts, stream deletes, audiences ('1': from now on the stream
# states are kept, '-1': they no longer are, '': as they were), the three entry field names,
# the lease's TTL (ms), the data.
COMMIT = (
    _checks("KEYS[6]", "ARGV[16]")
    + """
if refused then return {refused, generation} end
local viewers, events, maxlen = KEYS[3], KEYS[4], ARGV[6]
local upserts, deletes, count = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local stream_upserts, stream_deletes = tonumber(ARGV[10]), tonumber(ARGV[11])
local f1, f2, f3 = ARGV[13], ARGV[14], ARGV[15]
local i = 17
if ARGV[12] == '1' then
  redis.call('HSET', meta, 'audiences', 1)
elseif ARGV[12] == '-1' and redis.call('HDEL', meta, 'audiences') == 1 then
  redis.call('DEL', KEYS[5])
end
while upserts > 0 do
  local n = math.min(upserts, 500)
  redis.call('HSET', viewers, unpack(ARGV, i, i + 2 * n - 1))
  i, upserts = i + 2 * n, upserts - n
end
while deletes > 0 do
  local n = math.min(deletes, 1000)
  redis.call('HDEL', viewers, unpack(ARGV, i, i + n - 1))
  i, deletes = i + n, deletes - n
end
for _ = 1, count do
  redis.call('XADD', events, '*', f1, ARGV[i], f2, ARGV[i + 1], f3, ARGV[i + 2])
  i = i + 3
end
if count > 0 then  -- trimmed once per chunk, as MAXLEN ~ on each XADD would (whole nodes)
  redis.call('XTRIM', events, 'MAXLEN', '~', maxlen)
end
while stream_upserts > 0 do
  local n = math.min(stream_upserts, 500)
  redis.call('HSET', KEYS[5], unpack(ARGV, i, i + 2 * n - 1))
  i, stream_upserts = i + 2 * n, stream_upserts - n
end
while stream_deletes > 0 do
  local n = math.min(stream_deletes, 1000)
  redis.call('HDEL', KEYS[5], unpack(ARGV, i, i + n - 1))
  i, stream_deletes = i + n, stream_deletes - n
end
"""
    + _MOVE_ON
    + """
return {'ok', generation + 1}
"""
)

# The check before one chunk's transaction (``senders.Transaction``), sent between its
# ``WATCH meta fence`` and its MULTI: the EXEC follows only if it answers "go". KEYS: meta,
# lease, fence. ARGV: generation, lease, commit (chunk) id, the lease's TTL (ms).
CHECK = (
    _checks("KEYS[3]", "ARGV[4]")
    + """
if refused then return {refused, generation} end
return {'go', generation}
"""
)
