-- What a send job needs, in one round trip: whether its challenge is still
-- live and this send not yet done, and the (sealed) number to send to.
-- KEYS: 1 challenge (c:), 2 account record (a:, named from the id's tag)
-- ARGV: 1 challenge id, 2 send number
-- Returns {'drop', reason}
--       | {'send', purpose, expires_at_ms, sealed code, sealed number, its owner, extension}
--         where the owner is 'to' (a number being proven, sealed to the challenge)
--         or the account id (the account's own number, sealed to the account)
local now = now_ms()
local f = redis.call('HMGET', KEYS[1], 'a', 'p', 'v', 'x', 'q', 'e', 'nh', 'to')
if not f[1] or not f[6] then return {'drop', 'not_live'} end
-- Its state and expiry first; whether it was replaced, last (below).
local why = ended(f[3], f[4], now)
if why then return {'drop', why == f[3] and 'not_live' or why} end
if f[5] and tonumber(f[5]) >= tonumber(ARGV[2]) then return {'drop', 'duplicate'} end
local a = redis.call('HMGET', KEYS[2], 'suspended', 'expires_at',
  'c:' .. f[2], 'phone', 'number_tag', 'phone_extension')
if a[1] == '1' or now >= tonumber(a[2] or '0') then
  -- Suspended, expired or deleted since the code was asked for.
  return {'drop', 'account_inactive'}
end

local number, owner, extension = f[8], 'to', ''
if not number then
  if not a[4] then return {'drop', 'no_number'} end
  if a[5] ~= f[7] then return {'drop', 'number_changed'} end
  number, owner, extension = a[4], f[1], a[6] or ''
end
-- A newer challenge of the same purpose replaced this one (or a phone change
-- revoked it): its code can no longer verify.
if ended(f[3], f[4], now, function() return a[3] end, ARGV[1]) then
  return {'drop', 'replaced'}
end
return {'send', f[2], f[4], f[6], number, owner, extension}
