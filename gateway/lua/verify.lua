-- Checks a code: count the attempt, compare, consume on success, burn at the limit.
-- KEYS: 1 challenge (c:), 2 runtime hash (u:), 3 failures (f:),
--       4 trusted devices (td:), 5 step-up grant (su:), 6 last logins hash
-- ARGV: 1 code digest, 2 max attempts, 3 tombstone ms, 4/5 failures limit,
--       6 trust device ('1'/'0'), 7 trusted-device digest, 8 trusted ms,
--       9 device label, 10 step-up ttl ms, 11 challenge id, 12 account tag
-- Returns {'verified', account, purpose, token kind, until_ms, sealed destination or ''}
--       | {'invalid_code', attempts_left, purpose} | {'too_many_attempts', purpose} | {'expired'}
--       | {'already_used'} | {'challenge_not_found'} | {'rate', 'failures', wait}
local now = now_ms()
local c, u = KEYS[1], KEYS[2]
if redis.call('EXISTS', c) == 0 then return {'challenge_not_found'} end

local dead = dead_state(c, u, ARGV[11], now)
if dead then return dead end
local blocked = account_block(u, now)
if blocked then return blocked end

local fok, ftat, fwait = gcra(redis.call('GET', KEYS[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), now)
if not fok then return {'rate', 'failures', fwait} end

local f = redis.call('HMGET', c, 'h', 'a', 'p', 'to')
local tombstone = tonumber(ARGV[3])
if ct_equal(f[1], ARGV[1]) then
  redis.call('HSET', c, 'v', 'verified')
  redis.call('HDEL', c, 'h', 'e')
  redis.call('PEXPIRE', c, tombstone)
  redis.call('HDEL', u, 'c:' .. f[3])
  local kind, until_ms = grant(f[2], f[3], ARGV[12], ARGV[6], ARGV[7], tonumber(ARGV[8]),
    ARGV[9], tonumber(ARGV[10]), now)
  -- A challenge sent to a new number returns it (sealed): the number is proven.
  return {'verified', f[2], f[3], kind, until_ms, f[4] or ''}
end

redis.call('SET', KEYS[3], ftat, 'PX', ftat - now + 1)
local attempts = redis.call('HINCRBY', c, 'n', 1)
local left = tonumber(ARGV[2]) - attempts
if left <= 0 then
  redis.call('HSET', c, 'v', 'burnt')
  redis.call('HDEL', c, 'h', 'e')
  redis.call('PEXPIRE', c, tombstone)
  redis.call('HDEL', u, 'c:' .. f[3])
  return {'too_many_attempts', f[3]}
end
return {'invalid_code', left, f[3]}
