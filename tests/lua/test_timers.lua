-- Timers, posts, run(timeout), stop(), and signals.
local H = require "helpers"
local lu = H.lu

TestTimers = H.class()

function TestTimers:test_after_fires_once()
  H.with_core(function(core)
    local fired, arg = 0, nil
    local t = core:after(10, function(timer) fired = fired + 1; arg = timer end)
    lu.assertStrContains(tostring(t), "iocore.timer")
    H.wait_for(core, function() return fired > 0 end, "the timer")
    core:run(50)
    lu.assertEquals(fired, 1)
    lu.assertIs(arg, t)
    lu.assertTrue(t:cancel(), "cancel() after it fired is harmless")
  end)
end

function TestTimers:test_after_zero_fires()
  H.with_core(function(core)
    local fired = false
    core:after(0, function() fired = true end)
    H.wait_for(core, function() return fired end, "after(0)")
  end)
end

function TestTimers:test_every_repeats_until_cancel_from_inside()
  H.with_core(function(core)
    local ticks = 0
    local t
    t = core:every(5, function(timer)
      ticks = ticks + 1
      lu.assertIs(timer, t)
      if ticks == 5 then lu.assertTrue(timer:cancel()) end
    end)
    H.wait_for(core, function() return ticks >= 5 end, "five ticks")
    core:run(60)
    lu.assertEquals(ticks, 5, "no tick after cancel()")
  end)
end

function TestTimers:test_every_cancel_between_runs_stops_it()
  H.with_core(function(core)
    local ticks = 0
    local t = core:every(5, function() ticks = ticks + 1 end)
    H.wait_for(core, function() return ticks >= 2 end, "two ticks")
    lu.assertTrue(t:cancel())
    lu.assertTrue(t:cancel(), "cancel() twice is harmless")
    local at_cancel = ticks
    core:run(60)
    lu.assertEquals(ticks, at_cancel, "no tick after cancel()")
  end)
end

