-- Framing in C for the callback style: framing = "line" | {length=2|4} |
-- {delimiter=...} with max; one on_recv per message however the bytes were
-- split; "" for an empty message; EMSGSIZE past max; s:send_frame.
local H = require "helpers"
local lu = H.lu

TestFraming = H.class()

-- A listener with `framing` that records each message; `reply(s, msg)` is
-- called for each one when given.
local function framed_server(core, framing, reply)
  local rec = { msgs = {}, close_err = "not yet" }
  local l = H.listen(core, {
    framing = framing,
    on_recv = function(s, msg)
      rec.msgs[#rec.msgs + 1] = msg
      if reply then reply(s, msg) end
    end,
    on_close = function(_, err) rec.close_err = err end,
  })
  return l, rec
end

-- Sends stream one byte per timer tick from a plain client.
local function send_bytewise(core, c, stream)
  local i = 0
  local t
  t = core:every(1, function()
    i = i + 1
    if i > #stream then t:cancel() return end
    c.s:send(stream:sub(i, i))
  end)
end

function TestFraming:test_framing_line_one_on_recv_per_line_split_at_every_byte()
  H.with_core(function(core)
    local l, rec = framed_server(core, "line")
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected end, "connect")
    send_bytewise(core, c, "a\r\nbc\n\nlast\n")
    H.wait_for(core, function() return #rec.msgs == 4 end, "four lines", 10000)
    lu.assertEquals(rec.msgs, { "a", "bc", "", "last" })
    c.s:send("x\ny\n") -- two lines in one packet: two calls
    H.wait_for(core, function() return #rec.msgs == 6 end, "two more lines")
    lu.assertEquals(rec.msgs[5], "x")
    lu.assertEquals(rec.msgs[6], "y")
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
  end)
end

function TestFraming:test_framing_length_and_send_frame_round_trip_with_empty_frames()
  for _, n in ipairs({ 2, 4 }) do
    H.with_core(function(core)
      local l, rec = framed_server(core, { length = n }, function(s, msg) assert(s:send_frame(msg)) end)
      local got = {}
      local c, err = core:connect(l:address(), {
        framing = { length = n },
        on_connect = function(s)
          assert(s:send_frame("ping"))
          assert(s:send_frame(""))
          assert(s:send_frame(("z"):rep(1000)))
        end,
        on_recv = function(_, msg) got[#got + 1] = msg end,
      })
      lu.assertNotNil(c, err)
      H.wait_for(core, function() return #got == 3 end, "three frames echoed", 10000)
      lu.assertEquals(got, { "ping", "", ("z"):rep(1000) })
      lu.assertEquals(rec.msgs, got)
      c:close()
      H.wait_for(core, function() return core:stats().active == 0 end, "closes")
      l:close()
    end)
  end
end

function TestFraming:test_framing_length_prefix_split_at_every_byte()
  H.with_core(function(core)
    local l, rec = framed_server(core, { length = 2 })
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected end, "connect")
    send_bytewise(core, c, "\0\3abc\0\0\0\1z")
    H.wait_for(core, function() return #rec.msgs == 3 end, "three frames", 10000)
    lu.assertEquals(rec.msgs, { "abc", "", "z" })
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
  end)
end

function TestFraming:test_framing_max_is_taken_and_max_plus_one_closes_with_emsgsize()
  local cases = {
    { { delimiter = "||", max = 4 }, "abcd||", "abcde" },
    { { length = 4, max = 4 }, "\0\0\0\4abcd", "\0\0\0\5" },
    { { line = true, max = 4 }, "abcd\r\n", "abcde" },
  }
  for _, case in ipairs(cases) do
    H.with_core(function(core)
      local l, rec = framed_server(core, case[1])
      local c = H.client(core, l:address())
      H.wait_for(core, function() return c.connected end, "connect")
      c.s:send(case[2])
      H.wait_for(core, function() return #rec.msgs == 1 end, "the message of max bytes")
      lu.assertEquals(rec.msgs[1], "abcd")
      c.s:send(case[3]) -- never finished: known too long at once
      H.wait_for(core, function() return rec.close_err ~= "not yet" end, "the server to close", 10000)
      H.assert_msg(rec.close_err, "EMSGSIZE", "on_close err")
      H.wait_for(core, function() return c.closed end, "the client sees the close")
      l:close()
    end)
  end
end

function TestFraming:test_framing_pause_holds_messages_until_resume()
  H.with_core(function(core)
    local server
    local l, rec = framed_server(core, "line", function(s, msg)
      if msg == "a" then s:pause() server = s end
    end)
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected end, "connect")
    c.s:send("a\nb\nc\n")
    H.wait_for(core, function() return server ~= nil end, "the first line")
    H.wait(core, function() return false end, 150) -- nothing more while paused
    lu.assertEquals(rec.msgs, { "a" })
    server:resume()
    H.wait_for(core, function() return #rec.msgs == 3 end, "the rest after resume")
    lu.assertEquals(rec.msgs, { "a", "b", "c" })
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
  end)
end

function TestFraming:test_framing_misuse_raises()
  H.with_core(function(core)
    for _, bad in ipairs({ "lines", 42, { length = 3 }, { delimiter = "" }, { delimiter = ("x"):rep(65) },
                           { length = 2, line = true }, {}, { line = true, max = 0 } }) do
      lu.assertErrorMsgContains("framing", function() core:listen("127.0.0.1:0", { framing = bad }) end)
      lu.assertErrorMsgContains("framing", function() core:connect("127.0.0.1:9", { framing = bad }) end)
    end
    local l = H.listen(core, { framing = "line" })
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected end, "connect")
    lu.assertErrorMsgContains("no length framing", function() c.s:send_frame("x") end)
    c.s:close()
    H.wait_for(core, function() return c.closed end, "close")
    l:close()
  end)
end

function TestFraming:test_framing_default_max_is_the_documented_one()
  local hdr = H.read_file(H.root .. "/src/include/iocore.h")
  local doc = H.read_file(H.root .. "/docs/lua-api.md")
  if not hdr or not doc then lu.skip("sources not found from " .. H.root) end
  local max = tonumber(hdr:match("#define IOC_FRAMING_DEFAULT_MAX (%d+)"))
  local dmax = hdr:match("#define IOC_FRAMING_DELIMITER_MAX (%d+)")
  lu.assertStrContains(doc, "`max` (default " .. max .. " bytes)")
  lu.assertStrContains(doc, "the bytes before the delimiter (1 to " .. dmax .. " bytes)")
  H.with_core(function(core)
    local l, rec = framed_server(core, "line")
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.connected end, "connect")
    c.s:send(("x"):rep(max) .. "\n")
    H.wait_for(core, function() return #rec.msgs == 1 end, "a line of the default max", 10000)
    lu.assertEquals(#rec.msgs[1], max)
    c.s:send(("y"):rep(max + 1))
    H.wait_for(core, function() return rec.close_err ~= "not yet" end, "the close past max", 10000)
    H.assert_msg(rec.close_err, "EMSGSIZE", "one byte past the default max")
    H.wait_for(core, function() return c.closed end, "the client sees it")
    l:close()
  end)
end
