-- Outbound connections, address validation, and misuse raising errors.
local H = require "helpers"
local lu = H.lu

TestConnect = H.class()

function TestConnect:test_connect_success_calls_on_connect_with_nil()
  H.with_core(function(core)
    local l = H.echo_server(core)
    local c = H.client(core, l:address())
    lu.assertFalse(c.s:closed())
    H.wait_for(core, function() return c.connected or c.closed end, "connect")
    lu.assertTrue(c.connected)
    lu.assertNil(c.connect_err)
    lu.assertEquals(c.s:peer(), l:address())
    lu.assertStrMatches(c.s:address(), "127%.0%.0%.1:%d+")
    lu.assertEquals(core:stats().connected, 1)
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    lu.assertEquals(c.events, { "connect", "close" })
    lu.assertNil(c.close_err)
    l:close()
  end)
end

-- A port nobody listens on: the port of a listener whose core is gone.
local function closed_port()
  local core = H.new_core { threads = 1 }
  local l = H.listen(core)
  local port = l:port()
  l:close()
  l = nil
  collectgarbage()
  core:close()
  return port
end

function TestConnect:test_connect_to_closed_port_reports_econnrefused_then_closes_once()
  local port = closed_port()
  H.with_core(function(core)
    local c = H.client(core, "127.0.0.1:" .. port)
    H.wait_for(core, function() return c.closed end, "refused connect")
    lu.assertEquals(c.events, { "connect", "close" })
    H.assert_msg(c.connect_err, "ECONNREFUSED", "on_connect err")
    H.assert_msg(c.close_err, "ECONNREFUSED", "on_close err")
    lu.assertEquals(c.close_calls, 1)
    lu.assertTrue(c.s:closed())
    -- and nothing more arrives later
    core:run(50)
    lu.assertEquals(c.close_calls, 1)
  end)
end

function TestConnect:test_connect_to_localhost_resolves_to_loopback()
  H.with_core(function(core)
    local l = H.echo_server(core)
    local c = H.client(core, "localhost:" .. l:port())
    H.wait_for(core, function() return c.connected or c.closed end, "connect")
    lu.assertTrue(c.connected, c.connect_err)
    lu.assertEquals(c.s:peer(), "127.0.0.1:" .. l:port())
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
  end)
end

function TestConnect:test_ipv6_loopback_listen_and_connect()
  H.with_core(function(core)
    local l, err, code = core:listen("[::1]:0", { on_recv = function(s, d) s:send(d) end })
    if not l then
      lu.skip("no IPv6 loopback here: " .. tostring(err))
    end
    lu.assertEquals(l:address(), "[::1]:" .. l:port())
    local c = H.client(core, l:address(), { on_connect = function(c) c.s:send("six") end })
    H.wait_for(core, function() return c.received == 3 or c.closed end, "echo over IPv6")
    lu.assertEquals(c:data(), "six")
    lu.assertStrMatches(c.s:address(), "%[::1%]:%d+")
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
  end)
end

local BAD_ADDRESSES = {
  "1.2.3.256:80", "[::1", "[::1]", "[::1]:", "host:-1", "127.0.0.1:-1", ":65536",
  "127.0.0.1:65536", "", "a\0b:80", "127.0.0.1\0:80", "127.0.0.1:80\0",
  string.rep("a", 300) .. ":80", string.rep("1", 300) .. ":80", "127.0.0.1", "127.0.0.1:",
  ":80", "1.2.3:80", "1.2.3.4.5:80", "01.2.3.4:80", "127.0.0.1:080", "::1:80",
  "example.com:99999", "127.0.0.1:80x", " 127.0.0.1:80", "127.0.0.1:80 ", "[::1]:99999",
  "[fe80::1%eth0]:80", "[:::1]:80", "[::1]]:80", "127.0.0.1:+80", "localhost:",
  "localhost:65536", "[1.2.3.4]:80", "1.2.3.4:8 0", "1.2.3.4::80", "[::1]:80:80",
  "-1.2.3.4:80", "1.2.3.4:4294967376", "[" .. string.rep("1:", 200) .. "1]:80",
}

local function assert_einval(what, addr, ...)
  H.assert_fail("EINVAL", ("%s(%q)"):format(what, addr), ...)
end

