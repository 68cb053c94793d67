-- Extends an account's single-flight lock if ARGV[1] still holds it.
--
-- | KEYS[1] | `{P}:lock:SITE:ID` |
-- | ARGV[1] | the owner id |
-- | ARGV[2] | time to live (ms) |
-- Returns 1 renewed, 0 not this owner's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return 0
