-- Line echo in stream style (s:read_line in a handler coroutine): shown in
-- job 11 of scripts/bench beside the two callback-style servers.
--
--   lua bench/line_echo_stream.lua [address] [threads]   (default 127.0.0.1:7000, 1)
local iocore = require "iocore"

local address = arg and arg[1] or "127.0.0.1:7000"
local threads = tonumber(arg and arg[2]) or 1
local core = assert(iocore.core { threads = threads })

local server = assert(core:listen(address, {
  handler = function(s)
    while true do
      local line = s:read_line()
      if not line then return end
      s:write(line .. "\n")
    end
  end,
}))
io.stdout:setvbuf("line")
print(("line_echo_stream on %s (%s, %d threads)"):format(server:address(), core:backend(), core:threads()))
core:run()
