-- A TCP proxy in stream style: every client gets its own connection to the
-- upstream server and two light threads (coroutines), one per direction,
-- each a plain read-and-write loop.
--
--   lua examples/proxy.lua [listen_address] [upstream_address]
--   (defaults 127.0.0.1:8000 and localhost:8080; the upstream may be a
--   host name, looked up without blocking)
--
-- Backpressure: write() waits while the session written to has more than
-- its write_hwm (256 KiB) queued, so the loop stops reading and TCP flow
-- control slows the fast side down: a slow reader costs the proxy about
-- write_hwm plus one read per direction, however much goes through.
-- Half-close: a read that returns EOF (that side's FIN) is passed on with
-- shutdown(); the other direction flows on until its own EOF. The loop that
-- finishes last closes the pair; a failure on either side (a reset, a
-- time-out) aborts both. Time-outs: 5 s to connect to the upstream; a
-- session that receives and sends nothing for 5 minutes, or whose send
-- queue makes no progress for 30 s, is closed.
--
-- When a pair is done it prints one line ("up" is client -> upstream; "max
-- held" is the most that was queued towards that side at once):
--   pair 3 closed: up 52 bytes, down 10485760 bytes, max held up 52 down 327680
local iocore = require "iocore"

local listen_address = arg[1] or "127.0.0.1:8000"
local upstream_address = arg[2] or "localhost:8080"
local IDLE, STALL = 300000, 30000 -- ms: idle_timeout and write_timeout of every session

local core = assert(iocore.core { threads = 2 })
local count = 0

-- One direction's loop is over (err: why it failed, nil after an EOF).
local function finish(pair, err)
  if err then
    pair.client:abort()
    pair.upstream:abort()
  end
  pair.running = pair.running - 1
  if pair.running > 0 then return end
  pair.client:close()
  pair.upstream:close()
  print(("pair %d closed: up %d bytes, down %d bytes, max held up %d down %d"):format(
    pair.id, pair.bytes.up, pair.bytes.down, pair.held.up, pair.held.down))
end

-- Copies what `from` sends to `to` until from's EOF, then passes it on.
local function pump(pair, from, to, dir)
  while true do
    local data, msg, code = from:read()
    if not data then
      if code ~= "EOF" then return finish(pair, msg) end
      to:shutdown()
      return finish(pair, nil)
    end
    local held = to:pending() + #data
    if held > pair.held[dir] then pair.held[dir] = held end
    local ok, err = to:write(data) -- waits while `to` holds more than write_hwm
    if not ok then return finish(pair, err) end
    pair.bytes[dir] = pair.bytes[dir] + #data
  end
end

local function serve(client)
  local upstream, err = core:dial(upstream_address,
    { connect_timeout = 5000, idle_timeout = IDLE, write_timeout = STALL })
  if not upstream then
    print(("no upstream for a client: %s: %s"):format(upstream_address, err))
    return client:close()
  end
  client:resume()
  count = count + 1
  local pair = { id = count, client = client, upstream = upstream, running = 2,
                 bytes = { up = 0, down = 0 }, held = { up = 0, down = 0 } }
  core:spawn(pump, pair, upstream, client, "down")
  pump(pair, client, upstream, "up")
end

-- The pumps close the pair, not the end of a handler (a listener's
-- `handler` closes its session when it returns, while the other direction
-- may still be flowing): so the client's light thread is spawned here, and
-- the client is not read from (not even its FIN) until the upstream is there.
local server = assert(core:listen(listen_address, {
  idle_timeout = IDLE, write_timeout = STALL,
  on_accept = function(client)
    client:pause()
    core:spawn(serve, client)
  end,
}))
io.stdout:setvbuf("line")
print(("proxy on %s -> %s"):format(server:address(), upstream_address))
core:run()
print("proxy stopped")
