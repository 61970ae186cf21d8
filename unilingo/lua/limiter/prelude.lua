-- The limiter's calling convention, shared by every limiter script (unilingo.limiter), which
-- defines POLICY_FIELDS (the policy's flat fields, in LIMITER_FIELDS order) before it:
--   KEYS  1 policy, 2 window, 3 window_tokens, 4 in_flight, 5 probes, 6 state
--   ARGV  1 now in ms (-1: use Redis TIME), 2 window ms, 3 lease ms, 4 recheck ms,
--         5.. the provider's default policy fields (POLICY_FIELDS order), then from OP on
--         the script's own arguments.
-- Times are integer milliseconds: they survive Lua's number-to-reply conversion exactly.
-- Every command a script runs costs server time on every decision, so each is there for a
-- reason and none is repeated.

local DEFAULTS_AT = 5
local OP = DEFAULTS_AT + #POLICY_FIELDS
local TOTAL = '__total__'

local now = tonumber(ARGV[1])
if now < 0 then
  local t = redis.call('TIME')
  now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local WINDOW = tonumber(ARGV[2])
local LEASE = tonumber(ARGV[3])
local RECHECK = tonumber(ARGV[4])

-- The live policy: the stored revision's flat fields, or the defaults when none was
-- ever written (or when an older document lacks a newer field). Read once, when first needed.
local loaded_policy
local function live_policy()
  if not loaded_policy then
    local stored = redis.call('HMGET', KEYS[1], 'revision', unpack(POLICY_FIELDS))
    loaded_policy = {revision = tonumber(stored[1]) or 0}
    for i, name in ipairs(POLICY_FIELDS) do
      loaded_policy[name] = tonumber(stored[i + 1] or ARGV[DEFAULTS_AT + i - 1])
    end
  end
  return loaded_policy
end

-- The shared state: the breaker and the pause. The breaker's state follows from when it
-- opened and the open time in force now, so a new revision's openSeconds also applies to a
-- breaker that is already open.
local function load_state()
  local s = redis.call('HMGET', KEYS[6], 'failures', 'opened_at', 'epoch', 'probe_successes', 'trips', 'paused_until')
  local state = {
    failures = tonumber(s[1]) or 0, opened_at = tonumber(s[2]), epoch = tonumber(s[3]) or 0,
    probe_successes = tonumber(s[4]) or 0, trips = tonumber(s[5]) or 0, paused_until = tonumber(s[6]) or 0,
  }
  if not state.opened_at then
    state.breaker = 'closed'
  elseif now < state.opened_at + live_policy().open_ms then
    state.breaker = 'open'
  else
    state.breaker = 'half_open'
  end
  return state
end

-- Each transition starts a new epoch: outcomes of calls admitted under an earlier one are
-- stale and no longer move the breaker.
local function open_breaker(state)
  redis.call('HSET', KEYS[6], 'failures', 0, 'opened_at', now, 'epoch', state.epoch + 1, 'probe_successes', 0,
             'trips', state.trips + 1)
  redis.call('DEL', KEYS[5])
end

local function close_breaker(state)
  redis.call('HSET', KEYS[6], 'failures', 0, 'epoch', state.epoch + 1, 'probe_successes', 0)
  redis.call('HDEL', KEYS[6], 'opened_at')
  redis.call('DEL', KEYS[5])
end

-- unpack() is bounded by Lua's C stack; long lists go in slices.
local function each_slice(list, fn)
  for i = 1, #list, 1000 do fn(unpack(list, i, math.min(i + 999, #list))) end
end

-- The tokens charged to these calls.
local function tokens_of(calls)
  local sum = 0
  each_slice(calls, function(...)
    for _, spent in ipairs(redis.call('HMGET', KEYS[3], ...)) do sum = sum + (tonumber(spent) or 0) end
  end)
  return sum
end
