-- Helpers shared by the Lua suite: cores that check they closed cleanly,
-- waiting without timing assertions, clients made of core:connect sessions,
-- payloads, and subprocesses (examples, signals).
--
-- Every test runs its body through H.with_core(): the body gets a fresh core
-- whose handler errors are collected (a handler error the test did not ask
-- for fails the test), and when the body returns the core is run until no
-- session, socket or operation is left, then collected and closed, and
-- core:close() must return true.
local lu = require "luaunit"
local iocore = require "iocore"

local H = { iocore = iocore, lu = lu }

H.lua = "lua5.4" -- set by run.lua to the interpreter running the suite
H.root = "."     -- set by run.lua to the repository root

-- On Windows the suite runs as `wine lua.exe` (tests/win/run_lua.sh), and
-- what it starts are Linux processes: wine's `start /unix` runs bash with
-- the same wrapper as on Linux, a Lua script runs as `wine lua.exe script`.
-- Files both sides use live in IOCORE_TEST_TMP (a Linux path; Z:\ to wine;
-- os.tmpname() is pointed there). kill("TERM") sends SIGINT, which wine
-- delivers as the console's Ctrl-C; on SIGTERM wine ends the process
-- without any console event. Tests that cannot run there are skipped with
-- the reason in tests/win/lua_skips.lua.
H.windows = package.config:sub(1, 1) == "\\"
local win = {}
if H.windows then
  win.tmp = os.getenv("IOCORE_TEST_TMP") or "/tmp"
  function win.dos(u) return "Z:" .. (u:gsub("/", "\\")) end
  function win.unix(w) return ((w:gsub("^[Zz]:", "")):gsub("\\", "/")) end
  local n = 0
  function os.tmpname()
    n = n + 1
    local name = win.dos(("%s/lua_%d_%d"):format(win.tmp, os.time(), n))
    local f = io.open(name, "w") -- made at once, as POSIX's tmpname does
    if f then f:close() end
    return name
  end
  local ok, skips = pcall(require, "lua_skips")
  win.skips = ok and skips or {}
  -- a listed test runs as a skip, without its class's setUp and tearDown
  local exec_one = lu.LuaUnit.execOneFunction
  function lu.LuaUnit:execOneFunction(class, method, instance, fn)
    local why = win.skips[tostring(class) .. "." .. tostring(method)] or win.skips[class]
    if why then
      fn, instance = function() lu.skip("on Windows: " .. why) end, {}
    end
    return exec_one(self, class, method, instance, fn)
  end
end

-- ---- time ----------------------------------------------------------------------

-- Milliseconds from a monotonic clock (/proc/uptime, 10 ms steps); only used
-- for deadlines, never in an assertion.
function H.now()
  local f = io.open("/proc/uptime", "r")
  if f then
    local s = f:read("n")
    f:close()
    if s then return s * 1000 end
  end
  return os.time() * 1000
end

-- Runs `core` in short slices until cond() is true or `ms` pass. Returns
-- whether cond() became true. A slice that ends in stop() is fine: the core
-- stays usable.
function H.wait(core, cond, ms)
  local deadline = H.now() + (ms or 10000)
  while not cond() do
    if H.now() > deadline then return cond() end
    core:run(10)
  end
  return true
end

-- H.wait, failing the test with `what` on time-out.
function H.wait_for(core, cond, what, ms)
  if not H.wait(core, cond, ms) then
    lu.fail("timed out waiting for " .. (what or "a condition"), 2)
  end
end

-- Sleeps without a core (on Windows: an idle core of its own runs for ms).
function H.sleep(ms)
  if H.windows then
    win.sleeper = win.sleeper or assert(iocore.core { threads = 1, signals = false })
    win.sleeper:run(ms)
    return
  end
  os.execute(("sleep %.3f"):format(ms / 1000))
end

-- ---- cores ---------------------------------------------------------------------

local DEFAULT_THREADS = 2

