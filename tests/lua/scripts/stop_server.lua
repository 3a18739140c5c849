-- A server for the suite's subprocess tests: on receiving "go <n>" it
-- queues n bytes ("0123456789" repeated) and calls core:stop() at once;
-- run() must flush them before it returns. Prints "listening on ADDR",
-- then "run returned <value>" and the final stats.
--
--   lua5.4 tests/lua/scripts/stop_server.lua [address]
local iocore = require "iocore"
local core = assert(iocore.core { threads = 2 })
io.stdout:setvbuf("line")
local closes = {}
local l = assert(core:listen(arg[1] or "127.0.0.1:0", {
  on_recv = function(s, data)
    local n = tonumber(data:match("^go (%d+)"))
    if n then
      s:send(string.rep("0123456789", n // 10 + 1):sub(1, n))
      core:stop()
    end
  end,
  on_close = function(s, err) closes[#closes + 1] = tostring(err) end,
}))
print("listening on " .. l:address())
print("run returned", core:run())
local st = core:stats()
print("on_close", table.concat(closes, ","))
print(("stats active=%d bytes_out=%d"):format(st.active, st.bytes_out))
