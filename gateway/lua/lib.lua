-- Shared helpers, part of every script: gateway/luascripts.py runs each as
-- `local CFG = {...}` (the deployment's settings), this file, then the script.

-- Redis 6.2 replicates a script verbatim unless told otherwise, and then
-- refuses writes after TIME; effects replication makes TIME safe (7.x does it
-- by default and keeps the call as a no-op).
if redis.replicate_commands then redis.replicate_commands() end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Constant-time equality: the loop always runs over the whole string.
local function ct_equal(a, b)
  if type(a) ~= 'string' or type(b) ~= 'string' or #a ~= #b then return false end
  local diff = 0
  for i = 1, #a do
    diff = bit.bor(diff, bit.bxor(string.byte(a, i), string.byte(b, i)))
  end
  return diff == 0
end

-- GCRA ("N per period", bursts up to N, one more every period/N).
-- `tat` is the theoretical arrival time stored for the limit (or nil).
-- Returns allowed, the new tat to store when allowed, and the wait in ms.
local function gcra(tat, count, period_ms, now)
  tat = tonumber(tat)
  if not tat or tat < now then tat = now end
  local new_tat = tat + math.floor(period_ms / count)
  local wait = new_tat - period_ms - now
  if wait > 0 then return false, tat, wait end
  return true, new_tat, 0
end

-- True when the array `list` holds `value`.
local function contains(list, value)
  for _, v in ipairs(list) do
    if v == value then return true end
  end
  return false
end

-- Keeps a key alive at least `ms` more (never shortens it).
local function extend(key, ms)
  if redis.call('PTTL', key) < ms then redis.call('PEXPIRE', key, ms) end
end

-- What a verified code grants (verify.lua and totp.lua): a login records the
-- last login and may trust the device; any other purpose gets a single-use
-- step-up grant. `k` holds the keys: trusted devices, the step-up grant, the
-- last-logins hash. Returns the token kind and when it ends.
local function grant(k, account, purpose, tag, trust, device_digest, device_ms, label,
                     step_up_ms, now)
  local devices, step_up, logins = k[1], k[2], k[3]
  if purpose ~= 'login' then
    redis.call('SET', step_up, account .. '|' .. purpose, 'PX', step_up_ms)
    return 'step_up', now + step_up_ms
  end
  redis.call('HSET', logins, tag, now)
  if trust ~= '1' then return 'none', 0 end
  local until_ms = now + device_ms
  redis.call('HSET', devices, device_digest, until_ms .. '|' .. now .. '|' .. label)
  extend(devices, device_ms)
  return 'trusted_device', until_ms
end

-- Checks a list of rate limits {key, count, period_ms, scope[, field = f]}
-- without writing; all must pass before any is consumed. With `field`, the
-- state is one field of a hash of several subjects (the number buckets).
local function check_limits(limits, now)
  for _, l in ipairs(limits) do
    local tat
    if l.field then tat = redis.call('HGET', l[1], l.field) else tat = redis.call('GET', l[1]) end
    local ok, new_tat, wait = gcra(tat, l[2], l[3], now)
    if not ok then return {'rate', l[4], wait} end
    l[5] = new_tat
  end
  return nil
end

-- The establishment's budget ([rate_limits] establishment), when one is set,
-- as a limit for check_limits; `establishment` is the account record's field.
local function establishment_limit(establishment)
  local l = CFG.establishment_limit
  if not (l and establishment) then return nil end
  local key = CFG.establishment_rate_prefix .. redis.sha1hex(establishment)
  return {key, l[1], l[2], 'establishment'}
end

local function consume_limits(limits, now)
  for _, l in ipairs(limits) do
    if l.field then
      -- A state at or before now counts as none: drop those, then write ours.
      local all = redis.call('HGETALL', l[1])
      for i = 1, #all, 2 do
        if tonumber(all[i + 1]) <= now then redis.call('HDEL', l[1], all[i]) end
      end
      redis.call('HSET', l[1], l.field, l[5])
      extend(l[1], l[5] - now + 1)
    else
      redis.call('SET', l[1], l[5], 'PX', l[5] - now + 1)
    end
  end
end

-- The account behind a live challenge stopped being usable: suspended, or
-- past its expiry. `rec` is the account record (otp:a:<id>), read directly:
-- a pending code dies with a suspension or an expiry and lives again on
-- reactivation. A record gone (deleted) counts as expired.
local function account_block(rec, now)
  local f = redis.call('HMGET', rec, 'suspended', 'expires_at')
  if f[1] == '1' then return {'account_suspended'} end
  if not f[2] or now >= tonumber(f[2]) then return {'account_expired'} end
  return nil
end

-- The account record's `c:<purpose>` field points at the live challenge: the
-- 16 random characters that open its id (the rest is the account's tag); a
-- pointer written before that holds the whole id.
local function points_to(ptr, cid)
  return ptr == string.sub(cid, 1, 16) or ptr == cid
end

-- Challenge state: pending (nil), verified, burnt, expired.
-- Returns an error tuple when the challenge cannot be used any more.
-- `rec` is the account record, which holds the `c:<purpose>` pointers.
local function dead_state(c, rec, cid, now)
  local f = redis.call('HMGET', c, 'v', 'x', 'p')
  if f[1] == 'verified' then return {'already_used'} end
  if f[1] == 'burnt' then return {'too_many_attempts'} end
  if f[1] == 'expired' then return {'expired'} end
  if now >= tonumber(f[2]) or not points_to(redis.call('HGET', rec, 'c:' .. f[3]), cid) then
    -- Past its TTL, or replaced by a newer challenge of the same purpose.
    redis.call('HSET', c, 'v', 'expired')
    redis.call('HDEL', c, 'h', 'e')
    return {'expired'}
  end
  return nil
end

-- An audit entry (gateway/accounts/audit.py): ARGV[first .. first + count - 1],
-- its field/value pairs, appended to the account's history and to its
-- establishment's, each capped near its maxlen.
local function audit(hist, ehist, maxlen, emaxlen, first, count)
  local entry = {}
  for i = first, first + count - 1 do entry[#entry + 1] = ARGV[i] end
  redis.call('XADD', hist, 'MAXLEN', '~', maxlen, '*', unpack(entry))
  redis.call('XADD', ehist, 'MAXLEN', '~', emaxlen, '*', unpack(entry))
end