-- A core with handler errors collected into ctx.errors. opts as for
-- iocore.core; threads defaults to 2.
function H.new_core(opts)
  opts = opts or {}
  local o = {}
  for k, v in pairs(opts) do o[k] = v end
  if o.threads == nil then o.threads = DEFAULT_THREADS end
  if o.signals == nil then o.signals = false end
  local core, err = iocore.core(o)
  lu.assertNotNil(core, err)
  local ctx = { errors = {} }
  core:on_error(function(msg, s)
    ctx.errors[#ctx.errors + 1] = { msg = msg, session = s }
  end)
  return core, ctx
end

local function is_luaunit_status(e)
  return type(e) == "string" and (e:find(lu.FAILURE_PREFIX, 1, true) or e:find(lu.SKIP_PREFIX, 1, true))
end

-- The end of every test: nothing open, nothing in flight, nothing queued;
-- then every Lua object is collected and core:close() returns true.
-- (Objects the test dropped are collected first: a listener's socket is only
-- closed once its Lua object is gone, see test_listener_close_...)
function H.assert_closed_cleanly(core)
  collectgarbage()
  collectgarbage()
  local function idle()
    local st = core:stats()
    return st.active == 0 and st.sockets == 0 and st.ops_inflight == 0 and st.queued == 0
  end
  H.wait(core, idle, 10000)
  local st = core:stats()
  lu.assertEquals(st.active, 0, "sessions still open at the end of the test")
  lu.assertEquals(st.sockets, 0, "sockets still open at the end of the test")
  lu.assertEquals(st.ops_inflight, 0, "operations still in flight at the end of the test")
  lu.assertEquals(st.queued, 0, "events still queued at the end of the test")
  -- every C object gone once Lua let go of them (internal timers get a
  -- moment to retire: see test_core_close_right_after_idle_sessions...)
  H.wait(core, function()
    collectgarbage()
    return core:stats().objects == 0
  end, 5000)
  lu.assertEquals(core:stats().objects, 0, "C objects (sessions, listeners, timers) left after GC")
  collectgarbage()
  collectgarbage()
  local ok, err = core:close()
  lu.assertTrue(ok, "core:close(): " .. tostring(err))
end

-- Runs body(core, ctx) on a fresh core, then checks that it closed cleanly.
-- Handler errors fail the test unless the body set ctx.allow_errors (and
-- then it checks ctx.errors itself). On a failure the core is closed
-- (abortively) before the failure is passed on.
function H.with_core(opts, body)
  if type(opts) == "function" then opts, body = nil, opts end
  local core, ctx = H.new_core(opts)
  local ok, err = xpcall(body, function(e)
    if is_luaunit_status(e) then return e end
    return debug.traceback(tostring(e), 2)
  end, core, ctx)
  if ok and not ctx.allow_errors and #ctx.errors > 0 then
    ok, err = false, lu.FAILURE_PREFIX .. ("%d unexpected handler error(s); first:\n%s"):format(
      #ctx.errors, ctx.errors[1].msg)
  end
  ctx.errors = {} -- they may hold sessions
  if ok then
    ok, err = xpcall(H.assert_closed_cleanly, function(e)
      if is_luaunit_status(e) then return e end
      return debug.traceback(tostring(e), 2)
    end, core)
  end
  if not ok then
    pcall(core.close, core)
    error(err, 0)
  end
end

-- ---- results --------------------------------------------------------------------

-- Asserts `msg` is an error message "CODE: text" (any code when code is nil).
function H.assert_msg(msg, code, what)
  local pat = "^" .. (code or "E[%u%d]+") .. ": .+"
  if type(msg) ~= "string" or not msg:match(pat) then
    lu.fail(("%sexpected an error message %q, got %s"):format(what and (what .. ": ") or "",
      (code or "ECODE") .. ": ...", type(msg) == "string" and ("%q"):format(msg) or tostring(msg)), 2)
  end
end

-- Asserts the results of a call are exactly nil, "CODE: text", "CODE".
function H.assert_fail(code, what, ...)
  local n, v, msg, got = select("#", ...), ...
  what = what or "call"
  if v ~= nil or n ~= 3 or got ~= code or type(msg) ~= "string" or not msg:match("^" .. code .. ": .+") then
    local shown = {}
    for i = 1, n do shown[i] = ("%q"):format(tostring((select(i, ...)))) end
    lu.fail(("%s: expected nil, %q, %q; got %s"):format(what, code .. ": ...", code,
      n == 0 and "nothing" or table.concat(shown, ", ")), 2)
  end
end

-- ---- listeners and clients -------------------------------------------------------

-- A listener on a free loopback port.
function H.listen(core, opts)
  local l, err = core:listen("127.0.0.1:0", opts)
  lu.assertNotNil(l, err)
  return l
end

-- An echo server: every byte received is sent back. Returns the listener.
function H.echo_server(core, opts)
  opts = opts or {}
  local o = { on_recv = function(s, data) s:send(data) end }
  for k, v in pairs(opts) do o[k] = v end
  return H.listen(core, o)
end

-- A client session of `core` connected to `address` that collects what it
-- receives. Returns a record:
--   c.s        the session
--   c.connected  true once on_connect(s, nil) ran; c.connect_err otherwise
--   c.chunks   what on_recv got, in order; c:data() concatenates them
--   c.received byte count
--   c.closed   true once on_close ran; c.close_err its err; c.close_calls count
-- opts.on_connect(c), opts.on_recv(c, data), opts.on_close(c, err) are
-- called after the bookkeeping.
function H.client(core, address, opts)
  opts = opts or {}
  local c = { chunks = {}, received = 0, close_calls = 0, events = {} }
  function c:data() return table.concat(self.chunks) end
  local s, err = core:connect(address, {
    on_connect = function(s, e)
      c.events[#c.events + 1] = "connect"
      if e then c.connect_err = e else c.connected = true end
      if opts.on_connect then opts.on_connect(c, e) end
    end,
    on_recv = function(s, data)
      c.events[#c.events + 1] = "recv"
      c.chunks[#c.chunks + 1] = data
      c.received = c.received + #data
      if opts.on_recv then opts.on_recv(c, data) end
    end,
    on_close = function(s, e)
      c.events[#c.events + 1] = "close"
      c.closed = true
      c.close_err = e
      c.close_calls = c.close_calls + 1
      if opts.on_close then opts.on_close(c, e) end
    end,
  })
  lu.assertNotNil(s, err)
  c.s = s
  return c
end

-- ---- payloads --------------------------------------------------------------------

local pool
-- A deterministic pseudo-random byte string of n bytes (seeded).
-- A client session (callback style, H.client) that sends `chunks` one per
-- `gap_ms` timer tick, then closes if `close` is set.
function H.drip(core, address, chunks, gap_ms, close)
  local c
  c = H.client(core, address, {
    on_connect = function()
      local i = 0
      local function step()
        i = i + 1
        if c.s:closed() then return end
        if i <= #chunks then
          c.s:send(chunks[i])
          core:after(gap_ms, step)
        elseif close then
          c.s:close()
        end
      end
      step()
    end,
  })
  return c
end

function H.payload(n, seed)
  if not pool then
    local rnd = math.random
    math.randomseed(12345)
    local parts = {}
    for i = 1, 256 do
      local t = {}
      for j = 1, 1024 do t[j] = rnd(0, 255) end
      parts[i] = string.char(table.unpack(t))
    end
    pool = table.concat(parts) -- 256 KiB
  end
  math.randomseed(seed or n)
  local out, have = {}, 0
  while have < n do
    local take = math.min(n - have, math.random(1, 65536))
    local at = math.random(1, #pool - take + 1)
    out[#out + 1] = pool:sub(at, at + take - 1)
    have = have + take
  end
  return table.concat(out)
end

-- ---- subprocesses ----------------------------------------------------------------

local procs = {}

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
H.shq = shq

local function read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
H.read_file = read_file

-- Starts `lua5.4 script args...` in the background (same environment, so
-- the same module and backend), output to a file. Never blocks. Returns a
-- record: p.pid, p:output(), p:exited(), p.status (exit status, once exited),
-- p:kill(sig).
function H.spawn(script, ...)
  local argv = H.windows and { "wine", H.lua, script } or { H.lua, script }
  for _, a in ipairs({ ... }) do argv[#argv + 1] = a end
  return H.spawn_argv(argv)
end

-- The same for any command: argv is { program, args... }.
function H.spawn_argv(argv)
  local base = os.tmpname()
  local p = { out = base .. ".out", pidf = base .. ".pid", statusf = base .. ".status", base = base,
              started = H.now() }
  local args = {}
  for i, a in ipairs(argv) do
    if H.windows and a == H.lua and argv[i - 1] ~= "wine" then
      args[#args + 1] = "wine" -- the Windows interpreter, started from Linux
    elseif H.windows and argv[1] ~= "wine" and tostring(a):match("^[Zz]:\\") then
      a = win.unix(a) -- a Linux program gets the Linux name of a file os.tmpname() made
    end
    args[#args + 1] = shq(a)
  end
  local sh = H.windows and win.unix or function(f) return f end
  local cmd = ("( %s >%s 2>&1 </dev/null & echo $! >%s; wait $!; echo $? >%s ) >/dev/null 2>&1 </dev/null &")
      :format(table.concat(args, " "), shq(sh(p.out)), shq(sh(p.pidf)), shq(sh(p.statusf)))
  if H.windows then
    if not win.cwd then
      local d = io.popen("cd")
      win.cwd = win.unix(d:read("l"))
      d:close()
    end
    local f = assert(io.open(base .. ".sh", "wb")) -- no CR: bash reads it
    f:write("cd ", shq(win.cwd), " || exit 1\n", cmd, "\n")
    f:close()
    os.execute("start /unix /bin/bash " .. win.unix(base) .. ".sh")
  else
    os.execute(cmd)
  end
  function p:output() return read_file(self.out) or "" end
  function p:exited()
    if self.status then return true end
    local s = read_file(self.statusf)
    if s and s:match("%d+") then
      self.status = tonumber(s:match("%d+"))
      return true
    end
    return false
  end
  function p:getpid()
    if not self.pid then
      local s = read_file(self.pidf)
      self.pid = s and tonumber(s:match("%d+"))
    end
    return self.pid
  end
  function p:kill(sig)
    local pid = self:getpid()
    if pid and not self:exited() then
      if H.windows then
        sig = (sig or "TERM") == "TERM" and "INT" or sig
        os.execute(("start /unix /bin/kill -%s %d"):format(sig, pid))
      else
        os.execute(("kill -%s %d 2>/dev/null"):format(sig or "TERM", pid))
      end
    end
  end
  procs[#procs + 1] = p
  return p
end

-- Whether the shell command `cmd` succeeds (exit status 0), e.g. a check
-- that a tool is installed. On Windows (wine) it runs in a Linux bash, like
-- every process the suite starts, and is waited for (at most 20 s).
function H.shell_ok(cmd)
  if not H.windows then return os.execute(cmd) == true end
  local p = H.spawn_argv({ "bash", "-c", cmd })
  local deadline = H.now() + 20000
  while not p:exited() and H.now() < deadline do H.sleep(10) end
  return p:exited() and p.status == 0
end

-- A client in another process that connects to 127.0.0.1:port and reads
-- nothing for `delay_s` seconds, then reads everything until EOF into a
-- file; p:received() is the byte count so far. Used where the contract
-- needs a send that cannot be written at once. (bash's /dev/tcp; bash is
-- part of every Debian installation.)
function H.slow_reader(port, delay_s)
  local file = os.tmpname()
  local p = H.spawn_argv({ "bash", "-c",
    ('exec 3<>/dev/tcp/127.0.0.1/%d || exit 9; echo connected; sleep %s; cat <&3 >%s'):format(
      port, tostring(delay_s), shq(H.windows and win.unix(file) or file)) })
  p.file = file
  function p:received()
    local f = io.open(self.file, "rb")
    if not f then return 0 end
    local n = f:seek("end")
    f:close()
    return n
  end
  return p
end

-- Waits (running `core`, or sleeping) until the subprocess printed a line
-- matching `pattern`; returns the first capture (or the match).
function H.wait_output(core, p, pattern, ms)
  local found
  local function check()
    -- exited first: once it has, the output read after it is complete (read
    -- the other way round, the last line could land between the two reads
    -- and a process that printed it would be reported as silent)
    local exited = p:exited()
    found = p:output():match(pattern)
    return found ~= nil or exited
  end
  if core then
    H.wait(core, check, ms or 10000)
  else
    local deadline = H.now() + (ms or 10000)
    while not check() and H.now() < deadline do H.sleep(10) end
  end
  if not found then
    -- how long it had run tells a process that never started from one
    -- that ended later (wine's own start-up errors are hidden by WINEDEBUG)
    lu.fail(("subprocess %s: no output matching %q (exited: %s, seen %.0f ms after its start)\n--- output:\n%s")
      :format(p.base, pattern, tostring(p.status), H.now() - p.started, p:output()), 2)
  end
  return found
end

-- Kills what is still running and removes the files (tearDown).
function H.reap()
  for _, p in ipairs(procs) do
    if not p:exited() then
      p:kill("KILL")
      -- the wrapper writes the status file once the process is gone
      local deadline = H.now() + 2000
      while not p:exited() and H.now() < deadline do H.sleep(20) end
    end
    for _, f in ipairs({ p.out, p.pidf, p.statusf, p.base, p.base .. ".sh", p.file }) do os.remove(f) end
  end
  procs = {}
end

-- luaunit hooks every test class uses.
function H.setUp() end
function H.tearDown() H.reap() end

-- A test class with the shared setUp/tearDown.
function H.class()
  return { setUp = H.setUp, tearDown = H.tearDown }
end

return H
