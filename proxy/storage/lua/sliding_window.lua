-- One rate-limit decision, atomic across every replica sharing this Redis.
-- KEYS[1]: a counter that makes set members unique; KEYS[1 + i]: the sorted set of rule i,
--   its members admitted requests, their scores the admission time in microseconds. In a
--   Redis Cluster all of them carry the same hash tag (one slot), so this stays one call.
-- ARGV[3i - 2], ARGV[3i - 1], ARGV[3i]: limit, window (microseconds), shadow ("1" or "0").
-- ARGV[3n + 1], optional: the time in microseconds. Replicas leave it out and Redis TIME
--   is the clock, so their clocks do not matter; tests pass it to replay a sequence.
-- Reply: ONE string "admitted now_us count_1 oldest_1 count_2 oldest_2 ..." (one string
--   parses in a fraction of the client CPU a nested array costs): admitted is 1 or 0,
--   count_i the number in the window BEFORE this request, oldest_i the oldest score AFTER
--   it (-1 for an empty set). Large numbers go through string.format('%d') so they are
--   never written in exponent form.
-- The counter expires with the longest window it served (only ever extended), so it
-- outlives every set whose members it numbered: a restarted count never reuses a member.
local rules = #KEYS - 1
local now
if #ARGV > 3 * rules then
  now = tonumber(ARGV[3 * rules + 1])
else
  local time = redis.call('TIME')
  now = tonumber(time[1]) * 1000000 + tonumber(time[2])
end
local now_text = string.format('%d', now)
local counts = {}
local admitted = 1

for i = 1, rules do
  local key = KEYS[i + 1]
  local window = tonumber(ARGV[3 * i - 1])
  redis.call('ZREMRANGEBYSCORE', key, '-inf', string.format('%d', now - window))
  local count = redis.call('ZCARD', key)
  counts[i] = count
  if count >= tonumber(ARGV[3 * i - 2]) and ARGV[3 * i] == '0' then
    admitted = 0
  end
end

local member
if admitted == 1 then
  member = string.format('%d', redis.call('INCR', KEYS[1]))
  local longest = 0
  for i = 1, rules do
    longest = math.max(longest, math.ceil(tonumber(ARGV[3 * i - 1]) / 1000))
  end
  if redis.call('PTTL', KEYS[1]) < longest then
    redis.call('PEXPIRE', KEYS[1], string.format('%d', longest))
  end
end

local reply = {admitted, now_text}
for i = 1, rules do
  local key = KEYS[i + 1]
  if admitted == 1 then
    local limit = tonumber(ARGV[3 * i - 2])
    redis.call('ZADD', key, now_text, member)
    if counts[i] >= limit then
      -- a shadow rule overrun by real traffic: keep the newest `limit`, as memory does
      redis.call('ZREMRANGEBYRANK', key, 0, string.format('%d', -limit - 1))
    end
    redis.call('PEXPIRE', key, string.format('%d', math.ceil(tonumber(ARGV[3 * i - 1]) / 1000)))
  end
  local oldest = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  reply[2 * i + 1] = counts[i]
  reply[2 * i + 2] = oldest[2] or '-1'
end
return table.concat(reply, ' ')
