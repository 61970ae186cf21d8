-- ARGV from OP: lease id. Reply: 1 if the lease was live and now runs LEASE ms from now.
local lease = ARGV[OP]
local expiry = tonumber(redis.call('ZSCORE', KEYS[4], lease))
if not expiry or expiry <= now then
  return 0  -- lapsed: its slot is already free for others
end
local renewed = math.max(expiry, now + LEASE)
redis.call('ZADD', KEYS[4], 'XX', renewed, lease)
redis.call('ZADD', KEYS[5], 'XX', renewed, lease)  -- a probe stays a probe
return 1
