-- Checks a code: count the attempt, compare, consume on success, burn at the limit.
-- KEYS: 1 challenge (c:), 2 runtime hash (u:), 3 failures (f:),
--       4 trusted devices (td:), 5 step-up grant (su:), 6 last logins hash
-- ARGV: 1 code digest, 2 trust device ('1'/'0'), 3 trusted-device digest,
--       4 device label, 5 challenge id, 6 account tag
-- Returns {'verified', account, purpose, token kind, until_ms, sealed destination or ''}
--       | {'invalid_code', attempts_left, purpose} | {'too_many_attempts', purpose} | {'expired'}
--       | {'already_used'} | {'challenge_not_found'} | {'rate', 'failures', wait}
local now = now_ms()
local c, u = KEYS[1], KEYS[2]
if redis.call('EXISTS', c) == 0 then return {'challenge_not_found'} end

local dead = dead_state(c, u, ARGV[5], now)
if dead then return dead end
local blocked = account_block(u, now)
if blocked then return blocked end

local fl = CFG.failures_limit
local fok, ftat, fwait = gcra(redis.call('GET', KEYS[3]), fl[1], fl[2], now)
if not fok then return {'rate', 'failures', fwait} end

local f = redis.call('HMGET', c, 'h', 'a', 'p', 'to')
local tombstone = CFG.tombstone_ms
if ct_equal(f[1], ARGV[1]) then
  redis.call('HSET', c, 'v', 'verified')
  redis.call('HDEL', c, 'h', 'e')
  redis.call('PEXPIRE', c, tombstone)
  redis.call('HDEL', u, 'c:' .. f[3])
  local kind, until_ms = grant(f[2], f[3], ARGV[6], ARGV[2], ARGV[3], CFG.trusted_ms,
    ARGV[4], CFG.step_up_ms, now)
  -- A challenge sent to a new number returns it (sealed): the number is proven.
  return {'verified', f[2], f[3], kind, until_ms, f[4] or ''}
end

redis.call('SET', KEYS[3], ftat, 'PX', ftat - now + 1)
local attempts = redis.call('HINCRBY', c, 'n', 1)
local left = CFG.max_attempts - attempts
if left <= 0 then
  redis.call('HSET', c, 'v', 'burnt')
  redis.call('HDEL', c, 'h', 'e')
  redis.call('PEXPIRE', c, tombstone)
  redis.call('HDEL', u, 'c:' .. f[3])
  return {'too_many_attempts', f[3]}
end
return {'invalid_code', left, f[3]}
