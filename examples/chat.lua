-- A line chat: the first line a member sends is its name, every later line
-- goes to every member (the sender too), in the order the server got them.
--
--   lua examples/chat.lua [address]          (default 127.0.0.1:7778)
--
-- The line framing is done in C (framing = "line": on_recv gets one line,
-- whatever the pieces it came in); a line longer than MAX_LINE closes that
-- member only (EMSGSIZE). A message is encoded once into an iocore.buffer
-- that every member's queue shares (core:broadcast), not copied per member.
--
-- Slow readers: a member that does not read would otherwise hold every
-- message sent meanwhile. Its queue is limited to MAX_QUEUE bytes
-- (max_pending): a message that does not fit is not queued for it
-- (broadcast counts it out), and such a member is dropped at once, as is
-- one whose queue makes no progress for STALL ms (write_timeout). The
-- others are told why it left.
local iocore = require "iocore"

local address = arg[1] or "127.0.0.1:7778"
local MAX_LINE, MAX_QUEUE, STALL = 4096, 1024 * 1024, 10000

local core = assert(iocore.core { threads = 2 })
local members, count = {}, 0 -- session -> its name

-- To every member; whoever could not take it is dropped.
local function say(text)
  if core:broadcast(members, iocore.buffer(text)) == count then return end
  local slow = {}
  for s in pairs(members) do
    if s:pending() + #text > MAX_QUEUE then slow[#slow + 1] = s end
  end
  for _, s in ipairs(slow) do
    members[s], count = nil, count - 1
    s:abort() -- what was queued for it goes too
    print(("dropped %s: too slow"):format(s.name))
    say(("* %s dropped: too slow\n"):format(s.name))
  end
end

local server = assert(core:listen(address, {
  framing = { line = true, max = MAX_LINE },
  max_pending = MAX_QUEUE,
  write_timeout = STALL,
  on_recv = function(s, line)
    if s.name then return say(("%s: %s\n"):format(s.name, line)) end
    s.name = line:match("^[%w_.-]+$") and line:sub(1, 32) or s:peer()
    members[s], count = s.name, count + 1
    print("joined " .. s.name)
    say(("* %s joined\n"):format(s.name))
  end,
  on_close = function(s, err)
    if not members[s] then return end
    members[s], count = nil, count - 1
    print("left " .. s.name, err)
    say(("* %s left%s\n"):format(s.name, err and " (" .. err .. ")" or ""))
  end,
}))

io.stdout:setvbuf("line")
print(("chat on %s"):format(server:address()))
core:run()
