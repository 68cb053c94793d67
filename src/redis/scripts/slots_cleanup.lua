-- Drops expired leases (with their holders) and waiters past their deadline, on Redis's
-- clock.
--
-- | KEYS[1] | `{P}:slots:leases` |
-- | KEYS[2] | `{P}:slots:holders` |
-- | KEYS[3] | `{P}:slots:queue` |
-- | KEYS[4] | `{P}:slots:waiters` |
-- Returns {leases dropped, waiters dropped}.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local leases = 0
for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)) do
  leases = leases + redis.call('ZREM', KEYS[1], id)
  redis.call('HDEL', KEYS[2], id)
end
local waiters = 0
local all = redis.call('HGETALL', KEYS[4])
for i = 1, #all, 2 do
  local deadline = tonumber(string.match(all[i + 1], '^([^\n]*)')) or 0
  if deadline < now then
    redis.call('HDEL', KEYS[4], all[i])
    redis.call('ZREM', KEYS[3], all[i])
    waiters = waiters + 1
  end
end
return {leases, waiters}
