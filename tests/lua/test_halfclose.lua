-- The ends of a connection: on_eof (the peer's FIN does not close the
-- session), s:shutdown() (our half-close), and the lossless graceful close
-- with close_timeout. The peers are other processes (tests/lua/peer.lua)
-- so that half-closes and slow reading are exactly what the test says.
local H = require "helpers"
local P = require "peer"
local lu = H.lu

TestHalfClose = P.class()

local KiB, MiB = 1024, 1 << 20

local run_for = P.run_for

local assert_same_bytes = P.assert_same_bytes

-- Issue: after the peer's FIN every later send was refused (ECLOSED), so a
-- reply produced later (by a timer, a backend, a pump) never went out. With
-- on_eof set, the FIN does not close: on_eof runs after the request's
-- on_recv, and a reply sent 200 ms later by a timer reaches the peer, whole,
-- before our close.
function TestHalfClose:test_on_eof_reply_from_a_timer_after_the_peers_fin_goes_out()
  P.require()
  H.with_core(function(core)
    local reply = H.payload(1 * MiB, 51)
    local events, at_eof, server_err = {}, {}, "not yet"
    local l = H.listen(core, {
      on_recv = function(_, data) events[#events + 1] = "recv " .. #data end,
      on_eof = function(s)
        events[#events + 1] = "eof"
        at_eof.closed = s:closed()
        core:after(200, function()
          at_eof.send = table.pack(s:send(reply))
          at_eof.close = s:close()
        end)
      end,
      on_close = function(_, err)
        events[#events + 1] = "close"
        server_err = err
      end,
    })
    local p = P.client(l:port(), { send = "request", shut_wr = true })
    P.event(core, p, "eof %d+", 20000)
    H.wait_for(core, function() return server_err ~= "not yet" end, "the server's on_close")
    lu.assertEquals(events, { "recv 7", "eof", "close" })
    lu.assertFalse(at_eof.closed, "closed() in on_eof")
    lu.assertTrue(at_eof.send[1], "send after the peer's FIN: " .. tostring(at_eof.send[2]))
    lu.assertTrue(at_eof.close)
    lu.assertEquals(p:eof(), #reply)
    assert_same_bytes(p:data(), reply, "the late reply")
    lu.assertNil(server_err)
    l:close()
  end)
end

-- s:on_eof(fn) on one session returns the session; s:shutdown() from on_eof
-- sends what is queued, then the FIN; with both FINs done, on_close(nil).
function TestHalfClose:test_session_on_eof_then_shutdown_closes_cleanly()
  P.require()
  H.with_core(function(core)
    local set_result, shut, server_err, got = nil, nil, "not yet", nil
    local l = H.listen(core, {
      on_recv = function(_, d) got = d end, -- (without it "ping" and the FIN would be held)
      on_accept = function(s)
        set_result = s:on_eof(function(s2)
          s2:send("pong")
          shut = table.pack(s2:shutdown())
        end)
      end,
      on_close = function(_, err) server_err = err end,
    })
    local p = P.client(l:port(), { send = "ping", shut_wr = true })
    P.event(core, p, "eof %d+", 20000)
    H.wait_for(core, function() return server_err ~= "not yet" end, "the server's on_close")
    lu.assertNotNil(set_result, "s:on_eof(fn) returned nothing")
    lu.assertEquals(tostring(set_result):match("^iocore.session"), "iocore.session")
    lu.assertTrue(shut[1], "shutdown(): " .. tostring(shut[2]))
    lu.assertEquals(got, "ping")
    lu.assertEquals(p:data(), "pong")
    lu.assertNil(server_err)
    l:close()
  end)
end

-- on_eof runs once, after every on_recv of the data sent before the FIN,
-- even when the handlers are slow (2 ms each) so the FIN reaches the C side
-- long before the Lua side is done with the data.
function TestHalfClose:test_on_eof_runs_after_every_on_recv_of_pre_fin_data()
  P.require()
  H.with_core(function(core)
    local payload = H.payload(2 * MiB, 52)
    local chunks, eofs, bytes_at_eof, server_err = {}, 0, nil, "not yet"
    local l = H.listen(core, {
      on_recv = function(_, data)
        local untilt = H.now() + 2
        while H.now() < untilt do end
        chunks[#chunks + 1] = data
      end,
      on_eof = function(s)
        eofs = eofs + 1
        bytes_at_eof = #table.concat(chunks)
        s:send("done")
        s:close()
      end,
      on_close = function(_, err) server_err = err end,
    })
    local p = P.client(l:port(), { send = payload, shut_wr = true })
    P.event(core, p, "eof %d+", 30000)
    H.wait_for(core, function() return server_err ~= "not yet" end, "the server's on_close")
    lu.assertEquals(eofs, 1)
    lu.assertEquals(bytes_at_eof, #payload, "on_eof ran before every byte was delivered")
    assert_same_bytes(table.concat(chunks), payload, "the data before the FIN")
    lu.assertEquals(p:data(), "done")
    lu.assertNil(server_err)
    l:close()
  end)
end

-- Without on_eof the phase-1 behaviour stays: a reply from on_recv still
-- goes out, then the session closes by itself after the peer's FIN.
function TestHalfClose:test_without_on_eof_the_peers_fin_closes_after_the_handlers()
  P.require()
  H.with_core(function(core)
    local server_err = "not yet"
    local l = H.listen(core, {
      on_recv = function(s, data) s:send("re:" .. data) end,
      on_close = function(_, err) server_err = err end,
    })
    local p = P.client(l:port(), { send = "hi", shut_wr = true })
    P.event(core, p, "eof %d+", 20000)
    H.wait_for(core, function() return server_err ~= "not yet" end, "the server's on_close")
    lu.assertEquals(p:data(), "re:hi")
    lu.assertNil(server_err)
    l:close()
  end)
end

-- s:shutdown(): the queued 1 MiB, then FIN; sends after it are refused;
-- reading goes on, so what the peer sends after seeing our FIN is
-- delivered (on_recv, then on_eof), and on_close(nil) follows its FIN.
function TestHalfClose:test_shutdown_writes_queued_data_then_fin_and_reading_goes_on()
  P.require()
  H.with_core(function(core)
    local data = H.payload(1 * MiB, 53)
    local events, r, server_err = {}, {}, "not yet"
    local l = H.listen(core, {
      on_accept = function(s)
        s:send(data)
        r.shut = table.pack(s:shutdown())
        r.after = table.pack(s:send("late"))
        r.closed = s:closed()
      end,
      on_recv = function(_, d) events[#events + 1] = "recv " .. d end,
      on_eof = function() events[#events + 1] = "eof" end,
      on_close = function(_, err)
        events[#events + 1] = "close"
        server_err = err
      end,
    })
    local p = P.client(l:port(), { after_eof = "after your FIN" })
    P.event(core, p, "sent%-after%-eof", 20000)
    H.wait_for(core, function() return server_err ~= "not yet" end, "the server's on_close")
    lu.assertTrue(r.shut[1], "shutdown(): " .. tostring(r.shut[2]))
    H.assert_fail("ECLOSED", "send after shutdown()", table.unpack(r.after, 1, r.after.n))
    lu.assertEquals(p:eof(), #data)
    assert_same_bytes(p:data(), data, "the data queued before shutdown()")
    lu.assertEquals(events, { "recv after your FIN", "eof", "close" })
    lu.assertNil(server_err)
    l:close()
  end)
end

function TestHalfClose:test_shutdown_after_close_returns_eclosed()
  H.with_core(function(core)
    local res
    local l = H.listen(core, {
      on_accept = function(s)
        s:close()
        res = table.pack(s:shutdown())
      end,
    })
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.closed and res end, "close")
    H.assert_fail("ECLOSED", "shutdown() after close()", table.unpack(res, 1, res.n))
    l:close()
  end)
end

-- Issue: s:send(4 MiB); s:close() to a client reading at ~400 KB/s: the
-- close reset the connection 5 s after the last byte reached the kernel
-- (the client had about half) and reported on_close(s, nil). A graceful
-- close waits as long as the peer makes progress: every byte arrives, and
-- on_close(nil) is then the truth.
function TestHalfClose:test_graceful_close_to_a_slow_reader_delivers_everything()
  P.require()
  H.with_core(function(core)
    local data = H.payload(4 * MiB, 54)
    local server_err = "not yet"
    local l = H.listen(core, {
      on_accept = function(s)
        s:send(data)
        s:close()
      end,
      on_close = function(_, err) server_err = err end,
    })
    local p = P.client(l:port(), { rcvbuf = 64 * KiB, rate = 400 * KiB, deadline = 60 })
    P.event(core, p, "eof %d+", 40000)
    H.wait_for(core, function() return server_err ~= "not yet" end, "the server's on_close")
    lu.assertEquals(p:eof(), #data, "bytes the slow reader got before EOF")
    assert_same_bytes(p:data(), data, "what the slow reader got")
    lu.assertNil(server_err)
    l:close()
  end)
end

-- The same with close_timeout (1 s) far below the reading time (~6 s): the
-- time-out counts time without progress, not the whole close.
function TestHalfClose:test_close_timeout_waits_while_the_peer_makes_progress()
  P.require()
  H.with_core(function(core)
    local data = H.payload(3 * MiB, 55)
    local server_err = "not yet"
    local l = H.listen(core, {
      close_timeout = 1000,
      on_accept = function(s)
        s:send(data)
        s:close()
      end,
      on_close = function(_, err) server_err = err end,
    })
    local p = P.client(l:port(), { rcvbuf = 64 * KiB, rate = 512 * KiB, deadline = 60 })
    P.event(core, p, "eof %d+", 40000)
    H.wait_for(core, function() return server_err ~= "not yet" end, "the server's on_close")
    lu.assertEquals(p:eof(), #data)
    assert_same_bytes(p:data(), data, "what the slow reader got")
    lu.assertNil(server_err)
    l:close()
  end)
end

-- A peer that reads nothing: after close_timeout without progress the
-- session is reset and on_close says ETIMEDOUT (never nil after losing data).
function TestHalfClose:test_close_timeout_resets_a_peer_that_reads_nothing_with_etimedout()
  P.require()
  H.with_core(function(core)
    local server_err = "not yet"
    local l = H.listen(core, {
      close_timeout = 500,
      on_accept = function(s)
        s:send(H.payload(8 * MiB, 56))
        s:close()
      end,
      on_close = function(_, err) server_err = err end,
    })
    local p = P.client(l:port(), { rcvbuf = 64 * KiB, no_read = true, deadline = 30 })
    H.wait_for(core, function() return server_err ~= "not yet" end, "the close time-out", 15000)
    H.assert_msg(server_err, "ETIMEDOUT", "on_close after the close time-out")
    p:kill("KILL")
    l:close()
  end)
end

-- close_timeout as a connect option and as a core option (the default for
-- every session of the core): the client closes with 8 MiB queued towards a
-- server session that is paused (reads nothing), and gets ETIMEDOUT.
local function close_timeout_case(core, connect_opts)
  local srv
  -- the client sends once the server is paused (says "go"): before that,
  -- the server's C side could read ahead what the test needs to stay unread
  local l = H.listen(core, { on_accept = function(s) srv = s; s:pause(); s:send("go") end })
  local err = "not yet"
  local o = {
    on_recv = function(s)
      if s.sent then return end
      s.sent = true
      s:send(H.payload(8 * MiB, 57))
      s:close()
    end,
    on_close = function(_, e) err = e end,
  }
  for k, v in pairs(connect_opts) do o[k] = v end
  local c = assert(core:connect(l:address(), o))
  H.wait_for(core, function() return err ~= "not yet" end, "the client's close time-out", 15000)
  H.assert_msg(err, "ETIMEDOUT", "the client's on_close")
  lu.assertTrue(c:closed())
  srv:abort()
  H.wait_for(core, function() return srv:closed() end, "the server session's close")
  l:close()
end

function TestHalfClose:test_close_timeout_connect_option()
  H.with_core(function(core) close_timeout_case(core, { close_timeout = 300 }) end)
end

function TestHalfClose:test_close_timeout_core_option()
  H.with_core({ close_timeout = 300 }, function(core) close_timeout_case(core, {}) end)
end

-- The default close_timeout is 5000 ms (docs/lua-api.md): a peer that reads
-- nothing is reset no sooner than that after close().
function TestHalfClose:test_close_timeout_default_is_5000_ms()
  P.require()
  H.with_core(function(core)
    local t_close, t_end, server_err = nil, nil, "not yet"
    local l = H.listen(core, {
      on_accept = function(s)
        s:send(H.payload(8 * MiB, 58))
        t_close = core:now()
        s:close()
      end,
      on_close = function(_, err) t_end, server_err = core:now(), err end,
    })
    local p = P.client(l:port(), { rcvbuf = 64 * KiB, no_read = true, deadline = 30 })
    H.wait_for(core, function() return server_err ~= "not yet" end, "the close time-out", 20000)
    H.assert_msg(server_err, "ETIMEDOUT", "on_close after the default close time-out")
    lu.assertTrue(t_end - t_close >= 4900, ("reset %d ms after close()"):format(t_end - t_close))
    p:kill("KILL")
    l:close()
  end)
end
