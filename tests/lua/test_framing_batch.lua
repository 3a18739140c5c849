-- The messages of one receive are delivered together (gathered in C, run
-- under the lock in one go), yet each keeps the guarantees of a message
-- delivered alone: an error, a close, a pause, a runaway or a new on_recv in
-- one handler takes effect before the next message of the same receive; the
-- other sessions are not affected; on_close comes after the last message.
-- Each client sends its messages in one send, so they arrive in one receive.
local H = require "helpers"
local lu = H.lu

TestFramingBatch = H.class()

-- A framed listener recording, per session, the messages and the close.
-- on_msg(s, msg, rec) runs for each message after it is recorded.
local function server(core, framing, on_msg)
  local recs = {}
  local l = H.listen(core, {
    framing = framing,
    on_recv = function(s, msg)
      local rec = recs[s]
      if not rec then
        rec = { msgs = {}, events = {} }
        recs[s] = rec
        recs[#recs + 1] = rec
      end
      rec.msgs[#rec.msgs + 1] = msg
      rec.events[#rec.events + 1] = "recv " .. msg
      if on_msg then on_msg(s, msg, rec) end
    end,
    on_close = function(s, err)
      local rec = recs[s]
      if rec then
        rec.events[#rec.events + 1] = "close"
        rec.close_err = err or "clean"
      end
    end,
  })
  return l, recs
end

-- The record of the server session whose first message is `first`.
local function rec_of(recs, first)
  for _, rec in ipairs(recs) do
    if rec.msgs[1] == first then return rec end
  end
end

-- Waits until the server session that got `first` has closed.
local function wait_closed(core, recs, first, what)
  H.wait_for(core, function()
    local rec = rec_of(recs, first)
    return rec and rec.close_err ~= nil
  end, what, 10000)
  return rec_of(recs, first)
end

-- A line server that echoes each message but runs `fault(msg)` first, and
-- two clients, each sending its lines in one send: `bad` (its first line
-- "a", then one the fault acts on) and `good`. Returns the listener, the
-- records, both clients, and the bad session's record once it has closed.
local function fault_mid_receive(core, fault, bad_lines, good_lines, what)
  local l, recs = server(core, "line", function(s, msg)
    fault(msg)
    s:send(msg .. "\n")
  end)
  local bad = H.client(core, l:address())
  local good = H.client(core, l:address())
  H.wait_for(core, function() return bad.connected and good.connected end, "connect")
  bad.s:send(bad_lines)
  good.s:send(good_lines)
  return l, recs, bad, good, wait_closed(core, recs, "a", what)
end

function TestFramingBatch:test_framing_error_mid_receive_aborts_only_its_session_and_drops_the_rest()
  H.with_core(function(core, ctx)
    ctx.allow_errors = true
    local l, recs, bad, good, rec = fault_mid_receive(core, function(msg)
      if msg == "boom" then error("boom in on_recv") end
    end, "a\nboom\nc\nd\n", "x\ny\nz\n", "the failing session's abort")
    lu.assertEquals(rec.msgs, { "a", "boom" }) -- nothing after the error
    H.assert_msg(rec.close_err, "ECONNABORTED", "on_close err")
    lu.assertEquals(#ctx.errors, 1)
    lu.assertStrContains(ctx.errors[1].msg, "boom in on_recv")
    H.wait_for(core, function() return good:data() == "x\ny\nz\n" end, "the other session's echo")
    lu.assertEquals(rec_of(recs, "x").msgs, { "x", "y", "z" })
    good.s:send("w\n")
    H.wait_for(core, function() return good:data() == "x\ny\nz\nw\n" end, "the other session goes on")
    H.wait_for(core, function() return bad.closed end, "the client sees the abort")
    good.s:close()
    H.wait_for(core, function() return good.closed end, "close")
    l:close()
  end)
end

function TestFramingBatch:test_framing_close_mid_receive_delivers_nothing_after_it_and_on_close_comes_last()
  H.with_core(function(core)
    local l, recs = server(core, "line", function(s, msg)
      s:send("got " .. msg .. "\n")
      if msg == "b" then s:close() end
    end)
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected end, "connect")
    c.s:send("a\nb\nc\nd\n")
    local rec = wait_closed(core, recs, "a", "the server's close")
    lu.assertEquals(rec.events, { "recv a", "recv b", "close" })
    H.wait_for(core, function() return c.closed end, "the client sees the close")
    lu.assertEquals(c:data(), "got a\ngot b\n") -- the replies before close() are flushed
    l:close()
  end)
end

function TestFramingBatch:test_framing_on_close_comes_after_every_message_of_the_last_receive()
  H.with_core(function(core)
    local l, recs = server(core, { delimiter = "||" })
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected end, "connect")
    c.s:send("a||b||c||")
    c.s:close()
    local rec = wait_closed(core, recs, "a", "the server's close")
    lu.assertEquals(rec.events, { "recv a", "recv b", "recv c", "close" })
    lu.assertEquals(rec.close_err, "clean")
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
  end)
end

-- s:pause() in one message holds the next ones of the same receive, for
-- every kind of framing; resume() delivers them, in order, and no earlier.
function TestFramingBatch:test_framing_pause_mid_receive_holds_the_rest_for_every_kind()
  local cases = {
    { "line", "a\r\nb\nc\n" },
    { { length = 2 }, "\0\1a\0\1b\0\1c" },
    { { length = 4 }, "\0\0\0\1a\0\0\0\1b\0\0\0\1c" },
    { { delimiter = "<>" }, "a<>b<>c<>" },
  }
  for _, case in ipairs(cases) do
    H.with_core(function(core)
      local paused
      local l, recs = server(core, case[1], function(s, msg)
        if msg == "a" then
          s:pause()
          paused = s
        end
      end)
      local c = H.client(core, l:address())
      H.wait_for(core, function() return c.connected end, "connect")
      c.s:send(case[2])
      H.wait_for(core, function() return paused ~= nil end, "the first message")
      H.wait(core, function() return false end, 150) -- nothing more while paused
      lu.assertEquals(recs[1].msgs, { "a" })
      paused:resume()
      H.wait_for(core, function() return #recs[1].msgs == 3 end, "the rest after resume")
      lu.assertEquals(recs[1].msgs, { "a", "b", "c" })
      c.s:close()
      H.wait_for(core, function() return c.closed end, "close")
      l:close()
    end)
  end
end

-- Paused and resumed by every message: each of the receive's messages is
-- held, then delivered alone, in order.
function TestFramingBatch:test_framing_pause_and_resume_in_every_message_keeps_order()
  H.with_core(function(core)
    local l, recs = server(core, "line", function(s, msg)
      s:pause()
      core:after(1, function() s:resume() end)
    end)
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected end, "connect")
    local lines, want = {}, {}
    for i = 1, 50 do
      lines[i] = "m" .. i .. "\n"
      want[i] = "m" .. i
    end
    c.s:send(table.concat(lines))
    H.wait_for(core, function() return recs[1] and #recs[1].msgs == 50 end, "fifty messages", 10000)
    lu.assertEquals(recs[1].msgs, want)
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
  end)
end

function TestFramingBatch:test_framing_on_recv_set_by_a_message_takes_the_next_one_of_the_receive()
  H.with_core(function(core)
    local second = {}
    local l, recs = server(core, "line", function(s, msg)
      if msg == "switch" then
        s:on_recv(function(_, m) second[#second + 1] = m end)
      end
    end)
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected end, "connect")
    c.s:send("a\nswitch\nb\nc\n")
    H.wait_for(core, function() return #second == 2 end, "the new handler's messages")
    lu.assertEquals(recs[1].msgs, { "a", "switch" })
    lu.assertEquals(second, { "b", "c" })
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
  end)
end

function TestFramingBatch:test_framing_runaway_mid_receive_is_interrupted_and_only_its_session_aborted()
  H.with_core({ handler_timeout = 200 }, function(core, ctx)
    ctx.allow_errors = true
    local l, _, bad, good, rec = fault_mid_receive(core, function(msg)
      if msg == "spin" then
        while true do end
      end
    end, "a\nspin\nc\n", "x\ny\n", "the runaway's abort")
    lu.assertEquals(rec.msgs, { "a", "spin" })
    lu.assertEquals(#ctx.errors, 1)
    lu.assertStrContains(ctx.errors[1].msg, "ETIMEDOUT")
    H.wait_for(core, function() return good:data() == "x\ny\n" end, "the other session's echo", 10000)
    good.s:close()
    H.wait_for(core, function() return good.closed and bad.closed end, "close")
    l:close()
  end)
end
