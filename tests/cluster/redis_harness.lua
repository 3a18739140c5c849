-- Test harness for iocore.redis and the cluster tests: a real redis-server
-- on a loopback port, started and stopped by the test (each bounded by
-- `timeout`, killed at exit), and a check that a core closed cleanly.
local lu = require "luaunit"
local iocore = require "iocore"

local H = {}

-- Monotonic-enough milliseconds (core:now() where the module has it).
function H.now(core)
  if core and core.now then return core:now() end
  local f = assert(io.open("/proc/uptime"))
  local v = f:read("n")
  f:close()
  return v * 1000
end

local function sh(cmd)
  local ok = os.execute(cmd)
  return ok == true or ok == 0
end
H.sh = sh

H.tmp = os.getenv("CLUSTER_TMP") or os.tmpname() .. ".d"
sh("mkdir -p '" .. H.tmp .. "'")

-- A free loopback port (bound and released by iocore).
function H.free_port()
  local c = assert(iocore.core { threads = 1, signals = false })
  local l = assert(c:listen("127.0.0.1:0"))
  local port = tonumber(l:address():match(":(%d+)$"))
  l:close()
  c:close()
  return port
end

local servers = {} -- port -> pidfile
local started = {} -- every pidfile ever written, for the clean-up at exit

-- Starts redis-server on 127.0.0.1:port (no persistence) and waits until it
-- answers PING (10 s at most).
function H.start_redis(port)
  local pidfile = ("%s/redis-%d.pid"):format(H.tmp, port)
  os.remove(pidfile)
  assert(sh(("env -u LD_PRELOAD timeout -k 5 600 redis-server --port %d --bind 127.0.0.1 --save '' --appendonly no " ..
    "--dir '%s' --pidfile '%s' >> '%s/redis-%d.log' 2>&1 &"):format(port, H.tmp, pidfile, H.tmp, port)))
  servers[port] = pidfile
  started[#started + 1] = pidfile
  assert(sh(("for i in $(seq 200); do env -u LD_PRELOAD redis-cli -p %d ping 2>/dev/null | grep -q PONG && exit 0; " ..
    "sleep 0.05; done; exit 1"):format(port)), "redis-server on port " .. port .. " did not start")
end

-- Kills redis-server on port (SIGKILL: a crash) and waits until it is gone.
function H.kill_redis(port)
  local pidfile = servers[port]
  if not pidfile then return end
  sh(("p=$(cat '%s' 2>/dev/null) && kill -KILL $p 2>/dev/null; " ..
    "for i in $(seq 100); do kill -0 $p 2>/dev/null || exit 0; sleep 0.05; done"):format(pidfile))
  -- and until the port is free again
  sh(("for i in $(seq 100); do redis-cli -p %d ping >/dev/null 2>&1 || exit 0; sleep 0.05; done"):format(port))
  servers[port] = nil
end

function H.stop_all()
  for port in pairs(servers) do H.kill_redis(port) end
  for _, pidfile in ipairs(started) do
    sh(("p=$(cat '%s' 2>/dev/null) && kill -KILL $p 2>/dev/null"):format(pidfile))
  end
end

function H.cleanup()
  H.stop_all()
  sh("rm -rf '" .. H.tmp .. "'")
end

-- Runs core until cond() is true (ms deadline); fails the test otherwise.
function H.run_until(core, cond, ms, what)
  local deadline = H.now(core) + (ms or 10000)
  while not cond() do
    if H.now(core) > deadline then
      lu.fail(("timed out waiting for %s"):format(what or "a condition"))
    end
    core:run(10)
  end
end

-- Runs fn in a coroutine of the core (core:spawn) and the core until it
-- returns; its error fails the test.
function H.in_coroutine(core, fn, ms)
  local done, err = false, nil
  core:spawn(function()
    local ok, e = xpcall(fn, debug.traceback)
    done, err = true, not ok and e or nil
  end)
  H.run_until(core, function() return done end, ms or 20000, "the test's coroutine")
  if err then lu.fail(err) end
end

function H.core()
  local core = assert(iocore.core { threads = 1, signals = false, handler_timeout = 10000 })
  local errors = {}
  core:on_error(function(m) errors[#errors + 1] = tostring(m) end)
  return core, errors
end

-- The core has nothing left open (sessions, sockets, operations, queued
-- events, C objects), then closes.
function H.assert_closed_cleanly(core, errors)
  local function idle()
    collectgarbage()
    local st = core:stats()
    return st.active == 0 and st.sockets == 0 and st.ops_inflight == 0 and st.queued == 0
        and st.objects == 0
  end
  local deadline = H.now(core) + 10000
  while not idle() and H.now(core) < deadline do core:run(10) end
  local st = core:stats()
  lu.assertEquals(st.active, 0, "sessions still open")
  lu.assertEquals(st.sockets, 0, "sockets still open")
  lu.assertEquals(st.ops_inflight, 0, "operations in flight")
  lu.assertEquals(st.queued, 0, "events still queued")
  lu.assertEquals(st.objects, 0, "C objects left after GC")
  if errors then lu.assertEquals(errors, {}, "handler errors") end
  lu.assertTrue(core:close())
end

return H
