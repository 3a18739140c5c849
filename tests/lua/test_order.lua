-- The ordering guarantees: per session, accept (or connect) first, receives
-- in stream order, close once and last; never two handlers at once.
local H = require "helpers"
local lu = H.lu

TestOrder = H.class()

-- A ping-pong over many sessions with 2 worker threads, so consecutive
-- completions of a session are taken by different threads. Every handler
-- records itself; sequence numbers in the payload check the stream order.
function TestOrder:test_per_session_order_accept_recv_close_with_two_threads()
  H.with_core({ threads = 2 }, function(core)
    local SESSIONS, ROUNDS = 60, 40
    local inside, overlaps = false, 0
    local problems = {}
    local server_log, client_log = {}, {}   -- session -> { events }
    local function enter() if inside then overlaps = overlaps + 1 end inside = true end
    local function leave() inside = false end
    local function note(log, s, ev)
      local t = log[s]
      if not t then t = {}; log[s] = t end
      if t[#t] == "close" then problems[#problems + 1] = ("%s after close"):format(ev) end
      t[#t + 1] = ev
    end
    -- lines "seq\n"; s.want is the next sequence number expected
    local function take_lines(s, data, on_line)
      s.buf = (s.buf or "") .. data
      while true do
        local line, rest = s.buf:match("^(%d+)\n(.*)$")
        if not line then break end
        s.buf = rest
        on_line(tonumber(line))
      end
    end

    local l = H.listen(core, {
      accepts = 8,
      on_accept = function(s)
        enter()
        note(server_log, s, "accept")
        s.want = 1
        leave()
      end,
      on_recv = function(s, data)
        enter()
        note(server_log, s, "recv")
        take_lines(s, data, function(n)
          if n ~= s.want then problems[#problems + 1] = ("server got %d, wanted %d"):format(n, s.want) end
          s.want = n + 1
          s:send(n .. "\n")
        end)
        leave()
      end,
      on_close = function(s, err)
        enter()
        note(server_log, s, "close")
        if err then problems[#problems + 1] = "server on_close err " .. err end
        leave()
      end,
    })

    local done = 0
    for _ = 1, SESSIONS do
      core:connect(l:address(), {
        on_connect = function(s, err)
          enter()
          note(client_log, s, "connect")
          if err then problems[#problems + 1] = "connect failed: " .. err end
          s.want = 1
          s:send("1\n")
          leave()
        end,
        on_recv = function(s, data)
          enter()
          note(client_log, s, "recv")
          take_lines(s, data, function(n)
            if n ~= s.want then problems[#problems + 1] = ("client got %d, wanted %d"):format(n, s.want) end
            s.want = n + 1
            if n < ROUNDS then s:send((n + 1) .. "\n") else s:close() end
          end)
          leave()
        end,
        on_close = function(s, err)
          enter()
          note(client_log, s, "close")
          if err then problems[#problems + 1] = "client on_close err " .. err end
          if s.want ~= ROUNDS + 1 then problems[#problems + 1] = "client closed at round " .. s.want end
          done = done + 1
          leave()
        end,
      })
    end
    local server_done = function()
      local n = 0
      for _, ev in pairs(server_log) do if ev[#ev] == "close" then n = n + 1 end end
      return n
    end
    H.wait_for(core, function() return done == SESSIONS and server_done() == SESSIONS end,
      "every session to finish", 40000)

    lu.assertEquals(problems, {})
    lu.assertEquals(overlaps, 0, "two handlers ran at the same time")
    local function check(log, first, name)
      local n = 0
      for s, ev in pairs(log) do
        n = n + 1
        lu.assertEquals(ev[1], first, name .. ": first event")
        lu.assertEquals(ev[#ev], "close", name .. ": last event")
        local closes = 0
        for i = 2, #ev - 1 do
          lu.assertEquals(ev[i], "recv", name .. ": middle events")
        end
        for _, e in ipairs(ev) do if e == "close" then closes = closes + 1 end end
        lu.assertEquals(closes, 1, name .. ": on_close exactly once")
        lu.assertTrue(s:closed())
      end
      lu.assertEquals(n, SESSIONS)
    end
    check(server_log, "accept", "server")
    check(client_log, "connect", "client")
    l:close()
  end)
end

-- One-way stream: a client sends 2 MiB of numbered records in many sends;
-- the server must see them in order (no reordering across threads).
function TestOrder:test_stream_order_of_many_sends()
  H.with_core({ threads = 2 }, function(core)
    local RECORDS = 100000
    local next_expected, bad, got_bytes = 0, nil, 0
    local buf = ""
    local server_closed = false
    local l = H.listen(core, {
      on_recv = function(s, data)
        got_bytes = got_bytes + #data
        buf = buf .. data
        local pos = 1
        while #buf - pos + 1 >= 8 do
          local n = string.unpack(">I8", buf, pos)
          if n ~= next_expected and not bad then bad = ("record %d arrived when %d was due"):format(n, next_expected) end
          next_expected = n + 1
          pos = pos + 8
        end
        buf = buf:sub(pos)
      end,
      on_close = function() server_closed = true end,
    })
    H.client(core, l:address(), {
      on_connect = function(c)
        for i = 0, RECORDS - 1, 50 do
          local t = {}
          for j = i, math.min(i + 49, RECORDS - 1) do t[#t + 1] = string.pack(">I8", j) end
          if i % 100 == 0 then c.s:send(table.concat(t)) else c.s:send(t) end
        end
        c.s:close()
      end,
    })
    H.wait_for(core, function() return server_closed end, "the stream", 30000)
    lu.assertNil(bad)
    lu.assertEquals(next_expected, RECORDS)
    lu.assertEquals(got_bytes, RECORDS * 8)
    l:close()
  end)
end

-- "C worker threads do all socket work in parallel": while one handler
-- runs (here a long on_accept), the other worker keeps accepting and
-- connecting. The handler itself waits for that progress (with a generous
-- deadline) by watching stats().
function TestOrder:test_socket_work_goes_on_while_a_handler_runs()
  H.with_core({ threads = 2 }, function(core)
    local N = 5
    local seen_inside
    local first = true
    local l = H.listen(core, {
      on_accept = function(s)
        if not first then return end
        first = false
        local deadline = H.now() + 3000
        while core:stats().accepted < N and H.now() < deadline do end
        seen_inside = core:stats().accepted
      end,
    })
    local clients = {}
    for i = 1, N do clients[i] = H.client(core, l:address()) end
    H.wait_for(core, function() return seen_inside ~= nil end, "the first on_accept", 10000)
    lu.assertEquals(seen_inside, N,
      "accepts completed while the first on_accept ran (the other worker was idle?)")
    H.wait_for(core, function()
      for _, c in ipairs(clients) do if not c.connected then return false end end
      return true
    end, "every connect")
    for _, c in ipairs(clients) do c.s:close() end
    H.wait_for(core, function() return core:stats().active == 0 end, "closes")
    l:close()
  end)
end
