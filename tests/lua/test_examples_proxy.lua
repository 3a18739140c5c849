-- examples/proxy.lua (stream style) run as a user would, between clients
-- written with python3 sockets (tests/lua/pypeer.lua) and an upstream
-- server that is a listener of the test's own core, reached by name
-- ("localhost:port").
local H = require "helpers"
local Y = require "pypeer"
local P = require "peer"
local lu = H.lu

TestProxyExample = Y.class()

local KiB, MiB = 1024, 1 << 20
local WRITE_HWM = require("iocore.stream").limits.write_hwm -- the proxy's sessions keep the default

-- Starts the proxy in front of `upstream_address`; returns it and its port.
local function start_proxy(core, upstream_address)
  local p = Y.example("proxy.lua", "127.0.0.1:0", upstream_address)
  return p, tonumber(H.wait_output(core, p, "proxy on 127%.0%.0%.1:(%d+)", 20000))
end

-- The proxy's "pair N closed" line, parsed.
local function pair_line(core, p)
  H.wait_output(core, p, "pair %d+ closed", 30000)
  local up, down, held_up, held_down = p:output():match(
    "pair %d+ closed: up (%d+) bytes, down (%d+) bytes, max held up (%d+) down (%d+)")
  lu.assertNotNil(up, "the proxy's pair line: " .. p:output())
  return { up = tonumber(up), down = tonumber(down), held_up = tonumber(held_up), held_down = tonumber(held_down) }
end

