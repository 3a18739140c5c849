-- Load held: many echo connections, every byte checked, memory flat.
local lu = require "luaunit"
local S = require "lib"

TestLoad = S.class()
TestLoad.limits = { test_echo_held_every_byte_back_rss_flat = { 90, 400 } }

-- N connections echo random messages of 1 B..64 KiB for the whole run
-- (200 for 10 s; long: 2,000 for 120 s). Passes when every connection got
-- back exactly its own stream (no byte lost, duplicated, reordered; the
-- checksums agree), none was closed under it, the server reported no error
-- and no failed send, it returns to its idle state (nothing leaked), and
-- its RSS at the end of the run (the lowest sample in the last 10%) is
-- within 10% + 4 MiB of its RSS a quarter of the way in (lowest sample in
-- 20..30%).
function TestLoad:test_echo_held_every_byte_back_rss_flat()
  local conns, secs = S.size(200, 2000), S.size(10, 120)
  local srv = S.server({})
  local base = srv.start_stats
  local lg = S.loadgen("echo", srv:addr(), { conns = conns, duration = secs, seed = 6, timeout = 60000 })
  -- sample the server while the load runs
  local samples = {}
  local t_start
  while not lg:exited() do
    local st = srv:stats()
    if st then
      if not t_start and st.open >= conns then t_start = st.t end
      if t_start then samples[#samples + 1] = st end
    end
    S.sleep(250)
  end
  local r = lg:result(10000)
  lu.assertNotNil(t_start, "the server never had all connections open at once")
  -- RSS at 25% and at 100% of the run: the lowest sample in the 20..30%
  -- and 90..100% windows. Queued data comes and goes (up to ~64 KiB of
  -- receive events per connection), so a single sample can catch a passing
  -- peak; a leak raises the floor.
  local function floor_between(a, b)
    local best
    for _, st in ipairs(samples) do
      local f = (st.t - t_start) / (secs * 1000)
      if f >= a and f <= b and (not best or st.rss_kb < best.rss_kb) then best = st end
    end
    return best
  end
  local s25, s100 = floor_between(0.2, 0.3), floor_between(0.9, 1.0)
  local peak = 0
  for _, st in ipairs(samples) do peak = math.max(peak, st.rss_kb) end
  S.note("%d connections, %.1f s: %d messages, %.1f MiB each way (%.1f MiB/s); server CPU %.1f s",
    conns, r.secs, r.msgs, r.bytes_sent / 2 ^ 20, r.bytes_sent / 2 ^ 20 / r.secs, (s100 and s100.cpu or 0) - base.cpu)
  S.note("server RSS: start %d KiB, 25%% %d KiB, 100%% %d KiB, peak %d KiB", base.rss_kb,
    s25 and s25.rss_kb or -1, s100 and s100.rss_kb or -1, peak)

  S.check(r, "connected", conns)
  S.check(r, "mismatches", 0)
  S.check(r, "unexpected_closes", 0)
  S.check(r, "hash_mismatch", 0)
  S.check(r, "stalled", 0)
  S.check(r, "short", 0)
  S.check(r, "ok", conns)
  lu.assertEquals(r.bytes_recv, r.bytes_sent, "bytes echoed != bytes sent")
  lu.assertTrue(r.msgs > conns, "hardly any messages were exchanged")

  S.assert_no_leak(srv, base)
  local st = srv:stats()
  lu.assertEquals(st.errors, 0, "handler errors: " .. tostring(st.last_error))
  lu.assertEquals(st.send_fail, 0, "sends refused by the server")
  lu.assertEquals(st.close_err, 0, "sessions closed with an error")
  lu.assertEquals(st.accepted, conns)

  lu.assertNotNil(s25, "no RSS sample at 25%")
  lu.assertNotNil(s100, "no RSS sample at 100%")
  -- The bound: the 25% floor (+10% + 4 MiB), or what the data that may be
  -- in flight explains, whichever is larger. A connection has at most the
  -- loadgen's window (64 KiB) plus one message (up to 64 KiB) unanswered:
  -- 128 KiB, held as receive events or queued sends (25 MiB for 200), and
  -- whether the allocator gives such a peak back depends on fragmentation:
  -- the floor can step up once, late, to about that working set and stay
  -- there without a leak (seen under fault injection on epoll: 4.9 -> 15.4
  -- MiB, and on plain epoll under a loaded CI: 8.5 -> 24.6 MiB, when the
  -- bound still counted 64 KiB per connection). A leak grows with the half
  -- a million messages exchanged and passes both; S.assert_no_leak above
  -- checks the object and operation counts exactly.
  -- Each such message becomes a Lua string the collector frees only in
  -- its next cycle, and it lets garbage grow to about the live data again
  -- before one (pause 200 %): twice 128 KiB per connection. (Under load
  -- in CI on io_uring the floor went from 37.2 to 45.8 MiB with 200
  -- connections, past the 128 KiB bound and the 25 % one.)
  local in_flight_kb = base.rss_kb + conns * 2 * 128 + 4096
  local limit = math.max(s25.rss_kb * 1.10 + 4096, in_flight_kb)
  if s100.rss_kb > limit then
    lu.fail(("server RSS grew from %d KiB (25%%) to %d KiB (100%%); allowed %d KiB")
      :format(s25.rss_kb, s100.rss_kb, math.floor(limit)))
  end
  S.stop_server(srv)
end
