-- A repeating timer slower than its interval: every(5) whose handler runs
-- for 20 ms. run(timeout), stop() and SIGTERM must still get the Lua state
-- back, and at most one firing of the timer is ever queued. Prints "ready",
-- then "run <result>", "max_queued <n>", "ticks <n>" and "done".
--
--   lua5.4 tests/lua/scripts/timer_storm.lua timeout|stop|signal
local iocore = require "iocore"
io.stdout:setvbuf("line")
local mode = arg[1] or "timeout"

local core = assert(iocore.core { threads = 2, signals = mode == "signal" })
local max_queued, ticks = 0, 0
local function busy(ms)
  local deadline = os.clock() + ms / 1000
  while os.clock() < deadline do end
end
local t = core:every(5, function()
  ticks = ticks + 1
  local q = core:stats().queued
  if q > max_queued then max_queued = q end
  busy(20)
end)
if mode == "stop" then core:after(300, function() core:stop() end) end
print("ready")
local r
if mode == "timeout" then
  r = core:run(300)
else
  r = core:run(60000)
end
print("run", r)
print("max_queued", max_queued)
print("ticks", ticks)
t:cancel()
print("close", core:close())
print("done")
