-- Listeners: binding, addresses, the accepts kept posted, closing.
local H = require "helpers"
local lu = H.lu

TestListen = H.class()

function TestListen:test_listen_port_zero_reports_bound_port_and_address()
  H.with_core(function(core)
    local l = H.listen(core)
    lu.assertIsNumber(l:port())
    lu.assertTrue(l:port() > 0 and l:port() < 65536)
    lu.assertEquals(l:address(), "127.0.0.1:" .. l:port())
    lu.assertTrue(l:close())
  end)
end

-- on_accept sees the client's own local address as the peer; with the
-- core idle, exactly `accepts` accept operations are outstanding.
local function accept_sees_client_address(accepts)
  H.with_core(function(core)
    local peer, local_addr
    local l = H.listen(core, {
      accepts = accepts,
      on_accept = function(s)
        peer = s:peer()
        local_addr = s:address()
      end,
    })
    lu.assertEquals(core:stats().accepts_posted, accepts)
    local c = H.client(core, l:address())
    H.wait_for(core, function() return peer ~= nil and c.connected end, "accept and connect")
    lu.assertEquals(peer, c.s:address())
    lu.assertEquals(local_addr, l:address())
    lu.assertEquals(c.s:peer(), l:address())
    -- idle again: the accept that completed has been posted again
    H.wait_for(core, function() return core:stats().accepts_posted == accepts end, "accepts re-posted")
    lu.assertEquals(core:stats().accepts_posted, accepts)
    lu.assertEquals(core:stats().accepted, 1)
    c.s:close()
    H.wait_for(core, function() return c.closed end, "client close")
    l:close()
  end)
end

function TestListen:test_accept_peer_is_client_address_with_4_accepts()
  accept_sees_client_address(4)
end

function TestListen:test_accept_peer_is_client_address_with_16_accepts()
  accept_sees_client_address(16)
end

function TestListen:test_accepts_stay_posted_after_many_connections()
  H.with_core(function(core)
    local accepted = 0
    local l = H.listen(core, { accepts = 4, on_accept = function(s) accepted = accepted + 1 end })
    local clients = {}
    for i = 1, 20 do clients[i] = H.client(core, l:address()) end
    H.wait_for(core, function() return accepted == 20 end, "20 accepts")
    H.wait_for(core, function() return core:stats().accepts_posted == 4 end, "accepts re-posted")
    for _, c in ipairs(clients) do c.s:close() end
    H.wait_for(core, function() return core:stats().active == 0 end, "all closed")
    l:close()
  end)
end

function TestListen:test_listen_on_address_in_use_returns_eaddrinuse()
  H.with_core(function(core)
    local l = H.listen(core)
    H.assert_fail("EADDRINUSE", "listen on a bound address", core:listen(l:address()))
    l:close()
  end)
end

function TestListen:test_listener_close_keeps_accepted_sessions_and_refuses_new_ones()
  H.with_core(function(core)
    local server_session
    local l = H.echo_server(core, { on_accept = function(s) server_session = s end })
    local address = l:address()
    local c = H.client(core, address)
    H.wait_for(core, function() return server_session and c.connected end, "connect")
    lu.assertTrue(l:close())
    H.assert_fail("ECLOSED", "second listener:close()", l:close())
    H.wait_for(core, function() return core:stats().accepts_posted == 0 end, "accepts cancelled")
    -- the accepted session lives on
    c.s:send("still here")
    H.wait_for(core, function() return c.received == 10 end, "echo after listener close")
    lu.assertEquals(c:data(), "still here")
    -- a new connection is refused once the socket is closed
    H.wait_for(core, function() return core:stats().sockets == 2 end,
      "the listening socket to close after listener:close() (sockets == 2: client + accepted)", 3000)
    local c2 = H.client(core, address)
    H.wait_for(core, function() return c2.closed end, "refused connect")
    H.assert_msg(c2.connect_err, "ECONNREFUSED", "connect after listener:close()")
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
  end)
end

function TestListen:test_listen_opts_handlers_are_defaults_for_accepted_sessions()
  H.with_core(function(core)
    local got = {}
    local l = H.listen(core, {
      on_recv = function(s, data) got[#got + 1] = data; s:send("<" .. data .. ">") end,
      on_close = function(s, err) got[#got + 1] = "closed" end,
    })
    local c = H.client(core, l:address(), { on_connect = function(c) c.s:send("x") end })
    H.wait_for(core, function() return c.received == 3 end, "reply")
    lu.assertEquals(c:data(), "<x>")
    c.s:close()
    H.wait_for(core, function() return got[2] == "closed" end, "server close")
    lu.assertEquals(got, { "x", "closed" })
    l:close()
  end)
end

function TestListen:test_listener_on_accept_returns_listener_and_replaces_handler()
  H.with_core(function(core)
    local which
    local l = H.listen(core, { on_accept = function() which = "opts" end })
    lu.assertIs(l:on_accept(function() which = "method" end), l)
    local c = H.client(core, l:address())
    H.wait_for(core, function() return which ~= nil and c.connected end, "accept")
    lu.assertEquals(which, "method")
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
  end)
end
