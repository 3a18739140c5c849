-- Session objects: identity, user fields, table keys, methods after close,
-- garbage collection, and file descriptors kept from child processes.
local H = require "helpers"
local lu = H.lu

TestSessions = H.class()

function TestSessions:test_user_fields_and_identity_across_handlers()
  H.with_core(function(core)
    local seen = {}
    local l = H.listen(core, {
      on_accept = function(s)
        s.name = "x"
        s.count = 0
        s[1] = "array part"
        seen.accept = s
      end,
      on_recv = function(s, data)
        s.count = s.count + 1
        seen.recv = s
        seen.name = s.name
        seen.one = s[1]
        seen.missing = s.nothing_here
      end,
    })
    local c = H.client(core, l:address(), { on_connect = function(c) c.s:send("hi") end })
    c.s.mine = { 1, 2, 3 }
    H.wait_for(core, function() return seen.recv ~= nil end, "recv")
    lu.assertIs(seen.recv, seen.accept, "the same object in every handler")
    lu.assertEquals(seen.name, "x")
    lu.assertEquals(seen.one, "array part")
    lu.assertNil(seen.missing)
    lu.assertEquals(seen.accept.count, 1)
    lu.assertEquals(c.s.mine, { 1, 2, 3 })
    -- a user field never hides a method
    c.s.send = "shadow?"
    lu.assertIsFunction(c.s.send)
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    lu.assertEquals(c.s.mine, { 1, 2, 3 }, "fields survive the close")
    l:close()
  end)
end

function TestSessions:test_sessions_work_as_table_keys_and_ids_are_unique()
  H.with_core(function(core)
    local N = 20
    local server_sessions, by_key = {}, {}
    local l = H.listen(core, {
      on_accept = function(s) server_sessions[#server_sessions + 1] = s; by_key[s] = "accepted" end,
      on_recv = function(s) by_key[s] = by_key[s] .. "+recv" end,
    })
    local clients = {}
    for i = 1, N do clients[i] = H.client(core, l:address(), { on_connect = function(c) c.s:send("x") end }) end
    H.wait_for(core, function()
      local n = 0
      for _, v in pairs(by_key) do if v == "accepted+recv" then n = n + 1 end end
      return n == N
    end, "every session to receive")
    local ids = {}
    local function add_id(s)
      local id = s:id()
      lu.assertTrue(math.type(id) == "integer", "id() is an integer")
      lu.assertNil(ids[id], "id " .. id .. " used twice")
      ids[id] = true
    end
    for _, s in ipairs(server_sessions) do add_id(s) end
    for _, c in ipairs(clients) do add_id(c.s) end
    local keys = 0
    for s in pairs(by_key) do keys = keys + 1; lu.assertEquals(by_key[s], "accepted+recv") end
    lu.assertEquals(keys, N)
    for _, c in ipairs(clients) do c.s:close() end
    H.wait_for(core, function() return core:stats().active == 0 end, "closes")
    l:close()
  end)
end

function TestSessions:test_closed_and_methods_after_close()
  H.with_core(function(core)
    local server_s
    local l = H.listen(core, { on_accept = function(s) server_s = s end })
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected and server_s end, "connect")
    local s = c.s
    lu.assertFalse(s:closed())
    local peer, addr, id = s:peer(), s:address(), s:id()
    lu.assertIs(s:on_recv(function() end), s, "on_* returns the session")
    lu.assertIs(s:on_drain(nil), s)
    lu.assertTrue(s:close())
    lu.assertTrue(s:closed(), "closed() is true once closing has begun")
    H.wait_for(core, function() return c.closed end, "on_close")
    lu.assertTrue(s:closed())
    lu.assertEquals(s:peer(), peer)
    lu.assertEquals(s:address(), addr)
    lu.assertEquals(s:id(), id)
    lu.assertEquals(s:pending(), 0)
    H.assert_fail("ECLOSED", "send", s:send("x"))
    H.assert_fail("ECLOSED", "close", s:close())
    H.assert_fail("ECLOSED", "abort", s:abort())
    H.assert_fail("ECLOSED", "on_recv", s:on_recv(function() end))
    lu.assertStrContains(tostring(s), "iocore.session")
    lu.assertStrContains(tostring(s), "closed")
    H.wait_for(core, function() return server_s:closed() end, "server side")
    H.assert_fail("ECLOSED", "send on the peer's session", server_s:send("x"))
    l:close()
  end)
end

