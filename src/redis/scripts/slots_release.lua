-- Frees a lease; for a waiter that gave up also its place in the queue (a granted lease has
-- none: the grant took it out of the queue).
--
-- | KEYS[1] | `{P}:slots:leases` |
-- | KEYS[2] | `{P}:slots:holders` |
-- | KEYS[3] | `{P}:slots:queue` |
-- | KEYS[4] | `{P}:slots:waiters` |
-- | KEYS[5] | `{P}:slots:counts` (see slots_grant.lua): the freed lease leaves its counts |
-- | ARGV[1] | the lease (or waiter) id |
-- | ARGV[2] | 1 when it may still wait in the queue |
-- Returns 1 when a lease was freed, else 0.
local n = redis.call('ZREM', KEYS[1], ARGV[1])
if n == 1 then
  local info = redis.call('HGET', KEYS[2], ARGV[1])
  local site, account
  if info then site, account = string.match(info, '^([^\n]*)\n(.*)$') end
  if site then
    -- One read and one write (a missing total becomes -1: the next grant counts again).
    local s_field, a_field = 's\n' .. site, 'a\n' .. site .. '\n' .. account
    local c = redis.call('HMGET', KEYS[5], 'g', s_field, a_field)
    local left_s, left_a = (tonumber(c[2]) or 0) - 1, (tonumber(c[3]) or 0) - 1
    local set, gone = {'g', (tonumber(c[1]) or 0) - 1}, {}
    for field, left in pairs({[s_field] = left_s, [a_field] = left_a}) do
      if left > 0 then
        set[#set + 1] = field
        set[#set + 1] = left
      else
        gone[#gone + 1] = field
      end
    end
    redis.call('HSET', KEYS[5], unpack(set))
    if #gone > 0 then redis.call('HDEL', KEYS[5], unpack(gone)) end
  else
    -- A lease without a holder: the next grant counts everything again.
    redis.call('HSET', KEYS[5], 'g', -1)
  end
end
redis.call('HDEL', KEYS[2], ARGV[1])
if ARGV[2] == '1' then
  redis.call('ZREM', KEYS[3], ARGV[1])
  redis.call('HDEL', KEYS[4], ARGV[1])
end
return n
