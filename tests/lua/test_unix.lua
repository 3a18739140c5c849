-- unix-domain sockets: "unix:/path" for listen, connect and dial; the
-- address strings of both ends; the socket file made at listen and removed
-- at close; a stale file replaced, a live one refused; the errors.
local H = require "helpers"
local lu = H.lu

TestUnix = H.class()

local dir

-- A fresh directory for the test's socket files (removed in tearDown).
local function fresh_dir()
  local p = io.popen("mktemp -d /tmp/ioc-unix-lua-XXXXXX")
  dir = p:read("l")
  p:close()
  lu.assertNotNil(dir)
  return dir
end

local function exists(path)
  return H.shell_ok("test -e " .. H.shq(path))
end

function TestUnix:setUp()
  if H.windows then lu.skip("no unix-domain sockets in the Windows build (wine 8 has no AF_UNIX)") end
  fresh_dir()
end

function TestUnix:tearDown()
  if dir then os.execute("rm -rf " .. H.shq(dir)) end
  dir = nil
  H.reap()
end

function TestUnix:test_unix_echo_and_the_address_strings_of_both_ends()
  H.with_core(function(core)
    local path = dir .. "/echo.sock"
    local server_side
    local l = assert(core:listen("unix:" .. path, {
      on_accept = function(s) server_side = s end,
      on_recv = function(s, data) s:send(data) end,
    }))
    lu.assertEquals(l:address(), "unix:" .. path)
    lu.assertEquals(l:port(), 0)
    lu.assertTrue(exists(path))
    local c = H.client(core, "unix:" .. path)
    H.wait_for(core, function() return c.connected or c.closed end, "connect")
    lu.assertTrue(c.connected, tostring(c.connect_err))
    local msg = H.payload(100000, 3)
    c.s:send(msg)
    H.wait_for(core, function() return c.received == #msg end, "the echo")
    lu.assertTrue(c:data() == msg, "echoed bytes differ")
    lu.assertEquals(c.s:peer(), "unix:" .. path)
    lu.assertEquals(c.s:address(), "unix:")
    lu.assertEquals(server_side:peer(), "unix:")
    lu.assertEquals(server_side:address(), "unix:" .. path)
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    lu.assertNil(c.close_err)
    l:close()
    H.wait_for(core, function() return not exists(path) end, "the socket file removed")
  end)
end

function TestUnix:test_unix_listener_replaces_a_stale_socket_file()
  local path = dir .. "/stale.sock"
  -- a listener of another core, gone without removing its file
  H.shell_ok("python3 -c " .. H.shq(
    "import socket; s = socket.socket(socket.AF_UNIX); s.bind('" .. path .. "'); s.listen(1); s.close()"))
  lu.assertTrue(exists(path), "the stale file was not made")
  H.with_core(function(core)
    local l, err = core:listen("unix:" .. path, { on_recv = function(s, d) s:send(d) end })
    lu.assertNotNil(l, err)
    local c = H.client(core, "unix:" .. path)
    c.s:send("ping")
    H.wait_for(core, function() return c.received == 4 end, "the echo")
    c.s:close()
    l:close()
  end)
end

function TestUnix:test_unix_listener_on_a_live_socket_file_is_eaddrinuse()
  H.with_core(function(core)
    local path = dir .. "/live.sock"
    local l = assert(core:listen("unix:" .. path))
    H.assert_fail("EADDRINUSE", "a second listen", core:listen("unix:" .. path))
    lu.assertTrue(exists(path), "the failed listen removed the live file")
    local c = H.client(core, "unix:" .. path)
    H.wait_for(core, function() return c.connected or c.closed end, "connect")
    lu.assertTrue(c.connected, tostring(c.connect_err))
    c.s:close()
    l:close()
  end)
end

function TestUnix:test_unix_path_too_long_is_enametoolong()
  H.with_core(function(core)
    -- 107 bytes is the longest path; one more is too long
    local base = dir .. "/"
    local longest = base .. string.rep("x", 107 - #base)
    lu.assertEquals(#longest, 107)
    local l, err = core:listen("unix:" .. longest)
    lu.assertNotNil(l, err)
    lu.assertEquals(l:address(), "unix:" .. longest)
    l:close()
    local long = longest .. "x"
    H.assert_fail("ENAMETOOLONG", "listen", core:listen("unix:" .. long))
    H.assert_fail("ENAMETOOLONG", "connect", core:connect("unix:" .. long, {}))
  end)
end

function TestUnix:test_unix_connect_to_a_missing_path_reports_enoent()
  H.with_core(function(core)
    local c = H.client(core, "unix:" .. dir .. "/missing.sock")
    H.wait_for(core, function() return c.closed end, "the failed connect")
    lu.assertEquals(c.events, { "connect", "close" })
    H.assert_msg(c.connect_err, "ENOENT")
    H.assert_msg(c.close_err, "ENOENT")
  end)
end

function TestUnix:test_unix_stream_style_dial_reads_and_writes()
  H.with_core(function(core)
    local path = dir .. "/stream.sock"
    local l = assert(core:listen("unix:" .. path, {
      handler = function(s) s:write("hi " .. s:read_line() .. "\n") end,
    }))
    local got, finished
    core:spawn(function()
      local s = assert(core:dial("unix:" .. path))
      assert(s:write("bob\n"))
      got = { s:read_line() }
      got[2] = { s:read_line() }
      s:close()
      finished = true
    end)
    H.wait_for(core, function() return finished end, "the dialing coroutine")
    lu.assertEquals(got[1], "hi bob")
    lu.assertEquals(got[2], { nil, "EOF: end of stream", "EOF", "" })
    local r
    finished = false
    core:spawn(function()
      r = { core:dial("unix:" .. dir .. "/nobody.sock") }
      finished = true
    end)
    H.wait_for(core, function() return finished end, "the failing dial")
    lu.assertNil(r[1])
    lu.assertEquals(r[3], "ENOENT")
    l:close()
  end)
end
