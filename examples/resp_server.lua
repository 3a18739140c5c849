-- A RESP (Redis protocol) server in stream style: PING, ECHO, SET, GET, DEL.
-- Every connection runs serve() in a coroutine of its own, which reads one
-- request after the other as if the socket were blocking; a read that finds
-- nothing buffered parks the coroutine (no thread waits). Pipelined requests
-- and requests split anywhere need no code of their own.
--
--   lua examples/resp_server.lua [address] [threads]   (default 127.0.0.1:6379, 2)
--
-- Requests are RESP arrays of bulk strings or inline commands ("PING\r\n").
-- An unknown command or a wrong argument count gets an error reply; garbage
-- (a malformed array, a bulk string over 1 MiB) gets "-ERR Protocol error"
-- and the connection is closed. The callback-style version of this server
-- is examples/callback/resp_server.lua.
local iocore = require "iocore"

local address = arg[1] or "127.0.0.1:6379"
local threads = tonumber(arg[2]) or 2
local core = assert(iocore.core { threads = threads })

local MAX_BULK, MAX_ARGS = 1024 * 1024, 1024
local db = {}

local function bulk(v) return v and "$" .. #v .. "\r\n" .. v .. "\r\n" or "$-1\r\n" end

-- name = { fewest arguments, most arguments (the name included), run }
local commands = {
  PING = { 1, 2, function(a) return a[2] and bulk(a[2]) or "+PONG\r\n" end },
  ECHO = { 2, 2, function(a) return bulk(a[2]) end },
  SET = { 3, 3, function(a) db[a[2]] = a[3]; return "+OK\r\n" end },
  GET = { 2, 2, function(a) return bulk(db[a[2]]) end },
  DEL = { 2, MAX_ARGS, function(a)
    local n = 0
    for i = 2, #a do
      if db[a[i]] then db[a[i]], n = nil, n + 1 end
    end
    return ":" .. n .. "\r\n"
  end },
}

-- One request as an array of strings; nil at the end of the stream (or a
-- failed read); nil, reason for garbage.
local function read_request(s)
  local line = s:read_line()
  if not line then return nil end
  if line:byte(1) ~= 42 then -- not "*": an inline command
    local args = {}
    for word in line:gmatch("%S+") do args[#args + 1] = word end
    return args
  end
  local n = tonumber(line:match("^%*(%d+)$"))
  if not n or n > MAX_ARGS then return nil, "invalid multibulk length" end
  local args = {}
  for i = 1, n do
    local head = s:read_line()
    if not head then return nil end
    local len = tonumber(head:match("^%$(%d+)$"))
    if not len or len > MAX_BULK then return nil, "invalid bulk length" end
    local data = s:read(len + 2)
    if not data then return nil end
    if data:sub(-2) ~= "\r\n" then return nil, "bulk string without CRLF" end
    args[i] = data:sub(1, len)
  end
  return args
end

local function execute(args)
  local name = args[1]
  local cmd = commands[name] or commands[name:upper()]
  if not cmd then
    return ("-ERR unknown command '%s'\r\n"):format(name:sub(1, 64):gsub("%c", "?"))
  end
  if #args < cmd[1] or #args > cmd[2] then
    return ("-ERR wrong number of arguments for '%s' command\r\n"):format(name:lower())
  end
  return cmd[3](args)
end

local function serve(s)
  while true do
    local args, garbage = read_request(s)
    if not args then
      if garbage then s:write("-ERR Protocol error: " .. garbage .. "\r\n") end
      return -- the handler's end closes the connection (after the reply)
    end
    if args[1] then s:write(execute(args)) end -- an empty line gets no reply
  end
end

local server = assert(core:listen(address, { accepts = 64, handler = serve }))
io.stdout:setvbuf("line")
print(("resp_server on %s (%s, %d threads)"):format(server:address(), core:backend(), core:threads()))
core:run()
