-- Records that a provider took a send (or that it failed for good), then
-- acknowledges the job. Recording first means a redelivered job finds the
-- send done and skips it.
-- The send's state only moves forward: a status callback that came in before
-- this record (a fast provider) is never overwritten by 'sent'. `d` mirrors
-- the latest send; `vc` counts calls placed (each once: `cl:<n>`). A failed
-- outcome is a provider's final refusal (reason `rejected`).
-- KEYS: 1 challenge (c:), 2 stream
-- ARGV: 1 send number, 2 outcome ('sent' or 'failed'), 3 provider, 4 group,
--       5 entry id, 6 channel, 7 provider's reference, 8 failure reason
local c, n, outcome = KEYS[1], tonumber(ARGV[1]), ARGV[2]
if redis.call('EXISTS', c) == 1 then
  local f = redis.call('HMGET', c, 'q', 's', 'd:' .. n)
  if n > (tonumber(f[1]) or 0) then
    redis.call('HSET', c, 'q', n, 'pv', ARGV[3])
    if ARGV[7] ~= '' then redis.call('HSET', c, 'pr', ARGV[7]) end
    if ARGV[8] ~= '' then redis.call('HSET', c, 'dr', ARGV[8]) end
    if not f[3] or RANK[f[3]] < RANK[outcome] then
      redis.call('HSET', c, 'd:' .. n, outcome)
      note_attempt(c, n, ARGV[6], now_ms())
      if n >= (tonumber(f[2]) or 1) then redis.call('HSET', c, 'd', outcome) end
    end
    -- A refusal of the latest send names itself in GET /challenge/{id} (as drop.lua).
    if outcome == 'failed' and n >= (tonumber(f[2]) or 1)
        and redis.call('HGET', c, 'd:' .. n) == 'failed' then
      redis.call('HSET', c, 'fr', 'rejected', 'fn', n)
    end
    if outcome == 'sent' and ARGV[6] == 'voice' and redis.call('HSETNX', c, 'cl:' .. n, 1) == 1 then
      redis.call('HINCRBY', c, 'vc', 1)
    end
  end
end
finish_job(KEYS[2], ARGV[4], ARGV[5])
return 1
