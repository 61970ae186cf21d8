-- Progress of the current run; 0 (nothing written) when the run token is no longer the job's.
-- KEYS: job, events channel. ARGV: run_token, progress JSON, now
local f = redis.call('HMGET', KEYS[1], 'status', 'run_token')
if f[1] ~= 'running' or f[2] ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'progress', ARGV[2], 'updated_at', ARGV[3])
redis.call('PUBLISH', KEYS[2], 'progress')
return 1
