-- Clients in other processes for the example tests, written with python3
-- sockets (tests/lua/scripts/sockpeer.py), and the examples themselves as
-- subprocesses. Each peer runs under its own deadline (it exits by itself)
-- and is killed and reaped by the test class's tearDown whatever happens;
-- the files it used go with it.
local H = require "helpers"
local lu = H.lu

local Y = {}

local files = {}

-- A temporary file holding `data`, removed by Y.tearDown.
function Y.temp(data)
  local name = os.tmpname()
  files[#files + 1] = name
  if data then
    local f = assert(io.open(name, "wb"))
    f:write(data)
    f:close()
  end
  return name
end

-- Skips the test unless python3 is here.
function Y.require()
  if Y.have == nil then Y.have = H.shell_ok("python3 -c 'import socket, threading' >/dev/null 2>&1") end
  if not Y.have then lu.skip("python3 is not installed: the client process cannot run") end
end

-- A python3 client of 127.0.0.1:port. o: send (a string), shut_wr,
-- read_delay (s), rcvbuf, after_eof (a string), chat (a name), lines (an
-- array of lines, chat mode), no_read, deadline (s, default 60).
-- p:data() is what it read, p:eof() its byte count once it saw EOF.
function Y.client(port, o)
  o = o or {}
  local argv = { "python3", H.root .. "/tests/lua/scripts/sockpeer.py", "--port", tostring(port),
                 "--deadline", tostring(o.deadline or 60) }
  local function add(k, v) argv[#argv + 1] = k; argv[#argv + 1] = tostring(v) end
  if o.send then add("--send-file", Y.temp(o.send)) end
  if o.shut_wr then argv[#argv + 1] = "--shut-wr" end
  if o.read_delay then add("--read-delay", o.read_delay) end
  if o.rcvbuf then add("--rcvbuf", o.rcvbuf) end
  if o.after_eof then add("--after-eof", o.after_eof) end
  if o.chat then add("--chat", o.chat) end
  if o.lines then add("--lines", Y.temp(table.concat(o.lines, "\n") .. "\n")) end
  if o.no_read then argv[#argv + 1] = "--no-read" end
  local out = Y.temp()
  add("--out", out)
  local p = H.spawn_argv(argv)
  function p:data() return H.read_file(out) or "" end
  -- The last n bytes it read (cheap to poll while a large read goes on).
  function p:tail(n)
    local f = io.open(out, "rb")
    if not f then return "" end
    local size = f:seek("end")
    f:seek("set", math.max(0, size - n))
    local t = f:read("a") or ""
    f:close()
    return t
  end
  function p:eof() return tonumber(self:output():match("eof (%d+)")) end
  return p
end

-- Members `names` of a chat at 127.0.0.1:port in one python3 process
-- (sockpeer.py --group): they join in order, then the last one sends
-- `lines`, never more than `window` bytes ahead of the slowest member's
-- reading, and half-closes. p:member(name) is what that member read.
function Y.group(port, names, lines, window, deadline)
  local out = Y.temp()
  local p = H.spawn_argv({ "python3", H.root .. "/tests/lua/scripts/sockpeer.py", "--port", tostring(port),
    "--group", table.concat(names, ","), "--lines", Y.temp(table.concat(lines, "\n") .. "\n"),
    "--window", tostring(window), "--out", out, "--deadline", tostring(deadline or 120) })
  for _, name in ipairs(names) do files[#files + 1] = out .. "." .. name end
  function p:member(name) return H.read_file(out .. "." .. name) or "" end
  return p
end

-- Waits (running core) for the process to print a line matching pattern.
function Y.event(core, p, pattern, ms)
  return H.wait_output(core, p, pattern, ms or 30000)
end

-- Starts examples/<script> with args; returns the process.
function Y.example(script, ...)
  return H.spawn(H.root .. "/examples/" .. script, ...)
end

-- SIGTERM, then the exit status must be 0.
function Y.stop(core, p)
  p:kill("TERM")
  H.wait_for(core, function() return p:exited() end, "the example to exit", 20000)
  lu.assertEquals(p.status, 0, "exit status after SIGTERM; output:\n" .. p:output())
end

-- The resident set of a process in KiB (Linux /proc), or nil.
function Y.rss_kib(p)
  local pid = p:getpid()
  local text = pid and H.read_file("/proc/" .. pid .. "/status")
  return text and tonumber(text:match("VmRSS:%s*(%d+)"))
end

function Y.tearDown()
  H.reap()
  for _, f in ipairs(files) do os.remove(f) end
  files = {}
end

function Y.class()
  return { setUp = H.setUp, tearDown = Y.tearDown }
end

return Y
