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

-- One budget: nil and the state to store when `limit` ({count, period_ms})
-- allows one more, else the refusal {'rate', scope, wait_ms}.
local function budget(tat, limit, scope, now)
  local ok, new_tat, wait = gcra(tat, limit[1], limit[2], now)
  if not ok then return {'rate', scope, wait} end
  return nil, new_tat
end

-- Spends the account's failures budget at `key` (verify.lua, totp.lua): `tat`
-- is the state budget() returned for it.
local function count_failure(key, tat, now)
  redis.call('SET', key, tat, 'PX', tat - now + 1)
end

-- The pause between two sends of a purpose to an account ([otp]
-- resend_cooldown_seconds): a refusal while its last send (`last`, ms) is recent.
local function cooling_down(last, now)
  last = tonumber(last)
  local cooldown = CFG.cooldown_ms
  if last and now - last < cooldown then return {'rate', 'cooldown', cooldown - (now - last)} end
  return nil
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

-- The budgets a send spends (create.lua, resend.lua), in the order they are
-- checked: its number (a field of the bucket `number_key`: the rest of its
-- tag), its country, its establishment's ([rate_limits] establishment, when
-- set; `establishment` is the account record's field) before the global one,
-- so an establishment past its own hears so, then the client address's when
-- the caller gave one (`ip_key`, else nil).
local function send_limits(number_key, number_tag, country_key, establishment, global_key, ip_key)
  local nl, cl, gl = CFG.number_limit, CFG.country_limit, CFG.global_limit
  local limits = {
    {number_key, nl[1], nl[2], 'number', field = string.sub(number_tag, CFG.number_rate_chars + 1)},
    {country_key, cl[1], cl[2], 'country'},
  }
  local el = CFG.establishment_limit
  if el and establishment then
    local key = CFG.establishment_rate_prefix .. redis.sha1hex(establishment)
    table.insert(limits, {key, el[1], el[2], 'establishment'})
  end
  table.insert(limits, {global_key, gl[1], gl[2], 'global'})
  if ip_key then table.insert(limits, {ip_key, CFG.ip_limit[1], CFG.ip_limit[2], 'ip'}) end
  return limits
end

-- Spends all of `limits` or none: nil when every one allowed the send, else
-- the first refusal, {'rate', scope, wait_ms}.
local function spend(limits, now)
  local refused = check_limits(limits, now)
  if refused then return refused end
  consume_limits(limits, now)
  return nil
end

-- Gives back what `spend` took from `limits` (the cluster's refund.lua, after
-- create.lua or resend.lua refused a send limits.lua had paid for): one
-- emission interval off each state, never below now (a state at or before
-- now counts as none, so it goes).
local function refund_limits(limits, now)
  for _, l in ipairs(limits) do
    local tat
    if l.field then tat = redis.call('HGET', l[1], l.field) else tat = redis.call('GET', l[1]) end
    tat = tonumber(tat)
    if tat then
      local back = tat - math.floor(l[3] / l[2])
      if back <= now then
        if l.field then redis.call('HDEL', l[1], l.field) else redis.call('DEL', l[1]) end
      elseif l.field then
        redis.call('HSET', l[1], l.field, back)
      else
        redis.call('SET', l[1], back, 'PX', back - now + 1)
      end
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

-- Is the challenge live? Decided here, for every script. It has ended when
-- its state `v` says so (verified, burnt, expired), at its expiry `x`, or when
-- the account record's `c:<purpose>` pointer no longer names it (a newer
-- challenge of that purpose, a phone change, the account deleted).
-- `pointer` returns that pointer; it is called last, only when the rest
-- leaves the challenge live (it may cost a read), and may be left out to ask
-- about the state and expiry alone. Returns nil while live, else why not: `v`
-- itself when the end is recorded, else 'expired' or 'replaced'.
local function ended(v, x, now, pointer, cid)
  if v then return v end
  if now >= tonumber(x) then return 'expired' end
  if pointer and not points_to(pointer(), cid) then return 'replaced' end
  return nil
end

