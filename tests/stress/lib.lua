-- Shared helpers of the stress suite: subprocesses (servers under test,
-- load generators, launchers), the server's stats file, sizes for the quick
-- and the long form, and notes (numbers a test reports next to its result).
local lu = require "luaunit"

local S = {}

S.long = os.getenv("STRESS_LONG") == "1"
S.lua = "lua5.4"             -- set by run.lua: the interpreter running the suite
S.root = "."                 -- set by run.lua: the repository root
S.bin = os.getenv("STRESS_BIN") or "build/bin/debug" -- loadgen, no_uring
S.backend = os.getenv("IOCORE_BACKEND")
if S.backend == "" then S.backend = nil end

-- quick or long: S.size(quick, long)
function S.size(quick, long) return S.long and long or quick end

-- ---- notes ----------------------------------------------------------------------------

-- A line of numbers the test wants in the report ("# ..." under its result).
function S.note(fmt, ...)
  io.stdout:write("# ", fmt:format(...), "\n")
  io.stdout:flush()
end

-- ---- time ---------------------------------------------------------------------------------

local uptime = io.open("/proc/uptime", "r")
uptime:setvbuf("no") -- a buffered seek to 0 would re-read the stale buffer
function S.now()
  uptime:seek("set", 0)
  return uptime:read("n") * 1000
end

function S.sleep(ms)
  os.execute(("sleep %.3f"):format(ms / 1000))
end

-- Polls cond() every `step` ms until it returns a truthy value or `ms` pass.
function S.poll(cond, ms, step)
  local deadline = S.now() + ms
  while true do
    local v = cond()
    if v then return v end
    if S.now() > deadline then return nil end
    S.sleep(step or 50)
  end
end

-- ---- files and shell ----------------------------------------------------------------------

