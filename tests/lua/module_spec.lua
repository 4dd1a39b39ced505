-- Loading the library: both entry points, the constants, the shared data module.

local helper = require "helper"

describe("require 'nflua'", function()
	local nflua = require "nflua"

	setup(helper.start)
	teardown(helper.stop)

	it("exports the seed's constants with the original's values", function()
		assert.are.equal(4012, nflua.datamaxsize)
		assert.are.equal(65536, nflua.defaultmaxallocbytes)
		assert.are.equal(3748, nflua.fragsize)
		assert.are.equal(904, nflua.maxstates)
		assert.are.equal(255, nflua.scriptnamemaxsize)
		assert.are.equal(64, nflua.statenamemaxsize)
		for _, k in ipairs{"datamaxsize", "defaultmaxallocbytes", "fragsize", "maxstates",
				"scriptnamemaxsize", "statenamemaxsize"} do
			assert.are.equal("integer", math.type(nflua[k]), k)
		end
	end)

	it("exports control and data constructors", function()
		assert.is_function(nflua.control)
		assert.is_function(nflua.data)
	end)

	it("registers the data module it understands", function()
		local data = require "data"
		assert.are.equal(package.loaded.data, data)
		assert.is_function(data.new)
		assert.is_function(data.isdata)
		assert.is_true(data.isdata(data.new(4)))
	end)

	it("exports luaopen_data from the same library", function()
		local open = assert(package.loadlib(helper.library(), "luaopen_data"))
		local data = open()
		assert.is_function(data.new)
		assert.are.equal("abc", tostring(data.new("abc")))
	end)

	it("loads as data.so before nflua.so, and the buffers work with data sockets", function()
		local out, ok = helper.lua([[
			local data = require "data"
			local nflua = require "nflua"
			assert(package.loaded.data == data)
			local d = assert(nflua.data())
			-- Not acknowledged: true means the buffer type was accepted.
			assert(d:send("nobody", data.new("x")) == true)
			print("ok")
		]])
		assert.is_true(ok, out)
		assert.are.equal("ok\n", out)
	end)

	it("works as a to-be-closed variable", function()
		local out, ok = helper.lua([[
			local nflua = require "nflua"
			local keep
			do
				local c <close> = assert(nflua.control())
				keep = c
			end
			assert(not pcall(keep.getfd, keep))
			print(tostring(keep))
		]])
		assert.is_true(ok, out)
		assert.are.equal("nflua.control (closed)\n", out)
	end)
end)
