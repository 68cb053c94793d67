-- Pauses a site for a reason (not a count of network errors).
--
-- | KEYS[1] | `{P}:circuit:SITE` |
-- | ARGV[1] | the pause (ms) |
-- | ARGV[2] | the reason |
-- | ARGV[3] | the message for the operator |
-- Returns retry_at (ms).
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local retry_at = now + tonumber(ARGV[1])
redis.call('HSET', KEYS[1], 'retry_at', retry_at, 'pause', ARGV[1], 'probe_until', 0,
  'reason', ARGV[2], 'message', ARGV[3])
redis.call('PEXPIRE', KEYS[1], 86400000)
return retry_at
