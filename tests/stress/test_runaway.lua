-- Handlers that would take the server down: one that never returns, one
-- that allocates a gigabyte. Other clients must be served meanwhile.
local lu = require "luaunit"
local S = require "lib"

TestRunaway = S.class()

local TIMEOUT = 1000

-- Starts a client pinging every 20 ms for `secs` and waits for its first
-- round trip.
local function pinger(srv, secs)
  local ping = S.loadgen("ping", srv:addr(), { duration = secs, interval = 20 })
  lu.assertNotNil(ping:wait_line("PINGING", 10000), "the pinging client never got an echo\n" .. ping:output())
  return ping
end

local function after_checks(srv, base)
  local probe = S.loadgen("probe", srv:addr(), { timeout = 2000 }):result(10000)
  S.check(probe, "result", "served", "a new client after the bad handler")
  S.assert_no_leak(srv, base)
end

-- handler_timeout = 1 s. A client's header makes its on_recv loop forever
-- (`while true do end`) while another client pings every 20 ms. The loop
-- must be interrupted with an "ETIMEDOUT: ..." error (with a traceback) that
-- goes to on_error and aborts that session only; the pinging client must
-- never wait longer than handler_timeout + 10% for an echo; a new client is
-- served afterwards and the handler thread's stack is back to 0.
function TestRunaway:test_runaway_handler_interrupted_others_served()
  local srv = S.server({ handler_timeout = TIMEOUT, threads = 2 })
  local base = srv.start_stats
  local ping = pinger(srv, 4)
  S.sleep(500)
  local t = S.loadgen("trigger", srv:addr(), { header = "L\\n", timeout = 15000 }):result(20000)
  local p = ping:result(20000)
  local st = srv:stats()
  S.note("runaway interrupted %d ms after it began (handler_timeout %d ms); pinging client: %d round trips, "
    .. "slowest %d ms", t.closed_after_ms, TIMEOUT, p.pings, p.max_ms)
  S.note("on_error got: %s", tostring(st.last_error):gsub("_", " "):sub(1, 120))
  lu.assertEquals(st.errors, 1, "handler errors")
  lu.assertEquals(st.traceback, 1, "error reported with a traceback")
  lu.assertNotNil(tostring(st.last_error):match("ETIMEDOUT"), "the error is not ETIMEDOUT: " .. tostring(st.last_error))
  S.check(t, "end", "reset", "the runaway's session")
  lu.assertTrue(t.closed_after_ms >= TIMEOUT - 50, "interrupted too early: " .. t.closed_after_ms .. " ms")
  S.check(p, "fail", 0, "pinging client")
  lu.assertTrue(p.max_ms <= TIMEOUT * 1.1, ("the pinging client waited %.0f ms (> handler_timeout + 10%%)"):format(
    p.max_ms))
  after_checks(srv, base)
  S.stop_server(srv)
end

-- The same runaway hidden where a hook on the handler alone does not reach:
-- inside a coroutine, inside pcall, catching the time-out and looping on.
-- It must be interrupted all the same, with the same promises to the
-- pinging client.
function TestRunaway:test_hidden_runaway_in_coroutine_and_pcall_interrupted_others_served()
  local srv = S.server({ handler_timeout = TIMEOUT, threads = 2 })
  local base = srv.start_stats
  local ping = pinger(srv, 4)
  S.sleep(500)
  local t = S.loadgen("trigger", srv:addr(), { header = "C\\n", timeout = 15000 }):result(20000)
  local p = ping:result(20000)
  local st = srv:stats()
  S.note("hidden runaway interrupted %d ms after it began (handler_timeout %d ms); pinging client: %d round trips, "
    .. "slowest %d ms", t.closed_after_ms, TIMEOUT, p.pings, p.max_ms)
  lu.assertEquals(st.errors, 1, "handler errors")
  lu.assertNotNil(tostring(st.last_error):match("ETIMEDOUT"), "the error is not ETIMEDOUT: " .. tostring(st.last_error))
  S.check(t, "end", "reset", "the runaway's session")
  S.check(p, "fail", 0, "pinging client")
  lu.assertTrue(p.max_ms <= TIMEOUT * 1.1, ("the pinging client waited %.0f ms (> handler_timeout + 10%%)"):format(
    p.max_ms))
  after_checks(srv, base)
  S.stop_server(srv)
end

-- A repeating timer slower than its interval (every 2 ms, 10 ms of work
-- each) for the whole run: at most one of its firings is queued at a time,
-- so other work interleaves with it. A pinging client is answered
-- throughout, the server's other timer (its stats) keeps firing, and
-- SIGTERM stops it with exit status 0.
function TestRunaway:test_timer_storm_others_served_and_sigterm_stops()
  local srv = S.server({ storm_ms = 10, threads = 2 })
  local ping = pinger(srv, 3)
  local p = ping:result(20000)
  local st = srv:stats()
  S.note("storm timer: %d ticks; stats writes kept coming; queued events at the end: %d; pinging client: %d round "
    .. "trips, slowest %d ms", st.storm_ticks, st.st_queued, p.pings, p.max_ms)
  S.check(p, "fail", 0, "pinging client")
  lu.assertTrue(p.max_ms < 1000, "the pinging client waited " .. p.max_ms .. " ms behind a timer storm")
  lu.assertTrue(st.st_queued <= 8, "events pile up behind the storm: " .. st.st_queued)
  S.stop_server(srv)
end

-- memory_limit = 64 MiB. Five clients in turn make their handler call
-- string.rep("x", 2^30): each must fail inside the handler as a memory error
-- ("not enough memory") that goes to on_error and aborts that session only,
-- the state staying usable (memory back under the limit, new clients
-- served), while another client's pings keep being answered promptly.
function TestRunaway:test_memory_bomb_fails_in_handler_state_usable()
  local limit = 64 * 2 ^ 20
  local srv = S.server({ memory_limit = math.floor(limit), threads = 2 })
  local base = srv.start_stats
  local ping = pinger(srv, 3)
  local bombs = 5
  for _ = 1, bombs do
    local t = S.loadgen("trigger", srv:addr(), { header = "M\\n", timeout = 10000 }):result(20000)
    S.check(t, "end", "reset", "the bomb's session")
  end
  local p = ping:result(20000)
  local st = srv:stats()
  S.note("%d bombs, each a memory error in its handler; Lua memory after: %.1f MiB of %.0f MiB; pinging client "
    .. "slowest %d ms", bombs, st.st_memory / 2 ^ 20, limit / 2 ^ 20, p.max_ms)
  lu.assertEquals(st.errors, bombs, "handler errors")
  lu.assertNotNil(tostring(st.last_error):match("not_enough_memory"), "not a memory error: " .. tostring(st.last_error))
  lu.assertTrue(st.st_memory < limit, "Lua memory over the limit")
  S.check(p, "fail", 0, "pinging client")
  lu.assertTrue(p.max_ms < 1000, "the pinging client waited " .. p.max_ms .. " ms")
  after_checks(srv, base)
  S.stop_server(srv)
end
