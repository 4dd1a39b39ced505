-- DNS query logger: sends the name of every DNS query (UDP, IPv4) to a
-- userspace collector over the data channel. It never matches.
--
--   nfluactl execute dns -e 'collector = 5353'    (the collector's port id)
--   nfluactl execute dns examples/dns-logger/filter.lua
--   nfluactl hook add --queue 0 --state dns --function filter --rule "-p udp --dport 53"

collector = collector or 0

-- Query name of the first question: labels after the 12-byte DNS header.
local function qname(packet)
  local at = (packet[1] & 0x0F) * 4 + 8 + 12 + 1 -- 1-based index of the first label length
  local labels = {}
  for _ = 1, 127 do
    local len = packet[at]
    if not len then return nil end -- truncated
    if len == 0 then return table.concat(labels, ".") end
    if len >= 0xC0 then return nil end -- no compression in a question
    local label = packet:segment(at, len) -- 0-based offset `at` is the byte after the length
    if not label then return nil end
    labels[#labels + 1] = tostring(label)
    at = at + len + 1
  end
end

function filter(frame, packet)
  if collector ~= 0 and packet[1] >> 4 == 4 then
    local name = qname(packet)
    if name and #name > 0 then
      nf.netlink(collector, 0, name)
    end
  end
  return false
end
