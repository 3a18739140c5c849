-- Line echo with the framing in C (framing = "line"): one on_recv per
-- line. Job 11 of scripts/bench, against bench/line_echo_lua.lua.
--
--   lua bench/line_echo_c.lua [address] [threads]   (default 127.0.0.1:7000, 1)
local iocore = require "iocore"

local address = arg and arg[1] or "127.0.0.1:7000"
local threads = tonumber(arg and arg[2]) or 1
local core = assert(iocore.core { threads = threads })

local server = assert(core:listen(address, {
  framing = "line",
  on_recv = function(s, line) s:send(line .. "\n") end,
}))
io.stdout:setvbuf("line")
print(("line_echo_c on %s (%s, %d threads)"):format(server:address(), core:backend(), core:threads()))
core:run()
