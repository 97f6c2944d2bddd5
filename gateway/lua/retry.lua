-- Claims one due call-again and queues it. ZREM decides which worker owns
-- it, so each call is placed once however many workers poll the schedule.
-- The call is dropped when the challenge is no longer live, was sent again
-- since (a resend), or its calls or sends are spent.
-- KEYS: 1 retry schedule (zset), 2 challenge (c:), 3 stream (the challenge's
--       group's), 4 account record (a:, which points at the live challenge)
-- ARGV: 1 challenge id
-- Returns {'not_due'} | {'queued', send number} | {reason dropped}
local now = now_ms()
local cid = ARGV[1]
local due = redis.call('ZSCORE', KEYS[1], cid)
if not due or tonumber(due) > now then return {'not_due'} end
redis.call('ZREM', KEYS[1], cid)

local f = redis.call('HMGET', KEYS[2], 'v', 'x', 'p', 's', 'rn', 'vc')
if not f[2] then return {'not_live'} end
local rec = KEYS[4]
local why = ended(f[1], f[2], now, function() return redis.call('HGET', rec, 'c:' .. f[3]) end, cid)
if why then return {why == f[1] and 'not_live' or why} end
local sends = tonumber(f[4]) or 1  -- 's' absent: the first send only
if sends ~= tonumber(f[5]) then return {'superseded'} end
if sends >= CFG.max_sends or (tonumber(f[6]) or 0) >= CFG.max_calls then
  return {'exhausted'}
end
sends = sends + 1
redis.call('HSET', KEYS[2], 's', sends, 'c', 'voice', 'd', 'queued')
redis.call('XADD', KEYS[3], '*', 'c', cid, 'n', sends, 'ch', 'voice')
return {'queued', sends}
