-- examples/lua-client runs as documented and leaves nothing behind.

local nflua = require "nflua"
local helper = require "helper"

local function client(state)
	local p = assert(io.popen(string.format("lua5.4 %q %s 2>&1",
		helper.root .. "/examples/lua-client/client.lua", state or "")))
	local out = p:read("a")
	return out, p:close()
end

describe("examples/lua-client", function()
	setup(helper.start)
	teardown(helper.stop)

	it("talks to its state and cleans up", function()
		local out, ok = client("example1")
		assert.is_true(ok, out)
		local expected = {
			"loaded filter.lua into state 'example1'",
			"block 192.0.2.7        -> example1: blocked 192.0.2.7",
			"block 198.51.100.23    -> example1: blocked 198.51.100.23",
			"check 192.0.2.7        -> example1: 192.0.2.7 is blocked",
			"check 203.0.113.5      -> example1: 203.0.113.5 is allowed",
			"unblock 198.51.100.23  -> example1: unblocked 198.51.100.23",
			"count                  -> example1: 1 blocked",
			"block nowhere          -> example1: error: bad command 'block nowhere'",
		}
		local lines = {}
		for line in out:gmatch("[^\n]+") do lines[#lines + 1] = line end
		for i, line in ipairs(expected) do assert.are.equal(line, lines[i]) end
		assert.is_truthy(lines[#expected + 1]:match("^state 'example1' uses %d+ of 131072 bytes$"), out)
		assert.are.equal("destroyed state 'example1'", lines[#expected + 2])
		assert.are.equal(#expected + 2, #lines)

		local c = assert(nflua.control())
		assert.is_nil(helper.find(c, "example1"))
		c:close()
	end)

	it("uses the default state name", function()
		local out, ok = client()
		assert.is_true(ok, out)
		assert.is_truthy(out:find("destroyed state 'lua-client-example'", 1, true), out)
	end)

	it("exits non-zero with the daemon's message when the state exists", function()
		local c = assert(nflua.control())
		assert.is_true(helper.run(c, "create", "taken", 1000))
		local out, ok = client("taken")
		assert.is_truthy(not ok, out)
		assert.is_truthy(out:find("client.lua: create:", 1, true), out)
		assert.is_truthy(out:find("taken", 1, true), out)
		assert.is_true(helper.run(c, "destroy", "taken"))
		c:close()
	end)

	it("exits non-zero when nfluad is not running", function()
		helper.stop()
		local out, ok = client("example2")
		helper.start()
		assert.is_truthy(not ok, out)
		assert.is_truthy(out:find("nfluad is not running on port " .. helper.port, 1, true), out)
	end)
end)
