-- Sending and closing: ECLOSED, graceful close flushing, abort dropping,
-- gathered sends, pending()/on_drain, max_pending.
local H = require "helpers"
local lu = H.lu

TestSend = H.class()

local MiB = 1 << 20

-- A listener whose accepted sessions are handed to on_session(s); returns
-- the listener.
local function server(core, on_session, opts)
  local o = { on_accept = on_session }
  for k, v in pairs(opts or {}) do o[k] = v end
  return H.listen(core, o)
end

function TestSend:test_send_after_close_returns_eclosed()
  H.with_core(function(core)
    local server_session
    -- (an on_recv: without one the server would hold "before", and the FIN behind it)
    local l = server(core, function(s) server_session = s end, { on_recv = function() end })
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected and server_session end, "connect")
    lu.assertTrue(c.s:send("before"))
    lu.assertTrue(c.s:close())
    lu.assertTrue(c.s:closed())
    H.assert_fail("ECLOSED", "send after close()", c.s:send("after"))
    H.assert_fail("ECLOSED", "gathered send after close()", c.s:send({ "a", "b" }))
    H.assert_fail("ECLOSED", "second close()", c.s:close())
    H.wait_for(core, function() return c.closed end, "on_close")
    H.assert_fail("ECLOSED", "send after on_close", c.s:send("late"))
    lu.assertEquals(c.s:pending(), 0)
    l:close()
  end)
end

