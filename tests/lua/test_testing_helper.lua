-- iocore.test, the helper for users' own tests: servers in subprocesses
-- (bounded, reaped, SIGKILL when SIGTERM is ignored), the sequential
-- client, run_until. Also runs the example test of examples/ (its
-- TestEchoServer and TestLineHandler classes join this suite).
local H = require "helpers"
local lu = H.lu
local T = require "iocore.test"

TestTestingHelper = H.class()

-- start_server runs servers with sh, timeout, setsid and kill.
local function posix_only()
  if H.windows then lu.skip("start_server needs a POSIX system (sh, timeout, setsid, kill)") end
end

local function write_script(text)
  local path = os.tmpname()
  local f = assert(io.open(path, "w"))
  f:write(text)
  f:close()
  return path
end

-- Whether any process of the group `pgid` is still there, after giving
-- killed ones a moment to be reaped (a zombie still answers kill -0).
local function group_alive(pgid)
  local deadline = H.now() + 5000
  while os.execute(("kill -0 -%d 2>/dev/null"):format(pgid)) == true do
    if H.now() > deadline then return true end
    H.sleep(50)
  end
  return false
end

function TestTestingHelper:test_start_server_waits_for_ready_and_stop_reaps_it()
  posix_only()
  local script = write_script([[
    local iocore = require "iocore"
    local core = assert(iocore.core { threads = 1 })
    local l = assert(core:listen(arg[1], { on_recv = function(s, d) s:send(d) end }))
    print("listening on " .. l:address())
    core:run()
    print("bye")
  ]])
  local srv = assert(T.start_server(script, { args = { "127.0.0.1:0" } }))
  os.remove(script)
  lu.assertStrMatches(srv.address, "127%.0%.0%.1:%d+")
  H.with_core(function(core)
    local c = assert(T.connect(core, srv.address))
    c:send("ping\n")
    lu.assertEquals(c:read_line(), "ping")
    c:close()
  end)
  local pid = srv.pid
  local status, out = srv:stop()
  lu.assertEquals(status, 0)
  lu.assertStrContains(out, "bye")
  lu.assertFalse(group_alive(pid), "the server's process group is still alive")
end

-- A server that ignores SIGTERM (and whose children do) is killed, the
-- whole process group, after the grace time.
function TestTestingHelper:test_stop_kills_a_server_that_ignores_sigterm()
  posix_only()
  local script = write_script([[
    trap '' TERM
    echo "listening on nowhere"
    while :; do sleep 0.05; done
  ]])
  local srv = assert(T.start_server(script, { lua = "sh" }))
  os.remove(script)
  lu.assertEquals(srv.address, "nowhere")
  local pid = srv.pid
  local status = srv:stop(300)
  lu.assertTrue(srv.killed, "SIGKILL was not needed?")
  lu.assertNotEquals(status, 0)
  lu.assertFalse(group_alive(pid), "something of the server is still alive")
end

-- A server's life is bounded even if nobody stops it.
function TestTestingHelper:test_a_server_is_killed_after_its_lifetime()
  posix_only()
  local script = write_script("print('listening on here') io.stdout:flush() while true do end\n")
  local srv = assert(T.start_server(script, { lifetime = 1 }))
  os.remove(script)
  local deadline = H.now() + 20000
  while not srv:exited() and H.now() < deadline do H.sleep(50) end
  lu.assertTrue(srv:exited(), "the server outlived its lifetime")
  lu.assertEquals(srv.status, 124, "timeout's status for a command it stopped")
  srv:stop()
end

function TestTestingHelper:test_a_server_that_never_gets_ready_times_out_and_is_killed()
  posix_only()
  local script = write_script("print('starting') ; while true do end\n")
  local t0 = H.now()
  local srv, msg, code = T.start_server(script, { timeout = 300 })
  os.remove(script)
  lu.assertNil(srv)
  lu.assertEquals(code, "ETIMEDOUT")
  lu.assertStrContains(msg, "starting")
  lu.assertTrue(H.now() - t0 < 20000, "start_server did not give up")