-- Ends a challenge in `state` (verified, burnt, expired): its code digest and
-- sealed code go. With `rec`, the account record, its pointer to the
-- challenge goes too and the hash lives on only as a tombstone, which the
-- status route reads.
local function end_challenge(c, state, rec, purpose)
  redis.call('HSET', c, 'v', state)
  redis.call('HDEL', c, 'h', 'e')
  if rec then
    redis.call('PEXPIRE', c, CFG.tombstone_ms)
    redis.call('HDEL', rec, 'c:' .. purpose)
  end
end

-- A challenge that cannot be used any more, as the error tuple verify.lua and
-- resend.lua return; nil while it is live. `rec` is the account record, which
-- holds the `c:<purpose>` pointers. An end not yet recorded (past its expiry,
-- or replaced) is recorded now.
local function dead_state(c, rec, cid, now)
  local f = redis.call('HMGET', c, 'v', 'x', 'p')
  local why = ended(f[1], f[2], now, function() return redis.call('HGET', rec, 'c:' .. f[3]) end, cid)
  if not why then return nil end
  if why == 'verified' then return {'already_used'} end
  if why == 'burnt' then return {'too_many_attempts'} end
  if why ~= f[1] then end_challenge(c, 'expired') end
  return {'expired'}
end

-- Why verify.lua and resend.lua refuse a challenge: it ended, or its account
-- is suspended or expired. Nil when it can be used.
local function unusable(c, rec, cid, now)
  return dead_state(c, rec, cid, now) or account_block(rec, now)
end

-- Acknowledges a send job and deletes it from the stream (sent.lua, drop.lua).
local function finish_job(stream, group, id)
  redis.call('XACK', stream, group, id)
  redis.call('XDEL', stream, id)
end

-- The next id of the dead-letter stream `key` of slot group `group`: now, or
-- after its last id, with a sequence number that is the group modulo 16, so
-- that ids never repeat across the groups' streams (merged by GET /dead-letters).
local function dead_letter_id(key, group)
  local ms, seq = now_ms(), group
  if redis.call('EXISTS', key) == 1 then
    local info = redis.call('XINFO', 'STREAM', key)
    for i = 1, #info, 2 do
      if info[i] == 'last-generated-id' then
        local lms, lseq = string.match(info[i + 1], '^(%d+)-(%d+)$')
        lms, lseq = tonumber(lms), tonumber(lseq)
        if lms >= ms then ms, seq = lms, lseq - lseq % 16 + 16 + group end
      end
    end
  end
  return ms .. '-' .. seq
end

-- A send's state only moves forward: queued < sent < one final state
-- (sent.lua, drop.lua, status.lua).
local RANK = {queued = 0, sent = 1, delivered = 2, no_answer = 2, busy = 2, machine = 2, failed = 2}

-- Notes send `n`'s channel and when its state last moved: GET /challenge/{id}
-- lists them (at most [otp] max_sends), never the number.
local function note_attempt(c, n, channel, now)
  redis.call('HSET', c, 'ch:' .. n, channel, 't:' .. n, now)
end

-- A call placed at `at` (ms) is worth placing only while a ring plus the time
-- to type the code ([voice] answer_window_seconds) fit before `expires`.
local function call_fits(at, expires)
  return at + CFG.answer_window_ms <= expires
end

-- An audit entry (gateway/accounts/audit.py): ARGV[first .. first + count - 1],
-- its field/value pairs, appended to the account's history and to its
-- establishment's, each capped near its maxlen. Either history may be nil:
-- on a cluster the establishment's (another slot) is written by its own call
-- (establishment.lua).
local function audit(hist, ehist, maxlen, emaxlen, first, count)
  local entry = {}
  for i = first, first + count - 1 do entry[#entry + 1] = ARGV[i] end
  if hist then redis.call('XADD', hist, 'MAXLEN', '~', maxlen, '*', unpack(entry)) end
  if ehist then redis.call('XADD', ehist, 'MAXLEN', '~', emaxlen, '*', unpack(entry)) end
end
