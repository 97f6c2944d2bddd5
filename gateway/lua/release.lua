-- Releases a lock only if its taker still holds it (its token): the sweep
-- lock, an establishment's last-admin lease. A lock that expired and was
-- taken by someone else stays theirs.
-- KEYS: 1 the lock. ARGV: 1 the taker's token. Returns 1 when released.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
