-- The stream-style protocol servers of examples/ (resp_server.lua,
-- http_server.lua), run as a user would (lua5.4 examples/X.lua 127.0.0.1:0 1)
-- and driven by real clients in other processes: redis-cli and
-- redis-benchmark, curl and ab. Requests split anywhere and bad input come
-- from a sequential client of the test's own core (iocore.test). Every
-- process is bounded by the waits here and killed by tearDown (H.reap).
local H = require "helpers"
local T = require "iocore.test"
local lu = H.lu

TestServerExamples = H.class()

-- Starts examples/<name>.lua on a free port with one worker thread; returns
-- the process and the address it printed.
local function start(core, name)
  local p = H.spawn(H.root .. "/examples/" .. name .. ".lua", "127.0.0.1:0", "1")
  return p, H.wait_output(core, p, name .. " on (127%.0%.0%.1:%d+)", 20000)
end

local function stop(core, p)
  p:kill("TERM")
  H.wait_for(core, function() return p:exited() end, "the example to exit", 20000)
  lu.assertEquals(p.status, 0, "exit status after SIGTERM; output:\n" .. p:output())
end

-- Runs a client program to completion while the core runs; its exit status
-- and output (stdout and stderr). The client is not under test: it runs
-- without the sanitizer runtimes the suite may be preloaded with (curl
-- hangs with ASan preloaded).
local function run_client(core, argv, ms)
  local p = H.spawn_argv({ "env", "-u", "LD_PRELOAD", table.unpack(argv) })
  H.wait_for(core, function() return p:exited() end, argv[1] .. " to finish", ms or 60000)
  return p.status, p:output()
end

local function need(program, package)
  if not H.shell_ok("command -v " .. program .. " >/dev/null 2>&1") then
    lu.skip(program .. " is not installed (Debian: " .. package .. ")")
  end
end

-- ---- RESP ---------------------------------------------------------------------------

function TestServerExamples:test_resp_server_example_answers_redis_cli()
  need("redis-cli", "redis-tools")
  H.with_core(function(core)
    local p, address = start(core, "resp_server")
    local port = address:match(":(%d+)$")
    local function cli(...)
      local status, out = run_client(core, { "redis-cli", "-h", "127.0.0.1", "-p", port, ... })
      lu.assertEquals(status, 0, out)
      return (out:gsub("%s+$", ""))
    end
    lu.assertEquals(cli("PING"), "PONG")
    lu.assertEquals(cli("PING", "hi there"), "hi there")
    lu.assertEquals(cli("ECHO", "line one\r\nline two"), "line one\r\nline two")
    lu.assertEquals(cli("SET", "greeting", "hello world"), "OK")
    lu.assertEquals(cli("GET", "greeting"), "hello world")
    lu.assertEquals(cli("set", "other", ""), "OK") -- command names in any case
    lu.assertEquals(cli("DEL", "greeting", "other", "nothing"), "2") -- redis-cli without a tty: no "(integer)"
    lu.assertEquals(cli("GET", "greeting"), "")
    lu.assertStrContains(cli("FLUSHALL"), "ERR unknown command 'FLUSHALL'")
    lu.assertStrContains(cli("GET"), "ERR wrong number of arguments for 'get' command")
    stop(core, p)
  end)
end

-- redis-benchmark pipelines 16 requests per write from 4 connections: the
-- server sees many commands per read and commands split across reads.
-- redis-benchmark counts the replies: every test must report all of its
-- requests completed.
function TestServerExamples:test_resp_server_example_answers_every_pipelined_redis_benchmark_request()
  need("redis-benchmark", "redis-tools")
  H.with_core(function(core)
    local p, address = start(core, "resp_server")
    local N = 3200 -- a multiple of 16 x 4, so the pipelines come out even
    local status, out = run_client(core, { "redis-benchmark", "-h", "127.0.0.1", "-p", address:match(":(%d+)$"),
      "-n", tostring(N), "-c", "4", "-P", "16", "-t", "ping,set,get" }, 120000)
    lu.assertEquals(status, 0, out)
    for _, test in ipairs { "PING_INLINE", "PING_MBULK", "SET", "GET" } do
      local done = out:match("=+ " .. test .. " =+%s+(%d+) requests completed")
      lu.assertEquals(tonumber(done), N, test .. " replies counted by redis-benchmark:\n" .. out)
    end
    stop(core, p)
  end)
