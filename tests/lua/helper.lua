-- Test harness for the Lua module: runs a real nfluad on the private port named by NFLUA_PORT
-- (the module finds its daemon the same way), and small helpers the specs share.
--
-- Environment (set by tests/lua/run.sh):
--   NFLUA_PORT      port id of the daemon under test (required; Lua cannot set it itself)
--   NFLUAD          path of the nfluad binary (default: <root>/target/debug/nfluad)
--   NFLUA_ROOT      repository root (default: derived from this file's path)
--   NFLUA_TEST_DIR  where daemon logs and pid files go (default: /tmp)

local nflua = require "nflua"
local system = require "system"

local helper = {}

local here = debug.getinfo(1, "S").source:match("^@(.*)/[^/]*$") or "tests/lua"
helper.root = os.getenv("NFLUA_ROOT") or (here .. "/../..")
helper.port = tonumber(os.getenv("NFLUA_PORT") or "")
assert(helper.port, "NFLUA_PORT is not set: run the suite with tests/lua/run.sh")
helper.nfluad = os.getenv("NFLUAD") or (helper.root .. "/target/debug/nfluad")
helper.dir = os.getenv("NFLUA_TEST_DIR") or "/tmp"
helper.log = string.format("%s/nfluad-%d.log", helper.dir, helper.port)
local pidfile = string.format("%s/nfluad-%d.pid", helper.dir, helper.port)

-- Errno values the specs expect (Linux).
helper.EPERM, helper.ENOENT, helper.EEXIST, helper.EINVAL = 1, 2, 17, 22
helper.EADDRINUSE, helper.ECONNREFUSED, helper.EMSGSIZE, helper.EPROTO = 98, 111, 90, 71
helper.ENOBUFS = 105

function helper.sleep(seconds)
	system.sleep(seconds)
end

-- Calls `f` until it returns a true value or `timeout` seconds pass; returns its results.
function helper.eventually(f, timeout)
	local deadline = system.monotime() + (timeout or 5)
	repeat
		local results = table.pack(f())
		if results[1] then return table.unpack(results, 1, results.n) end
		system.sleep(0.01)
	until system.monotime() > deadline
	return nil, "timed out"
end

-- Root is always allowed; anyone else must be named to the daemon (and, for replies to be
-- trusted, in NFLUA_DAEMON_UID, which run.sh sets).
local function uid()
	local f = assert(io.open("/proc/self/status"))
	local id = f:read("a"):match("\nUid:%s*(%d+)")
	f:close()
	return tonumber(id)
end

local function alive(pid)
	local f = io.open("/proc/" .. pid .. "/stat")
	if not f then return false end
	local stat = f:read("a")
	f:close()
	-- A zombie has exited; nobody may reap it quickly inside a container.
	return stat:match("^%d+ %b() (%a)") ~= "Z"
end

-- The pid of this Lua process (auto ports embed its low 16 bits).
function helper.getpid()
	local f = assert(io.open("/proc/self/stat"))
	local pid = tonumber(f:read("a"):match("^(%d+)"))
	f:close()
	return pid
end

-- True when the daemon answers a LIST.
local function answers()
	local c = nflua.control()
	if not c then return false end
	local ok = c:list() and c:receive()
	c:close()
	return ok and true or false
end

function helper.start()
	if helper.pid and alive(helper.pid) then return end
	local allow = uid() == 0 and "" or ("--allow-uid " .. uid())
	local cmd = string.format("exec %q --port %d %s --log warn >>%q 2>&1 & echo $! >%q",
		helper.nfluad, helper.port, allow, helper.log, pidfile)
	assert(os.execute(cmd), "cannot start " .. helper.nfluad)
	local f = assert(io.open(pidfile))
	helper.pid = assert(tonumber(f:read("l")))
	f:close()
	local ok = helper.eventually(function()
		return answers() or not alive(helper.pid)
	end, 10)
	assert(ok and alive(helper.pid), "nfluad did not come up on port " .. helper.port ..
		"; see " .. helper.log)
end

function helper.stop()
	if not helper.pid then return end
	os.execute("kill " .. helper.pid .. " 2>/dev/null")
	assert(helper.eventually(function() return not alive(helper.pid) end, 10),
		"nfluad did not stop")
	helper.pid = nil
	os.remove(pidfile)
end

local serial = 0
-- A state name no other test uses.
function helper.name(prefix)
	serial = serial + 1
	return string.format("%s%d", prefix or "st", serial)
end

-- Receives until the reply is complete (blocking or not); returns what the last receive did.
function helper.receive(sock, timeout)
	local results
	local ok = helper.eventually(function()
		results = table.pack(sock:receive())
		return not (results[1] == nil and results[2] == "pending")
	end, timeout)
	assert(ok, "reply never completed")
	return table.unpack(results, 1, results.n)
end

-- Sends a command and returns its reply: helper.run(c, "create", name, 1000).
function helper.run(sock, command, ...)
	local sent, err, errno = sock[command](sock, ...)
	if not sent then return nil, err, errno end
	return helper.receive(sock)
end

-- A state with an echo service: what it receives it sends back, prefixed with `prefix`.
helper.ECHO = [[
local nf = require "nf"
function __receive_callback(pid, buffer)
	nf.netlink(pid, 0, (prefix or "") .. tostring(buffer))
end
]]

-- Creates a state (default limits) and loads `code` into it; returns its name.
function helper.state(c, code, opts)
	opts = opts or {}
	local name = helper.name(opts.prefix)
	assert(helper.run(c, "create", name, opts.instructions or 1000000, opts.memory, opts.flags))
	if code then assert(helper.run(c, "execute", name, code)) end
	return name
end

function helper.list(c)
	return assert(helper.run(c, "list"))
end

-- The LIST entry of state `name`, or nil.
function helper.find(c, name)
	for _, st in ipairs(helper.list(c)) do
		if st.name == name then return st end
	end
end

-- Path of the library `require "nflua"` loads.
function helper.library()
	return assert(package.searchpath("nflua", package.cpath))
end

-- Runs a Lua program in a fresh lua5.4 (same environment); returns its output and success.
function helper.lua(code)
	local path = os.tmpname()
	local f = assert(io.open(path, "w"))
	f:write(code)
	f:close()
	local p = assert(io.popen(string.format("lua5.4 %q 2>&1", path)))
	local out = p:read("a")
	local ok = p:close()
	os.remove(path)
	return out, ok
end

-- busted gives spec files their `assert`; this module takes luassert's own.
local assert = require "luassert"

-- Asserts `nil, message, errno`, the message containing `text` (plain) when given.
function helper.fails(errno, text, ok, msg, code)
	assert.is_nil(ok, "expected a failure, got " .. tostring(ok))
	assert.is_string(msg)
	if text then assert.is_truthy(msg:find(text, 1, true), msg) end
	assert.are.equal("integer", math.type(code), msg)
	assert.is_true(code > 0, msg)
	if errno then assert.are.equal(errno, code, msg) end
end

-- Asserts that `f(...)` raises an error whose message contains `text` (plain).
function helper.raises(text, f, ...)
	local ok, err = pcall(f, ...)
	assert.is_false(ok, "expected an error")
	assert.is_string(err)
	assert.is_truthy(err:find(text, 1, true), err)
end

return helper
