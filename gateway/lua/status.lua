-- Records what became of one send of a challenge: a provider's status
-- callback, a code heard after a key press, or a send every provider refused.
--
-- Per send, the state only moves forward (queued < sent < a final state), so
-- a duplicate or late callback changes nothing; `d` mirrors the state of the
-- latest send, and `ch:<n>`, `t:<n>` note the send's channel and when its
-- state last moved (GET /challenge/{id} lists them as `delivery_attempts`).
-- When the latest send ends badly and the challenge is still live, the
-- follow-up is decided here, atomically with the record:
-- - a call (no answer, busy, machine, failed) is scheduled again, after
--   [voice] busy_retry_delay_seconds for a busy line, else retry_delay_seconds,
--   while a ring plus the time to type the code (answer_window_seconds) still
--   fits before the expiry and calls and sends are left;
-- - an SMS (undelivered, failed) becomes a voice send at once, when the SMS
--   fallback is on (and some provider calls), the number takes calls and a
--   call still fits;
-- - else the gateway gives up: `d` becomes 'unreachable'.
-- KEYS: 1 challenge (c:), 2 its group's retry schedule (zset), 3 its group's
--       stream, 4 account record (a:, which points at the live challenge)
-- ARGV: 1 challenge id, 2 send number, 3 state, 4 kind ('call' | 'message'),
--       5 follow-up allowed ('1' | '0')
-- Returns {'unknown'} | {'unchanged', current}
--       | {'changed', 'none' | 'retry' | 'fallback' | 'unreachable', channel}
local c, cid = KEYS[1], ARGV[1]
local n, state, kind = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local channel = kind == 'call' and 'voice' or 'sms'
local f = redis.call('HMGET', c, 's', 'v', 'x', 'p', 'vc', 'nv', 'd:' .. n)
if not f[3] then return {'unknown'} end
local sends = tonumber(f[1]) or 1  -- 's' absent: the first send only
if n > sends or not RANK[state] then return {'unknown'} end
if f[7] and RANK[f[7]] >= RANK[state] then return {'unchanged', f[7]} end

local now = now_ms()
redis.call('HSET', c, 'd:' .. n, state)
note_attempt(c, n, channel, now)
if n == sends then redis.call('HSET', c, 'd', state) end
-- A call event proves the call was placed, even before the worker recorded it.
local calls = tonumber(f[5]) or 0
if kind == 'call' and redis.call('HSETNX', c, 'cl:' .. n, 1) == 1 then
  calls = redis.call('HINCRBY', c, 'vc', 1)
end

if RANK[state] < 2 or state == 'delivered' or n ~= sends or ARGV[5] ~= '1' then
  return {'changed', 'none', channel}
end
local rec = KEYS[4]
if ended(f[2], f[3], now, function() return redis.call('HGET', rec, 'c:' .. f[4]) end, cid) then
  return {'changed', 'none', channel}  -- verified, burnt, expired or replaced: nobody needs it now
end
local expires = tonumber(f[3])
local left = calls < CFG.max_calls and sends < CFG.max_sends

if kind == 'call' then
  local due = now + (state == 'busy' and CFG.busy_retry_delay_ms or CFG.retry_delay_ms)
  if left and call_fits(due, expires) then
    redis.call('HSET', c, 'rn', sends)
    redis.call('ZADD', KEYS[2], due, cid)
    return {'changed', 'retry', channel}
  end
elseif CFG.sms_fallback and not f[6] and left and call_fits(now, expires) then
  -- 'nv': the number takes no calls
  sends = sends + 1
  redis.call('HSET', c, 's', sends, 'c', 'voice', 'd', 'queued')
  redis.call('XADD', KEYS[3], '*', 'c', cid, 'n', sends, 'ch', 'voice')
  return {'changed', 'fallback', channel}
end
redis.call('HSET', c, 'd', 'unreachable')
return {'changed', 'unreachable', channel}
