-- Ends a job unsent: records why on its send, keeps it as a dead letter when
-- asked, then acknowledges and deletes it, all at once, so a job is never
-- acknowledged without its record nor dead-lettered twice.
-- The send becomes `failed` (its state only moves forward, as in sent.lua);
-- when it is the latest, `fr` = the reason and `fn` = its number, so
-- GET /challenge/{id} names the reason while no newer send was queued.
-- Nothing is written to a challenge that is gone (that would leave a hash
-- without a TTL) or is not a hash (corrupt).
-- A dead letter's id is unique across the 16 groups' dead-letter streams
-- (GET /dead-letters merges them): its sequence number is the slot group's
-- number modulo 16, so two groups never write the same id.
-- KEYS: 1 stream, 2 its group's dead-letter stream, 3 challenge (c:), absent
--       when the entry names none
-- ARGV: 1 group, 2 entry id, 3 send number ('' when unknown), 4 reason,
--       5 dead-letter cap (0: no dead letter), 6 the slot group's number (0-15),
--       7.. the entry's fields and values
-- Returns 1
local c, n, reason = KEYS[3], tonumber(ARGV[3]), ARGV[4]
if c and n and redis.call('TYPE', c).ok == 'hash' then
  local f = redis.call('HMGET', c, 's', 'd:' .. n)
  local state, latest = f[2], n >= (tonumber(f[1]) or 1)
  if not state or (RANK[state] or 0) < RANK.failed then
    state = 'failed'
    redis.call('HSET', c, 'd:' .. n, state)
    if latest then redis.call('HSET', c, 'd', state) end
  end
  -- Also when status.lua marked it failed first (an SMS that may become a call).
  if latest and state == 'failed' then redis.call('HSET', c, 'fr', reason, 'fn', n) end
end
local cap = tonumber(ARGV[5])
if cap > 0 then
  local entry = {}
  for i = 7, #ARGV do entry[#entry + 1] = ARGV[i] end
  entry[#entry + 1] = 'reason'
  entry[#entry + 1] = reason
  redis.call('XADD', KEYS[2], 'MAXLEN', cap, dead_letter_id(KEYS[2], tonumber(ARGV[6])),
    unpack(entry))
end
finish_job(KEYS[1], ARGV[1], ARGV[2])
return 1
