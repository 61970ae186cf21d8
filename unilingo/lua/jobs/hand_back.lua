-- A running job given back unfinished by a worker that is leaving: queued again at the head of
-- its queue, its attempt not counted, and the leaving run fenced out (new run token).
-- KEYS: job, leases, events channel, the job's queue list. ARGV: job_id, run_token, now
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('HGET', KEYS[1], 'run_token') ~= ARGV[2] then return 0 end
local message = redis.call('HGET', KEYS[1], 'message')
if not message then return 0 end
redis.call('HINCRBY', KEYS[1], 'attempts', -1)
redis.call('HINCRBY', KEYS[1], 'run_token', 1)
redis.call('HSET', KEYS[1], 'status', 'queued', 'updated_at', ARGV[3], 'lease_until', '0')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('RPUSH', KEYS[4], message)  -- consumers pop from the right: next in line
redis.call('PUBLISH', KEYS[3], 'queued')
return 1
