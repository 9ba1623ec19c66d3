-- A user's counts per path over the slices of their window that end after now - window.
-- KEYS[1]: the user's usage key (see usage_record.lua). ARGV[1]: slices per window.
-- Reply: a flat list path, count, path, count ... (a path may repeat across slices).
local window = redis.call('GET', KEYS[1])
if not window then
  return {}
end
window = tonumber(window)
local slices = tonumber(ARGV[1])
local time = redis.call('TIME')
local now_ms = tonumber(time[1]) * 1000 + math.floor(tonumber(time[2]) / 1000)
local current = math.floor(now_ms / (window / slices))
local reply = {}
for index = current - slices + 1, current do
  local fields = redis.call('HGETALL', KEYS[1] .. ':' .. string.format('%d', index))
  for i = 1, #fields do
    reply[#reply + 1] = fields[i]
  end
end
return reply
