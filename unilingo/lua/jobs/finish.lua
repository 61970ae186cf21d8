-- The completion: the job's terminal state, its outcome in the cluster totals and its webhook
-- in the outbox, all or nothing, and only for the holder of the current run token. A worker
-- that dies at any point leaves either a finished job whose webhook is queued, or a running
-- job whose lease lapses and which runs again; a refused (stale) completion writes nothing.
-- KEYS: job, leases, events channel, cluster counters, webhook outbox, webhook delivery,
--       the owner's activity record (or '' when the job did not fail)
-- ARGV: job_id, run_token, now, status, delivery ttl, activity ttl, then field/value pairs
local f = redis.call('HMGET', KEYS[1], 'status', 'run_token', 'type', 'webhook_url')
if f[1] ~= 'running' or f[2] ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], 'status', ARGV[4], 'updated_at', ARGV[3], 'finished_at', ARGV[3],
  'lease_until', '0')
if #ARGV > 6 then redis.call('HSET', KEYS[1], unpack(ARGV, 7)) end
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HINCRBYFLOAT', KEYS[4], 'jobs:' .. f[3] .. ':' .. ARGV[4], 1)
if ARGV[4] == 'failed' and KEYS[7] ~= '' then
  -- the owner's failure share (risk score); the API's activity flush may not have made the
  -- record yet, so a new one gets the activity records' lifetime here
  redis.call('HINCRBY', KEYS[7], 'failed', 1)
  if redis.call('TTL', KEYS[7]) < 0 then redis.call('EXPIRE', KEYS[7], ARGV[6]) end
end
if f[4] and f[4] ~= '' then
  redis.call('HSET', KEYS[6], 'job_id', ARGV[1], 'url', f[4], 'attempts', 0, 'created_at', ARGV[3])
  redis.call('EXPIRE', KEYS[6], ARGV[5])
  redis.call('ZADD', KEYS[5], ARGV[3], ARGV[1])
end
redis.call('PUBLISH', KEYS[3], ARGV[4])
return 1
