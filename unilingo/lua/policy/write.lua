-- A provider's policy under the next revision, announced on the change channel after the write.
-- The hash is replaced whole so that no field of an older revision survives. The revision
-- counter is first raised to the floor the caller knows of (revisions it has seen reported),
-- so that a counter that went back (a flushed Redis) never hands out a revision again.
-- KEYS: policy hash, revision counter
-- ARGV: channel, provider, document, digest, revision floor, then the limiter's flat fields as
--       name/value pairs
local floor = tonumber(ARGV[5])
if floor > 0 and tonumber(redis.call('GET', KEYS[2]) or '0') < floor then
  redis.call('SET', KEYS[2], floor)
end
local revision = redis.call('INCR', KEYS[2])
local t = redis.call('TIME')
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], 'revision', revision, 'doc', ARGV[3], 'digest', ARGV[4],
           'updated_ms', t[1] * 1000 + math.floor(t[2] / 1000), unpack(ARGV, 6))
redis.call('PUBLISH', ARGV[1], cjson.encode({provider = ARGV[2], revision = revision}))
return revision
