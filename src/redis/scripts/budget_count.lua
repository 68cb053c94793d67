-- Logins in the window for each key.
--
-- | KEYS[1..n] | `{P}:budget:SITE`, then `{P}:budget:SITE:ID` for each account asked |
-- | ARGV[1] | the window (ms) |
-- Returns {count, ms until the oldest leaves} for each key, flat.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[1])
local out = {}
for i, key in ipairs(KEYS) do
  redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  out[2 * i - 1] = redis.call('ZCARD', key)
  out[2 * i] = oldest[2] and (tonumber(oldest[2]) + window - now) or 0
end
return out
