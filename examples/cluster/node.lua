-- A chat node of the cluster example: members connected to any node talk
-- to each other through Redis pub/sub. Started by examples/cluster/start
-- (HAProxy in front of several of these), or by hand:
--
--   lua5.4 examples/cluster/node.lua NAME LISTEN HEALTH REDIS [proxy]
--   lua5.4 examples/cluster/node.lua n1 127.0.0.1:7801 127.0.0.1:7901 127.0.0.1:6379 proxy
--
-- LISTEN: the chat port (HAProxy's servers). With "proxy", every connection
-- starts with a PROXY protocol header (HAProxy's send-proxy-v2), so s:peer()
-- is the member's real address. HEALTH: a port HAProxy's health check
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

local name, listen_addr, health_addr, redis_addr, proxy = arg[1], arg[2], arg[3], arg[4], arg[5] == "proxy"
if not (name and listen_addr and health_addr and redis_addr) then
  io.stderr:write("usage: lua5.4 node.lua NAME LISTEN HEALTH REDIS [proxy]\n")
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

local function member(s)
  local peer = s:peer()
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

local chat = assert(core:listen(listen_addr, { handler = member, proxy_protocol = proxy or nil }))
local health = assert(core:listen(health_addr, { on_accept = function(s) s:close() end }))
log("chat on %s (proxy protocol %s), health on %s, redis %s", chat:address(), proxy and "on" or "off",
  health:address(), redis_addr)
core:run()
log("stopped")
core:close()
