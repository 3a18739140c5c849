-- The HTTP keep-alive "Hello, World!" of job 10 in stream style, used until
-- examples/http_server.lua exists. HTTP/1.0 requests without
-- "Connection: keep-alive" are answered and closed, as by examples/http_hello.lua.
--
--   lua bench/http_stream.lua [address] [threads]   (default 127.0.0.1:8080, 2)
local iocore = require "iocore"

local address = arg and arg[1] or "127.0.0.1:8080"
local threads = tonumber(arg and arg[2]) or 2
local core = assert(iocore.core { threads = threads })

local RESPONSE = "HTTP/1.1 200 OK\r\nContent-Length: 13\r\nContent-Type: text/plain\r\n\r\nHello, World!"
local find, lower = string.find, string.lower

local function serve(s)
  while true do
    local request = s:read_line()
    if not request then return end
    local keep = not find(request, "HTTP/1.0", 1, true)
    while true do -- the headers, up to the empty line
      local h = s:read_line()
      if not h then return end
      if h == "" then break end
      if not keep and find(lower(h), "keep-alive", 1, true) then keep = true end
    end
    s:write(RESPONSE)
    if not keep then return end
  end
end

local server = assert(core:listen(address, { accepts = 64, handler = serve }))
io.stdout:setvbuf("line")
print(("http_stream on %s (%s, %d threads)"):format(server:address(), core:backend(), core:threads()))
core:run()
