-- The binding at its edges: a full Lua state, runaway handlers, a timer
-- slower than its interval, lying arrays, objects used after __gc, stops
-- that race with received data and with new listeners. Tests that could
-- hang or crash the process run their subject in a subprocess with a hard
-- time limit.
local H = require "helpers"
local lu = H.lu

TestEdges = H.class()

local function script(name) return H.root .. "/tests/lua/scripts/" .. name end

-- Runs a script to its end (killed after ms), returning its output.
local function run_script(core, ms, name, ...)
  local p = H.spawn(script(name), ...)
  local done = H.wait(core, function() return p:exited() end, ms)
  if not done then
    p:kill("KILL")
    lu.fail(("%s %s did not finish in %d ms (hung); output:\n%s"):format(name, table.concat({ ... }, " "), ms,
      p:output()), 2)
  end
  return p:output(), p.status
end

-- Busy-waits inside a handler until cond() (a C-side fact) holds; bounded.
local function spin_until(cond, ms)
  local deadline = H.now() + (ms or 5000)
  while not cond() and H.now() < deadline do end
  return cond()
end

-- A client in another process (bash /dev/tcp) that connects, waits half a
-- second (the server's on_accept has run by then), sends `data`, then
-- either reads until EOF and closes ("close") or keeps the connection open
-- for a few seconds ("hold").
local function bash_client(port, data, mode)
  local tail = mode == "close" and "cat <&3 >/dev/null; exec 3>&-" or "sleep 4"
  return H.spawn_argv({ "bash", "-c",
    ("exec 3<>/dev/tcp/127.0.0.1/%d || exit 9; sleep 0.5; printf '%%s' %s >&3; %s"):format(
      port, H.shq(data), tail) })
end

-- ---- memory_limit: allocations on worker threads ---------------------------------------------

for _, what in ipairs { "recv", "accept", "timer" } do
  TestEdges["test_full_lua_state_on_a_worker_fails_the_session_not_the_process_" .. what] = function()
    H.with_core(function(core)
      local out, status = run_script(core, 30000, "memory_full.lua", what)
      lu.assertEquals(status, 0, "the process must survive a full Lua state; output:\n" .. out)
      lu.assertStrContains(out, "survived")
      lu.assertStrContains(out, "full\ttrue\tdone\ttrue", false,
        "the work was not seen done with the state full; output:\n" .. out)
      lu.assertStrContains(out, "usable\ttrue")
      lu.assertStrContains(out, "active\t0")
      if what ~= "timer" then
        local n = tonumber(out:match("handler_errors\t(%d+)"))
        lu.assertTrue(n and n >= 1, "the failure is counted as a handler error; output:\n" .. out)
      end
    end)
  end
end

-- ---- handler_timeout: runaways that used to escape -------------------------------------------

for _, sc in ipairs { "created_coroutine", "resumed_coroutine", "wrapped_coroutine", "pcall_loop",
                      "pcall_loop_in_coroutine", "on_error_loop" } do
  TestEdges["test_handler_timeout_interrupts_" .. sc] = function()
    H.with_core(function(core)
      local out, status = run_script(core, 30000, "runaway.lua", sc)
      lu.assertEquals(status, 0, out)
      local line = out:match(sc .. " ok [^\n]*")
      lu.assertNotNil(line, "the scenario did not end; output:\n" .. out)
      lu.assertStrContains(line, "run=false stop=true after=true")
      if sc == "on_error_loop" then
        lu.assertStrContains(line, "handler_errors=1")
        lu.assertStrContains(out, "iocore: on_error failed: ETIMEDOUT")
      else
        lu.assertStrContains(line, "errors=1 timeouts=1 handler_errors=1")
      end
    end)
  end
end

function TestEdges:test_sigterm_during_a_hidden_runaway_stops_run()
  H.with_core(function(core)
    local p = H.spawn(script("runaway.lua"), "sigterm")
    H.wait_output(core, p, "ready")
    p:kill("TERM")
    if not H.wait(core, function() return p:exited() end, 20000) then
      p:kill("KILL")
      lu.fail("SIGTERM did not end run() during a runaway; output:\n" .. p:output())
    end
    lu.assertEquals(p.status, 0, p:output())
    lu.assertStrContains(p:output(), "run returned\ttrue\terrors\t1")
  end)
end

-- ---- a repeating timer slower than its interval ----------------------------------------------

function TestEdges:test_slow_repeating_timer_does_not_hold_run_timeout()
  H.with_core(function(core)
    local out, status = run_script(core, 20000, "timer_storm.lua", "timeout")
    lu.assertEquals(status, 0, out)
    lu.assertStrContains(out, "run\tfalse")
    local q = tonumber(out:match("max_queued\t(%d+)"))
    lu.assertTrue(q and q <= 1, "at most one firing queued; output:\n" .. out)
  end)
end

function TestEdges:test_slow_repeating_timer_does_not_hold_stop()
  H.with_core(function(core)
    local out, status = run_script(core, 20000, "timer_storm.lua", "stop")
    lu.assertEquals(status, 0, out)
    lu.assertStrContains(out, "run\ttrue")
    local q = tonumber(out:match("max_queued\t(%d+)"))
    lu.assertTrue(q and q <= 2, "at most one firing per timer queued; output:\n" .. out)
  end)
end

function TestEdges:test_slow_repeating_timer_does_not_hold_sigterm()
  H.with_core(function(core)
    local p = H.spawn(script("timer_storm.lua"), "signal")
    H.wait_output(core, p, "ready")
    H.wait(core, function() return false end, 300)
    p:kill("TERM")
    if not H.wait(core, function() return p:exited() end, 20000) then
      p:kill("KILL")
      lu.fail("SIGTERM did not stop run(); output:\n" .. p:output())
    end
    lu.assertEquals(p.status, 0, p:output())
    lu.assertStrContains(p:output(), "run\ttrue")
  end)
end

-- ---- send(array) with a lying __len ----------------------------------------------------------

function TestEdges:test_send_array_uses_raw_length_and_refuses_a_lying_len()
  H.with_core(function(core)
    local got = {}
    local l = H.listen(core, { on_recv = function(s, d) got[#got + 1] = d end })
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected end, "connect")
    for _, n in ipairs { -1, 2 ^ 60 // 1, 1 << 62, 3, 0 } do
      local t = setmetatable({ "a", "b" }, { __len = function() return n end })
      local ok, err = pcall(function() return c.s:send(t) end)
      lu.assertFalse(ok, "__len " .. n .. " accepted")
      lu.assertStrContains(err, "bad argument #1 to 'send'")
      lu.assertStrContains(err, "__len")
    end
    -- a proxy whose items are not in the table itself
    local proxy = setmetatable({}, { __len = function() return 2 end, __index = function() return "x" end })
    lu.assertFalse(pcall(function() return c.s:send(proxy) end))
    -- a __len that tells the truth is fine; so is none at all
    lu.assertTrue(c.s:send(setmetatable({ "o", "k" }, { __len = function() return 2 end })))
    lu.assertTrue(c.s:send({ "!" }))
    H.wait_for(core, function() return table.concat(got) == "ok!" end, "the two good sends")
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
  end)
end

-- ---- stop() and close() racing with received data --------------------------------------------

-- Data C received before a stop is still delivered: a stop is not the
-- script closing the session.
function TestEdges:test_stop_delivers_data_already_received()
  H.with_core(function(core)
    local got, server_s = {}, nil
    local l = H.listen(core, {
      on_accept = function(s)
        server_s = s
        core:post(function()
          lu.assertEquals(#got, 0, "(test precondition) data came before on_accept")
          -- the lock is ours: "hello" is received in C and queued meanwhile
          spin_until(function() return core:stats().bytes_in >= 5 end)
          core:stop()
          -- run()'s thread closes the session in C before we return
          spin_until(function() return server_s:closed() end)
        end)
      end,
      on_recv = function(s, d) got[#got + 1] = d end,
    })
    local p = bash_client(l:port(), "hello", "hold")
    lu.assertTrue(core:run(20000), "run() ends with the stop")
    lu.assertEquals(table.concat(got), "hello", "data received before the stop was dropped; closed: " .. tostring(server_s:closed()) .. " bytes_in " .. core:stats().bytes_in)
    p:kill("KILL")
  end)
end

-- After s:close() no on_recv runs, even when the peer's FIN lands between
-- the close and the processing of data queued before it.
function TestEdges:test_no_on_recv_after_close_when_peer_fin_lands_between()
  H.with_core(function(core)
    local recvs, closed_err = 0, "not yet"
    local l = H.listen(core, {
      on_accept = function(s)
        core:post(function()
          lu.assertEquals(recvs, 0, "(test precondition) data came before on_accept")
          spin_until(function() return core:stats().bytes_in >= 4 end)
          s:close()
          -- the peer answers our FIN with its own; C finishes the session
          spin_until(function() return core:stats().closed >= 1 end)
        end)
      end,
      on_recv = function() recvs = recvs + 1 end,
      on_close = function(s, err) closed_err = err end,
    })
    local p = bash_client(l:port(), "data", "close")
    H.wait_for(core, function() return closed_err ~= "not yet" end, "on_close", 20000)
    lu.assertEquals(recvs, 0, "on_recv ran after s:close()")
    H.wait_for(core, function() return p:exited() end, "the client")
    l:close()
  end)
end

-- ---- objects used after __close / __gc -------------------------------------------------------

function TestEdges:test_listener_methods_after_close_variable_and_gc()
  H.with_core(function(core)
    local l = H.listen(core)
    local port = l:port()
    do
      local l2 <close> = l
    end
    lu.assertEquals(l:port(), port, "port() after the <close> scope")
    lu.assertStrContains(l:address(), ":" .. port)
    H.assert_fail("ECLOSED", "close after <close>", l:close())
    -- resurrected after __gc: its finalizer has run before the holder's
    local seen
    do
      local holder = setmetatable({}, { __gc = function(h)
        seen = { table.pack(h.l:port()), table.pack(h.l:address()), tostring(h.l) }
      end })
      holder.l = H.listen(core)
      holder.l:close()
    end
    collectgarbage()
    collectgarbage()
    lu.assertNotNil(seen, "the holder was collected")
    H.assert_fail("ECLOSED", "port after __gc", table.unpack(seen[1], 1, seen[1].n))
    H.assert_fail("ECLOSED", "address after __gc", table.unpack(seen[2], 1, seen[2].n))
    lu.assertStrContains(seen[3], "iocore.listener")
  end)
end

function TestEdges:test_session_methods_after_gc()
  H.with_core(function(core)
    local l = H.listen(core)
    local seen, id
    local closed = false
    do
      local holder = setmetatable({}, { __gc = function(h)
        local s = h.s
        seen = { id = s:id(), peer = table.pack(s:peer()), address = table.pack(s:address()),
                 send = table.pack(s:send("x")), closed = s:closed(), pending = s:pending(),
                 str = tostring(s), close = table.pack(s:close()) }
      end })
      holder.s = core:connect(l:address(), { on_close = function() closed = true end })
      id = holder.s:id()
      holder.s:close()
    end
    H.wait_for(core, function() return closed end, "on_close")
    collectgarbage()
    collectgarbage()
    lu.assertNotNil(seen, "the holder was collected")
    lu.assertEquals(seen.id, id)
    H.assert_fail("ECLOSED", "peer after __gc", table.unpack(seen.peer, 1, seen.peer.n))
    H.assert_fail("ECLOSED", "address after __gc", table.unpack(seen.address, 1, seen.address.n))
    H.assert_fail("ECLOSED", "send after __gc", table.unpack(seen.send, 1, seen.send.n))
    H.assert_fail("ECLOSED", "close after __gc", table.unpack(seen.close, 1, seen.close.n))
    lu.assertTrue(seen.closed)
    lu.assertEquals(seen.pending, 0)
    lu.assertStrContains(seen.str, "closed")
    l:close()
  end)
end

-- ---- stop() and listeners --------------------------------------------------------------------

-- A listener a handler opens while the stop is closing listeners is closed
-- too: Lua and C agree, and nothing of it is left open.
function TestEdges:test_listener_opened_during_stop_is_closed_in_c_too()
  H.with_core(function(core)
    H.listen(core)
    local late
    core:post(function()
      core:stop()
      -- run()'s thread has closed the existing listener: open a new one
      spin_until(function() return core:stats().accepts_posted == 0 end)
      late = H.listen(core)
    end)
    lu.assertTrue(core:run(20000))
    lu.assertNotNil(late)
    H.assert_fail("ECLOSED", "close of the listener opened during the stop", late:close())
    local st = core:stats()
    lu.assertEquals(st.accepts_posted, 0, "accepts of a listener Lua calls closed")
    lu.assertEquals(st.sockets, 0, "the socket of a listener Lua calls closed")
  end)
end

function TestEdges:test_stats_right_after_stop_show_listeners_closed()
  H.with_core(function(core)
    local l = H.listen(core, { accepts = 64 })
    H.wait(core, function() return false end, 30)
    lu.assertEquals(core:stats().accepts_posted, 64)
    core:post(function() core:stop() end)
    lu.assertTrue(core:run(20000))
    local st = core:stats()
    lu.assertEquals(st.accepts_posted, 0, "accepts still posted right after the stop")
    lu.assertEquals(st.sockets, 0, "the listener's socket still open right after the stop")
    H.assert_fail("ECLOSED", "close after the stop", l:close())
  end)
end

-- ---- the coroutine guard is transparent --------------------------------------------------------

-- require "iocore" replaces coroutine.resume and coroutine.wrap (to carry
-- the handler time-out into coroutines); inside and outside handlers they
-- behave as Lua's own.
function TestEdges:test_guarded_coroutine_resume_and_wrap_behave_as_lua_s()
  local function exercise()
    local r = {}
    local co = coroutine.create(function(a, b)
      local c = coroutine.yield(a + b)
      error({ code = c })
    end)
    r.first = table.pack(coroutine.resume(co, 1, 2))
    r.second = table.pack(coroutine.resume(co, 7))
    r.status = coroutine.status(co)
    r.dead = table.pack(coroutine.resume(co))
    local gen = coroutine.wrap(function() for i = 1, 3 do coroutine.yield(i) end end)
    r.gen = { gen(), gen(), gen() }
    r.wrap_err = select(2, pcall(coroutine.wrap(function() error("in wrap", 0) end)))
    r.bad = select(2, pcall(coroutine.resume, 42))
    return r
  end
  local function check(r, where)
    lu.assertEquals({ r.first[1], r.first[2], r.first.n }, { true, 3, 2 }, where)
    lu.assertFalse(r.second[1], where)
    lu.assertEquals(r.second[2], { code = 7 }, where)
    lu.assertEquals(r.status, "dead", where)
    lu.assertEquals({ r.dead[1], r.dead[2] }, { false, "cannot resume dead coroutine" }, where)
    lu.assertEquals(r.gen, { 1, 2, 3 }, where)
    lu.assertEquals(r.wrap_err, "in wrap", where)
    lu.assertStrContains(r.bad, "bad argument #1 to")
    lu.assertStrContains(r.bad, "coroutine expected")
  end
  check(exercise(), "outside a handler")
  H.with_core({ handler_timeout = 5000 }, function(core)
    local r
    core:post(function() r = exercise() end)
    H.wait_for(core, function() return r ~= nil end, "the post")
    check(r, "inside a handler")
  end)
end
