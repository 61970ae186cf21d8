-- The activity records of users dropped from the index, unless they came back in the meantime.
-- KEYS: 1 users zset, then each user's activity record (in ARGV order). ARGV: the users
local forgotten = 0
for i, user in ipairs(ARGV) do
  if not redis.call('ZSCORE', KEYS[1], user) then
    forgotten = forgotten + redis.call('DEL', KEYS[i + 1])
  end
end
return forgotten
