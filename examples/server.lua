-- The classic IOCP demo server made real: accept clients, say who connected, echo what
-- they send, say when they leave. Ctrl-C stops it cleanly.
--
--   lua examples/server.lua [address]        (default 127.0.0.1:7777)
local iocore = require "iocore"

local address = arg and arg[1] or "127.0.0.1:7777"
local core = assert(iocore.core { threads = 2 })
local server = assert(core:listen(address, { accepts = 16 }))

io.stdout:setvbuf("line")
print(("listening on %s (%s, %d threads)"):format(server:address(), core:backend(), core:threads()))

server:on_accept(function(session)
  print("client connected", session:peer())
  session:on_recv(function(s, data) s:send(data) end)
  session:on_close(function(s, err)
    print("client left", s:peer(), err or "")
  end)
end)

core:run()
print("server stopped")
