-- Re-entrancy: handlers that send to, close and abort their own and other
-- sessions, send after close, close twice, act from on_close, timers and
-- posts. In-process; a deadlock is caught by run.lua's watchdog (the test
-- process is killed: a failure), a crash likewise.
local lu = require "luaunit"
local S = require "lib"

TestReentrancy = S.class()
TestReentrancy.limits = { test_chaos_of_sends_closes_aborts = { 90, 600 } }

-- Asserts the exact failure shape of a call on a closing/closed session.
local function assert_eclosed(what, ...)
  local n, v, msg, code = select("#", ...), ...
  if not (n == 3 and v == nil and code == "ECLOSED" and type(msg) == "string" and msg:match("^ECLOSED: .+")) then
    local shown = {}
    for i = 1, n do shown[i] = tostring((select(i, ...))) end
    lu.fail(("%s: expected nil, \"ECLOSED: ...\", \"ECLOSED\"; got %s"):format(what, table.concat(shown, ", ")), 2)
  end
end

-- For 3 s (long: 30 s), 64 client sessions of the core keep sending to its
-- own listener; each server on_recv picks, at random (seeded), one of: echo,
-- send to another session, close/abort itself or another, send after
-- close(), close() twice, abort() after close(), a timer or a post that
-- closes or aborts someone; on_drain sends more; on_close tries send() and
-- close() on the dead session and sends to a live one. Clients that close
-- reconnect. Checked all along: every call on a closing session returns
-- nil, "ECLOSED: ...", "ECLOSED"; per session on_close comes exactly once
-- and nothing after it; no handler error. At the end every session closes
-- and the core is clean (stack 0).
function TestReentrancy:test_chaos_of_sends_closes_aborts()
  S.with_core(nil, function(core, ctx)
    local secs = S.size(3, 30)
    local rnd = 12345
    local function rand(n)
      rnd = (rnd * 1103515245 + 12345) % 2147483648
      return rnd % n + 1
    end
    local live = {}     -- open sessions (server and client side), array
    local index = {}    -- session -> position in live
    local state = {}    -- session -> "open" | "closed"
    local closes, ops, after_close = 0, {}, 0
    local problems = {}
    local function problem(fmt, ...)
      if #problems < 10 then problems[#problems + 1] = fmt:format(...) end
    end
    local function add(s)
      live[#live + 1] = s
      index[s] = #live
      state[s] = "open"
    end
    local function remove(s)
      local i = index[s]
      if not i then return end
      local last = live[#live]
      live[i] = last
      index[last] = i
      live[#live] = nil
      index[s] = nil
    end
    local function other() return #live > 0 and live[rand(#live)] or nil end
    local function count(op) ops[op] = (ops[op] or 0) + 1 end
    local function seen(s, what)
      if state[s] == "closed" then problem("%s after on_close", what) end
    end

    local actions = {
      function(s, d) count("echo"); s:send(d) end,
      function(s, d) count("send other"); local o = other(); if o then o:send(d) end end,
      function(s) count("close self"); s:close() end,
      function(s) count("abort self"); s:abort() end,
      function(s) count("close other"); local o = other(); if o then o:close() end end,
      function(s) count("abort other"); local o = other(); if o then o:abort() end end,
      function(s, d)
        count("send after close")
        s:close()
        assert_eclosed("send after close", s:send(d))
        assert_eclosed("close twice", s:close())
        s:abort() -- abort after close: allowed, turns the close into a reset
      end,
      function(s)
        count("timer closes")
        local o = other()
        core:after(rand(5), function() if o and not o:closed() then o:close() end end)
      end,
      function(s)
        count("post aborts")
        local o = other()
        core:post(function() if o then o:abort() end end)
      end,
      function(s, d) count("send big"); s:send(("z"):rep(256 * 1024)) end,
      function(s) count("stats"); core:stats() end,
    }

    local server = {
      on_accept = function(s) add(s) end,
      on_recv = function(s, d)
        seen(s, "on_recv")
        if rand(3) == 1 then actions[rand(#actions)](s, d) end
      end,
      on_drain = function(s)
        seen(s, "on_drain")
        if rand(2) == 1 then s:send("more") end
      end,
      on_close = function(s, err)
        if state[s] == "closed" then problem("on_close twice") end
        state[s] = "closed"
        closes = closes + 1
        remove(s)
        assert_eclosed("send in on_close", s:send("late"))
        assert_eclosed("close in on_close", s:close())
        local o = other()
        if o then o:send("from a closing session") end
        after_close = after_close + 1
      end,
    }
    local l = assert(core:listen("127.0.0.1:0", server))
    local addr = l:address()
    local clients = 0
    local stopping = false
    local function client()
      clients = clients + 1
      local s = core:connect(addr, {
        on_connect = function(s, err)
          seen(s, "on_connect")
          if not err then s:send("hello " .. clients) end
        end,
        on_recv = function(s, d)
          seen(s, "on_recv")
          if rand(4) == 1 then actions[rand(#actions)](s, d) end
        end,
        on_close = function(s)
          if state[s] == "closed" then problem("client on_close twice") end
          state[s] = "closed"
          closes = closes + 1
          remove(s)
          assert_eclosed("client send in on_close", s:send("late"))
          if not stopping then client() end
        end,
      })
      add(s)
    end
    for _ = 1, 64 do client() end
    -- the clients keep talking
    local ticker = core:every(5, function()
      for _ = 1, 8 do
        local o = other()
        if o then o:send(("c"):rep(rand(2000))) end
      end
    end)
    local deadline = S.now() + secs * 1000
    S.run_until(core, function() return S.now() > deadline end, secs * 1000 + 5000)
    stopping = true
    ticker:cancel()
    l:close()
    for _, s in ipairs(live) do s:close() end
    -- active == 0 means C has closed every session; their on_close events
    -- may still wait for the Lua state, and those handlers use live/state.
    lu.assertTrue(S.run_until(core, function()
      local st = core:stats()
      return st.active == 0 and st.queued == 0
    end, 15000), "sessions still open " .. core:stats().active)
    local list = {}
    for k, v in pairs(ops) do list[#list + 1] = k .. " " .. v end
    table.sort(list)
    S.note("%d sessions closed in %d s; actions: %s", closes, secs, table.concat(list, ", "))
    lu.assertEquals(#problems, 0, table.concat(problems, "\n"))
    lu.assertEquals(#ctx.errors, 0, #ctx.errors > 0 and ctx.errors[1].msg or "")
    lu.assertTrue(closes > 64, "hardly anything happened")
    lu.assertEquals(core:stats().stack, 0)
    live, index, state = nil, nil, nil
  end)
end
