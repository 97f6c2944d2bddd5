-- Records once that an account's expiry passed: the mark, its trusted
-- devices revoked, the audit entry.
-- KEYS: 1 account hash, 2 history, 3 trusted devices, 4 establishment history
--       (one instance only: on a Redis Cluster establishment.lua writes it apart)
-- ARGV: 1 the expiry (ms) seen passing, 2/3 history maxlens, 4 n, 5.. audit items
-- Returns 1 when recorded now; 0 when already recorded, renewed since, or gone.
local f = redis.call('HMGET', KEYS[1], 'expires_at', 'expiry_mark')
if f[1] ~= ARGV[1] or f[2] == ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'expiry_mark', ARGV[1])
redis.call('DEL', KEYS[3])
audit(KEYS[2], KEYS[4], ARGV[2], ARGV[3], 5, tonumber(ARGV[4]))
return 1
