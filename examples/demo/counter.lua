-- Counts the words it is sent and answers each with the running count.
-- Loaded with: nfluactl execute counter examples/demo/counter.lua
local json = require "json"
local counts = {}

function __receive_callback(pid, buffer)
  local word = tostring(buffer)
  assert(#word > 0, "empty word")
  counts[word] = (counts[word] or 0) + 1
  nf.netlink(pid, 0, json.encode({word = word, count = counts[word]}))
end

print("counter loaded")
