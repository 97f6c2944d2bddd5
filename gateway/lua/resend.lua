-- Queues the same code again, on the same or the other channel.
-- Mode `all` (one Redis instance): the account's slot and the limits'
-- (`{rl}`) in one atomic step. On a Redis Cluster, as create.lua: mode
-- `check` (no write but a recorded end), limits.lua, then mode `spent`
-- (the limits paid for the establishment in ARGV[5]), refund.lua on a refusal.
-- KEYS: 1 challenge (c:), 2 account record (a:), 3 the group's stream,
--       mode `all` only: 4 number limit (bucket of 'nh'), 5 country limit,
--       6 global limit, 7 ip limit
-- ARGV: 1 challenge id, 2 channel, 3 '1' when the caller gave a client ip (KEYS[7] is its limit),
--       4 mode (`all`, `check`, `spent`), 5 mode `spent`: the establishment
--       ('' for none) the limits were spent for
-- Returns {'ok', send_number, expires_at, resend_after} | {'rate', scope, wait} | {error}
--       | mode `check`: {'check', establishment or ''} | mode `spent`: {'moved'}
local now = now_ms()
local c, rec, mode = KEYS[1], KEYS[2], ARGV[4]
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
if mode == 'check' then return {'check', r[3] or ''} end
if mode == 'spent' then
  if (r[3] or '') ~= ARGV[5] then return {'moved'} end
else
  refused = spend(send_limits(KEYS[4], f[4], KEYS[5], r[3], KEYS[6],
    ARGV[3] == '1' and KEYS[7] or nil), now)
  if refused then return refused end
end

sends = sends + 1
redis.call('HSET', c, 's', sends, 'c', ARGV[2], 'd', 'queued')
redis.call('HSET', rec, 's:' .. f[1], now, 'g', account_tat)
redis.call('XADD', KEYS[3], '*', 'c', ARGV[1], 'n', sends, 'ch', ARGV[2])
return {'ok', sends, expires_at, now + CFG.cooldown_ms}
