-- Ends a checkout lease that is still the caller's (the entry is dropped either way).
--
-- | KEYS[1] | `{P}:checkout:SITE:ID` |
-- | KEYS[2] | `{P}:checkouts` |
-- | ARGV[1] | the checkout id |
-- Returns 1 released, 0 the lease had ended already.
local mine = redis.call('GET', KEYS[1]) == ARGV[1]
if mine then redis.call('DEL', KEYS[1]) end
redis.call('HDEL', KEYS[2], ARGV[1])
if mine then return 1 end
return 0
