-- control sockets against a real nfluad: every method, every state, every error path.

local nflua = require "nflua"
local helper = require "helper"

local run, receive = helper.run, helper.receive

local fails = helper.fails

local raises = helper.raises

describe("nflua.control", function()
	setup(helper.start)
	teardown(helper.stop)

	describe("opening", function()
		it("binds an automatic port with bit 31 set and this process's pid", function()
			local c = assert(nflua.control())
			local port = c:getpid()
			assert.are.equal("integer", math.type(port))
			assert.are.equal(1, port >> 31)
			assert.are.equal(helper.getpid() & 0xFFFF, port & 0xFFFF)
			local other = assert(nflua.control())
			assert.are_not.equal(port, other:getpid())
			c:close()
			other:close()
		end)

		it("binds an explicit port", function()
			local port = 0x10000000 + (helper.getpid() & 0xFFFF) * 16
			local c = assert(nflua.control(port))
			assert.are.equal(port, c:getpid())
			-- Integral floats are integers, as in Lua.
			local f = assert(nflua.control(port + 1.0))
			assert.are.equal(port + 1, f:getpid())
			c:close()
			f:close()
		end)

		it("accepts the range ends 1 and 2^31 - 1", function()
			for _, port in ipairs{1, (1 << 31) - 1} do
				local c, err = nflua.control(port)
				-- Someone else may hold the port; what matters is that no error is raised.
				if c then
					assert.are.equal(port, c:getpid())
					c:close()
				else
					assert.is_string(err)
				end
			end
		end)

		it("returns nil, message, EADDRINUSE for a port in use", function()
			local c = assert(nflua.control())
			local port = c:getpid() & 0x7FFFFFFF
			local a = assert(nflua.control(port))
			fails(helper.EADDRINUSE, nil, nflua.control(port))
			fails(helper.EADDRINUSE, nil, nflua.data(port))
			a:close()
			c:close()
		end)

		for _, bad in ipairs{0, -1, 1 << 31, (1 << 32) + 5, 1.5, math.huge, 0 / 0, "7", true, {}} do
			it("raises for port " .. tostring(bad), function()
				local ok, err = pcall(nflua.control, bad)
				assert.is_false(ok)
				assert.are.equal("port must be in range [1, 2^31)", err)
			end)
		end

		it("raises at the caller's line", function()
			local ok, err = pcall(function() nflua.control(0) end)
			assert.is_false(ok)
			assert.is_truthy(err:match("^.-control_spec%.lua:%d+: port must be in range %[1, 2%^31%)$"), err)
		end)
	end)

	describe("getfd", function()
		it("returns a socket descriptor of this process", function()
			local c = assert(nflua.control())
			local fd = c:getfd()
			assert.are.equal("integer", math.type(fd))
			local lfs = require "lfs"
			local target = lfs.symlinkattributes("/proc/self/fd/" .. fd, "target")
			assert.is_truthy(target and target:match("^socket:%[%d+%]$"), target)
			c:close()
		end)

		it("and getpid agree with the kernel's Netlink table", function()
			local c = assert(nflua.control())
			local lfs = require "lfs"
			local inode = lfs.symlinkattributes("/proc/self/fd/" .. c:getfd(), "target"):match("%d+")
			local found
			for line in io.lines("/proc/net/netlink") do
				-- sk Eth Pid Groups Rmem Wmem Dump Locks Drops Inode
				local proto, pid, ino = line:match("^%x+%s+(%d+)%s+(%d+)%s+%x+%s+%d+%s+%d+%s+%d+%s+%d+%s+%d+%s+(%d+)")
				if ino == inode then found = {proto = tonumber(proto), pid = tonumber(pid)} end
			end
			assert.is_table(found)
			assert.are.equal(2, found.proto) -- NETLINK_USERSOCK
			assert.are.equal(c:getpid(), found.pid)
			c:close()
		end)
	end)

	describe("getstate", function()
		it("walks ready -> waiting -> ready for each command", function()
			local c = assert(nflua.control())
			local name = helper.name()
			for _, step in ipairs{
				{"create", name, 1000},
				{"execute", name, "x = 1"},
				{"list"},
				{"destroy", name},
			} do
				assert.are.equal("ready", c:getstate())
				assert.is_true(c[step[1]](c, table.unpack(step, 2)))
				assert.are.equal("waiting", c:getstate())
				assert.is_truthy(receive(c))
				assert.are.equal("ready", c:getstate())
			end
			c:close()
		end)

		it("is receiving while a multi-part LIST is incomplete", function()
			local c = assert(nflua.control())
			local names = {}
			-- 50 extended records fill the first LIST datagram; 60 need two.
			for i = 1, 60 do names[i] = helper.state(c, nil, {prefix = "many"}) end
			assert.is_true(c:list())
			local first, msg = c:receive()
			assert.is_nil(first)
			assert.are.equal("pending", msg)
			assert.are.equal("receiving", c:getstate())
			-- Sending now is refused too.
			fails(helper.EPERM, "Operation not permitted", c:list())
			local list = receive(c)
			assert.is_table(list)
			assert.is_true(#list >= 60)
			assert.are.equal("ready", c:getstate())
			for _, name in ipairs(names) do assert.is_true(run(c, "destroy", name)) end
			c:close()
		end)

		it("is failed after a protocol violation, and commands report it", function()
			-- With the daemon stopped, a socket bound to the daemon's port receives its own
			-- request as the "reply": trusted sender, right seq, but not a reply at all.
			helper.stop()
			local c = assert(nflua.control(helper.port))
			assert.is_true(c:list())
			local ok, msg, errno = c:receive()
			c:close()
			helper.start()
			assert.is_nil(ok)
			assert.is_string(msg)
			assert.are.equal(helper.EPROTO, errno)
		end)

		it("stays failed until closed", function()
			helper.stop()
			local c = assert(nflua.control(helper.port))
			assert.is_true(c:list())
			c:receive()
			local state = c:getstate()
			local again = table.pack(c:create("x", 1000))
			local recv = table.pack(c:receive())
			c:close()
			helper.start()
			assert.are.equal("failed", state)
			fails(helper.EPROTO, "socket has failed", table.unpack(again, 1, again.n))
			fails(helper.EPROTO, "socket has failed", table.unpack(recv, 1, recv.n))
		end)
	end)

	describe("one command at a time", function()
		local c
		before_each(function() c = assert(nflua.control()) end)
		after_each(function() c:close() end)

		it("refuses receive while ready with EPERM", function()
			assert.same({nil, "Operation not permitted", 1}, {c:receive()})
		end)

		it("refuses every command while waiting with EPERM", function()
			assert.is_true(c:list())
			local name = helper.name()
			assert.same({nil, "Operation not permitted", 1}, {c:create(name, 1000)})
			assert.same({nil, "Operation not permitted", 1}, {c:destroy(name)})
			assert.same({nil, "Operation not permitted", 1}, {c:execute(name, "x = 1")})
			assert.same({nil, "Operation not permitted", 1}, {c:list()})
			assert.is_table(receive(c))
			assert.are.equal("ready", c:getstate())
		end)
	end)

	describe("create", function()
		local c
		before_each(function() c = assert(nflua.control()) end)
		after_each(function() c:close() end)

		it("creates a state with the given limits", function()
			local name = helper.name()
			assert.is_true(run(c, "create", name, 12345, 131072))
			local st = helper.find(c, name)
			assert.are.same({name = name, maxruns = 12345, maxalloc = 131072, flags = ""},
				{name = st.name, maxruns = st.maxruns, maxalloc = st.maxalloc, flags = st.flags})
			assert.are.equal("integer", math.type(st.curralloc))
			assert.is_true(st.curralloc > 0 and st.curralloc <= st.maxalloc)
			assert.is_true(run(c, "destroy", name))
		end)

		it("uses defaultmaxallocbytes when memory is nil", function()
			local name = helper.name()
			assert.is_true(run(c, "create", name, 1000, nil))
			assert.are.equal(nflua.defaultmaxallocbytes, helper.find(c, name).maxalloc)
			assert.is_true(run(c, "destroy", name))
		end)

		it("with flag 'd' loads the debug library", function()
			local name = helper.name()
			assert.is_true(run(c, "create", name, 100000, nil, "d"))
			assert.are.equal("d", helper.find(c, name).flags)
			assert.is_true(run(c, "execute", name, "assert(type(debug.traceback) == 'function')"))
			assert.is_true(run(c, "destroy", name))
		end)

		it("without flags has no debug library", function()
			local name = helper.name()
			assert.is_true(run(c, "create", name, 100000, nil, ""))
			assert.are.equal("", helper.find(c, name).flags)
			assert.is_true(run(c, "execute", name, "assert(debug == nil, 'debug is loaded')"))
			assert.is_true(run(c, "destroy", name))
		end)

		it("returns the daemon's error for a duplicate name", function()
			local name = helper.state(c)
			fails(helper.EEXIST, name, run(c, "create", name, 1000))
			assert.are.equal("ready", c:getstate())
			assert.is_true(run(c, "destroy", name))
		end)

		it("returns the daemon's error for memory below the minimum", function()
			local ok, msg, errno = run(c, "create", helper.name(), 1000, 1024)
			assert.is_nil(ok)
			assert.is_truthy(msg:find("32768", 1, true), msg)
			assert.are.equal(helper.EINVAL, errno)
		end)

		it("returns the daemon's error for zero instructions", function()
			local ok, msg, errno = run(c, "create", helper.name(), 0)
			assert.is_nil(ok)
			assert.is_string(msg)
			assert.are.equal(helper.EINVAL, errno)
		end)

		it("returns EINVAL for names the protocol cannot carry", function()
			fails(helper.EINVAL, "name", c:create("", 1000))
			fails(helper.EINVAL, "name", c:create(string.rep("n", nflua.statenamemaxsize), 1000))
			fails(helper.EINVAL, "name", c:create("a\0b", 1000))
			fails(helper.EINVAL, "UTF-8", c:create("\xff", 1000))
			assert.are.equal("ready", c:getstate())
		end)

		it("accepts the longest name", function()
			local name = string.rep("L", nflua.statenamemaxsize - 1)
			assert.is_true(run(c, "create", name, 1000))
			assert.is_true(run(c, "destroy", name))
		end)

		it("raises for unknown flags", function()
			raises("bad argument #4 to 'create' (unknown flag 'x'", c.create, c, "s", 1000, nil, "x")
			raises("unknown flag 'D'", c.create, c, "s", 1000, nil, "dD")
			raises("bad argument #4 to 'create' (string expected, got number)", c.create, c, "s", 1000, nil, 1)
			assert.are.equal("ready", c:getstate())
		end)

		it("raises for wrong argument types", function()
			raises("bad argument #1 to 'create' (string expected, got nil)", c.create, c)
			raises("bad argument #1 to 'create' (string expected, got table)", c.create, c, {}, 1000)
			raises("bad argument #2 to 'create' (number expected, got nil)", c.create, c, "s")
			raises("bad argument #2 to 'create' (number expected, got string)", c.create, c, "s", "many")
			raises("bad argument #2 to 'create' (number has no integer representation)", c.create, c, "s", 1.5)
			raises("bad argument #2 to 'create' (instructions must be in range [0, 2^32)", c.create, c, "s", -1)
			raises("bad argument #3 to 'create' (memory must be in range [0, 2^32)", c.create, c, "s", 1, 1 << 32)
			raises("bad argument #3 to 'create' (number expected, got boolean)", c.create, c, "s", 1, true)
		end)
	end)

	describe("destroy", function()
		local c
		before_each(function() c = assert(nflua.control()) end)
		after_each(function() c:close() end)

		it("removes the state", function()
			local name = helper.state(c)
			assert.is_table(helper.find(c, name))
			assert.is_true(run(c, "destroy", name))
			assert.is_nil(helper.find(c, name))
		end)

		it("returns ENOENT for an unknown state", function()
			fails(helper.ENOENT, "nosuchstate", run(c, "destroy", "nosuchstate"))
		end)

		it("returns EINVAL for a bad name and raises for a non-string", function()
			fails(helper.EINVAL, "name", c:destroy(""))
			raises("bad argument #1 to 'destroy' (string expected, got nil)", c.destroy, c)
		end)
	end)

	describe("execute", function()
		local c, name
		before_each(function()
			c = assert(nflua.control())
			name = helper.state(c)
		end)
		after_each(function()
			assert.is_true(run(c, "destroy", name))
			c:close()
		end)

		it("runs the chunk in the state", function()
			assert.is_true(run(c, "execute", name, "answer = 42"))
			assert.is_true(run(c, "execute", name, "assert(answer == 42)"))
		end)

		it("names the chunk =chunk by default", function()
			fails(nil, "chunk:1: boom", run(c, "execute", name, "error('boom')"))
		end)

		it("uses the given script name", function()
			fails(nil, "myscript:1: boom", run(c, "execute", name, "error('boom')", "=myscript"))
			fails(nil, "file.lua:2: boom", run(c, "execute", name, "\nerror('boom')", "@file.lua"))
		end)

		it("returns the daemon's text for syntax errors", function()
			local ok, msg, errno = run(c, "execute", name, "this is not lua")
			assert.is_nil(ok)
			assert.is_truthy(msg:find("chunk:1:", 1, true), msg)
			assert.are.equal("integer", math.type(errno))
			assert.is_true(errno > 0)
		end)

		it("sends chunks larger than one fragment", function()
			local pad = "-- " .. string.rep("x", 2 * nflua.fragsize) .. "\n"
			local code = pad .. "big = 'yes'\n" .. pad .. "big2 = #big\n"
			assert.is_true(#code > 4 * nflua.fragsize)
			assert.is_true(run(c, "execute", name, code))
			assert.is_true(run(c, "execute", name, "assert(big == 'yes' and big2 == 3)"))
		end)

		it("sends a chunk of exactly 16 fragments", function()
			local size = 16 * nflua.fragsize
			local code = "done = true --" .. string.rep("y", size - #"done = true --")
			assert.are.equal(size, #code)
			assert.is_true(run(c, "execute", name, code))
			assert.is_true(run(c, "execute", name, "assert(done)"))
		end)

		it("returns EMSGSIZE for a chunk over 16 fragments, and stays ready", function()
			local code = string.rep(" ", 16 * nflua.fragsize + 1)
			fails(helper.EMSGSIZE, nil, c:execute(name, code))
			assert.are.equal("ready", c:getstate())
		end)

		it("stops a chunk at the instruction limit", function()
			local limited = helper.state(c, nil, {instructions = 1000})
			local ok, msg = run(c, "execute", limited, "while true do end")
			assert.is_nil(ok)
			assert.is_string(msg)
			assert.is_true(run(c, "execute", limited, "x = 1"))
			assert.is_true(run(c, "destroy", limited))
		end)

		it("returns ENOENT for an unknown state", function()
			fails(helper.ENOENT, "nosuchstate", run(c, "execute", "nosuchstate", "x = 1"))
		end)

		it("returns EINVAL for bad state and script names", function()
			fails(helper.EINVAL, "name", c:execute("", "x = 1"))
			fails(helper.EINVAL, "script name", c:execute(name, "x = 1", string.rep("s", nflua.scriptnamemaxsize)))
			assert.are.equal("ready", c:getstate())
		end)

		it("raises for wrong argument types", function()
			raises("bad argument #1 to 'execute' (string expected, got nil)", c.execute, c)
			raises("bad argument #2 to 'execute' (string expected, got nil)", c.execute, c, name)
			raises("bad argument #2 to 'execute' (string expected, got function)", c.execute, c, name, print)
			raises("bad argument #3 to 'execute' (string expected, got number)", c.execute, c, name, "x=1", 5)
		end)
	end)

	describe("list", function()
		it("returns the seed's record for each state", function()
			local c = assert(nflua.control())
			local a = helper.state(c, nil, {instructions = 777, memory = 40000, flags = "d"})
			local list = helper.list(c)
			local seen
			for i, st in ipairs(list) do
				assert.are.equal(i, i) -- a sequence
				if st.name == a then seen = st end
			end
			assert.are.same({"curralloc", "flags", "maxalloc", "maxruns", "name"}, (function()
				local keys = {}
				for k in pairs(seen) do keys[#keys + 1] = k end
				table.sort(keys)
				return keys
			end)())
			assert.are.equal(777, seen.maxruns)
			assert.are.equal(40000, seen.maxalloc)
			assert.are.equal("d", seen.flags)
			assert.is_true(run(c, "destroy", a))
			c:close()
		end)

		it("returns an empty sequence when there are no states", function()
			local c = assert(nflua.control())
			for _, st in ipairs(helper.list(c)) do assert.is_true(run(c, "destroy", st.name)) end
			assert.are.same({}, helper.list(c))
			c:close()
		end)
	end)

	describe("close", function()
		it("returns true, then every method raises", function()
			local c = assert(nflua.control())
			assert.is_true(c:close())
			for _, call in ipairs{
				{"close"}, {"getfd"}, {"getpid"}, {"getstate"}, {"setblocking", false},
				{"create", "s", 1}, {"destroy", "s"}, {"execute", "s", "x"}, {"list"}, {"receive"},
			} do
				raises("attempt to use a closed nflua.control socket", c[call[1]], c, table.unpack(call, 2))
			end
			assert.are.equal("nflua.control (closed)", tostring(c))
		end)

		it("frees the port", function()
			local c = assert(nflua.control())
			local port = c:getpid() & 0x7FFFFFFF
			local a = assert(nflua.control(port))
			a:close()
			local b = assert(nflua.control(port))
			b:close()
			c:close()
		end)
	end)

	describe("methods", function()
		it("raise when called on something else", function()
			local c = assert(nflua.control())
			local d = assert(nflua.data())
			raises("calling 'getfd' on bad self (nflua.control expected, got number)", c.getfd, 5)
			raises("calling 'list' on bad self (nflua.control expected, got userdata)", c.list, d)
			raises("calling 'getstate' on bad self (nflua.control expected, got nil)", c.getstate)
			c:close()
			d:close()
		end)

		it("setblocking takes a boolean and returns true", function()
			local c = assert(nflua.control())
			assert.is_true(c:setblocking(false))
			assert.is_true(c:setblocking(true))
			raises("bad argument #1 to 'setblocking' (boolean expected, got nil)", c.setblocking, c)
			raises("bad argument #1 to 'setblocking' (boolean expected, got string)", c.setblocking, c, "no")
			c:close()
		end)

		it("show the port in tostring", function()
			local c = assert(nflua.control())
			assert.are.equal("nflua.control (port " .. c:getpid() .. ")", tostring(c))
			c:close()
		end)
	end)

	describe("without a daemon", function()
		it("reports that nfluad is not running", function()
			helper.stop()
			local c = assert(nflua.control())
			local result = table.pack(c:list())
			local state = c:getstate()
			c:close()
			helper.start()
			fails(helper.ECONNREFUSED, "nfluad is not running on port " .. helper.port,
				table.unpack(result, 1, result.n))
			assert.are.equal("ready", state)
		end)
	end)
end)
