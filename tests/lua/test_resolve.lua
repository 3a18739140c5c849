-- iocore.resolve(name) from a coroutine: an array of address strings, or
-- nil, msg, code; raises outside an iocore coroutine.
local H = require "helpers"
local lu = H.lu
local iocore = H.iocore

TestResolve = H.class()

-- iocore.resolve(name) in a coroutine of `core`, waited for: its results.
local function resolve(core, name)
  local got
  core:spawn(function() got = table.pack(iocore.resolve(name)) end)
  H.wait_for(core, function() return got ~= nil end, "iocore.resolve " .. name, 30000)
  return got
end

local function has(list, ...)
  for _, a in ipairs(list) do
    for _, want in ipairs({ ... }) do if a == want then return true end end
  end
  return false
end

function TestResolve:test_resolve_localhost_in_a_coroutine_gives_loopback_addresses()
  H.with_core(function(core)
    local r = resolve(core, "localhost")
    lu.assertEquals(r.n, 1, "one result: the array")
    lu.assertEquals(type(r[1]), "table")
    lu.assertTrue(has(r[1], "127.0.0.1", "::1"), "localhost: " .. table.concat(r[1], " "))
    r = resolve(core, "localhost:6379")
    lu.assertTrue(has(r[1], "127.0.0.1:6379", "[::1]:6379"), "with a port: " .. table.concat(r[1], " "))
    r = resolve(core, "127.0.0.1")
    lu.assertEquals(r[1], { "127.0.0.1" })
    r = resolve(core, "::1")
    lu.assertEquals(r[1], { "::1" })
    r = resolve(core, "[::1]:80")
    lu.assertEquals(r[1], { "[::1]:80" })
  end)
end

function TestResolve:test_resolve_ip6_localhost_gives_the_ipv6_loopback()
  H.with_core(function(core)
    local r = resolve(core, "ip6-localhost")
    if r[1] == nil and r[3] == "ENOTFOUND" then
      lu.skip("this machine has no ip6-localhost entry (/etc/hosts): " .. tostring(r[2]))
    end
    lu.assertEquals(type(r[1]), "table", tostring(r[2]))
    lu.assertTrue(has(r[1], "::1"), "ip6-localhost: " .. table.concat(r[1], " "))
  end)
end

function TestResolve:test_resolve_a_name_that_cannot_resolve_returns_enotfound()
  H.with_core(function(core)
    local r = resolve(core, "does-not-exist.invalid")
    lu.assertEquals(r.n, 3)
    H.assert_fail("ENOTFOUND", "iocore.resolve", table.unpack(r, 1, r.n))
    r = resolve(core, "bad name")
    H.assert_fail("EINVAL", "iocore.resolve of a malformed name", table.unpack(r, 1, r.n))
  end)
end

-- The handler of an accepted session resolves, then dials what it found:
-- the lookup parks only that coroutine, and the session it serves goes on.
function TestResolve:test_a_handler_resolves_then_dials_the_address()
  H.with_core(function(core)
    local echo = H.echo_server(core)
    local l = H.listen(core, { handler = function(s)
      local addrs = assert(iocore.resolve("localhost:" .. echo:port()))
      local up = assert(core:dial(addrs[1]))
      up:write(s:read_line() .. "\n")
      s:write("via " .. addrs[1] .. ": " .. up:read_line() .. "\n")
      up:close()
    end })
    local c = H.client(core, l:address(), { on_connect = function(c) c.s:send("hello\n") end })
    H.wait_for(core, function() return c.closed end, "the answer and the close", 30000)
    lu.assertStrContains(c:data(), ": hello\n")
    lu.assertStrContains(c:data(), ":" .. echo:port())
    l:close()
    echo:close()
  end)
end

function TestResolve:test_resolve_outside_a_coroutine_raises()
  H.with_core(function(core)
    lu.assertErrorMsgContains("resolve: not inside an iocore coroutine", iocore.resolve, "localhost")
    -- a coroutine that is not iocore's cannot be parked either
    local co = coroutine.create(function() return iocore.resolve("localhost") end)
    local ok, err = coroutine.resume(co)
    lu.assertFalse(ok)
    lu.assertStrContains(err, "not inside an iocore coroutine")
    local got
    core:spawn(function() got = table.pack(pcall(iocore.resolve, 42)) end)
    H.wait_for(core, function() return got ~= nil end, "the spawned call")
    lu.assertFalse(got[1])
    lu.assertStrContains(got[2], "bad argument #1 to 'resolve' (string expected, got number)")
  end)
end
