-- An HTTP/1.1 server in stream style, with a small router. Every connection
-- runs serve() in a coroutine of its own and reads one request after the
-- other: HTTP/1.1 connections are kept alive (until "Connection: close"),
-- HTTP/1.0 ones are answered and closed (unless "Connection: keep-alive").
-- Request bodies come with Content-Length. A malformed request gets a 400
-- and the connection is closed; a head over MAX_HEAD bytes closes it.
--
--   lua examples/http_server.lua [address] [threads]   (default 127.0.0.1:8080, 2)
--
--   curl http://127.0.0.1:8080/                   -> Hello, World!
--   curl -d 'some text' http://127.0.0.1:8080/echo -> some text
local iocore = require "iocore"

local address = arg[1] or "127.0.0.1:8080"
local threads = tonumber(arg[2]) or 2
local core = assert(iocore.core { threads = threads })

local MAX_HEAD, MAX_BODY = 16384, 1024 * 1024

-- path -> method -> function(request) returning status, body
local routes = {
  ["/"] = { GET = function() return 200, "Hello, World!" end },
  ["/echo"] = { POST = function(req) return 200, req.body end },
  ["/headers"] = { GET = function(req)
    local lines = {}
    for name, value in pairs(req.headers) do lines[#lines + 1] = name .. ": " .. value .. "\n" end
    table.sort(lines)
    return 200, table.concat(lines)
  end },
  ["/fail"] = { GET = function() error("a route that fails") end }, -- answered with a 500
}

local REASONS = { [200] = "OK", [400] = "Bad Request", [404] = "Not Found", [405] = "Method Not Allowed",
                  [413] = "Content Too Large", [500] = "Internal Server Error", [501] = "Not Implemented" }

local function respond(s, status, body, keep_alive, version)
  local connection = not keep_alive and "Connection: close\r\n"
      or version == "1.0" and "Connection: keep-alive\r\n" or ""
  return s:write("HTTP/1.1 " .. status .. " " .. REASONS[status] .. "\r\nContent-Type: text/plain\r\n" ..
    "Content-Length: " .. #body .. "\r\n" .. connection .. "\r\n" .. body)
end

-- One request: { method, path, version, headers (names in lower case), body,
-- keep_alive }; nil at the end of the stream; nil, status for a request
-- that cannot be served.
local function read_request(s)
  local head = s:read_until("\r\n\r\n", MAX_HEAD) -- a longer head closes the connection
  if not head then return nil end
  local method, path, version, pos = head:match("^(%u+) (/%S*) HTTP/(1%.[01])()")
  if not method then return nil, 400 end
  local headers = {}
  while pos <= #head do -- one "\r\nName: value" at a time
    local name, value, after = head:match("^\r\n([%w!#$%%&'*+.^_`|~-]+):[ \t]*([^\r\n]*)()", pos)
    if not name then return nil, 400 end
    headers[name:lower()] = value
    pos = after
  end
  if headers["transfer-encoding"] then return nil, 501 end
  local body, length = "", headers["content-length"]
  if length then
    length = tonumber(length:match("^(%d+)[ \t]*$"))
    if not length then return nil, 400 end
    if length > MAX_BODY then return nil, 413 end
    if headers.expect == "100-continue" then s:write("HTTP/1.1 100 Continue\r\n\r\n") end
    if length > 0 then
      body = s:read(length)
      if not body then return nil end
    end
  end
  local connection = (headers.connection or ""):lower()
  local keep_alive = connection ~= "close" and (version == "1.1" or connection == "keep-alive")
  return { method = method, path = path:match("^[^?]*"), version = version, headers = headers,
           body = body, keep_alive = keep_alive }
end

local function serve(s)
  while true do
    local req, refused = read_request(s)
    if not req then
      if refused then respond(s, refused, REASONS[refused] .. "\n", false) end
      return -- the handler's end closes the connection (after the response)
    end
    local route, status, body = routes[req.path]
    local handle = route and route[req.method]
    if not route then
      status, body = 404, "Not Found\n"
    elseif not handle then
      status, body = 405, "Method Not Allowed\n"
    else
      local ok
      ok, status, body = pcall(handle, req)
      if not ok then
        io.stderr:write("http_server: ", tostring(status), "\n")
        status, body = 500, "Internal Server Error\n"
      end
    end
    respond(s, status, body, req.keep_alive, req.version)
    if not req.keep_alive then return end
  end
end

local server = assert(core:listen(address, { accepts = 64, handler = serve }))
io.stdout:setvbuf("line")
print(("http_server on %s (%s, %d threads)"):format(server:address(), core:backend(), core:threads()))
core:run()
