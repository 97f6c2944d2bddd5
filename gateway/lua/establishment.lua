-- An establishment's own keys on a Redis Cluster, where they are in another
-- slot than its accounts' (docs/architecture.md, "Hash slots"): its set of
-- account ids, its audit history, and its pending creations (id -> when).
-- A creation adds the id first (`reserve`), then writes the account, then
-- `settle`s (or `undo`es a refused one): a process that dies in between
-- leaves an id without a record, which readers skip and the sweep removes
-- once it is older than its grace period; never an account its
-- establishment cannot see.
-- KEYS: 1 establishment set, 2 establishment history, 3 pending creations
-- ARGV: 1 op: `reserve` | `settle` | `undo` | `remove` | `audit` | `sweep` | `readd`,
--       2 account id, 3 `undo`: '1' when `reserve` added the id; `sweep`: the
--       time (ms) before which a pending creation is stale, 4 history maxlen,
--       5 number of audit items n, 6 .. 5+n the audit entry (`settle`,
--       `remove`, `audit`)
-- `sweep` (the caller saw no record for the id) takes the id out, unless a
-- creation added it after ARGV[3]; `readd` puts back one whose record
-- appeared meanwhile.
-- Returns `reserve`: 1 when the id was added, 0 when it was there; `sweep`:
-- 1 when taken out; else 1.
local op, id = ARGV[1], ARGV[2]
if op == 'sweep' then
  local since = tonumber(redis.call('HGET', KEYS[3], id))
  if since and since > tonumber(ARGV[3]) then return 0 end
  redis.call('HDEL', KEYS[3], id)
  return redis.call('SREM', KEYS[1], id)
end
if op == 'readd' then return redis.call('SADD', KEYS[1], id) end
if op == 'reserve' then
  redis.call('HSET', KEYS[3], id, now_ms())
  return redis.call('SADD', KEYS[1], id)
end
if op == 'settle' or op == 'undo' then redis.call('HDEL', KEYS[3], id) end
if op == 'undo' then
  if ARGV[3] == '1' then redis.call('SREM', KEYS[1], id) end
  return 1
end
if op == 'remove' then redis.call('SREM', KEYS[1], id) end
audit(nil, KEYS[2], 0, ARGV[4], 6, tonumber(ARGV[5]))
return 1
