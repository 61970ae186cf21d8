-- The user cancels a job not yet terminal; a run in progress is fenced out (new run token).
-- KEYS: job, leases, events channel. ARGV: job_id, now
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return 'missing' end
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then return 'terminal' end
redis.call('HINCRBY', KEYS[1], 'run_token', 1)
redis.call('HSET', KEYS[1], 'status', 'cancelled', 'updated_at', ARGV[2], 'finished_at', ARGV[2],
  'lease_until', '0', 'error', '{"code":"cancelled","message":"cancelled by the user"}')
redis.call('HDEL', KEYS[1], 'waiting')
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('PUBLISH', KEYS[3], 'cancelled')
return 'cancelled'
