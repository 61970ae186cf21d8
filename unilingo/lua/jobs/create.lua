-- A new job: its record, its upload, its place in the owner's index, its idempotency key and
-- its queue message, all at once. Answers {0, existing id} for a repeated Idempotency-Key.
-- KEYS: job, user_jobs, idem (or ''), queue list, input key (or ''), queue's fairness hash,
--       queue's tag index, queue's messages
-- ARGV: job_id, created_at, ttl, index_size, message, input bytes, fair-share weight (0: first
--       come, first served), owner, fairness state ttl, priority offset (unilingo.fairness), then
--       field/value pairs
if KEYS[3] ~= '' then
  local existing = redis.call('GET', KEYS[3])
  if existing then return {0, existing} end
end
redis.call('HSET', KEYS[1], unpack(ARGV, 11))
redis.call('HSET', KEYS[1], 'message', ARGV[5])
redis.call('EXPIRE', KEYS[1], ARGV[3])
if KEYS[5] ~= '' then redis.call('SET', KEYS[5], ARGV[6], 'EX', ARGV[3]) end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('ZREMRANGEBYRANK', KEYS[2], 0, -1 - tonumber(ARGV[4]))
redis.call('EXPIRE', KEYS[2], ARGV[3])
if KEYS[3] ~= '' then redis.call('SET', KEYS[3], ARGV[1], 'EX', 86400) end
local weight = tonumber(ARGV[7])
if weight > 0 then
  -- Its place: its owner's turn, later by its priority's offset (the owner's turns do not move).
  local offset = tonumber(ARGV[10])
  local tag = fair_tag(KEYS[6], ARGV[8], weight) + offset
  redis.call('HSET', KEYS[1], 'fair_tag', tag, 'fair_offset', offset)
  fair_push(KEYS[4], KEYS[7], KEYS[8], ARGV[1], ARGV[5], tag)
  redis.call('EXPIRE', KEYS[6], ARGV[9])
  redis.call('EXPIRE', KEYS[7], ARGV[9])
  redis.call('EXPIRE', KEYS[8], ARGV[9])
else
  redis.call('LPUSH', KEYS[4], ARGV[5])
end
return {1, ARGV[1]}
