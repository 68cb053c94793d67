-- Deletes a cache entry and says so on the channel of changes, in one step: a near cache
-- that hears of it forgets its copy, and one that reads the key after hearing finds it gone.
--
-- | KEYS[1] | the entry |
-- | ARGV[1] | the channel of changes (`P:cache-changes`) |
-- | ARGV[2] | the message (`ORIGIN KEY`) |
-- Returns 1 when the entry existed, else 0.
local removed = redis.call('DEL', KEYS[1])
redis.pcall('PUBLISH', ARGV[1], ARGV[2])
return removed
