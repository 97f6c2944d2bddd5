-- Records that a send was accepted by a provider, then acknowledges the job.
-- Recording first means a redelivered job finds the send done and skips it.
-- KEYS: 1 challenge (c:), 2 stream
-- ARGV: 1 send number, 2 outcome ('sent' or 'failed'), 3 provider, 4 group, 5 entry id
if redis.call('EXISTS', KEYS[1]) == 1 then
  local done = tonumber(redis.call('HGET', KEYS[1], 'q')) or 0
  local attempt = tonumber(ARGV[1])
  if attempt > done then
    redis.call('HSET', KEYS[1], 'q', attempt, 'd', ARGV[2], 'pv', ARGV[3])
  end
end
redis.call('XACK', KEYS[2], ARGV[4], ARGV[5])
redis.call('XDEL', KEYS[2], ARGV[5])
return 1
