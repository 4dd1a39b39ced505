-- Runs inside an nflua state. Keeps a block list of IPv4 addresses that userspace manages over
-- the data channel, and offers `filter` for a packet hook (match mode) that matches packets
-- whose source address is blocked.
--
-- Commands (one per DATA message), each answered with one message to the sender:
--   block <addr>    -> "blocked <addr>"
--   unblock <addr>  -> "unblocked <addr>" or "not blocked <addr>"
--   check <addr>    -> "<addr> is blocked" or "<addr> is allowed"
--   count           -> "<n> blocked"

local nf = require "nf"

local blocked, count = {}, 0

local function valid(addr)
	local a, b, c, d = (addr or ""):match("^(%d+)%.(%d+)%.(%d+)%.(%d+)$")
	for _, octet in ipairs{a, b, c, d} do
		if tonumber(octet) > 255 then return false end
	end
	return a ~= nil
end

local commands = {}

function commands.block(addr)
	if not blocked[addr] then
		blocked[addr], count = true, count + 1
	end
	return "blocked " .. addr
end

function commands.unblock(addr)
	if not blocked[addr] then return "not blocked " .. addr end
	blocked[addr], count = nil, count - 1
	return "unblocked " .. addr
end

function commands.check(addr)
	return addr .. (blocked[addr] and " is blocked" or " is allowed")
end

function __receive_callback(pid, buffer)
	local verb, addr = tostring(buffer):match("^(%a+)%s*(%S*)$")
	local reply
	if verb == "count" then
		reply = count .. " blocked"
	elseif commands[verb] and valid(addr) then
		reply = commands[verb](addr)
	else
		reply = "error: bad command '" .. tostring(buffer) .. "'"
	end
	nf.netlink(pid, 0, reply)
end

-- Packet hook: `frame` starts with a 14-byte Ethernet header, so the IPv4 source address
-- (offset 12 of the IP header) is at frame offsets 26..29, i.e. frame[27]..frame[30].
function filter(frame)
	if #frame < 34 or frame[15] >> 4 ~= 4 then return false end
	local addr = string.format("%d.%d.%d.%d", frame[27], frame[28], frame[29], frame[30])
	return blocked[addr] == true
end
