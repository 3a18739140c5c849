-- The edges of a connection's life at scale: slow readers behind a lossless
-- graceful close, and half-closing clients through a proxy. The servers
-- under test are other processes (examples/stream_pump.lua,
-- examples/callback/proxy.lua); the clients are sessions of this process's own core
-- (a slow reader paces itself with pause()/resume(), which holds the server
-- back through TCP flow control).
local lu = require "luaunit"
local S = require "lib"

TestFlowEdges = S.class()
TestFlowEdges.limits = {
  test_slow_readers_get_every_byte_then_a_clean_close = { 120, 600 },
  test_half_closing_clients_through_the_proxy_get_every_reply = { 120, 600 },
}

local KiB, MiB = 1024, 1 << 20

local start = S.start_script

local function stop(p, what)
  p:kill("TERM")
  local status = p:wait(20000)
  if status ~= 0 then
    if not status then p:kill("KILL") end
    lu.fail(("%s: exit status %s after SIGTERM\n--- stderr:\n%s"):format(what, tostring(status),
      p:errors():sub(1, 3000)), 2)
  end
end

-- The stream of examples/stream_pump.lua (16-byte numbered records).
local function stream(n)
  local t = {}
  for i = 0, (n + 15) // 16 - 1 do t[#t + 1] = ("%015d\n"):format(i) end
  return table.concat(t):sub(1, n)
end

