-- A timer storm (tests/stress/timer_storm.lua, another process): many
-- repeating timers, some slower than their interval, one-shot batches whose
-- order is checked, an echo client; run(timeout) and SIGTERM must stay
-- responsive throughout.
local lu = require "luaunit"
local S = require "lib"

TestTimerStorm = S.class()
TestTimerStorm.limits = {
  test_timer_storm_keeps_run_and_stop_responsive = { 90, 300 },
}

local start = S.start_script

-- 200 repeating timers (long: 2,000) at 1..20 ms, 10 of them (long: 20)
-- every 5 ms with a 20 ms handler, one-shot batches with random deadlines,
-- and an echo client pinging every 20 ms, for 10 s (long: 60 s), while the
-- script drives run(200) in a loop: every run() returns within 1 s of its
-- time-out, the ping is always answered (at least once a second: the slow
-- timers alone keep the Lua state busy), no one-shot fires out of deadline
-- order, the queue never holds more than about one firing per timer, and
-- SIGTERM ends it within 5 s (run() returns true, exit 0).
function TestTimerStorm:test_timer_storm_keeps_run_and_stop_responsive()
  local TIMERS, SLOW, SECS = S.size(200, 2000), S.size(10, 20), S.size(10, 60)
  local srv, addr = start("tests/stress/timer_storm.lua",
    { "timers=" .. TIMERS, "slow=" .. SLOW, "slice=200", "secs=" .. SECS }, "listening on (127%.0%.0%.1:%d+)")
  local ping = S.loadgen("ping", addr, { duration = SECS, interval = 20 })
  local r = ping:result((SECS + 30) * 1000)
  lu.assertNotNil(S.poll(function() return srv:output():find("\nwaiting\n") or srv:exited() end, 30000, 50),
    "the storm never reached its final run()")
  S.sleep(500) -- inside run() now, with the signals caught
  local t0 = S.now()
  srv:kill("TERM")
  local status = srv:wait(30000)
  local stop_secs = (S.now() - t0) / 1000
  if not status then srv:kill("KILL") end
  local st = S.parse_kv(srv:output():match("STORM ([^\n]*)") or "")
  S.note("%d timers (%d slower than their interval), %d s: %s ticks, %s slow ticks, %s one-shots, %s order "
    .. "violations, max queued %s, %s runs, latest run() %s ms past its time-out; ping: %d round trips, %d "
    .. "failed, slowest %d ms; SIGTERM to exit %.1f s", TIMERS, SLOW, SECS, tostring(st.ticks),
    tostring(st.slow_ticks), tostring(st.oneshots), tostring(st.order_violations), tostring(st.max_queued),
    tostring(st.runs), tostring(st.max_run_late_ms), r.pings or 0, r.fail or -1, r.max_ms or -1, stop_secs)
  lu.assertEquals(status, 0, "exit status after SIGTERM\n--- stderr:\n" .. srv:errors():sub(1, 3000))
  lu.assertNotNil(st.ticks, "no STORM line:\n" .. srv:output():sub(1, 2000))
  lu.assertTrue(st.slow_ticks > 0 and st.ticks > 0 and st.oneshots > 0, "the timers did not run")
  lu.assertEquals(st.order_violations, 0, "one-shot timers fired out of deadline order")
  lu.assertTrue(st.max_run_late_ms < 1000, ("a run(200) returned %d ms late"):format(st.max_run_late_ms))
  lu.assertEquals(st.final_run, "true", "run() after SIGTERM")
  -- the stop waits for the sessions, not for a queue the timers keep full
  -- (it took close_timeout + 1 s and more when it waited for an empty queue)
  lu.assertTrue(stop_secs < 5, ("SIGTERM to exit took %.1f s"):format(stop_secs))
  lu.assertTrue(st.max_queued <= TIMERS + 200, ("%d events queued at once"):format(st.max_queued))
  lu.assertEquals(r.fail, 0, "pings not answered")
  -- the slow timers keep the Lua state busy all the time, so each ping
  -- waits behind their queued firings: served, but not fast
  lu.assertTrue(r.pings >= SECS, ("only %d pings in %d s"):format(r.pings, SECS))
end
