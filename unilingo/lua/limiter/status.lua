-- Read-only. Reply: {revision, document or nil, now, requests in window, tokens in window,
-- in flight, probes in flight, breaker state, failures, opened_at or -1, trips, paused until,
-- the UTC day's spend, when the day ends, the month's spend, when the month ends, then the
-- learned hash's fields (LEARNED_FIELDS order)}.
local policy = live_policy()
local state = load_state()
local spend = load_spend()
local horizon = now - WINDOW
local tokens = (tonumber(redis.call('HGET', KEYS[3], TOTAL)) or 0)
               - tokens_of(redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', horizon))
local reply = {
  policy.revision, redis.call('HGET', KEYS[1], 'doc'), now,
  redis.call('ZCOUNT', KEYS[2], '(' .. horizon, '+inf'), tokens,
  redis.call('ZCOUNT', KEYS[4], '(' .. now, '+inf'), redis.call('ZCOUNT', KEYS[5], '(' .. now, '+inf'),
  state.breaker, state.failures, state.opened_at or -1, state.trips, state.paused_until,
  int(spend.day_nusd), spend.day_ends, int(spend.month_nusd), spend.month_ends,
}
for _, value in ipairs(redis.call('HMGET', KEYS[8], unpack(LEARNED_FIELDS))) do
  table.insert(reply, value)
end
return reply
