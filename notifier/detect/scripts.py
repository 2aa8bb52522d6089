"""The Lua scripts of the store (``store`` says when each runs and why it gives exactly once).

Every script touches only keys of one cluster (one hash tag), so each is atomic on a Redis
Cluster too, and each does a bounded amount of work: at most ``store.CHUNK_OPS`` writes.
"""

from __future__ import annotations

__all__ = ["APPLY", "CLEAR_STAGE", "COMMIT", "META", "PUBLISH", "STAGE"]

META = """
redis.call('HSETNX', KEYS[1], 'epoch', ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

# Both commit scripts begin alike: the generation the poll was computed against, a re-sent
# copy of the same commit, the fencing token, no other commit half applied.
_CHECKS = """
local meta = KEYS[1]
local generation = tonumber(redis.call('HGET', meta, 'generation') or '0')
if generation ~= tonumber(ARGV[1]) then
  if redis.call('HGET', meta, 'commit') == ARGV[3] then return {'ok', generation} end
  return {'stale', generation}
end
if redis.call('GET', KEYS[2]) ~= ARGV[2] then return {'fenced', generation} end
if redis.call('HEXISTS', meta, 'pending') == 1 then return {'pending', generation} end
"""

# One HSET of the meta hash per commit (a poll also counts itself).
_MOVE_ON = """
if ARGV[5] == '' then
  redis.call('HSET', meta, 'generation', generation + 1, 'sequence', ARGV[4], 'commit', ARGV[3])
else
  redis.call('HSET', meta, 'generation', generation + 1, 'sequence', ARGV[4], 'commit', ARGV[3],
             'polled_at', ARGV[5])
  redis.call('HINCRBY', meta, 'polls', 1)
end
"""

# KEYS: meta, lease, viewers, events. ARGV: generation, lease, commit, sequence, polled_at,
# maxlen, upserts, deletes, events, the three entry field names, then the data.
COMMIT = (
    _CHECKS
    + """
local viewers, events, maxlen = KEYS[3], KEYS[4], ARGV[6]
local upserts, deletes, count = tonumber(ARGV[7]), tonumber(ARGV[8]), tonumber(ARGV[9])
local f1, f2, f3 = ARGV[10], ARGV[11], ARGV[12]
local i = 13
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
  redis.call('XADD', events, 'MAXLEN', '~', maxlen, '*',
             f1, ARGV[i], f2, ARGV[i + 1], f3, ARGV[i + 2])
  i = i + 3
end
"""
    + _MOVE_ON
    + """
return {'ok', generation + 1}
"""
)

# KEYS: meta, lease, stage. ARGV: lease. Only the leader, and never while a published commit
# still needs its chunks: what it clears is what a crash before publishing left behind.
CLEAR_STAGE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'fenced' end
if redis.call('HEXISTS', KEYS[1], 'pending') == 1 then return 'pending' end
redis.call('DEL', KEYS[3])
return 'ok'
"""

# KEYS: meta, lease, stage. ARGV: lease, field, chunk, expiry ms. Fenced too: a stale leader
# that wakes late must neither add to another leader's stage nor put an expiry back on a
# published one (its chunks would then vanish before they are applied).
STAGE = """
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'fenced' end
if redis.call('HEXISTS', KEYS[1], 'pending') == 1 then return 'pending' end
redis.call('HSET', KEYS[3], ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return 'ok'
"""

# KEYS: meta, lease, stage. ARGV: generation, lease, commit, sequence, polled_at, chunks.
PUBLISH = (
    _CHECKS
    + """
if redis.call('HLEN', KEYS[3]) ~= tonumber(ARGV[6]) then return {'unstaged', generation} end
redis.call('PERSIST', KEYS[3])
"""
    + _MOVE_ON
    + """
redis.call('HSET', meta, 'pending', ARGV[3], 'pending_chunks', ARGV[6], 'applied', 0)
return {'ok', generation + 1}
"""
)

# KEYS: meta, lease, viewers, events, stage. ARGV: lease, commit, chunk, maxlen, field names.
APPLY = """
local meta = KEYS[1]
if redis.call('GET', KEYS[2]) ~= ARGV[1] then return 'fenced' end
if redis.call('HGET', meta, 'pending') ~= ARGV[2] then return 'done' end
local chunk = tonumber(ARGV[3])
local applied = tonumber(redis.call('HGET', meta, 'applied') or '0')
if applied >= chunk then return 'ok' end
if applied ~= chunk - 1 then return 'gap' end
local field = ARGV[2] .. ':' .. ARGV[3]
local blob = redis.call('HGET', KEYS[5], field)
if not blob then return 'missing' end
local pos = 1
local function take()
  local colon = string.find(blob, ':', pos, true)
  local n = tonumber(string.sub(blob, pos, colon - 1))
  local item = string.sub(blob, colon + 1, colon + n)
  pos = colon + n + 1
  return item
end
local u, d, e = string.match(take(), '^(%d+),(%d+),(%d+)$')
local batch = {}
for _ = 1, tonumber(u) do
  batch[#batch + 1] = take()
  batch[#batch + 1] = take()
  if #batch >= 1000 then redis.call('HSET', KEYS[3], unpack(batch)); batch = {} end
end
if #batch > 0 then redis.call('HSET', KEYS[3], unpack(batch)); batch = {} end
for _ = 1, tonumber(d) do
  batch[#batch + 1] = take()
  if #batch >= 1000 then redis.call('HDEL', KEYS[3], unpack(batch)); batch = {} end
end
if #batch > 0 then redis.call('HDEL', KEYS[3], unpack(batch)) end
for _ = 1, tonumber(e) do
  local kind, id, body = take(), take(), take()
  redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[4], '*',
             ARGV[5], kind, ARGV[6], id, ARGV[7], body)
end
if chunk == tonumber(redis.call('HGET', meta, 'pending_chunks')) then
  redis.call('HDEL', meta, 'pending', 'pending_chunks', 'applied')
  redis.call('DEL', KEYS[5])
else
  redis.call('HSET', meta, 'applied', chunk)
  redis.call('HDEL', KEYS[5], field)
end
return 'ok'
"""
