-- Creates a challenge and queues its first send, or says why not.
-- KEYS: 1 runtime hash (u:), 2 new challenge (c:), 3 failures (f:),
--       4 number limit (a bucket hash: keys.number_rate; field: the tag after 2 chars),
--       5 country limit, 6 global limit, 7 ip limit, 8 stream
-- ARGV: 1 purpose, 2 challenge id, 3 account id, 4 code digest, 5 sealed code,
--       6 channel, 7 number tag, 8 region, 9 channels the number takes,
--       10 ttl ms, 11 cooldown ms, 12 tombstone ms,
--       13/14 account limit, 15/16 number, 17/18 country, 19/20 global,
--       21/22 ip (count 0: no client ip), 23/24 failures, 25 account expiry ms,
--       26 sealed destination ('' for the account's own number)
-- Returns {'ok', expires_at_ms, resend_after_ms} | {'rate', scope, wait_ms}
local now = now_ms()
local purpose = ARGV[1]

local last = tonumber(redis.call('HGET', KEYS[1], 's:' .. purpose))
local cooldown = tonumber(ARGV[11])
if last and now - last < cooldown then
  return {'rate', 'cooldown', cooldown - (now - last)}
end

-- An account out of verification attempts gets no new codes either.
local fok, _, fwait = gcra(redis.call('GET', KEYS[3]), tonumber(ARGV[23]), tonumber(ARGV[24]), now)
if not fok then return {'rate', 'failures', fwait} end

local aok, account_tat, await = gcra(redis.call('HGET', KEYS[1], 'g'), tonumber(ARGV[13]), tonumber(ARGV[14]), now)
if not aok then return {'rate', 'account', await} end

local limits = {
  {KEYS[4], tonumber(ARGV[15]), tonumber(ARGV[16]), 'number', field = string.sub(ARGV[7], 3)},
  {KEYS[5], tonumber(ARGV[17]), tonumber(ARGV[18]), 'country'},
  {KEYS[6], tonumber(ARGV[19]), tonumber(ARGV[20]), 'global'},
}
if tonumber(ARGV[21]) > 0 then
  table.insert(limits, {KEYS[7], tonumber(ARGV[21]), tonumber(ARGV[22]), 'ip'})
end
local refused = check_limits(limits, now)
if refused then return refused end
consume_limits(limits, now)

local ttl, tombstone = tonumber(ARGV[10]), tonumber(ARGV[12])
local expires_at = now + ttl
-- Fields at their default are not written (readers default them): attempts
-- 'n' 0, sends 's' 1, delivery 'd' queued, channel 'c' sms. The channels the number takes and
-- its region come from the account (or the sealed 'to') when needed; 'nv'
-- marks a number that takes no calls (no SMS-to-voice fallback).
redis.call('HSET', KEYS[2],
  'a', ARGV[3], 'p', purpose, 'h', ARGV[4], 'e', ARGV[5], 'x', expires_at, 'nh', ARGV[7])
if ARGV[6] ~= 'sms' then redis.call('HSET', KEYS[2], 'c', ARGV[6]) end
if not string.find(ARGV[9], 'voice', 1, true) then redis.call('HSET', KEYS[2], 'nv', 1) end
if ARGV[26] ~= '' then redis.call('HSET', KEYS[2], 'to', ARGV[26]) end
redis.call('PEXPIRE', KEYS[2], ttl + tombstone)

-- The previous challenge of this purpose, if any, dies with this write: its
-- verify finds the pointer moved on.
redis.call('HSET', KEYS[1], 'c:' .. purpose, string.sub(ARGV[2], 1, 16), 's:' .. purpose, now, 'g', account_tat,
  'ax', ARGV[25])
redis.call('HDEL', KEYS[1], 'sus')  -- the account is active: absent means not suspended
extend(KEYS[1], math.max(ttl + tombstone, account_tat - now + 1))

redis.call('XADD', KEYS[8], '*', 'c', ARGV[2], 'n', 1, 'ch', ARGV[6])
return {'ok', expires_at, now + cooldown}
