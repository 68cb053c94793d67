-- Takes one login for (site, account) if both budgets allow it.
--
-- | KEYS[1] | `{P}:budget:SITE` |
-- | KEYS[2] | `{P}:budget:SITE:ID` |
-- | ARGV[1] | the site's limit (0: none) |
-- | ARGV[2] | the account's limit (0: none) |
-- | ARGV[3] | the window (ms) |
-- | ARGV[4] | a login id |
-- Returns {1, 0} taken, {0, ms until a login leaves the full window} refused.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window = tonumber(ARGV[3])
local wait = 0
for i, limit in ipairs({tonumber(ARGV[1]), tonumber(ARGV[2])}) do
  redis.call('ZREMRANGEBYSCORE', KEYS[i], '-inf', now - window)
  if limit > 0 and redis.call('ZCARD', KEYS[i]) >= limit then
    local oldest = redis.call('ZRANGE', KEYS[i], 0, 0, 'WITHSCORES')
    wait = math.max(wait, tonumber(oldest[2]) + window - now)
  end
end
if wait > 0 then return {0, wait} end
for i = 1, 2 do
  redis.call('ZADD', KEYS[i], now, ARGV[4])
  redis.call('PEXPIRE', KEYS[i], window)
end
return {1, 0}
