-- HTTP host blocklist: requests for a blocked host get a block page (sent
-- with nf.reply) and are dropped; everything else continues.
--
-- Per packet, on the TCP payload:
--   nfluactl hook add --queue 0 --state blocklist --function filter --mode target --tcp-payload
-- Or on the reassembled connection, so a Host header split across segments
-- is still read (the request's packets wait until the head is complete):
--   nfluactl hook add --queue 0 --state blocklist --function filter --mode target --stream
-- Manage the list over the data channel:
--   nfluactl send blocklist "add example.com"   (answers with the whole list)
--   nfluactl send blocklist "del example.com"

local blocked = {}
local page = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n" ..
             "Content-Length: %d\r\nConnection: close\r\n\r\n%s"

function filter(frame, payload)
  local request, why = dissect.http(payload)
  -- A stream hook's connection (nf.flow() is nil in a packet hook) must be
  -- decided, or its packets wait: "accept" once the request head is read or
  -- the bytes are not HTTP; nothing while it needs more.
  local stream = nf.flow() ~= nil
  if not request then
    if stream and why ~= "need more" then return "accept" end
    return
  end
  local host = request.host and request.host:lower():gsub(":%d+$", "")
  if host and blocked[host] then
    local body = "blocked by nflua: " .. host .. "\n"
    nf.reply("tcp", page:format(#body, body))
    return "drop"
  end
  if stream then return "accept" end
  -- any other answer: continue with the next rule
end

function __receive_callback(pid, buffer)
  local cmd, host = tostring(buffer):match("^(%a+)%s*(%S*)$")
  if cmd == "add" and host ~= "" then
    blocked[host:lower()] = true
  elseif cmd == "del" and host ~= "" then
    blocked[host:lower()] = nil
  elseif cmd ~= "list" then
    error("expected 'add HOST', 'del HOST' or 'list'")
  end
  local names = {}
  for name in pairs(blocked) do names[#names + 1] = name end
  table.sort(names)
  nf.netlink(pid, 0, table.concat(names, " "))
end