function TestConnect:test_bad_addresses_return_einval_for_listen_and_connect()
  lu.assertTrue(#BAD_ADDRESSES >= 20)
  H.with_core(function(core)
    for _, addr in ipairs(BAD_ADDRESSES) do
      assert_einval("listen", addr, core:listen(addr))
      assert_einval("connect", addr, core:connect(addr))
      assert_einval("listen with opts", addr, core:listen(addr, { accepts = 1 }))
    end
    local st = core:stats()
    lu.assertEquals(st.sockets, 0)
    lu.assertEquals(st.objects, 0)
  end)
end

function TestConnect:test_good_address_forms_are_accepted()
  H.with_core(function(core)
    for _, addr in ipairs({ "127.0.0.1:0", "0.0.0.0:0", "localhost:0", "LOCALHOST:0" }) do
      local l, err = core:listen(addr)
      lu.assertNotNil(l, addr .. ": " .. tostring(err))
      l:close()
    end
  end)
end

-- Calls f and returns the error it raised (failing if it did not raise).
local function raises(f, ...)
  local ok, err = pcall(f, ...)
  lu.assertFalse(ok, "expected an error")
  return tostring(err)
end

function TestConnect:test_misuse_raises_bad_argument()
  H.with_core(function(core)
    local l = H.echo_server(core)
    local c = H.client(core, l:address())
    local s = c.s
    lu.assertStrContains(raises(function() return core:listen(42) end), "bad argument #1 to 'listen'")
    lu.assertStrContains(raises(function() return core:listen() end), "bad argument #1 to 'listen'")
    lu.assertStrContains(raises(function() return core:connect(42) end), "bad argument #1 to 'connect'")
    lu.assertStrContains(raises(function() return core:connect({}) end), "bad argument #1 to 'connect'")
    lu.assertStrContains(raises(function() return core:listen("127.0.0.1:0", 5) end), "bad argument #2 to 'listen'")
    lu.assertStrContains(raises(function() return core:listen("127.0.0.1:0", { accepts = "x" }) end), "bad argument")
    lu.assertStrContains(raises(function() return core:listen("127.0.0.1:0", { on_recv = 1 }) end), "bad argument")
    lu.assertStrContains(raises(function() return s:send(nil) end), "bad argument #1 to 'send'")
    lu.assertStrContains(raises(function() return s:send({ 1, 2 }) end), "bad argument #1 to 'send'")
    lu.assertStrContains(raises(function() return s:send({ "a", {} }) end), "bad argument #1 to 'send'")
    lu.assertStrContains(raises(function() return s:send(true) end), "bad argument #1 to 'send'")
    lu.assertStrContains(raises(function() return s:on_recv(42) end), "bad argument #1 to 'on_recv'")
    lu.assertStrContains(raises(function() return core:after("soon", function() end) end), "bad argument #1 to 'after'")
    lu.assertStrContains(raises(function() return core:after(10) end), "bad argument #2 to 'after'")
    lu.assertStrContains(raises(function() return core:every(0, function() end) end), "bad argument #1 to 'every'")
    lu.assertStrContains(raises(function() return core:post(nil) end), "bad argument #1 to 'post'")
    lu.assertStrContains(raises(function() return core:on_error(42) end), "bad argument #1 to 'on_error'")
    -- a method on the wrong kind of object names the type it wanted
    lu.assertStrContains(raises(s.send, core, "x"), "iocore.session expected")
    lu.assertStrContains(raises(core.listen, s, "127.0.0.1:0"), "iocore.core expected")
    lu.assertStrContains(raises(l.close, s), "iocore.listener expected")
    local iocore = H.iocore
    lu.assertStrContains(raises(function() return iocore.core(5) end), "bad argument #1 to 'core'")
    lu.assertStrContains(raises(function() return iocore.core { backend = "kqueue" } end), "bad argument #1 to 'core'")
    lu.assertStrContains(raises(function() return iocore.core { threads = 0 } end), "bad argument #1 to 'core'")
    -- nothing of this disturbed the session
    H.wait_for(core, function() return c.connected end, "connect")
    s:send("ok")
    H.wait_for(core, function() return c.received == 2 end, "echo")
    s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
  end)
end

function TestConnect:test_module_surface()
  local iocore = H.iocore
  lu.assertStrMatches(iocore.version, "%d+%.%d+%.%d+")
  local b = iocore.backends()
  lu.assertIsTable(b)
  lu.assertTrue(#b >= 1)
  H.with_core({ threads = 3 }, function(core)
    lu.assertEquals(core:threads(), 3)
    local found = false
    for _, name in ipairs(b) do found = found or name == core:backend() end
    lu.assertTrue(found, "core:backend() is one of iocore.backends()")
    local want = os.getenv("IOCORE_BACKEND")
    if want and want ~= "" and want ~= "auto" then lu.assertEquals(core:backend(), want) end
    local st = core:stats()
    for _, k in ipairs({ "accepted", "connected", "active", "closed", "bytes_in", "bytes_out",
                         "accepts_posted", "completions", "handler_errors", "rejected", "threads",
                         "objects", "ops_inflight", "sockets", "queued", "memory" }) do
      lu.assertIsNumber(st[k], "stats()." .. k)
    end
    lu.assertEquals(st.backend, core:backend())
    lu.assertEquals(st.threads, 3)
  end)
end
