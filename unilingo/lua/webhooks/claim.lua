-- Claims due deliveries: pushes each one's score to the claim's lease end (so another worker
-- only takes it again if this one dies mid-send) and counts the attempt; the attempt number
-- is the fencing token for settling it. The caller read the due ids; one another worker
-- claimed since (no longer due) is passed over, one whose delivery hash is gone leaves.
-- KEYS: outbox, then each delivery's hash (in ARGV order)
-- ARGV: now, lease_until, then the delivery ids
-- Reply: {id, job_id, url, attempt} per claimed delivery.
local out = {}
for i = 3, #ARGV do
  local id, h = ARGV[i], KEYS[i - 1]
  local score = tonumber(redis.call('ZSCORE', KEYS[1], id))
  if score and score <= tonumber(ARGV[1]) then
    local f = redis.call('HMGET', h, 'job_id', 'url')
    if f[1] and f[2] then
      redis.call('ZADD', KEYS[1], ARGV[2], id)
      local attempt = redis.call('HINCRBY', h, 'attempts', 1)
      table.insert(out, {id, f[1], f[2], attempt})
    else
      redis.call('ZREM', KEYS[1], id)
    end
  end
end
return out
