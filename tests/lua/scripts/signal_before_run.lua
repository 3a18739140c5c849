-- A server that has a core and a listener but has not reached run() yet
-- when it says "ready": it then waits (without running the core) until the
-- test has sent its signal(s) and said so by creating the file named in
-- arg[2], and only then calls run().
--   lua signal_before_run.lua <threads> <go-file> [run-timeout-ms]
local iocore = require "iocore"
local core = assert(iocore.core { threads = tonumber(arg[1]) or 1 })
local l = assert(core:listen("127.0.0.1:0"))
io.stdout:setvbuf("line")
print("ready", l:address())
local deadline = os.time() + 20
while os.time() < deadline do
  local f = io.open(arg[2], "rb")
  if f then f:close() break end
  os.execute("sleep 0.02")
end
local stopped = core:run(tonumber(arg[3]) or 10000)
print("run returned", stopped)
print("listeners closed", core:stats().accepts_posted == 0)
core:close()
print("exit")
