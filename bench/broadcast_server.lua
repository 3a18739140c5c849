-- The broadcast benchmark's server (scripts/bench job 13): every accepted
-- session is a member; a "b" from any member sends one 1 KiB message to all
-- of them, either with one core:broadcast (mode "broadcast": the message is
-- encoded once, one buffer) or with a loop of s:send(string) (mode "loop").
-- A "q" answers that session alone with a stats line: the most buffers and
-- buffer bytes alive right after a round's sends were queued, the rounds
-- so far, and the process CPU time (os.clock) spent inside the sending
-- calls per copy queued (on io_uring the kernel's send runs after the
-- handler, so this is the cost of the call itself).
--
--   lua bench/broadcast_server.lua address threads broadcast|loop
local iocore = require "iocore"

local address = arg[1] or "127.0.0.1:9013"
local threads = tonumber(arg[2]) or 1
local mode = arg[3] or "broadcast"
assert(mode == "broadcast" or mode == "loop", "mode: broadcast or loop")

local core = assert(iocore.core { threads = threads })
local MSG = ("m"):rep(1023) .. "\n"
local members, list, dirty = {}, {}, false
local rounds, max_buffers, max_bytes = 0, 0, 0

-- the array of members, rebuilt after joins and leaves (both modes use it)
local function member_list()
  if dirty then
    list = {}
    for s in pairs(members) do list[#list + 1] = s end
    dirty = false
  end
  return list
end

local clock, call_secs, queued = os.clock, 0, 0

local function round()
  local ss = member_list()
  local t0 = clock()
  if mode == "broadcast" then
    queued = queued + core:broadcast(ss, MSG)
  else
    for i = 1, #ss do
      if ss[i]:send(MSG) then queued = queued + 1 end
    end
  end
  call_secs = call_secs + (clock() - t0)
  local st = core:stats()
  if st.buffers > max_buffers then max_buffers = st.buffers end
  if st.buffer_bytes > max_bytes then max_bytes = st.buffer_bytes end
  rounds = rounds + 1
end

assert(core:listen(address, {
  on_accept = function(s)
    members[s] = true
    dirty = true
  end,
  on_recv = function(s, data)
    for i = 1, #data do
      local c = data:byte(i)
      if c == 98 then -- "b"
        round()
      elseif c == 113 then -- "q"
        s:send(("stats mode=%s rounds=%d max_buffers=%d max_buffer_bytes=%d members=%d call_us_per_msg=%.4f\n")
          :format(mode, rounds, max_buffers, max_bytes, #member_list(), queued > 0 and call_secs * 1e6 / queued or 0))
      end
    end
  end,
  on_close = function(s)
    members[s] = nil
    dirty = true
  end,
}))
io.stdout:write("listening ", address, " ", mode, "\n")
io.stdout:flush()
core:run()
