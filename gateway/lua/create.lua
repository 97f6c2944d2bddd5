-- Creates a challenge and queues its first send, or says why not.
-- It reads the account record itself (state, number tag, region, line type,
-- masked number): an admin's change cannot slip between the check and the
-- write. The account's runtime state lives in its record too, in fields no
-- account field is named like: `c:<purpose>` (the live challenge),
-- `s:<purpose>` (its last send, ms) and `g` (the account's send-rate state).
-- A key of its own per account cost ~140 bytes.
--
-- Mode `all` (one Redis instance): everything in one atomic step, the send
-- limits too. Their keys are named here, from the record, under the `{rl}`
-- hash tag, so this call spans two slots. On a Redis Cluster
-- (docs/architecture.md, "Hash slots") it runs in the account's slot alone,
-- twice around limits.lua: mode `check` runs every check without writing and
-- returns what the limits need; mode `spent` (the limits paid for the number
-- tag and establishment in ARGV[14], ARGV[15]) checks everything again and
-- writes, or refuses, and the caller then refunds (refund.lua).
-- KEYS: 1 account record (a:), 2 new challenge (c:), 3 failures (f:),
--       4 the group's stream, 5 trusted devices (td:),
--       6 the Idempotency-Key's record (idem:, the account's slot; unused when ARGV[16] is ''),
--       mode `all` only: 7 global limit, 8 ip limit
-- ARGV: 1 purpose, 2 challenge id, 3 account id, 4 code digest, 5 sealed code,
--       6 channel asked ('' for the number's default),
--       7 digest of a trusted-device token ('' for none),
--       8 '1' when the caller gave a client ip (KEYS[8] is its limit),
--       9 sealed destination ('' for the account's own number), and for one:
--       10 its number tag, 11 its region, 12 its line type ('' otherwise),
--       13 mode (`all`, `check`, `spent`), mode `spent`: 14 the number tag
--       and 15 the establishment ('' for none) the limits were spent for ('' in
--       other modes), 16 the request's fingerprint under an Idempotency-Key ('' for none)
-- Idempotency: a request whose key already has a record answers from it
-- ({'replay', ...}) before any check, or is refused when its fingerprint
-- differs; the first answer ('ok' or 'trusted') is recorded with the write it
-- reports, in this same step, so concurrent duplicates create one challenge.
-- Returns {'ok', expires_at_ms, resend_after_ms, channel, region, masked number or '', now_ms}
--       | {'replay', kind ('ok' | 'trusted'), challenge id, expires_at_ms,
--          resend_after_ms, channel, region, masked, the first answer's now_ms}
--       | {'rate', scope, wait_ms} | {'refused', error code, channel} | {'trusted'}
--       | mode `check`: {'check', number tag, region, establishment or ''}
--       | mode `spent`: {'moved'} when the number or establishment is no longer
--         the one the limits were spent for
local now = now_ms()
local purpose, mode, fingerprint = ARGV[1], ARGV[13], ARGV[16] or ''

if fingerprint ~= '' then
  local first = redis.call('HMGET', KEYS[6], 'f', 'k', 'i', 'x', 'r', 'ch', 'rg', 'm', 't')
  if first[1] then
    if first[1] ~= fingerprint then return {'refused', 'idempotency_conflict', ''} end
    return {'replay', first[2], first[3], first[4], first[5], first[6], first[7], first[8], first[9]}
  end
end

-- Records the answer under the Idempotency-Key, for the challenge's lifetime.
local function remember(...)
  if fingerprint == '' then return end
  redis.call('HSET', KEYS[6], 'f', fingerprint, 't', now, ...)
  redis.call('PEXPIRE', KEYS[6], CFG.ttl_ms)
end

local rec = KEYS[1]
local a = redis.call('HMGET', rec, 'expires_at', 'suspended', 'number_tag', 'region',
  'line_type', 'masked', 's:' .. purpose, 'g', 'establishment')
if not a[1] then return {'refused', 'unknown_account', ''} end
if a[2] == '1' then return {'refused', 'account_suspended', ''} end
if now >= tonumber(a[1]) then return {'refused', 'account_expired', ''} end

-- A live trusted device spares the code (the caller sends a digest for logins only).
if ARGV[7] ~= '' then
  local device = redis.call('HGET', KEYS[5], ARGV[7])
  -- The record is "until|created|label"; an unreadable one trusts nothing.
  if device and (tonumber(string.match(device, '^%d+')) or 0) > now then
    remember('k', 'trusted')
    return {'trusted'}
  end
end

local number_tag, region, line = a[3], a[4], a[5]
if ARGV[9] ~= '' then
  number_tag, region, line = ARGV[10], ARGV[11], ARGV[12]
elseif not number_tag then
  return {'refused', 'phone_required', ''}
end
local takes = CFG.line_channels[line] or {}
local channel = ARGV[6]
if channel == '' then channel = takes[1] or 'sms' end
if not (CFG.channels[channel] and contains(takes, channel)) then
  return {'refused', 'channel_unavailable', channel}
end

local refused = cooling_down(a[7], now)
if refused then return refused end
-- An account out of verification attempts gets no new codes either.
refused = budget(redis.call('GET', KEYS[3]), CFG.failures_limit, 'failures', now)
if refused then return refused end
local account_tat
refused, account_tat = budget(a[8], CFG.account_limit, 'account', now)
if refused then return refused end

if mode == 'check' then return {'check', number_tag, region, a[9] or ''} end
if mode == 'spent' then
  if number_tag ~= ARGV[14] or (a[9] or '') ~= ARGV[15] then return {'moved'} end
else
  local number_key = CFG.number_rate_prefix .. string.sub(number_tag, 1, CFG.number_rate_chars)
  refused = spend(send_limits(number_key, number_tag, CFG.country_rate_prefix .. region, a[9],
    KEYS[7], ARGV[8] == '1' and KEYS[8] or nil), now)
  if refused then return refused end
end

local ttl, tombstone = CFG.ttl_ms, CFG.tombstone_ms
local expires_at = now + ttl
-- Fields at their default are not written (readers default them): attempts
-- 'n' 0, sends 's' 1, delivery 'd' queued, channel 'c' sms. The channels the number takes and
-- its region come from the account (or the sealed 'to') when needed; 'nv'
-- marks a number that takes no calls (no SMS-to-voice fallback).
redis.call('HSET', KEYS[2],
  'a', ARGV[3], 'p', purpose, 'h', ARGV[4], 'e', ARGV[5], 'x', expires_at, 'nh', number_tag)
if channel ~= 'sms' then redis.call('HSET', KEYS[2], 'c', channel) end
if not contains(takes, 'voice') then redis.call('HSET', KEYS[2], 'nv', 1) end
if ARGV[9] ~= '' then redis.call('HSET', KEYS[2], 'to', ARGV[9]) end
redis.call('PEXPIRE', KEYS[2], ttl + tombstone)

-- The previous challenge of this purpose, if any, dies with this write: its
-- verify finds the pointer moved on.
redis.call('HSET', rec, 'c:' .. purpose, string.sub(ARGV[2], 1, 16), 's:' .. purpose, now,
  'g', account_tat)

redis.call('XADD', KEYS[4], '*', 'c', ARGV[2], 'n', 1, 'ch', channel)
local resend_after = now + CFG.cooldown_ms
remember('k', 'ok', 'i', ARGV[2], 'x', expires_at, 'r', resend_after, 'ch', channel,
  'rg', region, 'm', a[6] or '')
return {'ok', expires_at, resend_after, channel, region, a[6] or '', now}
