-- The examples, run as a user would (lua5.4 examples/X.lua 127.0.0.1:0) in a
-- subprocess, talked to by core:connect clients. Each is stopped with
-- SIGTERM at the end and must exit 0.
local H = require "helpers"
local lu = H.lu

TestExamples = H.class()

-- Starts examples/<name>.lua on a free port; returns the process and the
-- address it printed (`pattern` captures it).
local function start(core, name, pattern)
  local p = H.spawn(H.root .. "/examples/" .. name .. ".lua", "127.0.0.1:0")
  return p, H.wait_output(core, p, pattern)
end

local function stop(core, p)
  p:kill("TERM")
  H.wait_for(core, function() return p:exited() end, "the example to exit", 20000)
  lu.assertEquals(p.status, 0, "exit status after SIGTERM; output:\n" .. p:output())
end

function TestExamples:test_server_example_echoes()
  H.with_core(function(core)
    local p, address = start(core, "server", "listening on (127%.0%.0%.1:%d+)")
    local payload = H.payload(300000, 3)
    local c = H.client(core, address, { on_connect = function(c) c.s:send(payload) end })
    H.wait_for(core, function() return c.received >= #payload or c.closed end, "the echo", 20000)
    lu.assertTrue(c:data() == payload, "echoed byte for byte")
    H.wait_output(core, p, "client connected%s+(127%.0%.0%.1:%d+)")
    lu.assertStrContains(p:output(), "client connected\t" .. c.s:address())
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    H.wait_output(core, p, "client left")
    stop(core, p)
    lu.assertStrContains(p:output(), "server stopped")
  end)
end

function TestExamples:test_chat_example_relays_lines_between_clients()
  H.with_core(function(core)
    local p, address = start(core, "callback/chat", "chat on (127%.0%.0%.1:%d+)")
    local a = H.client(core, address)
    H.wait_for(core, function() return a.connected end, "A connects")
    local b = H.client(core, address)
    -- B is a member once A hears that it joined
    H.wait_for(core, function() return a:data():find("joined", 1, true) end, "B's join announced to A")
    lu.assertEquals(a:data(), ("* %s joined\n"):format(b.s:address()))
    a.s:send("hello from A\npart")
    a.s:send("ial line\n")
    local want = ("%s: hello from A\n%s: partial line\n"):format(a.s:address(), a.s:address())
    H.wait_for(core, function() return #b:data() >= #want end, "A's lines at B")
    lu.assertEquals(b:data(), want)
    -- B leaves: A hears it
    b.s:close()
    H.wait_for(core, function() return a:data():find("left", 1, true) end, "B's leave announced to A")
    lu.assertStrContains(a:data(), ("* %s left\n"):format(b.s:address()))
    a.s:close()
    H.wait_for(core, function() return a.closed and b.closed end, "closes")
    stop(core, p)
  end)
end

local REQ11 = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
local REQ10 = "GET / HTTP/1.0\r\n\r\n"

-- Splits complete responses (head + Content-Length body) off a buffer.
local function responses(data)
  local out, pos = {}, 1
  while true do
    local e = data:find("\r\n\r\n", pos, true)
    if not e then break end
    local head = data:sub(pos, e + 3)
    local len = tonumber(head:match("[Cc]ontent%-[Ll]ength:%s*(%d+)")) or 0
    if #data < e + 3 + len then break end
    out[#out + 1] = { head = head, body = data:sub(e + 4, e + 3 + len) }
    pos = e + 4 + len
  end
  return out, data:sub(pos)
end

function TestExamples:test_http_example_keep_alive_and_http10_close()
  H.with_core(function(core)
    local p, address = start(core, "http_hello", "http_hello on (127%.0%.0%.1:%d+)")
    -- HTTP/1.1: two requests on one connection, the second after the first
    -- answer, then two more pipelined in one write
    local sent = 0
    local k = H.client(core, address, {
      on_connect = function(c) c.s:send(REQ11); sent = 1 end,
      on_recv = function(c)
        local r = responses(c:data())
        if #r == 1 and sent == 1 then c.s:send(REQ11); sent = 2 end
        if #r == 2 and sent == 2 then c.s:send(REQ11 .. REQ11); sent = 4 end
      end,
    })
    H.wait_for(core, function() return #responses(k:data()) == 4 or k.closed end, "four responses")
    local r, rest = responses(k:data())
    lu.assertEquals(#r, 4)
    lu.assertEquals(rest, "")
    for _, resp in ipairs(r) do
      lu.assertStrContains(resp.head, "HTTP/1.1 200 OK\r\n")
      lu.assertEquals(resp.body, "Hello, World!")
    end
    lu.assertNil(k.closed, "a keep-alive connection stays open")
    -- a request split over two writes
    k.s:send(REQ11:sub(1, 10))
    core:run(20)
    k.s:send(REQ11:sub(11))
    H.wait_for(core, function() return #responses(k:data()) == 5 end, "the fifth response")
    k.s:close()
    H.wait_for(core, function() return k.closed end, "keep-alive close")

    -- HTTP/1.0: one response, then the server closes
    local c = H.client(core, address, { on_connect = function(c) c.s:send(REQ10) end })
    H.wait_for(core, function() return c.closed end, "the server to close the HTTP/1.0 connection")
    lu.assertNil(c.close_err)
    local r10 = responses(c:data())
    lu.assertEquals(#r10, 1)
    lu.assertEquals(r10[1].body, "Hello, World!")
    stop(core, p)
  end)
end

function TestExamples:test_examples_exit_cleanly_on_sigterm_with_idle_clients()
  H.with_core(function(core)
    for _, ex in ipairs({ { "server", "listening on (%S+)" }, { "callback/chat", "chat on (%S+)" },
                          { "http_hello", "http_hello on (%S+)" }, { "http_server", "http_server on (%S+)" },
                          { "resp_server", "resp_server on (%S+)" } }) do
      local p, address = start(core, ex[1], ex[2])
      local clients = {}
      for i = 1, 3 do clients[i] = H.client(core, address) end
      H.wait_for(core, function()
        for _, c in ipairs(clients) do if not c.connected then return false end end
        return true
      end, ex[1] .. ": connects")
      core:run(50)
      stop(core, p)
      H.wait_for(core, function()
        for _, c in ipairs(clients) do if not c.closed then return false end end
        return true
      end, ex[1] .. ": the clients see the close")
      for _, c in ipairs(clients) do lu.assertNil(c.close_err, ex[1] .. ": a clean close") end
    end
  end)
end
