-- Takes an account's checkout lease if free, and files the checkout.
--
-- | KEYS[1] | `{P}:checkout:SITE:ID` |
-- | KEYS[2] | `{P}:checkouts` |
-- | ARGV[1] | the checkout id |
-- | ARGV[2] | the lease (ms) |
-- | ARGV[3] | the checkout as JSON |
-- Returns 1 held, or minus the holder's ms left.
if redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
  return 1
end
return -math.max(redis.call('PTTL', KEYS[1]), 1)
