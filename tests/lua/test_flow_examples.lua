-- examples/callback/proxy.lua and examples/stream_pump.lua, run as a user would, with
-- real clients in other processes (tests/lua/peer.lua). The upstream server
-- behind the proxy is a listener of the test's own core.
local H = require "helpers"
local P = require "peer"
local lu = H.lu

TestFlowExamples = P.class()

local KiB, MiB = 1024, 1 << 20

local assert_same_bytes = P.assert_same_bytes

local function start(core, name, ...)
  local p = H.spawn(H.root .. "/examples/" .. name .. ".lua", ...)
  return p
end

local function stop(core, p)
  p:kill("TERM")
  H.wait_for(core, function() return p:exited() end, "the example to exit", 20000)
  lu.assertEquals(p.status, 0, "exit status after SIGTERM; output:\n" .. p:output())
end

local HWM = 256 * KiB

-- Starts the proxy in front of `upstream` (a listener); returns the process
-- and its port.
local function start_proxy(core, upstream)
  local p = start(core, "callback/proxy", "127.0.0.1:0", upstream:address(), tostring(HWM))
  local port = tonumber(H.wait_output(core, p, "proxy on 127%.0%.0%.1:(%d+)"))
  return p, port
end

-- The "pair N closed" line of the proxy, parsed.
local function pair_line(core, p)
  H.wait_output(core, p, "pair %d+ closed")
  local up, down, held_up, held_down, pauses = p:output():match(
    "pair %d+ closed: up (%d+) bytes, down (%d+) bytes, max held up (%d+) down (%d+), pauses (%d+)")
  lu.assertNotNil(up, "the proxy's pair line: " .. p:output())
  return { up = tonumber(up), down = tonumber(down), held_up = tonumber(held_up), held_down = tonumber(held_down),
           pauses = tonumber(pauses) }
end

-- A 10 MiB download through the proxy by a client reading ~4 MB/s arrives
-- byte-exact, while the proxy never holds more than 2 x its high-water
-- mark towards the client (its own counter: the largest pending() after a
-- send), and it did have to hold the fast upstream back.
function TestFlowExamples:test_proxy_example_10MiB_download_byte_exact_with_bounded_hold()
  P.require()
  H.with_core(function(core)
    local data = H.payload(10 * MiB, 81)
    local up_err = "not yet"
    local upstream = H.listen(core, {
      on_accept = function(s)
        s:send(data)
        s:close()
      end,
      on_close = function(_, err) up_err = err end,
    })
    local proxy, port = start_proxy(core, upstream)
    local client = P.client(port, { rcvbuf = 64 * KiB, rate = 4 * 1000 * 1000, deadline = 60 })
    P.event(core, client, "eof %d+", 40000)
    lu.assertEquals(client:eof(), #data)
    assert_same_bytes(client:data(), data, "the download through the proxy")
    local pl = pair_line(core, proxy)
    H.wait_for(core, function() return up_err ~= "not yet" end, "the upstream's close")
    lu.assertNil(up_err)
    lu.assertEquals(pl.down, #data)
    lu.assertTrue(pl.pauses >= 1, "the proxy never paused the upstream (no backpressure tested)")
    lu.assertTrue(pl.held_down <= 2 * HWM, ("the proxy held %d bytes towards the client (high-water mark %d)")
      :format(pl.held_down, HWM))
    stop(core, proxy)
    upstream:close()
  end)
end

-- Half-close through the proxy: the client sends a request and its FIN;
-- the upstream sees the request, then the FIN (on_eof), and only then,
-- 200 ms later, answers 300 KB and closes. The client gets it all.
function TestFlowExamples:test_proxy_example_forwards_half_close()
  P.require()
  H.with_core(function(core)
    local reply = H.payload(300 * KiB, 82)
    local got, saw_eof, up_err = {}, false, "not yet"
    local upstream = H.listen(core, {
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
    local proxy, port = start_proxy(core, upstream)
    local client = P.client(port, { send = "request", shut_wr = true })
    P.event(core, client, "eof %d+", 20000)
    lu.assertEquals(table.concat(got), "request")
    lu.assertTrue(saw_eof, "the upstream did not see the client's FIN")
    lu.assertEquals(client:eof(), #reply)
    assert_same_bytes(client:data(), reply, "the reply through the proxy")
    local pl = pair_line(core, proxy)
    H.wait_for(core, function() return up_err ~= "not yet" end, "the upstream's close")
    lu.assertNil(up_err)
    lu.assertEquals(pl.up, #"request")
    lu.assertEquals(pl.down, #reply)
    stop(core, proxy)
    upstream:close()
  end)
end

-- The expected stream of examples/stream_pump.lua.
local function stream(n)
  local t = {}
  for i = 0, (n + 15) // 16 - 1 do t[#t + 1] = ("%015d\n"):format(i) end
  return table.concat(t):sub(1, n)
end

-- The on_drain pump delivers a stream of 8 MiB or more whole to a reader
-- at ~1 MB/s (the pump had to wait: sends were refused with max_pending
-- 1 MiB). The kernel's send buffer takes the first few MiB (up to the
-- tcp_wmem maximum), so the pump must outrun the reader by that much plus
-- max_pending before a send is refused. The reader reads nothing for its
-- first 5 s, so that holds even when generating the stream in Lua is slow:
-- with the ASan build on a loaded machine the pump made about 1-2 MB/s, and
-- a reader that started at once (at 1 or 2 MB/s) kept up often enough that
-- no send was ever refused.
function TestFlowExamples:test_stream_pump_example_delivers_the_whole_stream_to_a_slow_reader()
  P.require()
  H.with_core(function(core)
    local wmem = H.read_file("/proc/sys/net/ipv4/tcp_wmem")
    local wmem_max = tonumber(wmem and wmem:match("(%d+)%s*$")) or 4 * MiB
    local N = math.max(8 * MiB, wmem_max + 4 * MiB) + 5
    local p = start(core, "stream_pump", "127.0.0.1:0", tostring(N))
    local port = tonumber(H.wait_output(core, p, "streaming %d+ bytes per client on 127%.0%.0%.1:(%d+)"))
    local client = P.client(port, { rcvbuf = 64 * KiB, read_delay = 5, rate = 1000 * 1000, deadline = 90 })
    P.event(core, client, "eof %d+", 80000)
    lu.assertEquals(client:eof(), N)
    assert_same_bytes(client:data(), stream(N), "the stream")
    local refusals = tonumber(H.wait_output(core, p, "queued: %d+ bytes, (%d+) refusals"))
    lu.assertTrue(refusals >= 1, "no send was refused: the pump never waited for on_drain")
    H.wait_output(core, p, "closed: ok")
    stop(core, p)
  end)
end
