-- Extends a live lease to now + ARGV[2] ms, on Redis's clock. A lease that expired stays
-- expired (it is dropped, never brought back to life: its slot may be someone else's now).
--
-- | KEYS[1] | `{P}:slots:leases` |
-- | KEYS[2] | `{P}:slots:holders` |
-- | ARGV[1] | the lease id |
-- | ARGV[2] | the new length (ms) |
-- Returns 1 renewed, 0 gone.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local expiry = tonumber(redis.call('ZSCORE', KEYS[1], ARGV[1]) or '0')
if expiry <= now then
  redis.call('ZREM', KEYS[1], ARGV[1])
  redis.call('HDEL', KEYS[2], ARGV[1])
  return 0
end
redis.call('ZADD', KEYS[1], 'XX', now + tonumber(ARGV[2]), ARGV[1])
return 1
