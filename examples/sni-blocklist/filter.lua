-- TLS server-name blocklist, as a stream hook: the client's ClientHello is
-- read whole even when it spans many segments (a small MSS, a large
-- post-quantum key share); a blocked name (or any name under it) drops the
-- connection before the server sees the hello.
--
--   nfluactl hook add --queue 0 --state sni --function filter --mode target --stream \
--       --rule "-p tcp --dport 443"
-- Manage the list over the data channel:
--   nfluactl send sni "add example.com"   (answers with the whole list)
--   nfluactl send sni "del example.com"

local blocked = {}

-- example.com blocks example.com and www.example.com, not badexample.com.
local function is_blocked(name)
  while name do
    if blocked[name] then return true end
    name = name:match("^[^.]*%.(.+)$")
  end
  return false
end

function filter(frame, stream)
  local flow = nf.flow()
  if not flow then
    error("sni-blocklist needs a stream hook (hook add ... --stream)")
  end
  -- The server speaks second; its bytes say nothing about the name asked for.
  if flow.direction ~= "original" then return end
  local hello, why = dissect.tls(stream)
  if not hello then
    if why == "need more" then return end   -- wait for the rest of the hello
    return "accept"                         -- not TLS: not this filter's business
  end
  if hello.sni and is_blocked(hello.sni:lower()) then
    return "drop"
  end
  return "accept"
end

function __receive_callback(pid, buffer)
  local cmd, name = tostring(buffer):match("^(%a+)%s*(%S*)$")
  if cmd == "add" and name ~= "" then
    blocked[name:lower()] = true
  elseif cmd == "del" and name ~= "" then
    blocked[name:lower()] = nil
  elseif cmd ~= "list" then
    error("expected 'add NAME', 'del NAME' or 'list'")
  end
  local names = {}
  for n in pairs(blocked) do names[#names + 1] = n end
  table.sort(names)
  nf.netlink(pid, 0, table.concat(names, " "))
end
