-- Takes an account's single-flight lock for ARGV[1], or finds it already this owner's: a
-- request of the same owner that timed out at the client and ran late is the owner's own.
--
-- | KEYS[1] | `{P}:lock:SITE:ID` |
-- | ARGV[1] | the owner id |
-- | ARGV[2] | time to live (ms) |
-- Returns 1 held by this owner now, 0 held by another.
local held = redis.call('GET', KEYS[1])
if held == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
  return 1
end
if held then return 0 end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
