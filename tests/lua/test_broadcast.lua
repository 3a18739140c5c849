-- Shared buffers and broadcast: iocore.buffer objects, s:send(buf) and
-- arrays mixing strings and buffers, s:write(buf) in stream style, and
-- core:broadcast to arrays and sets: byte-exact delivery, one payload
-- allocation (stats), slow readers, closing sessions skipped, misuse.
local H = require "helpers"
local lu = H.lu
local iocore = require "iocore"

TestBroadcast = H.class()

local KiB = 1024

-- No buffer of an earlier test is still alive (they count process-wide).
local function no_buffers(core)
  collectgarbage()
  collectgarbage()
  lu.assertEquals(core:stats().buffers, 0, "buffers left alive")
  lu.assertEquals(core:stats().buffer_bytes, 0)
end

-- A listener collecting its accepted sessions: returns the listener, the
-- array and the set of them.
local function collecting_server(core, opts)
  local list, set = {}, {}
  local o = {
    on_accept = function(s)
      list[#list + 1] = s
      set[s] = true
    end,
    on_close = function(s) set[s] = nil end,
  }
  for k, v in pairs(opts or {}) do o[k] = v end
  return H.listen(core, o), list, set
end

-- n clients of core counting what they receive.
local function clients(core, address, n)
  local cs = {}
  for i = 1, n do cs[i] = H.client(core, address) end
  return cs
end

local function all(cs, pred)
  for _, c in ipairs(cs) do if not pred(c) then return false end end
  return true
end

function TestBroadcast:test_buffer_object_length_bytes_equality_and_misuse()
  H.with_core(function(core)
    no_buffers(core)
    local bytes = H.payload(3000, 7)
    local b = iocore.buffer(bytes)
    lu.assertEquals(#b, 3000)
    lu.assertEquals(tostring(b), bytes)
    lu.assertTrue(b == b)
    lu.assertFalse(b == iocore.buffer(bytes), "two buffers are two objects")
    lu.assertEquals(#iocore.buffer(""), 0)
    lu.assertEquals(tostring(iocore.buffer("")), "")
    for _, bad in ipairs({ 42, {}, true }) do
      lu.assertErrorMsgContains("string expected", iocore.buffer, bad)
    end
    lu.assertErrorMsgContains("string expected", iocore.buffer)
    collectgarbage()
    collectgarbage()
    lu.assertEquals(core:stats().buffers, 1)
    lu.assertEquals(core:stats().buffer_bytes, 3000)
    b = nil
    no_buffers(core)
  end)
end

-- One broadcast of a 1 KiB string to 1,000 sessions: each gets it
-- byte-exact, the payload is held once (buffers 1, buffer_bytes 1024) while
-- a slow reader still has it queued, the slow reader holds nobody else up,
-- and the memory is gone once it has read. (The slow reader is a client
-- of the same core that pauses reading until the checks are done, behind
-- more bytes than the kernel's socket buffers hold.)
function TestBroadcast:test_1000_sessions_get_1KiB_byte_exact_and_it_is_allocated_once()
  H.with_core(function(core)
    no_buffers(core)
    local N = 1000
    local msg = H.payload(KiB, 1000)
    local l, list = collecting_server(core)
    local cs = clients(core, l:address(), N)
    local slow = H.client(core, l:address(), { on_connect = function(c) c.s:pause() end })
    H.wait_for(core, function()
      return #list == N + 1 and slow.connected and all(cs, function(c) return c.connected end)
    end, "1001 sessions", 60000)
    local slow_port = slow.s:address():match(":(%d+)$")
    local slow_s
    for _, s in ipairs(list) do
      if s:peer():match(":(%d+)$") == slow_port then slow_s = s end
    end
    lu.assertNotNil(slow_s, "the slow reader's session")
    local filler = ("f"):rep(32 * 1024 * KiB)
    lu.assertTrue(slow_s:send(filler))
    local n = core:broadcast(list, msg)
    lu.assertEquals(n, N + 1)
    -- every fast client has its copy while the slow one still holds the buffer
    H.wait_for(core, function() return all(cs, function(c) return c.received == KiB end) end,
      "every fast client's copy", 30000)
    for i, c in ipairs(cs) do lu.assertEquals(c:data(), msg, "client " .. i) end
    collectgarbage()
    local st = core:stats()
    lu.assertEquals(st.buffers, 1, "one payload allocation for 1001 sessions")
    lu.assertEquals(st.buffer_bytes, KiB)
    lu.assertTrue(slow.received < #filler + KiB, "the slow reader has it all already")
    -- the slow reader reads: filler then the message
    slow.s:resume()
    H.wait_for(core, function() return slow.received == #filler + KiB end, "the slow reader's bytes", 60000)
    local data = slow:data()
    lu.assertEquals(data:sub(-KiB), msg)
    lu.assertTrue(data:sub(1, #filler) == filler, "the slow reader's filler differs")
    data = nil
    H.wait_for(core, function() return core:stats().buffers == 0 end, "the buffer's release")
    lu.assertEquals(core:stats().buffer_bytes, 0)
    for _, c in ipairs(cs) do c.s:close() end
    slow.s:close()
    H.wait_for(core, function() return core:stats().active == 0 end, "every session closed", 30000)
    l:close()
    no_buffers(core)
  end)
end

-- Sessions closed by the script (closing) or by their peer (closed) are
-- skipped and not counted, for an array and for a set alike.
function TestBroadcast:test_closing_and_closed_sessions_are_skipped_array_and_set()
  H.with_core(function(core)
    local l, list = collecting_server(core, { on_recv = function() end })
    local cs = clients(core, l:address(), 10)
    H.wait_for(core, function() return #list == 10 and all(cs, function(c) return c.connected end) end, "10 sessions")
    -- client i is the peer of server session by_client[i]
    local by_port = {}
    for _, s in ipairs(list) do by_port[s:peer():match(":(%d+)$")] = s end
    local by_client = {}
    for i, c in ipairs(cs) do by_client[i] = by_port[c.s:address():match(":(%d+)$")] end
    -- 1..3 closed here (closing: their FIN waits for the peers), 4..5 closed by their peers
    for i = 1, 3 do lu.assertTrue(by_client[i]:close()) end
    local gone = {}
    for i = 4, 5 do
      by_client[i]:on_close(function() gone[i] = true end)
      cs[i].s:close()
    end
    H.wait_for(core, function() return gone[4] and gone[5] end, "two peers' closes")
    lu.assertEquals(core:broadcast(list, "array\n"), 5)
    local set = {}
    for _, s in ipairs(list) do set[s] = true end
    lu.assertEquals(core:broadcast(set, iocore.buffer("set\n")), 5)
    -- any value marks a member of a set (a session as a value too: only the keys count)
    lu.assertEquals(core:broadcast({ [by_client[6]] = "yes", [by_client[7]] = by_client[8] }, "pair\n"), 2)
    H.wait_for(core, function()
      for i = 6, 10 do
        local want = (i == 6 or i == 7) and 15 or 10
        if cs[i].received < want then return false end
      end
      return true
    end, "the open sessions' copies")
    for i = 6, 10 do
      local want = (i == 6 or i == 7) and "array\nset\npair\n" or "array\nset\n"
      lu.assertEquals(cs[i]:data(), want, "client " .. i)
    end
    for i = 1, 3 do lu.assertEquals(cs[i].received, 0, "closing session " .. i .. " got data") end
    for _, c in ipairs(cs) do if not c.closed then c.s:close() end end
    H.wait_for(core, function() return core:stats().active == 0 end, "every session closed", 20000)
    l:close()
    no_buffers(core)
  end)
end

function TestBroadcast:test_send_of_a_buffer_and_arrays_mixing_strings_and_buffers()
  H.with_core(function(core)
    local server_s
    local l = H.listen(core, { on_accept = function(s) server_s = s end, on_recv = function() end })
    local c = H.client(core, l:address())
    H.wait_for(core, function() return server_s and c.connected end, "connect")
    local b1, b2 = iocore.buffer("<buf1>"), iocore.buffer(H.payload(100 * KiB, 3))
    lu.assertTrue(server_s:send(b1))
    lu.assertTrue(server_s:send({ "a", b1, "bc", b2, "", b1 }))
    lu.assertTrue(server_s:send({ b2 }))
    local want = "<buf1>" .. "a<buf1>bc" .. tostring(b2) .. "<buf1>" .. tostring(b2)
    -- the objects go: the queued references keep the bytes until written
    b1, b2 = nil, nil
    collectgarbage()
    collectgarbage()
    H.wait_for(core, function() return c.received == #want end, "the bytes")
    lu.assertEquals(c:data(), want)
    lu.assertErrorMsgContains("array of strings and buffers expected, item 2 is number",
      server_s.send, server_s, { "a", 42 })
    lu.assertErrorMsgContains("iocore.buffer", server_s.send, server_s, 42)
    lu.assertErrorMsgContains("iocore.buffer", server_s.send, server_s, io.stdout)
    lu.assertTrue(server_s:close())
    H.assert_fail("ECLOSED", "send(buf) after close()", server_s:send(iocore.buffer("late")))
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
    no_buffers(core)
  end)
end

-- A buffer keeps its bytes until the last session has written them, even
-- after Lua collected the object.
function TestBroadcast:test_collected_buffer_stays_until_the_slow_reader_has_it()
  H.with_core(function(core)
    no_buffers(core)
    local server_s
    local l = H.listen(core, { on_accept = function(s) server_s = s end })
    local slow = H.slow_reader(l:port(), 1.5)
    H.wait_for(core, function() return server_s end, "the slow reader's session")
    local big = H.payload(32 * 1024 * KiB, 9) -- more than the kernel's socket buffers hold
    do
      local b = iocore.buffer(big)
      lu.assertTrue(server_s:send(b))
    end
    collectgarbage()
    collectgarbage()
    lu.assertEquals(core:stats().buffers, 1, "the queued reference keeps the buffer")
    lu.assertEquals(core:stats().buffer_bytes, #big)
    H.wait_for(core, function() return slow:received() == #big end, "the slow reader's bytes", 60000)
    local f = assert(io.open(slow.file, "rb"))
    lu.assertTrue(f:read("a") == big, "the slow reader's bytes differ")
    f:close()
    H.wait_for(core, function() return core:stats().buffers == 0 end, "the release")
    server_s:close()
    H.wait_for(core, function() return core:stats().active == 0 end, "close", 20000)
    l:close()
  end)
end

function TestBroadcast:test_broadcast_misuse_raises_and_queues_nothing()
  H.with_core(function(core)
    local l, list = collecting_server(core, { on_recv = function() end })
    local c = H.client(core, l:address())
    H.wait_for(core, function() return #list == 1 and c.connected end, "connect")
    local s = list[1]
    lu.assertErrorMsgContains("table expected", core.broadcast, core, 42, "x")
    lu.assertErrorMsgContains("table expected", core.broadcast, core, nil, "x")
    lu.assertErrorMsgContains("string or iocore.buffer expected", core.broadcast, core, { s }, 42)
    lu.assertErrorMsgContains("string or iocore.buffer expected", core.broadcast, core, { s })
    lu.assertErrorMsgContains("sessions expected, found number", core.broadcast, core, { s, 42 }, "x")
    lu.assertErrorMsgContains("sessions expected, found string as a key", core.broadcast, core, { x = s }, "x")
    lu.assertErrorMsgContains("sessions expected, found number at index 2", core.broadcast, core, { s, 42 }, "x")
    local other = iocore.core({ threads = 1, signals = false })
    local ol = assert(other:listen("127.0.0.1:0", { on_accept = function() end }))
    local oc = assert(other:connect(ol:address(), {}))
    lu.assertErrorMsgContains("another core", core.broadcast, core, { oc }, "x")
    lu.assertEquals(core:broadcast({}, "x"), 0)
    pcall(core.broadcast, core, { s, false }, "lost?") -- raises: nothing of it queued
    lu.assertTrue(s:send("end"))
    H.wait_for(core, function() return c.received == 3 end, "the one send")
    lu.assertEquals(c:data(), "end")
    oc:close()
    ol:close()
    other:close()
    s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
    no_buffers(core)
  end)
end

-- Stream style: s:write(buf) queues the buffer through s:send. (Below
-- write_hwm: a write that waits for the queue to drain is the stream
-- module's business, the same for strings and buffers.)
function TestBroadcast:test_stream_write_of_a_buffer()
  H.with_core(function(core)
    local b = iocore.buffer(H.payload(100 * KiB, 4))
    local l = H.listen(core, {
      handler = function(s)
        assert(s:write(b))
        assert(s:write({ "+", b }))
      end,
    })
    local c = H.client(core, l:address())
    local want = tostring(b) .. "+" .. tostring(b)
    H.wait_for(core, function() return c.closed end, "the handler's end", 20000)
    lu.assertEquals(c.received, #want)
    lu.assertTrue(c:data() == want, "bytes differ")
    b = nil
    l:close()
    no_buffers(core)
  end)
end

-- Length-prefixed framing: a frame encoded once (prefix included) and
-- broadcast arrives as one message, between send_frame's own.
function TestBroadcast:test_broadcast_of_a_preframed_message_to_framed_sessions()
  H.with_core(function(core)
    local l, list = collecting_server(core, { framing = { length = 2 } })
    local got = {}
    local cs = {}
    for i = 1, 5 do
      got[i] = {}
      local s = assert(core:connect(l:address(), {
        framing = { length = 2 },
        on_recv = function(_, m) table.insert(got[i], m) end,
      }))
      cs[i] = s
    end
    H.wait_for(core, function() return #list == 5 end, "5 sessions")
    for _, s in ipairs(list) do lu.assertTrue(s:send_frame("first")) end
    lu.assertEquals(core:broadcast(list, iocore.buffer(string.pack(">s2", "to all"))), 5)
    for _, s in ipairs(list) do lu.assertTrue(s:send_frame("last")) end
    H.wait_for(core, function()
      for i = 1, 5 do if #got[i] < 3 then return false end end
      return true
    end, "3 messages each")
    for i = 1, 5 do lu.assertEquals(got[i], { "first", "to all", "last" }) end
    for _, s in ipairs(cs) do s:close() end
    H.wait_for(core, function() return core:stats().active == 0 end, "close", 20000)
    l:close()
    no_buffers(core)
  end)
end

-- A session whose queue is already over max_pending refuses the broadcast
-- like a send (ENOBUFS): skipped, not counted, and on_drain follows once
-- its queue has emptied.
function TestBroadcast:test_session_over_max_pending_is_skipped_then_drains()
  H.with_core(function(core)
    local drained = false
    local l, list = collecting_server(core, { max_pending = 64 * KiB, on_drain = function() drained = true end })
    local slow = H.slow_reader(l:port(), 1)
    H.wait_for(core, function() return #list == 1 end, "the slow reader's session")
    local slow_s = list[1]
    local cs = clients(core, l:address(), 2)
    H.wait_for(core, function() return #list == 3 and all(cs, function(c) return c.connected end) end, "3 sessions")
    local filler = ("f"):rep(32 * 1024 * KiB) -- more than the kernel's socket buffers hold
    lu.assertTrue(slow_s:send(filler)) -- an empty queue takes it, whatever max_pending
    lu.assertEquals(core:broadcast(list, "hi\n"), 2)
    H.wait_for(core, function() return all(cs, function(c) return c.received == 3 end) end, "the fast copies")
    H.wait_for(core, function() return drained end, "on_drain after the refusal", 30000)
    H.wait_for(core, function() return slow:received() == #filler end, "the slow reader's bytes", 30000)
    for _, c in ipairs(cs) do c.s:close() end
    slow_s:close()
    H.wait_for(core, function() return core:stats().active == 0 end, "close", 20000)
    l:close()
    no_buffers(core)
  end)
end

-- Buffers queued on sessions that a stop ends are released: peers that
-- read nothing hold a 32 MiB buffer until the stop resets them.
function TestBroadcast:test_stop_and_close_release_queued_buffers()
  local core = assert(iocore.core({ threads = 2, signals = false, close_timeout = 200 }))
  no_buffers(core)
  local list = {}
  local l = assert(core:listen("127.0.0.1:0", { on_accept = function(s) list[#list + 1] = s end }))
  local silent = {}
  for i = 1, 3 do silent[i] = H.slow_reader(l:port(), 10) end -- reads nothing while the test runs
  H.wait(core, function() return #list == 3 end, 10000)
  lu.assertEquals(#list, 3)
  do
    local b = iocore.buffer(("z"):rep(32 * 1024 * KiB)) -- more than the kernel's socket buffers hold
    for _, s in ipairs(list) do lu.assertTrue(s:send(b)) end
    lu.assertEquals(core:broadcast(list, "and a string"), 3)
  end
  collectgarbage()
  collectgarbage()
  lu.assertEquals(core:stats().buffers, 2, "the big buffer and the string's")
  core:stop(100)
  lu.assertTrue(core:run(30000), "the stop did not finish")
  lu.assertEquals(core:stats().active, 0)
  lu.assertEquals(core:stats().buffers, 0, "a buffer outlived its sessions' stop")
  lu.assertEquals(core:stats().buffer_bytes, 0)
  for _, p in ipairs(silent) do p:kill() end
  list, l = nil, nil
  H.assert_closed_cleanly(core)
end
