-- A worker takes a job: a lease and a new run token (the fencing token every later change of
-- this run must show). Returns {outcome, run_token, attempts}; outcome: 'claimed' |
-- 'terminal' | 'busy' (a live worker holds it) | 'missing'.
-- KEYS: job, leases, events channel, the job's queue's fairness hash, tag index and messages
-- ARGV: job_id, now, lease_until
local status = redis.call('HGET', KEYS[1], 'status')
if not status then return {'missing', 0, 0} end
-- The queue's clock follows the owner's turn: the job's tag without its priority's offset.
local fair = redis.call('HMGET', KEYS[1], 'fair_tag', 'fair_offset')
local tag = fair[1] and tonumber(fair[1]) - tonumber(fair[2] or '0')
if status == 'succeeded' or status == 'failed' or status == 'cancelled' then
  fair_claimed(KEYS[4], KEYS[5], KEYS[6], ARGV[1], tag)
  return {'terminal', 0, 0}
end
if status == 'running' then
  local lease = tonumber(redis.call('HGET', KEYS[1], 'lease_until') or '0')
  if lease > tonumber(ARGV[2]) then return {'busy', 0, 0} end
end
local token = redis.call('HINCRBY', KEYS[1], 'run_token', 1)
local attempts = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
redis.call('HSET', KEYS[1], 'status', 'running', 'started_at', ARGV[2], 'updated_at', ARGV[2],
  'lease_until', ARGV[3])
redis.call('HDEL', KEYS[1], 'waiting')
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
fair_claimed(KEYS[4], KEYS[5], KEYS[6], ARGV[1], tag)
redis.call('PUBLISH', KEYS[3], 'running')
return {'claimed', token, attempts}
