-- Queues the same code again, on the same or the other channel.
-- KEYS: 1 challenge (c:), 2 account record (a:), 3 number limit (bucket of 'nh'),
--       4 country limit, 5 global limit, 6 ip limit, 7 stream
-- ARGV: 1 challenge id, 2 channel, 3 '1' when the caller gave a client ip (KEYS[6] is its limit)
-- Returns {'ok', send_number, expires_at, resend_after} | {'rate', scope, wait} | {error}
local now = now_ms()
local c, rec = KEYS[1], KEYS[2]
if redis.call('EXISTS', c) == 0 then return {'challenge_not_found'} end
local dead = dead_state(c, rec, ARGV[1], now)
if dead then return dead end
local blocked = account_block(rec, now)
if blocked then return blocked end

local f = redis.call('HMGET', c, 'p', 's', 'x', 'nh')
local sends, expires_at = tonumber(f[2]) or 1, tonumber(f[3])  -- 's' absent: 1 send
if sends >= CFG.max_sends then return {'rate', 'sends', expires_at - now} end

local cooldown = CFG.cooldown_ms
local r = redis.call('HMGET', rec, 's:' .. f[1], 'g', 'establishment')
local last = tonumber(r[1])
if last and now - last < cooldown then return {'rate', 'cooldown', cooldown - (now - last)} end

local al = CFG.account_limit
local aok, account_tat, await = gcra(r[2], al[1], al[2], now)
if not aok then return {'rate', 'account', await} end
local limits = {
  {KEYS[3], CFG.number_limit[1], CFG.number_limit[2], 'number', field = string.sub(f[4], 3)},
  {KEYS[4], CFG.country_limit[1], CFG.country_limit[2], 'country'},
  {KEYS[5], CFG.global_limit[1], CFG.global_limit[2], 'global'},
}
local el = establishment_limit(r[3])
if el then table.insert(limits, 3, el) end
if ARGV[3] == '1' then
  table.insert(limits, {KEYS[6], CFG.ip_limit[1], CFG.ip_limit[2], 'ip'})
end
local refused = check_limits(limits, now)
if refused then return refused end
consume_limits(limits, now)

sends = sends + 1
redis.call('HSET', c, 's', sends, 'c', ARGV[2], 'd', 'queued')
redis.call('HSET', rec, 's:' .. f[1], now, 'g', account_tat)
redis.call('XADD', KEYS[7], '*', 'c', ARGV[1], 'n', sends, 'ch', ARGV[2])
return {'ok', sends, expires_at, now + cooldown}
