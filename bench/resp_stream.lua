-- The RESP server of job 9 in stream style (PING, SET, GET; any other command
-- answers +OK), used until examples/resp_server.lua is the stream-style one.
--
--   lua bench/resp_stream.lua [address] [threads]   (default 127.0.0.1:6379, 2)
local iocore = require "iocore"

local address = arg and arg[1] or "127.0.0.1:6379"
local threads = tonumber(arg and arg[2]) or 2
local core = assert(iocore.core { threads = threads })

local db = {}
local byte, sub, upper, tonumber = string.byte, string.sub, string.upper, tonumber

local function serve(s)
  local args = {}
  while true do
    local line = s:read_line()
    if not line then return end
    local n = 0
    if byte(line, 1) == 42 then -- "*": an array of bulk strings
      n = tonumber(sub(line, 2))
      if not n or n > 1024 then return s:write("-ERR Protocol error\r\n") end
      for i = 1, n do
        local h = s:read_line()
        local len = h and byte(h, 1) == 36 and tonumber(sub(h, 2))
        local data = len and s:read(len + 2)
        if not data then return s:write("-ERR Protocol error\r\n") end
        args[i] = sub(data, 1, len)
      end
    else -- an inline command
      for w in line:gmatch("%S+") do n = n + 1; args[n] = w end
    end
    local cmd = args[1]
    if n > 0 and cmd ~= "PING" and cmd ~= "SET" and cmd ~= "GET" then cmd = upper(cmd) end
    if n == 0 then
      -- an empty line: no reply
    elseif cmd == "PING" then
      s:write("+PONG\r\n")
    elseif cmd == "SET" and n >= 3 then
      db[args[2]] = args[3]
      s:write("+OK\r\n")
    elseif cmd == "GET" and n >= 2 then
      local v = db[args[2]]
      s:write(v and ("$" .. #v .. "\r\n" .. v .. "\r\n") or "$-1\r\n")
    else
      s:write("+OK\r\n")
    end
  end
end

local server = assert(core:listen(address, { accepts = 64, handler = serve }))
io.stdout:setvbuf("line")
print(("resp_stream on %s (%s, %d threads)"):format(server:address(), core:backend(), core:threads()))
core:run()
