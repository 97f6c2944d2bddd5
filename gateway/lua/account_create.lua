-- Creates an account: its record, both indexes and the audit entry, at once.
-- On a Redis Cluster the establishment's set and history are in another slot:
-- only KEYS 1-3 are given, and establishment.lua writes those two apart.
-- KEYS: 1 account hash, 2 account index, 3 history,
--       one instance only: 4 establishment set, 5 establishment history
-- ARGV: 1 account id, 2/3 history maxlens (account, establishment),
--       4 number of audit items n, 5 .. 4+n the audit entry's field/value pairs,
--       then field, value pairs of the record
-- Returns 1 when created, 0 when the account already exists.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local n = tonumber(ARGV[4])
local fields = {}
for i = 5 + n, #ARGV do fields[#fields + 1] = ARGV[i] end
redis.call('HSET', KEYS[1], unpack(fields))
redis.call('SADD', KEYS[2], ARGV[1])
if KEYS[4] then redis.call('SADD', KEYS[4], ARGV[1]) end
audit(KEYS[3], KEYS[5], ARGV[2], ARGV[3], 5, n)
return 1
