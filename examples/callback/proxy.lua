-- A TCP proxy: every client that connects gets its own connection to the
-- upstream server, and bytes flow both ways.
--
--   lua examples/callback/proxy.lua [listen_address] [upstream_address] [high_water_bytes]
--   (defaults 127.0.0.1:8000, 127.0.0.1:8080, 262144)
--
-- Backpressure: when the side being written to has more than the high-water
-- mark queued (s:pending()), the proxy pauses the side it reads from, and
-- resumes it from on_drain once the queue is empty again. A fast server and
-- a slow client therefore cost the proxy at most about one high-water mark
-- plus one read per direction, however much is transferred; TCP flow control
-- slows the fast side down.
--
-- Half-close: with on_eof set, one side's FIN does not close the pair. It is
-- forwarded with s:shutdown() (after everything queued), and the other
-- direction keeps flowing until its own FIN. A reset on either side resets
-- the other.
--
-- When a pair has closed it prints one line:
--   pair 3 closed: up 52 bytes, down 10485760 bytes, max held up 52 down 327680, pauses 81
-- ("up" is client -> upstream; "max held" is the largest s:pending() seen
-- right after a send, i.e. the most the proxy had queued in that direction.)
local iocore = require "iocore"

local listen_address = arg and arg[1] or "127.0.0.1:8000"
local upstream_address = arg and arg[2] or "127.0.0.1:8080"
local HWM = tonumber(arg and arg[3]) or 256 * 1024

local core = assert(iocore.core { threads = 2 })
local pairs_made = 0

-- Each session has s.other (the session it forwards to), s.pair (the
-- pair's counters) and s.dir ("up" for the client side: what it receives
-- goes up).
local function report(pair)
  if pair.reported then return end
  pair.reported = true
  print(("pair %d closed: up %d bytes, down %d bytes, max held up %d down %d, pauses %d"):format(
    pair.id, pair.bytes.up, pair.bytes.down, pair.held.up, pair.held.down, pair.pauses))
end

local function on_recv(from, data)
  local to, pair = from.other, from.pair
  if not to:send(data) then
    -- the other side is gone (closed or reset): nothing can be forwarded
    from:abort()
    return
  end
  pair.bytes[from.dir] = pair.bytes[from.dir] + #data
  local held = to:pending()
  if held > pair.held[from.dir] then pair.held[from.dir] = held end
  if held > HWM and not to.holding_back then
    -- let the kernel's buffers and TCP flow control hold the rest
    from:pause()
    to.holding_back = true
    pair.pauses = pair.pauses + 1
  end
end

-- The queue towards `to` is empty: let its source read again.
local function on_drain(to)
  if to.holding_back then
    to.holding_back = false
    to.other:resume()
  end
end

-- One side finished sending: pass the FIN on after what is queued.
local function on_eof(from)
  from.other:shutdown()
end

local function on_close(s, err)
  local other = s.other
  if other and not other:closed() then
    if err then other:abort() else other:close() end
  end
  s.done = true
  if other == nil or other.done then report(s.pair) end
end

local function wire(a, b, pair)
  a.other, b.other, a.pair, b.pair = b, a, pair, pair
  for _, s in ipairs({ a, b }) do
    s:on_recv(on_recv)
    s:on_drain(on_drain)
    s:on_eof(on_eof)
    s:on_close(on_close)
  end
end

local server = assert(core:listen(listen_address, {
  on_accept = function(client)
    -- read nothing until the upstream connection is there
    client:pause()
    pairs_made = pairs_made + 1
    local pair = { id = pairs_made, bytes = { up = 0, down = 0 }, held = { up = 0, down = 0 }, pauses = 0 }
    client.dir, client.pair = "up", pair
    client:on_close(function(s, err)
      -- closed before the upstream connection was made
      if s.other then return on_close(s, err) end
      s.done = true
      if s.upstream then s.upstream:abort() end
      report(pair)
    end)
    local upstream, msg = core:connect(upstream_address, {
      connect_timeout = 5000,
      on_connect = function(u, err)
        if err then
          io.stderr:write(("proxy: upstream %s: %s\n"):format(upstream_address, err))
          client:abort()
          return
        end
        if client:closed() then
          u:abort()
          return
        end
        u.dir = "down"
        wire(client, u, pair)
        client:resume()
      end,
    })
    if not upstream then
      io.stderr:write(("proxy: upstream %s: %s\n"):format(upstream_address, msg))
      client:abort()
      return
    end
    client.upstream = upstream
  end,
}))

io.stdout:setvbuf("line")
print(("proxy on %s -> %s (high-water mark %d bytes)"):format(server:address(), upstream_address, HWM))
core:run()
print("proxy stopped")
