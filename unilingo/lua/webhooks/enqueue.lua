-- A job's completion webhook into the outbox (replacing a pending delivery of the same job).
-- KEYS: outbox, delivery hash. ARGV: id, job_id, url, now, ttl
redis.call('HSET', KEYS[2], 'job_id', ARGV[2], 'url', ARGV[3], 'attempts', 0, 'created_at', ARGV[4])
redis.call('EXPIRE', KEYS[2], ARGV[5])
redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
return 1
