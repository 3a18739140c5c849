-- The stream style's receive buffer in C and its fast paths (src/lua/lrbuf.c):
-- data split anywhere, the max limits exactly reached and passed, the end of
-- the stream with a partial line, read time-outs keeping their bytes, close
-- and stop while parked, callback sessions refusing reads, the read-ahead
-- bound, and memory_limit covering the buffer.
local H = require "helpers"
local lu = H.lu
local iocore = H.iocore
require "iocore.stream"

TestStreamBuffer = H.class()

-- Runs body(core, ctx, serve) with a core; serve(fn[, opts]) starts a
-- listener whose handler is fn and returns its address. The listeners are
-- closed after the body.
local function with_server(opts, body)
  if type(opts) == "function" then opts, body = nil, opts end
  H.with_core(opts, function(core, ctx)
    local ls = {}
    local function serve(fn, lopts)
      local o = { handler = fn }
      for k, v in pairs(lopts or {}) do o[k] = v end
      local l = H.listen(core, o)
      ls[#ls + 1] = l
      return l:address()
    end
    body(core, ctx, serve)
    for _, l in ipairs(ls) do
      if not tostring(l):find("closed") then l:close() end
    end
  end)
end

-- A client that sends `pieces` one per `gap_ms` timer tick, then closes.
local function send_pieces(core, address, pieces, gap_ms) return H.drip(core, address, pieces, gap_ms, true) end

-- Every reader method, with the stream cut in two at every byte boundary
-- (one connection per cut, all at once) and cut into single bytes: the
-- same results as for the stream in one piece.
local STREAM = "line1\r\nab|:|cdefg\nhi|:|last"
local function reads(s)
  return {
    { s:read_line() },           -- "line1" (the "\r" dropped)
    { s:read_until("|:|") },     -- "ab": a three-byte delimiter
    { s:read(3) },               -- "cde"
    { s:read_line() },           -- "fg"
    { s:read_until("|:|", 2) },  -- "hi": exactly max bytes before the delimiter
    { s:read_line() },           -- "last": unterminated, at EOF
    { s:read_line() },           -- EOF
    { s:read(1) },               -- EOF again
  }
end
local EXPECTED = {
  { "line1" }, { "ab" }, { "cde" }, { "fg" }, { "hi" }, { "last" },
  { nil, "EOF: end of stream", "EOF", "" }, { nil, "EOF: end of stream", "EOF", "" },
}

function TestStreamBuffer:test_reads_give_the_same_results_for_a_stream_cut_at_every_byte()
  with_server(function(core, ctx, serve)
    local results = {}
    local addr = serve(function(s)
      local got = reads(s) -- (then the index: every handler is parked in it at once)
      results[#results + 1] = got
    end)
    local n = 0
    for cut = 1, #STREAM - 1 do
      send_pieces(core, addr, { STREAM:sub(1, cut), STREAM:sub(cut + 1) }, 30)
      n = n + 1
    end
    local bytes = {}
    for i = 1, #STREAM do bytes[i] = STREAM:sub(i, i) end
    send_pieces(core, addr, bytes, 5)
    send_pieces(core, addr, { STREAM }, 5)
    n = n + 2
    H.wait_for(core, function() return #results == n end, "every connection's reads", 60000)
    for i, r in ipairs(results) do lu.assertEquals(r, EXPECTED, "connection " .. i) end
  end)
end

-- Delimiters longer than the room kept for one in the buffer's state (8
-- bytes: a longer one is allocated), exactly that long, and short ones in
-- turn, each waited for across single-byte receives and found at once in
-- a stream that came in one piece.
function TestStreamBuffer:test_long_and_short_delimiters_in_turn_across_single_byte_receives()
  with_server(function(core, ctx, serve)
    local STREAM2 = "a<<BOUNDARY>>b\nc123456789d12345678e<<BOUNDARY>>f"
    local results = {}
    local addr = serve(function(s)
      local r = {}
      for _, d in ipairs({ "<<BOUNDARY>>", "\n", "123456789", "12345678", "<<BOUNDARY>>" }) do
        r[#r + 1] = s:read_until(d)
      end
      r[#r + 1] = s:read(1)
      results[#results + 1] = r
    end)
    local bytes = {}
    for i = 1, #STREAM2 do bytes[i] = STREAM2:sub(i, i) end
    send_pieces(core, addr, bytes, 3)
    send_pieces(core, addr, { STREAM2 }, 5)
    H.wait_for(core, function() return #results == 2 end, "both connections' reads", 30000)
    for i, r in ipairs(results) do lu.assertEquals(r, { "a", "b", "c", "d", "e", "f" }, "connection " .. i) end
  end)
end

-- read(n) in a single call across many receives, and read() taking what
-- is there without waiting for more.
function TestStreamBuffer:test_read_n_waits_across_receives_and_read_takes_what_is_there()
  with_server(function(core, ctx, serve)
    local r
    local addr = serve(function(s)
      local a = s:read(7)
      local b = s:read()
      r = { a, b }
    end)
    send_pieces(core, addr, { "ab", "cd", "efgh", "ij" }, 30)
    H.wait_for(core, function() return r ~= nil end, "the reads")
    lu.assertEquals(r[1], "abcdefg")
    lu.assertTrue(r[2] == "h" or r[2] == "hij", "read() returned " .. tostring(r[2]))
  end)
end

-- "As soon as that is known": max bytes without a delimiter wait for more;
-- one byte over fails at once, before any delimiter comes.
function TestStreamBuffer:test_max_bytes_without_delimiter_waits_and_one_more_fails_at_once()
  with_server(function(core, ctx, serve)
    local r = {}
    local addr = serve(function(s)
      r.exact = { s:read_line(5) }
      r.over = { s:read_until("--", 4) }
    end)
    local c
    c = H.client(core, addr, {
      on_connect = function()
        c.s:send("12345") -- exactly max: the read waits
        core:after(60, function()
          r.waited = r.exact == nil
          c.s:send("\nabcde") -- the line; then 5 bytes with no "--" (max 4): known too long
        end)
      end,
    })
    H.wait_for(core, function() return c.closed end, "the session to close")
    lu.assertTrue(r.waited, "read_line(5) did not wait with exactly 5 bytes and no newline")
    lu.assertEquals(r.exact, { "12345" })
    lu.assertNil(r.over[1])
    H.assert_msg(r.over[2], "EMSGSIZE")
    lu.assertEquals(r.over[3], "EMSGSIZE")
  end)
end

function TestStreamBuffer:test_read_until_with_the_delimiter_one_byte_past_max_is_emsgsize()
  with_server(function(core, ctx, serve)
    local r
    local addr = serve(function(s) r = { s:read_until("--", 4) } end)
    local c = H.client(core, addr, { on_connect = function(c) c.s:send("abcde--") end })
    H.wait_for(core, function() return c.closed end, "the session to close")
    lu.assertEquals(r[3], "EMSGSIZE")
  end)
end

-- A read time-out returns what came so far as `partial` and the session
-- stays open; what comes later is read next, nothing lost or repeated.
function TestStreamBuffer:test_read_until_time_out_keeps_partial_bytes_and_the_session()
  with_server(function(core, ctx, serve)
    local r = {}
    local addr = serve(function(s)
      local partials = {}
      repeat -- (a time-out before "ab" arrived, on a loaded machine, returns "")
        r[1] = { s:read_until("##") }
        partials[#partials + 1] = r[1][4]
      until r[1][1] or table.concat(partials) == "ab"
      r[1][4] = table.concat(partials)
      s:timeouts { read = 60000 }
      r[2] = { s:read_until("##") }
    end, { read_timeout = 80 })
    local c = send_pieces(core, addr, { "ab" }, 400)
    H.wait_for(core, function() return r[1] ~= nil end, "the read time-out")
    lu.assertEquals(r[1], { nil, "ETIMEDOUT: read timed out", "ETIMEDOUT", "ab" })
    c.s:send("cd##")
    H.wait_for(core, function() return r[2] ~= nil end, "the second read")
    lu.assertEquals(r[2], { "cd" })
  end)
end

-- Closing the session from another coroutine while the reader is parked:
-- ECLOSED, with the bytes buffered so far as `partial`.
function TestStreamBuffer:test_close_while_parked_returns_eclosed_with_the_partial_bytes()
  with_server(function(core, ctx, serve)
    local r
    local addr = serve(function(s)
      core:spawn(function()
        while core:stats().bytes_in < 2 do iocore.sleep(10) end
        iocore.sleep(20)
        s:close()
      end)
      r = { s:read_line() }
    end)
    local c = H.client(core, addr, { on_connect = function(c) c.s:send("ab") end })
    H.wait_for(core, function() return r ~= nil and c.closed end, "the parked read to end")
    lu.assertEquals(r, { nil, "ECLOSED: session is closing or closed", "ECLOSED", "ab" })
  end)
end

-- core:stop() while handlers are parked in reads: each read returns a
-- failure (the session was closed), the handlers finish, run() returns.
function TestStreamBuffer:test_stop_while_parked_ends_the_reads_and_run_returns()
  local core, ctx = H.new_core()
  local r = {}
  local l = H.listen(core, {
    handler = function(s)
      local got = { s:read_line() }
      r[#r + 1] = got
    end,
  })
  local clients = {}
  for i = 1, 3 do clients[i] = H.client(core, l:address(), { on_connect = function(c) c.s:send("x") end }) end
  H.wait_for(core, function() return core:stats().bytes_in >= 3 end, "the clients")
  core:post(function() core:stop(50) end)
  local ok = core:run(20000)
  lu.assertTrue(ok, "run() did not end with the stop")
  lu.assertEquals(ctx.errors, {})
  lu.assertEquals(#r, 3)
  for _, x in ipairs(r) do
    lu.assertNil(x[1])
    H.assert_msg(x[2])
    lu.assertEquals(x[4], "x")
  end
  l, clients = nil, nil -- (their objects must be collectable for the check)
  H.assert_closed_cleanly(core)
  core:close()
end

-- A callback-style session (it has an on_recv) cannot be read, even from
-- an iocore coroutine and with data there for the taking.
function TestStreamBuffer:test_reading_a_callback_session_with_data_raises()
  with_server(function(core, ctx, serve)
    local err
    local l = H.listen(core, {
      on_recv = function(s, data)
        core:spawn(function()
          local ok, e = pcall(s.read, s, 1)
          err = ok and "did not raise" or e
          s:close()
        end)
      end,
    })
    H.client(core, l:address(), { on_connect = function(c) c.s:send("data") end })
    H.wait_for(core, function() return err ~= nil end, "the read")
    lu.assertStrContains(err, "on_recv handler (callback style)")
    l:close()
  end)
end

-- With no reader the buffer stops at about the read-ahead bound (the
-- session is paused); a read of more than that parks and gets it all.
function TestStreamBuffer:test_a_read_larger_than_the_read_ahead_bound_gets_all_its_bytes()
  with_server(function(core, ctx, serve)
    local ahead = require("iocore.stream").limits.read_ahead
    local size = 3 * ahead
    local payload = H.payload(size, 11)
    local got
    local addr = serve(function(s)
      iocore.sleep(100) -- the peer's bytes pile up meanwhile
      got = s:read(size)
    end)
    local c = H.client(core, addr, { on_connect = function(c) c.s:send(payload) end })
    H.wait_for(core, function() return got ~= nil end, "the big read", 30000)
    lu.assertEquals(#got, size)
    lu.assertTrue(got == payload, "the bytes came out changed")
    c.s:close()
  end)
end

-- memory_limit covers the receive buffer: a line that would take the
-- buffer past the limit fails that session (ENOMEM), and the server goes
-- on serving the others.
function TestStreamBuffer:test_memory_limit_during_a_read_fails_only_that_session()
  collectgarbage()
  local limit = math.floor(collectgarbage("count") * 1024 + 16 * (1 << 20))
  with_server({ memory_limit = limit }, function(core, ctx, serve)
    ctx.allow_errors = true
    local r = {}
    local addr = serve(function(s)
      local line, msg, code = s:read_line(64 * (1 << 20))
      r[#r + 1] = line or (tostring(code) .. " " .. tostring(msg))
      if line then s:write(line .. "\n") end
    end)
    local big = H.client(core, addr, {
      on_connect = function(c)
        local chunk = ("x"):rep(1 << 20)
        for _ = 1, 40 do c.s:send(chunk) end
      end,
    })
    H.wait_for(core, function() return r[1] ~= nil end, "the read over the limit to fail", 30000)
    lu.assertStrContains(r[1], "ENOMEM ENOMEM: ")
    local small = H.client(core, addr, { on_connect = function(c) c.s:send("hello\n") end })
    H.wait_for(core, function() return small:data() == "hello\n" end, "another session to be served")
    small.s:close()
  end)
end

-- A session parked in a read with nothing buffered holds no buffer: after
-- 60 KiB were received and read, the memory the core counts (memory_limit
-- counts the buffer) is back near where it was once the handler waits again.
function TestStreamBuffer:test_a_reader_parked_on_an_empty_buffer_holds_no_buffer_memory()
  collectgarbage()
  local limit = math.floor(collectgarbage("count") * 1024 + 64 * (1 << 20))
  with_server({ memory_limit = limit }, function(core, ctx, serve)
    local size = 60 * 1024
    local state, before, after = "start", nil, nil
    local addr = serve(function(s)
      state = "waiting"
      -- (read in a function of its own: the string is not left on the handler's stack)
      local ok = (function() return #s:read(size) == size end)()
      state = ok and "read" or "short"
      s:read_line() -- parked, nothing buffered
    end)
    local c = H.client(core, addr)
    H.wait_for(core, function() return state == "waiting" end, "the handler")
    collectgarbage()
    before = core:stats().memory
    c.s:send(("z"):rep(size))
    H.wait_for(core, function() return state ~= "waiting" end, "the read")
    lu.assertEquals(state, "read")
    H.wait(core, function() return false end, 50)
    collectgarbage()
    after = core:stats().memory
    lu.assertTrue(after - before < 16 * 1024,
      ("the parked session still holds %d bytes more than before the data came"):format(after - before))
    c.s:close()
  end)
end