end

-- Pipelined requests (arrays and inline commands) cut into pieces of every
-- size from 1 byte get the same replies as in one piece; garbage gets a
-- protocol error, then the close, and the server goes on serving others.
function TestServerExamples:test_resp_server_example_answers_split_pipelines_and_closes_on_garbage()
  H.with_core(function(core)
    local p, address = start(core, "resp_server")
    local requests = "*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$5\r\na\r\nb!\r\n" .. "PING\r\n" ..
        "*2\r\n$3\r\nGET\r\n$1\r\nk\r\n" .. "*2\r\n$3\r\nget\r\n$1\r\nz\r\n" .. "\r\n" .. "ECHO x\r\n" ..
        "*3\r\n$3\r\nDEL\r\n$1\r\nk\r\n$1\r\nz\r\n" .. "NOPE\r\n"
    local expected = "+OK\r\n+PONG\r\n$5\r\na\r\nb!\r\n$-1\r\n$1\r\nx\r\n:1\r\n-ERR unknown command 'NOPE'\r\n"
    for _, piece in ipairs { 1, 2, 3, 5, 7, 64 } do
      local c = assert(T.connect(core, address, { timeout = 20000 }))
      for i = 1, #requests, piece do c:send(requests:sub(i, i + piece - 1)) end
      lu.assertEquals(c:read(#expected), expected, "pieces of " .. piece)
      c:close()
    end
    for _, garbage in ipairs { "*1\r\n$x\r\n", "*-5\r\n", "*1\r\n$3\r\nGETxx\r\n", "*1\r\n:3\r\n" } do
      local c = assert(T.connect(core, address, { timeout = 20000 }))
      c:send("PING\r\n" .. garbage .. "PING\r\n")
      lu.assertEquals(c:read_line(), "+PONG")
      lu.assertStrContains(c:read_line(), "-ERR Protocol error", false, ("after %q"):format(garbage))
      lu.assertTrue(c:wait_closed(20000), ("the server closes after %q"):format(garbage))
      lu.assertEquals(c.buf, "", "nothing after the error")
    end
    local c = assert(T.connect(core, address, { timeout = 20000 }))
    c:send("PING\r\n")
    lu.assertEquals(c:read_line(), "+PONG", "still serving")
    c:close()
    stop(core, p)
  end)
end

-- ---- HTTP ---------------------------------------------------------------------------

-- A file name for a Linux program (the suite may run under wine, where
-- os.tmpname() gives Z:\... names; H.spawn_argv converts whole arguments only).
local function unix_path(name)
  return (name:gsub("^[Zz]:", ""):gsub("\\", "/"))
end

-- curl fetches several URLs over one kept-alive connection (--next keeps
-- the connection pool): a GET, a POST whose body is echoed byte for byte, a
-- GET with the request's headers, an unknown path.
function TestServerExamples:test_http_server_example_keeps_curl_connection_alive_and_echoes_post_body()
  need("curl", "curl")
  H.with_core(function(core)
    local p, address = start(core, "http_server")
    local base = "http://" .. address
    local body = H.payload(5000, 7)
    local files = {}
    for i = 1, 5 do files[i] = os.tmpname() end -- the POST body, then the four responses
    local f = assert(io.open(files[1], "wb"))
    f:write(body)
    f:close()
    local status, out = run_client(core, { "curl", "-sS", "-v", "--max-time", "30",
      "-o", files[2], base .. "/",
      "--next", "--data-binary", "@" .. unix_path(files[1]), "-o", files[3], base .. "/echo",
      "--next", "-H", "X-Test: yes", "-o", files[4], base .. "/headers?x=1",
      "--next", "-o", files[5], base .. "/nope" })
    local got = {}
    for i = 2, 5 do got[#got + 1] = H.read_file(files[i]) end
    for _, name in ipairs(files) do os.remove(name) end
    lu.assertEquals(status, 0, out)
    local _, reused = out:gsub("Re%-using existing connection", "")
    lu.assertEquals(reused, 3, "the three later requests on the first connection:\n" .. out)
    local _, ok = out:gsub("< HTTP/1%.1 200 OK", "")
    lu.assertEquals(ok, 3, out)
    lu.assertStrContains(out, "< HTTP/1.1 404 Not Found")
    lu.assertEquals(got[1], "Hello, World!")
    lu.assertTrue(got[2] == body, "the POST body echoed byte for byte")
    lu.assertStrContains(got[3], "x-test: yes\n")
    lu.assertEquals(got[4], "Not Found\n")
    stop(core, p)
  end)
end

local function ab(core, address, keep_alive)
  local argv = { "ab", "-q", "-n", "2000", "-c", "4", "-s", "20" }
  if keep_alive then argv[#argv + 1] = "-k" end
  argv[#argv + 1] = "http://" .. address .. "/"
  local status, out = run_client(core, argv, 120000)
  lu.assertEquals(status, 0, out)
  lu.assertEquals(out:match("Complete requests:%s+(%d+)"), "2000", out)
  lu.assertEquals(out:match("Failed requests:%s+(%d+)"), "0", out)
  lu.assertNil(out:match("Non%-2xx responses"), out)
  return out
end

-- ab sends HTTP/1.0: without -k every request on a new connection the
-- server closes; with -k ("Connection: Keep-Alive") every request is kept
-- alive, which ab only counts when the response says so.
function TestServerExamples:test_http_server_example_serves_ab_with_and_without_keep_alive()
  need("ab", "apache2-utils")
  H.with_core(function(core)
    local p, address = start(core, "http_server")
    local out = ab(core, address, true)
    lu.assertEquals(out:match("Keep%-Alive requests:%s+(%d+)"), "2000", out)
    out = ab(core, address, false)
    lu.assertEquals(out:match("Keep%-Alive requests:%s+(%d+)") or "0", "0", out)
    stop(core, p)
  end)
end

-- Responses split into head and Content-Length body.
local function read_response(c)
  local status = c:read_line()
  if not status then return nil end
  local headers = {}
  while true do
    local line = assert(c:read_line())
    if line == "" then break end
    local name, value = line:match("^([^:]+):%s*(.*)$")
    headers[name:lower()] = value
  end
  return status, headers, assert(c:read(tonumber(headers["content-length"])))
end

-- HTTP/1.1 pipelined and split requests on one connection; HTTP/1.0 is
-- closed after one response unless it asks for keep-alive; a malformed
-- request, a bad Content-Length, a body over the limit and chunked bodies
-- are refused with the status and the close; a route that raises gets a 500.
function TestServerExamples:test_http_server_example_keep_alive_http10_close_and_bad_requests()
  H.with_core(function(core)
    local p, address = start(core, "http_server")
    local c = assert(T.connect(core, address, { timeout = 20000 }))
    local req = "GET / HTTP/1.1\r\nHost: x\r\n\r\n"
    local post = "POST /echo HTTP/1.1\r\nContent-Length: 11\r\n\r\nhello\r\nbody"
    local all = req .. post .. req
    for i = 1, #all, 3 do c:send(all:sub(i, i + 2)) end
    for _, want in ipairs { "Hello, World!", "hello\r\nbody", "Hello, World!" } do
      local status, headers, body = read_response(c)
      lu.assertEquals(status, "HTTP/1.1 200 OK")
      lu.assertNil(headers.connection)
      lu.assertEquals(body, want)
    end
    c:send("POST / HTTP/1.1\r\n\r\n")
    lu.assertEquals((read_response(c)), "HTTP/1.1 405 Method Not Allowed")
    c:send("GET /fail HTTP/1.1\r\n\r\n") -- a route that raises: a 500, the connection lives on
    lu.assertEquals((read_response(c)), "HTTP/1.1 500 Internal Server Error")
    c:send("GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    local status, headers = read_response(c)
    lu.assertEquals(status, "HTTP/1.1 200 OK")
    lu.assertEquals(headers.connection, "close")
    lu.assertTrue(c:wait_closed(20000), "closed after Connection: close")

    c = assert(T.connect(core, address, { timeout = 20000 }))
    c:send("GET / HTTP/1.0\r\n\r\n")
    status, headers = read_response(c)
    lu.assertEquals(status, "HTTP/1.1 200 OK")
    lu.assertEquals(headers.connection, "close")
    lu.assertTrue(c:wait_closed(20000), "HTTP/1.0 closed after one response")
    c = assert(T.connect(core, address, { timeout = 20000 }))
    c:send("GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\nGET / HTTP/1.0\r\n\r\n")
    status, headers = read_response(c)
    lu.assertEquals(headers.connection, "keep-alive")
    status, headers = read_response(c)
    lu.assertEquals(headers.connection, "close")
    lu.assertTrue(c:wait_closed(20000))

    local bad = {
      { "GARBAGE\r\n\r\n", "400 Bad Request" },
      { "GET / HTTP/1.1\r\nno colon here\r\n\r\n", "400 Bad Request" },
      { "GET / HTTP/2.0\r\n\r\n", "400 Bad Request" },
      { "POST /echo HTTP/1.1\r\nContent-Length: -3\r\n\r\n", "400 Bad Request" },
      { "POST /echo HTTP/1.1\r\nContent-Length: 2000000\r\n\r\n", "413 Content Too Large" },
      { "POST /echo HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", "501 Not Implemented" },
      { "GET / HTTP/1.1\r\nHost: x\n\r\n\r\n", "400 Bad Request" }, -- a bare LF in a header
      { "GET / HTTP/1.1x\r\n\r\n", "400 Bad Request" },
    }
    for _, case in ipairs(bad) do
      c = assert(T.connect(core, address, { timeout = 20000 }))
      c:send(case[1])
      status, headers = read_response(c)
      lu.assertEquals(status, "HTTP/1.1 " .. case[2], ("for %q"):format(case[1]:sub(1, 60)))
      lu.assertEquals(headers.connection, "close")
      lu.assertTrue(c:wait_closed(20000), ("closed after %q"):format(case[1]:sub(1, 60)))
    end
    -- a head longer than the limit (16 KiB) closes the connection
    c = assert(T.connect(core, address, { timeout = 20000 }))
    c:send("GET / HTTP/1.1\r\n" .. ("X: y\r\n"):rep(3000))
    lu.assertTrue(c:wait_closed(20000), "an over-long head closes the connection")
    -- many headers within the limit are fine
    c = assert(T.connect(core, address, { timeout = 20000 }))
    c:send("GET /headers HTTP/1.1\r\n" .. ("X-%d: y\r\n"):rep(500):gsub("%%d", "n") .. "Connection: close\r\n\r\n")
    status, headers = read_response(c)
    lu.assertEquals(status, "HTTP/1.1 200 OK")
    lu.assertTrue(c:wait_closed(20000))
    stop(core, p)
  end)
end

-- ---- docs -----------------------------------------------------------------------------

-- docs/protocols.md quotes the RESP example's request reader: the quote is
-- the example's code, character for character.
function TestServerExamples:test_protocols_doc_quotes_the_resp_example_verbatim()
  local doc = assert(H.read_file(H.root .. "/docs/protocols.md"))
  local example = assert(H.read_file(H.root .. "/examples/resp_server.lua"))
  local quote = doc:match("```lua\n(local function read_request%(s%).-\nend\n)```")
  lu.assertNotNil(quote, "the read_request quote in docs/protocols.md")
  -- the doc's copy carries comments of its own: compare the code
  local function code(text)
    return (text:gsub("%s*%-%-[^\n]*", ""))
  end
  lu.assertStrContains(code(example), code(quote))
end
