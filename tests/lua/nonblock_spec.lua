-- Non-blocking sockets in a poll/select-style event loop keyed by getfd(), as the original
-- NFLua's tests drove them: coroutines yield until their descriptor is readable.
--
-- Readiness comes from luaposix's poll when it is installed for Lua 5.4 (Debian 12 packages it
-- only up to 5.3); otherwise from the kernel's own count of queued bytes for the descriptor's
-- socket in /proc/net/netlink, which is what poll(2) would look at.

local nflua = require "nflua"
local data = require "data"
local helper = require "helper"
local lfs = require "lfs"
local system = require "system"

local has_poll, poll = pcall(require, "posix.poll")

local function inode(fd)
	local target = lfs.symlinkattributes("/proc/self/fd/" .. fd, "target")
	return target and target:match("^socket:%[(%d+)%]$")
end

-- The set of descriptors in `fds` with data queued, waiting up to `timeout` seconds.
local function wait_readable(fds, timeout)
	if has_poll then
		local set = {}
		for _, fd in ipairs(fds) do set[fd] = {events = {IN = true}} end
		poll.poll(set, math.floor(timeout * 1000))
		local ready = {}
		for fd, entry in pairs(set) do
			if entry.revents and entry.revents.IN then ready[fd] = true end
		end
		return ready
	end
	local byinode = {}
	for _, fd in ipairs(fds) do byinode[inode(fd)] = fd end
	local deadline = system.monotime() + timeout
	repeat
		local ready, any = {}, false
		for line in io.lines("/proc/net/netlink") do
			local rmem, ino = line:match("^%x+%s+%d+%s+%d+%s+%x+%s+(%d+)%s+%d+%s+%d+%s+%d+%s+%d+%s+(%d+)")
			local fd = ino and byinode[ino]
			if fd and tonumber(rmem) > 0 then
				ready[fd], any = true, true
			end
		end
		if any then return ready end
		system.sleep(0.001)
	until system.monotime() > deadline
	return {}
end

-- Runs coroutines until all finish; each yields the descriptor it waits on.
local function run_loop(tasks, timeout)
	local waiting = {}
	for _, task in ipairs(tasks) do
		local co = coroutine.create(task)
		local ok, fd = coroutine.resume(co)
		assert(ok, fd)
		if coroutine.status(co) ~= "dead" then waiting[co] = fd end
	end
	local deadline = system.monotime() + (timeout or 20)
	while next(waiting) do
		assert(system.monotime() < deadline, "event loop timed out")
		local fds = {}
		for _, fd in pairs(waiting) do fds[#fds + 1] = fd end
		local ready = wait_readable(fds, 1)
		for co, fd in pairs(waiting) do
			if ready[fd] then
				local ok, nextfd = coroutine.resume(co)
				assert(ok, nextfd)
				waiting[co] = coroutine.status(co) ~= "dead" and nextfd or nil
			end
		end
	end
end

-- A command on a non-blocking control socket: send, then yield until the reply is complete.
local function command(sock, name, ...)
	local ok, err, errno = sock[name](sock, ...)
	if not ok then return nil, err, errno end
	while true do
		local result, msg, code = sock:receive()
		if result or msg ~= "pending" then return result, msg, code end
		coroutine.yield(sock:getfd())
	end
end

describe("non-blocking sockets with getfd", function()
	setup(helper.start)
	teardown(helper.stop)

	it("never block: receive says pending while the daemon is busy", function()
		local c = assert(nflua.control())
		local name = helper.state(c, nil, {instructions = 100000000})
		assert.is_true(c:setblocking(false))
		-- Several milliseconds of work in the daemon: the reply cannot be there yet.
		assert.is_true(c:execute(name, "local n = 0 for i = 1, 3000000 do n = n + i end"))
		assert.are.same({nil, "pending"}, {c:receive()})
		assert.are.equal("waiting", c:getstate())
		local ready = wait_readable({c:getfd()}, 10)
		assert.is_true(ready[c:getfd()])
		assert.is_true(c:receive())
		assert.are.equal("ready", c:getstate())
		assert.is_true(c:setblocking(true))
		assert.is_true(helper.run(c, "destroy", name))
		c:close()
	end)

	it("drive many control sockets from one loop", function()
		local tasks, results = {}, {}
		for i = 1, 8 do
			tasks[i] = function()
				local c = assert(nflua.control())
				assert(c:setblocking(false))
				local name = helper.name("loop")
				local big = "-- " .. string.rep("p", 3 * nflua.fragsize) .. "\nvalue = " .. i
				assert(command(c, "create", name, 1000000))
				assert(command(c, "execute", name, big))
				assert(command(c, "execute", name, "assert(value == " .. i .. ")"))
				local list = assert(command(c, "list"))
				assert(command(c, "destroy", name))
				c:close()
				results[i] = #list
			end
		end
		-- No count of wakeups is asserted: a reply already queued when receive runs needs none.
		run_loop(tasks)
		for i = 1, 8 do assert.is_true(results[i] >= 1) end
	end)

	it("drive a multi-part LIST one datagram per wakeup", function()
		local c = assert(nflua.control())
		local names = {}
		for i = 1, 120 do names[i] = helper.state(c, nil, {prefix = "part"}) end
		assert.is_true(c:setblocking(false))
		local pendings, list = 0, nil
		run_loop{function()
			assert(c:list())
			while true do
				coroutine.yield(c:getfd())
				local result, msg = c:receive()
				if result then list = result break end
				assert(msg == "pending", msg)
				pendings = pendings + 1
				assert(c:getstate() == "receiving" or c:getstate() == "waiting")
			end
		end}
		assert.is_true(#list >= 120)
		-- 120 extended records take three datagrams: at least two pendings before the last.
		assert.is_true(pendings >= 2)
		assert.is_true(c:setblocking(true))
		for _, name in ipairs(names) do assert.is_true(helper.run(c, "destroy", name)) end
		c:close()
	end)

	it("serve data sockets from the same loop", function()
		local c = assert(nflua.control())
		local echo = helper.state(c, helper.ECHO)
		local got = {}
		local tasks = {}
		for i = 1, 4 do
			tasks[i] = function()
				local d = assert(nflua.data())
				assert(d:setblocking(false))
				local buf = data.new(nflua.datamaxsize)
				for j = 1, 5 do
					local msg = string.format("%d.%d", i, j)
					assert(d:send(echo, msg))
					local n, from
					repeat
						coroutine.yield(d:getfd())
						n, from = d:receive(buf, 0)
					until n or from ~= "pending"
					assert(n, from)
					assert(from == echo)
					got[#got + 1] = tostring(buf:segment(0, n)) == msg
				end
				d:close()
			end
		end
		run_loop(tasks)
		assert.are.equal(20, #got)
		for _, ok in ipairs(got) do assert.is_true(ok) end
		assert.is_true(helper.run(c, "destroy", echo))
		c:close()
	end)
end)
