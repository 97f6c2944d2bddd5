-- Records what became of one send of a challenge: a provider's status
-- callback, a code heard after a key press, or a send every provider refused.
--
-- Per send, the state only moves forward (queued < sent < a final state), so
-- a duplicate or late callback changes nothing; `d` mirrors the state of the
-- latest send. When the latest send ends badly and the challenge is still
-- live, the follow-up is decided here, atomically with the record:
-- - a call (no answer, busy, machine, failed) is scheduled again after the
--   retry delay, while fewer than max_calls calls were placed;
-- - an SMS (undelivered, failed) becomes a voice send at once, when the SMS
--   fallback is on (and some provider calls) and the number takes calls.
-- KEYS: 1 challenge (c:), 2 its group's retry schedule (zset), 3 its group's
--       stream, 4 account record (a:, which points at the live challenge)
-- ARGV: 1 challenge id, 2 send number, 3 state, 4 kind ('call' | 'message'),
--       5 follow-up allowed ('1' | '0')
-- Returns {'unknown'} | {'unchanged', current} | {'changed', 'none' | 'retry' | 'fallback'}
local c, cid = KEYS[1], ARGV[1]
local n, state, kind = tonumber(ARGV[2]), ARGV[3], ARGV[4]
local f = redis.call('HMGET', c, 's', 'v', 'x', 'p', 'vc', 'nv', 'd:' .. n)
if not f[3] then return {'unknown'} end
local sends = tonumber(f[1]) or 1  -- 's' absent: the first send only
if n > sends or not RANK[state] then return {'unknown'} end
if f[7] and RANK[f[7]] >= RANK[state] then return {'unchanged', f[7]} end

redis.call('HSET', c, 'd:' .. n, state)
if n == sends then redis.call('HSET', c, 'd', state) end
-- A call event proves the call was placed, even before the worker recorded it.
local calls = tonumber(f[5]) or 0
if kind == 'call' and redis.call('HSETNX', c, 'cl:' .. n, 1) == 1 then
  calls = redis.call('HINCRBY', c, 'vc', 1)
end

if RANK[state] < 2 or state == 'delivered' or n ~= sends or ARGV[5] ~= '1' then
  return {'changed', 'none'}
end
local now = now_ms()
local rec = KEYS[4]
if ended(f[2], f[3], now, function() return redis.call('HGET', rec, 'c:' .. f[4]) end, cid) then
  return {'changed', 'none'}  -- verified, burnt, expired or replaced: nobody needs it now
end
if calls >= CFG.max_calls or sends >= CFG.max_sends then return {'changed', 'none'} end

if kind == 'call' then
  local due = now + CFG.retry_delay_ms
  if due >= tonumber(f[3]) then return {'changed', 'none'} end
  redis.call('HSET', c, 'rn', sends)
  redis.call('ZADD', KEYS[2], due, cid)
  return {'changed', 'retry'}
end
if CFG.sms_fallback and not f[6] then  -- 'nv': the number takes no calls
  sends = sends + 1
  redis.call('HSET', c, 's', sends, 'c', 'voice', 'd', 'queued')
  redis.call('XADD', KEYS[3], '*', 'c', cid, 'n', sends, 'ch', 'voice')
  return {'changed', 'fallback'}
end
return {'changed', 'none'}