function TestSessions:test_close_variable_closes_the_session()
  H.with_core(function(core)
    local l = H.echo_server(core)
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected end, "connect")
    do
      local s <close> = c.s
      lu.assertFalse(s:closed())
    end
    lu.assertTrue(c.s:closed())
    H.wait_for(core, function() return c.closed end, "on_close")
    lu.assertNil(c.close_err)
    l:close()
  end)
end

function TestSessions:test_closed_unreachable_session_is_collected_and_freed()
  H.with_core(function(core)
    local weak = setmetatable({}, { __mode = "k" })
    local closed = 0
    local l = H.listen(core, {
      on_accept = function(s) weak[s] = "server"; s:close() end,
      on_close = function() closed = closed + 1 end,
    })
    do
      local c = H.client(core, l:address(), {
        on_close = function() closed = closed + 1 end,
      })
      weak[c.s] = "client"
    end
    H.wait_for(core, function() return closed == 2 end, "both closes", 10000)
    local function count()
      local n = 0
      for _ in pairs(weak) do n = n + 1 end
      return n
    end
    lu.assertEquals(count(), 2)
    local objects_before = core:stats().objects
    collectgarbage()
    collectgarbage()
    lu.assertEquals(count(), 0, "closed, unreachable sessions are collected")
    H.wait_for(core, function() return core:stats().objects < objects_before end, "the C sessions to be freed")
    lu.assertEquals(core:stats().objects, objects_before - 2)
    l:close()
  end)
end

function TestSessions:test_open_session_is_not_collected_while_open()
  H.with_core(function(core)
    local weak = setmetatable({}, { __mode = "v" })
    local got = {}
    local l = H.listen(core, { on_recv = function(s, d) got[#got + 1] = d end })
    do
      local c = H.client(core, l:address())
      weak[1] = c.s
    end
    collectgarbage()
    collectgarbage()
    lu.assertNotNil(weak[1], "an open session stays alive without a Lua reference")
    H.wait_for(core, function() return weak[1] and core:stats().accepted == 1 end, "accept")
    weak[1]:send("still alive")
    H.wait_for(core, function() return got[1] end, "data")
    lu.assertEquals(got[1], "still alive")
    weak[1]:close()
    H.wait_for(core, function() return core:stats().active == 0 end, "closes")
    l:close()
  end)
end

function TestSessions:test_dropped_core_is_collected()
  local weak = setmetatable({}, { __mode = "v" })
  do
    local core = H.new_core()
    local l = H.listen(core)
    weak[1] = core
    H.client(core, l:address())
    core:run(30)
  end
  collectgarbage()
  collectgarbage()
  lu.assertNil(weak[1], "a dropped core (with a listener and a session) is collected")
end

function TestSessions:test_sockets_are_not_inherited_by_child_processes()
  H.with_core(function(core)
    local l = H.echo_server(core)
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected end, "connect")
    local p = io.popen("ls -l /proc/self/fd/ 2>&1")
    local listing = p:read("a")
    p:close()
    for line in listing:gmatch("[^\n]+") do
      lu.assertNil(line:match("socket:"), "a socket leaked into a child: " .. line)
      lu.assertNil(line:match("io_uring") or line:match("eventpoll") or line:match("eventfd") or
                   line:match("signalfd"), "a core fd leaked into a child: " .. line)
    end
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
  end)
end

-- address() and peer() of a session accepted on a wildcard listener, asked
-- for the first time in on_close and after it (the socket is closed then).
function TestSessions:test_addresses_in_and_after_on_close_on_a_wildcard_listener()
  H.with_core(function(core)
    local in_close, server_s
    local l = assert(core:listen("0.0.0.0:0", {
      on_accept = function(s) server_s = s end,
      on_recv = function() end, -- without it the "x" would be held, and the FIN behind it
      on_close = function(s) in_close = { address = table.pack(s:address()), peer = s:peer() } end,
    }))
    local c = H.client(core, "127.0.0.1:" .. l:port(), { on_connect = function(c) c.s:send("x") end })
    H.wait_for(core, function() return server_s ~= nil and c.connected end, "connect")
    c.s:close()
    H.wait_for(core, function() return in_close ~= nil and c.closed end, "on_close")
    local want = "127.0.0.1:" .. l:port()
    lu.assertEquals(in_close.address[1], want, "address() inside on_close: " ..
      tostring(in_close.address[2] or in_close.address[1]))
    lu.assertEquals(in_close.peer, c.s:address())
    lu.assertEquals(server_s:address(), want, "address() after on_close")
    lu.assertEquals(server_s:peer(), c.s:address())
    l:close()
  end)
end
