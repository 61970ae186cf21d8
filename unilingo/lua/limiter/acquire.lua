-- A permit for one call, or why not and for how long (unilingo.limiter: the checks' order).
-- ARGV from OP: random part of the lease id, tokens, holder.
-- Reply: {granted 0/1, lease id or reason, retry after ms, policy revision}.
local tokens, holder = tonumber(ARGV[OP + 1]), ARGV[OP + 2]
local policy = live_policy()

local function deny(reason, wait_ms)
  return {0, reason, math.max(1, math.ceil(wait_ms)), policy.revision}
end

-- When the n-th oldest (0-based) call granted after `since` was granted.
local function nth_since(since, n)
  return tonumber(redis.call('ZRANGE', KEYS[2], '(' .. since, '+inf', 'BYSCORE', 'LIMIT', n, 1, 'WITHSCORES')[2])
end

if policy.suspended == 1 then
  return deny('suspended', RECHECK)  -- no end is known: look again soon
end

-- A spent budget: wait for the period that is spent to end (the month's first, if both are).
local spend, reserve = nil, 0
if policy.budget_day_nusd >= 0 or policy.budget_month_nusd >= 0 then
  spend = load_spend()
  local reason = policy.budget_fail == 1 and 'budget_exhausted' or 'budget'
  if policy.budget_month_nusd >= 0 and spend.month_nusd >= policy.budget_month_nusd then
    return deny(reason, spend.month_ends - now)
  end
  if policy.budget_day_nusd >= 0 and spend.day_nusd >= policy.budget_day_nusd then
    return deny(reason, spend.day_ends - now)
  end
end
if policy.price_in_nusd_1k > 0 or policy.price_out_nusd_1k > 0 then
  reserve = math.floor(tokens * math.max(policy.price_in_nusd_1k, policy.price_out_nusd_1k) / 1000 + 0.5)
end

local state = load_state()
if state.paused_until > now then
  return deny('paused', state.paused_until - now)
end

local probe = 0
if state.breaker == 'open' then
  return deny('breaker_open', state.opened_at + policy.open_ms - now)
elseif state.breaker == 'half_open' then
  redis.call('ZREMRANGEBYSCORE', KEYS[5], '-inf', now)  -- probes of dead workers
  if redis.call('ZCARD', KEYS[5]) >= policy.half_open_probes then
    return deny('breaker_open', RECHECK)  -- the probes are out; their outcome decides
  end
  probe = 1
end

-- A call granted at g counts until g + WINDOW. Counting reads only, so that a refusal, the
-- common answer at saturation, writes nothing.
local horizon = now - WINDOW
local count = redis.call('ZCOUNT', KEYS[2], '(' .. horizon, '+inf')
if policy.rpm > 0 then
  -- After this call at most rpm calls may lie in (now - WINDOW, now]; if not, wait until
  -- the oldest call that is one too many leaves.
  if count >= policy.rpm then
    return deny('rate', nth_since(horizon, count - policy.rpm) + WINDOW - now)
  end
  -- Burst: at most `burst` calls in any burst/rpm of a minute: the same log over a shorter
  -- span. The sustained rate stays rpm; how much of it may come at once is bounded.
  if policy.burst < policy.rpm then
    local span = math.ceil(policy.burst * 60000 / policy.rpm)
    local recent = redis.call('ZCOUNT', KEYS[2], '(' .. (now - span), '+inf')
    if recent >= policy.burst then
      return deny('rate', nth_since(now - span, recent - policy.burst) + span - now)
    end
  end
end

-- Calls that have left the window go, and their tokens with them.
local gone = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', horizon)
if #gone > 0 then
  local freed = tokens_of(gone)
  redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', horizon)
  if count == 0 then
    redis.call('DEL', KEYS[3])  -- an empty window starts again from an exact zero
  elseif freed > 0 then
    each_slice(gone, function(...) redis.call('HDEL', KEYS[3], ...) end)
    redis.call('HINCRBY', KEYS[3], TOTAL, -freed)
  end
end

if policy.tpm > 0 then
  local used = count > 0 and tonumber(redis.call('HGET', KEYS[3], TOTAL)) or 0
  -- A call bigger than the whole budget can only ever go into an empty window.
  local excess = used + math.min(tokens, policy.tpm) - policy.tpm
  if excess > 0 then
    local calls = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
    for i = 1, #calls, 2 do
      excess = excess - (tonumber(redis.call('HGET', KEYS[3], calls[i])) or 0)
      if excess <= 0 then
        return deny('tokens', tonumber(calls[i + 1]) + WINDOW - now)
      end
    end
    return deny('tokens', WINDOW)
  end
end

-- Leases that lapsed belong to workers that died or hung: their slots come back.
redis.call('ZREMRANGEBYSCORE', KEYS[4], '-inf', now)
-- A provider that has begun failing gets no more calls at once than could still open the
-- breaker: an outage costs it the threshold's calls, not the threshold plus all in flight.
local slots = policy.max_in_flight
if state.breaker == 'closed' and state.failures > 0 then
  slots = math.min(slots, math.max(1, policy.failure_threshold - state.failures))
end
if redis.call('ZCARD', KEYS[4]) >= slots then
  -- A slot frees when a holder releases (unknown) or at the latest when a lease lapses.
  local first = redis.call('ZRANGE', KEYS[4], 0, 0, 'WITHSCORES')
  return deny('in_flight', math.min(RECHECK, tonumber(first[2]) - now))
end

-- The lease id carries the call's reservation and the UTC day it was charged to.
local reserved_on = 0
if reserve > 0 then
  spend = spend or load_spend()
  charge(spend, reserve, spend.day, spend.month)
  reserved_on = spend.day
end
local lease = table.concat({ARGV[OP], state.epoch, probe, int(reserve), reserved_on, holder}, ':')
redis.call('ZADD', KEYS[2], now, lease)
redis.call('PEXPIRE', KEYS[2], WINDOW)  -- nothing in it outlives the newest call's window
if tokens > 0 then
  redis.call('HSET', KEYS[3], lease, tokens)
  redis.call('HINCRBY', KEYS[3], TOTAL, tokens)
  redis.call('PEXPIRE', KEYS[3], WINDOW)
end
-- The lease sets need no expiry: releases and purges empty them, and Redis drops an empty set.
redis.call('ZADD', KEYS[4], now + LEASE, lease)
if probe == 1 then
  redis.call('ZADD', KEYS[5], now + LEASE, lease)
end
return {1, lease, 0, policy.revision}
