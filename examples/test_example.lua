-- How to test a server with luaunit and iocore.test: examples/server.lua
-- (an echo server) started as users start it, in a subprocess, and talked
-- to by a sequential client; then a handler tested in-process.
--
--   lua5.4 examples/test_example.lua            (from the repository root)
--
-- docs/testing.md walks through it.
local lu = require "luaunit"
local T = require "iocore.test"

-- this file's directory, so the test finds the server from anywhere
local here = debug.getinfo(1, "S").source:match("^@(.*)[/\\]") or "."

TestEchoServer = {}

function TestEchoServer:setUp()
  -- "127.0.0.1:0": the server picks a free port and prints it
  local server, msg, code = T.start_server(here .. "/server.lua", { args = { "127.0.0.1:0" } })
  if code == "ENOSYS" then lu.skip(msg) end
  self.server = assert(server, msg)
  self.core = assert(T.core())
end

function TestEchoServer:tearDown()
  if self.core then T.close(self.core) end
  if self.server then self.server:stop() end
  self.core, self.server = nil, nil
end

function TestEchoServer:test_echoes_each_line_back()
  local c = assert(T.connect(self.core, self.server.address))
  assert(c:send("hello\n"))
  lu.assertEquals(c:read_line(), "hello")
  assert(c:send({ "two ", "pieces\n" }))
  lu.assertEquals(c:read_line(), "two pieces")
  c:close()
end

function TestEchoServer:test_serves_two_clients_at_once()
  local a = assert(T.connect(self.core, self.server.address))
  local b = assert(T.connect(self.core, self.server.address))
  a:send("from a\n")
  b:send("from b\n")
  lu.assertEquals(b:read_line(), "from b")
  lu.assertEquals(a:read_line(), "from a")
  a:close()
  b:close()
end

function TestEchoServer:test_says_nothing_unasked()
  local c = assert(T.connect(self.core, self.server.address))
  local line, _, code = c:read_line(200) -- a short deadline: nothing should come
  lu.assertNil(line)
  lu.assertEquals(code, "ETIMEDOUT")
  c:close()
end

function TestEchoServer:test_stops_cleanly_on_sigterm()
  local status, output = self.server:stop()
  lu.assertEquals(status, 0)
  lu.assertStrContains(output, "server stopped")
end

-- In-process: the handler under test runs on the test's own core, so a
-- test can look inside (here: what the server saw).
TestLineHandler = {}

function TestLineHandler:test_upper_cases_lines_until_quit()
  local core = assert(T.core())
  local seen = {}
  local listener = assert(core:listen("127.0.0.1:0", {
    handler = function(s)
      for line in function() return s:read_line() end do
        seen[#seen + 1] = line
        if line == "quit" then return end
        s:write(line:upper() .. "\n")
      end
    end,
  }))
  local c = assert(T.connect(core, listener:address()))
  c:send("abc\nquit\n")
  lu.assertEquals(c:read_line(), "ABC")
  assert(c:wait_closed())
  lu.assertEquals(seen, { "abc", "quit" })
  lu.assertEquals(T.errors(core), {})
  listener:close()
  assert(T.close(core))
end

-- Run directly (not loaded by another test runner): run and exit.
if arg and arg[0] and arg[0]:match("test_example%.lua$") then
  os.exit(lu.LuaUnit.run())
end
