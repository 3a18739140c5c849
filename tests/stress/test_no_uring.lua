-- io_uring unavailable: the process runs under tests/stress/no_uring, a
-- seccomp filter that makes io_uring_setup/enter/register fail with ENOSYS
-- (an old kernel) or EPERM (a container's seccomp profile).
local lu = require "luaunit"
local S = require "lib"

TestNoUring = S.class()

local SCRIPT = [[
local iocore = require "iocore"
print("backends=" .. table.concat(iocore.backends(), ","))
local c = assert(iocore.core { threads = 2, signals = false })
print("backend=" .. c:backend())
local r = table.pack(iocore.core { backend = "io_uring", signals = false })
print("forced=" .. tostring(r[3]))
local l = assert(c:listen("127.0.0.1:0", { on_recv = function(s, d) s:send(d) end }))
local got
c:connect(l:address(), {
  on_connect = function(s) s:send("ping") end,
  on_recv = function(s, d) got = d; s:close() end,
})
local t0 = os.time()
while not got and os.time() - t0 < 5 do c:run(10) end
print("echo=" .. tostring(got))
]]

local function run_under(errno)
  local p = S.spawn({ S.bin .. "/no_uring", "--errno", errno, S.lua, "-e", SCRIPT }, { unset = { "IOCORE_BACKEND" } })
  local status = p:wait(20000)
  lu.assertEquals(status, 0, "exit status\n--- stdout:\n" .. p:output() .. "--- stderr:\n" .. p:errors())
  local out = S.parse_kv(p:output():gsub("\n", " "))
  local lines = {}
  for line in p:errors():gmatch("[^\n]+") do lines[#lines + 1] = line end
  return out, lines
end

local function check(errno)
  local out, lines = run_under(errno)
  S.note("under no_uring --errno %s: backends {%s}, auto chose %s, log: %s", errno, tostring(out.backends),
    tostring(out.backend), lines[1] or "(none)")
  lu.assertEquals(out.backends, "epoll", "iocore.backends() should list epoll alone")
  lu.assertEquals(out.backend, "epoll", "auto should fall back to epoll")
  lu.assertEquals(out.forced, "ENOSYS", "backend = \"io_uring\" asked explicitly")
  lu.assertEquals(out.echo, "ping", "no echo on the fallback backend")
  lu.assertEquals(#lines, 1, "log lines on stderr:\n" .. table.concat(lines, "\n"))
  local pat = "^iocore: io_uring unavailable %(" .. errno .. ": .+%), using epoll$"
  lu.assertNotNil(lines[1]:match(pat), ("the log line %q does not match %q"):format(lines[1], pat))
end

-- io_uring_setup fails with ENOSYS: `auto` picks epoll, saying so in exactly
-- one log line that names both; iocore.backends() lists epoll only; asking
-- for io_uring explicitly is ENOSYS; the fallback serves an echo.
function TestNoUring:test_auto_falls_back_to_epoll_enosys()
  check("ENOSYS")
end

-- The same with EPERM (what Docker's default seccomp profile answers).
function TestNoUring:test_auto_falls_back_to_epoll_eperm()
  check("EPERM")
end

-- The stress server itself under the launcher (auto backend): 50 echo
-- connections for 2 s, every byte back; one log line, no more.
function TestNoUring:test_server_under_load_on_the_fallback()
  local srv = S.server({}, { spawn = { wrap = { S.bin .. "/no_uring" }, unset = { "IOCORE_BACKEND" } } })
  local base = srv.start_stats
  local r = S.loadgen("echo", srv:addr(), { conns = 50, duration = 2 }):result(30000)
  S.check(r, "ok", 50)
  S.check(r, "mismatches", 0)
  S.assert_no_leak(srv, base)
  S.stop_server(srv)
  local lines = {}
  for line in srv:errors():gmatch("[^\n]+") do lines[#lines + 1] = line end
  lu.assertEquals(#lines, 1, "server log:\n" .. table.concat(lines, "\n"))
  lu.assertNotNil(lines[1]:match("io_uring unavailable.*using epoll"), lines[1])
  S.note("server under no_uring: %s; %d connections echoed %.1f MiB", lines[1], r.ok, r.bytes_recv / 2 ^ 20)
end
