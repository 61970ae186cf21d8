-- Settles a claimed attempt: 'done' removes it, 'retry' schedules it at ARGV[4], 'dead' moves
-- it to the dead-letter list. Refused (0) when someone else claimed it since.
-- KEYS: outbox, delivery hash, dead list. ARGV: id, attempt, outcome, due, error, dead entry, keep
if redis.call('HGET', KEYS[2], 'attempts') ~= ARGV[2] then return 0 end
if ARGV[3] == 'retry' then
  redis.call('HSET', KEYS[2], 'last_error', ARGV[5])
  redis.call('ZADD', KEYS[1], ARGV[4], ARGV[1])
  return 1
end
redis.call('ZREM', KEYS[1], ARGV[1])
redis.call('DEL', KEYS[2])
if ARGV[3] == 'dead' then
  redis.call('LPUSH', KEYS[3], ARGV[6])
  redis.call('LTRIM', KEYS[3], 0, tonumber(ARGV[7]) - 1)
end
return 1
