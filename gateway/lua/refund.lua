-- Gives back what limits.lua spent for a send that create.lua or resend.lua
-- then refused (Redis Cluster only): one emission interval off each of the
-- same states, never below now.
-- KEYS and ARGV: limits.lua's. Returns 1.
local establishment = ARGV[2] ~= '' and ARGV[2] or nil
refund_limits(send_limits(KEYS[1], ARGV[1], KEYS[2], establishment, KEYS[3],
  ARGV[3] == '1' and KEYS[4] or nil), now_ms())
return 1
