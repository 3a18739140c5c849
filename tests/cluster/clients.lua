-- Test client: N connections to ADDRESS (at most C at once), each sends one
-- line and waits for one line back; prints every reply as "reply <line>"
-- and a last line "done <replies> <failures>".
--   lua5.4 tests/cluster/clients.lua ADDRESS N C
local iocore = require "iocore"
local address, total, width = arg[1], tonumber(arg[2]), tonumber(arg[3] or 50)
local core = assert(iocore.core { threads = 1 })
local started, finished, replies, failures = 0, 0, 0, 0
io.stdout:setvbuf("line")

local launch
local function finish(s, ok, why)
  if s.done then return end
  s.done = true
  finished = finished + 1
  if ok then replies = replies + 1 else failures = failures + 1; print("failure " .. tostring(why)) end
  s:close()
  if finished == total then core:stop() else launch() end
end

function launch()
  if started >= total then return end
  started = started + 1
  local n = started
  core:connect(address, {
    on_connect = function(s, err)
      if err then finish(s, false, err) return end
      s.buffer = ""
      s:send(("hello %d\n"):format(n))
    end,
    on_recv = function(s, data)
      s.buffer = s.buffer .. data
      local line = s.buffer:match("^([^\n]*)\n")
      if line then print("reply " .. line); finish(s, true) end
    end,
    on_close = function(s, err) finish(s, false, err or "closed before a reply") end,
  })
end

for _ = 1, math.min(width, total) do launch() end
local stopped = core:run(60000)
core:close()
print(("done %d %d%s"):format(replies, failures, stopped and "" or " (timed out)"))
os.exit(replies == total and 0 or 1)
