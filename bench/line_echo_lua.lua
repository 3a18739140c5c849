-- Line echo with the lines found in Lua (callback style, the unfinished
-- line kept in session.buf): the same server as bench/line_echo_c.lua
-- without the C framing. Job 11 of scripts/bench.
--
--   lua bench/line_echo_lua.lua [address] [threads]   (default 127.0.0.1:7000, 1)
local iocore = require "iocore"

local address = arg and arg[1] or "127.0.0.1:7000"
local threads = tonumber(arg and arg[2]) or 1
local core = assert(iocore.core { threads = threads })

local find, sub, byte = string.find, string.sub, string.byte
local MAX = 65536

local function on_recv(s, data)
  local buf = s.buf
  if buf then data = buf .. data; s.buf = nil end
  local pos = 1
  while true do
    local e = find(data, "\n", pos, true)
    if not e then break end
    local stop = e - 1
    if stop >= pos and byte(data, stop) == 13 then stop = stop - 1 end
    s:send(sub(data, pos, stop) .. "\n")
    pos = e + 1
  end
  if pos <= #data then
    if #data - pos + 1 > MAX then return s:close() end
    s.buf = sub(data, pos)
  end
end

local server = assert(core:listen(address, { on_recv = on_recv }))
io.stdout:setvbuf("line")
print(("line_echo_lua on %s (%s, %d threads)"):format(server:address(), core:backend(), core:threads()))
core:run()
