-- A Redis client (RESP2) in iocore's stream style: commands, pipelining and
-- pub/sub over iocore's own sockets, from iocore coroutines (a listener's
-- handler, core:spawn, or any coroutine that core:dial works in).
--
--   local redis = require "iocore.redis"
--   local r = assert(redis.connect(core, "127.0.0.1:6379", { timeout = 2000 }))
--   r:set("k", "v");  local v = r:get("k")       -- any command, by name
--   local p = r:pipeline(); p:incr("n"); p:get("n"); local res = p:run()
--   local sub = redis.new(core, "127.0.0.1:6379"); sub:subscribe("chat")
--   local m = sub:read_message()   -- { kind = "message", channel = "chat", data = "..." }
--
-- Results: a status reply is its text ("OK"), an integer an integer, a bulk
-- string a string, an array a table, and a null reply `redis.null`. A failed
-- call returns nil, "ECODE: text", "ECODE": "EREDIS" for Redis's own error
-- replies, "ETIMEDOUT" when no reply came within `timeout`, the connection's
-- error ("ECONNREFUSED", "EOF", "ECONNRESET", ...) when Redis is down or went
-- away, "EPROTO" for a reply that is not RESP. Misuse (an argument that is
-- not a string or number, a call outside an iocore coroutine) raises.
--
-- One client may be shared by many coroutines: commands go out in the order
-- they are called and each caller gets its own reply (Redis answers in
-- order). A connection that fails or times out is closed, every call
-- waiting on it gets the error, and the next call connects again (so a
-- call never hangs on a dead Redis, and replies can never be handed to the
-- wrong caller). Nothing blocks a worker: waiting is a parked coroutine.
--
-- Backpressure: a caller waits while more than `write_hwm` bytes of
-- commands are queued to Redis (TCP pushing back), and a subscriber's
-- connection stops being read while `max_messages` messages wait for
-- read_message (Redis then holds them, up to its own output limit).
local iocore = require "iocore"
local stream = require "iocore.stream"

local wake = stream.wake
local co_running, co_yield = coroutine.running, coroutine.yield
local concat, unpack = table.concat, table.unpack
local type, tostring, select, error, setmetatable = type, tostring, select, error, setmetatable
local mtype, tointeger = math.type, math.tointeger

local M = {}

M.null = setmetatable({}, { __name = "redis.null", __tostring = function() return "redis.null" end })

