-- Drops the entry of a checkout whose lease ended by itself.
--
-- | KEYS[1] | `{P}:checkout:SITE:ID` |
-- | KEYS[2] | `{P}:checkouts` |
-- | ARGV[1] | the checkout id |
-- Returns 1 when this call dropped it (so one instance reports it), else 0.
if redis.call('GET', KEYS[1]) == ARGV[1] then return 0 end
return redis.call('HDEL', KEYS[2], ARGV[1])
