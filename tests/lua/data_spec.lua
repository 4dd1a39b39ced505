-- data sockets against a real nfluad: sending to __receive_callback, receiving what states
-- send with nf.netlink, offsets, sizes and every error path.

local nflua = require "nflua"
local data = require "data"
local helper = require "helper"

local run = helper.run

local fails = helper.fails

local raises = helper.raises

describe("nflua.data", function()
	local c, echo
	setup(function()
		helper.start()
		c = assert(nflua.control())
		echo = helper.state(c, helper.ECHO, {prefix = "echo"})
	end)
	teardown(function()
		c:close()
		helper.stop()
	end)

	describe("opening", function()
		it("binds automatic and explicit ports", function()
			local d = assert(nflua.data())
			assert.are.equal(1, d:getpid() >> 31)
			assert.are.equal(helper.getpid() & 0xFFFF, d:getpid() & 0xFFFF)
			local port = 0x11000000 + (helper.getpid() & 0xFFFF) * 16
			local e = assert(nflua.data(port))
			assert.are.equal(port, e:getpid())
			assert.are.equal("nflua.data (port " .. port .. ")", tostring(e))
			d:close()
			e:close()
		end)

		for _, bad in ipairs{0, -5, 1 << 31, 2.5, "1", false} do
			it("raises for port " .. tostring(bad), function()
				local ok, err = pcall(nflua.data, bad)
				assert.is_false(ok)
				assert.are.equal("port must be in range [1, 2^31)", err)
			end)
		end

		it("has a socket descriptor", function()
			local d = assert(nflua.data())
			local lfs = require "lfs"
			local target = lfs.symlinkattributes("/proc/self/fd/" .. d:getfd(), "target")
			assert.is_truthy(target:match("^socket:%[%d+%]$"), target)
			d:close()
		end)
	end)

	describe("send and receive", function()
		local d, buf
		before_each(function()
			d = assert(nflua.data())
			buf = data.new(nflua.datamaxsize)
		end)
		after_each(function() d:close() end)

		it("round-trips a data buffer", function()
			assert.is_true(d:send(echo, data.new("ping")))
			local n, from = d:receive(buf, 0)
			assert.are.equal(4, n)
			assert.are.equal("integer", math.type(n))
			assert.are.equal(echo, from)
			assert.are.equal("ping", tostring(buf:segment(0, n)))
		end)

		it("accepts a string as the buffer to send", function()
			assert.is_true(d:send(echo, "hello\0world"))
			local n = d:receive(buf, 0)
			assert.are.equal("hello\0world", tostring(buf:segment(0, n)))
		end)

		it("sends only the bytes of a segment", function()
			local whole = data.new("0123456789")
			assert.is_true(d:send(echo, whole:segment(2, 3)))
			local n = d:receive(buf, 0)
			assert.are.equal("234", tostring(buf:segment(0, n)))
		end)

		it("writes at a 0-based byte offset", function()
			local big = data.new(nflua.datamaxsize + 10)
			assert.is_true(d:send(echo, "abc"))
			assert.are.equal(3, (d:receive(big, 10)))
			assert.are.equal("abc", tostring(big:segment(10, 3)))
			assert.are.equal(0, big[10]) -- byte 10 (1-based) is offset 9: untouched
			assert.are.equal(string.byte("a"), big[11])
		end)

		it("defaults the offset to 0", function()
			assert.is_true(d:send(echo, "xyz"))
			assert.are.equal(3, (d:receive(buf)))
			assert.are.equal("xyz", tostring(buf:segment(0, 3)))
		end)

		it("receives into a segment, writing the shared memory", function()
			local big = data.new(nflua.datamaxsize + 100)
			assert.is_true(d:send(echo, "seg"))
			assert.are.equal(3, (d:receive(big:segment(100), 0)))
			assert.are.equal("seg", tostring(big:segment(100, 3)))
		end)

		it("carries exactly datamaxsize bytes", function()
			local payload = string.rep("z", nflua.datamaxsize)
			assert.is_true(d:send(echo, payload))
			local n = d:receive(buf, 0)
			assert.are.equal(nflua.datamaxsize, n)
			assert.are.equal(payload, tostring(buf))
		end)

		it("carries an empty message", function()
			assert.is_true(d:send(echo, ""))
			local n, from = d:receive(buf, 0)
			assert.are.equal(0, n)
			assert.are.equal(echo, from)
		end)

		it("returns EMSGSIZE for more than datamaxsize bytes", function()
			fails(helper.EMSGSIZE, nil, d:send(echo, string.rep("z", nflua.datamaxsize + 1)))
			fails(helper.EMSGSIZE, nil, d:send(echo, data.new(nflua.datamaxsize + 1)))
		end)

		it("receives every message a state sends, in order", function()
			local name = helper.state(c, [[
				local nf = require "nf"
				function __receive_callback(pid, buffer)
					for i = 1, 3 do nf.netlink(pid, 0, i .. ":" .. tostring(buffer)) end
				end
			]])
			assert.is_true(d:send(name, "m"))
			for i = 1, 3 do
				local n, from = d:receive(buf, 0)
				assert.are.equal(name, from)
				assert.are.equal(i .. ":m", tostring(buf:segment(0, n)))
			end
			assert.is_true(run(c, "destroy", name))
		end)

		it("receives what a state sends to the socket's port (getpid)", function()
			local other = assert(nflua.data())
			local name = helper.state(c, [[
				local nf = require "nf"
				function __receive_callback(pid, buffer)
					nf.netlink(tonumber(tostring(buffer)), 0, "for you")
				end
			]])
			assert.is_true(d:send(name, tostring(other:getpid())))
			local n, from = other:receive(buf, 0)
			assert.are.equal(name, from)
			assert.are.equal("for you", tostring(buf:segment(0, n)))
			other:close()
			assert.is_true(run(c, "destroy", name))
		end)

		it("reports delivery to an unknown state at the next receive", function()
			assert.is_true(d:send("nosuchstate", "x"))
			fails(helper.ENOENT, "nosuchstate", d:receive(buf, 0))
		end)

		it("reports a state without __receive_callback", function()
			local name = helper.state(c)
			assert.is_true(d:send(name, "x"))
			fails(nil, "__receive_callback", d:receive(buf, 0))
			assert.is_true(run(c, "destroy", name))
		end)

		it("reports an error in __receive_callback with the state's text", function()
			local name = helper.state(c, "function __receive_callback() error('callback broke') end")
			assert.is_true(d:send(name, "x"))
			fails(nil, "callback broke", d:receive(buf, 0))
			assert.is_true(run(c, "destroy", name))
		end)

		it("returns ENOBUFS with the daemon's count after messages were dropped", function()
			local r = assert(nflua.data())
			-- The state sends to r, which does not read, until 10 sends have failed.
			local name = helper.state(c, string.format([[
				local nf = require "nf"
				local payload, failed = string.rep("x", 4000), 0
				for _ = 1, 10000 do
					if not pcall(nf.netlink, %d, 0, payload) then failed = failed + 1 end
					if failed == 10 then break end
				end
				assert(failed == 10, "the receiver never filled up")
			]], r:getpid()))
			local delivered, lost = 0, 0
			while lost < 10 do
				local n, msg, errno = r:receive(buf, 0)
				if n then
					assert.are.equal(4000, n)
					delivered = delivered + 1
				else
					fails(helper.ENOBUFS, "from nfluad w", n, msg, errno)
					lost = lost + assert(tonumber(msg:match("^(%d+) messages? from nfluad")), msg)
				end
			end
			assert.are.equal(10, lost)
			assert.is_true(delivered > 0)
			-- Told once: the socket goes on receiving.
			assert.is_true(r:send(echo, "still here"))
			local n = r:receive(buf, 0)
			assert.are.equal("still here", tostring(buf:segment(0, n)))
			r:close()
			assert.is_true(run(c, "destroy", name))
		end)

		it("returns EINVAL for bad state names", function()
			fails(helper.EINVAL, "name", d:send("", "x"))
			fails(helper.EINVAL, "name", d:send(string.rep("n", nflua.statenamemaxsize), "x"))
			fails(helper.EINVAL, "UTF-8", d:send("\xfe", "x"))
		end)

		it("raises for wrong argument types in send", function()
			raises("bad argument #1 to 'send' (string expected, got nil)", d.send, d)
			raises("bad argument #2 to 'send' (data or string expected, got nil)", d.send, d, echo)
			raises("bad argument #2 to 'send' (data or string expected, got number)", d.send, d, echo, 42)
			raises("bad argument #2 to 'send' (data or string expected, got table)", d.send, d, echo, {1, 2})
			raises("bad argument #2 to 'send' (data or string expected, got userdata)", d.send, d, echo, d)
		end)

		it("raises when the buffer has less than datamaxsize bytes from the offset", function()
			local need = "not enough space in buffer"
			raises("bad argument #2 to 'receive' (" .. need, d.receive, d, data.new(nflua.datamaxsize - 1), 0)
			raises(need, d.receive, d, data.new(nflua.datamaxsize), 1)
			raises(need, d.receive, d, data.new(nflua.datamaxsize + 4), 5)
			raises(need, d.receive, d, buf, -1)
			raises(need, d.receive, d, buf, nflua.datamaxsize + 1)
			raises(need, d.receive, d, buf:segment(1), 0)
		end)

		it("raises for wrong argument types in receive", function()
			raises("bad argument #1 to 'receive' (data expected, got nil)", d.receive, d)
			raises("bad argument #1 to 'receive' (data expected, got string)", d.receive, d, string.rep(" ", 5000), 0)
			raises("bad argument #2 to 'receive' (number expected, got string)", d.receive, d, buf, "0")
			raises("bad argument #2 to 'receive' (number has no integer representation)", d.receive, d, buf, 0.5)
		end)
	end)

	describe("non-blocking", function()
		it("returns nil, 'pending' when nothing is queued", function()
			local d = assert(nflua.data())
			assert.is_true(d:setblocking(false))
			local buf = data.new(nflua.datamaxsize)
			assert.are.same({nil, "pending"}, {d:receive(buf, 0)})
			assert.is_true(d:send(echo, "later"))
			local n, from = helper.eventually(function() return d:receive(buf, 0) end)
			assert.are.equal(5, n)
			assert.are.equal(echo, from)
			-- Blocking again: waits for the echo instead of returning pending.
			assert.is_true(d:setblocking(true))
			assert.is_true(d:send(echo, "now"))
			assert.are.equal(3, (d:receive(buf, 0)))
			d:close()
		end)

		it("raises for a non-boolean flag", function()
			local d = assert(nflua.data())
			raises("bad argument #1 to 'setblocking' (boolean expected, got nil)", d.setblocking, d)
			raises("bad argument #1 to 'setblocking' (boolean expected, got number)", d.setblocking, d, 0)
			d:close()
		end)
	end)

	describe("close", function()
		it("returns true, then every method raises", function()
			local d = assert(nflua.data())
			assert.is_true(d:close())
			local buf = data.new(nflua.datamaxsize)
			for _, call in ipairs{
				{"close"}, {"getfd"}, {"getpid"}, {"setblocking", true},
				{"send", echo, "x"}, {"receive", buf, 0},
			} do
				raises("attempt to use a closed nflua.data socket", d[call[1]], d, table.unpack(call, 2))
			end
			assert.are.equal("nflua.data (closed)", tostring(d))
		end)

		it("methods raise when called on something else", function()
			local d = assert(nflua.data())
			raises("calling 'send' on bad self (nflua.data expected, got userdata)", d.send, c, echo, "x")
			raises("calling 'getpid' on bad self (nflua.data expected, got string)", d.getpid, "d")
			d:close()
		end)
	end)

	describe("without a daemon", function()
		it("reports that nfluad is not running", function()
			local d = assert(nflua.data())
			helper.stop()
			local result = table.pack(d:send(echo, "x"))
			d:close()
			helper.start()
			echo = helper.state(c, helper.ECHO, {prefix = "echo"})
			fails(helper.ECONNREFUSED, "nfluad is not running on port " .. helper.port,
				table.unpack(result, 1, result.n))
		end)
	end)
end)