local DEFAULTS = {
  connect_timeout = 5000, -- ms for the TCP connect
  timeout = 5000,         -- ms a caller waits for its reply; 0 = forever
  write_hwm = 256 * 1024, -- bytes queued to Redis above which callers wait
  max_bulk = 512 * 1024 * 1024, -- largest bulk reply accepted (Redis's own limit)
  max_messages = 10000,   -- subscriber: messages buffered before reading stops
}

-- An error reply inside a pipeline's or an array's results.
local ErrorReply = { __name = "redis.error" }
ErrorReply.__index = ErrorReply
ErrorReply.__tostring = function(e) return "EREDIS: " .. e.msg end
function M.is_error(v) return getmetatable(v) == ErrorReply end

-- ---- RESP -------------------------------------------------------------------------

local function arg_string(v, i, what)
  local t = type(v)
  if t == "string" then return v end
  if t == "number" then
    if mtype(v) == "integer" then return ("%d"):format(v) end
    return ("%.17g"):format(v)
  end
  error(("bad argument #%d to '%s' (string or number expected, got %s)"):format(i, what, t), 4)
end

-- The command as a RESP array of bulk strings.
local function encode(what, ...)
  local n = select("#", ...)
  local out = { "*" .. n .. "\r\n" }
  for i = 1, n do
    local a = arg_string((select(i, ...)), i, what)
    out[#out + 1] = "$" .. #a .. "\r\n"
    out[#out + 1] = a
    out[#out + 1] = "\r\n"
  end
  return concat(out)
end

local function proto_error(text) return nil, "EPROTO: " .. text, "EPROTO" end

-- Reads one reply from s (stream style). Error replies are ErrorReply
-- values; nil, msg, code only when the connection failed or spoke no RESP.
local function read_reply(s, max_bulk, depth)
  local line, msg, code = s:read_line(65536)
  if not line then return nil, msg, code end
  local t, rest = line:sub(1, 1), line:sub(2)
  if t == "+" then return rest end
  if t == "-" then return setmetatable({ msg = rest }, ErrorReply) end
  if t == ":" then
    local n = tointeger(tonumber(rest))
    if not n then return proto_error("bad integer reply " .. ("%q"):format(rest:sub(1, 40))) end
    return n
  end
  if t == "$" then
    local n = tointeger(tonumber(rest))
    if not n then return proto_error("bad bulk length " .. ("%q"):format(rest:sub(1, 40))) end
    if n < 0 then return M.null end
    if n > max_bulk then return proto_error(("bulk reply of %d bytes is over max_bulk (%d)"):format(n, max_bulk)) end
    local data, m2, c2 = s:read(n + 2)
    if not data then return nil, m2, c2 end
    if data:sub(-2) ~= "\r\n" then return proto_error("bulk reply not ended by CRLF") end
    return data:sub(1, n)
  end
  if t == "*" then
    local n = tointeger(tonumber(rest))
    if not n then return proto_error("bad array length " .. ("%q"):format(rest:sub(1, 40))) end
    if n < 0 then return M.null end
    if depth > 32 then return proto_error("arrays nested deeper than 32") end
    local arr = {}
    for i = 1, n do
      local v, m2, c2 = read_reply(s, max_bulk, depth + 1)
      if v == nil then return nil, m2, c2 end
      arr[i] = v
    end
    return arr
  end
  return proto_error("unknown reply type " .. ("%q"):format(line:sub(1, 40)))
end

-- ---- the client ---------------------------------------------------------------------

local Client = {}
local commands = {} -- name -> function(self, ...) self:call(NAME, ...)

-- The client's own fields that may be nil: never taken for command names.
local FIELDS = { s = true, subscribed = true, connecting = true, msg_waiter = true,
                 reader_parked = true, last_error = true }

local function client_index(self, name)
  local m = Client[name]
  if m then return m end
  if type(name) ~= "string" or FIELDS[name] or not name:match("^[%a_][%w_]*$") then return nil end
  local f = commands[name]
  if not f then
    local cmd = name:upper()
    f = function(c, ...) return c:call(cmd, ...) end
    commands[name] = f
  end
  return f
end
local ClientMT = { __name = "redis.client", __index = client_index,
                   __tostring = function(c) return ("redis.client (%s)"):format(c.address) end }

-- The calling coroutine, or a raised error: every call may wait.
local function caller(what)
  local co, main = co_running()
  if main then
    error(("redis %s: call it from an iocore coroutine (a listener handler, core:spawn)"):format(what), 3)
  end
  return co
end

-- A new client; it connects at its first call (and again after a failure).
function M.new(core, address, opts)
  if type(address) ~= "string" then
    error("bad argument #2 to 'new' (string expected, got " .. type(address) .. ")", 2)
  end
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #3 to 'new' (table expected, got " .. type(opts) .. ")", 2)
  end
  local o = {}
  for k, v in pairs(DEFAULTS) do o[k] = v end
  for k, v in pairs(opts or {}) do o[k] = v end
  for k in pairs(DEFAULTS) do
    if mtype(o[k]) ~= "integer" or o[k] < 0 then
      error(("bad argument #3 to 'new' (field '%s' must be a non-negative integer)"):format(k), 2)
    end
  end
  return setmetatable({
    core = core, address = address, opts = o,
    s = nil,            -- the connected session, or nil
    waiting = {},       -- FIFO of calls waiting for replies: { co, n, replies, timer }
    head = 1, tail = 0,
    channels = {},      -- subscriber: channel -> "channel" | "pattern"
    messages = {}, mhead = 1, mtail = 0,
    connects = 0,       -- successful connects so far
  }, ClientMT)
end

-- new + the first connect now: nil, msg, code when Redis cannot be reached.
function M.connect(core, address, opts)
  local c = M.new(core, address, opts)
  caller("connect")
  local ok, msg, code = c:connect()
  if not ok then return nil, msg, code end
  return c
end

local function push(c, e)
  c.tail = c.tail + 1
  c.waiting[c.tail] = e
end

local function pop(c)
  local e = c.waiting[c.head]
  if not e then return nil end
  c.waiting[c.head] = nil
  c.head = c.head + 1
  return e
end

local function finish(e, ...)
  if e.timer then e.timer:cancel(); e.timer = nil end
  e.done = true
  wake(e.co, ...)
end

-- The connection s failed: close it and fail every call waiting on it.
local function fail(c, s, msg, code)
  if c.s ~= s then return end
  c.s = nil
  c.last_error = msg
  if not s:closed() then s:abort() end
  local waiting = {}
  while true do
    local e = pop(c)
    if not e then break end
    waiting[#waiting + 1] = e
  end
  local mw = c.msg_waiter
  c.msg_waiter = nil
  local rd = c.reader_parked
  c.reader_parked = nil
  for _, e in ipairs(waiting) do finish(e, nil, msg, code) end
  if mw then wake(mw, nil, msg, code) end
  if rd then wake(rd) end
end

local function lost(c, msg, code)
  local text = msg and msg:gsub("^%u+: ", "") or "connection lost"
  return ("%s: redis %s: connection lost (%s)"):format(code or "ECONNRESET", c.address, text), code or "ECONNRESET"
end

local PUSH_KINDS = { message = true, pmessage = true }

-- The reader of one connection (a coroutine of its own): each reply goes to
-- the call at the head of the FIFO; pub/sub messages to read_message.
local function reader(c, s)
  local max_bulk = c.opts.max_bulk
  while c.s == s do
    local v, msg, code = read_reply(s, max_bulk, 0)
    if c.s ~= s then return end
    if v == nil then
      local m2, c2 = lost(c, msg, code)
      if code == "EPROTO" then m2, c2 = msg, code end
      fail(c, s, m2, c2)
      return
    end
    if c.subscribed and type(v) == "table" and PUSH_KINDS[v[1]] then
      local m
      if v[1] == "message" then
        m = { kind = "message", channel = v[2], data = v[3] }
      else
        m = { kind = "pmessage", pattern = v[2], channel = v[3], data = v[4] }
      end
      local w = c.msg_waiter
      if w then
        c.msg_waiter = nil
        wake(w, m)
      else
        c.mtail = c.mtail + 1
        c.messages[c.mtail] = m
        local max = c.opts.max_messages
        if max > 0 and c.mtail - c.mhead + 1 >= max then
          c.reader_parked = co_running()
          co_yield() -- until read_message makes room (or the connection fails)
        end
      end
    else
      local e = c.waiting[c.head]
      if not e then
        fail(c, s, ("EPROTO: redis %s sent a reply nobody asked for"):format(c.address), "EPROTO")
        return
      end
      if e.n == 1 then
        pop(c)
        if M.is_error(v) then finish(e, nil, "EREDIS: " .. v.msg, "EREDIS") else finish(e, v) end
      else
        local r = e.replies
        r[#r + 1] = v
        if #r == e.n then
          pop(c)
          finish(e, r)
        end
      end
    end
  end
end

-- Sends payload (n replies expected) and waits for the reply; the caller
-- must hold a connected c.s.
local function request(c, co, payload, n)
  local s = c.s
  if not s then -- failed between the connect and this call (woken waiters)
    return nil, c.last_error or ("ECONNRESET: redis %s: connection lost"):format(c.address), "ECONNRESET"
  end
  local hwm = c.opts.write_hwm
  if hwm > 0 and s:pending() > hwm then
    -- backpressure before this call is in the FIFO (so no reply can wake it here)
    local ok, msg, code = s:write("")
    if not ok then fail(c, s, lost(c, msg, code)) ; return nil, lost(c, msg, code) end
    if c.s ~= s then return nil, c.last_error or "ECONNRESET: connection lost", "ECONNRESET" end
  end
  local ok, msg, code = s:send(payload)
  if not ok then
    if code == "ENOBUFS" then return nil, ("ENOBUFS: redis %s: send queue full"):format(c.address), "ENOBUFS" end
    local m2, c2 = lost(c, msg, code)
    fail(c, s, m2, c2)
    return nil, m2, c2
  end
  local e = { co = co, n = n, replies = n > 1 and {} or nil }
  push(c, e)
  local t = c.opts.timeout
  if t > 0 then
    e.timer = c.core:after(t, function()
      e.timer = nil
      if not e.done then
        fail(c, s, ("ETIMEDOUT: redis %s: no reply within %d ms"):format(c.address, t), "ETIMEDOUT")
      end
    end)
  end
  return co_yield()
end

-- Connects (if not connected), from a coroutine. Concurrent callers share
-- one attempt. A subscriber subscribes again to its channels.
function Client:connect()
  local co = caller("connect")
  if self.s then return true end
  if self.connecting then
    local w = self.connecting
    w[#w + 1] = co
    return co_yield()
  end
  local waiters = {}
  self.connecting = waiters
  local s, msg, code = self.core:dial(self.address, { connect_timeout = self.opts.connect_timeout })
  local ok = s ~= nil
  if ok then
    self.s = s
    self.connects = self.connects + 1
    self.core:spawn(reader, self, s)
    local o = self.opts
    if o.password then
      local r, m2, c2 = request(self, co, encode("auth", "AUTH", o.password), 1)
      if not r then ok, msg, code = false, m2, c2 end
    end
    if ok and o.db then
      local r, m2, c2 = request(self, co, encode("select", "SELECT", o.db), 1)
      if not r then ok, msg, code = false, m2, c2 end
    end
    if ok and next(self.channels) then
      local ch, pat = {}, {}
      for name, kind in pairs(self.channels) do
        if kind == "pattern" then pat[#pat + 1] = name else ch[#ch + 1] = name end
      end
      if #ch > 0 then
        local r, m2, c2 = request(self, co, encode("subscribe", "SUBSCRIBE", unpack(ch)), #ch)
        if not r then ok, msg, code = false, m2, c2 end
      end
      if ok and #pat > 0 then
        local r, m2, c2 = request(self, co, encode("psubscribe", "PSUBSCRIBE", unpack(pat)), #pat)
        if not r then ok, msg, code = false, m2, c2 end
      end
      if ok then
        self.mtail = self.mtail + 1
        self.messages[self.mtail] = { kind = "subscribed", channels = ch, patterns = pat, reconnect = self.connects > 1 }
      end
    end
    if not ok and self.s then fail(self, self.s, msg, code) end
  else
    local text = msg and msg:gsub("^%u+: ", "") or "?"
    msg = ("%s: redis %s is unreachable (%s)"):format(code or "ECONNREFUSED", self.address, text)
    self.last_error = msg
  end
  self.connecting = nil
  for _, w in ipairs(waiters) do
    if ok then wake(w, true) else wake(w, nil, msg, code) end
  end
  if ok then return true end
  return nil, msg, code
end

-- (un)subscribing goes through the methods that keep the channel list
local SUB_METHODS = { subscribe = true, psubscribe = true, unsubscribe = true, punsubscribe = true }

-- self:call(NAME, args...): one command; its reply, or nil, msg, code.
function Client:call(...)
  local co = caller("call")
  local name = ...
  if type(name) ~= "string" then
    error("bad argument #1 to 'call' (command name expected, got " .. type(name) .. ")", 2)
  end
  local lname = name:lower()
  if SUB_METHODS[lname] then return self[lname](self, select(2, ...)) end
  local payload = encode(lname, ...)
  if self.subscribed and not name:upper():match("^P?U?N?SUBSCRIBE$") and name:upper() ~= "PING" then
    return nil, ("EPROTO: redis %s: this client is subscribed; only (un)subscribe and ping are allowed"):format(
      self.address), "EPROTO"
  end
  if not self.s then
    local ok, msg, code = self:connect()
    if not ok then return nil, msg, code end
  end
  return request(self, co, payload, 1)
end

-- A pipeline: commands collected, sent at once by run(), which returns
-- the array of their replies (an error reply as a redis.error value, see
-- redis.is_error), or nil, msg, code if the connection failed.
local Pipeline = {}
local PipelineMT = { __name = "redis.pipeline", __index = function(p, name)
  local m = Pipeline[name]
  if m then return m end
  if type(name) ~= "string" then return nil end
  local cmd = name:upper()
  return function(pp, ...) return pp:call(cmd, ...) end
end }

function Pipeline:call(...)
  local name = ...
  if type(name) ~= "string" then
    error("bad argument #1 to 'call' (command name expected, got " .. type(name) .. ")", 2)
  end
  self.cmds[#self.cmds + 1] = encode(name:lower(), ...)
  return self
end

function Pipeline:run()
  local c = self.client
  local co = caller("pipeline run")
  local n = #self.cmds
  if n == 0 then return {} end
  if not c.s then
    local ok, msg, code = c:connect()
    if not ok then return nil, msg, code end
  end
  local payload = concat(self.cmds)
  self.cmds = {}
  return request(c, co, payload, n)
end

function Client:pipeline()
  return setmetatable({ client = self, cmds = {} }, PipelineMT)
end

-- Subscribing: the client becomes a subscriber (no other commands), and
-- read_message returns what is published. After a lost connection the
-- next read_message connects again, subscribes again to every channel, and
-- returns { kind = "subscribed", reconnect = true, ... }: messages
-- published in between were not received.
local function subscribe(self, kind, cmd, ...)
  local co = caller(cmd:lower())
  local n = select("#", ...)
  if n == 0 then error("bad argument #1 to '" .. cmd:lower() .. "' (channel expected)", 3) end
  for i = 1, n do
    local ch = arg_string((select(i, ...)), i, cmd:lower())
    self.channels[ch] = kind
  end
  self.subscribed = true
  if not self.s then
    -- connect subscribes to every channel (these included)
    local ok, msg, code = self:connect()
    if not ok then return nil, msg, code end
    -- the "subscribed" note connect queued is this call's answer
    if self.mtail >= self.mhead and self.messages[self.mtail].kind == "subscribed" then
      self.messages[self.mtail] = nil
      self.mtail = self.mtail - 1
    end
    return true
  end
  local r, msg, code = request(self, co, encode(cmd:lower(), cmd, ...), n)
  if not r then return nil, msg, code end
  return true
end

function Client:subscribe(...) return subscribe(self, "channel", "SUBSCRIBE", ...) end
function Client:psubscribe(...) return subscribe(self, "pattern", "PSUBSCRIBE", ...) end

-- Unsubscribing from the channels (patterns) named, or from all of them.
-- When none is left, the client may run other commands again.
local function unsubscribe(self, kind, cmd, ...)
  local co = caller(cmd:lower())
  local n = select("#", ...)
  local names = {}
  for i = 1, n do names[i] = arg_string((select(i, ...)), i, cmd:lower()) end
  if n == 0 then
    for name, k in pairs(self.channels) do
      if k == kind then names[#names + 1] = name end
    end
  end
  for _, name in ipairs(names) do
    if self.channels[name] == kind then self.channels[name] = nil end
  end
  local left = next(self.channels) ~= nil
  if not self.s then -- nothing to tell Redis: the next connect subscribes to what is left
    self.subscribed = left or nil
    return true
  end
  -- Redis answers once per name (once in all when there were none)
  local r, msg, code = request(self, co, encode(cmd:lower(), cmd, ...), math.max(n > 0 and n or #names, 1))
  if not r then return nil, msg, code end
  self.subscribed = left or nil
  return true
end

function Client:unsubscribe(...) return unsubscribe(self, "channel", "UNSUBSCRIBE", ...) end
function Client:punsubscribe(...) return unsubscribe(self, "pattern", "PUNSUBSCRIBE", ...) end

-- The next message: { kind = "message", channel, data }, { kind =
-- "pmessage", pattern, channel, data }, or { kind = "subscribed", ... }
-- after a (re)connect; nil, msg, code when the connection failed (the next
-- call reconnects) or after `timeout_ms` (code "ETIMEDOUT", connection kept).
function Client:read_message(timeout_ms)
  local co = caller("read_message")
  if not self.subscribed then
    error("read_message: subscribe first", 2)
  end
  if self.mhead > self.mtail then
    if not self.s then
      local ok, msg, code = self:connect()
      if not ok then return nil, msg, code end
    end
  end
  if self.mhead <= self.mtail then
    local m = self.messages[self.mhead]
    self.messages[self.mhead] = nil
    self.mhead = self.mhead + 1
    local rd = self.reader_parked
    if rd and self.mtail - self.mhead + 1 < self.opts.max_messages // 2 then
      self.reader_parked = nil
      self.core:post(function() wake(rd) end)
    end
    return m
  end
  if self.msg_waiter then error("read_message: another coroutine is already reading messages", 2) end
  self.msg_waiter = co
  local t
  if timeout_ms and timeout_ms > 0 then
    t = self.core:after(timeout_ms, function()
      if self.msg_waiter == co then
        self.msg_waiter = nil
        wake(co, nil, ("ETIMEDOUT: no message within %d ms"):format(timeout_ms), "ETIMEDOUT")
      end
    end)
  end
  local m, msg, code = co_yield()
  if t then t:cancel() end
  return m, msg, code
end

-- Closes the connection; calls waiting on it get ECLOSED. The client can
-- be used again (it reconnects).
function Client:close()
  local s = self.s
  if s then
    fail(self, s, ("ECLOSED: redis %s: client closed"):format(self.address), "ECLOSED")
  end
  self.channels, self.subscribed = {}, nil
  return true
end

function Client:connected() return self.s ~= nil end

M.Client = Client
M._read_reply = read_reply -- for tests of the parser
M.version = iocore.version
return M
