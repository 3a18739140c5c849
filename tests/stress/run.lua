-- The reliability ("hard to break") suite's entry point:
--
--   IOCORE_BACKEND=epoll LUA_CPATH="build/bin/debug/?.so;;" STRESS_BIN=build/bin/debug \
--     lua5.4 tests/stress/run.lua [--long] [--list] [--except PATTERN]... [PATTERN...]
--
-- Runs every test of tests/stress/test_*.lua, each in a process of its own
-- under a watchdog (`timeout`): a test that deadlocks or crashes fails alone,
-- with the reason. A test's time limit is its class's `limits[name]`
-- ({quick, long} seconds) or 120 s / 900 s. Output, one line per test:
--   ok   TestClass.test_name (1.23s)
--   FAIL TestClass.test_name: message
--   SKIP TestClass.test_name: reason
-- with the numbers a test reports as "# ..." lines under it, and, last,
--   RESULT stress-<backend>: P passed, F failed, S skipped
-- --long (or STRESS_LONG=1): the long form (sizes of scripts/stress).
-- PATTERN: Lua patterns; a test runs if its "Class.name" matches one
-- (and matches no --except pattern).
-- Exits 0 when F is 0, 1 otherwise, 77 when the backend asked for is not
-- available here. STRESS_BIN: where loadgen and no_uring are.
--
-- `run.lua --one Class.name` runs one test in this process (what the
-- watchdog wraps; handy under a debugger).

local dir = (arg and arg[0] or ""):match("^(.*)[/\\][^/\\]*$") or "."
local root = dir .. "/../.."
package.path = dir .. "/?.lua;" .. root .. "/lua/?.lua;" .. root .. "/lua/?/init.lua;" .. package.path

