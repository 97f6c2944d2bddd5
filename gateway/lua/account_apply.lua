-- Writes a change to an account (update, phone change, deletion) if nobody
-- wrote in between (its version `v`, and the last-admin guard's), with its
-- audit entry. On a Redis Cluster only the account's slot (KEYS 1-6) is given,
-- with no guard: establishment.lua writes the establishment's set and history
-- apart, and the last-admin guard is the establishment's lease
-- (gateway/accounts/store.py).
-- KEYS: 1 account hash, 2 history, 3 trusted devices, 4 account index,
--       5 totp hash, 6 reminders hash; one instance only: 7 establishment set,
--       8 establishment history, 9 guard: another active admin's hash (KEYS[1]
--       when there is no guard)
-- ARGV: 1 account id, 2 expected version, 3 mode (update|revoke|delete),
--       4/5 history maxlens, 6 the guard's expected version ('' when there is no guard),
--       7 number of audit items n, then the n audit items,
--       then the number of field/value pairs to set, the pairs, then fields to delete
-- Returns 1 when applied, 0 when the record or the guard changed since they were
-- read, -1 when the account is gone.
local version = redis.call('HGET', KEYS[1], 'v')
if not version then return -1 end
if version ~= ARGV[2] then return 0 end
if ARGV[6] ~= '' and redis.call('HGET', KEYS[9], 'v') ~= ARGV[6] then return 0 end
local n = tonumber(ARGV[7])
local at = 8 + n
local mode = ARGV[3]
if mode == 'delete' then
  redis.call('DEL', KEYS[1], KEYS[3], KEYS[5], KEYS[6])
  redis.call('SREM', KEYS[4], ARGV[1])
  if KEYS[7] then redis.call('SREM', KEYS[7], ARGV[1]) end
else
  local nset = tonumber(ARGV[at])
  local first_del = at + 1 + 2 * nset
  if nset > 0 then
    local sets = {}
    for i = at + 1, first_del - 1 do sets[#sets + 1] = ARGV[i] end
    redis.call('HSET', KEYS[1], unpack(sets))
  end
  local dels = {}
  for i = first_del, #ARGV do dels[#dels + 1] = ARGV[i] end
  if #dels > 0 then redis.call('HDEL', KEYS[1], unpack(dels)) end
  redis.call('HINCRBY', KEYS[1], 'v', 1)
  if mode == 'revoke' then
    -- A new number: trusted devices and pending challenges to the old one
    -- die (the scripts point at an account's live challenges from its record).
    redis.call('DEL', KEYS[3])
    local fields = redis.call('HKEYS', KEYS[1])
    for _, f in ipairs(fields) do
      if string.sub(f, 1, 2) == 'c:' then redis.call('HDEL', KEYS[1], f) end
    end
  end
end
audit(KEYS[2], KEYS[8], ARGV[4], ARGV[5], 8, n)
return 1
