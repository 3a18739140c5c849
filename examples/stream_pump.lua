-- Streaming a large response with an on_drain pump: each client gets
-- `bytes` bytes of generated data, produced chunk by chunk only as fast as
-- the client reads, so the server never holds more than about max_pending
-- per client however large the stream is.
--
--   lua examples/stream_pump.lua [address] [bytes]
--   (defaults 127.0.0.1:7780, 64 MiB)
--
-- The stream is 16-byte records: the record's index as 15 decimal digits,
-- then "\n" ("000000000000000\n000000000000001\n..."), cut at `bytes`.
--
-- The pump is the usual pattern: send until a send is refused with ENOBUFS
-- (more than max_pending queued), then wait for on_drain, which follows
-- every refusal, and go on. A refused send queued nothing, so the same chunk
-- is sent again. When everything is queued the session is closed gracefully:
-- close() waits for the client to read the rest.
local iocore = require "iocore"

local address = arg and arg[1] or "127.0.0.1:7780"
local TOTAL = tonumber(arg and arg[2]) or 64 * 1024 * 1024
local CHUNK = 64 * 1024     -- bytes per send (a multiple of 16)

local core = assert(iocore.core { threads = 2 })

-- The chunk of the stream starting at byte `offset` (a multiple of 16).
local function chunk_at(offset)
  local n = math.min(CHUNK, TOTAL - offset)
  local first = offset // 16
  local recs = {}
  for i = 0, (n + 15) // 16 - 1 do recs[#recs + 1] = ("%015d\n"):format(first + i) end
  return table.concat(recs):sub(1, n)
end

local function pump(s)
  while s.offset < TOTAL do
    s.chunk = s.chunk or chunk_at(s.offset)
    local ok, _, code = s:send(s.chunk)
    if not ok then
      if code == "ENOBUFS" then s.refusals = s.refusals + 1 end
      return -- ENOBUFS: on_drain calls pump again; ECLOSED: the client left
    end
    s.offset = s.offset + #s.chunk
    s.chunk = nil
  end
  if not s:closed() then
    s:close()
    print(("stream to %s queued: %d bytes, %d refusals"):format(s:peer(), s.offset, s.refusals))
  end
end

local server = assert(core:listen(address, {
  max_pending = 1024 * 1024,
  on_accept = function(s)
    s.offset, s.refusals = 0, 0
    pump(s)
  end,
  on_drain = pump,
  on_close = function(s, err)
    print(("stream to %s closed: %s"):format(s:peer(), err or "ok"))
  end,
}))

io.stdout:setvbuf("line")
print(("streaming %d bytes per client on %s"):format(TOTAL, server:address()))
core:run()
print("server stopped")
