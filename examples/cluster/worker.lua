-- One of several processes serving one port (SO_REUSEPORT): each line a
-- client sends comes back prefixed with the process that served it.
--
--   lua5.4 examples/cluster/worker.lua [address]        (default 127.0.0.1:7780)
--   scripts/cluster -n 4 examples/cluster/worker.lua 127.0.0.1:7780
--
-- With `reuseport = true` on every listener, the kernel spreads incoming
-- connections over the processes (by a hash of the client's address and
-- port); each process has its own workers, Lua state and sessions, and shares
-- nothing with the others. Ctrl-C (SIGINT) or SIGTERM stops it gracefully.
local iocore = require "iocore"

local address = arg and arg[1] or "127.0.0.1:7780"
local node = os.getenv("IOCORE_CLUSTER_NODE") or "1"
local core = assert(iocore.core { threads = 1 })

-- The process id, without a C helper: /proc/self is this process.
local pid = "?"
local link = io.open("/proc/self/stat")
if link then pid = link:read("l"):match("^(%d+)") or "?"; link:close() end

local served = 0
local server = assert(core:listen(address, {
  reuseport = true,
  on_accept = function(s)
    served = served + 1
    s.buffer = ""
  end,
  on_recv = function(s, data)
    s.buffer = s.buffer .. data
    for line in s.buffer:gmatch("([^\n]*)\n") do
      s:send(("node %s pid %s: %s\n"):format(node, pid, line))
    end
    s.buffer = s.buffer:match("[^\n]*$")
    if #s.buffer > 65536 then s:close() end
  end,
}))

io.stdout:setvbuf("line")
print(("node %s pid %s listening on %s"):format(node, pid, server:address()))
core:run()
print(("node %s pid %s stopped after %d connection(s)"):format(node, pid, served))
core:close()
