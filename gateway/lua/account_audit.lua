-- Audits an action that changes no field of the record.
-- KEYS: 1 history, 2 establishment history (one instance only: on a Redis
-- Cluster establishment.lua writes it apart). ARGV: 1/2 maxlens, 3 n, 4.. audit items
audit(KEYS[1], KEYS[2], ARGV[1], ARGV[2], 4, tonumber(ARGV[3]))
return 1