-- Receive events already queued for the Lua state when a handler closes or
-- aborts its session are dropped: no on_recv after close(). Many clients
-- each send a burst of small writes, so several receives queue up behind
-- the first handler, which closes (or aborts) at once.
function TestSend:test_no_on_recv_after_close_or_abort_even_if_queued()
  H.with_core({ threads = 2 }, function(core)
    local after, closed_by_us, first = 0, {}, {}
    local l = H.listen(core, {
      on_recv = function(s)
        if closed_by_us[s] then after = after + 1 return end
        first[#first + 1] = s
        closed_by_us[s] = true
        if #first % 2 == 0 then s:close() else s:abort() end
      end,
    })
    local clients = {}
    for i = 1, 20 do
      clients[i] = H.client(core, l:address(), {
        on_connect = function(c)
          for _ = 1, 200 do c.s:send(("x"):rep(100)) end
        end,
      })
    end
    H.wait_for(core, function()
      for _, c in ipairs(clients) do if not c.closed then return false end end
      return core:stats().active == 0 and core:stats().queued == 0
    end, "every session closed", 20000)
    lu.assertEquals(#first, 20, "every server session got its first on_recv")
    lu.assertEquals(after, 0, "on_recv ran after the handler had closed or aborted its session")
    closed_by_us, first = nil, nil
    l:close()
  end)
end

function TestSend:test_close_flushes_4MiB_then_peer_sees_eof()
  H.with_core(function(core)
    local data = H.payload(4 * MiB, 44)
    local server_close = "not yet"
    local l = server(core, function(s)
      lu.assertTrue(s:send(data))
      lu.assertTrue(s:close())
      s:on_close(function(_, err) server_close = err end)
    end)
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.closed and server_close ~= "not yet" end, "flush and close", 20000)
    lu.assertNil(c.close_err, "the client's on_close sees a clean close")
    lu.assertEquals(c.received, #data)
    lu.assertTrue(c:data() == data, "the 4 MiB arrive intact")
    lu.assertNil(server_close)
    l:close()
  end)
end

function TestSend:test_abort_drops_queued_data()
  H.with_core(function(core)
    local data = H.payload(4 * MiB, 45)
    local server_close = "not yet"
    local l = server(core, function(s)
      s:on_close(function(_, err) server_close = err end)
      lu.assertTrue(s:send(data))
      lu.assertTrue(s:abort())
      lu.assertTrue(s:closed())
      H.assert_fail("ECLOSED", "send after abort()", s:send("x"))
    end)
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.closed and server_close ~= "not yet" end, "abort", 20000)
    -- the peer sees a reset, or at least not everything that was queued
    local reset = c.close_err ~= nil and c.close_err:match("^ECONNRESET: ") ~= nil
    lu.assertTrue(reset or c.received < #data,
      ("peer got %d of %d bytes, on_close err %s"):format(c.received, #data, tostring(c.close_err)))
    lu.assertNil(server_close, "abort() gives on_close(s, nil)")
    l:close()
  end)
end

function TestSend:test_abort_right_after_connect_gives_peer_reset()
  H.with_core(function(core)
    local l = server(core, function(s) s:abort() end)
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.closed end, "reset")
    H.assert_msg(c.close_err, "ECONNRESET", "client on_close after the server's abort()")
    l:close()
  end)
end

function TestSend:test_gathered_send_arrives_in_order()
  H.with_core(function(core)
    local small, big = {}, {}
    for i = 1, 5 do small[i] = string.rep(string.char(64 + i), i) end
    for i = 1, 1000 do big[i] = ("<%d>"):format(i) .. string.rep("x", i % 7) end
    big[500] = ""  -- empty pieces are fine
    local expected = table.concat(small) .. table.concat(big) .. "tail"
    local l = server(core, function(s)
      lu.assertTrue(s:send(small))
      lu.assertTrue(s:send(big))
      lu.assertTrue(s:send({}))
      lu.assertTrue(s:send({ "tail" }))
      s:close()
    end)
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.closed end, "gathered data and close")
    lu.assertNil(c.close_err)
    lu.assertEquals(c:data(), expected)
    l:close()
  end)
end

-- on_drain follows a send that could not be written at once. The reader is
-- another process that reads nothing for half a second, so 8 MiB cannot go
-- out in one write whatever the backend (a reader on this core would drain
-- the socket concurrently, and one sendmsg might then take everything).
function TestSend:test_pending_after_big_send_and_on_drain_when_it_empties()
  H.with_core(function(core)
    local data = H.payload(8 * MiB, 46)
    local pending_after_send, pending_at_drain, drains, server_close = nil, nil, 0, "not yet"
    local l = server(core, function(s)
      lu.assertIs(s:on_drain(function(s2)
        drains = drains + 1
        pending_at_drain = s2:pending()
        s2:close()
      end), s)
      s:on_close(function(_, err) server_close = err end)
      lu.assertTrue(s:send(data))
      pending_after_send = s:pending()
    end)
    local reader = H.slow_reader(l:port(), 2)
    H.wait_for(core, function() return drains > 0 end, "on_drain", 20000)
    H.wait_for(core, function() return reader:exited() and server_close ~= "not yet" end,
      "the reader to see EOF", 20000)
    lu.assertTrue(pending_after_send > 0, "pending() right after an 8 MiB send")
    lu.assertTrue(pending_after_send <= #data)
    lu.assertEquals(pending_at_drain, 0)
    lu.assertEquals(drains, 1)
    lu.assertEquals(reader.status, 0, reader:output())
    lu.assertEquals(reader:received(), #data)
    lu.assertNil(server_close)
    l:close()
  end)
end

-- max_pending refuses a send only behind data already queued: a send on an
-- empty queue is always taken, however large.
function TestSend:test_send_on_an_empty_queue_is_taken_whatever_max_pending()
  H.with_core(function(core)
    local N = 1 << 20
    local result
    local l = server(core, function(s)
      result = table.pack(s:send(string.rep("a", N)))
      s:close()
    end, { max_pending = 64 * 1024 })
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.closed end, "close", 20000)
    lu.assertEquals({ result[1], result.n }, { true, 1 }, "a send on an empty queue is taken")
    lu.assertEquals(c.received, N)
    l:close()
  end)
end

-- Behind queued data, a send that would pass max_pending queues nothing and
-- returns ENOBUFS; on_drain follows the refusal, and a send from it is taken.
function TestSend:test_send_over_max_pending_behind_queued_data_returns_enobufs_then_on_drain()
  H.with_core(function(core)
    local N = 16 << 20
    local st = { drains = 0 }
    local l = server(core, function(s)
      st.first = s:send(string.rep("a", N))
      st.pending1 = s:pending()
      st.over = table.pack(s:send(string.rep("b", 100000)))
      st.pending2 = s:pending()
    end, {
      max_pending = 64 * 1024,
      on_drain = function(s)
        st.drains = st.drains + 1
        if st.drains == 1 then
          st.after = s:send("c")
          s:close()
        end
      end,
    })
    -- a reader in another process that waits before reading: the 16 MiB
    -- cannot all be written at once, so data stays queued
    local reader = H.slow_reader(l:port(), 2)
    H.wait_for(core, function() return st.after ~= nil end, "on_drain after the refusal", 30000)
    lu.assertTrue(st.first)
    lu.assertTrue(st.pending1 > 0, "(test precondition) data is queued behind the first send")
    H.assert_fail("ENOBUFS", "send behind queued data over max_pending",
      table.unpack(st.over, 1, st.over.n))
    lu.assertTrue(st.pending2 <= st.pending1, "a refused send queues nothing")
    lu.assertTrue(st.after, "a send from on_drain is taken")
    H.wait_for(core, function() return reader:exited() end, "the reader", 30000)
    lu.assertEquals(reader:received(), N + 1, "the first send and the one from on_drain, nothing of the refused one")
    l:close()
  end)
end

function TestSend:test_peer_close_gives_on_close_nil_on_both_sides()
  H.with_core(function(core)
    local server_err = "not yet"
    local l = H.echo_server(core, { on_accept = function(s) s:on_close(function(_, err) server_err = err end) end })
    local c = H.client(core, l:address(), {
      on_connect = function(c) c.s:send("x") end,
      on_recv = function(c) c.s:close() end,
    })
    H.wait_for(core, function() return c.closed and server_err ~= "not yet" end, "both closes")
    lu.assertNil(c.close_err)
    lu.assertNil(server_err)
    l:close()
  end)
end

-- close() from inside on_connect: the FIN goes out, and the peer's FIN that
-- answers it must be read, so on_close follows at once, not after the
-- 5 s linger that only guards against a peer that never closes.
function TestSend:test_close_from_on_connect_finishes_on_the_peers_fin()
  H.with_core(function(core)
    local server_err = "not yet"
    local l = H.listen(core, { on_accept = function(s) s:on_close(function(_, err) server_err = err end) end })
    local c = H.client(core, l:address(), { on_connect = function(c) c.s:close() end })
    H.wait_for(core, function() return server_err ~= "not yet" end, "the server's close")
    H.wait_for(core, function() return c.closed end,
      "the client's on_close after the server's FIN (it waited for the linger: its receive was never posted?)", 3000)
    lu.assertNil(c.close_err)
    lu.assertNil(server_err)
    l:close()
  end)
end

-- The server answers in on_recv; the client half-closes right after its
-- request (send, then close(): FIN after the data). The answer must still
-- be sendable from on_recv even when the Lua side lags behind the sockets:
-- here a timer keeps the state busy while the other worker accepts, reads
-- the requests and the FINs, so on_recv runs after the C side saw the FIN.
function TestSend:test_reply_from_on_recv_after_peer_half_close()
  H.with_core({ threads = 2 }, function(core)
    local N = 5
    local failures, replies, closed = {}, 0, 0
    local l = H.listen(core, {
      on_recv = function(s, data)
        local ok, err = s:send("reply")
        if ok then replies = replies + 1 else failures[#failures + 1] = err end
      end,
      on_close = function() closed = closed + 1 end,
    })
    core:after(0, function()
      local until_ms = H.now() + 300
      while H.now() < until_ms do end
    end)
    for _ = 1, N do
      local c = H.client(core, l:address())
      lu.assertTrue(c.s:send("request"))  -- queued until connected
      lu.assertTrue(c.s:close())          -- then written, then FIN
    end
    H.wait_for(core, function() return closed == N end, "every session", 20000)
    lu.assertEquals(#failures, 0, ("%d of %d replies refused; first: %s"):format(#failures, N, tostring(failures[1])))
    lu.assertEquals(replies, N)
    l:close()
  end)
end

-- Sends made by handlers that run from the event queue (on_accept always
-- does) must reach the kernel without waiting for some other completion:
-- 30 clients in a row, each greeted from on_accept, inside one run().
function TestSend:test_send_from_on_accept_goes_out_within_one_run()
  H.with_core(function(core)
    local l = H.listen(core, { on_accept = function(s) s:send("hi") end })
    local done, N = 0, 30
    local function next_client()
      core:connect(l:address(), {
        on_recv = function(s)
          s:close()
          done = done + 1
          if done == N then core:stop() else next_client() end
        end,
      })
    end
    next_client()
    local stopped = core:run(5000)
    lu.assertTrue(stopped, ("only %d of %d greetings arrived within run(5000): a send from on_accept sat unsubmitted"):format(done, N))
    l:close()
  end)
end
