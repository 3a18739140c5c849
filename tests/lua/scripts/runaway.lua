-- Handlers that try to escape handler_timeout. Each scenario runs on a core
-- of its own with handler_timeout = 200 and must end: the runaway is
-- interrupted, reported, and run() returns. Prints "<scenario> ok <details>"
-- per scenario, then "done"; a scenario that hangs leaves its name as the
-- last line ("<scenario> start").
--
--   lua5.4 tests/lua/scripts/runaway.lua [scenario...]
--   lua5.4 tests/lua/scripts/runaway.lua sigterm
local iocore = require "iocore"
io.stdout:setvbuf("line")

local outside_co = coroutine.create(function() while true do end end)

local scenarios = {
  -- a loop in a coroutine the handler created and resumed
  { "created_coroutine", function(core)
    core:post(function()
      local co = coroutine.create(function() while true do end end)
      assert(not coroutine.resume(co))
      while true do end
    end)
  end },
  -- a loop in a coroutine made outside any handler, resumed by one
  { "resumed_coroutine", function(core)
    core:post(function()
      local ok, err = coroutine.resume(outside_co)
      error("the coroutine returned: " .. tostring(ok) .. " " .. tostring(err))
    end)
  end },
  -- coroutine.wrap inside a handler
  { "wrapped_coroutine", function(core)
    core:post(function()
      local f = coroutine.wrap(function() while true do end end)
      f()
    end)
  end },
  -- catches the time-out error and loops on
  { "pcall_loop", function(core)
    core:post(function()
      while true do pcall(function() while true do end end) end
    end)
  end },
  -- the same inside a coroutine
  { "pcall_loop_in_coroutine", function(core)
    core:post(function()
      coroutine.wrap(function()
        while true do pcall(function() while true do end end) end
      end)()
    end)
  end },
  -- a loop in on_error
  { "on_error_loop", function(core, st)
    core:on_error(function(msg) st.reported = (st.reported or 0) + 1; while true do end end)
    core:post(function() error("first") end)
  end },
}

-- "sigterm": a hidden runaway on a core with signals; the test sends
-- SIGTERM once "ready" is out (printed by a handler, so run() is active).
if arg[1] == "sigterm" then
  local core = assert(iocore.core { threads = 2, handler_timeout = 500 })
  local errors = 0
  core:on_error(function() errors = errors + 1 end)
  core:post(function() print("ready") end)
  core:post(function()
    coroutine.wrap(function() while true do pcall(function() while true do end end) end end)()
  end)
  print("run returned", core:run(60000), "errors", errors)
  return
end

local only = {}
for i = 1, #arg do only[arg[i]] = true end

for _, sc in ipairs(scenarios) do
  local name, setup = sc[1], sc[2]
  if next(only) == nil or only[name] then
    print(name .. " start")
    local core = assert(iocore.core { threads = 2, signals = false, handler_timeout = 200 })
    local st = { errors = {} }
    core:on_error(function(msg) st.errors[#st.errors + 1] = msg end)
    setup(core, st)
    local after = false
    core:post(function() after = true end)
    -- run(timeout) returns once the runaway is interrupted ...
    local r1 = core:run(600)
    -- ... and a stop from a later handler ends the next run()
    core:post(function() core:stop() end)
    local r2 = core:run(20000)
    local timeouts = 0
    for _, m in ipairs(st.errors) do
      if m:find("ETIMEDOUT", 1, true) then timeouts = timeouts + 1 end
    end
    print(("%s ok run=%s stop=%s after=%s errors=%d timeouts=%d handler_errors=%d"):format(
      name, tostring(r1), tostring(r2), tostring(after), #st.errors, timeouts, core:stats().handler_errors))
    core:close()
  end
end
print("done")
