-- The control for the RESP job: the same server as examples/callback/resp_server.lua,
-- but with the parser and replies of ../shared/bench/peers/luv_redis.lua
-- copied verbatim (from "local db" to the end of reply), so that iocore and
-- luv run the very same Lua code per request and the difference is the
-- library's. scripts/bench reports it beside resp_server.lua.
--
--   lua bench/resp_luv_parser.lua [address] [threads]   (default 127.0.0.1:6388, 2)
local iocore = require "iocore"
local db = {}
local function parse(buf, pos)
  -- returns args table, next pos; or nil if incomplete
  if buf:byte(pos) ~= 42 then -- inline command
    local e = buf:find("\r\n", pos, true); if not e then return nil end
    local args = {}
    for w in buf:sub(pos, e - 1):gmatch("%S+") do args[#args + 1] = w end
    return args, e + 2
  end
  local e = buf:find("\r\n", pos, true); if not e then return nil end
  local n = tonumber(buf:sub(pos + 1, e - 1)); pos = e + 2
  local args = {}
  for i = 1, n do
    e = buf:find("\r\n", pos, true); if not e then return nil end
    local len = tonumber(buf:sub(pos + 1, e - 1)); pos = e + 2
    if #buf < pos + len + 1 then return nil end
    args[i] = buf:sub(pos, pos + len - 1); pos = pos + len + 2
  end
  return args, pos
end
local function reply(args)
  local cmd = args[1] and args[1]:upper()
  if cmd == "PING" then return "+PONG\r\n"
  elseif cmd == "SET" then db[args[2]] = args[3]; return "+OK\r\n"
  elseif cmd == "GET" then local v = db[args[2]]; if not v then return "$-1\r\n" end; return "$" .. #v .. "\r\n" .. v .. "\r\n"
  else return "+OK\r\n" end
end

local core = assert(iocore.core { threads = tonumber(arg and arg[2]) or 2 })
-- the luv peer's read callback, on iocore's on_recv
local function on_recv(c, data)
  local buf = (c.buf or "") .. data
  local pos, out = 1, {}
  while pos <= #buf do
    local args, np = parse(buf, pos)
    if not args then break end
    out[#out + 1] = reply(args); pos = np
  end
  c.buf = buf:sub(pos)
  if #out > 0 then c:send(table.concat(out)) end
end
local server = assert(core:listen(arg and arg[1] or "127.0.0.1:6388", { accepts = 64, on_recv = on_recv }))
io.stdout:setvbuf("line")
print(("resp_luv_parser on %s (%s, %d threads)"):format(server:address(), core:backend(), core:threads()))
core:run()
