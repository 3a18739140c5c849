-- A line chat: every line a client sends goes to every other client.
--
--   lua examples/callback/chat.lua [address]          (default 127.0.0.1:7778)
local iocore = require "iocore"

local address = arg and arg[1] or "127.0.0.1:7778"
local core = assert(iocore.core { threads = 2 })
local members = {}   -- session -> true

local function broadcast(from, line)
  for s in pairs(members) do
    if s ~= from then
      local ok, err, code = s:send(line)
      if not ok and code == "ENOBUFS" then s:abort() end -- a member that never reads
    end
  end
end

local server = assert(core:listen(address, {
  on_accept = function(s)
    members[s] = true
    s.buffer = ""
    broadcast(s, ("* %s joined\n"):format(s:peer()))
  end,
  on_recv = function(s, data)
    s.buffer = s.buffer .. data
    while true do
      local nl = s.buffer:find("\n", 1, true)
      if not nl then break end
      local line = s.buffer:sub(1, nl)
      s.buffer = s.buffer:sub(nl + 1)
      broadcast(s, ("%s: %s"):format(s:peer(), line))
    end
    if #s.buffer > 65536 then s:close() end -- no line that long
  end,
  on_close = function(s)
    members[s] = nil
    broadcast(s, ("* %s left\n"):format(s:peer()))
  end,
}))

io.stdout:setvbuf("line")
print(("chat on %s"):format(server:address()))
core:run()
