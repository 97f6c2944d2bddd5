-- Checks a code: count the attempt, compare, consume on success, burn at the limit.
-- Every key is the account's (one hash slot): the record (named from the tag
-- the challenge id ends with) holds the `c:<purpose>` pointer and the state.
-- KEYS: 1 challenge (c:), 2 failures (f:), 3 trusted devices (td:),
--       4 step-up grant (su:, drawn in the account's group), 5 the group's
--       last logins hash, 6 account record (a:)
-- ARGV: 1 code digest, 2 trust device ('1'/'0'), 3 trusted-device digest,
--       4 device label, 5 challenge id, 6 account tag
-- Returns {'verified', account, purpose, token kind, until_ms, sealed destination or ''}
--       | {'invalid_code', attempts_left, purpose} | {'too_many_attempts', purpose} | {'expired'}
--       | {'already_used'} | {'challenge_not_found'} | {'rate', 'failures', wait}
local now = now_ms()
local c = KEYS[1]
local account = redis.call('HGET', c, 'a')
if not account then return {'challenge_not_found'} end
local rec = KEYS[6]

local refused = unusable(c, rec, ARGV[5], now)
if refused then return refused end
local failed
refused, failed = budget(redis.call('GET', KEYS[2]), CFG.failures_limit, 'failures', now)
if refused then return refused end

local f = redis.call('HMGET', c, 'h', 'p', 'to')
local purpose = f[2]
if ct_equal(f[1], ARGV[1]) then
  end_challenge(c, 'verified', rec, purpose)
  local kind, until_ms = grant({KEYS[3], KEYS[4], KEYS[5]}, account, purpose, ARGV[6],
    ARGV[2], ARGV[3], CFG.trusted_ms, ARGV[4], CFG.step_up_ms, now)
  -- A challenge sent to a new number returns it (sealed): the number is proven.
  return {'verified', account, purpose, kind, until_ms, f[3] or ''}
end

count_failure(KEYS[2], failed, now)
local attempts = redis.call('HINCRBY', c, 'n', 1)
local left = CFG.max_attempts - attempts
if left <= 0 then
  end_challenge(c, 'burnt', rec, purpose)
  return {'too_many_attempts', purpose}
end
return {'invalid_code', left, purpose}
