-- Graceful stop with many sessions holding queued sends.
local lu = require "luaunit"
local S = require "lib"

TestStop = S.class()
TestStop.limits = {
  test_sigterm_flushes_queued_sends_and_exits_0 = { 90, 300 },
  test_core_stop_from_a_handler_flushes_and_returns = { 90, 300 },
}

-- Sizes: 500 sessions (long: 5,000) with clients reading nothing until
-- told. Each asks for 128 KiB (long: 64 KiB), which the kernel's socket
-- buffers mostly absorb (Linux grows a send buffer to ~4 MiB); 20 of them
-- ask for 8 MiB, so that much waits in iocore's own queues when
-- the stop begins.
local BIG_SIZE = 8 * 2 ^ 20
local function sizes() return S.size(500, 5000), S.size(128 * 1024, 64 * 1024), 20 end

-- The stop resets what has not closed close_timeout + 1 s after it began
-- closing (the default 5 s: tests/lua/test_stop.lua checks that). Here the
-- clients must read ~100 MiB first, which took 7.8 s on a loaded 2-core
-- machine (a client reset after 8177664 of its 8 MiB): the server gets 30 s,
-- so only a flush that stalls or loses bytes fails.
local CLOSE_TIMEOUT = 30000

-- Starts the server and the holding clients; returns them once every
-- client has its request in and the server reports bytes queued.
local function setup()
  local conns, size, big = sizes()
  local srv = S.server({ backlog = 4096, close_timeout = CLOSE_TIMEOUT })
  local lg = S.loadgen("hold", srv:addr(), { conns = conns, size = size, rcvbuf = 4096, timeout = 60000, big = big,
                                             ["big-size"] = math.floor(BIG_SIZE) })
  lu.assertNotNil(lg:wait_line("READY", 60000), "the clients never got connected\n" .. lg:output())
  local st = srv:wait_stats(function(s) return s.open == conns and s.pending > 0 end, 20000)
  lu.assertNotNil(st, "the server does not hold " .. conns .. " sessions with data queued")
  -- let the kernel take what it will; what is left stays queued in iocore
  S.sleep(300)
  st = srv:stats()
  lu.assertTrue(st.pending > 0, "nothing queued in iocore any more: nothing tested")
  return srv, lg, st, conns, size, big
end

-- Every client must get its whole reply (valid records), then a clean EOF.
local function check_clients(lg, conns)
  local r = lg:result(90000)
  S.check(r, "connected", conns)
  S.check(r, "short", 0)
  S.check(r, "resets", 0)
  S.check(r, "bad_records", 0)
  S.check(r, "complete", conns)
  return r
end

-- SIGTERM while 500 sessions have sends queued: accepting stops at once (a
-- new client is refused), every queued byte is delivered, every session
-- closes cleanly (on_close with no error), run() returns true, and the
-- process exits 0.
function TestStop:test_sigterm_flushes_queued_sends_and_exits_0()
  local srv, lg, st0, conns, size, big = setup()
  srv:kill("TERM")
  S.sleep(300)
  local probe = S.loadgen("probe", srv:addr(), { timeout = 1000 }):result(10000)
  lg:kill("USR1") -- the clients start reading
  local r = check_clients(lg, conns)
  local status = srv:wait(30000)
  local out = srv:output()
  local fin = S.parse_kv(out:match("STOPPED ([^\n]*)") or "")
  local st = srv:stats()
  S.note("%d sessions, %d KiB each (%d of them 8 MiB), %.1f MiB queued in iocore at SIGTERM; clients read "
    .. "everything in %.1f s; a client during the stop: %s", conns, size // 1024, big, st0.pending / 2 ^ 20,
    r.read_secs, probe.result)
  lu.assertEquals(probe.result ~= "served" and "not served" or "served", "not served",
    "a new client was served after SIGTERM")
  lu.assertEquals(status, 0, "exit status after SIGTERM\n" .. srv:errors():sub(1, 2000))
  lu.assertNotNil(out:match("STOPPED true"), "run() did not return true:\n" .. out)
  lu.assertEquals(st.stopped, "true")
  lu.assertEquals(fin.closed, conns, "sessions closed")
  lu.assertEquals(fin.clean, conns, "sessions closed without error (codes: " .. tostring(fin.codes) .. ")")
  lu.assertEquals(st.st_active, 0)
  lu.assertEquals(st.errors, 0, "handler errors: " .. tostring(st.last_error))
end

-- The same stop asked by core:stop() from inside a handler (a client sends
-- "Q"): the same promises; run() returns true and the script goes on.
function TestStop:test_core_stop_from_a_handler_flushes_and_returns()
  local srv, lg, st0, conns = setup()
  local trig = S.loadgen("trigger", srv:addr(), { header = "Q\\n", timeout = 20000 })
  S.sleep(300)
  local probe = S.loadgen("probe", srv:addr(), { timeout = 1000 }):result(10000)
  lg:kill("USR1")
  local r = check_clients(lg, conns)
  local t = trig:result(30000)
  local status = srv:wait(30000)
  local out = srv:output()
  local fin = S.parse_kv(out:match("STOPPED ([^\n]*)") or "")
  local st = srv:stats()
  S.note("%d sessions, %.1f MiB queued at core:stop(); clients read everything in %.1f s; a client during "
    .. "the stop: %s", conns, st0.pending / 2 ^ 20, r.read_secs, probe.result)
  lu.assertEquals(probe.result ~= "served" and "not served" or "served", "not served",
    "a new client was served after core:stop()")
  lu.assertEquals(st.stop_asked, 1)
  lu.assertEquals(t["end"], "eof", "the session that asked for the stop was not closed gracefully")
  lu.assertEquals(status, 0, "exit status\n" .. srv:errors():sub(1, 2000))
  lu.assertNotNil(out:match("STOPPED true"), "run() did not return true:\n" .. out)
  lu.assertEquals(fin.closed, conns + 1, "sessions closed (the clients and the one that asked)")
  lu.assertEquals(fin.clean, conns + 1, "sessions closed without error")
  lu.assertEquals(st.errors, 0, "handler errors: " .. tostring(st.last_error))
end
