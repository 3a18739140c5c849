-- The timer-storm server of tests/stress/test_edges.lua: many repeating
-- timers, a share of them with handlers slower than their interval, chains
-- of one-shot timers whose firing order is checked against their deadlines,
-- and an echo listener for the load generator's ping client, all while the
-- script drives the core with run(slice) and measures how late each run()
-- returns.
--
--   lua5.4 tests/stress/timer_storm.lua timers=N slow=N slice=MS secs=S [threads=N]
--
-- Prints "listening on ADDR"; for S seconds drives the core with
-- run(slice); then prints "waiting" and calls run() without a time-out
-- (SIGTERM/SIGINT outside run() would kill the process: the signals are
-- only caught while run() is active), which a SIGTERM ends with a graceful
-- stop (run() returns true). Then one line
--   STORM ticks=.. slow_ticks=.. max_queued=.. runs=.. max_run_late_ms=..
--         oneshots=.. order_violations=.. stop_ms=..
-- and exit 0. stop_ms: how long the final run() took after the signal is
-- not known here; the test measures it from outside.
local iocore = require "iocore"

local opt = {}
for _, a in ipairs(arg) do
  local k, v = a:match("^([%w_]+)=(.*)$")
  if not k then error("timer_storm.lua: bad argument " .. a) end
  opt[k] = tonumber(v) or v
end
local TIMERS, SLOW, SLICE = opt.timers or 200, opt.slow or 10, opt.slice or 200

local core = assert(iocore.core { threads = opt.threads or 2 })
io.stdout:setvbuf("line")

local C = { ticks = 0, slow_ticks = 0, max_queued = 0, runs = 0, max_run_late_ms = 0, oneshots = 0,
            order_violations = 0 }

local function busy(ms)
  local untilt = core:now() + ms
  while core:now() < untilt do end
end

-- repeating timers: intervals 1..20 ms; the first SLOW spin 20 ms on an
-- interval of 5 ms (a handler slower than its interval)
for i = 1, TIMERS do
  if i <= SLOW then
    core:every(5, function()
      C.slow_ticks = C.slow_ticks + 1
      busy(20)
    end)
  else
    core:every(1 + i % 20, function()
      C.ticks = C.ticks + 1
      local q = core:stats().queued
      if q > C.max_queued then C.max_queued = q end
    end)
  end
end

-- one-shot batches: every 50 ms, 20 timers with random delays 0..30 ms.
-- A timer's deadline is the clock when after() read it plus its delay; the
-- script brackets that read between its own clock readings before and after
-- the call (the thread may be descheduled in between), so each timer's
-- deadline is known to lie in [lo, hi]. A timer that fires after one of its
-- batch whose deadline is certainly later (hi < the largest lo fired so
-- far) is an order violation.
local batch = 0
core:every(50, function()
  batch = batch + 1
  local b = { max_lo = -1 }
  for _ = 1, 20 do
    local delay = math.random(0, 30)
    local lo = core:now() + delay
    local w = { lo = lo }
    core:after(delay, function()
      C.oneshots = C.oneshots + 1
      if w.hi < b.max_lo then C.order_violations = C.order_violations + 1 end
      if w.lo > b.max_lo then b.max_lo = w.lo end
    end)
    w.hi = core:now() + delay
  end
end)

-- echo, after a one-line header (the load generator's ping sends "E\n")
local l = assert(core:listen(opt.address or "127.0.0.1:0", {
  on_recv = function(s, d)
    if not s.header_done then
      local nl = d:find("\n", 1, true)
      if not nl then return end
      s.header_done = true
      d = d:sub(nl + 1)
    end
    if #d > 0 then s:send(d) end
  end,
}))
print("listening on " .. l:address())

local t_end = core:now() + (opt.secs or 10) * 1000
while core:now() < t_end do
  local t0 = core:now()
  local r = core:run(SLICE)
  local late = core:now() - t0 - SLICE
  C.runs = C.runs + 1
  if r == true then break end
  if late > C.max_run_late_ms then C.max_run_late_ms = late end
end
print("waiting")
C.final_run = tostring(core:run())

local keys = {}
for k in pairs(C) do keys[#keys + 1] = k end
table.sort(keys)
local out = {}
for _, k in ipairs(keys) do out[#out + 1] = ("%s=%s"):format(k, tostring(C[k])) end
print("STORM " .. table.concat(out, " "))
