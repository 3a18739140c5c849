-- Listeners with proxy_protocol = true: s:peer() is the client named by the
-- PROXY header (v1 or v2), the bytes after the header are the first on_recv
-- however they were split, and a bad or truncated header closes the
-- connection without on_accept, counted in stats().proxy_rejected.
local H = require "helpers"
local lu = H.lu

TestProxy = H.class()

local SIG = "\r\n\r\n\0\r\nQUIT\n"

local function v1(src, sport, dst, dport)
  return ("PROXY TCP4 %s %s %d %d\r\n"):format(src, dst, sport, dport)
end

local function v2_tcp4(a, b, c, d, sport, e, f, g, h, dport)
  return SIG .. "\x21\x11" .. string.pack(">I2", 12) ..
      string.pack("BBBBBBBB>I2>I2", a, b, c, d, e, f, g, h, sport, dport)
end

-- A proxy listener that records on_accept's view of each session and
-- echoes; returns the listener and the record.
local function proxy_server(core)
  local rec = { accepts = 0, peers = {}, locals = {}, data = {} }
  local l = H.listen(core, {
    proxy_protocol = true,
    on_accept = function(s)
      rec.accepts = rec.accepts + 1
      rec.peers[#rec.peers + 1] = s:peer()
      rec.locals[#rec.locals + 1] = s:address()
    end,
    on_recv = function(s, data)
      rec.data[#rec.data + 1] = data
      s:send(data)
    end,
  })
  return l, rec
end

-- Sends `stream` from a client in pieces of `step` bytes (nil: at once) and
-- waits for the echo of `app`.
local function talk(core, l, stream, step, app)
  local c = H.client(core, l:address())
  H.wait_for(core, function() return c.connected end, "connect")
  if not step then
    c.s:send(stream)
  else
    local i = 1
    local t
    t = core:every(2, function()
      if i > #stream then t:cancel() return end
      c.s:send(stream:sub(i, i + step - 1))
      i = i + step
    end)
  end
  H.wait_for(core, function() return c:data() == app end, "the echo of " .. app, 10000)
  c.s:close()
  H.wait_for(core, function() return c.closed end, "close")
end

function TestProxy:test_proxy_v1_and_v2_peer_is_the_client_and_data_follows()
  H.with_core(function(core)
    local l, rec = proxy_server(core)
    talk(core, l, v1("192.0.2.1", 56324, "198.51.100.7", 443) .. "hello", nil, "hello")
    talk(core, l, v2_tcp4(203, 0, 113, 9, 40000, 10, 0, 0, 1, 80) .. "split", 1, "split")
    talk(core, l, v1("192.0.2.2", 1000, "198.51.100.8", 2000) .. "again", 3, "again")
    lu.assertEquals(rec.accepts, 3)
    lu.assertEquals(rec.peers, { "192.0.2.1:56324", "203.0.113.9:40000", "192.0.2.2:1000" })
    lu.assertEquals(rec.locals, { "198.51.100.7:443", "10.0.0.1:80", "198.51.100.8:2000" })
    lu.assertEquals(core:stats().proxy_rejected, 0)
    lu.assertEquals(core:stats().accepted, 3)
    l:close()
  end)
end

function TestProxy:test_proxy_bad_headers_close_without_on_accept_and_count()
  H.with_core(function(core)
    local l, rec = proxy_server(core)
    local cases = {
      { "wrong signature", "GET / HTTP/1.1\r\n\r\n" },
      { "over-long v1", "PROXY TCP4 " .. ("1"):rep(200) },
      { "truncated v1", "PROXY TCP4 192.0.2.1 " },
      { "truncated v2", SIG .. "\x21" },
      { "v2 unknown family", SIG .. "\x21\x41" .. string.pack(">I2", 12) .. ("\1"):rep(12) },
      { "v2 oversized", SIG .. "\x21\x11" .. string.pack(">I2", 4097) },
    }
    for i, case in ipairs(cases) do
      local c = H.client(core, l:address())
      H.wait_for(core, function() return c.connected end, "connect")
      c.s:send(case[2])
      -- the truncated ones end with the client's FIN: the header never completes
      if case[1]:match("^truncated") then c.s:close() end
      H.wait_for(core, function() return c.closed end, case[1] .. ": the server closes", 10000)
      H.wait_for(core, function() return core:stats().proxy_rejected == i end,
                 case[1] .. ": counted", 10000)
      lu.assertEquals(c:data(), "", case[1] .. ": nothing answered")
    end
    lu.assertEquals(rec.accepts, 0, "on_accept never runs for a refused header")
    lu.assertEquals(core:stats().accepted, 0)
    l:close()
  end)
end

function TestProxy:test_proxy_header_deadline_in_the_docs_is_the_c_constant()
  local hdr = H.read_file(H.root .. "/src/include/iocore.h")
  local lua = H.read_file(H.root .. "/docs/lua-api.md")
  if not hdr or not lua then lu.skip("sources not found from " .. H.root) end
  local ms = hdr:match("#define IOC_PROXY_HEADER_TIMEOUT_MS (%d+)")
  lu.assertNotNil(ms, "iocore.h defines IOC_PROXY_HEADER_TIMEOUT_MS")
  lu.assertStrContains(lua, "no complete header within " .. ms .. " ms")
end
