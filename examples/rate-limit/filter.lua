-- Per-source rate limiter: matches packets of a source that sent more than
-- `limit` packets in the current window; a timer starts a new window.
--
--   nfluactl execute ratelimit -e 'limit = 5; window_ms = 1000'   (optional, before loading)
--   nfluactl execute ratelimit examples/rate-limit/filter.lua
--   nfluactl hook add --queue 0 --state ratelimit --function filter --target DROP
-- Matched packets carry the MATCH mark; the printed mark rule drops them.

limit = limit or 10
window_ms = window_ms or 1000
local counts = {}

local function source(packet)
  if packet[1] >> 4 == 4 then
    return string.format("%d.%d.%d.%d", packet[13], packet[14], packet[15], packet[16])
  end
  return tostring(packet:segment(8, 16)) -- IPv6: the raw source address
end

local function new_window()
  counts = {}
  timer.create(window_ms, new_window)
end
new_window()

function filter(frame, packet)
  local src = source(packet)
  local n = (counts[src] or 0) + 1
  counts[src] = n
  return n > limit
end
