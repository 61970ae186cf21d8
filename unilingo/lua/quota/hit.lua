-- One request counted against one or more client quotas (sliding-window logs).
-- KEYS: one log per quota the request counts against (usually one; an AI route has two: the
-- address's and the user's). ARGV: now ms (-1: Redis TIME), then each quota's limit and
-- window ms. The request is recorded in every log or in none: a request refused by one
-- quota must not spend another. A hit at time t counts for [t, t + window). A hit's id is
-- Redis's clock to the microsecond and the log's count: unique without the caller sending any.
-- Reply, per quota: {had room 0/1, hits in its window (this one included if recorded),
-- ms until its oldest hit leaves, ms until it has room again (0 if it has room)}.

local now, stamp = tonumber(ARGV[1]), ARGV[1]
if now < 0 then
  local t = redis.call('TIME')
  now, stamp = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000), t[1] .. '.' .. t[2]
end

-- The n-th oldest (0-based) hit still in a log's window, as a time.
local function nth(key, since, n)
  return tonumber(redis.call('ZRANGE', key, since, '+inf', 'BYSCORE', 'LIMIT', n, 1, 'WITHSCORES')[2])
end

-- Count first, without writing: a refusal (the hot path of a client that hammers) then costs
-- a count and one lookup, and expired hits are only cleared when a new one is written.
local used, admit = {}, true
for i, key in ipairs(KEYS) do
  used[i] = redis.call('ZCOUNT', key, '(' .. (now - tonumber(ARGV[2 * i + 1])), '+inf')
  if used[i] >= tonumber(ARGV[2 * i]) then admit = false end
end

local replies = {}
for i, key in ipairs(KEYS) do
  local limit, window = tonumber(ARGV[2 * i]), tonumber(ARGV[2 * i + 1])
  local since = '(' .. (now - window)
  local room, retry, oldest = used[i] < limit, 0, nil
  if admit then
    redis.call('ZREMRANGEBYSCORE', key, '-inf', now - window)
    redis.call('ZADD', key, now, stamp .. ':' .. used[i])
    redis.call('PEXPIRE', key, window)
    used[i] = used[i] + 1
    oldest = used[i] == 1 and now or nth(key, since, 0)
  elseif not room then
    -- the hit that is one too many must leave first (a later one if the limit was lowered)
    local n = used[i] - limit
    local blocking = nth(key, since, n)
    retry = blocking + window - now
    oldest = n == 0 and blocking or nth(key, since, 0)
  elseif used[i] > 0 then
    oldest = nth(key, since, 0)
  end
  replies[i] = {room and 1 or 0, used[i], oldest and (oldest + window - now) or 0, retry}
end
return replies
