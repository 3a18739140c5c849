-- Signals outside run(): a SIGTERM or SIGINT that comes after the core was
-- made but before run() is held and makes run() stop gracefully at once; a
-- second one while held ends the process as usual.
local lu = require "luaunit"
local H = require "helpers"

TestSignals = H.class()

local function script() return H.root .. "/tests/lua/scripts/signal_before_run.lua" end

-- Starts the script, waits for "ready", sends the signals, then lets it go
-- on to run(); returns the process once it has exited.
local function signal_before_run(core, signals, run_ms)
  local go = os.tmpname()
  os.remove(go)
  local p = H.spawn(script(), "1", go, tostring(run_ms or 10000))
  H.wait_output(core, p, "ready")
  for _, sig in ipairs(signals) do
    p:kill(sig)
    H.wait(core, function() return p:exited() end, 200)
  end
  local f = assert(io.open(go, "wb"))
  f:close()
  if not H.wait(core, function() return p:exited() end, 20000) then
    p:kill("KILL")
    os.remove(go)
    lu.fail("the script did not end; output:\n" .. p:output())
  end
  os.remove(go)
  return p
end

function TestSignals:test_sigterm_before_run_is_held_and_stops_run_gracefully()
  if H.windows then lu.skip("POSIX signals (Windows console events are tested under wine separately)") end
  H.with_core(function(core)
    local p = signal_before_run(core, { "TERM" })
    lu.assertEquals(p.status, 0, p:output())
    lu.assertStrContains(p:output(), "run returned\ttrue")
    lu.assertStrContains(p:output(), "listeners closed\ttrue")
    lu.assertStrContains(p:output(), "exit")
  end)
end

-- Subprocesses started in the background by sh run with SIGINT ignored (as
-- POSIX shells do without job control): an ignored signal stays ignored, it
-- is not turned into a stop.
function TestSignals:test_ignored_sigint_stays_ignored()
  if H.windows then lu.skip("POSIX signals (Windows console events are tested under wine separately)") end
  H.with_core(function(core)
    local p = signal_before_run(core, { "INT" }, 300)
    lu.assertEquals(p.status, 0, p:output())
    lu.assertStrContains(p:output(), "run returned\tfalse")
  end)
end

function TestSignals:test_second_sigterm_while_held_ends_the_process()
  if H.windows then lu.skip("POSIX signals (Windows console events are tested under wine separately)") end
  H.with_core(function(core)
    local p = signal_before_run(core, { "TERM", "TERM" })
    lu.assertEquals(p.status, 128 + 15, "killed by the second SIGTERM; output:\n" .. p:output())
    lu.assertNotStrContains(p:output(), "run returned")
  end)
end

function TestSignals:test_children_of_a_process_with_a_core_still_die_of_sigterm()
  if H.windows then lu.skip("POSIX signals") end
  H.with_core(function(core)
    -- this process holds signals (its core has signals = true by default)
    local holder = H.new_core { signals = true }
    local p = H.spawn_argv({ "sleep", "30" })
    H.wait(core, function() return p:getpid() ~= nil end, 3000)
    H.wait(core, function() return false end, 100)
    p:kill("TERM")
    lu.assertTrue(H.wait(core, function() return p:exited() end, 5000), "sleep ignored SIGTERM")
    lu.assertEquals(p.status, 128 + 15)
    holder:close()
  end)
end
