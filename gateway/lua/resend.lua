-- Queues the same code again, on the same or the other channel.
-- The account's slot and the limits' (`{rl}`): one of the two families that
-- still span two slots (docs/architecture.md, "Hash slots").
-- KEYS: 1 challenge (c:), 2 account record (a:), 3 number limit (bucket of 'nh'),
--       4 country limit, 5 global limit, 6 ip limit, 7 the group's stream
-- ARGV: 1 challenge id, 2 channel, 3 '1' when the caller gave a client ip (KEYS[6] is its limit)
-- Returns {'ok', send_number, expires_at, resend_after} | {'rate', scope, wait} | {error}
local now = now_ms()
local c, rec = KEYS[1], KEYS[2]
if redis.call('EXISTS', c) == 0 then return {'challenge_not_found'} end
local refused = unusable(c, rec, ARGV[1], now)
if refused then return refused end

local f = redis.call('HMGET', c, 'p', 's', 'x', 'nh')
local sends, expires_at = tonumber(f[2]) or 1, tonumber(f[3])  -- 's' absent: 1 send
if sends >= CFG.max_sends then return {'rate', 'sends', expires_at - now} end

local r = redis.call('HMGET', rec, 's:' .. f[1], 'g', 'establishment')
refused = cooling_down(r[1], now)
if refused then return refused end
local account_tat
refused, account_tat = budget(r[2], CFG.account_limit, 'account', now)
if refused then return refused end
refused = spend(send_limits(KEYS[3], f[4], KEYS[4], r[3], KEYS[5],
  ARGV[3] == '1' and KEYS[6] or nil), now)
if refused then return refused end

sends = sends + 1
redis.call('HSET', c, 's', sends, 'c', ARGV[2], 'd', 'queued')
redis.call('HSET', rec, 's:' .. f[1], now, 'g', account_tat)
redis.call('XADD', KEYS[7], '*', 'c', ARGV[1], 'n', sends, 'ch', ARGV[2])
return {'ok', sends, expires_at, now + CFG.cooldown_ms}
