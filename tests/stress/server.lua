-- The server under test in the stress suite: a small iocore program using
-- only the public Lua API, driven by tests/stress/loadgen.c.
--
--   lua5.4 tests/stress/server.lua stats=FILE [key=value ...]
--
-- Keys: threads, handler_timeout, memory_limit, close_timeout (core
-- options); idle_timeout, max_connections, max_pending, accepts, backlog
-- (listener options); greet=1 (send "G\n" to every accepted session); port
-- (default 0 = any);
-- echo_delay_ms (every echo handler call spins that long first);
-- storm_ms (a repeating timer every 2 ms whose handler spins this long: a
-- timer slower than its interval, for the whole run).
-- The backend is the default one, so IOCORE_BACKEND chooses it.
--
-- Every connection starts with one header line saying what it wants:
--   E                          echo everything that follows
--   B <n>                      receive n bytes of 1 KiB records (indices
--                              0..63, repeating), then anything sent is ignored
--   S <count> <size> <action> <burst>
--                              `count` sends of one `size`-byte record each
--                              (indices 1..count), `burst` per 1 ms timer
--                              tick; a send refused with ENOBUFS is counted as
--                              dropped and not retried. Then `action`: close
--                              (graceful), abort, or none.
--   Q                          core:stop() (a graceful stop from a handler)
--   L                          a runaway handler: while true do end
--   C                          a runaway that hides: in a coroutine, inside
--                              pcall, catching the time-out and looping on
--   M                          a memory bomb: string.rep("x", 2^30)
-- A header longer than 256 bytes, or an unknown one, aborts the session.
--
-- Every stats_ms (default 100) ms the server rewrites FILE in place (kept
-- open: at EMFILE no file could be opened) with one line of key=value
-- pairs: the port, core:stats() as st_*, the process RSS and CPU time, and
-- its own counters, ending in "end=1". SIGTERM/SIGINT stop it gracefully
-- (core:run() returns true); it then writes the file a last time with
-- stopped=true and exits 0 (the end of the script).
local iocore = require "iocore"

local opt = {}
for _, a in ipairs(arg) do
  local k, v = a:match("^([%w_]+)=(.*)$")
  if not k then error("server.lua: bad argument " .. a) end
  opt[k] = v
end
local function num(k) return opt[k] and tonumber(opt[k]) or nil end

local statsf = assert(io.open(assert(opt.stats, "stats=FILE is required"), "w"))
-- Kept open and read again from the start each time, unbuffered: a
-- buffered seek to 0 would be served from the stale buffer.
local statm = assert(io.open("/proc/self/statm", "r"))
local uptime = assert(io.open("/proc/uptime", "r"))
statm:setvbuf("no")
uptime:setvbuf("no")

local function now_ms()
  uptime:seek("set", 0)
  return math.floor(uptime:read("n") * 1000)
end

local function rss_kb()
  statm:seek("set", 0)
  local _, res = statm:read("n", "n")
  return res * 4
end

local core = assert(iocore.core {
  threads = num("threads"),
  handler_timeout = num("handler_timeout"),
  memory_limit = num("memory_limit"),
  close_timeout = num("close_timeout"),
})

-- ---- counters --------------------------------------------------------------------

local C = {
  accepted = 0, closed = 0, close_clean = 0, close_err = 0, errors = 0, traceback = 0,
  send_fail = 0, bad_header = 0, drains = 0,
  -- accounted sends
  acct_ok = 0, acct_enobufs = 0, acct_other = 0, acct_hash = "h0", acct_drains = 0,
  acct_pending_end = -1, acct_written = -1, acct_close = "-", acct_done = 0,
  stop_asked = 0,
}
local last_error = "-"
local close_codes = {}
local open = {} -- open sessions (for the pending total)

core:on_error(function(msg, s)
  C.errors = C.errors + 1
  last_error = tostring(msg)
  if last_error:find("stack traceback", 1, true) then C.traceback = C.traceback + 1 end
end)

