-- Leases held across instances (expired ones dropped first, on Redis's clock) and the
-- queue's length.
--
-- | KEYS[1] | `{P}:slots:leases` |
-- | KEYS[2] | `{P}:slots:holders` |
-- | KEYS[3] | `{P}:slots:queue` |
-- Returns {leases, waiters}.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
return {redis.call('ZCARD', KEYS[1]), redis.call('ZCARD', KEYS[3])}
