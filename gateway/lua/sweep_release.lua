-- Releases the sweep lock, only if this sweeper still holds it (its token):
-- a lock that expired and was taken by another sweeper stays theirs.
-- KEYS: 1 the lock. ARGV: 1 this sweeper's token. Returns 1 when released.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
