-- Helpers for testing iocore servers with luaunit (or any test framework):
--
--   local T = require "iocore.test"
--   local srv = T.start_server("server.lua", { args = { "127.0.0.1:0" }, ready = "listening on (%S+)" })
--   local core = T.core()
--   local c = assert(T.connect(core, srv.address))
--   c:send("hello\n")
--   assert(c:read_line() == "hello")
--   c:close(); srv:stop(); T.close(core)
--
-- A server under test runs either in a subprocess (start_server: the real
-- script, as users start it) or in-process on a core of the test
-- (T.core(), then the script's own setup function on it). The test client
-- is sequential: each read runs the core until the data is there or a
-- deadline passes, so a test reads like a conversation, without callbacks.
--
-- Everything is bounded: a read, a connect and run_until have a deadline;
-- a server process has a lifetime limit (`timeout` runs it) and stop()
-- sends SIGTERM, then SIGKILL to its process group if it does not exit.
-- Servers still running when the test program ends are killed too.
local iocore = require "iocore"

local T = {}

T.default_timeout = 5000   -- ms: reads, connects, run_until, a server's readiness
T.server_lifetime = 600    -- s: a server process is killed after this long, whatever happens
-- ms server:stop() waits after SIGTERM before SIGKILL: more than the grace
-- a stopping iocore server gives its open sessions (5 s by default)
T.stop_grace = 10000
T.close_timeout = 2000     -- ms: T.close waits this long for sessions to close
T.lua = (arg and arg[-1]) or "lua5.4" -- the interpreter running this program (for start_server)

-- ---- time -----------------------------------------------------------------------

-- Milliseconds from a monotonic clock (the core's when it has one, else
-- /proc/uptime, else the wall clock): only for deadlines.
local function now_ms(core)
  if core and core.now then return core:now() end
  local f = io.open("/proc/uptime", "r")
  if f then
    local s = f:read("n")
    f:close()
    if s then return s * 1000 end
  end
  return os.time() * 1000
end
T.now = now_ms

local function sleep_ms(ms)
  os.execute(("sleep %.3f"):format(ms / 1000))
end

local function fail(code, text)
  return nil, code .. ": " .. text, code
end

-- ---- cores -----------------------------------------------------------------------

local core_errors = setmetatable({}, { __mode = "k" })

-- A core for a test: no signal handling (the test program keeps Ctrl-C),
-- one worker unless opts say otherwise, and handler errors collected for
-- T.errors(core) instead of printed. opts as for iocore.core.
function T.core(opts)
  local o = { threads = 1, signals = false }
  for k, v in pairs(opts or {}) do o[k] = v end
  local core, msg, code = iocore.core(o)
  if not core then return nil, msg, code end
  local errs = {}
  core_errors[core] = errs
  core:on_error(function(m) errs[#errs + 1] = m end)
  return core
end

-- The handler errors of a core made by T.core, oldest first.
function T.errors(core) return core_errors[core] or {} end

-- Runs `core` until cond() returns true or `deadline_ms` (default
-- T.default_timeout) pass. Returns true, or nil, "ETIMEDOUT: ...",
-- "ETIMEDOUT". cond is checked between short run slices, so the core's
-- handlers and the test's code never run at the same time.
function T.run_until(core, cond, deadline_ms)
  local limit = deadline_ms or T.default_timeout
  local deadline = now_ms(core) + limit
  while not cond() do
    if now_ms(core) >= deadline then
      if cond() then return true end
      return fail("ETIMEDOUT", ("condition not met within %d ms"):format(limit))
    end
    core:run(10)
  end
  return true
end

-- Ends a test's core: stops what runs (sessions closed gracefully, up to
-- `deadline_ms`, default T.close_timeout), then closes it. Returns true, or nil, msg, code when
-- something was still open (the core is closed anyway).
function T.close(core, deadline_ms)
  collectgarbage()
  local ok = T.run_until(core, function()
    local st = core:stats()
    return st.active == 0 and st.queued == 0
  end, deadline_ms or T.close_timeout)
  local open = core:stats().active
  core:close()
  if not ok then return fail("EBUSY", ("%d session(s) still open when the core closed"):format(open)) end
  return true
end

-- ---- a sequential client -----------------------------------------------------------

local Client = {}
Client.__index = Client

-- Connects to `address` through `core` and waits for the connection.
-- Returns a client, or nil, msg, code (ECONNREFUSED, ETIMEDOUT, EINVAL...).
-- opts.timeout: ms for the connect and the default for every read.
function T.connect(core, address, opts)
  opts = opts or {}
  local c = setmetatable({ core = core, buf = "", timeout = opts.timeout or T.default_timeout }, Client)
  local s, msg, code = core:connect(address, {
    on_connect = function(_, err) c.connected, c.connect_err = true, err end,
    on_recv = function(_, data) c.buf = c.buf .. data end,
    on_close = function(_, err)
      c.closed, c.close_err = true, err
    end,
  })
  if not s then return nil, msg, code end
  c.s = s
  local ok, m, co = T.run_until(core, function() return c.connected end, c.timeout)
  if not ok then
    s:abort()
    return nil, m, co
  end
  if c.connect_err then
    return nil, c.connect_err, c.connect_err:match("^([%u%d_]+)") or "EUNKNOWN"
  end
  return c
end

-- Queues data (a string or an array of strings). true or nil, msg, code.
function Client:send(data)
  return self.s:send(data)
end

-- The failure of a read that could not be satisfied: the session's close,
-- or the time-out. The data received stays for the next read.
function Client:_failure(what, ms)
  if self.closed then
    if self.close_err then return nil, self.close_err, self.close_err:match("^([%u%d_]+)") or "EUNKNOWN" end
    return fail("EOF", "end of stream")
  end
  return fail("ETIMEDOUT", ("no %s within %d ms"):format(what, ms))
end

-- Waits up to ms for ready() or the close.
function Client:_wait(ready, ms)
  T.run_until(self.core, function() return ready() or self.closed end, ms)
end

-- One line without its "\n" (and "\r"), within ms (default: the client's
-- timeout). nil, msg, code on time-out ("ETIMEDOUT") or close ("EOF", or
-- the close's error).
function Client:read_line(ms)
  ms = ms or self.timeout
  self:_wait(function() return self.buf:find("\n", 1, true) ~= nil end, ms)
  local e = self.buf:find("\n", 1, true)
  if not e then return self:_failure("line", ms) end
  local line = self.buf:sub(1, e - 1)
  self.buf = self.buf:sub(e + 1)
  return (line:gsub("\r$", ""))
end

-- Exactly n bytes, or (without n) whatever has arrived, at least one byte.
function Client:read(n, ms)
  ms = ms or self.timeout
  local need = n or 1
  self:_wait(function() return #self.buf >= need end, ms)
  if #self.buf < need then return self:_failure(("%d bytes"):format(need), ms) end
  local take = n or #self.buf
  local out = self.buf:sub(1, take)
  self.buf = self.buf:sub(take + 1)
  return out
end

-- Waits for the server to close the connection; returns true, or nil,
-- "ETIMEDOUT: ...", "ETIMEDOUT". What arrived before stays readable.
function Client:wait_closed(ms)
  ms = ms or self.timeout
  self:_wait(function() return false end, ms)
  if self.closed then return true end
  return fail("ETIMEDOUT", ("the connection stayed open for %d ms"):format(ms))
end

-- Closes gracefully and waits (up to ms) for the close to finish.
function Client:close(ms)
  if not self.closed then
    self.s:close()
    self:_wait(function() return false end, ms or self.timeout)
  end
  return true
end

-- ---- a server in a subprocess -------------------------------------------------------

local running = {} -- servers not stopped yet

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

local Server = {}
Server.__index = Server

-- Everything the server wrote to stdout and stderr so far.
function Server:output() return read_file(self.files.out) or "" end

-- Whether the process has exited (then self.status is its exit status;
-- 124 or 137 mean the lifetime limit killed it).
function Server:exited()
  if self.status then return true end
  local s = read_file(self.files.status)
  if s and s:match("%d+") then
    self.status = tonumber(s:match("%d+"))
    return true
  end
  return false
end

local function remove_files(srv)
  for _, f in pairs(srv.files) do os.remove(f) end
  os.remove(srv.base)
end

-- Stops the server: SIGTERM, up to `grace_ms` (default T.stop_grace) for it to
-- exit, then SIGKILL to its whole process group. Returns the exit status
-- (nil if it could not be reaped) and the output.
function Server:stop(grace_ms)
  if not self:exited() and self.pid then
    os.execute(("kill -TERM %d 2>/dev/null"):format(self.pid))
    local deadline = now_ms() + (grace_ms or T.stop_grace)
    while not self:exited() and now_ms() < deadline do sleep_ms(20) end
    if not self:exited() then
      self.killed = true
      os.execute(("kill -KILL -%d %d 2>/dev/null"):format(self.pid, self.pid))
      deadline = now_ms() + 3000
      while not self:exited() and now_ms() < deadline do sleep_ms(20) end
    end
  end
  -- whatever is left of its process group (children that ignored the
  -- SIGTERM, or outlived the server) goes too
  if self.pid then os.execute(("kill -KILL -%d 2>/dev/null"):format(self.pid)) end
  local out = self:output()
  running[self] = nil
  remove_files(self)
  return self.status, out
end

-- Starts `lua script args...` in a subprocess and waits until its output
-- matches opts.ready (a Lua pattern; its first capture becomes
-- srv.address). opts: args (array), ready (default "listening on (%S+)"),
-- timeout (ms to wait for ready; default T.default_timeout), lua (the
-- interpreter; default the running one), env (table of extra environment
-- variables), lifetime (s; default T.server_lifetime).
-- Returns the server, or nil, msg, code: "ETIMEDOUT" (not ready in time;
-- msg has its output), "ECHILD" (it exited first; msg has its output) or
-- "ENOSYS" (on Windows: no POSIX shell to run it with).
function T.start_server(script, opts)
  opts = opts or {}
  if package.config:sub(1, 1) == "\\" then
    return fail("ENOSYS", "start_server needs a POSIX system (sh, timeout, setsid, kill)")
  end
  local base = os.tmpname()
  local srv = setmetatable({ script = script, base = base, files = {
    out = base .. ".out", pid = base .. ".pid", status = base .. ".status" } }, Server)
  local argv = { opts.lua or T.lua, script }
  for _, a in ipairs(opts.args or {}) do argv[#argv + 1] = a end
  local words = {}
  for i, a in ipairs(argv) do words[i] = shq(a) end
  local env = {}
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. shq(v) end
  -- The server runs as the leader of a process group of its own (setsid,
  -- exec'd in place by the inner sh, whose pid it keeps and writes down):
  -- stop() signals it directly (one SIGTERM, which an iocore server turns
  -- into a graceful stop) and can kill its whole group. `timeout` bounds
  -- its life (--foreground: it signals the server only, once).
  local inner = ("echo $$ >%s; exec %s setsid %s"):format(shq(srv.files.pid),
    #env > 0 and ("env " .. table.concat(env, " ")) or "", table.concat(words, " "))
  local cmd = ("( timeout --foreground -k 5 %s sh -c %s >%s 2>&1 </dev/null; echo $? >%s ) >/dev/null 2>&1 </dev/null &")
      :format(tostring(opts.lifetime or T.server_lifetime), shq(inner), shq(srv.files.out), shq(srv.files.status))
  os.execute(cmd)
  running[srv] = true
  local deadline = now_ms() + 3000
  while not srv.pid and now_ms() < deadline do
    local p = read_file(srv.files.pid)
    srv.pid = p and tonumber(p:match("%d+"))
    if not srv.pid then sleep_ms(10) end
  end
  local ready = opts.ready or "listening on (%S+)"
  local limit = opts.timeout or T.default_timeout
  deadline = now_ms() + limit
  while true do
    -- exited before the output: once it has, the output read next is all of
    -- it, so its last lines are in the message (or its ready line counts)
    local exited = srv:exited()
    local out = srv:output()
    local m = out:match(ready)
    if m then
      srv.address = m
      return srv
    end
    if exited then
      local status = srv.status
      srv:stop()
      return fail("ECHILD", ("%s exited (status %s) before it was ready; output:\n%s"):format(
        script, tostring(status), out))
    end
    if now_ms() >= deadline then
      local _, o = srv:stop()
      return fail("ETIMEDOUT", ("%s not ready within %d ms (no output matching %q); output:\n%s"):format(
        script, limit, ready, o or out))
    end
    sleep_ms(20)
  end
end

-- Stops every server still running (a test's tearDown may call it).
function T.stop_all()
  for srv in pairs(running) do srv:stop(500) end
end

-- Whatever the test program forgot is killed when it ends (the Lua state
-- closes and collects this sentinel).
T._reaper = setmetatable({}, { __gc = function() T.stop_all() end })

return T
