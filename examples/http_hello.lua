-- HTTP/1.1 "Hello, World!" with keep-alive; HTTP/1.0 requests (without
-- "Connection: keep-alive") are answered and closed. Used by scripts/bench.
--
--   lua examples/http_hello.lua [address] [threads]   (default 127.0.0.1:8080, 2)
local iocore = require "iocore"

local address = arg and arg[1] or "127.0.0.1:8080"
local threads = tonumber(arg and arg[2]) or 2
local core = assert(iocore.core { threads = threads })

local RESPONSE = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!"
local find, sub, lower = string.find, string.sub, string.lower

local function on_recv(s, data)
  local buf = s.buf
  if buf then data = buf .. data; s.buf = nil end
  local pos, n = 1, 0
  while true do
    local e = find(data, "\r\n\r\n", pos, true)
    if not e then break end
    local head = sub(data, pos, e)
    pos = e + 4
    n = n + 1
    if find(head, "HTTP/1.0", 1, true) and not find(lower(head), "keep-alive", 1, true) then
      s:send(RESPONSE)
      s:close()
      return
    end
  end
  if n == 1 then
    s:send(RESPONSE)
  elseif n > 1 then
    s:send(RESPONSE:rep(n))
  end
  if pos <= #data then
    local rest = sub(data, pos)
    if #rest > 65536 then s:abort() return end -- no header that large
    s.buf = rest
  end
end

local server = assert(core:listen(address, { accepts = 64, on_recv = on_recv }))
io.stdout:setvbuf("line")
print(("http_hello on %s (%s, %d threads)"):format(server:address(), core:backend(), core:threads()))
core:run()
