-- `coroutine = true` (the listener option the first API page gives for the
-- sequential style): on_accept runs in a coroutine of its own per session,
-- s:read* and s:write wait inside it, and misuses raise at the script's
-- listen call.
local H = require "helpers"
local lu = H.lu
require "iocore.stream"

TestCoroutineOption = H.class()

function TestCoroutineOption:test_on_accept_runs_as_a_coroutine_that_reads_lines()
  H.with_core(function(core)
    local served, closed = 0, nil
    local l = H.listen(core, {
      coroutine = true,
      on_accept = function(s)
        for line in function() return s:read_line() end do
          assert(s:write(line:upper() .. "\n"))
          served = served + 1
        end
      end,
    })
    local got
    core:spawn(function()
      local c = assert(core:dial(l:address()))
      c:write("one\ntwo\n")
      got = { c:read_line(), c:read_line() }
      c:shutdown()
      closed = select(3, c:read_line()) -- the server's handler returned: EOF
      c:close()
    end)
    H.wait_for(core, function() return closed end, "the client's exchange")
    l:close()
    lu.assertEquals(got, { "ONE", "TWO" })
    lu.assertEquals(served, 2)
    lu.assertEquals(closed, "EOF")
  end)
end

function TestCoroutineOption:test_coroutine_false_is_the_callback_style()
  H.with_core(function(core)
    local l = H.listen(core, {
      coroutine = false,
      on_accept = function(s) s:on_recv(function(s2, d) s2:send(d) end) end,
    })
    local c = H.client(core, l:address())
    c.s:send("ping")
    H.wait_for(core, function() return c:data() == "ping" end, "the echo")
    c.s:close()
    l:close()
  end)
end

function TestCoroutineOption:test_misuses_raise_at_the_scripts_listen()
  H.with_core(function(core)
    local cases = {
      { { coroutine = "yes", on_accept = print }, "field 'coroutine' must be a boolean, got string" },
      { { coroutine = true }, "field 'coroutine' needs 'on_accept'" },
      { { coroutine = true, on_accept = print, handler = print }, "fields 'coroutine' and 'handler' exclude each other" },
    }
    for _, case in ipairs(cases) do
      local ok, err = pcall(core.listen, core, "127.0.0.1:0", case[1])
      lu.assertFalse(ok)
      lu.assertStrContains(err, "bad argument #2 to 'listen' (" .. case[2], false)
    end
    -- the error points at this file, the script's own line
    local ok, err = pcall(function() local l = core:listen("127.0.0.1:0", { coroutine = 1 }) return l end)
    lu.assertFalse(ok)
    lu.assertStrContains(err, "test_coroutine_option.lua", false)
  end)
end