local function shq(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end
S.shq = shq

function S.read_file(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- key=value pairs of a line, numbers as numbers.
function S.parse_kv(line)
  local t = {}
  for k, v in tostring(line):gmatch("([%w_]+)=(%S*)") do
    t[k] = tonumber(v) or v
  end
  return t
end

local tmpdir
-- A directory of this process's own; under $STRESS_TMP when run.lua set it
-- (so the suite removes what a test killed by the watchdog left behind).
function S.tmpdir()
  if not tmpdir then
    local under = os.getenv("STRESS_TMP")
    local template = (under and under ~= "" and under or "/tmp") .. "/iocore-stress.XXXXXX"
    local p = io.popen("mktemp -d " .. S.shq(template))
    tmpdir = p:read("l")
    p:close()
  end
  return tmpdir
end

local seq = 0
function S.tmpname(what)
  seq = seq + 1
  return ("%s/%s-%d"):format(S.tmpdir(), what or "f", seq)
end

-- ---- subprocesses ---------------------------------------------------------------------------

local procs = {}

-- Starts argv (a list) in the background. opts: env (list of "K=V", put in
-- front with env(1)), unset (list of variable names to remove), nofile (a
-- RLIMIT_NOFILE for it, via prlimit), no_preload (drop LD_PRELOAD: for
-- programs that are not the one under test), wrap (a list put in front,
-- e.g. the no_uring launcher). Returns a record with out, err files, and
-- methods exited(), wait(ms), kill(sig), pid(), output().
function S.spawn(argv, opts)
  opts = opts or {}
  local base = S.tmpname("proc")
  local p = { out = base .. ".out", err = base .. ".err", pidf = base .. ".pid", statusf = base .. ".status",
              argv = argv }
  local words = {}
  local envw = { "env" }
  if opts.no_preload then envw[#envw + 1] = "-u"; envw[#envw + 1] = "LD_PRELOAD" end
  for _, name in ipairs(opts.unset or {}) do envw[#envw + 1] = "-u"; envw[#envw + 1] = name end
  for _, kv in ipairs(opts.env or {}) do envw[#envw + 1] = kv end
  for _, w in ipairs(envw) do words[#words + 1] = shq(w) end
  if opts.nofile then
    for _, w in ipairs({ "prlimit", "--nofile=" .. opts.nofile .. ":" .. opts.nofile, "--" }) do
      words[#words + 1] = shq(w)
    end
  end
  for _, w in ipairs(opts.wrap or {}) do words[#words + 1] = shq(w) end
  for _, w in ipairs(argv) do words[#words + 1] = shq(w) end
  p.cmdline = table.concat(words, " ")
  local cmd = ("( %s >%s 2>%s </dev/null & echo $! >%s; wait $!; echo $? >%s ) >/dev/null 2>&1 </dev/null &")
      :format(p.cmdline, shq(p.out), shq(p.err), shq(p.pidf), shq(p.statusf))
  os.execute(cmd)
  function p:output() return S.read_file(self.out) or "" end
  function p:errors() return S.read_file(self.err) or "" end
  function p:exited()
    if self.status then return true end
    local s = S.read_file(self.statusf)
    if s and s:match("%d+") then
      self.status = tonumber(s:match("%d+"))
      return true
    end
    return false
  end
  function p:pid()
    if not self._pid then
      local s = S.poll(function() return S.read_file(self.pidf) end, 5000, 5)
      self._pid = s and tonumber(s:match("%d+"))
    end
    return self._pid
  end
  function p:kill(sig)
    local pid = self:pid()
    if pid and not self:exited() then os.execute(("kill -%s %d 2>/dev/null"):format(sig or "TERM", pid)) end
  end
  -- Waits up to ms for the exit; returns the status, or nil on time-out.
  function p:wait(ms)
    S.poll(function() return self:exited() end, ms or 30000, 20)
    return self.status
  end
  procs[#procs + 1] = p
  return p
end

-- Kills what is still running, removes the files (tearDown).
function S.reap()
  for _, p in ipairs(procs) do
    if not p:exited() then p:kill("KILL") end
  end
  procs = {}
end

function S.cleanup()
  S.reap()
  if tmpdir then os.execute("rm -rf " .. shq(tmpdir)) end
  tmpdir = nil
end

-- CPU seconds (user + system) a running process has used so far.
function S.cpu_of(pid)
  local s = S.read_file(("/proc/%d/stat"):format(pid))
  if not s then return nil end
  local rest = s:match("%) (.*)$")
  local f = {}
  for w in rest:gmatch("%S+") do f[#f + 1] = w end
  -- fields 14 and 15 (utime, stime) are rest's 12th and 13th
  return (tonumber(f[12]) + tonumber(f[13])) / 100 -- USER_HZ
end

-- ---- the server under test ---------------------------------------------------------------------

-- Starts tests/stress/server.lua with the given key=value options (a table)
-- and waits for its stats file. opts.spawn: options for S.spawn.
function S.server(kv, opts)
  opts = opts or {}
  local statsf = S.tmpname("stats")
  local argv = { S.lua, S.root .. "/tests/stress/server.lua", "stats=" .. statsf }
  local keys = {}
  for k in pairs(kv or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do argv[#argv + 1] = k .. "=" .. tostring(kv[k]) end
  local srv = S.spawn(argv, opts.spawn)
  srv.statsf = statsf
  function srv:stats()
    for _ = 1, 50 do
      local s = S.read_file(self.statsf)
      local line = s and s:match("^[^\n]*")
      if line and line:find(" end=1", 1, true) then return S.parse_kv(line) end
      S.sleep(10)
    end
    return nil
  end
  -- Waits until cond(stats) holds (checking every 50 ms); returns the stats
  -- that satisfied it, or nil and the last stats seen.
  function srv:wait_stats(cond, ms)
    local last
    local got = S.poll(function()
      last = self:stats()
      return last and cond(last) and last
    end, ms or 10000, 50)
    return got, last
  end
  function srv:addr() return "127.0.0.1:" .. self.port end
  local st = S.poll(function()
    if srv:exited() then return "exited" end
    return srv:stats()
  end, 10000, 20)
  if st == "exited" or not st then
    lu.fail(("server did not start (exit %s)\n--- stdout:\n%s--- stderr:\n%s"):format(
      tostring(srv.status), srv:output(), srv:errors()), 2)
  end
  srv.port = st.port
  srv.start_stats = st
  return srv
end

-- ---- the load generator -----------------------------------------------------------------------

-- Starts a Lua script (path relative to the repository) with args; waits
-- for its "listening"/"proxy on"/"streaming" line and returns the process
-- and the address it printed.
function S.start_script(script, args, pattern)
  local argv = { S.lua, S.root .. "/" .. script }
  for _, a in ipairs(args) do argv[#argv + 1] = a end
  local p = S.spawn(argv)
  local addr = S.poll(function()
    if p:exited() then return "exited" end
    return p:output():match(pattern)
  end, 15000, 20)
  if not addr or addr == "exited" then
    lu.fail(("%s did not start (exit %s)\n--- stdout:\n%s--- stderr:\n%s"):format(script, tostring(p.status),
      p:output(), p:errors()), 2)
  end
  return p, addr
end

-- Starts loadgen MODE with --addr and the given options (a table of
-- option=value, without the dashes). Not under LD_PRELOAD.
function S.loadgen(mode, addr, o, spawn_opts)
  local argv = { S.bin .. "/loadgen", mode, "--addr", addr }
  local keys = {}
  for k in pairs(o or {}) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do
    argv[#argv + 1] = "--" .. k
    argv[#argv + 1] = tostring(o[k])
  end
  spawn_opts = spawn_opts or {}
  spawn_opts.no_preload = true
  local p = S.spawn(argv, spawn_opts)
  -- Waits for the end; returns the LOADGEN line as a table (r.errors_text
  -- holds its ERROR lines). Fails the test on a time-out or no result.
  function p:result(ms)
    local status = self:wait(ms or 60000)
    if not status then
      self:kill("KILL")
      lu.fail(("loadgen %s did not finish in %.0f s\n%s"):format(mode, (ms or 60000) / 1000, self:output()), 2)
    end
    local out = self:output()
    local line = out:match("LOADGEN ([^\n]*)")
    if not line then
      lu.fail(("loadgen %s: no result (exit %s)\n--- stdout:\n%s--- stderr:\n%s"):format(mode, tostring(status),
        out, self:errors()), 2)
    end
    local r = S.parse_kv(line)
    r.line = line
    r.status = status
    local errs = {}
    for e in out:gmatch("ERROR ([^\n]*)") do errs[#errs + 1] = e end
    r.errors_text = table.concat(errs, "\n")
    return r
  end
  function p:wait_line(pattern, ms)
    return S.poll(function()
      local v = self:output():match(pattern)
      if v then return v end
      if self:exited() then return false end
    end, ms or 10000, 20)
  end
  return p
end

-- Asserts that r.key == want, showing the loadgen line and its errors.
function S.check(r, key, want, what)
  if r[key] ~= want then
    lu.fail(("%s: %s = %s, expected %s\n  loadgen: %s\n  %s"):format(what or "loadgen", key, tostring(r[key]),
      tostring(want), r.line or "", (r.errors_text or ""):gsub("\n", "\n  ")), 2)
  end
end

-- Waits until the server has no session left and its leak counters are
-- back to `base` (the stats right after start); fails otherwise.
function S.assert_no_leak(srv, base, ms)
  local function clean(st)
    return st.st_active == 0 and st.open == 0 and st.st_queued == 0 and st.st_sockets == base.st_sockets
        and st.st_ops_inflight == base.st_ops_inflight and st.st_objects == base.st_objects
        and st.st_stack == 0
  end
  local ok, last = srv:wait_stats(clean, ms or 8000)
  if not ok then
    last = last or {}
    lu.fail(("server did not return to its idle state: active=%s open=%s sockets=%s (was %s) ops_inflight=%s "
      .. "(was %s) objects=%s (was %s) queued=%s stack=%s"):format(tostring(last.st_active), tostring(last.open),
      tostring(last.st_sockets), tostring(base.st_sockets), tostring(last.st_ops_inflight),
      tostring(base.st_ops_inflight), tostring(last.st_objects), tostring(base.st_objects),
      tostring(last.st_queued), tostring(last.st_stack)), 2)
  end
  return ok
end

-- Stops the server with SIGTERM and expects exit status 0.
function S.stop_server(srv, ms)
  srv:kill("TERM")
  local status = srv:wait(ms or 15000)
  if status ~= 0 then
    if not status then srv:kill("KILL") end
    lu.fail(("server: exit status %s after SIGTERM\n--- stderr:\n%s"):format(tostring(status),
      srv:errors():sub(1, 3000)), 2)
  end
end

-- ---- in-process cores -------------------------------------------------------------------------

-- A core (2 threads, no signals) whose handler errors are collected in
-- ctx.errors ({msg, session}).
function S.core(opts)
  local iocore = require "iocore"
  local o = { threads = 2, signals = false }
  for k, v in pairs(opts or {}) do o[k] = v end
  local core, err = iocore.core(o)
  lu.assertNotNil(core, err)
  local ctx = { errors = {} }
  core:on_error(function(msg, s) ctx.errors[#ctx.errors + 1] = { msg = msg, session = s } end)
  return core, ctx
end

-- Runs the core in 10 ms slices until cond() or ms pass; returns cond().
function S.run_until(core, cond, ms)
  local deadline = S.now() + (ms or 10000)
  while not cond() do
    if S.now() > deadline then return cond() end
    core:run(10)
  end
  return true
end

-- The end of an in-process test: nothing open or queued, the handler
-- thread's stack empty, then core:close() frees everything.
function S.assert_core_clean(core)
  -- a timer still armed, or an object not yet collected, holds a C object:
  -- run and collect until every one is gone
  local function idle()
    collectgarbage()
    local st = core:stats()
    return st.active == 0 and st.sockets == 0 and st.ops_inflight == 0 and st.queued == 0 and st.objects == 0
  end
  S.run_until(core, idle, 10000)
  local st = core:stats()
  lu.assertEquals(st.active, 0, "sessions still open")
  lu.assertEquals(st.sockets, 0, "sockets still open")
  lu.assertEquals(st.ops_inflight, 0, "operations still in flight")
  lu.assertEquals(st.queued, 0, "events still queued")
  lu.assertEquals(st.stack, 0, "values left on the handler thread's stack")
  lu.assertEquals(st.objects, 0, "C objects (listeners, sessions, timers) still alive")
  collectgarbage()
  collectgarbage()
  local ok, err = core:close()
  lu.assertTrue(ok, "core:close(): " .. tostring(err))
end

-- Runs body(core, ctx) on a fresh core, then (the body's locals gone, so
-- what it dropped can be collected) checks that everything closes cleanly.
-- On a failure the core is closed abortively before the failure goes on.
function S.with_core(opts, body)
  local core, ctx = S.core(opts)
  local ok, err = xpcall(body, function(e)
    if type(e) == "string" and (e:find(lu.FAILURE_PREFIX, 1, true) or e:find(lu.SKIP_PREFIX, 1, true)) then
      return e
    end
    return debug.traceback(tostring(e), 2)
  end, core, ctx)
  ctx.errors = {}
  if ok then ok, err = pcall(S.assert_core_clean, core) end
  if not ok then
    pcall(core.close, core)
    error(err, 0)
  end
end

-- A test class with the shared tearDown.
function S.class()
  return { tearDown = function() S.reap() end }
end

return S
