-- The state of a circuit.
--
-- | KEYS[1] | `{P}:circuit:SITE` |
-- Returns {failures, retry_at (ms), probe_until (ms), now (ms), reason, message} (the last
-- two empty for a circuit opened by network errors).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local v = redis.call('HMGET', KEYS[1], 'failures', 'retry_at', 'probe_until', 'reason', 'message')
return {tonumber(v[1] or '0'), tonumber(v[2] or '0'), tonumber(v[3] or '0'), now, v[4] or '', v[5] or ''}
