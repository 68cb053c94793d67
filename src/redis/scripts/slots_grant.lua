-- One try at a login slot, on Redis's clock (`TIME`): drops expired leases and waiters, walks
-- the oldest ARGV[11] waiters granting (on paper) every one that could run, and grants the
-- caller only if it can still run after them (FIFO among the waiters that can run, no
-- head-of-line blocking). Counts per site and account are kept in KEYS[9] by this script and
-- the release; whenever its total (`g`) differs from the live leases (a lease expired, was
-- dropped by another script, or the counts were lost), they are counted again from the
-- leases and their holders. No key is built from data.
--
-- | KEYS[1] | `{P}:slots:leases`: lease id → expiry (ms) |
-- | KEYS[2] | `{P}:slots:holders`: lease id → `SITE\nACCOUNT` |
-- | KEYS[3] | `{P}:slots:queue`: waiter id → arrival number |
-- | KEYS[4] | `{P}:slots:queue-seq`: the arrival counter |
-- | KEYS[5] | `{P}:slots:waiters`: waiter id → `DEADLINE\nSITE\nACCOUNT` |
-- | KEYS[6] | `{P}:slots:limits`: limits set at run time |
-- | KEYS[7] | `{P}:slots:site-limits`: site → adaptive limit |
-- | KEYS[8] | `{P}:slots:fence`: the fencing counter |
-- | KEYS[9] | `{P}:slots:counts`: `g` → live leases, `s\nSITE` → per site, `a\nSITE\nACCOUNT` → per account |
-- | ARGV[1] | 1 when an earlier try of this waiter may have queued it |
-- | ARGV[2] | lease length (ms) |
-- | ARGV[3], ARGV[4], ARGV[5] | the waiter id, its site, its account |
-- | ARGV[6], ARGV[7], ARGV[8] | this instance's global, per-site, per-account limits |
-- | ARGV[9] | the longest queue |
-- | ARGV[10] | how long the waiter waits (ms) |
-- | ARGV[11] | how many of the oldest waiters are considered |
-- | ARGV[12] | the floor of a new fencing epoch (-1: not looked up yet) |
-- Returns {1, fence} granted, {0, 0} queued, {-1, 0} queue full, {2, 0} look the floor up.
local clock = redis.call('TIME')
local now = tonumber(clock[1]) * 1000 + math.floor(tonumber(clock[2]) / 1000)
local leases, holders, queue, queue_seq = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local waiters, limits, site_limits, fence = KEYS[5], KEYS[6], KEYS[7], KEYS[8]
local lim = redis.call('HMGET', limits, 'global', 'per_site', 'per_account')
local g = tonumber(lim[1]) or tonumber(ARGV[6])
local s = tonumber(lim[2]) or tonumber(ARGV[7])
local a = tonumber(lim[3]) or tonumber(ARGV[8])
-- Leases that expired unreleased (a holder that died) leave with their holders.
for _, id in ipairs(redis.call('ZRANGEBYSCORE', leases, '-inf', now)) do
  redis.call('ZREM', leases, id)
  redis.call('HDEL', holders, id)
end
local counts = KEYS[9]
local me, my_site, my_account = ARGV[3], ARGV[4], ARGV[5]
local my_s, my_a = 's\n' .. my_site, 'a\n' .. my_site .. '\n' .. my_account
local live_n = redis.call('ZCARD', leases)
-- The total and the caller's own counts in one read (HMGET answers false for a missing field).
local known = redis.call('HMGET', counts, 'g', my_s, my_a)
local recounted = tonumber(known[1] or '-1') ~= live_n
if recounted then
  -- Counted again from the leases and their holders (a lease without a holder counts in
  -- the total only).
  redis.call('DEL', counts)
  local held = {}
  local all = redis.call('HGETALL', holders)
  for i = 1, #all, 2 do held[all[i]] = all[i + 1] end
  for _, id in ipairs(redis.call('ZRANGE', leases, 0, -1)) do
    local info = held[id]
    local site, account
    if info then site, account = string.match(info, '^([^\n]*)\n(.*)$') end
    if site then
      redis.call('HINCRBY', counts, 's\n' .. site, 1)
      redis.call('HINCRBY', counts, 'a\n' .. site .. '\n' .. account, 1)
    end
  end
  redis.call('HSET', counts, 'g', live_n)
end
-- What the counts hold, read once per site and account, plus what the walk grants on paper.
local used_g = live_n
local stored, paper = {}, {}
if not recounted then
  stored[my_s] = tonumber(known[2] or '0')
  stored[my_a] = tonumber(known[3] or '0')
end
local function used(field)
  if stored[field] == nil then
    stored[field] = tonumber(redis.call('HGET', counts, field) or '0')
  end
  return stored[field] + (paper[field] or 0)
end
local function count(site, account)
  used_g = used_g + 1
  local s_field, a_field = 's\n' .. site, 'a\n' .. site .. '\n' .. account
  paper[s_field] = (paper[s_field] or 0) + 1
  paper[a_field] = (paper[a_field] or 0) + 1
end
local cached_limits = {}
local function site_limit(site)
  if cached_limits[site] == nil then
    local adaptive = tonumber(redis.call('HGET', site_limits, site))
    cached_limits[site] = adaptive and math.min(adaptive, s) or s
  end
  return cached_limits[site]
end
local function fits(site, account)
  return used_g < g and used('s\n' .. site) < site_limit(site)
    and used('a\n' .. site .. '\n' .. account) < a
end
for _, w in ipairs(redis.call('ZRANGE', queue, 0, tonumber(ARGV[11]) - 1)) do
  if w == me then break end
  local info = redis.call('HGET', waiters, w)
  local deadline, site, account
  if info then deadline, site, account = string.match(info, '^([^\n]*)\n([^\n]*)\n(.*)$') end
  if not deadline or tonumber(deadline) < now then
    redis.call('ZREM', queue, w)
    redis.call('HDEL', waiters, w)
  elseif fits(site, account) then
    count(site, account)
  end
end
if fits(my_site, my_account) then
  local number = redis.call('INCR', fence)
  if number == 1 then
    -- Redis lost the counter (restarted empty, flushed): a new epoch, newer than any number
    -- the old Redis gave, on Redis's clock in microseconds (no Redis grants one a
    -- microsecond) and never below the highest fence the database holds (ARGV[12]; -1 asks
    -- the caller to look it up and come again).
    local floor = tonumber(ARGV[12])
    if floor < 0 then
      redis.call('DEL', fence)
      return {2, 0}
    end
    local epoch = tonumber(clock[1]) * 1000000 + tonumber(clock[2])
    number = math.max(epoch, floor) + 1
    redis.call('SET', fence, string.format('%.0f', number))
  end
  redis.call('ZADD', leases, now + tonumber(ARGV[2]), me)
  redis.call('HSET', holders, me, my_site .. '\n' .. my_account)
  -- The counts as stored plus this lease (`fits` read both fields; nothing wrote them since).
  redis.call('HSET', counts, 'g', live_n + 1, my_s, stored[my_s] + 1, my_a, stored[my_a] + 1)
  if ARGV[1] == '1' then
    redis.call('ZREM', queue, me)
    redis.call('HDEL', waiters, me)
  end
  return {1, number}
end
if not redis.call('ZSCORE', queue, me) then
  if redis.call('ZCARD', queue) >= tonumber(ARGV[9]) then return {-1, 0} end
  redis.call('ZADD', queue, redis.call('INCR', queue_seq), me)
  redis.call('HSET', waiters, me, (now + tonumber(ARGV[10])) .. '\n' .. my_site .. '\n' .. my_account)
end
return {0, 0}
