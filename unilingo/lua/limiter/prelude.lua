-- The limiter's calling convention, shared by every limiter script (unilingo.limiter), which
-- defines POLICY_FIELDS (the policy's flat fields, in LIMITER_FIELDS order) before it:
--   KEYS  1 policy, 2 window, 3 window_tokens, 4 in_flight, 5 probes, 6 state, 7 spend, 8 learned
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
    -- Adaptive: never more than the provider says the account allows, never more than the
    -- policy (0 in the policy: not metered, so any stated figure is lower).
    if loaded_policy.adaptive == 1 then
      local learned = redis.call('HMGET', KEYS[8], 'rpm', 'tpm')
      for i, name in ipairs({'rpm', 'tpm'}) do
        local figure = tonumber(learned[i]) or 0
        if figure > 0 and (loaded_policy[name] == 0 or figure < loaded_policy[name]) then
          loaded_policy[name] = figure
        end
      end
      if loaded_policy.rpm > 0 and loaded_policy.burst > loaded_policy.rpm then
        loaded_policy.burst = loaded_policy.rpm
      end
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

-- Spend per UTC day and calendar month. Days count from the epoch; a month is year*12 + month - 1
-- (days_from_civil and civil_from_days: Howard Hinnant's date algorithms).
local DAY = 86400000
local function days_from_civil(y, m, d)
  if m <= 2 then y = y - 1 end
  local era = math.floor(y / 400)
  local yoe = y - era * 400
  local doy = math.floor((153 * (m > 2 and m - 3 or m + 9) + 2) / 5) + d - 1
  return era * 146097 + yoe * 365 + math.floor(yoe / 4) - math.floor(yoe / 100) + doy - 719468
end
local function civil_from_days(days)
  local z = days + 719468
  local era = math.floor(z / 146097)
  local doe = z - era * 146097
  local yoe = math.floor((doe - math.floor(doe / 1460) + math.floor(doe / 36524) - math.floor(doe / 146096)) / 365)
  local doy = doe - (365 * yoe + math.floor(yoe / 4) - math.floor(yoe / 100))
  local mp = math.floor((5 * doy + 2) / 153)
  local m = mp < 10 and mp + 3 or mp - 9
  return yoe + era * 400 + (m <= 2 and 1 or 0), m
end

-- Large integers as exact decimal text (Redis would format a Lua number with 14 digits).
local function int(x) return string.format('%.0f', x) end

local function load_spend()
  local s = redis.call('HMGET', KEYS[7], 'day', 'day_nusd', 'month', 'month_nusd')
  local day = math.floor(now / DAY)
  local y, m = civil_from_days(day)
  local spend = {day = day, month = y * 12 + m - 1, day_ends = (day + 1) * DAY,
                 month_ends = days_from_civil(m == 12 and y + 1 or y, m == 12 and 1 or m + 1, 1) * DAY}
  spend.day_nusd = tonumber(s[1]) == spend.day and (tonumber(s[2]) or 0) or 0
  spend.month_nusd = tonumber(s[3]) == spend.month and (tonumber(s[4]) or 0) or 0
  return spend
end

-- Add nusd (negative: a refund) to the periods it was charged in that are still current.
local function charge(spend, nusd, day, month)
  if nusd == 0 then return end
  local fields = {}
  if day == spend.day then
    spend.day_nusd = math.max(0, spend.day_nusd + nusd)
    table.insert(fields, 'day'); table.insert(fields, spend.day)
    table.insert(fields, 'day_nusd'); table.insert(fields, int(spend.day_nusd))
  end
  if month == spend.month then
    spend.month_nusd = math.max(0, spend.month_nusd + nusd)
    table.insert(fields, 'month'); table.insert(fields, spend.month)
    table.insert(fields, 'month_nusd'); table.insert(fields, int(spend.month_nusd))
  end
  if #fields > 0 then
    redis.call('HSET', KEYS[7], unpack(fields))
    redis.call('PEXPIRE', KEYS[7], spend.month_ends - now + DAY)  -- kept for its month, and a day
  end
end

-- The tokens charged to these calls.
local function tokens_of(calls)
  local sum = 0
  each_slice(calls, function(...)
    for _, spent in ipairs(redis.call('HMGET', KEYS[3], ...)) do sum = sum + (tonumber(spent) or 0) end
  end)
  return sum
end
