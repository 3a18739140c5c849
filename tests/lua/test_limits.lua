-- The listener limits: idle_timeout and max_connections (max_pending is in
-- test_send.lua, handler_timeout and memory_limit in test_errors.lua), and
-- the default on_error.
local H = require "helpers"
local lu = H.lu

TestLimits = H.class()

function TestLimits:test_idle_timeout_closes_a_silent_session_with_etimedout()
  H.with_core(function(core)
    local server_err, talker_err = "not yet", "not yet"
    local l = H.listen(core, {
      idle_timeout = 200,
      on_accept = function(s)
        s:on_close(function(_, err)
          if s.talker then talker_err = err else server_err = err end
        end)
      end,
      on_recv = function(s) s.talker = true end,
    })
    local silent = H.client(core, l:address())
    -- a second client keeps talking every 50 ms and must not time out
    local talker = H.client(core, l:address(), { on_connect = function(c) c.s:send("x") end })
    local ticks = 0
    local t = core:every(50, function()
      ticks = ticks + 1
      if not talker.s:closed() then talker.s:send("x") end
    end)
    H.wait_for(core, function() return silent.closed end, "the idle session to be closed", 10000)
    H.assert_msg(server_err, "ETIMEDOUT", "on_close err of the idle session")
    lu.assertNotNil(silent.close_err, "the silent client sees a reset")
    lu.assertEquals(talker_err, "not yet", "a session that receives is not idle")
    t:cancel()
    talker.s:close()
    H.wait_for(core, function() return talker.closed end, "close")
    l:close()
  end)
end

function TestLimits:test_max_connections_accepts_and_closes_the_extra_ones()
  H.with_core(function(core)
    local accepted = 0
    local l = H.listen(core, { max_connections = 2, on_accept = function() accepted = accepted + 1 end })
    local a = H.client(core, l:address())
    local b = H.client(core, l:address())
    H.wait_for(core, function() return accepted == 2 and a.connected and b.connected end, "two sessions")
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.closed end, "the third client to see its connection closed")
    lu.assertEquals(accepted, 2, "on_accept is not called for a rejected connection")
    lu.assertEquals(core:stats().rejected, 1)
    lu.assertFalse(a.closed == true or b.closed == true)
    -- room again after one leaves
    a.s:close()
    H.wait_for(core, function() return a.closed and core:stats().active == 2 end, "a leaves")
    local d = H.client(core, l:address())
    H.wait_for(core, function() return accepted == 3 end, "a new session once there is room")
    lu.assertNil(d.closed)
    b.s:close()
    d.s:close()
    H.wait_for(core, function() return core:stats().active == 0 end, "closes")
    l:close()
  end)
end

function TestLimits:test_default_on_error_writes_the_traceback_to_stderr()
  local script = os.tmpname()
  local f = assert(io.open(script, "w"))
  f:write([[
    local iocore = require "iocore"
    local core = assert(iocore.core { threads = 1, signals = false })
    core:post(function() error("boom from a post") end)
    core:post(function() core:stop() end)
    print("run returned", core:run(5000))
    print("handler_errors", core:stats().handler_errors)
  ]])
  f:close()
  H.with_core(function(core)
    local p = H.spawn(script)
    H.wait_for(core, function() return p:exited() end, "the script", 10000)
    local out = p:output()
    lu.assertEquals(p.status, 0, out)
    lu.assertStrContains(out, "iocore: handler error: ")
    lu.assertStrContains(out, "boom from a post")
    lu.assertStrContains(out, "stack traceback")
    lu.assertStrContains(out, "run returned\ttrue")
    lu.assertStrContains(out, "handler_errors\t1")
  end)
  os.remove(script)
end

-- The idle sweep is a timer of the core's own. When the last session is
-- gone it must not be left armed: core:close() frees the C core only when
-- no object is alive, and an object the script cannot see makes it leak
-- the core (ring/epoll fd and memory) while still returning true.
function TestLimits:test_core_close_right_after_idle_sessions_frees_everything()
  H.with_core(function(core)
    local l = H.listen(core, { idle_timeout = 60000 })
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected and core:stats().accepted == 1 end, "connect")
    c.s:close()
    -- active == 0: C closed both; queued == 0: their on_close ran in Lua
    H.wait_for(core, function()
      local st = core:stats()
      return st.active == 0 and st.queued == 0
    end, "closes")
    c = nil
    collectgarbage()
    collectgarbage()
    -- Only the listener is left: no timer of the core's own outlives the
    -- last session with an idle time-out. (Its closing accepts still need a
    -- dispatch; core:close() does that, and fails rather than leak.)
    lu.assertEquals(core:stats().objects, 1,
      "a C object besides the listener outlives every session (the idle sweep timer?)")
    l:close()
  end)
end
