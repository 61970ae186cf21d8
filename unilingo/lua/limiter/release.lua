-- A permit given back, with the call's outcome: the breaker, the pause and the token charge.
-- ARGV from OP: lease id, outcome (unilingo.outcomes.CallOutcome: success, throttled, error,
-- rejected, aborted), actual tokens (-1: not reported), Retry-After ms (-1: none), refund unused
-- tokens 0/1, ms between grant and the call leaving the worker, input tokens and output tokens
-- reported (-1: not reported).
-- Reply: {lease was live 0/1, breaker state after, the failure counts against the job 0/1,
--        ms until the provider is worth trying again}.
local lease, outcome = ARGV[OP], ARGV[OP + 1]
local actual, retry_ms, refund = tonumber(ARGV[OP + 2]), tonumber(ARGV[OP + 3]), ARGV[OP + 4] == '1'
local sent_after = tonumber(ARGV[OP + 5])
local input_tokens, output_tokens = tonumber(ARGV[OP + 6]), tonumber(ARGV[OP + 7])
local epoch, probe, reserved, reserved_on = string.match(lease, '^[^:]*:(%d+):(%d):(%d+):(%d+):')
reserved, reserved_on = tonumber(reserved), tonumber(reserved_on)

-- The provider's minute began when the call reached it, not when it was granted: a worker
-- that stalled in between (a cold client, a descheduled process) must not let the window
-- free the call's place early. Never later than now.
if sent_after > 0 then
  local granted = tonumber(redis.call('ZSCORE', KEYS[2], lease))
  if granted then
    redis.call('ZADD', KEYS[2], 'XX', math.min(granted + sent_after, now), lease)
    redis.call('PEXPIRE', KEYS[2], WINDOW)
    if redis.call('HEXISTS', KEYS[3], lease) == 1 then
      redis.call('PEXPIRE', KEYS[3], WINDOW)
    end
  end
end

local expiry = tonumber(redis.call('ZSCORE', KEYS[4], lease))
if expiry then
  redis.call('ZREM', KEYS[4], lease)
end
if probe == '1' then
  redis.call('ZREM', KEYS[5], lease)
end

-- Reconcile the estimate with what the provider reported, while the call is in the window
-- (a call charged tokens is in the window while its charge is; one charged none, if its
-- entry still is).
if actual >= 0 then
  local charged = tonumber(redis.call('HGET', KEYS[3], lease))
  if charged or (actual > 0 and redis.call('ZSCORE', KEYS[2], lease)) then
    charged = charged or 0
    local charge = refund and actual or math.max(charged, actual)
    if charge ~= charged then
      redis.call('HSET', KEYS[3], lease, charge)
      redis.call('HINCRBY', KEYS[3], TOTAL, charge - charged)
      redis.call('PEXPIRE', KEYS[3], WINDOW)
    end
  end
end

-- Spend: the reported usage at the live prices replaces the reservation; nothing reported,
-- nothing billed. Only once per lease: a release of a lease already gone changes nothing.
if expiry and (reserved > 0 or input_tokens > 0 or output_tokens > 0) then
  local policy = live_policy()
  local cost = 0
  if input_tokens >= 0 or output_tokens >= 0 then
    cost = math.floor((math.max(0, input_tokens) * policy.price_in_nusd_1k
                       + math.max(0, output_tokens) * policy.price_out_nusd_1k) / 1000 + 0.5)
  end
  local spend = load_spend()
  if reserved > 0 then
    local y, m = civil_from_days(reserved_on)
    charge(spend, cost - reserved, reserved_on, y * 12 + m - 1)
  else
    charge(spend, cost, spend.day, spend.month)
  end
end

local state = load_state()
-- Only a provider's 429 or its failure says it is unwell; bad input and our own errors
-- (rejected, aborted) say nothing of its health and count as a healthy answer.
local unwell = outcome == 'throttled' or outcome == 'error'

-- A provider's Retry-After holds for everyone; without one, the policy's first backoff.
if outcome == 'throttled' then
  local paused_until = now + (retry_ms >= 0 and retry_ms or live_policy().pause_ms)
  if paused_until > state.paused_until then
    redis.call('HSET', KEYS[6], 'paused_until', paused_until)
  end
end

-- The breaker moves only on outcomes of calls admitted in its current epoch. A refusal by
-- the provider (throttled) counts as a failure: Retry-After answers one 429, the breaker
-- answers a provider that keeps refusing.
local breaker = state.breaker
-- A failure is the job's own only when the provider was healthy: breaker closed, the call
-- admitted under it, and the provider's previous answer a success. Otherwise the provider is
-- failing for everyone, and the job waits for it without spending an attempt.
local counts = (outcome == 'error' and breaker == 'closed' and tonumber(epoch) == state.epoch
                and probe == '0' and state.failures == 0) and 1 or 0
if tonumber(epoch) == state.epoch then
  if not unwell then
    if probe == '1' then
      if state.probe_successes + 1 >= live_policy().half_open_probes then
        close_breaker(state)
        breaker = 'closed'
      else
        redis.call('HINCRBY', KEYS[6], 'probe_successes', 1)
      end
    elseif state.failures > 0 then
      redis.call('HSET', KEYS[6], 'failures', 0)
    end
  elseif probe == '1' or redis.call('HINCRBY', KEYS[6], 'failures', 1) >= live_policy().failure_threshold then
    open_breaker(state)
    breaker = 'open'
    state.opened_at = now
  end
end
local wait_ms = live_policy().pause_ms
if breaker == 'open' then
  wait_ms = math.max(1, state.opened_at + live_policy().open_ms - now)
end
return {(expiry and expiry > now) and 1 or 0, breaker, counts, wait_ms}
