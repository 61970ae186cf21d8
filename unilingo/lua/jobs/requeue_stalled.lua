-- Running jobs whose lease lapsed: their worker died. Queue them again, fenced (new run
-- token). The caller read the lapsed leases and the jobs' queues; each lease is checked again.
-- KEYS: leases, then per job: job, events channel, queue list, queue's tag index, queue's messages
-- ARGV: now, then the job ids (in KEYS order)
local now = tonumber(ARGV[1])
local moved = 0
for i = 2, #ARGV do
  local id, at = ARGV[i], 2 + (i - 2) * 5
  local score = tonumber(redis.call('ZSCORE', KEYS[1], id))
  if score and score <= now then
    redis.call('ZREM', KEYS[1], id)
    local fields = redis.call('HMGET', KEYS[at], 'status', 'message', 'lease_until', 'fair_tag')
    if fields[1] == 'running' and tonumber(fields[3] or '0') <= now and fields[2] then
      redis.call('HSET', KEYS[at], 'status', 'queued', 'updated_at', ARGV[1], 'lease_until', '0')
      redis.call('HINCRBY', KEYS[at], 'run_token', 1)
      requeue(KEYS[at + 2], KEYS[at + 3], KEYS[at + 4], id, fields[2], fields[4])
      redis.call('PUBLISH', KEYS[at + 1], 'queued')
      moved = moved + 1
    end
  end
end
return moved
