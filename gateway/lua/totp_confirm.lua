-- Confirms an authenticator app: its pending secret becomes the account's.
-- KEYS: 1 totp hash. ARGV: 1 the sealed pending secret checked, 2 the step it matched.
-- Returns 1 when confirmed, 0 when the pending secret changed meanwhile.
if redis.call('HGET', KEYS[1], 'pending') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'secret', ARGV[1], 'last', ARGV[2])
redis.call('HDEL', KEYS[1], 'pending')
return 1