-- 20 readers (long: 200) each read a 2 MiB stream (long: 8 MiB) at
-- 256 KiB/s (long: 128 KiB/s) from examples/stream_pump.lua, which queues
-- with an on_drain pump and then close()s: the close has to wait for the
-- reader (far longer than close_timeout, but with progress all along).
-- Every reader must get every byte, in order, then a clean close; every
-- stream must close without error on the server's side.
function TestFlowEdges:test_slow_readers_get_every_byte_then_a_clean_close()
  local K, N, RATE = S.size(20, 200), S.size(2 * MiB, 8 * MiB), S.size(256 * KiB, 128 * KiB)
  local srv, addr = start("examples/stream_pump.lua", { "127.0.0.1:0", tostring(N) },
    "streaming %d+ bytes per client on (127%.0%.0%.1:%d+)")
  local want = stream(N)
  S.with_core({}, function(core)
    local readers, closed = {}, 0
    local budget = RATE // 20 -- bytes per 50 ms tick
    for i = 1, K do
      local r = { got = 0, credit = budget }
      r.s = assert(core:connect(addr, {
        on_recv = function(s, d)
          if not r.bad and want:sub(r.got + 1, r.got + #d) ~= d then r.bad = r.got end
          r.got = r.got + #d
          r.credit = r.credit - #d
          if r.credit <= 0 then s:pause() end
        end,
        on_close = function(_, err)
          r.closed, r.err = true, err
          closed = closed + 1
        end,
      }))
      readers[i] = r
    end
    -- each tick earns a reader `budget` bytes; it reads only while in credit
    -- (a receive can be larger than the budget: the debt is paid first)
    local pacer = core:every(50, function()
      for _, r in ipairs(readers) do
        r.credit = math.min(r.credit + budget, budget)
        if r.credit > 0 and not r.closed then r.s:resume() end
      end
    end)
    local t0 = S.now()
    local done = S.run_until(core, function() return closed == K end, (N / RATE) * 1000 * 3 + 60000)
    local secs = (S.now() - t0) / 1000
    pacer:cancel()
    local complete, bad, errs = 0, 0, {}
    for _, r in ipairs(readers) do
      if r.got == N and not r.bad and r.closed and r.err == nil then complete = complete + 1 end
      if r.bad then bad = bad + 1 end
      if r.err then errs[#errs + 1] = r.err end
    end
    S.note("%d readers x %d bytes at %d B/s: %d complete, %d corrupted, %d close errors, %.1f s", K, N, RATE,
      complete, bad, #errs, secs)
    lu.assertTrue(done, ("only %d of %d readers closed"):format(closed, K))
    lu.assertEquals(bad, 0, "corrupted streams")
    lu.assertEquals(errs, {}, "readers' close errors")
    lu.assertEquals(complete, K)
  end)
  local out
  local ok = S.poll(function()
    out = srv:output()
    local n = 0
    for _ in out:gmatch("closed: ok\n") do n = n + 1 end
    return n == K
  end, 10000, 50)
  lu.assertTrue(ok ~= nil, "the server's closes:\n" .. out:sub(1, 3000))
  lu.assertNil(out:match("closed: E[^\n]*"), "a stream closed with an error on the server's side")
  stop(srv, "stream_pump")
end

-- 50 clients (long: 400) each send a 64 KiB request through
-- examples/callback/proxy.lua and half-close (shutdown()); the upstream answers
-- only after the FIN reached it (on_eof), 0..50 ms later, with 1 MiB, then
-- closes. Every client must get its own reply byte for byte, then a clean
-- close; the upstream must see every request whole, then the FIN; the
-- proxy must report every pair closed, holding at most 2 x its high-water
-- mark per direction. The mark is well above a few reads (epoll reads up
-- to 64 KiB at once, and a pause takes effect only after the reads already
-- done and queued for Lua, so a 64 KiB mark was passed by two or three
-- whole reads), and the 1 MiB reply is above twice the mark, so the
-- backpressure engages.
function TestFlowEdges:test_half_closing_clients_through_the_proxy_get_every_reply()
  local K, REQ, REPLY, HWM = S.size(50, 400), 64 * KiB, 1 * MiB, 256 * KiB
  local pool = {}
  do
    math.randomseed(7)
    local t = {}
    for i = 1, 4096 do t[i] = string.char(math.random(0, 255)) end
    local block = table.concat(t)
    pool = block:rep((2 * MiB) // #block)
  end
  local function reply_for(id)
    local off = (id * 7919) % (#pool - REPLY) + 1
    return pool:sub(off, off + REPLY - 1)
  end
  S.with_core({}, function(core)
    local up = { requests = 0, bad_requests = 0, eofs = 0 }
    local upstream = assert(core:listen("127.0.0.1:0", {
      on_accept = function(s) s.buf = {} end,
      on_recv = function(s, d) s.buf[#s.buf + 1] = d end,
      on_eof = function(s)
        up.eofs = up.eofs + 1
        local req = table.concat(s.buf)
        local id = tonumber(req:match("^REQ (%d+)\n"))
        if id and #req == REQ then up.requests = up.requests + 1 else up.bad_requests = up.bad_requests + 1 end
        core:after(math.random(0, 50), function()
          s:send(reply_for(id or 0))
          s:close()
        end)
      end,
    }))
    local proxy, paddr = start("examples/callback/proxy.lua", { "127.0.0.1:0", upstream:address(), tostring(HWM) },
      "proxy on (127%.0%.0%.1:%d+)")
    local clients, closed = {}, 0
    for id = 1, K do
      local c = { got = {}, n = 0 }
      local head = ("REQ %d\n"):format(id)
      c.s = assert(core:connect(paddr, {
        on_connect = function(s, err)
          if err then return end
          s:send(head .. ("r"):rep(REQ - #head))
          s:shutdown()
        end,
        on_recv = function(_, d)
          c.got[#c.got + 1] = d
          c.n = c.n + #d
        end,
        on_close = function(_, err)
          c.closed, c.err = true, err
          closed = closed + 1
        end,
      }))
      clients[id] = c
    end
    local t0 = S.now()
    local done = S.run_until(core, function() return closed == K end, S.size(60000, 300000))
    local secs = (S.now() - t0) / 1000
    local exact, errs = 0, {}
    for id, c in ipairs(clients) do
      if c.n == REPLY and table.concat(c.got) == reply_for(id) and c.err == nil then exact = exact + 1 end
      if c.err then errs[#errs + 1] = c.err end
    end
    -- the proxy's own account, one line per pair
    local pairs_closed, max_up, max_down = 0, 0, 0
    S.poll(function()
      pairs_closed, max_up, max_down = 0, 0, 0
      for hu, hd in proxy:output():gmatch("pair %d+ closed: [^\n]-max held up (%d+) down (%d+)") do
        pairs_closed = pairs_closed + 1
        max_up = math.max(max_up, tonumber(hu))
        max_down = math.max(max_down, tonumber(hd))
      end
      return pairs_closed >= K
    end, 10000, 50)
    S.note("%d half-closing clients x %d B request, %d B reply through the proxy: %d exact replies, %d close "
      .. "errors; upstream saw %d whole requests (%d bad) and %d FINs; proxy: %d pairs closed, held at most "
      .. "%d up / %d down (high-water mark %d); %.1f s", K, REQ, REPLY, exact, #errs, up.requests,
      up.bad_requests, up.eofs, pairs_closed, max_up, max_down, HWM, secs)
    lu.assertTrue(done, ("only %d of %d clients closed"):format(closed, K))
    lu.assertEquals(errs, {}, "clients' close errors")
    lu.assertEquals(exact, K, "clients with their exact reply")
    lu.assertEquals(up.requests, K, "whole requests at the upstream")
    lu.assertEquals(up.eofs, K, "FINs forwarded to the upstream")
    lu.assertEquals(pairs_closed, K, "pairs the proxy reported closed")
    lu.assertTrue(max_down <= 2 * HWM, ("the proxy held %d bytes towards a client"):format(max_down))
    lu.assertTrue(max_up <= 2 * HWM, ("the proxy held %d bytes towards the upstream"):format(max_up))
    stop(proxy, "proxy")
    upstream:close()
  end)
end

