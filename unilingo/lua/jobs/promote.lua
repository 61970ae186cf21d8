-- Moves due members of a delayed set back to their queue. The caller read the due members
-- and their queues; each one still due (a concurrent promotion may have taken it) leaves the
-- set, and goes back to its queue when its job is still queued (a job gone or no longer
-- queued is dropped). The stored message is pushed again as it was, so the job keeps its
-- Celery task id, and with its fair-share tag: it has waited its turn already.
-- KEYS: delayed zset, then per job: job, queue list, queue's tag index, queue's messages
-- ARGV: now, then the job ids (in KEYS order)
local moved = 0
for i = 2, #ARGV do
  local id, at = ARGV[i], 2 + (i - 2) * 4
  local score = tonumber(redis.call('ZSCORE', KEYS[1], id))
  if score and score <= tonumber(ARGV[1]) then
    redis.call('ZREM', KEYS[1], id)
    local fields = redis.call('HMGET', KEYS[at], 'status', 'message', 'fair_tag')
    if fields[1] == 'queued' and fields[2] then
      requeue(KEYS[at + 1], KEYS[at + 2], KEYS[at + 3], id, fields[2], fields[3])
      moved = moved + 1
    end
  end
end
return moved
