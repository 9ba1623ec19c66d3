-- Count forwarded requests of a user on one path, in the slice of their window it falls in.
-- KEYS[1]: the user's usage key; it holds their window (ms), each slice is a hash
--   KEYS[1]:INDEX of path -> count.
-- ARGV: path, window (ms), slices per window, most paths per slice, name of the rest,
--   how many requests.
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local window = tonumber(ARGV[2])
local width = window / tonumber(ARGV[3])
local slice = KEYS[1] .. ':' .. string.format('%d', math.floor(now_ms / width))
local ttl = string.format('%d', math.ceil(window + width))
local path = ARGV[1]
if redis.call('HEXISTS', slice, path) == 0 and redis.call('HLEN', slice) >= tonumber(ARGV[4]) then
  path = ARGV[5]
end
redis.call('HINCRBY', slice, path, tonumber(ARGV[6]))
redis.call('PEXPIRE', slice, ttl)
redis.call('SET', KEYS[1], ARGV[2], 'PX', ttl)
return 1
