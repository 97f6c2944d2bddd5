-- Records a login on the account record (the admin list shows it).
-- KEYS: 1 account hash. ARGV: 1 now (ms). Returns 0 when the account is gone.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'last_login_at', ARGV[1])
return 1
