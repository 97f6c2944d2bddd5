-- Spends a send's limits, all or none, in the limits' slot (`{rl}`) alone: the
-- first of the Redis Cluster's steps for a send (create.lua and resend.lua
-- then run in the account's slot; refund.lua gives back on their refusal).
-- The same lib.lua functions as create.lua's one-step mode.
-- KEYS: 1 number bucket, 2 country, 3 global, 4 ip (when ARGV[3] is '1')
-- ARGV: 1 number tag, 2 establishment ('' for none), 3 '1' when the caller gave an ip
-- Returns {'ok'} | {'rate', scope, wait_ms}
local now = now_ms()
local establishment = ARGV[2] ~= '' and ARGV[2] or nil
local refused = spend(send_limits(KEYS[1], ARGV[1], KEYS[2], establishment, KEYS[3],
  ARGV[3] == '1' and KEYS[4] or nil), now)
if refused then return refused end
return {'ok'}
