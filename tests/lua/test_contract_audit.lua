-- The Lua API's promises about misuse and about objects that have ended,
-- checked method by method: a wrong self or a wrong argument raises with the
-- name and argument number the script used (never a crash, never a name of
-- the binding's insides), an ended session answers every method with the
-- documented shape, and the listener option `reuseport` does what it says.
local H = require "helpers"
local lu = H.lu
local iocore = H.iocore

TestContractAudit = H.class()

-- The error a call raises (the test fails if it returns).
local function raises(f, ...)
  local ok, err = pcall(f, ...)
  lu.assertFalse(ok, "did not raise")
  return tostring(err)
end

-- The error of `f` called on the line that raises, with its position: the
-- message must name this file (the script's line, not the library's).
local function raised_here(f)
  local ok, err = pcall(f)
  lu.assertFalse(ok, "did not raise")
  err = tostring(err)
  lu.assertStrContains(err, "test_contract_audit.lua:", false, "the script's line: " .. err)
  lu.assertNotStrContains(err, "iocore/stream", false, "the library's line: " .. err)
  lu.assertNotStrContains(err, "orig_", false, "a name of the binding's insides: " .. err)
  return err
end

-- Option tables are checked field by field; the error names the method and
-- argument the script wrote, whichever path (callback listener, handler
-- listener, connect, dial, timeouts) the call takes inside the library.
function TestContractAudit:test_option_errors_name_the_scripts_method_argument_and_line()
  H.with_core(function(core)
    local addr = "127.0.0.1:0"
    local function has(err, want) lu.assertStrContains(err, want, false, err) end
    has(raised_here(function() local x = core:listen(addr, { backlog = "x" }) return x end),
      "bad argument #2 to 'listen' (field 'backlog' must be an integer, got string)")
    has(raised_here(function() local x = core:listen(addr, { handler = print, idle_timeout = -1 }) return x end),
      "bad argument #2 to 'listen' (field 'idle_timeout' out of range")
    has(raised_here(function() local x = core:listen(addr, { framing = "words" }) return x end),
      "bad argument #2 to 'listen' (field 'framing'")
    has(raised_here(function() local x = core:connect("127.0.0.1:1", { max_pending = 0 }) return x end),
      "bad argument #2 to 'connect' (field 'max_pending' out of range")
    local l = H.listen(core, { on_recv = function() end })
    local s = assert(core:connect(l:address()))
    has(raised_here(function() local x = s:timeouts { idle = "soon" } return x end),
      "bad argument #1 to 'timeouts' (field 'idle' must be an integer, got string)")
    has(raised_here(function() local x = s:timeouts { write = -5 } return x end),
      "bad argument #1 to 'timeouts' (field 'write' out of range")
    local from_dial
    core:spawn(function()
      from_dial = {
        opts = select(2, pcall(function() local x = core:dial("127.0.0.1:1", { connect_timeout = "x" }) return x end)),
        self = select(2, pcall(function() local x = core.dial(42, "127.0.0.1:1") return x end)),
      }
    end)
    H.wait_for(core, function() return from_dial end, "the dial calls")
    has(from_dial.opts, "test_contract_audit.lua:")
    has(from_dial.opts, "bad argument #2 to 'dial' (field 'connect_timeout' must be an integer, got string)")
    has(from_dial.self, "calling 'dial' on bad self (iocore.core expected, got number)")
    -- an operational failure after a good option table is still a result
    H.assert_fail("EINVAL", "listen on a malformed address", core:listen("1.2.3.256:80", { backlog = 8 }))
    s:close()
    l:close()
  end)
end

-- Every method of every object type, called on something that is not such
-- an object, raises an error naming what it expected (a stream method
-- outside a coroutine says that first), never a crash.
function TestContractAudit:test_every_method_on_a_wrong_self_raises_naming_the_type()
  H.with_core(function(core)
    local l = H.listen(core, { on_recv = function() end })
    local s = assert(core:connect(l:address()))
    local t = core:after(100000, function() end)
    local methods = {
      [s] = { "id", "peer", "address", "send", "send_frame", "pending", "close", "abort", "closed",
              "shutdown", "pause", "resume", "timeouts", "on_recv", "on_close", "on_drain",
              "on_connect", "on_eof", "read", "read_line", "read_until", "write" },
      [l] = { "address", "port", "on_accept", "close" },
      [core] = { "backend", "threads", "listen", "connect", "after", "every", "post", "run", "stop",
                 "stats", "on_error", "broadcast", "resolve", "spawn", "dial", "now", "stopping", "close" },
      [t] = { "cancel" },
    }
    local others = { 42, "x", {}, false, print }
    for obj, names in pairs(methods) do
      for _, name in ipairs(names) do
        local m = obj[name]
        lu.assertIsFunction(m, tostring(obj) .. ":" .. name)
        for _, bad in ipairs(others) do
          local err = raises(m, bad)
          lu.assertTrue(err:find("expected", 1, true) ~= nil or err:find("bad self", 1, true) ~= nil
            or err:find("not inside an iocore coroutine", 1, true) ~= nil,
            ("%s called on %s: %s"):format(name, type(bad), err))
        end
        for other in pairs(methods) do
          if rawequal(getmetatable(other), getmetatable(obj)) == false then
            local err = raises(m, other)
            lu.assertTrue(err:find("expected", 1, true) ~= nil or err:find("bad self", 1, true) ~= nil
              or err:find("not inside an iocore coroutine", 1, true) ~= nil,
              ("%s called on %s: %s"):format(name, tostring(other), err))
          end
        end
      end
    end
    lu.assertTrue(t:cancel())
    s:close()
    l:close()
  end)
end

-- After on_close: id/peer/address/closed/pending answer; everything that
-- would act returns nil, "ECLOSED: ...", "ECLOSED" (callback and stream
-- methods alike), and nothing raises.
function TestContractAudit:test_every_session_method_after_on_close_has_the_documented_shape()
  H.with_core(function(core)
    local l = H.listen(core, { on_recv = function() end })
    local closed = false
    local s = assert(core:connect(l:address(), { on_close = function() closed = true end }))
    local id = s:id()
    s:abort()
    H.wait_for(core, function() return closed end, "on_close")
    lu.assertEquals(s:id(), id)
    lu.assertIsString(s:peer())
    lu.assertIsString(s:address())
    lu.assertTrue(s:closed())
    lu.assertEquals(s:pending(), 0)
    local buf = iocore.buffer("b")
    local calls = {
      send = function() return s:send("x") end,
      send_array = function() return s:send { "x", buf } end,
      send_buffer = function() return s:send(buf) end,
      send_frame = function() return s:send_frame("x") end,
      close = function() return s:close() end,
      abort = function() return s:abort() end,
      shutdown = function() return s:shutdown() end,
      pause = function() return s:pause() end,
      resume = function() return s:resume() end,
      timeouts = function() return s:timeouts { idle = 10 } end,
      timeouts_read = function() return s:timeouts { read = 10 } end,
    }
    for _, name in ipairs { "on_recv", "on_close", "on_drain", "on_connect", "on_eof" } do
      calls[name] = function() return s[name](s, function() end) end
    end
    for name, call in pairs(calls) do H.assert_fail("ECLOSED", name .. " after on_close", call()) end
    -- the stream methods, from a coroutine: the error triple plus "" read
    local got
    core:spawn(function()
      got = { read = table.pack(s:read(1)), line = table.pack(s:read_line()),
              write = table.pack(s:write("x")) }
    end)
    H.wait_for(core, function() return got end, "the stream calls")
    for name, r in pairs(got) do
      lu.assertNil(r[1], name)
      H.assert_msg(r[2], "ECLOSED", name)
      lu.assertEquals(r[3], "ECLOSED", name)
    end
    lu.assertEquals(got.read[4], "", "read's partial")
    l:close()
  end)
end

-- reuseport = true lets two listeners share one port (each gets some of
-- the connections, or one gets them all: the kernel decides); a listener
-- without it on a port in use gets EADDRINUSE as a result, not an error.
function TestContractAudit:test_reuseport_listeners_share_a_port_and_without_it_eaddrinuse()
  if H.windows then lu.skip("Windows has no SO_REUSEPORT (a reuseport listener returns EOPNOTSUPP)") end
  H.with_core(function(core)
    local accepted = 0
    local opts = { reuseport = true, on_accept = function() accepted = accepted + 1 end,
                   on_recv = function(s, d) s:send(d) end }
    local a = H.listen(core, opts)
    local b, msg = core:listen(a:address(), opts)
    lu.assertNotNil(b, msg)
    lu.assertEquals(b:port(), a:port())
    H.assert_fail("EADDRINUSE", "a listener without reuseport on the shared port",
      core:listen(a:address(), { on_recv = function() end }))
    local clients = {}
    for i = 1, 4 do clients[i] = H.client(core, a:address()) end
    H.wait_for(core, function() return accepted == 4 end, "four accepts over the two listeners")
    for _, c in ipairs(clients) do c.s:close() end
    H.wait_for(core, function()
      for _, c in ipairs(clients) do if not c.closed then return false end end
      return true
    end, "the clients to close")
    a:close()
    b:close()
  end)
end

-- s:write is bounded by the session's write time-out: a writer parked
-- above write_hwm behind a peer that reads nothing gets the close's
-- ETIMEDOUT as its result, and the session's on_close says the same.
function TestContractAudit:test_stream_write_to_a_peer_that_reads_nothing_ends_with_the_write_timeout()
  H.with_core(function(core)
    local res, close_err
    local chunk = string.rep("w", 65536)
    local l = H.listen(core, {
      write_timeout = 300,
      on_close = function(_, err) close_err = err end,
      handler = function(s)
        for _ = 1, 1024 do -- 64 MiB at most: far more than the kernel buffers
          local ok, msg, code = s:write(chunk)
          if not ok then res = { msg, code } return end
        end
        res = { "all written" }
      end,
    })
    local c = assert(core:connect(l:address(), { on_connect = function(s) s:pause() end }))
    H.wait_for(core, function() return res and close_err end, "the write to fail", 20000)
    H.assert_msg(res[1], "ETIMEDOUT", "write's result")
    lu.assertEquals(res[2], "ETIMEDOUT")
    H.assert_msg(close_err, "ETIMEDOUT", "on_close of the writer's session")
    c:abort()
    l:close()
  end)
end

-- Contract gaps the audit found (now fixed): a regression fails the test
-- with the gap's description.
local function open_gap(ok, why)
  lu.assertTrue(ok, "CONTRACT GAP: " .. why)
end

-- s:write(bad) is a misuse of write: it raises naming write and its
-- argument, as send does for send.
function TestContractAudit:test_stream_write_misuse_names_write_and_its_argument()
  H.with_core(function(core)
    local errs
    local l = H.listen(core, { handler = function(s)
      errs = {
        number = select(2, pcall(function() local x = s:write(42) return x end)),
        item = select(2, pcall(function() local x = s:write({ "a", 1 }) return x end)),
      }
    end })
    local c = H.client(core, l:address())
    H.wait_for(core, function() return errs end, "the handler's calls")
    H.wait_for(core, function() return c.closed end, "the handler's session to close")
    l:close()
    for what, err in pairs(errs) do
      lu.assertStrContains(err, "bad argument", false, what)
      open_gap(err:find("bad argument #1 to 'write'", 1, true) ~= nil,
        ("s:write(%s) raises %q: the name and number of the internal s:send call "
          .. "(lua/iocore/stream.lua, write() calls S.send(s, data) without checking data)"):format(what, err))
    end
  end)
end

-- iocore.sleep(ms) with a number that is no duration (inf, nan, past
-- 2^31-1) raises naming sleep, not the core:after it uses.
function TestContractAudit:test_sleep_with_a_number_that_is_no_duration_names_sleep()
  H.with_core(function(core)
    local errs
    core:spawn(function()
      errs = {}
      for _, ms in ipairs { math.huge, 0 / 0, 2 ^ 40 } do
        errs[#errs + 1] = select(2, pcall(iocore.sleep, ms))
      end
    end)
    H.wait_for(core, function() return errs and #errs == 3 end, "the sleep calls")
    for _, err in ipairs(errs) do
      lu.assertStrContains(tostring(err), "bad argument", false)
      open_gap(tostring(err):find("to 'sleep'", 1, true) ~= nil,
        ("iocore.sleep raises %q: the argument error of the internal core:after "
          .. "(lua/iocore/stream.lua, sleep() floors ms and passes it on unchecked)"):format(tostring(err)))
    end
  end)
end

-- Timer delays are whole milliseconds, as the reference says: 2.0 is taken,
-- 1.5 raises naming after / every and its argument.
function TestContractAudit:test_timer_delay_is_whole_milliseconds_and_a_fraction_raises()
  H.with_core(function(core)
    local fired = false
    local t = core:after(2.0, function() fired = true end)
    H.wait_for(core, function() return fired end, "the 2.0 ms timer")
    lu.assertTrue(t:cancel())
    local e1 = raises(function() local x = core:after(1.5, function() end) return x end)
    lu.assertStrContains(e1, "bad argument #1 to 'after'")
    local e2 = raises(function() local x = core:every(0.5, function() end) return x end)
    lu.assertStrContains(e2, "bad argument #1 to 'every'")
    local doc = H.read_file(H.root .. "/docs/lua-api.md")
    lu.assertStrContains(doc, "a number with a\n  fraction (`1.5`) or out of the range raises `bad argument #1 to 'after'`")
  end)
end

-- iocore.core's options: an explicit backend is used whatever
-- IOCORE_BACKEND says (the variable only replaces "auto"), one this machine
-- does not offer is nil, msg, code, and threads defaults to the CPU count
-- this process may use.
function TestContractAudit:test_core_explicit_backend_wins_over_the_environment_and_threads_default()
  for _, name in ipairs(iocore.backends()) do
    H.with_core({ backend = name }, function(core)
      lu.assertEquals(core:backend(), name, "backend = " .. name)
      lu.assertEquals(core:stats().backend, name)
    end)
  end
  -- a backend this machine does not offer is an operational failure: a result, not an error
  local offered = {}
  for _, name in ipairs(iocore.backends()) do offered[name] = true end
  for _, name in ipairs { "io_uring", "epoll", "iocp" } do
    if not offered[name] then
      local core, msg, code = iocore.core { backend = name, signals = false }
      lu.assertNil(core, name)
      lu.assertIsString(code, name)
      H.assert_fail(code, "iocore.core{backend = " .. name .. "}", core, msg, code)
    end
  end
  if H.windows then return end -- no nproc there; the C suite checks ioc_cpu_count
  local p = io.popen("nproc 2>/dev/null")
  local n = p and tonumber(p:read("l") or "")
  if p then p:close() end
  if not n then lu.skip("nproc is not available to compare the default thread count with") end
  local core = assert(iocore.core { signals = false })
  local threads = core:threads()
  lu.assertTrue(core:close())
  lu.assertEquals(threads, n, "threads defaults to the CPU count (nproc honours the affinity mask too)")
end

-- s:send_frame with a 2-byte prefix: 65535 bytes is the largest payload it
-- can count and goes out whole; one byte more is refused as a result
-- (EMSGSIZE), queues nothing, and leaves the session usable.
function TestContractAudit:test_send_frame_payload_the_prefix_cannot_count_is_emsgsize_and_queues_nothing()
  H.with_core(function(core)
    local got = {}
    local l = H.listen(core, { framing = { length = 2, max = 70000 },
                               on_recv = function(_, m) got[#got + 1] = #m end })
    local s = assert(core:connect(l:address(), { framing = { length = 2 }, on_recv = function() end }))
    H.assert_fail("EMSGSIZE", "send_frame of 65536 bytes", s:send_frame(string.rep("x", 65536)))
    lu.assertEquals(s:pending(), 0, "a refused frame queues nothing")
    lu.assertTrue(s:send_frame(string.rep("y", 65535)))
    lu.assertTrue(s:send_frame(""))
    H.wait_for(core, function() return #got == 2 end, "the two frames")
    lu.assertEquals(got, { 65535, 0 })
    local doc = H.read_file(H.root .. "/docs/lua-api.md")
    lu.assertStrContains(doc, "over 65535 bytes with `length = 2`) queues nothing and returns `nil, \"EMSGSIZE: ...\", \"EMSGSIZE\"`")
    s:close()
    l:close()
  end)
end

-- After core:close(): every method of the core raises "core is closed"
-- naming the method, except now() and a second close(); objects still held
-- answer as the reference says (sessions and listeners ECLOSED, cancel true).
function TestContractAudit:test_methods_of_a_closed_core_and_of_its_objects()
  local core = assert(iocore.core { threads = 1, signals = false })
  local t = core:after(100000, function() end)
  local l = assert(core:listen("127.0.0.1:0", { on_recv = function() end }))
  local port = l:port()
  local s = assert(core:connect(l:address()))
  H.assert_fail("EBUSY", "close with objects still held", core:close())
  for _, name in ipairs { "backend", "threads", "listen", "connect", "after", "every", "post", "run",
                          "stop", "stats", "on_error", "broadcast", "resolve", "spawn", "stopping" } do
    local err = raises(core[name], core, "127.0.0.1:1", function() end)
    lu.assertStrContains(err, "core is closed", false, name)
    lu.assertTrue(err:find("'" .. name .. "'", 1, true) ~= nil or err:find("'?'", 1, true) ~= nil,
      name .. ": " .. err)
  end
  local spawn_err = raises(function() local x = core:spawn(function() end) return x end)
  lu.assertStrContains(spawn_err, "calling 'spawn' on bad self (core is closed)")
  lu.assertStrContains(spawn_err, "test_contract_audit.lua:")
  lu.assertIsNumber(core:now())
  lu.assertTrue(core:close(), "a second close()")
  lu.assertTrue(t:cancel())
  H.assert_fail("ECLOSED", "listener close", l:close())
  lu.assertEquals(l:port(), port)
  lu.assertTrue(s:closed())
  H.assert_fail("ECLOSED", "send", s:send("x"))
  lu.assertStrContains(tostring(core), "closed")
  local doc = H.read_file(H.root .. "/docs/lua-api.md")
  lu.assertStrContains(doc, "except `now()` (the clock needs no core) and a second `close()`")
end

-- The reference page names every call and option of the API with the
-- spelling scripts use (the stream style's details live on its own page,
-- which the reference links).
function TestContractAudit:test_reference_page_names_every_call_and_option()
  local doc = H.read_file(H.root .. "/docs/lua-api.md")
  if not doc then lu.skip("docs/lua-api.md not found from " .. H.root) end
  local stream = H.read_file(H.root .. "/docs/stream.md")
  lu.assertNotNil(stream, "docs/stream.md")
  for _, name in ipairs {
    "iocore.version", "iocore.backends()", "iocore.core(", "iocore.buffer(str)", "iocore.resolve(name)",
    "iocore.sleep(ms)", "core:backend()", "core:threads()", "core:listen(address", "core:connect(address",
    "core:after(ms, fn)", "core:every(ms, fn)", "core:post(fn)", "core:run([timeout_ms])", "core:stop([grace_ms])",
    "core:stopping()", "core:now()", "core:stats()", "core:on_error(fn)", "core:spawn(fn, ...)", "core:dial(address",
    "core:broadcast(sessions, data)", "l:address()", "l:port()", "l:on_accept(fn)", "l:close()", "s:id()",
    "s:peer()", "s:address()", "s:send(data)", "s:send_frame(payload)", "s:pending()", "s:close()", "s:abort()",
    "s:closed()", "s:shutdown()", "s:pause()", "s:resume()", "s:timeouts{", "s:on_recv(fn)", "s:on_close(fn)",
    "s:on_drain(fn)", "s:on_connect(fn)", "s:on_eof(fn)", "s:read(n)", "s:read()", "s:read_line([max])",
    "s:read_until(delim", "s:write(data)", "timer:cancel()", "[stream.md](stream.md)",
  } do
    lu.assertStrContains(doc, name, false, "docs/lua-api.md names " .. name)
  end
  for _, opt in ipairs { "`threads`", "`backend`", "`signals`", "`handler_timeout`", "`memory_limit`",
                         "`close_timeout`", "`backlog`", "`accepts`", "`reuseport`", "`idle_timeout`",
                         "`max_connections`", "`max_pending`", "`proxy_protocol`", "`handler`", "`framing`",
                         "`write_timeout`", "`read_timeout`", "`connect_timeout`" } do
    lu.assertStrContains(doc, opt, false, "docs/lua-api.md names the option " .. opt)
  end
  for _, name in ipairs { "core:spawn(fn, ...)", "core:dial(address", "iocore.sleep(ms)", "s:read(n)",
                          "s:read_line([max])", "s:read_until(delim[, max])", "s:write(data)", "write_hwm" } do
    lu.assertStrContains(stream, name, false, "docs/stream.md names " .. name)
  end
end
