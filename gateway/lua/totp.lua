-- Accepts an authenticator-app code: account state, failure budget, replay guard,
-- then the same grants as verify.lua (last login, trusted device, step-up).
-- KEYS: 1 totp hash, 2 account record (a:), 3 failures (f:), 4 trusted devices (td:),
--       5 step-up grant (su:), 6 last logins hash
-- ARGV: 1 the time step the code matched (-1: none), 2 trust device ('1'/'0'),
--       3 trusted-device digest, 4 device label, 5 purpose, 6 account id, 7 account tag
-- Returns {'verified', token kind, until_ms} | {'invalid_code'} | {'already_used'}
--       | {'totp_not_enrolled'} | {'account_suspended'} | {'account_expired'}
--       | {'rate', 'failures', wait}
local now = now_ms()
if redis.call('HEXISTS', KEYS[1], 'secret') == 0 then return {'totp_not_enrolled'} end
local blocked = account_block(KEYS[2], now)
if blocked then return blocked end

local refused, failed = budget(redis.call('GET', KEYS[3]), CFG.failures_limit, 'failures', now)
if refused then return refused end

local step = tonumber(ARGV[1])
if step < 0 then
  count_failure(KEYS[3], failed, now)
  return {'invalid_code'}
end
-- A code is good once: only a step later than the last one accepted passes.
local last = tonumber(redis.call('HGET', KEYS[1], 'last') or '-1')
if step <= last then return {'already_used'} end
redis.call('HSET', KEYS[1], 'last', step)

local kind, until_ms = grant({KEYS[4], KEYS[5], KEYS[6]}, ARGV[6], ARGV[5], ARGV[7], ARGV[2],
  ARGV[3], CFG.trusted_ms, ARGV[4], CFG.step_up_ms, now)
return {'verified', kind, until_ms}
