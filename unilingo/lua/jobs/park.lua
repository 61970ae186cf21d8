-- Gives a claimed job back without counting the attempt (deferral) or counting it (retry),
-- and parks it in a delayed set until it is due.
-- KEYS: job, leases, delayed zset, delayed index, events channel
-- ARGV: job_id, run_token, now, score, uncount (1|0), index member, waiting (JSON)
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'run_token') ~= ARGV[2] then return 0 end
if ARGV[5] == '1' then redis.call('HINCRBY', KEYS[1], 'attempts', -1) end
redis.call('HSET', KEYS[1], 'status', 'queued', 'updated_at', ARGV[3], 'lease_until', '0', 'waiting', ARGV[7])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
redis.call('SADD', KEYS[4], ARGV[6])
redis.call('PUBLISH', KEYS[5], 'queued')
return 1
