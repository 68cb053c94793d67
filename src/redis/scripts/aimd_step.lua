-- One AIMD step of a site's limit, written where the grant script reads it.
--
-- | KEYS[1] | `{P}:aimd:SITE`: limit, streak, halved_at |
-- | KEYS[2] | `{P}:slots:site-limits` |
-- | KEYS[3] | `{P}:slots:leases` |
-- | KEYS[4] | `{P}:slots:holders` |
-- | ARGV[1] | the site |
-- | ARGV[2] | the signal: `congestion`, `success` or `failure` |
-- | ARGV[3] | the highest limit |
-- | ARGV[4] | successes in a row before a raise |
-- | ARGV[5] | for congestion: how long ago (ms) the refused request was sent |
-- Returns {old limit, new limit}.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local site, signal, max, after = ARGV[1], ARGV[2], tonumber(ARGV[3]), tonumber(ARGV[4])
local limit = math.min(tonumber(redis.call('HGET', KEYS[1], 'limit') or max), max)
local streak = tonumber(redis.call('HGET', KEYS[1], 'streak') or '0')
local new = limit
if signal == 'congestion' then
  local halved = tonumber(redis.call('HGET', KEYS[1], 'halved_at') or '0')
  if now - tonumber(ARGV[5]) >= halved then
    new = math.max(1, math.floor(limit / 2))
    redis.call('HSET', KEYS[1], 'halved_at', now)
  end
  streak = 0
elseif signal == 'success' then
  streak = streak + 1
  local in_use = 0
  local prefix = site .. '\n'
  for _, id in ipairs(redis.call('ZRANGEBYSCORE', KEYS[3], '(' .. now, '+inf')) do
    local holder = redis.call('HGET', KEYS[4], id)
    if holder and string.sub(holder, 1, #prefix) == prefix then in_use = in_use + 1 end
  end
  if streak >= after and in_use * 2 >= limit and limit < max then
    new = limit + 1
    streak = 0
  end
else
  streak = 0
end
redis.call('HSET', KEYS[1], 'limit', new, 'streak', streak)
redis.call('HSET', KEYS[2], site, new)
return {limit, new}
