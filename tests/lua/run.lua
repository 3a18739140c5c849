-- The Lua suite's entry point:
--
--   IOCORE_BACKEND=epoll LUA_CPATH="build/bin/debug/?.so;;" lua5.4 tests/lua/run.lua [luaunit args]
--
-- Runs every tests/lua/test_*.lua with luaunit and prints one line per test
--   ok   TestClass.test_name (1.23s)
--   FAIL TestClass.test_name: message        (failures and errors alike)
--   SKIP TestClass.test_name: reason
-- and, as the last line,
--   RESULT lua-<backend>: P passed, F failed, S skipped
-- Exits 0 when F is 0, 1 otherwise, and 77 (a skipped suite, for
-- scripts/test) when the backend asked for is not available here.
-- Extra arguments go to luaunit: a test name pattern with -p, e.g.
--   lua5.4 tests/lua/run.lua -p Timers

local dir = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
local root = dir .. "/../.."
package.path = dir .. "/?.lua;" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path

local ok_lu, lu = pcall(require, "luaunit")
if not ok_lu then
  io.stderr:write("run.lua: luaunit not found (Debian: apt-get install lua-unit)\n", lu, "\n")
  print("RESULT lua-unknown: 0 passed, 1 failed, 0 skipped")
  os.exit(1)
end

local backend_env = os.getenv("IOCORE_BACKEND")
local suite = "lua-" .. ((backend_env and backend_env ~= "") and backend_env or "auto")

local ok_mod, iocore = pcall(require, "iocore")
if not ok_mod then
  print("run.lua: cannot load the iocore module (LUA_CPATH=" .. tostring(os.getenv("LUA_CPATH")) .. "):")
  print(iocore)
  print(("RESULT %s: 0 passed, 1 failed, 0 skipped"):format(suite))
  os.exit(1)
end

-- A backend that is asked for but not usable here skips the whole suite.
do
  local probe, err, code = iocore.core { threads = 1, signals = false }
  if not probe then
    if code == "ENOSYS" then
      print(("SKIP: backend %s not available here: %s"):format(tostring(backend_env), tostring(err)))
      os.exit(77)
    end
    print(("run.lua: cannot make a core (IOCORE_BACKEND=%s): %s"):format(tostring(backend_env), tostring(err)))
    print(("RESULT %s: 0 passed, 1 failed, 0 skipped"):format(suite))
    os.exit(1)
  end
  if not backend_env or backend_env == "" then suite = "lua-" .. probe:backend() end
  print(("iocore %s, backend %s, lua suite %s"):format(iocore.version, probe:backend(), suite))
  probe:close()
end

local H = require "helpers"
H.lua = (arg and arg[-1]) or "lua5.4"
H.root = root

-- Load the test files in name order (each defines global Test* classes).
-- Listing needs a shell; should that fail, the known files are used.
local KNOWN = { "test_connect.lua", "test_docs.lua", "test_echo.lua", "test_edges.lua", "test_errors.lua", "test_examples.lua",
                "test_limits.lua", "test_listen.lua", "test_order.lua", "test_send.lua", "test_sessions.lua",
                "test_source.lua", "test_stream.lua", "test_timers.lua" }
local files = {}
local p = io.popen(H.windows and ('dir /b "' .. dir:gsub("/", "\\") .. '" 2>nul')
                  or ("ls " .. H.shq(dir) .. " 2>/dev/null"))
if p then
  for name in p:lines() do
    if name:match("^test_.*%.lua$") then files[#files + 1] = name end
  end
  p:close()
end
if #files == 0 then
  print("run.lua: could not list " .. dir .. "; running the known test files")
  files = KNOWN
end
table.sort(files)
for _, name in ipairs(files) do
  dofile(dir .. "/" .. name)
end

-- ---- the output: one line per test, then the RESULT line ------------------------------

local Output = lu.genericOutput.new()
local Output_MT = { __index = Output }

function Output.new(runner)
  local t = lu.genericOutput.new(runner, lu.VERBOSITY_DEFAULT)
  return setmetatable(t, Output_MT)
end

local started = {}
function Output:startTest(name)
  started[name] = H.now()
end

local function first_line(s)
  s = tostring(s or "")
  return (s:gsub("\n.*", ""))
end

function Output:endTest(node)
  local name = node.testName
  local secs = (H.now() - (started[node.testName] or H.now())) / 1000
  if node:isSuccess() then
    print(("ok   %s (%.2fs)"):format(name, secs))
  elseif node:isSkipped() then
    print(("SKIP %s: %s"):format(name, first_line(node.msg)))
  else
    local kind = node:isError() and " (error)" or ""
    print(("FAIL %s%s: %s"):format(name, kind, first_line(node.msg)))
    local msg = tostring(node.msg or "")
    if msg:find("\n") then
      for line in (msg:match("\n(.*)") or ""):gmatch("[^\n]+") do print("     | " .. line) end
    end
    -- luaunit's own trace, unless the message carries one already
    local trace = tostring(node.stackTrace or "")
    if not msg:find("stack traceback:", 1, true) and trace:find("\n") then
      for line in trace:gmatch("[^\n]+") do print("     | " .. line) end
    end
  end
  io.stdout:flush()
end

local result
function Output:endSuite()
  result = self.result
end

local suite_start = H.now()
local runner = lu.LuaUnit.new()
runner.outputType = Output
io.stdout:setvbuf("line")
local ok, err = pcall(runner.runSuite, runner, table.unpack(arg or {}))
if not ok or not result then
  print("run.lua: the test runner failed: " .. tostring(err))
  print(("RESULT %s: 0 passed, 1 failed, 0 skipped"):format(suite))
  os.exit(1)
end

local failed = result.failureCount + result.errorCount
local passed = result.successCount
local skipped = result.skippedCount
print(("%d tests in %.1fs"):format(passed + failed + skipped, (H.now() - suite_start) / 1000))
print(("RESULT %s: %d passed, %d failed, %d skipped"):format(suite, passed, failed, skipped))
os.exit(failed == 0 and 0 or 1)
