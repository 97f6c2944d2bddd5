-- Accepts an authenticator-app code: account state, failure budget, replay guard,
-- then the same grants as verify.lua (last login, trusted device, step-up).
-- KEYS: 1 totp hash, 2 account record (a:), 3 failures (f:), 4 trusted devices (td:),
--       5 step-up grant (su:), 6 last logins hash
-- ARGV: 1 the time step the code matched (-1: none), 2/3 failures limit,
--       4 trust device ('1'/'0'), 5 trusted-device digest, 6 trusted ms,
--       7 device label, 8 step-up ttl ms, 9 purpose, 10 account id, 11 account tag
-- Returns {'verified', token kind, until_ms} | {'invalid_code'} | {'already_used'}
--       | {'totp_not_enrolled'} | {'account_suspended'} | {'account_expired'}
--       | {'rate', 'failures', wait}
local now = now_ms()
if redis.call('HEXISTS', KEYS[1], 'secret') == 0 then return {'totp_not_enrolled'} end
local blocked = account_block(KEYS[2], now)
if blocked then return blocked end

local fok, ftat, fwait = gcra(redis.call('GET', KEYS[3]), tonumber(ARGV[2]), tonumber(ARGV[3]), now)
if not fok then return {'rate', 'failures', fwait} end

local step = tonumber(ARGV[1])
if step < 0 then
  redis.call('SET', KEYS[3], ftat, 'PX', ftat - now + 1)
  return {'invalid_code'}
end
-- A code is good once: only a step later than the last one accepted passes.
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '-1')
if step <= last then return {'already_used'} end
redis.call('HSET', KEYS[1], 'last', step)

local kind, until_ms = grant({KEYS[4], KEYS[5], KEYS[6]}, ARGV[10], ARGV[9], ARGV[11], ARGV[4],
  ARGV[5], tonumber(ARGV[6]), ARGV[7], tonumber(ARGV[8]), now)
return {'verified', kind, until_ms}
