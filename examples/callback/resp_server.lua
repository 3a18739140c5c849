-- A minimal RESP (Redis protocol) server: PING, SET, GET; any other command
-- answers +OK. Enough for `redis-benchmark -t ping,set,get`; used by
-- scripts/bench against luv and redis-server (the stream-style version is
-- examples/resp_server.lua). Written against the public Lua
-- API only, the way a user would.
--
--   lua examples/callback/resp_server.lua [address] [threads]   (default 127.0.0.1:6379, 2)
--
-- Requests may be pipelined and may arrive split anywhere (even inside a
-- bulk string): the unparsed tail waits in session.buf for the next on_recv.
local iocore = require "iocore"

local address = arg and arg[1] or "127.0.0.1:6379"
local threads = tonumber(arg and arg[2]) or 2
local core = assert(iocore.core { threads = threads })

local find, sub, byte, upper = string.find, string.sub, string.byte, string.upper
local tonumber, concat = tonumber, table.concat

local MAX_BUFFER = 64 * 1024 * 1024 -- an unfinished request larger than this is an attack
local PONG, OK, NIL = "+PONG\r\n", "+OK\r\n", "$-1\r\n"
local ERR_PROTOCOL = "-ERR Protocol error\r\n"

local db = {}
-- handlers never run at the same time (one Lua lock), so one scratch array
-- for the replies of a batch is enough
local out = {}

-- One command starting at pos. Returns the reply and the position after the
-- command; nil when the command is not complete yet; false on garbage.
local function command(data, pos)
  local name, key, value
  if byte(data, pos) == 42 then -- "*": an array of bulk strings
    local e = find(data, "\r\n", pos, true)
    if not e then return nil end
    local argc = tonumber(sub(data, pos + 1, e - 1))
    if not argc or argc > 1024 * 1024 then return false end
    pos = e + 2
    for i = 1, argc do
      if byte(data, pos) ~= 36 then -- "$"
        if pos > #data then return nil end
        return false
      end
      e = find(data, "\r\n", pos, true)
      if not e then return nil end
      local len = tonumber(sub(data, pos + 1, e - 1))
      if not len or len < 0 then return false end
      pos = e + 2
      local stop = pos + len - 1
      if stop + 2 > #data then return nil end
      if i <= 3 then
        local arg = sub(data, pos, stop)
        if i == 1 then name = arg elseif i == 2 then key = arg else value = arg end
      end
      pos = stop + 3
    end
  else -- an inline command: words up to CRLF
    local e = find(data, "\r\n", pos, true)
    if not e then
      if #data - pos > 65536 then return false end
      return nil
    end
    local line = sub(data, pos, e - 1)
    pos = e + 2
    local i = 0
    for w in line:gmatch("%S+") do
      i = i + 1
      if i == 1 then name = w elseif i == 2 then key = w elseif i == 3 then value = w else break end
    end
    if not name then return "", pos end -- an empty line: no reply
  end
  if name ~= "PING" and name ~= "SET" and name ~= "GET" then name = name and upper(name) end
  if name == "PING" then
    return PONG, pos
  elseif name == "SET" then
    if key and value then db[key] = value end
    return OK, pos
  elseif name == "GET" then
    local v = key and db[key]
    if not v then return NIL, pos end
    return "$" .. #v .. "\r\n" .. v .. "\r\n", pos
  end
  return OK, pos
end

local function on_recv(s, data)
  local buf = s.buf
  if buf then data = buf .. data; s.buf = nil end
  local pos, len, n = 1, #data, 0
  while pos <= len do
    local reply, next_pos = command(data, pos)
    if reply == nil then break end
    if reply == false then
      n = n + 1; out[n] = ERR_PROTOCOL
      s:send(concat(out, "", 1, n))
      s:close()
      return
    end
    n = n + 1; out[n] = reply
    pos = next_pos
  end
  if n == 1 then
    s:send(out[1])
  elseif n > 1 then
    s:send(concat(out, "", 1, n))
  end
  if pos <= len then
    if len - pos >= MAX_BUFFER then s:abort() return end
    s.buf = sub(data, pos)
  end
end

local server = assert(core:listen(address, { accepts = 64, on_recv = on_recv }))
io.stdout:setvbuf("line")
print(("resp_server on %s (%s, %d threads)"):format(server:address(), core:backend(), core:threads()))
core:run()
