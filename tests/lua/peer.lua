-- Peers in other processes for the flow, half-close, time-out and stop
-- tests (tests/lua/scripts/peer.pl: slow readers, half-closing writers,
-- readers that never read, a listener whose connects hang). Each runs under
-- its own deadline (it exits by itself) and is killed and reaped by the
-- test class's tearDown (H.reap) whatever happens.
local H = require "helpers"
local lu = H.lu

local P = {}

-- Runs the core for `ms` (no condition).
function P.run_for(core, ms)
  H.wait(core, function() return false end, ms)
end

-- Fails with the first differing byte when `got` is not `want`.
function P.assert_same_bytes(got, want, what)
  if got == want then return end
  local at = 1
  while at <= #got and at <= #want and got:byte(at) == want:byte(at) do at = at + 1 end
  lu.fail(("%s: %d bytes received, %d expected; first difference at byte %d"):format(what, #got, #want, at), 2)
end

local function script() return H.root .. "/tests/lua/scripts/peer.pl" end

-- Writes `data` to a temporary file (removed by H.reap with the process
-- that uses it: the name is kept on the record). Returns the name.
local function temp_with(data)
  local name = os.tmpname()
  local f = assert(io.open(name, "wb"))
  f:write(data)
  f:close()
  return name
end

-- A client of 127.0.0.1:port. o: rcvbuf, send (a string, sent from a file),
-- chunk + interval (send it in pieces of `chunk` bytes, `interval` s apart),
-- shut_wr, read_delay (s), no_read, rate (bytes/s), close_at (bytes),
-- after_eof (a string sent once EOF was read),
-- deadline (s, default 60). What it reads goes to a file: p:received(),
-- p:data(). p:event(pattern) waits for an output line.
function P.client(port, o)
  o = o or {}
  local argv = { "perl", script(), "--port", tostring(port), "--deadline", tostring(o.deadline or 60) }
  local function add(k, v) argv[#argv + 1] = k; argv[#argv + 1] = tostring(v) end
  local sendf
  if o.rcvbuf then add("--rcvbuf", o.rcvbuf) end
  if o.send then sendf = temp_with(o.send); add("--send-file", sendf) end
  if o.chunk then add("--chunk", o.chunk) end
  if o.interval then add("--interval", o.interval) end
  if o.shut_wr then argv[#argv + 1] = "--shut-wr" end
  if o.no_read then argv[#argv + 1] = "--no-read" end
  if o.read_delay then add("--read-delay", o.read_delay) end
  if o.rate then add("--rate", math.floor(o.rate)) end
  if o.after_eof then add("--after-eof", o.after_eof) end
  if o.close_at then add("--close-at", o.close_at) end
  local outf = os.tmpname()
  add("--out", outf)
  local p = H.spawn_argv(argv)
  p.file = outf        -- removed by H.reap
  p.sendf = sendf
  if sendf then
    -- H.reap removes the process's own files; this one goes in P.tearDown
    P.extra_files = P.extra_files or {}
    P.extra_files[#P.extra_files + 1] = sendf
  end
  function p:received()
    local f = io.open(self.file, "rb")
    if not f then return 0 end
    local n = f:seek("end")
    f:close()
    return n
  end
  function p:data() return H.read_file(self.file) or "" end
  -- The number in the last "eof N" line, once there is one.
  function p:eof() return tonumber(self:output():match("eof (%d+)")) end
  return p
end

-- Waits (running core) for the peer to print a line matching pattern.
function P.event(core, p, pattern, ms)
  return H.wait_output(core, p, pattern, ms)
end

-- A listener on 127.0.0.1 that never accepts and whose accept queue is
-- full: a connect to its port hangs (its SYNs are dropped). Returns the
-- process and the port.
function P.blackhole(core)
  local p = H.spawn_argv({ "perl", script(), "--blackhole", "--deadline", "60" })
  local port = tonumber(H.wait_output(core, p, "port (%d+)"))
  lu.assertNotNil(port, "black hole port")
  return p, port
end

-- tearDown for the classes using peers: H.reap, plus the payload files.
function P.tearDown()
  H.reap()
  for _, f in ipairs(P.extra_files or {}) do os.remove(f) end
  P.extra_files = nil
end

-- A test class with P.tearDown.
function P.class()
  return { setUp = H.setUp, tearDown = P.tearDown }
end

-- Whether perl (the peer's interpreter) is here; a test that needs it
-- skips with the reason otherwise.
function P.available()
  if P._have == nil then
    P._have = H.shell_ok("perl -e 'use Socket; use IO::Handle; exit 0' >/dev/null 2>&1")
  end
  return P._have
end

function P.require()
  if not P.available() then lu.skip("perl (perl-base) is not installed: the peer process cannot run") end
end

return P
