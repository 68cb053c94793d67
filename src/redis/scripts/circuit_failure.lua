-- Counts a login's network error; opens the circuit at the threshold, or doubles the pause
-- after a failed probe.
--
-- | KEYS[1] | `{P}:circuit:SITE` |
-- | ARGV[1] | the failure threshold |
-- | ARGV[2] | the first pause (ms) |
-- | ARGV[3] | the longest pause (ms) |
-- | ARGV[4] | the portal's Retry-After (ms, 0 if none) |
-- | ARGV[5] | 1 when the caller was the probe |
-- Returns {failures, retry_at (ms), 1 when this opened the circuit else 0}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local k = KEYS[1]
local failures = redis.call('HINCRBY', k, 'failures', 1)
local retry_at = tonumber(redis.call('HGET', k, 'retry_at') or '0')
local pause = tonumber(redis.call('HGET', k, 'pause') or '0')
local probing = tonumber(redis.call('HGET', k, 'probe_until') or '0') > 0
if ARGV[5] == '1' and probing then
  pause = math.min(math.max(pause, tonumber(ARGV[2])) * 2, tonumber(ARGV[3]))
elseif retry_at == 0 and failures >= tonumber(ARGV[1]) then
  pause = tonumber(ARGV[2])
else
  redis.call('PEXPIRE', k, 86400000)
  return {failures, retry_at, 0}
end
local wait = math.max(pause, tonumber(ARGV[4]))
retry_at = now + wait
redis.call('HSET', k, 'retry_at', retry_at, 'pause', pause, 'probe_until', 0)
redis.call('PEXPIRE', k, 86400000)
return {failures, retry_at, 1}