-- ---- records -----------------------------------------------------------------------

local FILL = ("abcdefghijklmnopqrstuvwxyz"):rep(1 + (1 << 16) // 26 + 2)
local function record(i, size)
  local off = i % 26
  return ("R%09d|"):format(i) .. FILL:sub(off + 1, off + size - 11)
end
local BLOCK -- 64 KiB: records 0..63 of 1 KiB
do
  local t = {}
  for i = 0, 63 do t[#t + 1] = record(i, 1024) end
  BLOCK = table.concat(t)
end

local function send_big(s, n)
  while n > 0 do
    local take = n < #BLOCK and n or #BLOCK
    local ok, err = s:send(take == #BLOCK and BLOCK or BLOCK:sub(1, take))
    if not ok then
      C.send_fail = C.send_fail + 1
      return
    end
    n = n - take
  end
end

-- ---- accounted sends ----------------------------------------------------------------

local function accounted(s, count, size, action, burst)
  local i, hash = 0, 0
  local start_out = core:stats().bytes_out
  s.acct = true
  local t
  t = core:every(1, function()
    for _ = 1, burst do
      if i >= count then break end
      i = i + 1
      local ok, _, code = s:send(record(i, size))
      if ok then
        C.acct_ok = C.acct_ok + 1
        hash = hash ~ (i * 0x9E3779B97F4A7C15)
        C.acct_hash = ("h%x"):format(hash)
      elseif code == "ENOBUFS" then
        C.acct_enobufs = C.acct_enobufs + 1
      else
        C.acct_other = C.acct_other + 1
      end
    end
    if i >= count then
      t:cancel()
      C.acct_pending_end = s:pending()
      C.acct_done = 1
      if action == "close" then s:close()
      elseif action == "abort" then s:abort() end
    end
  end)
  s.acct_start_out = start_out
end

-- ---- the protocol --------------------------------------------------------------------------

local handlers = {}
-- echo_delay_ms: every echo handler call spins this long first, so the
-- C side (receives, the peer's FIN) runs ahead of the Lua handlers
local delay = num("echo_delay_ms") and num("echo_delay_ms") / 1000

function handlers.on_accept(s)
  C.accepted = C.accepted + 1
  open[s] = true
  s.head = ""
  if opt.greet == "1" then s:send("G\n") end
end

local function command(s, line, rest)
  local cmd, a, b, c, d = line:match("^(%u)%s*(%S*)%s*(%S*)%s*(%S*)%s*(%S*)$")
  if cmd == "E" then
    s.mode = "echo"
    if #rest > 0 and not s:send(rest) then C.send_fail = C.send_fail + 1 end
  elseif cmd == "B" and tonumber(a) then
    s.mode = "sink"
    send_big(s, tonumber(a))
  elseif cmd == "S" and tonumber(a) and tonumber(b) then
    s.mode = "sink"
    accounted(s, tonumber(a), tonumber(b), c, tonumber(d) or 100)
  elseif cmd == "Q" then
    s.mode = "sink"
    C.stop_asked = 1
    core:stop()
  elseif cmd == "L" then
    s.mode = "sink"
    while true do end
  elseif cmd == "C" then
    s.mode = "sink"
    coroutine.wrap(function()
      while true do pcall(function() while true do end end) end
    end)()
  elseif cmd == "M" then
    s.mode = "sink"
    local bomb = string.rep("x", 1 << 30)
    s.bomb = bomb -- never reached
  else
    C.bad_header = C.bad_header + 1
    s:abort()
  end
end

function handlers.on_recv(s, data)
  local mode = s.mode
  if mode == "echo" then
    if delay then
      local t = os.clock() + delay
      repeat until os.clock() >= t
    end
    if not s:send(data) then C.send_fail = C.send_fail + 1 end
    return
  elseif mode == "sink" then
    return
  end
  local head = s.head .. data
  local nl = head:find("\n", 1, true)
  if not nl then
    if #head > 256 then
      C.bad_header = C.bad_header + 1
      s:abort()
    else
      s.head = head
    end
    return
  end
  s.head = nil
  command(s, head:sub(1, nl - 1), head:sub(nl + 1))
end

function handlers.on_drain(s)
  C.drains = C.drains + 1
  if s.acct then C.acct_drains = C.acct_drains + 1 end
end

function handlers.on_close(s, err)
  open[s] = nil
  C.closed = C.closed + 1
  if err then
    C.close_err = C.close_err + 1
    local code = err:match("^(E%u+)") or "E?"
    close_codes[code] = (close_codes[code] or 0) + 1
  else
    C.close_clean = C.close_clean + 1
  end
  if s.acct then
    C.acct_close = err and (err:match("^(E%u+)") or "E?") or "clean"
    C.acct_written = core:stats().bytes_out - s.acct_start_out
  end
end

local lopts = {
  idle_timeout = num("idle_timeout"),
  max_connections = num("max_connections"),
  max_pending = num("max_pending"),
  accepts = num("accepts"),
  backlog = num("backlog"),
}
for k, v in pairs(handlers) do lopts[k] = v end
local listener = assert(core:listen("127.0.0.1:" .. (opt.port or "0"), lopts))
local port = listener:port()

-- ---- the stats file ---------------------------------------------------------------------------

local function write_stats(extra)
  -- With no session open, collect: a closed session's C side is freed when
  -- its Lua object is, so only then do the leak counters mean something.
  if next(open) == nil then collectgarbage() end
  local st = core:stats()
  local parts = { ("port=%d t=%d rss_kb=%d cpu=%.3f"):format(port, now_ms(), rss_kb(), os.clock()) }
  for _, k in ipairs({ "accepted", "connected", "active", "closed", "bytes_in", "bytes_out", "accepts_posted",
                       "completions", "handler_errors", "rejected", "objects", "ops_inflight", "sockets",
                       "queued", "memory", "stack" }) do
    parts[#parts + 1] = ("st_%s=%s"):format(k, tostring(st[k]))
  end
  for k, v in pairs(C) do parts[#parts + 1] = ("%s=%s"):format(k, tostring(v)) end
  local pending, nopen = 0, 0
  for s in pairs(open) do
    nopen = nopen + 1
    pending = pending + s:pending()
  end
  parts[#parts + 1] = ("open=%d pending=%d"):format(nopen, pending)
  for code, n in pairs(close_codes) do parts[#parts + 1] = ("close_%s=%d"):format(code, n) end
  parts[#parts + 1] = "last_error=" .. (last_error:gsub("%s+", "_"):sub(1, 300))
  if extra then parts[#parts + 1] = extra end
  parts[#parts + 1] = "end=1"
  local line = table.concat(parts, " ")
  statsf:seek("set", 0)
  -- padded so a shorter line never leaves the tail of a longer one behind
  statsf:write(line, (" "):rep(math.max(0, 4096 - #line)), "\n")
  statsf:flush()
end

core:every(tonumber(opt.stats_ms or 100), function() write_stats() end)
if num("storm_ms") then
  local spin = num("storm_ms") / 1000
  C.storm_ticks = 0
  core:every(2, function()
    C.storm_ticks = C.storm_ticks + 1
    local t = os.clock() + spin
    repeat until os.clock() >= t
  end)
end
write_stats() -- the first line, with the timer above already counted in st_objects
io.stdout:write(("PORT %d\n"):format(port))
io.stdout:flush()

local stopped = core:run()
write_stats("stopped=" .. tostring(stopped))
local codes = {}
for code, n in pairs(close_codes) do codes[#codes + 1] = code .. ":" .. n end
table.sort(codes)
io.stdout:write(("STOPPED %s closed=%d clean=%d codes=%s\n"):format(tostring(stopped), C.closed, C.close_clean,
  #codes > 0 and table.concat(codes, ",") or "-"))