function TestTimers:test_timers_fire_in_deadline_order()
  H.with_core(function(core)
    local order = {}
    core:after(80, function() order[#order + 1] = "80" end)
    core:after(20, function() order[#order + 1] = "20" end)
    core:after(50, function() order[#order + 1] = "50" end)
    core:after(30, function() order[#order + 1] = "30a" end)
    core:after(30, function() order[#order + 1] = "30b" end)
    H.wait_for(core, function() return #order == 5 end, "five timers")
    lu.assertEquals(order, { "20", "30a", "30b", "50", "80" })
  end)
end

function TestTimers:test_timer_started_from_a_handler()
  H.with_core(function(core)
    local chain = {}
    core:after(5, function()
      chain[#chain + 1] = 1
      core:after(5, function()
        chain[#chain + 1] = 2
        core:post(function() chain[#chain + 1] = 3 end)
      end)
    end)
    H.wait_for(core, function() return #chain == 3 end, "the chain")
    lu.assertEquals(chain, { 1, 2, 3 })
  end)
end

function TestTimers:test_dropped_timer_object_still_fires()
  H.with_core(function(core)
    local fired = false
    core:after(20, function() fired = true end) -- result not kept
    collectgarbage()
    collectgarbage()
    H.wait_for(core, function() return fired end, "a timer whose object was dropped")
  end)
end

function TestTimers:test_post_runs_once_in_order()
  H.with_core(function(core)
    local ran = {}
    lu.assertTrue(core:post(function() ran[#ran + 1] = "a" end))
    core:post(function()
      ran[#ran + 1] = "b"
      core:post(function() ran[#ran + 1] = "d" end)
    end)
    core:post(function() ran[#ran + 1] = "c" end)
    lu.assertEquals(ran, {}, "nothing runs before run()")
    H.wait_for(core, function() return #ran == 4 end, "the posts")
    core:run(30)
    lu.assertEquals(ran, { "a", "b", "c", "d" })
  end)
end

function TestTimers:test_run_with_nothing_to_do_returns_false_and_can_run_again()
  H.with_core(function(core)
    lu.assertFalse(core:run(50))
    lu.assertFalse(core:run(0))
    local fired = false
    core:after(10, function() fired = true end)
    lu.assertFalse(core:run(100))
    lu.assertTrue(fired, "a timer fires in a later run()")
    lu.assertFalse(core:run(20))
  end)
end

function TestTimers:test_completions_before_run_wait_for_run()
  H.with_core(function(core)
    local accepted = false
    local l = H.listen(core, { on_accept = function() accepted = true end })
    local c = H.client(core, l:address())
    -- the kernel connects meanwhile; no handler runs outside run()
    H.sleep(100)
    lu.assertFalse(accepted)
    lu.assertNil(c.connected)
    H.wait_for(core, function() return accepted and c.connected end, "the handlers after run()")
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
  end)
end

function TestTimers:test_stop_from_a_handler_makes_run_return_true()
  H.with_core(function(core)
    core:post(function() core:stop() end)
    lu.assertTrue(core:run(10000))
    -- usable again
    local ok = false
    core:post(function() ok = true end)
    H.wait_for(core, function() return ok end, "a post after stop")
  end)
end

function TestTimers:test_stop_from_a_timer_makes_run_return_true()
  H.with_core(function(core)
    core:after(30, function() lu.assertTrue(core:stop()) end)
    lu.assertTrue(core:run(10000))
    lu.assertFalse(core:run(20))
  end)
end

-- run() without a time-out, ended by stop() from a repeating timer. A
-- one-shot safety timer ends it too if the ticks stall, so the suite never
-- hangs; the test then fails.
function TestTimers:test_run_without_timeout_returns_on_stop()
  H.with_core(function(core)
    local ticks, safety = 0, false
    local t
    t = core:every(5, function()
      ticks = ticks + 1
      if ticks == 3 then t:cancel(); core:stop() end
    end)
    local guard = core:after(5000, function() safety = true; core:stop() end)
    lu.assertTrue(core:run())
    guard:cancel()
    lu.assertFalse(safety, ("the every(5) timer stalled after %d tick(s); the safety timer stopped run()"):format(ticks))
    lu.assertEquals(ticks, 3)
  end)
end

-- A repeating timer keeps firing inside one long run(), with no I/O to wake
-- the workers: re-arming it must wake a worker already asleep without a
-- deadline.
function TestTimers:test_every_keeps_firing_within_one_run()
  H.with_core(function(core)
    for round = 1, 50 do
      local ticks = 0
      local t
      t = core:every(2, function()
        ticks = ticks + 1
        if ticks == 5 then t:cancel(); core:stop() end
      end)
      local stopped = core:run(3000)
      t:cancel()
      lu.assertTrue(stopped, ("round %d: every(2) stalled after %d tick(s) within run(3000)"):format(round, ticks))
    end
  end)
end

-- stop() from a handler of a server in another process: the data it
-- queued just before is flushed, then its session is closed cleanly.
function TestTimers:test_stop_flushes_queued_data_then_closes()
  H.with_core(function(core)
    local N = 3 * (1 << 20)
    local p = H.spawn(H.root .. "/tests/lua/scripts/stop_server.lua", "127.0.0.1:0")
    local address = H.wait_output(core, p, "listening on (%S+)")
    local c = H.client(core, address, { on_connect = function(c) c.s:send("go " .. N) end })
    H.wait_for(core, function() return c.closed and p:exited() end, "the server to stop", 20000)
    lu.assertEquals(p.status, 0, p:output())
    lu.assertEquals(c.received, N, "queued data flushed before the close")
    lu.assertNil(c.close_err, "the client sees a clean close")
    local out = p:output()
    lu.assertStrContains(out, "run returned\ttrue")
    lu.assertStrContains(out, "on_close\tnil")
    lu.assertStrContains(out, "stats active=0 bytes_out=" .. N)
  end)
end

-- stop() on a core that holds both ends: every session gets its on_close.
function TestTimers:test_stop_closes_every_session_with_on_close()
  H.with_core(function(core)
    local closes = {}
    local l = H.listen(core, {
      on_close = function(s, err) closes[#closes + 1] = "server " .. tostring(err) end,
    })
    local clients = {}
    for i = 1, 3 do
      clients[i] = H.client(core, l:address(), {
        on_close = function(c, err) closes[#closes + 1] = "client " .. tostring(err) end,
      })
    end
    H.wait_for(core, function() return core:stats().accepted == 3 and clients[3].connected end, "connects")
    core:post(function() core:stop() end)
    lu.assertTrue(core:run(20000))
    table.sort(closes)
    lu.assertEquals(closes, { "client nil", "client nil", "client nil", "server nil", "server nil", "server nil" })
    lu.assertEquals(core:stats().active, 0)
    for _, c in ipairs(clients) do lu.assertEquals(c.close_calls, 1) end
  end)
end

function TestTimers:test_run_from_a_handler_raises()
  H.with_core(function(core, ctx)
    ctx.allow_errors = true
    core:post(function() core:run(10) end)
    H.wait_for(core, function() return #ctx.errors == 1 end, "the error")
    lu.assertStrContains(ctx.errors[1].msg, "already running")
  end)
end

-- ---- signals: examples/server.lua stopped with SIGTERM -----------------------------

function TestTimers:test_sigterm_stops_server_example_gracefully()
  H.with_core(function(core)
    local p = H.spawn(H.root .. "/examples/server.lua", "127.0.0.1:0")
    local address = H.wait_output(core, p, "listening on (%S+)")
    local c = H.client(core, address, { on_connect = function(c) c.s:send("ping") end })
    H.wait_for(core, function() return c.received == 4 or c.closed end, "the echo")
    lu.assertEquals(c:data(), "ping")
    H.wait_output(core, p, "client connected")
    p:kill("TERM")
    H.wait_for(core, function() return p:exited() and c.closed end, "the server to exit", 20000)
    lu.assertEquals(p.status, 0, "exit status; output:\n" .. p:output())
    lu.assertNil(c.close_err, "the client sees a clean close")
    local out = p:output()
    lu.assertStrContains(out, "client left")
    lu.assertStrContains(out, "server stopped")
  end)
end

function TestTimers:test_sigint_stops_a_script_and_signals_false_ignores_it()
  -- a script of our own: run() returns true on SIGINT; with signals = false
  -- the default action applies (the process dies of the signal)
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write([[
    local iocore = require "iocore"
    local core = assert(iocore.core { threads = 1, signals = arg[1] == "on" })
    io.stdout:setvbuf("line")
    print("ready")
    print("run returned", core:run(20000))
  ]])
  f:close()
  H.with_core(function(core)
    local on = H.spawn(script, "on")
    H.wait_output(core, on, "ready")
    H.sleep(50)
    on:kill("INT")
    H.wait_for(core, function() return on:exited() end, "the script to exit", 10000)
    lu.assertEquals(on.status, 0)
    lu.assertStrContains(on:output(), "run returned\ttrue")

    local off = H.spawn(script, "off")
    H.wait_output(core, off, "ready")
    H.sleep(50)
    off:kill("TERM")
    H.wait_for(core, function() return off:exited() end, "the script to die", 10000)
    lu.assertEquals(off.status, 128 + 15, "killed by SIGTERM")
  end)
  os.remove(script)
end
