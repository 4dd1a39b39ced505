-- HTTP host blocklist: requests for a blocked host get a block page (sent
-- with nf.reply) and are dropped; everything else continues.
--
-- Hook it in target mode on the TCP payload:
--   nfluactl hook add --queue 0 --state blocklist --function filter --mode target --tcp-payload
-- Manage the list over the data channel:
--   nfluactl send blocklist "add example.com"   (answers with the whole list)
--   nfluactl send blocklist "del example.com"

local blocked = {}
local page = "HTTP/1.1 403 Forbidden\r\nContent-Type: text/plain\r\n" ..
             "Content-Length: %d\r\nConnection: close\r\n\r\n%s"

local function host_of(request)
  local host = request:match("\r\n[Hh][Oo][Ss][Tt]:[ \t]*([^\r\n:]+)")
  return host and host:lower()
end

function filter(frame, payload)
  local host = host_of(tostring(payload))
  if host and blocked[host] then
    local body = "blocked by nflua: " .. host .. "\n"
    nf.reply("tcp", page:format(#body, body))
    return "drop"
  end
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
