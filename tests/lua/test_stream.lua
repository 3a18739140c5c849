-- Stream style: listener handlers in coroutines, core:spawn, core:dial,
-- s:read / read_line / read_until / write, iocore.sleep, read time-outs,
-- and the failures (EOF, ETIMEDOUT, ECLOSED, EMSGSIZE, ECONNREFUSED).
local H = require "helpers"
local lu = H.lu
local iocore = H.iocore
require "iocore.stream" -- loaded by the module itself once the binding does it; harmless twice

TestStream = H.class()

-- Listeners of the running test, closed when its body ends.
local listeners = {}

local function listen(core, opts)
  local l = H.listen(core, opts)
  listeners[#listeners + 1] = l
  return l
end

-- A listener whose handler is `fn`; returns its address.
local function serve(core, fn, opts)
  local o = { handler = fn }
  for k, v in pairs(opts or {}) do o[k] = v end
  return listen(core, o):address()
end

-- H.with_core, closing the test's listeners after the body.
local function with_core(opts, body)
  if type(opts) == "function" then opts, body = nil, opts end
  H.with_core(opts, function(core, ctx)
    listeners = {}
    body(core, ctx)
    for _, l in ipairs(listeners) do
      if not tostring(l):find("closed") then l:close() end
    end
    listeners = {}
  end)
end

-- Runs `fn(done)` in a spawned coroutine and the core until it called
-- done(), failing the test on time-out.
local function run_client(core, fn, what, ms)
  local finished = false
  core:spawn(function() fn(function() finished = true end) end)
  H.wait_for(core, function() return finished end, what or "the client coroutine", ms)
end

local drip = H.drip

function TestStream:test_handler_echoes_lines_and_session_closes_when_handler_returns()
  with_core(function(core)
    local addr = serve(core, function(s)
      for _ = 1, 2 do
        local line = assert(s:read_line())
        assert(s:write("<" .. line .. ">\n"))
      end
    end)
    local c = H.client(core, addr, { on_connect = function(c) c.s:send("one\r\ntwo\n") end })
    H.wait_for(core, function() return c.closed end, "the server to close after its handler returned")
    lu.assertEquals(c:data(), "<one>\n<two>\n")
    lu.assertNil(c.close_err)
  end)
end

function TestStream:test_read_n_returns_exactly_n_bytes_however_they_arrive()
  with_core(function(core)
    local got = {}
    local addr = serve(core, function(s)
      got[1] = s:read(5)
      got[2] = s:read(0)
      got[3] = s:read(3)
      got[4] = s:read(1)
    end)
    drip(core, addr, { "ab", "c", "defg", "hi" }, 20)
    H.wait_for(core, function() return got[4] ~= nil end, "the four reads")
    lu.assertEquals(got, { "abcde", "", "fgh", "i" })
  end)
end

function TestStream:test_read_without_count_returns_what_is_available()
  with_core(function(core)
    local got
    local addr = serve(core, function(s)
      got = s:read()
    end)
    H.client(core, addr, { on_connect = function(c) c.s:send("xyz") end })
    H.wait_for(core, function() return got ~= nil end, "read()")
    lu.assertEquals(got, "xyz")
  end)
end

function TestStream:test_read_line_returns_last_unterminated_line_then_eof_and_eof_again()
  with_core(function(core)
    local r = {}
    local addr = serve(core, function(s)
      r[1] = { s:read_line() }
      r[2] = { s:read_line() }
      r[3] = { s:read_line() }
      r[4] = { s:read_line() }
      r[5] = { s:read(4) }
      r[6] = { s:read() }
    end)
    drip(core, addr, { "a\r\n", "tail" }, 20, true)
    H.wait_for(core, function() return r[6] ~= nil end, "the reads")
    lu.assertEquals(r[1], { "a" })
    lu.assertEquals(r[2], { "tail" })
    lu.assertEquals(r[3], { nil, "EOF: end of stream", "EOF", "" })
    lu.assertEquals(r[4], { nil, "EOF: end of stream", "EOF", "" })
    lu.assertEquals(r[5], { nil, "EOF: end of stream", "EOF", "" })
    lu.assertEquals(r[6], { nil, "EOF: end of stream", "EOF", "" })
  end)
end

function TestStream:test_read_n_at_eof_returns_the_partial_bytes()
  with_core(function(core)
    local r
    local addr = serve(core, function(s) r = { s:read(10) } end)
    drip(core, addr, { "abc" }, 20, true)
    H.wait_for(core, function() return r ~= nil end, "read(10)")
    lu.assertEquals(r, { nil, "EOF: end of stream", "EOF", "abc" })
  end)
end

function TestStream:test_read_until_finds_a_delimiter_split_across_chunks()
  with_core(function(core)
    local r = {}
    local addr = serve(core, function(s)
      r[1] = s:read_until("\r\n\r\n")
      r[2] = s:read_until("--")
      r[3] = { s:read_until("--") }
    end)
    drip(core, addr, { "GET / HTTP/1.1\r", "\nHost: x\r\n\r", "\nbody-", "-rest" }, 20, true)
    H.wait_for(core, function() return r[3] ~= nil end, "the reads")
    lu.assertEquals(r[1], "GET / HTTP/1.1\r\nHost: x")
    lu.assertEquals(r[2], "body")
    lu.assertEquals(r[3], { nil, "EOF: end of stream", "EOF", "rest" })
  end)
end

-- A long line in many small pieces: only each new piece is searched (no
-- re-join per piece), and the line comes out whole.
function TestStream:test_read_line_assembles_a_long_line_from_many_pieces()
  with_core(function(core)
    local line = H.payload(48 * 1024, 7):gsub("[\r\n]", "x")
    local got
    local addr = serve(core, function(s) got = s:read_line() end)
    local pieces = {}
    for i = 1, #line, 700 do pieces[#pieces + 1] = line:sub(i, i + 699) end
    pieces[#pieces + 1] = "\n"
    local c = H.client(core, addr, {
      on_connect = function(c) for _, p in ipairs(pieces) do c.s:send(p) end end,
    })
    H.wait_for(core, function() return got ~= nil end, "the long line")
    lu.assertEquals(#got, #line)
    lu.assertTrue(got == line, "the line came out changed")
    c.s:close()
  end)
end

function TestStream:test_read_line_longer_than_max_is_emsgsize_and_closes_the_session()
  with_core(function(core)
    local r, r2
    local addr = serve(core, function(s)
      r = { s:read_line(10) }
      r2 = { s:read_line() }
    end)
    local c = H.client(core, addr, { on_connect = function(c) c.s:send("0123456789ABC") end })
    H.wait_for(core, function() return c.closed end, "the session to close")
    lu.assertNil(r[1])
    H.assert_msg(r[2], "EMSGSIZE")
    lu.assertEquals(r[3], "EMSGSIZE")
    lu.assertEquals(r2, { nil, "ECLOSED: session is closing or closed", "ECLOSED", "" })
  end)
end

function TestStream:test_read_until_max_counts_bytes_before_the_delimiter()
  with_core(function(core)
    local r = {}
    local addr = serve(core, function(s)
      r[1] = s:read_until("|", 3)
      r[2] = { s:read_until("|", 3) }
    end)
    H.client(core, addr, { on_connect = function(c) c.s:send("abc|abcd|") end })
    H.wait_for(core, function() return r[2] ~= nil end, "the reads")
    lu.assertEquals(r[1], "abc")
    lu.assertEquals(r[2][3], "EMSGSIZE")
  end)
end

-- The read time-out does not close: the partial bytes are handed back and
-- the next read goes on with what arrives later.
function TestStream:test_read_timeout_returns_partial_and_keeps_the_session_open()
  with_core(function(core)
    local r = {}
    local addr = serve(core, function(s)
      -- (time-outs before "ab" arrived, on a loaded machine, return "": read on)
      local partials = {}
      repeat
        r[1] = { s:read_line() }
        partials[#partials + 1] = r[1][4]
      until r[1][1] or table.concat(partials) == "ab"
      r[1][4] = table.concat(partials)
      s:timeouts { read = 60000 } -- (the rest of the test may be slow on a loaded machine)
      r[2] = { s:read_line() }
      assert(s:write("still open\n"))
    end, { read_timeout = 100 })
    local c = drip(core, addr, { "ab" }, 20)
    H.wait_for(core, function() return r[1] ~= nil end, "the read time-out")
    lu.assertEquals(r[1], { nil, "ETIMEDOUT: read timed out", "ETIMEDOUT", "ab" })
    c.s:send("cd\n")
    H.wait_for(core, function() return c.closed end, "the handler to finish")
    lu.assertEquals(r[2], { "cd" })
    lu.assertEquals(c:data(), "still open\n")
  end)
end

function TestStream:test_timeouts_read_sets_the_read_timeout_of_one_session()
  with_core(function(core)
    local r
    local addr = serve(core, function(s)
      local first = s:read(1) -- "x"; the "y" came with it
      lu.assertIs(s:timeouts { read = 50 }, s)
      r = { first, s:read(4) }
    end)
    local c = drip(core, addr, { "xy" }, 20)
    H.wait_for(core, function() return r ~= nil end, "the read time-out")
    lu.assertEquals(r, { "x", nil, "ETIMEDOUT: read timed out", "ETIMEDOUT", "y" })
    c.s:close()
  end)
end

function TestStream:test_read_after_this_side_closed_is_eclosed()
  with_core(function(core)
    local r
    local addr = serve(core, function(s)
      s:close()
      r = { s:read_line() }
    end)
    local c = H.client(core, addr)
    H.wait_for(core, function() return r ~= nil and c.closed end, "the read")
    lu.assertEquals(r, { nil, "ECLOSED: session is closing or closed", "ECLOSED", "" })
  end)
end

-- A reader parked in one coroutine is woken with ECLOSED when another
-- closes the session.
function TestStream:test_closing_wakes_a_reader_parked_in_another_coroutine()
  with_core(function(core)
    local r
    local addr = serve(core, function(s)
      core:spawn(function()
        iocore.sleep(30)
        s:close()
      end)
      r = { s:read(1) }
    end)
    local c = H.client(core, addr)
    H.wait_for(core, function() return r ~= nil and c.closed end, "the parked read to end")
    lu.assertEquals(r, { nil, "ECLOSED: session is closing or closed", "ECLOSED", "" })
  end)
end

function TestStream:test_reset_by_the_peer_is_reported_with_its_code()
  with_core(function(core)
    local r
    local addr = serve(core, function(s) r = { s:read(100) } end)
    local c = H.client(core, addr, { on_connect = function(c) c.s:send("abc") end })
    H.wait_for(core, function() return core:stats().bytes_in >= 3 end, "the bytes to arrive")
    c.s:abort()
    H.wait_for(core, function() return r ~= nil end, "the read to fail")
    lu.assertNil(r[1])
    lu.assertNotEquals(r[3], "EOF", "a reset is not an end of stream")
    H.assert_msg(r[2], r[3])
    lu.assertEquals(r[4], "abc")
  end)
end

-- write() yields while more than write_hwm is queued: with a reader that
-- reads nothing for a while, the queue stays near the mark instead of
-- taking the whole payload, and every byte arrives in the end.
function TestStream:test_write_yields_above_write_hwm_until_a_slow_reader_catches_up()
  with_core(function(core)
    local total, chunk, hwm = 8 * 1024 * 1024, 64 * 1024, 256 * 1024
    local max_after, written, done = 0, 0, false
    local l = listen(core, {
      write_hwm = hwm,
      handler = function(s)
        local block = ("x"):rep(chunk)
        while written < total do
          assert(s:write(block))
          written = written + chunk
          local p = s:pending()
          if p > max_after then max_after = p end
        end
        done = true
      end,
    })
    local reader = H.slow_reader(l:port(), 1)
    H.wait_for(core, function() return done end, "the writes", 60000)
    H.wait_for(core, function() return reader:exited() end, "the reader to get everything", 60000)
    lu.assertEquals(reader:received(), total)
    lu.assertTrue(max_after <= hwm + chunk,
      ("pending() after a write returned was %d, above write_hwm + one chunk"):format(max_after))
  end)
end

function TestStream:test_write_to_a_closed_session_is_eclosed()
  with_core(function(core)
    local r
    local addr = serve(core, function(s)
      s:close()
      r = { s:write("x") }
    end)
    H.client(core, addr)
    H.wait_for(core, function() return r ~= nil end, "the write")
    lu.assertEquals(r, { nil, "ECLOSED: session is closing or closed", "ECLOSED" })
  end)
end

function TestStream:test_dial_connects_and_returns_a_stream_session()
  with_core(function(core)
    local addr = serve(core, function(s) s:write("hi " .. s:read_line() .. "\n") end)
    local got
    run_client(core, function(done)
      local s = assert(core:dial(addr))
      assert(s:write("bob\n"))
      got = { s:read_line() }
      got[2] = { s:read_line() }
      s:close() -- a dialed session is the script's to close
      done()
    end)
    lu.assertEquals(got[1], "hi bob")
    lu.assertEquals(got[2], { nil, "EOF: end of stream", "EOF", "" })
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

function TestStream:test_dial_to_a_refused_port_is_econnrefused()
  local addr = "127.0.0.1:" .. closed_port()
  with_core(function(core)
    local r
    run_client(core, function(done)
      r = { core:dial(addr) }
      done()
    end)
    lu.assertNil(r[1])
    lu.assertEquals(r[3], "ECONNREFUSED")
    H.assert_msg(r[2], "ECONNREFUSED")
  end)
end

function TestStream:test_dial_to_a_malformed_address_is_einval()
  with_core(function(core)
    local r
    run_client(core, function(done)
      r = { core:dial("1.2.3.256:80") }
      done()
    end)
    lu.assertEquals(r, { nil, "EINVAL: invalid argument", "EINVAL" })
  end)
end

function TestStream:test_stream_calls_outside_a_coroutine_raise()
  with_core(function(core)
    local s = assert(core:connect(listen(core, { handler = function() end }):address()))
    for name, call in pairs {
      read = function() return s:read(1) end,
      read_line = function() return s:read_line() end,
      read_until = function() return s:read_until("x") end,
      write = function() return s:write("x") end,
      dial = function() return core:dial("127.0.0.1:1") end,
      sleep = function() return iocore.sleep(1) end,
    } do
      local ok, err = pcall(call)
      lu.assertFalse(ok, name .. " outside a coroutine did not raise")
      lu.assertStrContains(err, "not inside an iocore coroutine", false, name)
    end
    -- nor inside a coroutine of the script's own
    local co = coroutine.wrap(function() return pcall(s.read, s, 1) end)
    local ok, err = co()
    lu.assertFalse(ok)
    lu.assertStrContains(err, "not inside an iocore coroutine")
    s:close()
    H.wait_for(core, function() return core:stats().active == 0 end, "the sessions to close")
  end)
end

function TestStream:test_reading_a_session_that_has_on_recv_raises()
  with_core(function(core, ctx)
    ctx.allow_errors = true
    local addr = listen(core, {
      on_recv = function() end,
      on_accept = function(s)
        core:spawn(function() s:read_line() end)
      end,
    }):address()
    local c = H.client(core, addr)
    H.wait_for(core, function() return #ctx.errors > 0 end, "the error")
    lu.assertStrContains(ctx.errors[1].msg, "on_recv handler (callback style)")
    c.s:close()
  end)
end

function TestStream:test_setting_on_recv_on_a_stream_session_raises()
  with_core(function(core)
    local ok, err
    local addr = serve(core, function(s) ok, err = pcall(s.on_recv, s, function() end) end)
    H.client(core, addr)
    H.wait_for(core, function() return ok ~= nil end, "the handler")
    lu.assertFalse(ok)
    lu.assertStrContains(err, "stream style")
  end)
end

function TestStream:test_misuse_raises_argument_errors()
  with_core(function(core)
    local errs = {}
    local addr = serve(core, function(s)
      for name, call in pairs {
        read_negative = function() return s:read(-1) end,
        read_string = function() return s:read("*l") end,
        read_line_zero = function() return s:read_line(0) end,
        read_until_empty = function() return s:read_until("") end,
        read_until_nil = function() return s:read_until() end,
        sleep_string = function() return iocore.sleep("x") end,
        spawn_nil = function() return core:spawn(nil) end,
      } do
        local ok, err = pcall(call)
        errs[name] = ok and "did not raise" or err
      end
    end)
    H.client(core, addr)
    H.wait_for(core, function() return errs.spawn_nil ~= nil end, "the calls")
    for name, err in pairs(errs) do
      lu.assertStrContains(err, "bad argument", false, name)
    end
    local ok, err = pcall(core.listen, core, "127.0.0.1:0", { handler = 42 })
    lu.assertFalse(ok)
    lu.assertStrContains(err, "field 'handler' must be a function")
    ok, err = pcall(core.listen, core, "127.0.0.1:0", { handler = print, on_recv = print })
    lu.assertFalse(ok)
    lu.assertStrContains(err, "exclude each other")
  end)
end

-- Even when the second reader's data is already there.
function TestStream:test_a_second_reader_raises_even_with_data_buffered()
  with_core(function(core)
    local err
    local addr = serve(core, function(s)
      core:spawn(function()
        iocore.sleep(50) -- the first reader is parked on read(100) by now; "line\n" has arrived
        local ok, e = pcall(s.read_line, s)
        err = ok and "did not raise" or e
        s:close()
      end)
      s:read(100)
    end)
    local c = H.client(core, addr, { on_connect = function(c) c.s:send("line\n") end })
    H.wait_for(core, function() return err ~= nil and c.closed end, "the second reader")
    lu.assertStrContains(err, "another coroutine is already reading")
  end)
end

function TestStream:test_two_coroutines_reading_one_session_raise()
  with_core(function(core)
    local err
    local addr = serve(core, function(s)
      core:spawn(function()
        local ok, e = pcall(s.read, s, 1)
        err = ok and "did not raise" or e
        s:close()
      end)
      s:read(1)
    end)
    H.client(core, addr)
    H.wait_for(core, function() return err ~= nil end, "the second reader")
    lu.assertStrContains(err, "another coroutine is already reading")
  end)
end

function TestStream:test_handler_error_goes_to_on_error_and_aborts_only_that_session()
  with_core(function(core, ctx)
    ctx.allow_errors = true
    local addr = serve(core, function(s)
      local line = s:read_line()
      if line == "boom" then error("handler exploded") end
      s:write("ok\n")
    end)
    local bad = H.client(core, addr, { on_connect = function(c) c.s:send("boom\n") end })
    local good = H.client(core, addr, { on_connect = function(c) c.s:send("fine\n") end })
    H.wait_for(core, function() return bad.closed and good.closed end, "both sessions to end")
    lu.assertEquals(#ctx.errors, 1)
    lu.assertStrContains(ctx.errors[1].msg, "handler exploded")
    lu.assertStrContains(ctx.errors[1].msg, "stack traceback")
    lu.assertNotNil(ctx.errors[1].session, "on_error got no session")
    lu.assertEquals(ctx.errors[1].session:peer(), bad.s:address(), "on_error got another session")
    lu.assertEquals(good:data(), "ok\n")
    lu.assertEquals(bad:data(), "")
    lu.assertTrue(core:stats().handler_errors >= 1)
  end)
end

-- A coroutine that never yields is interrupted by handler_timeout like any
-- handler; the core goes on serving.
function TestStream:test_coroutine_that_never_yields_is_interrupted_by_handler_timeout()
  if not debug.getupvalue(coroutine.resume, 1) then
    lu.skip("this build's binding does not put resumed coroutines under handler_timeout yet")
  end
  with_core({ handler_timeout = 200 }, function(core, ctx)
    ctx.allow_errors = true
    local addr = serve(core, function(s)
      if s:read_line() == "spin" then
        while true do end
      end
      s:write("alive\n")
    end)
    local spin = H.client(core, addr, { on_connect = function(c) c.s:send("spin\n") end })
    H.wait_for(core, function() return spin.closed end, "the runaway to be interrupted", 20000)
    local ok = H.client(core, addr, { on_connect = function(c) c.s:send("hi\n") end })
    H.wait_for(core, function() return ok.closed end, "the next session")
    lu.assertEquals(ok:data(), "alive\n")
    lu.assertTrue(#ctx.errors >= 1)
    lu.assertStrContains(ctx.errors[1].msg, "ETIMEDOUT")
  end)
end

-- A handler parked in a read is resumed straight from C when its data
-- comes (not through a Lua on_recv and coroutine.resume), and what follows
-- is what follows any wake: a handler that returns closes its session, an
-- error is reported with its traceback and aborts that session only, and a
-- runaway is interrupted by handler_timeout.
function TestStream:test_a_parked_handler_woken_by_data_returns_fails_and_times_out_like_any()
  with_core({ handler_timeout = 300 }, function(core, ctx)
    ctx.allow_errors = true
    local parked = 0
    local addr = serve(core, function(s)
      parked = parked + 1
      local line = s:read_line()
      if line == "boom" then error("exploded after a wake") end
      if line == "spin" then while true do end end
      s:write("ok " .. line .. "\n")
    end)
    local fine, bad, spin = H.client(core, addr), H.client(core, addr), H.client(core, addr)
    H.wait_for(core, function() return parked == 3 and fine.connected and bad.connected and spin.connected end,
      "three handlers parked")
    local resume, resumes = coroutine.resume, 0
    coroutine.resume = function(...)
      resumes = resumes + 1
      return resume(...)
    end
    local ok, err = pcall(function()
      fine.s:send("fine\n")
      bad.s:send("boom\n")
      spin.s:send("spin\n")
      H.wait_for(core, function() return fine.closed and bad.closed and spin.closed end, "the three sessions to end",
        20000)
    end)
    coroutine.resume = resume
    assert(ok, err)
    lu.assertEquals(resumes, 0, "a parked handler was woken through coroutine.resume")
    lu.assertEquals(fine:data(), "ok fine\n")
    lu.assertEquals(bad:data(), "")
    lu.assertEquals(spin:data(), "")
    lu.assertEquals(#ctx.errors, 2)
    local boom, timeout
    for _, e in ipairs(ctx.errors) do
      if e.msg:find("exploded after a wake", 1, true) then boom = e end
      if e.msg:find("ETIMEDOUT", 1, true) then timeout = e end
    end
    lu.assertNotNil(boom, "the handler's error was not reported")
    lu.assertStrContains(boom.msg, "stack traceback")
    lu.assertEquals(boom.session:peer(), bad.s:address(), "on_error got another session")
    lu.assertNotNil(timeout, "the runaway was not interrupted")
  end)
end

function TestStream:test_spawn_runs_fn_with_its_arguments_and_reports_errors()
  with_core(function(core, ctx)
    ctx.allow_errors = true
    local got
    lu.assertTrue(core:spawn(function(a, b, c) got = { a, b, c } end, 1, nil, "three"))
    core:spawn(function() error("spawned failure") end)
    H.wait_for(core, function() return got ~= nil and #ctx.errors == 1 end, "both coroutines")
    lu.assertEquals(got, { 1, nil, "three" })
    lu.assertStrContains(ctx.errors[1].msg, "spawned failure")
  end)
end

function TestStream:test_sleep_resumes_in_deadline_order()
  with_core(function(core)
    local order = {}
    for _, ms in ipairs { 60, 0, 20 } do
      core:spawn(function()
        lu.assertTrue(iocore.sleep(ms))
        order[#order + 1] = ms
      end)
    end
    H.wait_for(core, function() return #order == 3 end, "the sleepers")
    lu.assertEquals(order, { 0, 20, 60 })
  end)
end

function TestStream:test_on_accept_runs_before_the_handler_and_may_refuse()
  with_core(function(core)
    local events, n = {}, 0
    local addr = serve(core, function(s)
      events[#events + 1] = "handler " .. s.tag
      s:write("welcome\n")
    end, {
      on_accept = function(s)
        n = n + 1
        s.tag = n
        events[#events + 1] = "accept " .. n
        if n == 2 then s:close() end
      end,
    })
    local a = H.client(core, addr)
    H.wait_for(core, function() return a.closed end, "the first session")
    local b = H.client(core, addr)
    H.wait_for(core, function() return b.closed end, "the second session")
    lu.assertEquals(events, { "accept 1", "handler 1", "accept 2" })
    lu.assertEquals(a:data(), "welcome\n")
    lu.assertEquals(b:data(), "")
  end)
end

function TestStream:test_on_close_of_a_stream_session_still_runs()
  with_core(function(core)
    local closes = {}
    local addr = serve(core, function(s)
      s:on_close(function(_, err) closes[#closes + 1] = "own " .. tostring(err) end)
      s:read_line()
    end, { on_close = function(_, err) closes[#closes + 1] = "listener " .. tostring(err) end })
    local c = drip(core, addr, { "x\n" }, 10)
    H.wait_for(core, function() return #closes > 0 end, "on_close")
    lu.assertEquals(closes, { "own nil" })
    c.s:close()
  end)
end

-- The client side of the parked-sessions test, in its own process so the
-- memory measured is the server's alone: connects N sessions, says so,
-- waits for the file `go` to exist, then sends one line on each and checks
-- the echo; prints "served N" at the end.
local PARKED_CLIENT = [[
local iocore = require "iocore"
local port, n, go = tonumber(arg[1]), tonumber(arg[2]), arg[3]
local core = assert(iocore.core { threads = 1, signals = false })
local sessions, connected, ok = {}, 0, 0
for i = 1, n do
  local got = ""
  sessions[i] = assert(core:connect("127.0.0.1:" .. port, {
    on_connect = function(s, err)
      assert(not err, err)
      connected = connected + 1
      if connected == n then io.write("connected\n"); io.flush() end
    end,
    on_recv = function(s, data)
      got = got .. data
      if got == "n" .. i .. "\n" then ok = ok + 1; s:close() end
    end,
    on_close = function() if i == n or ok == n then end end,
  }))
end
local sent = false
core:every(20, function(t)
  if not sent and io.open(go) then
    sent = true
    for i = 1, n do sessions[i]:send("n" .. i .. "\n") end
  end
  if ok == n then t:cancel(); core:stop() end
end)
core:run(120000)
io.write("served ", ok, "\n")
]]

-- The handler the memory tests park: one line read, echoed.
local function echo_one_line(s)
  local line = s:read_line()
  s:write(line .. "\n")
end

-- N sessions of a listener whose handler is `handler`, parked in
-- read_line by a client process; the Lua memory each costs the server
-- (collected, so garbage is not counted). They are then served and end.
-- `on_parked(served)`, if given, runs while they are all parked, before
-- the client sends anything (served: the handlers finished so far). With a
-- core that has a memory_limit, also returns the bytes each holds through
-- the Lua allocator outside Lua's own objects (the C receive buffers).
local function parked_bytes_each(core, N, handler, on_parked)
  local parked, served = 0, 0
  local addr = serve(core, function(s)
    parked = parked + 1
    handler(s)
    served = served + 1
  end)
  local script, go = os.tmpname(), os.tmpname()
  os.remove(go)
  local f = assert(io.open(script, "w"))
  f:write(PARKED_CLIENT)
  f:close()
  collectgarbage()
  collectgarbage()
  local before, before_all = collectgarbage("count"), core:stats().memory
  local p = H.spawn(script, addr:match(":(%d+)$"), tostring(N), go)
  H.wait_output(core, p, "connected", 60000)
  H.wait_for(core, function() return parked == N end, "all sessions parked", 60000)
  collectgarbage()
  collectgarbage()
  local per = (collectgarbage("count") - before) * 1024 / N
  local c_per = (core:stats().memory - before_all) / N - per
  if on_parked then on_parked(served) end
  assert(io.open(go, "w")):close()
  H.wait_output(core, p, "served (%d+)", 60000)
  os.remove(go)
  os.remove(script)
  lu.assertEquals(p:output():match("served (%d+)"), tostring(N))
  H.wait_for(core, function() return served == N end, "every handler to finish", 60000)
  return per, c_per
end

-- 1,000 sessions parked in read_line cost memory only (no worker); each is
-- then served. The Lua memory per parked session is printed, not asserted.
function TestStream:test_thousand_sessions_parked_in_read_line()
  with_core(function(core)
    local N = 1000
    local per = parked_bytes_each(core, N, echo_one_line, function(served) lu.assertEquals(served, 0) end)
    print(("    %d sessions parked in read_line: %.0f bytes of Lua memory each (server side, %s)"):format(
      N, per, core:backend()))
  end)
end

-- The Lua memory of N coroutines each parked the way a handler parks in
-- s:read_line(): `handler`'s frame, then a C function's (coroutine.yield
-- standing in for read_line), with nothing else of iocore's.
local function bare_parked_bytes_each(N, handler)
  local fake = { read_line = coroutine.yield, write = function() end }
  local cos = {}
  collectgarbage()
  collectgarbage()
  local before = collectgarbage("count")
  for i = 1, N do
    cos[i] = coroutine.create(handler)
    assert(coroutine.resume(cos[i], fake))
  end
  collectgarbage()
  collectgarbage()
  return (collectgarbage("count") - before) * 1024 / N
end

-- A handler session parked in read_line costs its coroutine, its session
-- object (user values included) and the table entries that find them: no
-- stream state table per session, no spare call frame. (When the stream
-- state was a Lua table per session, the same sessions cost ~225 bytes
-- more each.) The receive buffer's C state is not Lua memory: not counted.
function TestStream:test_a_parked_handler_session_costs_little_more_than_its_coroutine()
  with_core(function(core)
    local N = 1000
    local handler = echo_one_line
    local parked = parked_bytes_each(core, N, handler)
    local bare = bare_parked_bytes_each(N, handler)
    local extra = parked - bare
    print(("    a parked handler session: %.0f bytes of Lua memory, %.0f of them beyond its coroutine"):format(
      parked, extra))
    -- the session object with its three user values is ~152 bytes; the
    -- sessions and owners tables' entries 24-48 bytes each
    lu.assertTrue(extra < 360, ("%.0f bytes beyond the coroutine per parked session"):format(extra))
  end)
end

-- The C state of a parked session's receive buffer (from the Lua
-- allocator: memory_limit covers it) is small: no bytes are held while it
-- waits on an empty buffer, and a short delimiter is kept in the room of
-- the pointer to a long one (it was 104 bytes with room for both).
function TestStream:test_a_parked_session_holds_at_most_88_bytes_of_c_state()
  with_core({ memory_limit = 512 * 1024 * 1024 }, function(core)
    local _, c_each = parked_bytes_each(core, 500, echo_one_line)
    print(("    a parked session: %.0f bytes of C state from the Lua allocator"):format(c_each))
    lu.assertTrue(c_each <= 88, ("%.0f bytes of C state per parked session"):format(c_each))
  end)
end

-- A method call on a session (s:read_line()) looks the method up without
-- growing the coroutine's stack: a parked handler whose function has a
-- large frame (16 slots) costs about what one with a small frame does.
-- (A C __index runs at the top of the caller's frame and needs 20 free
-- slots there: it doubled such a coroutine's stack, 640 bytes more each.)
function TestStream:test_a_parked_handler_with_a_large_frame_costs_what_a_small_one_does()
  with_core(function(core)
    local N = 200
    local small = parked_bytes_each(core, N, echo_one_line)
    local large = parked_bytes_each(core, N, function(s)
      local line = s:read_line()
      local a, b, c, d, e, f, g, h, i, j, k, l, m, n = 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14
      if a + b + c + d + e + f + g + h + i + j + k + l + m + n < 0 then error("unreachable") end
      s:write(line .. "\n")
    end)
    print(("    parked sessions: %.0f bytes of Lua memory each with a small handler frame, %.0f with a large one")
      :format(small, large))
    lu.assertTrue(large - small < 320, ("a large handler frame costs %.0f bytes more per parked session"):format(large - small))
  end)
end

-- A session that carries user fields (which changes how its methods are
-- found) reads, writes, pauses and is broadcast to like one without; a
-- field never hides a method, and an unset field reads nil on both.
function TestStream:test_a_session_with_user_fields_works_like_one_without()
  with_core(function(core)
    local sessions, lines = {}, {}
    local addr = serve(core, function(s)
      lu.assertNil(s.name)
      if #sessions == 0 then
        s.name, s.read_line = "first", "not a method"
        lu.assertIsFunction(s.read_line)
      end
      sessions[#sessions + 1] = s
      s:pause()
      s:resume()
      for _ = 1, 2 do
        local line = assert(s:read_line())
        lines[#lines + 1] = (s.name or "plain") .. ":" .. line
      end
      assert(s:write("done\n"))
    end)
    local a = H.client(core, addr, { on_connect = function(c) c.s:send("a1\n") end })
    H.wait_for(core, function() return #lines == 1 end, "the first session's first line")
    local b = H.client(core, addr, { on_connect = function(c) c.s:send("b1\n") end })
    H.wait_for(core, function() return #lines == 2 end, "the second session's first line")
    lu.assertEquals(core:broadcast(sessions, "hello\n"), 2)
    a.s:send("a2\n")
    b.s:send("b2\n")
    H.wait_for(core, function() return a.closed and b.closed end, "both handlers to end")
    table.sort(lines)
    lu.assertEquals(lines, { "first:a1", "first:a2", "plain:b1", "plain:b2" })
    lu.assertEquals(a:data(), "hello\ndone\n")
    lu.assertEquals(b:data(), "hello\ndone\n")
    lu.assertStrContains(tostring(sessions[1]), "iocore.session")
  end)
end

-- The methods the stream layer wraps (listen, on_accept, on_recv,
-- on_close, on_drain, close, abort) raise the binding's messages, naming
-- the method and the argument, for callback-style objects too.
function TestStream:test_wrapped_methods_keep_their_misuse_messages()
  with_core(function(core)
    local l = listen(core)
    local s = assert(core:connect(l:address()))
    local function raises(f)
      local ok, err = pcall(f)
      lu.assertFalse(ok, "did not raise")
      return err
    end
    lu.assertStrContains(raises(function() return core:listen(42) end), "bad argument #1 to 'listen' (string expected")
    lu.assertStrContains(raises(function() return core:listen("127.0.0.1:0", 5) end), "bad argument #2 to 'listen'")
    lu.assertStrContains(raises(function() return core.listen(42, "x") end), "calling 'listen' on bad self")
    lu.assertStrContains(raises(function() return l:on_accept(1) end), "bad argument #1 to 'on_accept'")
    for _, name in ipairs { "on_recv", "on_close", "on_drain" } do
      lu.assertStrContains(raises(function() return s[name](s, 1) end),
        ("bad argument #1 to '%s' (function expected, got number)"):format(name))
      lu.assertStrContains(raises(function() return s[name](core, print) end),
        ("calling '%s' on bad self (iocore.session expected, got iocore.core)"):format(name))
    end
    lu.assertStrContains(raises(function() return s.close(42) end), "calling 'close' on bad self")
    lu.assertStrContains(raises(function() return s.abort(l) end), "calling 'abort' on bad self")
    lu.assertStrContains(raises(function() return s:timeouts(5) end), "bad argument #1 to 'timeouts'")
    s:close()
    H.wait_for(core, function() return core:stats().active == 0 end, "the sessions to close")
  end)
end

-- require "iocore" alone brings the stream style when lua/iocore/stream.lua
-- is on package.path, and works without it when it is not.
function TestStream:test_require_iocore_loads_the_stream_part_when_installed()
  if H.windows then lu.skip("it sets LUA_PATH for a child interpreter through env(1)") end
  local code = 'local i = require "iocore"; local c = i.core { threads = 1, signals = false }; ' ..
      'print("sleep=" .. tostring(i.sleep ~= nil) .. " spawn=" .. tostring(c.spawn ~= nil)); c:close()'
  local with = H.spawn_argv { "env", "LUA_PATH=" .. H.root .. "/lua/?.lua;;", H.lua, "-e", code }
  local without = H.spawn_argv { "env", "LUA_PATH=/nonexistent/?.lua", H.lua, "-e", code }
  H.wait_output(nil, with, "sleep=%a+ spawn=%a+", 20000)
  H.wait_output(nil, without, "sleep=%a+ spawn=%a+", 20000)
  lu.assertStrContains(with:output(), "sleep=true spawn=true")
  lu.assertStrContains(without:output(), "sleep=false spawn=false")
end

-- The numbers docs/stream.md states are the module's.
function TestStream:test_docs_numbers_are_the_module_limits()
  local limits = require("iocore.stream").limits
  local doc = assert(H.read_file(H.root .. "/docs/stream.md"))
  lu.assertEquals(limits.max, 65536)
  lu.assertStrContains(doc, "`max` (default 65536)")
  lu.assertEquals(limits.read_ahead, 64 * 1024)
  lu.assertStrContains(doc, "up to 64 KiB\n(65536 bytes) are read ahead")
  lu.assertEquals(limits.write_hwm, 256 * 1024)
  lu.assertStrContains(doc, "default 256 KiB, 262144 bytes")
end

local function binding_has(method)
  return debug.getregistry()["iocore.session"] and require("iocore.stream") and
      (function()
        local idx = debug.getregistry()["iocore.session"].__index
        local m = idx
        if type(idx) == "function" then _, m = debug.getupvalue(idx, 1) end
        return type(m) == "table" and m[method] ~= nil
      end)()
end

-- While nobody reads, a stream session reads ahead a bounded amount and
-- is then paused: the peer is held back by TCP, not buffered in Lua. (The
-- first 256 KiB make it pause; what was read of the next 4 MiB after that
-- is what the pause let through.)
function TestStream:test_unread_data_is_read_ahead_only_up_to_a_bound()
  if not binding_has("pause") then lu.skip("this build's binding has no s:pause() yet") end
  with_core(function(core)
    local first, second = H.payload(256 * 1024, 4), H.payload(4 * 1024 * 1024, 5)
    local got, start = nil, false
    local addr = serve(core, function(s)
      while not start do iocore.sleep(20) end
      got = assert(s:read(#first + #second))
    end)
    local c = H.client(core, addr, { on_connect = function(c) c.s:send(first) end })
    H.wait_for(core, function() return core:stats().bytes_in >= 64 * 1024 end, "the first bytes")
    H.wait(core, function() return false end, 1000) -- the pause takes effect
    local before = core:stats().bytes_in
    c.s:send(second)
    H.wait(core, function() return false end, 1000)
    local through = core:stats().bytes_in - before
    lu.assertTrue(through < 1024 * 1024,
      ("%d bytes read after the session should have paused"):format(through))
    start = true
    H.wait_for(core, function() return got ~= nil end, "the handler's read", 30000)
    lu.assertTrue(got == first .. second, "the bytes came out changed")
    c.s:close()
  end)
end

-- A session of a callback listener without on_recv can be read from a
-- coroutine spawned in on_accept: what arrives meanwhile is held for it.
function TestStream:test_a_callback_session_without_on_recv_can_be_read_in_stream_style()
  if not binding_has("pause") then
    lu.skip("this build's binding does not hold data for a session without on_recv yet")
  end
  with_core(function(core)
    local got
    local l = listen(core, {
      on_accept = function(s)
        core:spawn(function()
          got = { s:read_line() }
          s:write("thanks\n")
          s:close()
        end)
      end,
    })
    local c = H.client(core, l:address(), { on_connect = function(c) c.s:send("first line\n") end })
    H.wait_for(core, function() return c.closed end, "the exchange")
    lu.assertEquals(got, { "first line" })
    lu.assertEquals(c:data(), "thanks\n")
  end)
end

-- A listener whose accept queue is full answers no SYN: a connect to it
-- hangs. (python3: a socket with backlog 0 that never accepts, filled by
-- two connections of its own; it prints its port, lives 30 s at most.)
local SILENT_LISTENER = [[
import socket, time
l = socket.socket(); l.bind(("127.0.0.1", 0)); l.listen(0)
fill = []
for i in range(2):
    c = socket.socket(); c.setblocking(False)
    try: c.connect(l.getsockname())
    except BlockingIOError: pass
    fill.append(c)
time.sleep(0.3)
print("port", l.getsockname()[1], flush=True)
time.sleep(30)
]]

-- A connect that gets no answer ends with the connect time-out's code.
function TestStream:test_dial_with_connect_timeout_to_a_silent_listener_is_etimedout()
  if not binding_has("pause") then lu.skip("this build's binding has no connect_timeout yet") end
  if not H.shell_ok("command -v python3 >/dev/null 2>&1") then lu.skip("python3 is not installed") end
  with_core(function(core)
    local p = H.spawn_argv { "python3", "-c", SILENT_LISTENER }
    local port = H.wait_output(core, p, "port (%d+)", 20000)
    local r
    run_client(core, function(done)
      r = { core:dial("127.0.0.1:" .. port, { connect_timeout = 300 }) }
      if r[1] then r[1]:close() end
      done()
    end, "the dial", 20000)
    p:kill("KILL")
    lu.assertNil(r[1], "the connect was answered: the listener's queue was not full")
    lu.assertEquals(r[3], "ETIMEDOUT")
    H.assert_msg(r[2], "ETIMEDOUT")
  end)
end

-- A name that cannot resolve (.invalid never does, RFC 6761).
function TestStream:test_dial_to_an_unresolvable_name_fails_with_a_code()
  with_core(function(core)
    local r
    run_client(core, function(done)
      r = { core:dial("no-such-host.invalid:80") }
      done()
    end, "the dial", 30000)
    lu.assertNil(r[1])
    if r[3] == "EINVAL" then
      lu.skip("this build's binding does not resolve host names yet (EINVAL)")
    end
    lu.assertEquals(r[3], "ENOTFOUND")
    H.assert_msg(r[2], "ENOTFOUND")
  end)
end

-- A writer waiting above write_hwm learns when the peer goes away.
function TestStream:test_a_write_waiting_above_write_hwm_fails_when_the_peer_dies()
  with_core(function(core)
    local r, waiting = nil, false
    local l = listen(core, {
      write_hwm = 64 * 1024,
      handler = function(s)
        local block = ("y"):rep(64 * 1024)
        for _ = 1, 1000 do
          waiting = true
          local ok, msg, code = s:write(block)
          if not ok then r = { ok, msg, code } return end
        end
        r = { "wrote everything" }
      end,
    })
    if not H.shell_ok("command -v python3 >/dev/null 2>&1") then lu.skip("python3 is not installed") end
    -- a client that reads nothing, in one process (its socket dies with it)
    local reader = H.spawn_argv { "python3", "-c", ("import socket, time\n"
      .. "s = socket.create_connection(('127.0.0.1', %d))\nprint('connected', flush=True)\ntime.sleep(30)\n")
      :format(l:port()) }
    H.wait_output(core, reader, "connected", 20000)
    H.wait_for(core, function() return waiting and core:stats().bytes_out > 0 end, "the writer to start")
    H.wait(core, function() return false end, 300)
    reader:kill("KILL")
    H.wait_for(core, function() return r ~= nil end, "the write to fail", 30000)
    lu.assertNil(r[1], "the writes all went through: " .. tostring(r[1]))
    H.assert_msg(r[2], r[3])
  end)
end

-- A callback listener's read_timeout applies when one of its sessions is
-- read in stream style.
function TestStream:test_read_timeout_of_a_callback_listener_applies_to_stream_reads()
  if not binding_has("pause") then
    lu.skip("this build's binding does not hold data for a session without on_recv yet")
  end
  with_core(function(core)
    local r
    local l = listen(core, {
      read_timeout = 100,
      on_accept = function(s)
        core:spawn(function() r = { s:read_line() }; s:close() end)
      end,
    })
    local c = H.client(core, l:address(), { on_connect = function(c) c.s:send("no newline") end })
    H.wait_for(core, function() return r ~= nil end, "the read time-out")
    lu.assertEquals(r[3], "ETIMEDOUT")
    c.s:close()
  end)
end

-- The peer's FIN ends the reads, not the session: the handler still
-- answers a client that has shut down its sending side.
function TestStream:test_handler_answers_after_the_peer_half_closes()
  if not binding_has("shutdown") then lu.skip("this build's binding has no s:shutdown() yet") end
  with_core(function(core)
    local addr = serve(core, function(s)
      local parts = {}
      while true do
        local data, _, code = s:read()
        if not data then
          assert(code == "EOF", code)
          break
        end
        parts[#parts + 1] = data
      end
      assert(s:write("got " .. #table.concat(parts) .. "\n"))
    end)
    local c = H.client(core, addr, { on_connect = function(c)
      c.s:send(("z"):rep(100000))
      c.s:shutdown()
    end })
    H.wait_for(core, function() return c.closed end, "the answer and the close")
    lu.assertEquals(c:data(), "got 100000\n")
    lu.assertNil(c.close_err)
  end)
end
