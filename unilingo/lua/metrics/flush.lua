-- Cluster totals and per-user activity buffered in one process, added to Redis at once.
-- KEYS: 1 counters hash, 2 users zset, then each user's activity record (in ARGV order)
-- ARGV: 1 now (s), 2 ttl, 3 max users, 4 minute buckets kept, 5 number of counter pairs N,
--       then N field/amount pairs, then user groups of 4: user, submitted, quota hits, failed
-- Reply: the users dropped from the index beyond the cap, least recently active first (their
-- records are the caller's to delete: their keys are not this call's).
local now, ttl, cap, keep = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local n = tonumber(ARGV[5])
local i = 6
for _ = 1, n do
  redis.call('HINCRBYFLOAT', KEYS[1], ARGV[i], ARGV[i + 1])
  i = i + 2
end
local minute = math.floor(now / 60)
local touched = false
local record = 3
while i <= #ARGV do
  local user, submitted, quota, failed = ARGV[i], tonumber(ARGV[i + 1]), tonumber(ARGV[i + 2]), tonumber(ARGV[i + 3])
  i = i + 4
  local key = KEYS[record]
  record = record + 1
  if submitted > 0 then
    redis.call('HINCRBY', key, 'submitted', submitted)
    redis.call('HINCRBY', key, 'm:' .. minute, submitted)
  end
  if quota > 0 then redis.call('HINCRBY', key, 'quota_hits', quota) end
  if failed > 0 then redis.call('HINCRBY', key, 'failed', failed) end
  redis.call('HSETNX', key, 'first_seen', now)
  redis.call('HSET', key, 'last_seen', now)
  if redis.call('HLEN', key) > keep + 10 then  -- drop minute buckets older than the window
    for _, field in ipairs(redis.call('HKEYS', key)) do
      if string.sub(field, 1, 2) == 'm:' and tonumber(string.sub(field, 3)) <= minute - keep then
        redis.call('HDEL', key, field)
      end
    end
  end
  redis.call('EXPIRE', key, ttl)
  redis.call('ZADD', KEYS[2], now, user)
  touched = true
end
local dropped = {}
if touched then
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', now - ttl)
  local extra = redis.call('ZCARD', KEYS[2]) - cap
  if extra > 0 then
    dropped = redis.call('ZRANGE', KEYS[2], 0, extra - 1)
    redis.call('ZREMRANGEBYRANK', KEYS[2], 0, extra - 1)
  end
end
return dropped
