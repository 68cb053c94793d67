-- Frees a lease; for a waiter that gave up also its place in the queue (a granted lease has
-- none: the grant took it out of the queue).
--
-- | KEYS[1] | `{P}:slots:leases` |
-- | KEYS[2] | `{P}:slots:holders` |
-- | KEYS[3] | `{P}:slots:queue` |
-- | KEYS[4] | `{P}:slots:waiters` |
-- | ARGV[1] | the lease (or waiter) id |
-- | ARGV[2] | 1 when it may still wait in the queue |
-- Returns 1 when a lease was freed, else 0.
local n = redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[2] == '1' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
end
return n
