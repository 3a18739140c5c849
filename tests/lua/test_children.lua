-- Processes started by handlers (os.execute, io.popen) get the process's
-- usual signal mask, not the worker thread's (workers block signals): a
-- child that is sent SIGTERM dies from it.
local H = require "helpers"
local lu = H.lu

TestChildren = H.class()

-- Runs fn inside a timer handler (on a worker) and returns its results.
local function in_handler(threads, fn)
  local r
  H.with_core({ threads = threads }, function(core)
    core:after(0, function() r = table.pack(fn()) end)
    H.wait_for(core, function() return r ~= nil end, "the handler")
  end)
  return table.unpack(r, 1, r.n)
end

local function skip_on_windows()
  if H.windows then lu.skip("no signals on Windows (no signal masks to inherit)") end
end

function TestChildren:test_a_child_of_os_execute_in_a_handler_dies_from_sigterm()
  skip_on_windows()
  for _, threads in ipairs { 1, 2 } do
    local ok, how, code = in_handler(threads, function() return os.execute("kill -TERM $$; exit 7") end)
    lu.assertEquals({ ok, how, code }, { nil, "signal", 15 },
      ("threads = %d: the shell survived its own SIGTERM (blocked signals inherited)"):format(threads))
  end
end

function TestChildren:test_a_child_of_io_popen_in_a_handler_dies_from_sigterm()
  skip_on_windows()
  for _, threads in ipairs { 1, 2 } do
    local out, ok, how, code = in_handler(threads, function()
      local p = assert(io.popen("kill -TERM $$; echo survived"))
      local out = p:read("a")
      return out, p:close()
    end)
    lu.assertEquals(out, "", ("threads = %d: the shell survived its own SIGTERM"):format(threads))
    lu.assertEquals({ ok, how, code }, { nil, "signal", 15 })
  end
end

-- The replacements behave as the originals otherwise: exit codes, reading,
-- writing, the argument checks, os.execute() without a command.
function TestChildren:test_os_execute_and_io_popen_in_a_handler_behave_as_usual()
  skip_on_windows()
  local name = os.tmpname()
  local r = table.pack(in_handler(2, function()
    local res = {}
    res.exit0 = table.pack(os.execute("true"))
    res.exit3 = table.pack(os.execute("exit 3"))
    res.shell = os.execute()
    local p = assert(io.popen("printf 'a\\nb\\n'"))
    res.lines = { p:read("l"), p:read("l"), p:read("l") }
    res.close = table.pack(p:close())
    local w = assert(io.popen("cat > " .. name, "w"))
    w:write("written")
    res.wclose = table.pack(w:close())
    res.badmode = select(2, pcall(io.popen, "true", "rw"))
    res.closed_twice = select(2, pcall(p.close, p))
    return res
  end))
  local res = r[1]
  local got = H.read_file(name)
  os.remove(name)
  lu.assertEquals({ res.exit0[1], res.exit0[2], res.exit0[3] }, { true, "exit", 0 })
  lu.assertEquals({ res.exit3[1], res.exit3[2], res.exit3[3] }, { nil, "exit", 3 })
  lu.assertTrue(res.shell)
  lu.assertEquals(res.lines, { "a", "b", nil })
  lu.assertEquals({ res.close[1], res.close[2], res.close[3] }, { true, "exit", 0 })
  lu.assertEquals({ res.wclose[1], res.wclose[2], res.wclose[3] }, { true, "exit", 0 })
  lu.assertEquals(got, "written")
  lu.assertStrContains(tostring(res.badmode), "invalid mode")
  lu.assertStrContains(tostring(res.closed_twice), "closed file")
end
