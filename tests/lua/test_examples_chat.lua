-- examples/chat.lua (line framing in C, broadcast buffers, a slow-reader
-- policy) run as a user would, with members that are python3 socket
-- clients (tests/lua/pypeer.lua).
local H = require "helpers"
local Y = require "pypeer"
local lu = H.lu

TestChatExample = Y.class()

local function start_chat(core)
  local p = Y.example("chat.lua", "127.0.0.1:0")
  return p, tonumber(H.wait_output(core, p, "chat on 127%.0%.0%.1:(%d+)", 20000))
end

-- A member that reads; returns once its own join came back to it.
local function join(core, port, name, o)
  o = o or {}
  o.chat = name
  local m = Y.client(port, o)
  H.wait_for(core, function() return m:data():find("* " .. name .. " joined\n", 1, true) ~= nil end,
    name .. "'s join", 30000)
  return m
end

local function lines_of(text)
  local t = {}
  for line in text:gmatch("([^\n]*)\n") do t[#t + 1] = line end
  return t
end

-- Sam joins and reads nothing; then Alice, Bob and Walt join, and Walt
-- sends 8,000 lines of 1,000 bytes, never more than 256 KiB ahead of the
-- slowest of the three (they are one python process), so none of them can
-- lag enough to be dropped, however loaded the machine. Alice, Bob and
-- Walt get every line, in order; Sam is dropped as too slow (the chat says
-- so, the others are told) long before the traffic ends.
function TestChatExample:test_chat_example_delivers_in_order_and_drops_a_member_that_stops_reading()
  Y.require()
  H.with_core(function(core)
    local chat, port = start_chat(core)
    Y.client(port, { chat = "sam", no_read = true, rcvbuf = 16 * 1024 })
    H.wait_output(core, chat, "joined sam", 30000)
    local sent = {}
    for i = 1, 8000 do sent[i] = ("%05d "):format(i) .. ("x"):rep(994) end
    local group = Y.group(port, { "alice", "bob", "walt" }, sent, 256 * 1024)
    H.wait_output(core, group, "\n(done)", 120000)
    lu.assertStrContains(chat:output(), "dropped sam: too slow")
    for _, name in ipairs { "alice", "bob", "walt" } do
      local got, dropped_after = {}, nil
      for _, line in ipairs(lines_of(group:member(name))) do
        local text = line:match("^walt: (.*)$")
        if text then got[#got + 1] = text end
        if line == "* sam dropped: too slow" then dropped_after = #got end
      end
      lu.assertEquals(#got, #sent, name .. " got every line of walt's")
      for i = 1, #sent do
        if got[i] ~= sent[i] then lu.fail(("%s: line %d differs or is out of order"):format(name, i)) end
      end
      lu.assertNotNil(dropped_after, name .. " was told that sam was dropped")
      lu.assertTrue(dropped_after < #sent, "sam was dropped only after all the traffic")
      if name == "alice" then
        print(("    sam dropped after %d of %d lines of 1000 bytes"):format(dropped_after, #sent))
      end
    end
    Y.stop(core, chat)
  end)
end

-- Lenny sends a line longer than the chat's limit: he alone is closed
-- (EMSGSIZE), the others are told, and the chat goes on.
function TestChatExample:test_chat_example_closes_only_the_member_with_an_over_long_line()
  Y.require()
  H.with_core(function(core)
    local chat, port = start_chat(core)
    local alice = join(core, port, "alice")
    local lenny = Y.client(port, { chat = "lenny", lines = { "short one", ("y"):rep(5000), "never sent on" } })
    -- the chat resets him: his client sees the reset (or an EOF)
    H.wait_for(core, function() return lenny:output():match("\neof %d+") or lenny:output():match("\nerror") end,
      "lenny's connection to end", 30000)
    H.wait_for(core, function() return alice:data():find("* lenny left (EMSGSIZE", 1, true) ~= nil end,
      "lenny's leave at alice", 30000)
    local mike = join(core, port, "mike", { lines = { "after lenny" } })
    H.wait_for(core, function() return alice:data():find("mike: after lenny\n", 1, true) ~= nil end,
      "mike's line at alice", 30000)
    lu.assertEquals(lines_of(alice:data()), { "* alice joined", "* lenny joined", "lenny: short one",
      "* lenny left (EMSGSIZE: message too long)", "* mike joined", "mike: after lenny" })
    lu.assertEquals(lines_of(mike:data()), { "* mike joined", "mike: after lenny" })
    Y.stop(core, chat)
  end)
end
