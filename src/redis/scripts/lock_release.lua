-- Frees an account's single-flight lock if ARGV[1] holds it.
--
-- | KEYS[1] | `{P}:lock:SITE:ID` |
-- | ARGV[1] | the owner id |
-- Returns 1 freed, 0 not this owner's.
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
