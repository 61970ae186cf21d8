"""Fair share between the users waiting on one queue: weighted fair queuing, in Redis.

A provider's quota is the platform's true ceiling, and behind it a first-come-first-served
queue lets one user's backlog of 80 jobs make everyone else wait for all of it. Here each
queue takes its users in turns instead: every job gets a *tag* when it is queued,

    tag = max(queue's virtual time, the owner's last tag) + 1 / weight

and the queue's Redis list is kept in tag order (consumers pop from the right: the smallest
tag runs next). The queue's virtual time is the tag of the job claimed last. So a heavy
user's jobs are tagged 1, 2, 3, ... 80 and a light user who arrives while job 10 runs is
tagged 11: it runs next but one, not 70 jobs later. A tier's weight (``TIER_WEIGHTS``)
divides the step: a premium user at weight 3 gets three turns to a free user's one.

Everything happens in the job scripts that queue and claim (``unilingo.jobs``), so the order
is exact across every API and worker replica, and the list still holds every waiting job,
which is what KEDA scales on. A deferred, retried or requeued job goes back with the tag it
had: it has waited its turn already. ``FAIR_SHARE=false`` queues first come, first served.

Placing a job is a look-up in a sorted set of the queued jobs' tags (``keys.fair_index``)
and, when the new job does not go last, one ``LINSERT`` after the first job tagged above it.
"""

from __future__ import annotations

# Lua functions the job scripts include. Keys: the queue's list, its fairness hash
# (``clock``: the virtual time; ``u:<owner>``: the owner's last tag) and its tag index.
LUA = """
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
local function fair_push(list, index, job_prefix, job_id, message, tag)
  for _ = 1, 16 do
    local later = redis.call('ZRANGEBYSCORE', index, '(' .. tag, '+inf', 'LIMIT', 0, 1)[1]
    if not later then break end
    local pivot = redis.call('HGET', job_prefix .. later, 'message')
    if pivot and redis.call('LINSERT', list, 'AFTER', pivot, message) > 0 then
      redis.call('ZADD', index, tag, job_id)
      return
    end
    redis.call('ZREM', index, later)
  end
  redis.call('LPUSH', list, message)
  redis.call('ZADD', index, tag, job_id)
end

-- A job queued again (deferred, retried, stalled): with its own tag, or last when it has none.
local function requeue(fair_prefix, job_prefix, job_id, queue, message, tag)
  if tag then
    fair_push(queue, fair_prefix .. queue .. ':index', job_prefix, job_id, message, tonumber(tag))
  else
    redis.call('LPUSH', queue, message)
  end
end

-- A job taken off its list: out of the index, and the queue's virtual time moves up to it.
local function fair_claimed(fair_prefix, job_id, queue, tag)
  if not tag or not queue then return end
  local fair = fair_prefix .. queue
  redis.call('ZREM', fair .. ':index', job_id)
  if tonumber(tag) > tonumber(redis.call('HGET', fair, 'clock') or '0') then
    redis.call('HSET', fair, 'clock', tag)
  end
end
"""

# How long a queue's fairness state outlives its last queued job: owners' tags older than the
# queue's clock count as the clock, so forgetting them changes nothing.
STATE_TTL_SECONDS = 7 * 24 * 3600


def weight(tier: str, tier_weights: dict[str, float]) -> float:
    """The share a tier's user gets of a queue, relative to the default tier's 1."""
    value = tier_weights.get(tier, 1.0)
    return value if value > 0 else 1.0
