-- Extends a checkout lease that is still the caller's.
--
-- | KEYS[1] | `{P}:checkout:SITE:ID` |
-- | KEYS[2] | `{P}:checkouts` |
-- | ARGV[1] | the checkout id |
-- | ARGV[2] | the lease (ms) |
-- | ARGV[3] | the checkout as JSON |
-- Returns 1 renewed, 0 the lease is gone.
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  return 1
end
return 0
