-- A core whose Lua state is full (memory_limit reached) while work keeps
-- arriving on the workers: received data to turn into strings, sessions to
-- accept and make objects for, timers to fire, errors to report. None of it
-- may crash the process: each failure goes to on_error (or stderr) and ends
-- only the session concerned. Prints "survived" and counters at the end.
--
--   lua5.4 tests/lua/scripts/memory_full.lua recv|accept|timer
--
-- Filling the state takes its time (half a second under TSan, more on a
-- loaded machine), so the script runs until the work it waits for has been
-- done with the state full, not for a fixed time: "full" says whether the
-- fill ended, "done" whether that work was seen while full. While the state
-- is full the loop allocates nothing: it reads only C-side facts
-- (s:closed()) and integers the handlers keep.
local iocore = require "iocore"
io.stdout:setvbuf("line")
local what = arg[1] or "recv"

collectgarbage()
collectgarbage()
local base = collectgarbage("count") * 1024
local core = assert(iocore.core { threads = 2, signals = false, memory_limit = math.floor(base + 8 * 2 ^ 20) })
local payload = string.rep("p", 256 * 1024)
local hog, errors, closes, recvs, ticks = {}, 0, 0, 0, 0
core:on_error(function() errors = errors + 1 end)

-- Fills the state until not even a small table can be allocated (a chain
-- of nodes: no table has to grow).
local size, full, ticks_when_full
local function grab() hog = { hog, string.rep("h", size) } end
local function grab_node() hog = { hog } end
local function fill()
  for _, s in ipairs { 1 << 20, 64 << 10, 4 << 10, 256 } do
    size = s
    while pcall(grab) do end
  end
  while pcall(grab_node) do end
  full, ticks_when_full = true, ticks
end

local l = assert(core:listen("127.0.0.1:0", {
  on_accept = what == "accept" and function(s) s.seen = true end or nil,
  on_recv = function(s, d) recvs = recvs + 1 end,
  on_close = function(s, err) closes = closes + 1 end,
}))
local t = what == "timer" and core:every(5, function() ticks = ticks + 1 end)

-- The post runs first (queued before any connection event): everything
-- after it happens with the state full.
core:post(fill)
local clients = {}
if what == "recv" then
  -- the server session is lazy (no on_accept): its object and the
  -- received strings must be made while the state is full; failing them
  -- aborts the server session, and the client sees it close
  clients[1] = core:connect(l:address(), { on_connect = function(s) s:send(payload) end })
elseif what == "accept" then
  -- on_accept: a session object per accept, made while the state is
  -- full; failing it aborts the session, and its client sees it close
  for i = 1, 4 do clients[i] = core:connect(l:address()) end
end

local function all_clients_closed()
  for i = 1, #clients do
    if not clients[i]:closed() then return false end
  end
  return true
end

-- What must have happened with the state full before it is emptied.
local function done()
  if not full then return false end
  if what == "timer" then return ticks >= ticks_when_full + 50 end
  return all_clients_closed()
end

-- Bounded (the test kills the process at 30 s): a failure to do the work
-- shows as done false and the counts below, not as a hang.
local deadline = core:now() + 15000
local ran
while not done() and core:now() < deadline do ran = core:run(50) end
local finished = done()
hog = nil
collectgarbage()
collectgarbage()
print("run", ran)
print("full", full, "done", finished)
if t then t:cancel() end
for _, c in ipairs(clients) do if not c:closed() then c:abort() end end
l:close()
for _ = 1, 200 do
  local st = core:stats()
  if st.active == 0 and st.queued == 0 then break end
  core:run(10)
end
print("errors", errors, "handler_errors", core:stats().handler_errors)
print("active", core:stats().active)
-- still usable once memory is back
local ok = false
core:post(function() ok = #string.rep("y", 1000) == 1000 end)
core:run(200)
print("usable", ok)
print("close", core:close())
print("survived")
