-- Queued jobs whose message left the list without the job being claimed: a consumer that died
-- between popping the message and recording it (kombu's Redis transport does the two apart).
-- The queue's tag index names the jobs whose message should be in the list; the lowest tags
-- are the ones popped first (the caller read them). Such a job, queued for over the grace
-- period and no longer in the list, is queued again with its turn. A message still held by a
-- live worker is delivered twice at worst, and the claim lets only one run through. Index
-- entries of jobs no longer queued go.
-- KEYS: queue list, queue's tag index, queue's messages, then the jobs (in ARGV order)
-- ARGV: now, grace seconds, then the job ids
local moved = 0
for i = 3, #ARGV do
  local id, job = ARGV[i], KEYS[i + 1]
  if redis.call('ZSCORE', KEYS[2], id) then
    local f = redis.call('HMGET', job, 'status', 'message', 'updated_at', 'fair_tag')
    if f[1] ~= 'queued' or not f[2] then
      redis.call('ZREM', KEYS[2], id)
      redis.call('HDEL', KEYS[3], id)
    elseif tonumber(f[3] or '0') < tonumber(ARGV[1]) - tonumber(ARGV[2])
        and not redis.call('LPOS', KEYS[1], f[2]) then
      redis.call('ZREM', KEYS[2], id)
      fair_push(KEYS[1], KEYS[2], KEYS[3], id, f[2], tonumber(f[4] or '0'))
      moved = moved + 1
    end
  end
end
return moved
