-- Fair share between a queue's users (unilingo.fairness): Lua functions the job scripts
-- include. Keys, all passed in by the caller: the queue's list, its fairness hash (`clock`:
-- the virtual time; `u:<owner>`: the owner's last tag), its tag index (sorted set of queued
-- job ids by tag) and its messages (hash of queued job id -> the job's queue message, the
-- pivot a new job is inserted beside).

local function fair_tag(fair, owner, weight)
  local clock = tonumber(redis.call('HGET', fair, 'clock') or '0')
  local last = tonumber(redis.call('HGET', fair, 'u:' .. owner) or '0')
  local tag = math.max(clock, last) + 1 / weight
  redis.call('HSET', fair, 'u:' .. owner, tag)
  return tag
end

-- Into the list in tag order: just right of the first job tagged above it (consumers pop
-- from the right), or at the far left when none is. An index entry whose job has left the
-- list (claimed by a consumer that has not reached its script yet, or expired) is dropped.
local function fair_push(list, index, messages, job_id, message, tag)
  for _ = 1, 16 do
    local later = redis.call('ZRANGEBYSCORE', index, '(' .. tag, '+inf', 'LIMIT', 0, 1)[1]
    if not later then break end
    local pivot = redis.call('HGET', messages, later)
    if pivot and redis.call('LINSERT', list, 'AFTER', pivot, message) > 0 then
      redis.call('ZADD', index, tag, job_id)
      redis.call('HSET', messages, job_id, message)
      return
    end
    redis.call('ZREM', index, later)
    redis.call('HDEL', messages, later)
  end
  redis.call('LPUSH', list, message)
  redis.call('ZADD', index, tag, job_id)
  redis.call('HSET', messages, job_id, message)
end

-- A job queued again (deferred, retried, stalled): with its own tag, or last when it has none.
local function requeue(list, index, messages, job_id, message, tag)
  if tag then
    fair_push(list, index, messages, job_id, message, tonumber(tag))
  else
    redis.call('LPUSH', list, message)
  end
end

-- A job taken off its list: out of the index, and the queue's virtual time moves up to it.
local function fair_claimed(fair, index, messages, job_id, tag)
  if not tag then return end
  redis.call('ZREM', index, job_id)
  redis.call('HDEL', messages, job_id)
  if tonumber(tag) > tonumber(redis.call('HGET', fair, 'clock') or '0') then
    redis.call('HSET', fair, 'clock', tag)
  end
end