local args, patterns, excepts, one, list = {}, {}, {}, nil, false
do
  local i = 1
  while arg[i] do
    local a = arg[i]
    if a == "--long" then
      -- read by lib.lua, and by each test process through the environment
      args.long = true
    elseif a == "--one" then
      i = i + 1
      one = arg[i]
    elseif a == "--list" then
      list = true
    elseif a == "--except" then
      i = i + 1
      excepts[#excepts + 1] = arg[i]
    else
      patterns[#patterns + 1] = a
    end
    i = i + 1
  end
end
if args.long and os.getenv("STRESS_LONG") ~= "1" then
  -- re-run with STRESS_LONG=1 so lib.lua (and every child) sees it
  local q = {}
  for i = -1, #arg do
    if arg[i] and arg[i] ~= "--long" then q[#q + 1] = "'" .. arg[i]:gsub("'", "'\\''") .. "'" end
  end
  local ok, how, code = os.execute("STRESS_LONG=1 " .. table.concat(q, " "))
  os.exit(how == "exit" and code or 1)
end

local lu = require "luaunit"
local S = require "lib"
S.lua = (arg and arg[-1]) or "lua5.4"
S.root = root

local backend_env = S.backend
local suite = "stress-" .. (backend_env or "auto")

-- ---- loading the tests ---------------------------------------------------------------

local function test_files()
  local files = {}
  local p = io.popen("ls " .. S.shq(dir) .. " 2>/dev/null")
  for name in p:lines() do
    if name:match("^test_.*%.lua$") then files[#files + 1] = name end
  end
  p:close()
  table.sort(files)
  return files
end

local function load_tests()
  for _, name in ipairs(test_files()) do dofile(dir .. "/" .. name) end
  local tests = {}
  for cname, class in pairs(_G) do
    if type(cname) == "string" and cname:match("^Test") and type(class) == "table" then
      for mname, fn in pairs(class) do
        if type(mname) == "string" and mname:match("^test") and type(fn) == "function" then
          local info = debug.getinfo(fn, "S")
          tests[#tests + 1] = { class = cname, name = mname, full = cname .. "." .. mname,
                                file = info.short_src, line = info.linedefined, limits = class.limits }
        end
      end
    end
  end
  table.sort(tests, function(a, b)
    if a.file ~= b.file then return a.file < b.file end
    return a.line < b.line
  end)
  return tests
end

-- ---- one test, in this process --------------------------------------------------------------

if one then
  local ok_mod, iocore = pcall(require, "iocore")
  if not ok_mod then
    print("FAIL " .. one .. ": cannot load the iocore module: " .. tostring(iocore))
    os.exit(1)
  end
  load_tests()
  local cname, mname = one:match("^([^.]+)%.(.+)$")
  local class = cname and _G[cname]
  if not class or type(class[mname]) ~= "function" then
    print("FAIL " .. one .. ": no such test")
    os.exit(1)
  end
  local status, msg
  local function handler(e)
    if type(e) == "table" and e.class then return e end -- luaunit's own
    if type(e) == "string" and (e:find(lu.FAILURE_PREFIX, 1, true) or e:find(lu.SKIP_PREFIX, 1, true)) then
      return e
    end
    return debug.traceback(tostring(e), 2)
  end
  local ok, err = true, nil
  if class.setUp then ok, err = xpcall(class.setUp, handler, class) end
  if ok then ok, err = xpcall(class[mname], handler, class) end
  if class.tearDown then
    local ok2, err2 = xpcall(class.tearDown, handler, class)
    if ok and not ok2 then ok, err = ok2, err2 end
  end
  S.cleanup()
  if ok then
    print("PASS")
    os.exit(0)
  end
  msg = type(err) == "table" and tostring(err.msg) or tostring(err)
  if msg:find(lu.SKIP_PREFIX, 1, true) then
    msg = msg:gsub("^.-" .. lu.SKIP_PREFIX:gsub("%p", "%%%0"), "")
    print("SKIP " .. msg)
    os.exit(0)
  end
  msg = msg:gsub(lu.FAILURE_PREFIX:gsub("%p", "%%%0"), "")
  print("FAIL " .. msg)
  os.exit(1)
end

-- ---- the suite -------------------------------------------------------------------------------

local ok_mod, iocore = pcall(require, "iocore")
if not ok_mod then
  print("run.lua: cannot load the iocore module (LUA_CPATH=" .. tostring(os.getenv("LUA_CPATH")) .. "):")
  print(iocore)
  print(("RESULT %s: 0 passed, 1 failed, 0 skipped"):format(suite))
  os.exit(1)
end
do
  local probe, err, code = iocore.core { threads = 1, signals = false }
  if not probe then
    print(("SKIP: backend %s not available here: %s"):format(tostring(backend_env), tostring(err)))
    if code == "ENOSYS" then os.exit(77) end
    print(("RESULT %s: 0 passed, 1 failed, 0 skipped"):format(suite))
    os.exit(1)
  end
  if not backend_env then suite = "stress-" .. probe:backend() end
  print(("iocore %s, backend %s, %s form, suite %s"):format(iocore.version, probe:backend(),
    S.long and "long" or "quick", suite))
  probe:close()
end
for _, tool in ipairs({ "loadgen", "no_uring" }) do
  if not io.open(S.bin .. "/" .. tool, "r") then
    print(("run.lua: %s/%s is missing (build it: make -C build config=debug %s)"):format(S.bin, tool, tool))
    print(("RESULT %s: 0 passed, 1 failed, 0 skipped"):format(suite))
    os.exit(1)
  end
end

local tests = load_tests()
local selected = {}
for _, t in ipairs(tests) do
  local want = #patterns == 0
  for _, p in ipairs(patterns) do
    if t.full:match(p) then want = true end
  end
  for _, p in ipairs(excepts) do
    if t.full:match(p) then want = false end
  end
  if want then selected[#selected + 1] = t end
end
if list then
  for _, t in ipairs(selected) do print(t.full) end
  os.exit(0)
end

io.stdout:setvbuf("line")
local passed, failed, skipped = 0, 0, 0
local t_suite = S.now()
for _, t in ipairs(selected) do
  local lim = t.limits and t.limits[t.name]
  local limit = lim and (S.long and lim[2] or lim[1]) or (S.long and 900 or 120)
  local out = S.tmpname("test")
  local t0 = S.now()
  local cmd = ("STRESS_TMP=%s timeout -k 5 %d %s %s --one %s >%s 2>&1"):format(S.shq(S.tmpdir()), limit,
    S.shq(S.lua), S.shq(arg[0]), S.shq(t.full), S.shq(out))
  local _, how, code = os.execute(cmd)
  local secs = (S.now() - t0) / 1000
  local text = S.read_file(out) or ""
  local verdict = text:match("\n(PASS)%s*$") or text:match("^(PASS)%s*$")
  local last = text:match("([^\n]*)\n?$")
  local notes = {}
  for line in text:gmatch("[^\n]+") do
    if line:match("^# ") then notes[#notes + 1] = line end
  end
  local function show_notes()
    for _, n in ipairs(notes) do print("     " .. n) end
  end
  if how == "exit" and code == 0 and verdict == "PASS" then
    passed = passed + 1
    print(("ok   %s (%.1fs)"):format(t.full, secs))
    show_notes()
  elseif how == "exit" and code == 0 and last:match("^SKIP ") then
    skipped = skipped + 1
    print(("SKIP %s: %s"):format(t.full, last:sub(6)))
  else
    failed = failed + 1
    local why
    if how == "exit" and (code == 124 or code == 137) then
      why = ("killed by the watchdog after %d s (deadlock or hang)"):format(limit)
    elseif how ~= "exit" or code > 128 then
      why = ("crashed (%s %s)"):format(how, tostring(code))
    else
      local fail = text:match("\nFAIL ([^\n]*)") or text:match("^FAIL ([^\n]*)")
      why = fail or ("exit %s"):format(tostring(code))
    end
    print(("FAIL %s: %s (%.1fs)"):format(t.full, why, secs))
    show_notes()
    -- the rest of the failure message and what the test printed
    local body = text:match("\nFAIL [^\n]*\n(.*)$") or text:match("^FAIL [^\n]*\n(.*)$")
    if not body or body == "" then body = text end
    local n = 0
    for line in body:gmatch("[^\n]+") do
      if not line:match("^# ") then
        n = n + 1
        if n > 40 then print("     | ...") break end
        print("     | " .. line)
      end
    end
  end
  os.remove(out)
end
S.cleanup()
print(("%d tests in %.1fs"):format(passed + failed + skipped, (S.now() - t_suite) / 1000))
print(("RESULT %s: %d passed, %d failed, %d skipped"):format(suite, passed, failed, skipped))
os.exit(failed == 0 and 0 or 1)
