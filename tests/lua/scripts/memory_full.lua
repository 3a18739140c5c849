-- A core whose Lua state is full (memory_limit reached) while work keeps
-- arriving on the workers: received data to turn into strings, sessions to
-- accept and make objects for, timers to fire, errors to report. None of it
-- may crash the process: each failure goes to on_error (or stderr) and ends
-- only the session concerned. Prints "survived" and counters at the end.
--
--   lua5.4 tests/lua/scripts/memory_full.lua recv|accept|timer
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
local size
local function grab() hog = { hog, string.rep("h", size) } end
local function grab_node() hog = { hog } end
local function fill()
  for _, s in ipairs { 1 << 20, 64 << 10, 4 << 10, 256 } do
    size = s
    while pcall(grab) do end
  end
  while pcall(grab_node) do end
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
  -- received strings must be made while the state is full
  clients[1] = core:connect(l:address(), { on_connect = function(s) s:send(payload) end })
elseif what == "accept" then
  -- on_accept: a session object per accept, made while the state is full
  for i = 1, 4 do clients[i] = core:connect(l:address()) end
end
print("run", core:run(1500))
hog = nil
collectgarbage()
collectgarbage()
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
