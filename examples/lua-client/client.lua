-- A userspace program driving an nflua state: creates it, loads filter.lua into it, manages
-- its block list over the data channel, prints the answers, and destroys the state.
--
--   LUA_CPATH="crates/nflua-lua/target/lua/?.so;;" lua5.4 examples/lua-client/client.lua [state]

local nflua = require "nflua"
local data = require "data"

local here = arg and arg[0] and arg[0]:match("^(.*)/[^/]*$") or "."
local state = arg and arg[1] or "lua-client-example"

local function fail(what, msg, errno)
	io.stderr:write(string.format("client.lua: %s: %s (errno %s)\n", what, msg, errno))
	os.exit(1)
end

-- Sends one control command and waits for its complete reply.
local function command(control, name, ...)
	local ok, msg, errno = control[name](control, ...)
	if not ok then fail(name, msg, errno) end
	repeat
		ok, msg, errno = control:receive()
	until ok or msg ~= "pending"
	if not ok then fail(name, msg, errno) end
	return ok
end

local control = assert(nflua.control())
command(control, "create", state, 100000, 2 * nflua.defaultmaxallocbytes)

local file = assert(io.open(here .. "/filter.lua"))
local code = file:read("a")
file:close()
command(control, "execute", state, code, "@filter.lua")
print(string.format("loaded filter.lua into state '%s'", state))

local channel = assert(nflua.data())
local buffer = data.new(nflua.datamaxsize)
for _, message in ipairs{
	"block 192.0.2.7",
	"block 198.51.100.23",
	"check 192.0.2.7",
	"check 203.0.113.5",
	"unblock 198.51.100.23",
	"count",
	"block nowhere",
} do
	local ok, msg, errno = channel:send(state, message)
	if not ok then fail("send", msg, errno) end
	local len, from = channel:receive(buffer, 0)
	if not len then fail("receive", from, msg) end
	print(string.format("%-22s -> %s: %s", message, from, tostring(buffer:segment(0, len))))
end

for _, st in ipairs(command(control, "list")) do
	if st.name == state then
		print(string.format("state '%s' uses %d of %d bytes", st.name, st.curralloc, st.maxalloc))
	end
end

command(control, "destroy", state)
print(string.format("destroyed state '%s'", state))
channel:close()
control:close()
