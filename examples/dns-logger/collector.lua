-- Prints the DNS query names the dns-logger filter sends.
-- usage: lua5.4 collector.lua PORT [COUNT]    (needs the nflua and data modules)
local nflua = require "nflua"
local data = require "data"

local port = tonumber(arg[1])
if not port then
  io.stderr:write("usage: collector.lua PORT [COUNT]\n")
  os.exit(2)
end
local count = tonumber(arg[2])

local sock = assert(nflua.data(port))
local buf = data.new(nflua.datamaxsize)
io.stderr:write("collector: listening on port ", sock:getpid(), "\n")
io.stderr:flush()

local seen = 0
while not count or seen < count do
  local n, state, errno = sock:receive(buf, 0)
  if n then
    print(string.format("%s: %s", state, tostring(buf:segment(0, n))))
    io.stdout:flush()
    seen = seen + 1
  else
    io.stderr:write("collector: ", tostring(state), " (", tostring(errno), ")\n")
  end
end
sock:close()
