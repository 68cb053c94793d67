-- Admits a caller that needs a login.
--
-- | KEYS[1] | `{P}:circuit:SITE` |
-- | ARGV[1] | how long a probe may take (ms) |
-- Returns {0, 0} closed, {1, 0} this caller is the probe, {2, ms to wait} open, or
-- {3, ms the probe may still take} a probe runs elsewhere.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local k = KEYS[1]
local retry_at = tonumber(redis.call('HGET', k, 'retry_at') or '0')
if retry_at == 0 then return {0, 0} end
if now < retry_at then return {2, retry_at - now} end
local probe_until = tonumber(redis.call('HGET', k, 'probe_until') or '0')
if probe_until > now then return {3, probe_until - now} end
redis.call('HSET', k, 'probe_until', now + tonumber(ARGV[1]))
return {1, 0}
