-- Host names: core:connect("name:port") resolves without blocking (a name
-- that does not resolve fails the connect with ENOTFOUND in on_connect and
-- on_close alike), and core:resolve(name, callback) in callback style.
local H = require "helpers"
local lu = H.lu

TestNames = H.class()

-- core:resolve, waited for: the callback's arguments as a table.
local function resolve(core, name)
  local got
  local ok, msg = core:resolve(name, function(...) got = table.pack(...) end)
  lu.assertTrue(ok, msg)
  H.wait_for(core, function() return got ~= nil end, "resolve " .. name, 30000)
  return got
end

function TestNames:test_resolve_localhost_gives_loopback_addresses()
  H.with_core(function(core)
    local r = resolve(core, "localhost")
    lu.assertEquals(type(r[1]), "table")
    local found = false
    for _, a in ipairs(r[1]) do found = found or a == "127.0.0.1" or a == "::1" end
    lu.assertTrue(found, "localhost gives 127.0.0.1 or ::1: " .. table.concat(r[1], " "))
    r = resolve(core, "localhost:8080")
    found = false
    for _, a in ipairs(r[1]) do found = found or a == "127.0.0.1:8080" or a == "[::1]:8080" end
    lu.assertTrue(found, "with a port: " .. table.concat(r[1], " "))
  end)
end

function TestNames:test_resolve_a_name_that_does_not_exist_gives_enotfound()
  H.with_core(function(core)
    local r = resolve(core, "name.invalid")
    lu.assertNil(r[1])
    H.assert_msg(r[2], "ENOTFOUND", "resolve name.invalid")
    lu.assertEquals(r[3], "ENOTFOUND")
    -- a malformed name is refused at once, and the callback never runs
    local called = false
    local ok, msg, code = core:resolve("bad name", function() called = true end)
    lu.assertNil(ok)
    H.assert_msg(msg, "EINVAL", "resolve of a malformed name")
    lu.assertEquals(code, "EINVAL")
    H.wait(core, function() return called end, 100)
    lu.assertFalse(called)
    lu.assertErrorMsgContains("function", function() core:resolve("localhost", 42) end)
  end)
end

function TestNames:test_connect_to_a_name_that_does_not_resolve_fails_with_enotfound()
  H.with_core(function(core)
    local c = H.client(core, "name.invalid:80")
    H.wait_for(core, function() return c.closed end, "the connect to fail", 30000)
    H.assert_msg(c.connect_err, "ENOTFOUND", "on_connect err")
    lu.assertEquals(c.close_err, c.connect_err, "on_close gets the same error")
    lu.assertEquals(c.events, { "connect", "close" })
  end)
end

function TestNames:test_connect_to_localhost_and_to_the_host_name_reach_the_server()
  H.with_core(function(core)
    local l = H.echo_server(core)
    local port = l:port()
    local c = H.client(core, "localhost:" .. port)
    H.wait_for(core, function() return c.connected end, "connect to localhost")
    c.s:send("hi")
    H.wait_for(core, function() return c:data() == "hi" end, "echo")
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
    -- through the resolver: the machine's own name, when it resolves to IPv4
    local f = io.popen("hostname 2>/dev/null")
    local host = f and f:read("l")
    if f then f:close() end
    if not host or host == "" then lu.skip("no host name") end
    local r = resolve(core, host)
    if not r[1] or not r[1][1]:match("^%d+%.%d+%.%d+%.%d+$") then
      lu.skip("the host name " .. host .. " does not resolve to an IPv4 address here")
    end
    local any = assert(core:listen("0.0.0.0:0", { on_recv = function(s, d) s:send(d) end }))
    local n = H.client(core, host .. ":" .. any:port())
    H.wait_for(core, function() return n.connected end, "connect to " .. host, 30000)
    lu.assertEquals(n.s:peer(), r[1][1] .. ":" .. any:port())
    n.s:send("by name")
    H.wait_for(core, function() return n:data() == "by name" end, "echo by name")
    n.s:close()
    H.wait_for(core, function() return n.closed end, "close")
    any:close()
  end)
end
