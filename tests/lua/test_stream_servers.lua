-- Whole servers in stream style, tested with real clients: a RESP (Redis
-- protocol) server, driven by redis-cli and redis-benchmark when they are
-- installed and by hand-split pipelined requests always, and a line echo.
-- They are also the measure of how much shorter stream style is than the
-- callback style of examples/callback/resp_server.lua (the lines between the
-- "-- server:" markers are what the comparison counts).
local H = require "helpers"
local lu = H.lu
local T = require "iocore.test"
require "iocore.stream"

TestStreamServers = H.class()

-- server: resp (stream style)
local db = {}
local function resp(s)
  while true do
    local line = s:read_line()
    if not line then return end
    local args = {}
    if line:byte(1) == 42 then -- "*": an array of bulk strings
      local n = tonumber(line:sub(2))
      if not n or n > 1024 * 1024 then return s:write("-ERR Protocol error\r\n") end
      for i = 1, n do
        local len = tonumber((s:read_line() or ""):match("^%$(%d+)$"))
        local data = len and s:read(len + 2)
        if not data then return s:write("-ERR Protocol error\r\n") end
        args[i] = data:sub(1, len)
      end
    else -- an inline command
      for w in line:gmatch("%S+") do args[#args + 1] = w end
    end
    local cmd = args[1] and args[1]:upper()
    if cmd == "PING" then
      s:write("+PONG\r\n")
    elseif cmd == "SET" and args[3] then
      db[args[2]] = args[3]
      s:write("+OK\r\n")
    elseif cmd == "GET" and args[2] then
      local v = db[args[2]]
      s:write(v and ("$" .. #v .. "\r\n" .. v .. "\r\n") or "$-1\r\n")
    elseif cmd then
      s:write("+OK\r\n")
    end
  end
end
-- server: end

-- server: line echo (stream style)
local function line_echo(s)
  for line in function() return s:read_line() end do s:write(line .. "\n") end
end
-- server: end

-- server: line echo (callback style)
local function line_echo_cb(s, data)
  local buf, out, pos = (s.buf or "") .. data, {}, 1
  for line, e in buf:gmatch("([^\n]*)\n()") do
    out[#out + 1] = line:gsub("\r$", "") .. "\n"
    pos = e
  end
  s.buf = buf:sub(pos)
  if #s.buf > 65536 then return s:close() end
  if #out > 0 then s:send(out) end
end
-- server: end

-- Runs `argv` (a client program) to completion in a subprocess while the
-- core serves; returns its exit status and output.
local function run_client(core, argv, ms)
  local p = H.spawn_argv(argv)
  H.wait_for(core, function() return p:exited() end, argv[1] .. " to finish", ms or 60000)
  return p.status, p:output()
end

local function have(program)
  return os.execute("command -v " .. program .. " >/dev/null 2>&1") == true
end

function TestStreamServers:test_resp_server_answers_redis_cli()
  if not have("redis-cli") then lu.skip("redis-cli is not installed (Debian: redis-tools)") end
  H.with_core(function(core)
    local l = H.listen(core, { handler = resp })
    local port = tostring(l:port())
    local function cli(...)
      local status, out = run_client(core, { "redis-cli", "-h", "127.0.0.1", "-p", port, ... })
      lu.assertEquals(status, 0, out)
      return (out:gsub("%s+$", ""))
    end
    lu.assertEquals(cli("PING"), "PONG")
    lu.assertEquals(cli("SET", "greeting", "hello world"), "OK")
    lu.assertEquals(cli("GET", "greeting"), "hello world")
    lu.assertEquals(cli("GET", "nothing"), "")
    l:close()
  end)
end

-- redis-benchmark pipelines 16 requests per write: the stream reads see
-- many commands per chunk and commands split across chunks. Only
-- correctness is checked here (every request answered); speed is
-- scripts/bench's business.
function TestStreamServers:test_resp_server_serves_pipelined_redis_benchmark()
  if not have("redis-benchmark") then lu.skip("redis-benchmark is not installed (Debian: redis-tools)") end
  H.with_core(function(core)
    local l = H.listen(core, { handler = resp })
    local status, out = run_client(core, { "redis-benchmark", "-h", "127.0.0.1", "-p", tostring(l:port()),
      "-n", "3000", "-c", "4", "-P", "16", "-t", "ping,set,get", "-q" }, 120000)
    lu.assertEquals(status, 0, out)
    for _, t in ipairs { "PING_INLINE", "PING_MBULK", "SET", "GET" } do
      lu.assertStrContains(out, t .. ":", false, "redis-benchmark did not finish " .. t .. ":\n" .. out)
    end
    l:close()
  end)
end

-- Pipelined requests, the whole stream cut into pieces of every size from
-- 1 byte: the answers are the same as for the stream in one piece.
function TestStreamServers:test_resp_server_answers_requests_split_anywhere()
  H.with_core(function(core)
    local l = H.listen(core, { handler = resp })
    local requests = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\r\nb!\r\n" .. "PING\r\n" ..
        "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" .. "*2\r\n$3\r\nGET\r\n$1\r\nz\r\n" .. "\r\n" .. "ECHO x\r\n"
    local expected = "+OK\r\n+PONG\r\n$5\r\na\r\nb!\r\n$-1\r\n+OK\r\n"
    for piece = 1, 7 do
      local c = assert(T.connect(core, l:address()))
      for i = 1, #requests, piece do c:send(requests:sub(i, i + piece - 1)) end
      lu.assertEquals(c:read(#expected), expected, "pieces of " .. piece)
      c:close()
    end
    local c = assert(T.connect(core, l:address()))
    c:send("*1\r\n$x\r\n")
    lu.assertEquals(c:read_line(), "-ERR Protocol error")
    lu.assertTrue(c:wait_closed())
    l:close()
  end)
end

function TestStreamServers:test_line_echo_servers_echo_lines_in_both_styles()
  H.with_core(function(core)
    for _, opts in ipairs { { handler = line_echo }, { on_recv = line_echo_cb } } do
      local l = H.listen(core, opts)
      local c = assert(T.connect(core, l:address()))
      c:send("one\r\ntwo\nthr")
      c:send("ee\n")
      lu.assertEquals(c:read_line(), "one")
      lu.assertEquals(c:read_line(), "two")
      lu.assertEquals(c:read_line(), "three")
      c:close()
      l:close()
    end
  end)
end

-- The lines of code each style takes (code lines: no blank or comment
-- lines), printed for the record; stream style must stay the shorter.
function TestStreamServers:test_stream_style_is_shorter_than_the_callback_resp_server()
  local function code_lines(text)
    local n = 0
    for line in text:gmatch("[^\n]*") do
      if line:match("%S") and not line:match("^%s*%-%-") then n = n + 1 end
    end
    return n
  end
  local me = assert(H.read_file(H.root .. "/tests/lua/test_stream_servers.lua"))
  local servers = {}
  for name, style, body in me:gmatch("\n%-%- server: ([%w ]-) %((%a+) style%)\n(.-)\n%-%- server: end") do
    servers[name .. " " .. style] = code_lines(body)
  end
  local callback = assert(H.read_file(H.root .. "/examples/callback/resp_server.lua"))
  -- the callback example's protocol part: from its first local to core:listen
  local cb_resp = code_lines(callback:match("(local find, sub.-)\nlocal server = ") or callback)
  print(("    code lines: RESP stream style %d, callback style (examples/callback/resp_server.lua) %d; "
    .. "line echo stream style %d, callback style %d"):format(servers["resp stream"], cb_resp,
      servers["line echo stream"], servers["line echo callback"]))
  lu.assertTrue(servers["resp stream"] < cb_resp)
  lu.assertTrue(servers["line echo stream"] < servers["line echo callback"])
end
