-- Writes a token entry unless its tombstone exists or the stored entry carries a newer fence.
--
-- | KEYS[1] | the entry (`P:token:{SITE}:ID` or `P:site-token:{SITE}`) |
-- | KEYS[2] | optional: the token's tombstone (`P:revoked:{SITE}:ID:FP`) |
-- | ARGV[1] | the entry (JSON with a `fence` field) |
-- | ARGV[2] | time to live (ms) |
-- | ARGV[3] | the entry's fence (0: never compared) |
-- | ARGV[4] | optional: the channel of changes, where the write is published (the near caches) |
-- | ARGV[5] | with ARGV[4]: the message (`ORIGIN KEY`) |
-- Returns 1 written, 0 stale (a newer fence is stored), 2 revoked (the tombstone exists).
if KEYS[2] and redis.call('EXISTS', KEYS[2]) == 1 then return 2 end
local mine = tonumber(ARGV[3])
if mine > 0 then
  local current = redis.call('GET', KEYS[1])
  if current then
    local ok, entry = pcall(cjson.decode, current)
    if ok and type(entry) == 'table' and tonumber(entry.fence or 0) > mine then return 0 end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
if ARGV[4] then redis.pcall('PUBLISH', ARGV[4], ARGV[5]) end
return 1