end

function TestTestingHelper:test_a_server_that_exits_early_is_reported_with_its_output()
  posix_only()
  local script = write_script("io.stderr:write('cannot bind\\n') os.exit(3)\n")
  local srv, msg, code = T.start_server(script)
  os.remove(script)
  lu.assertNil(srv)
  lu.assertEquals(code, "ECHILD")
  lu.assertStrContains(msg, "cannot bind")
  lu.assertStrContains(msg, "status 3")
end

function TestTestingHelper:test_client_reads_with_deadlines_and_keeps_late_data()
  H.with_core(function(core)
    local l = H.listen(core, {
      on_accept = function(s)
        s:send("now\n")
        core:after(300, function() if not s:closed() then s:send("later\npart") s:close() end end)
      end,
    })
    local c = assert(T.connect(core, l:address()))
    lu.assertEquals(c:read_line(), "now")
    local line, msg, code = c:read_line(50)
    lu.assertNil(line)
    lu.assertEquals(code, "ETIMEDOUT")
    H.assert_msg(msg, "ETIMEDOUT")
    lu.assertEquals(c:read_line(5000), "later")
    lu.assertEquals(c:read(4), "part")
    lu.assertEquals({ c:read() }, { nil, "EOF: end of stream", "EOF" })
    lu.assertTrue(c:wait_closed())
    l:close()
  end)
end

function TestTestingHelper:test_connect_to_a_refused_port_is_econnrefused()
  H.with_core(function(core)
    local l = H.listen(core)
    local port = l:port()
    l:close()
    collectgarbage()
    H.wait_for(core, function() return core:stats().sockets == 0 end, "the listener to close")
    local c, msg, code = T.connect(core, "127.0.0.1:" .. port)
    lu.assertNil(c)
    lu.assertEquals(code, "ECONNREFUSED")
    H.assert_msg(msg, "ECONNREFUSED")
  end)
end

function TestTestingHelper:test_run_until_returns_true_or_etimedout()
  H.with_core(function(core)
    local fired = false
    core:after(20, function() fired = true end)
    lu.assertTrue(T.run_until(core, function() return fired end, 5000))
    H.assert_fail("ETIMEDOUT", "run_until", T.run_until(core, function() return false end, 50))
  end)
end

function TestTestingHelper:test_core_collects_handler_errors_and_close_reports_open_sessions()
  local core = assert(T.core())
  core:post(function() error("oops") end)
  assert(T.run_until(core, function() return #T.errors(core) == 1 end))
  lu.assertStrContains(T.errors(core)[1], "oops")
  local l = assert(core:listen("127.0.0.1:0"))
  local c = assert(T.connect(core, l:address()))
  local ok, _, code = T.close(core, 200)
  lu.assertNil(ok)
  lu.assertEquals(code, "EBUSY")
  lu.assertNotNil(c)
end

-- The numbers docs/testing.md states are the module's.
function TestTestingHelper:test_docs_numbers_are_the_module_defaults()
  local doc = assert(H.read_file(H.root .. "/docs/testing.md"))
  local function says(text) lu.assertStrContains(doc, text) end
  lu.assertEquals(T.default_timeout, 5000)
  says("(default `T.default_timeout`, 5000 ms)")
  lu.assertEquals(T.server_lifetime, 600)
  says("default `T.server_lifetime`, 600)")
  lu.assertEquals(T.stop_grace, 10000)
  says("waits up to `grace_ms` (default 10000")
  lu.assertEquals(T.close_timeout, 2000)
  says("(up to `ms`, default 2000)")
  local core = assert(T.core())
  lu.assertEquals(core:threads(), 1)
  says("on one worker thread")
  assert(T.close(core))
end

function TestTestingHelper:test_start_server_on_windows_says_it_cannot()
  if not H.windows then lu.skip("only on Windows") end
  H.assert_fail("ENOSYS", "start_server", T.start_server("server.lua"))
end

-- The example test of examples/ runs with this suite.
dofile(H.root .. "/examples/test_example.lua")