-- An upstream that sends `reply` to each client and records what it
-- receives, closing once the client's FIN is there and the reply is out.
local function upstream(core, reply)
  local rec = { chunks = {} }
  function rec.data() return table.concat(rec.chunks) end
  rec.l = H.listen(core, {
    on_accept = function(s) if reply then s:send(reply) end end,
    on_recv = function(_, d) rec.chunks[#rec.chunks + 1] = d end,
    on_eof = function(s)
      rec.eof = true
      s:close()
    end,
    on_close = function(_, err) rec.closed, rec.err = true, err end,
  })
  return rec
end

-- 8 MiB each way at once, the client sending while it reads: both arrive
-- byte for byte, then both FINs, then a clean close on every side.
function TestProxyExample:test_proxy_example_carries_8MiB_each_way_byte_exact()
  Y.require()
  H.with_core(function(core)
    local down, up = H.payload(8 * MiB, 91), H.payload(8 * MiB, 92)
    local u = upstream(core, down)
    local proxy, port = start_proxy(core, "localhost:" .. u.l:port())
    local c = Y.client(port, { send = up, shut_wr = true })
    Y.event(core, c, "eof %d+", 60000)
    H.wait_for(core, function() return u.closed end, "the upstream's close", 20000)
    lu.assertNil(u.err)
    lu.assertTrue(u.eof, "the upstream saw the client's FIN")
    lu.assertEquals(c:eof(), #down)
    P.assert_same_bytes(c:data(), down, "client <- upstream")
    P.assert_same_bytes(u.data(), up, "client -> upstream")
    local pl = pair_line(core, proxy)
    lu.assertEquals(pl.up, #up)
    lu.assertEquals(pl.down, #down)
    Y.stop(core, proxy)
    u.l:close()
  end)
end

-- A client that reads nothing for 3 s while the upstream sends 32 MiB:
-- write() holds the pump back, so the proxy queues about write_hwm towards
-- the client (its own count) and its resident memory does not grow by the
-- transfer; then everything arrives byte for byte.
function TestProxyExample:test_proxy_example_holds_bounded_memory_for_a_slow_reader()
  Y.require()
  H.with_core(function(core)
    local down = H.payload(32 * MiB, 93)
    local u = upstream(core, down)
    local proxy, port = start_proxy(core, "localhost:" .. u.l:port())
    -- RSS on Linux only (under wine the pid is the loader's), and not under
    -- ASan (its quarantine keeps freed memory resident: RSS grows with the
    -- bytes that went through, held or not), nor under TSan (the module
    -- from build/bin/tsan: its shadow memory is resident, several times
    -- what the proxy touches)
    local asan = (os.getenv("LD_PRELOAD") or ""):find("asan", 1, true)
    local tsan = (os.getenv("LUA_CPATH") or ""):find("/tsan/", 1, true)
    if tsan then print("    RSS bound not checked: the TSan build's shadow memory is resident") end
    local rss0 = not H.windows and not asan and not tsan and Y.rss_kib(proxy)
    local c = Y.client(port, { rcvbuf = 64 * KiB, read_delay = 3, shut_wr = true })
    Y.event(core, c, "connected")
    H.wait(core, function() return false end, 2500) -- the client is not reading yet
    local rss1 = Y.rss_kib(proxy)
    Y.event(core, c, "eof %d+", 60000)
    lu.assertEquals(c:eof(), #down)
    P.assert_same_bytes(c:data(), down, "the download through the proxy")
    local pl = pair_line(core, proxy)
    lu.assertEquals(pl.down, #down)
    lu.assertTrue(pl.held_down <= 2 * WRITE_HWM, ("the proxy held %d bytes towards the client (write_hwm %d)")
      :format(pl.held_down, WRITE_HWM))
    if rss0 and rss1 then
      print(("    proxy RSS %d KiB before, %d KiB while the client did not read; held at most %d bytes")
        :format(rss0, rss1, pl.held_down))
      lu.assertTrue(rss1 - rss0 < 16 * 1024, ("the proxy's RSS grew by %d KiB"):format(rss1 - rss0))
    end
    Y.stop(core, proxy)
    u.l:close()
  end)
end

-- Half-close, the client first: its request and FIN reach the upstream,
-- which answers only after the FIN; the client gets the whole answer.
-- Then the upstream first: its greeting and FIN reach the client, which
-- sends afterwards; the upstream gets that, then the client's FIN.
function TestProxyExample:test_proxy_example_forwards_half_close_both_ways()
  Y.require()
  H.with_core(function(core)
    local reply = H.payload(300 * KiB, 94)
    local got, saw_eof, up_err = {}, false, "not yet"
    local l = H.listen(core, {
      on_recv = function(_, d) got[#got + 1] = d end,
      on_eof = function(s)
        saw_eof = true
        core:after(200, function()
          s:send(reply)
          s:close()
        end)
      end,
      on_close = function(_, err) up_err = err end,
    })
    local proxy, port = start_proxy(core, "localhost:" .. l:port())
    local c = Y.client(port, { send = "request", shut_wr = true })
    Y.event(core, c, "eof %d+", 30000)
    lu.assertEquals(table.concat(got), "request")
    lu.assertTrue(saw_eof, "the upstream did not see the client's FIN")
    lu.assertEquals(c:eof(), #reply)
    P.assert_same_bytes(c:data(), reply, "the reply after the client's FIN")
    H.wait_for(core, function() return up_err ~= "not yet" end, "the upstream's close")
    lu.assertNil(up_err)
    local pl = pair_line(core, proxy)
    lu.assertEquals(pl.up, #"request")
    lu.assertEquals(pl.down, #reply)
    l:close()

    -- the upstream half-closes first
    got, saw_eof, up_err = {}, false, "not yet"
    l = H.listen(core, {
      on_accept = function(s)
        s:send("greeting")
        s:shutdown()
      end,
      on_recv = function(_, d) got[#got + 1] = d end,
      on_eof = function(s)
        saw_eof = true
        s:close()
      end,
      on_close = function(_, err) up_err = err end,
    })
    Y.stop(core, proxy)
    proxy, port = start_proxy(core, "localhost:" .. l:port())
    c = Y.client(port, { after_eof = "sent after the upstream's FIN" })
    Y.event(core, c, "sent after eof %d+", 30000)
    lu.assertEquals(c:data(), "greeting")
    H.wait_for(core, function() return up_err ~= "not yet" end, "the upstream's close", 20000)
    lu.assertEquals(table.concat(got), "sent after the upstream's FIN")
    lu.assertTrue(saw_eof, "the upstream did not see the client's FIN")
    lu.assertNil(up_err)
    pl = pair_line(core, proxy)
    lu.assertEquals(pl.up, #"sent after the upstream's FIN")
    lu.assertEquals(pl.down, #"greeting")
    Y.stop(core, proxy)
    l:close()
  end)
end

-- An upstream that refuses, and one whose name does not resolve: the
-- client is closed cleanly (an EOF, no reset), the proxy says why and
-- serves on.
function TestProxyExample:test_proxy_example_closes_the_client_cleanly_when_the_upstream_fails()
  Y.require()
  H.with_core(function(core)
    local l = H.listen(core, {})
    local closed_port = l:port()
    l:close()
    collectgarbage()
    H.wait(core, function() return core:stats().sockets == 0 end, 5000)
    for _, case in ipairs { { "127.0.0.1:" .. closed_port, "ECONNREFUSED" },
                            { "does-not-exist.invalid:80", "ENOTFOUND" } } do
      local proxy, port = start_proxy(core, case[1])
      for i = 1, 2 do
        local c = Y.client(port, { send = "hello" })
        Y.event(core, c, "eof %d+", 30000)
        lu.assertEquals(c:eof(), 0, ("client %d of a proxy to %s"):format(i, case[1]))
        lu.assertNil(c:output():match("error"), c:output())
      end
      lu.assertStrContains(H.wait_output(core, proxy, "(no upstream for a client: .-)\n"), case[2])
      Y.stop(core, proxy)
    end
  end)
end

-- An upstream whose connects hang (its accept queue is full): the proxy's
-- connect time-out (5 s) ends the wait, and the client is closed cleanly.
function TestProxyExample:test_proxy_example_connect_timeout_closes_the_client_cleanly()
  Y.require()
  P.require()
  H.with_core(function(core)
    local _, hole = P.blackhole(core)
    local proxy, port = start_proxy(core, "127.0.0.1:" .. hole)
    local c = Y.client(port, { send = "hello" })
    Y.event(core, c, "eof %d+", 30000)
    lu.assertEquals(c:eof(), 0)
    lu.assertStrContains(H.wait_output(core, proxy, "(no upstream for a client: .-)\n"), "ETIMEDOUT")
    Y.stop(core, proxy)
  end)
end
