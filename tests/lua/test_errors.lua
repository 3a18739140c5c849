-- Errors raised inside handlers: they go to on_error with a traceback, are
-- counted, abort only the session whose handler failed, and never stop the
-- server. Plus handler_timeout and memory_limit.
local H = require "helpers"
local lu = H.lu

TestHandlerErrors = H.class()

-- An echo listener whose sessions are remembered in `sessions` (in accept
-- order) with their on_close err in `closes[s]`. hooks.on_accept(s) and
-- hooks.on_recv(s, data) run first (they may raise).
local function server(core, hooks)
  local st = { sessions = {}, closes = {} }
  st.listener = H.listen(core, {
    on_accept = function(s)
      st.sessions[#st.sessions + 1] = s
      if hooks.on_accept then hooks.on_accept(s) end
    end,
    on_recv = function(s, data)
      if hooks.on_recv then hooks.on_recv(s, data) end
      s:send(data)
    end,
    on_close = function(s, err)
      st.closes[s] = err or "clean"
      if hooks.on_close then hooks.on_close(s, err) end
    end,
    on_drain = hooks.on_drain,
  })
  return st
end

-- A fresh client still gets its echo: the server goes on serving.
local function still_serving(core, address)
  local c = H.client(core, address, { on_connect = function(c) c.s:send("still serving?") end })
  H.wait_for(core, function() return c.received == 14 or c.closed end, "echo from the server after the error")
  lu.assertEquals(c:data(), "still serving?")
  c.s:close()
  H.wait_for(core, function() return c.closed end, "close")
end

-- The one error reported: message with `marker` and a traceback, counted.
local function assert_one_error(core, ctx, marker, session)
  H.wait_for(core, function() return #ctx.errors >= 1 end, "on_error")
  lu.assertEquals(#ctx.errors, 1)
  local e = ctx.errors[1]
  lu.assertStrContains(e.msg, marker)
  lu.assertStrContains(e.msg, "stack traceback")
  lu.assertEquals(core:stats().handler_errors, 1)
  if session == nil then
    lu.assertNil(e.session, "on_error's session argument")
  else
    lu.assertIs(e.session, session, "on_error's session argument")
  end
end

local function assert_aborted(core, st, s)
  H.wait_for(core, function() return st.closes[s] ~= nil end, "the failing session's on_close")
  H.assert_msg(st.closes[s], "ECONNABORTED", "on_close err of the session whose handler failed")
  lu.assertTrue(s:closed())
end

function TestHandlerErrors:test_error_in_on_accept()
  H.with_core(function(core, ctx)
    ctx.allow_errors = true
    local first = true
    local st = server(core, { on_accept = function(s)
      if first then first = false; error("boom in on_accept") end
    end })
    local c = H.client(core, st.listener:address())
    H.wait_for(core, function() return c.closed end, "the first client's close")
    local s = st.sessions[1]
    assert_one_error(core, ctx, "boom in on_accept", s)
    assert_aborted(core, st, s)
    still_serving(core, st.listener:address())
    st.listener:close()
  end)
end

function TestHandlerErrors:test_error_in_on_recv()
  H.with_core(function(core, ctx)
    ctx.allow_errors = true
    local st = server(core, { on_recv = function(s, data)
      if data:find("boom", 1, true) then error("boom in on_recv") end
    end })
    local c = H.client(core, st.listener:address(), { on_connect = function(c) c.s:send("boom") end })
    H.wait_for(core, function() return c.closed end, "the failing client's close")
    local s = st.sessions[1]
    assert_one_error(core, ctx, "boom in on_recv", s)
    assert_aborted(core, st, s)
    still_serving(core, st.listener:address())
    st.listener:close()
  end)
end

function TestHandlerErrors:test_error_in_on_close()
  H.with_core(function(core, ctx)
    ctx.allow_errors = true
    local calls = 0
    local st = server(core, { on_close = function(s)
      calls = calls + 1
      if calls == 1 then error("boom in on_close") end
    end })
    local c = H.client(core, st.listener:address(), {
      on_connect = function(c) c.s:send("x") end,
      on_recv = function(c) c.s:close() end,
    })
    H.wait_for(core, function() return c.closed and calls == 1 end, "close")
    local s = st.sessions[1]
    assert_one_error(core, ctx, "boom in on_close", s)
    lu.assertEquals(st.closes[s], "clean", "the failing on_close itself ran, with nil")
    still_serving(core, st.listener:address())
    lu.assertEquals(calls, 2)
    st.listener:close()
  end)
end

function TestHandlerErrors:test_error_in_on_drain()
  H.with_core(function(core, ctx)
    ctx.allow_errors = true
    local big = H.payload(8 << 20, 7)
    local drains, accepted = 0, 0
    local st = server(core, {
      on_accept = function(s)
        accepted = accepted + 1
        if accepted == 1 then s:send(big) end
      end,
      on_drain = function(s)
        drains = drains + 1
        error("boom in on_drain")
      end,
    })
    -- a reader in another process that waits before reading: the 8 MiB
    -- cannot be written at once, so on_drain is due
    local reader = H.slow_reader(st.listener:port(), 0.5)
    H.wait_for(core, function() return drains == 1 end, "on_drain", 20000)
    local s = st.sessions[1]
    assert_one_error(core, ctx, "boom in on_drain", s)
    assert_aborted(core, st, s)
    H.wait_for(core, function() return reader:exited() end, "the reader to see the reset")
    still_serving(core, st.listener:address())
    st.listener:close()
  end)
end

function TestHandlerErrors:test_error_in_on_connect()
  H.with_core(function(core, ctx)
    ctx.allow_errors = true
    local st = server(core, {})
    local c = H.client(core, st.listener:address(), { on_connect = function() error("boom in on_connect") end })
    H.wait_for(core, function() return c.closed end, "the failing client's on_close")
    assert_one_error(core, ctx, "boom in on_connect", c.s)
    H.assert_msg(c.close_err, "ECONNABORTED", "on_close err of the client whose on_connect failed")
    lu.assertEquals(c.events, { "connect", "close" })
    H.wait_for(core, function() return st.sessions[1] and st.closes[st.sessions[1]] end, "server side close")
    still_serving(core, st.listener:address())
    st.listener:close()
  end)
end

function TestHandlerErrors:test_error_in_timer()
  H.with_core(function(core, ctx)
    ctx.allow_errors = true
    local st = server(core, {})
    local fired = 0
    core:after(5, function() fired = fired + 1; error("boom in a timer") end)
    H.wait_for(core, function() return fired == 1 end, "the timer")
    assert_one_error(core, ctx, "boom in a timer", nil)
    still_serving(core, st.listener:address())
    st.listener:close()
  end)
end

function TestHandlerErrors:test_error_in_repeating_timer_keeps_it_running()
  H.with_core(function(core, ctx)
    ctx.allow_errors = true
    local fired = 0
    local t
    t = core:every(5, function()
      fired = fired + 1
      if fired == 3 then t:cancel() end
      error("boom " .. fired)
    end)
    H.wait_for(core, function() return fired == 3 end, "three ticks")
    core:run(30)
    lu.assertEquals(fired, 3)
    lu.assertEquals(#ctx.errors, 3)
    lu.assertEquals(core:stats().handler_errors, 3)
  end)
end

function TestHandlerErrors:test_error_in_post()
  H.with_core(function(core, ctx)
    ctx.allow_errors = true
    local st = server(core, {})
    local ran = 0
    core:post(function() ran = ran + 1; error("boom in a post") end)
    H.wait_for(core, function() return ran == 1 end, "the post")
    assert_one_error(core, ctx, "boom in a post", nil)
    still_serving(core, st.listener:address())
    st.listener:close()
  end)
end

function TestHandlerErrors:test_error_objects_that_are_not_strings()
  H.with_core(function(core, ctx)
    ctx.allow_errors = true
    core:post(function() error({ code = 1 }) end)
    core:post(function() error(setmetatable({}, { __tostring = function() return "custom object" end })) end)
    core:post(function() error() end)
    H.wait_for(core, function() return #ctx.errors == 3 end, "three errors")
    lu.assertStrContains(ctx.errors[1].msg, "table value")
    lu.assertStrContains(ctx.errors[2].msg, "custom object")
    lu.assertStrContains(ctx.errors[3].msg, "nil value")
    for _, e in ipairs(ctx.errors) do lu.assertStrContains(e.msg, "stack traceback") end
  end)
end

function TestHandlerErrors:test_error_inside_on_error_does_not_stop_the_server()
  H.with_core(function(core, ctx)
    local reported = 0
    core:on_error(function() reported = reported + 1; error("on_error fails too") end)
    local st = server(core, {})
    local ran = false
    core:post(function() ran = true; error("first") end)
    H.wait_for(core, function() return ran end, "the post")
    still_serving(core, st.listener:address())
    lu.assertEquals(reported, 1)
    lu.assertEquals(core:stats().handler_errors, 1)
    st.listener:close()
  end)
end

function TestHandlerErrors:test_on_error_returns_the_core_and_nil_restores_default()
  H.with_core(function(core, ctx)
    lu.assertIs(core:on_error(nil), core)
    lu.assertIs(core:on_error(function(msg) ctx.errors[#ctx.errors + 1] = { msg = msg } end), core)
  end)
end

function TestHandlerErrors:test_handler_timeout_interrupts_a_runaway_handler()
  H.with_core({ handler_timeout = 200 }, function(core, ctx)
    ctx.allow_errors = true
    local st = server(core, {})
    local started = false
    core:post(function() started = true; while true do end end)
    H.wait_for(core, function() return #ctx.errors == 1 end, "the time-out", 20000)
    lu.assertTrue(started)
    lu.assertStrContains(ctx.errors[1].msg, "ETIMEDOUT")
    lu.assertStrContains(ctx.errors[1].msg, "stack traceback")
    still_serving(core, st.listener:address())
    st.listener:close()
  end)
end

function TestHandlerErrors:test_memory_limit_fails_the_handler_not_the_state()
  collectgarbage()
  local limit = collectgarbage("count") * 1024 + 32 * (1 << 20)
  H.with_core({ memory_limit = math.floor(limit) }, function(core, ctx)
    ctx.allow_errors = true
    local st = server(core, {})
    local got
    core:post(function() got = #string.rep("x", 256 * (1 << 20)) end)
    H.wait_for(core, function() return #ctx.errors == 1 end, "the memory error")
    lu.assertNil(got)
    lu.assertStrContains(ctx.errors[1].msg, "memory")
    -- the state is still usable: handlers run, the server serves
    local ok = false
    core:post(function() ok = #string.rep("y", 1000) == 1000 end)
    H.wait_for(core, function() return ok end, "a post after the memory error")
    still_serving(core, st.listener:address())
    lu.assertTrue(core:stats().memory > 0)
    st.listener:close()
  end)
end
