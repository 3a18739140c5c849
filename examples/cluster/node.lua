-- A chat node of the cluster example: members connected to any node talk
-- to each other through Redis pub/sub. Started by examples/cluster/start
-- (HAProxy in front of several of these), or by hand:
--
--   lua5.4 examples/cluster/node.lua NAME LISTEN HEALTH REDIS [proxy]
--   lua5.4 examples/cluster/node.lua n1 127.0.0.1:7801 127.0.0.1:7901 127.0.0.1:6379 proxy
--
-- LISTEN: the chat port (HAProxy's servers). With "proxy", every connection
-- starts with a PROXY protocol header (HAProxy's send-proxy-v2) and the
-- listener's `proxy_protocol = true` makes s:peer() the member's real
-- address. "proxy-lua" reads the header here instead, for an iocore build
-- whose listeners do not have that option yet (examples/cluster/start
-- picks). HEALTH: a port HAProxy's health check
-- connects to (accepted and closed). REDIS: host:port.
--
-- The protocol, one line each way:
--   node -> member   "hello <member's address> <node>"  on joining
--                    "msg <sender's address> <text>"    every line of every member
--                    "ok" | "failed <why>"              the answer to each line sent
--   member -> node   "<text>"
-- "ok" means the line reached every live node; "failed" means it may have
-- reached some members or none (Redis down, a node gone, not subscribed):
-- a line is never lost silently. What a node shares with the others is
-- Redis only; when it dies, its own members' connections go with it.
local iocore = require "iocore"
local redis = require "iocore.redis"

local name, listen_addr, health_addr, redis_addr, mode = arg[1], arg[2], arg[3], arg[4], arg[5]
if not (name and listen_addr and health_addr and redis_addr) or
    (mode and mode ~= "proxy" and mode ~= "proxy-lua") then
  io.stderr:write("usage: lua5.4 node.lua NAME LISTEN HEALTH REDIS [proxy|proxy-lua]\n")
  os.exit(2)
end

local CHANNEL = "iocore-chat"
local NODES = "iocore-chat:nodes" -- sorted set: node name -> last heartbeat (Redis time, ms)
local LIVE_MS = 3000              -- a node without a heartbeat for this long is gone
local BEAT_MS = 500

local core = assert(iocore.core { threads = 2 })
io.stdout:setvbuf("line")
local function log(fmt, ...) print(("node %s: " .. fmt):format(name, ...)) end

local members = {}      -- session -> true
local subscribed = false
local peers = {}        -- node name -> last heartbeat (Redis time, ms), as last seen
local redis_now = 0     -- Redis time at the last heartbeat
local outage = false    -- heartbeats have been failing

-- How many nodes a line must reach: every node seen alive in the last LIVE_MS.
local function live_nodes()
  local n = 0
  for _, t in pairs(peers) do
    if t >= redis_now - LIVE_MS then n = n + 1 end
  end
  return n
end

local pub = redis.new(core, redis_addr, { timeout = 2000, connect_timeout = 1000 })
local sub = redis.new(core, redis_addr, { timeout = 2000, connect_timeout = 1000 })

-- ---- members -----------------------------------------------------------------------

local function broadcast(line)
  for s in pairs(members) do
    local ok, _, code = s:send(line)
    if not ok and code == "ENOBUFS" then s:abort() end -- a member that does not read
  end
end

-- The PROXY protocol header (v2, or v1) at the start of a connection, read
-- in Lua: the client's address, or nil and why. Only for "proxy-lua".
local V2_SIG = "\r\n\r\n\0\r\nQUIT\n"
local function read_proxy_header(s)
  -- six bytes tell the two versions (and anything else) apart
  local head, err = s:read(6)
  if not head then return nil, err end
  if head == V2_SIG:sub(1, 6) then
    local more, err2 = s:read(10)
    if not more then return nil, err2 end
    head = head .. more
  end
  if head:sub(1, 12) == V2_SIG then
    local ver_cmd, fam, len = head:byte(13), head:byte(14), head:byte(15) * 256 + head:byte(16)
    local body = len > 0 and s:read(len) or ""
    if not body then return nil, "truncated PROXY v2 header" end
    if ver_cmd == 0x20 then return s:peer() end -- LOCAL: the connection's own address
    if ver_cmd ~= 0x21 then return nil, "bad PROXY v2 version/command" end
    if fam == 0x11 and len >= 12 then
      local a, b, c, d = body:byte(1, 4)
      return ("%d.%d.%d.%d:%d"):format(a, b, c, d, body:byte(9) * 256 + body:byte(10))
    elseif fam == 0x21 and len >= 36 then
      local g = {}
      for i = 0, 7 do g[#g + 1] = ("%x"):format(body:byte(2 * i + 1) * 256 + body:byte(2 * i + 2)) end
      return ("[%s]:%d"):format(table.concat(g, ":"), body:byte(33) * 256 + body:byte(34))
    end
    return nil, "unsupported PROXY v2 address family"
  elseif head:sub(1, 6) == "PROXY " then
    local rest = s:read_line(102)
    if not rest then return nil, "PROXY v1 header without an end" end
    local fam, src, _, sport = (head .. rest):match("^PROXY (TCP[46]) (%S+) (%S+) (%d+) %d+$")
    if not fam then return nil, "malformed PROXY v1 header" end
    return fam == "TCP6" and ("[%s]:%s"):format(src, sport) or ("%s:%s"):format(src, sport)
  end
  return nil, "no PROXY protocol header"
end

local function member(s)
  local peer = s:peer()
  if mode == "proxy-lua" then
    local why
    peer, why = read_proxy_header(s)
    if not peer then
      log("closing a connection: %s", tostring(why))
      return
    end
  end
  members[s] = true
  s:write(("hello %s %s\n"):format(peer, name))
  while true do
    local line, _, code = s:read_line(4096)
    if not line then
      if code == "EMSGSIZE" then s:write("failed line too long\n") end
      break
    end
    local answer
    if not subscribed then
      answer = "failed this node is not subscribed to Redis"
    else
      local need = live_nodes()
      local n, msg = pub:publish(CHANNEL, peer .. " " .. line)
      if not n then
        answer = "failed " .. msg
      elseif n < need then
        answer = ("failed reached %d of %d nodes"):format(n, need)
      else
        answer = "ok"
      end
    end
    if not s:write(answer .. "\n") then break end
  end
  members[s] = nil
end

-- ---- Redis: subscriber, heartbeat --------------------------------------------------------

core:spawn(function()
  local ok, msg = sub:subscribe(CHANNEL)
  if ok then
    subscribed = true
    log("subscribed to %s", CHANNEL)
  else
    log("subscribe: %s", msg)
  end
  while true do
    local m, err = sub:read_message()
    if m and m.kind == "message" then
      broadcast("msg " .. m.data .. "\n")
    elseif m and m.kind == "subscribed" then
      subscribed = true
      log("subscribed again after a lost connection")
    elseif not m then
      if subscribed then log("subscriber: %s", err) end
      subscribed = false
      outage = true
      iocore.sleep(100)
    end
  end
end)

core:spawn(function()
  while true do
    local t = pub:time()
    if t then
      local now = tonumber(t[1]) * 1000 + tonumber(t[2]) // 1000
      if outage then
        -- every node that was live when the outage began counts as live
        -- for LIVE_MS more: the time it gets to subscribe again
        for k, seen in pairs(peers) do
          if seen >= redis_now - LIVE_MS then peers[k] = now end
        end
        outage = false
      end
      redis_now = now
      local p = pub:pipeline()
      if subscribed then p:zadd(NODES, now, name) end
      p:zremrangebyscore(NODES, "-inf", now - LIVE_MS)
      p:zrange(NODES, 0, -1, "WITHSCORES")
      local res = p:run()
      local list = res and res[#res]
      if type(list) == "table" then
        for i = 1, #list, 2 do
          local v = tonumber(list[i + 1])
          if v and v > (peers[list[i]] or 0) then peers[list[i]] = v end
        end
      end
    else
      outage = true
    end
    iocore.sleep(BEAT_MS)
  end
end)

-- ---- listeners -------------------------------------------------------------------------

local chat = assert(core:listen(listen_addr, { handler = member, proxy_protocol = mode == "proxy" or nil }))
local health = assert(core:listen(health_addr, { on_accept = function(s) s:close() end }))
log("chat on %s (proxy protocol %s), health on %s, redis %s", chat:address(),
  mode == "proxy" and "on" or mode == "proxy-lua" and "on, read in Lua" or "off",
  health:address(), redis_addr)
core:run()
log("stopped")
core:close()
