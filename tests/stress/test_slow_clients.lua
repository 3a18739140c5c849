-- Clients that are slow on purpose: slowloris, and half-close.
local lu = require "luaunit"
local S = require "lib"

TestSlowClients = S.class()
TestSlowClients.limits = {
  test_slowloris_closed_by_idle_timeout = { 60, 120 },
  test_half_close_with_slow_handlers = { 60, 120 },
}

local IDLE = 1000

-- 200 connections (long: 2,000) trickle a header one byte at a time: at
-- 0 ms, at idle/2 (which must reset the idle clock), then nothing for
-- 3 x idle. With idle_timeout = 1 s every one must be closed by the server
-- between idle_timeout and idle_timeout + 1 s after its last byte (closing
-- earlier would mean a receive did not count as activity), the server
-- sending them nothing; meanwhile a normal client pinging every 100 ms is
-- served throughout. The server then holds nothing.
function TestSlowClients:test_slowloris_closed_by_idle_timeout()
  local conns = S.size(200, 2000)
  local srv = S.server({ idle_timeout = IDLE })
  local base = srv.start_stats
  local lg = S.loadgen("slowloris", srv:addr(), { conns = conns, idle = IDLE, duration = 20 })
  local r = lg:result(40000)
  S.note("%d slow connections: %d closed by the server %d..%d ms after their last byte (idle_timeout %d ms); "
    .. "normal client: %d pings, slowest %d ms", conns, r.closed, r.min_close_after_ms, r.max_close_after_ms, IDLE,
    r.pings, r.ping_max_ms)
  S.check(r, "connected", conns)
  S.check(r, "closed", conns)
  S.check(r, "not_closed", 0)
  S.check(r, "early", 0)
  S.check(r, "late", 0)
  S.check(r, "got_data", 0)
  S.check(r, "ping_fail", 0)
  lu.assertTrue(r.pings >= 10, "the normal client was hardly served")
  lu.assertTrue(r.ping_max_ms < 1000, "the normal client waited " .. r.ping_max_ms .. " ms for an echo")
  S.assert_no_leak(srv, base)
  local st = srv:stats()
  lu.assertEquals(st.close_ETIMEDOUT, conns, "sessions closed with ETIMEDOUT")
  lu.assertEquals(st.errors, 0, "handler errors: " .. tostring(st.last_error))
  S.stop_server(srv)
end

-- 50 connections at once (long: 500) each send 1 MiB and shut down their
-- write side right away (the server sees data, then FIN, possibly in one
-- go). Each must get its whole echo back, byte for byte, then a clean FIN
-- (EOF, not a reset); the server must have refused no send.
function TestSlowClients:test_half_close_gets_whole_reply_then_fin()
  local conns = S.size(50, 500)
  local srv = S.server({})
  local base = srv.start_stats
  local lg = S.loadgen("halfclose", srv:addr(), { conns = conns, size = 1 << 20, timeout = 60000 })
  local r = lg:result(90000)
  local st = srv:stats()
  S.note("%d connections x 1 MiB then FIN: %d whole replies then EOF; server refused %d sends", conns, r.ok,
    st.send_fail)
  S.check(r, "connected", conns)
  S.check(r, "mismatches", 0)
  S.check(r, "short", 0)
  S.check(r, "resets", 0)
  S.check(r, "unexpected_closes", 0)
  S.check(r, "stalled", 0)
  S.check(r, "ok", conns)
  lu.assertEquals(st.send_fail, 0, "the server's echo sends were refused (ECLOSED after the peer's FIN?)")
  S.assert_no_leak(srv, base)
  S.stop_server(srv)
end

-- The same with handlers that take 2 ms per call: the C side receives the
-- rest of the data and the peer's FIN long before the Lua handlers for the
-- earlier data have run, and their replies must still all go out, then the
-- FIN. 50 connections x 100 KB (long: 500).
function TestSlowClients:test_half_close_with_slow_handlers()
  local conns = S.size(50, 500)
  local srv = S.server({ echo_delay_ms = 2 })
  local base = srv.start_stats
  local lg = S.loadgen("halfclose", srv:addr(), { conns = conns, size = 100000, timeout = 60000 })
  local r = lg:result(90000)
  local st = srv:stats()
  S.note("%d connections x 100 KB then FIN, 2 ms per handler call: %d whole replies then EOF", conns, r.ok)
  S.check(r, "connected", conns)
  S.check(r, "mismatches", 0)
  S.check(r, "short", 0)
  S.check(r, "resets", 0)
  S.check(r, "stalled", 0)
  S.check(r, "ok", conns)
  lu.assertEquals(st.send_fail, 0, "the server's echo sends were refused")
  S.assert_no_leak(srv, base)
  S.stop_server(srv)
end
