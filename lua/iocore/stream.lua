-- iocore's stream style: sessions read and written sequentially from
-- coroutines ("light threads"), like OpenResty cosockets.
--
--   core:listen(addr, { handler = function(s) ... end })   a coroutine per session
--   core:spawn(fn, ...)       core:dial(addr[, opts])       iocore.sleep(ms)
--   s:read(n)  s:read()  s:read_line([max])  s:read_until(delim[, max])  s:write(data)
--
-- How it works. A stream session is an ordinary session with a receive
-- buffer in C (src/lua/lrbuf.c): what arrives is appended there, without a
-- Lua string, and Lua hears of it only when the coroutine parked on the
-- session can go on (the buffer knows what the parked read waits for): then
-- the session's on_recv, which is on_ready here, resumes it; a handler
-- parked on its own session in the plain state (no state table, see
-- state_of) is resumed by the buffer itself, and finish here runs only if
-- it ends or fails. The reader
-- methods read, read_line and read_until are C functions that return at
-- once when their data is buffered; otherwise they call the slow paths
-- below, which park the coroutine and keep the failure rules. on_close,
-- on_drain and on_eof of a stream session are the shared functions of this
-- file. Every resume happens inside a handler the binding runs, under the
-- Lua lock, in the session's own event order, and within that handler's
-- handler_timeout (the binding's coroutine.resume hooks the coroutine it
-- resumes). A parked coroutine is only a Lua object: no worker waits for it.
--
-- The wrappers of the binding's own methods (close, on_close, listen...)
-- are in stream_wrap.lua.
--
-- Invariants.
--   * One coroutine at a time may read a session; writers may be several.
--   * A parked coroutine is woken exactly once per park, by whoever clears
--     its slot first (data, close, read time-out, drain); a read time-out's
--     timer is cancelled by every other wake. The C buffer's record of the
--     parked read (B.park) is cleared with the slot (B.unpark).
--   * The buffer's memory comes from the Lua allocator (memory_limit covers
--     it) and is freed when a read parks on it empty.
--   * A parked reader's coroutine holds only the script's frames and the C
--     method's: the quick park (try_park) makes no C call, so it does not
--     grow the coroutine's stack.
local M = {}

local co_running, co_yield, co_status, co_create = coroutine.running, coroutine.yield, coroutine.status,
    coroutine.create
local type, select, error, tostring, rawlen, rawget = type, select, error, tostring, rawlen, rawget
local math_type = math.type

local EOF_MSG = "EOF: end of stream"
local ECLOSED_MSG = "ECLOSED: session is closing or closed"
local ETIMEDOUT_READ_MSG = "ETIMEDOUT: read timed out"
local EMSGSIZE_MSG = "EMSGSIZE: message too long"

local DEFAULT_HWM = 256 * 1024           -- write_hwm
-- The C buffer's primitives (lrbuf.c), from install. B.max is read_line /
-- read_until's default max; B.read_ahead the bytes buffered while no
-- coroutine reads before the session is paused (so a peer that sends
-- faster than the handler reads is slowed down by TCP, not buffered here).
local B
local DEFAULT_MAX

-- The numbers above, for programs and for the test that keeps the docs true.
M.limits = { write_hwm = DEFAULT_HWM } -- max and read_ahead: set by install

local TIMEOUT = {} -- resume value of a read time-out

-- session -> its stream state (weak keys: a closed, dropped session goes).
-- A session in the plain state has none (see state_of): what it needs is
-- in C, so an idle handler session costs no table.
local streams = setmetatable({}, { __mode = "k" })
-- coroutine -> the session it serves (handler coroutines) or its core
-- (spawned ones); only these may call stream methods
local owners = setmetatable({}, { __mode = "k" })
-- a core's light userdata name (B.lc) -> the core object, for the state
-- of a session whose core only C knows; set again by every listen, dial
-- and spawn (a new core may reuse a freed one's address)
local cores = setmetatable({}, { __mode = "v" })
-- listener -> { on_accept = user's, handler = fn } for listeners with a handler
local stream_listeners = setmetatable({}, { __mode = "k" })

-- session -> read time-out set by s:timeouts before it became a stream session
local pending_read_timeouts = setmetatable({}, { __mode = "k" })

local installed = setmetatable({}, { __mode = "k" }) -- module tables done

-- A value's type as the binding's errors name it (__name for its objects).
local function typename(v)
  local mt = getmetatable(v)
  if type(mt) == "table" and type(mt.__name) == "string" then return mt.__name end
  return type(v)
end

-- ---- running coroutines ---------------------------------------------------------

-- Set by install: the binding's original session, core and listener
-- methods; report(core, msg, session_or_nil); whether sessions have on_eof;
-- the session objects' two metatables.
local S, C, L, report, HAS_EOF, SMT, SMT_FIELDS

local function is_session(v)
  local mt = getmetatable(v)
  return mt ~= nil and (mt == SMT or mt == SMT_FIELDS)
end

-- The core of an owner (a session or a core).
local function core_of(owner)
  if is_session(owner) then return cores[B.lc(owner)] end
  return owner
end

-- co is no iocore coroutine any more (it ended).
local function disown(co, owner)
  owners[co] = nil
  if is_session(owner) and B.owner(owner) == co then B.own(owner, nil) end
end

-- This side ends session s (its handler returned, failed...): reads
-- return ECLOSED from now on.
local function local_close(s, st)
  if st then st.local_closed = true end
  B.closing(s)
end

-- What follows a resume of co that gave ok, err (coroutine.resume's
-- first results): a handler coroutine that ended closes its session; an
-- error is reported and aborts the session of the coroutine. Also called
-- by the C buffer (lrbuf.c), which resumes a parked owner itself.
local function finish(co, ok, err)
  if ok then
    if co_status(co) == "dead" then
      local s = owners[co]
      disown(co, s)
      if is_session(s) then -- a handler coroutine: its session is closed
        local st = streams[s]
        if not (st and st.closed) and not S.closed(s) then
          local_close(s, st)
          S.close(s)
        end
      end
    end
    return
  end
  local owner = owners[co]
  disown(co, owner)
  local msg = debug.traceback(co, tostring(err))
  local s = is_session(owner) and owner or nil
  if s then
    local st = streams[s]
    if not (st and st.closed) then
      local_close(s, st)
      S.abort(s)
    end
  end
  report(core_of(owner), msg, s)
end

-- Resumes co with the given values and deals with how it stops (finish).
-- coroutine.resume is looked up at each call: the binding replaces it with
-- a version that puts the coroutine under handler_timeout.
local function wake(co, ...)
  if co_status(co) ~= "suspended" then return end
  return finish(co, coroutine.resume(co, ...))
end

-- The coroutine calling a stream method, or a raised error naming `what`.
local function current(what, level)
  local co, main = co_running()
  if main or not owners[co] then
    error(("%s: not inside an iocore coroutine (use a listener handler, core:spawn or core:dial)")
      :format(what), level or 3)
  end
  return co
end

-- ---- the buffer (in C) ---------------------------------------------------------------

-- Removes and returns every buffered byte ("" when none).
local function take_all(st) return B.take(st.s) end
-- ---- state --------------------------------------------------------------------------

-- The stream state of session s, made now if s is a stream session in the
-- plain state (its parked owner, if any, becomes the table's reader); nil
-- if s is no stream session (yet).
local function state_of(s)
  local st = streams[s]
  if st or not is_session(s) then return st end
  local ok, _, reader, closing = B.state(s)
  if not ok then return nil end
  st = { core = core_of(s), s = s, reader = reader }
  if closing then st.local_closed = true end
  streams[s] = st
  return st
end

local function close_code(msg)
  return msg:match("^([%u%d_]+):") or "EUNKNOWN"
end

-- The failure a read returns once the stream has ended (nil if it has not).
local function ended(st)
  if st.local_closed then return ECLOSED_MSG, "ECLOSED" end
  if st.eof then return EOF_MSG, "EOF" end
  if st.closed then return st.msg, st.code end
  return nil
end

local function wake_reader(st, ...)
  local co = st.reader
  if co then
    st.reader = nil
    B.unpark(st.s)
    local t = st.rtimer
    if t then
      st.rtimer = nil
      t:cancel()
    end
    wake(co, ...)
  end
end

local function wake_writers(st)
  local ws = st.writers
  if ws then
    st.writers = nil
    for i = 1, #ws do wake(ws[i]) end
  end
end

-- ---- the handlers every stream session has ---------------------------------------------

-- The session's on_recv: called by the C buffer when the parked reader can
-- go on; without data, or with the data itself for a read() that waits on
-- an empty buffer (its result: no copy into the buffer first). Data that
-- finds no reader after all goes into the buffer.
local function on_ready(s, data)
  local st = streams[s]
  if st then
    if st.reader then return wake_reader(st, data) end
  else
    -- the plain state: the reader, if any, is the owner, parked in C
    local co = B.quick(s)
    if co then return wake(co, data) end
  end
  if data then B.put(s, data) end
end

local function on_eof(s)
  local st = state_of(s)
  if not st then return end
  st.eof = true
  wake_reader(st)
  if st.user_on_eof then st.user_on_eof(s) end
end

local function on_close(s, err)
  local st = state_of(s)
  if not st then return end
  st.closed = true
  if err then
    st.msg, st.code = err, close_code(err)
  elseif not st.local_closed and not HAS_EOF then
    -- without on_eof in the binding, a close that this side did not ask
    -- for and that reports no error is the peer's FIN
    st.eof = true
  else
    st.msg, st.code = ECLOSED_MSG, "ECLOSED"
  end
  wake_reader(st)
  wake_writers(st)
  if st.connecting then
    local co = st.connecting
    st.connecting = nil
    st.connect_err = st.connect_err or err or ECLOSED_MSG
    wake(co)
  end
  if st.user_on_close then st.user_on_close(s, err) end
end

local function on_drain(s)
  local st = streams[s]
  if not st then return end
  wake_writers(st)
  if st.user_on_drain then st.user_on_drain(s) end
end

local function on_connect(s, err)
  local st = streams[s]
  if not st then return end
  local co = st.connecting
  st.connecting = nil
  if err then st.connect_err = err end
  if co then wake(co) end
end

-- ---- methods (installed on the session) ------------------------------------------------


-- The stream state of a new stream session (dial, a session read from
-- before it was one, a listener with a read time-out or handlers).
local function new_state(core, s, opts)
  -- (few fields: a parked read adds reader; defaults are nil)
  local hwm = opts and opts.write_hwm
  B.attach(s, hwm or DEFAULT_HWM)
  local _, _, reader, closing = B.state(s)
  local st = { core = core, s = s, reader = reader }
  if closing then st.local_closed = true end
  if opts then
    local rt = opts.read_timeout
    if rt and rt > 0 then st.read_timeout = rt end
    if opts.on_close then st.user_on_close = opts.on_close end
    if opts.on_drain then st.user_on_drain = opts.on_drain end
    if opts.on_eof then st.user_on_eof = opts.on_eof end
  end
  streams[s] = st
  return st
end

local function check_session(s, what, level)
  if type(s) ~= "userdata" or not pcall(S.id, s) then
    error(("calling '%s' on bad self (iocore.session expected, got %s)"):format(what, type(s)), level or 3)
  end
end

-- The stream state of s for a read or write. A session that is not a stream
-- session yet becomes one unless it has an on_recv of its own (it is then in
-- callback style and the call raises).
local function stream_of(s, what, co, level)
  local st = streams[s]
  if st then return st end
  level = level + 1 -- the script, seen from here
  check_session(s, what, level + 1)
  st = state_of(s)
  if st then return st end
  local h = debug.getuservalue(s, 2)
  if type(h) == "table" and h.on_recv then
    error(("%s: the session has an on_recv handler (callback style); read it there, or not at all")
      :format(what), level)
  end
  local owner = owners[co]
  st = new_state(core_of(owner), s, nil)
  st.read_timeout = pending_read_timeouts[s]
  -- keep the handlers the script set, behind ours; the listener's
  -- read_timeout comes with them (the binding keeps it there for us)
  if type(h) == "table" then
    local rt = h.read_timeout
    if not st.read_timeout and math_type(rt) == "integer" and rt > 0 then st.read_timeout = rt end
    st.user_on_close, st.user_on_drain, st.user_on_eof = h.on_close, h.on_drain, h.on_eof
  end
  S.on_close(s, on_close)
  S.on_drain(s, on_drain)
  if HAS_EOF then S.on_eof(s, on_eof) end
  S.on_recv(s, on_ready)
  if S.closed(s) then
    st.closed = true
    st.msg, st.code = ECLOSED_MSG, "ECLOSED"
  end
  return st
end

-- Makes the calling coroutine the session's reader, to be woken by data
-- that may satisfy it (`need`: a byte count, a delimiter within `max`
-- bytes, or nil for any byte; the C buffer checks it at each receive), the
-- end of the stream or the read time-out (which resumes it with TIMEOUT).
local function park_reader(st, co, need, max)
  st.reader = co
  B.park(st.s, need, max)
  local rt = st.read_timeout
  if rt then
    st.rtimer = C.after(st.core, rt, function()
      st.rtimer = nil
      if st.reader == co then
        st.reader = nil
        B.unpark(st.s)
        wake(co, TIMEOUT)
      end
    end)
  end
end

-- The slow paths of the reader methods. The methods are C functions
-- (lrbuf.c) that return buffered data at once and call these for the rest
-- as slow(wake, s, ...): `wake` is nil at first, then the value the parked
-- coroutine was resumed with. A slow path returns the method's results, or
-- PARK after parking the coroutine: the C method yields then, and calls it
-- again when resumed. The script calling the method is at level 3 here.
local PARK = {}
local SCRIPT = 3

local function check_max(max, arg, what)
  if max == nil then return DEFAULT_MAX end
  if math_type(max) ~= "integer" or max < 1 then
    error(("bad argument #%d to '%s' (max must be a positive integer)"):format(arg, what), SCRIPT + 1)
  end
  return max
end

local function a_reader(st, what)
  if st.reader then error(what .. ": another coroutine is already reading this session", SCRIPT + 1) end
end

-- The C methods' quick park (no data yet, nothing else to do but wait):
-- co becomes the reader unless the slow path must handle the read (not a
-- stream session yet, another reader, the stream has ended, a read
-- time-out to arm). Only table accesses: it must not grow the stack of
-- the coroutine about to park (a C function call would).
local function try_park(s, co)
  local st = streams[s]
  if not st or st.reader or st.local_closed or st.eof or st.closed or st.read_timeout then return false end
  st.reader = co
  return true
end

local function timed_out(s)
  return nil, ETIMEDOUT_READ_MSG, "ETIMEDOUT", B.take(s)
end

-- s:read(n) / s:read()
local function read(wake_value, s, n)
  if wake_value == TIMEOUT then return timed_out(s) end
  local co = current("read", SCRIPT + 1)
  local st = stream_of(s, "read", co, SCRIPT)
  a_reader(st, "read")
  if n ~= nil and (math_type(n) ~= "integer" or n < 0) then
    error("bad argument #1 to 'read' (non-negative integer expected, got " ..
      (math_type(n) or type(n)) .. ")", SCRIPT)
  end
  if st.local_closed then return nil, ECLOSED_MSG, "ECLOSED", take_all(st) end
  local len = B.len(s)
  if n then
    if len >= n then return B.take(s, n) end
  elseif len > 0 then
    return B.take(s)
  end
  local msg, code = ended(st)
  if msg then return nil, msg, code, take_all(st) end
  park_reader(st, co, n)
  return PARK
end

-- read_line / read_until: the piece up to delim, within max bytes. A last
-- unterminated line is returned at EOF when `line`.
local function read_delim(s, delim, max, what, line)
  local co = current(what, SCRIPT + 1)
  local st = stream_of(s, what, co, SCRIPT)
  a_reader(st, what)
  if st.local_closed then return nil, ECLOSED_MSG, "ECLOSED", take_all(st) end
  local piece = B.find(s, delim, max, line)
  if piece then return piece end
  if piece == false then
    -- the oversized message is dropped with the session
    st.local_closed = true
    B.closing(s)
    if not st.closed then S.close(s) end
    return nil, EMSGSIZE_MSG .. (" (no %q within %d bytes)"):format(delim, max), "EMSGSIZE"
  end
  local msg, code = ended(st)
  if msg then
    if line and code == "EOF" and B.len(s) > 0 then return take_all(st) end
    return nil, msg, code, take_all(st)
  end
  park_reader(st, co, delim, max)
  return PARK
end

local function read_line(wake_value, s, max)
  if wake_value == TIMEOUT then return timed_out(s) end
  return read_delim(s, "\n", check_max(max, 1, "read_line"), "read_line", true)
end

local function read_until(wake_value, s, delim, max)
  if wake_value == TIMEOUT then return timed_out(s) end
  if type(delim) ~= "string" or delim == "" then
    error("bad argument #1 to 'read_until' (non-empty string expected, got " ..
      (delim == "" and "empty string" or type(delim)) .. ")", SCRIPT)
  end
  return read_delim(s, delim, check_max(max, 2, "read_until"), "read_until", false)
end

-- A write that waited and found the session closed: its close error, or
-- ECLOSED (a peer's FIN is no error for the reads, but nothing can be sent).
local function write_failure(st)
  local m, c = ended(st)
  if not m or c == "EOF" then m, c = ECLOSED_MSG, "ECLOSED" end
  return nil, m, c
end

-- s:write(data)'s slow path: send, then wait while more than write_hwm is
-- pending. The method is a C function (lrbuf.c) that sends a string at
-- once when that cannot pass the mark, and calls this for the rest (so
-- the script is at level 3 here).
-- What write takes: a string, an iocore.buffer, or an array of them; a
-- misuse raises naming write (not the send it calls).
local function check_data(data)
  local t = type(data)
  if t == "string" or typename(data) == "iocore.buffer" then return end
  if t ~= "table" then
    error("bad argument #1 to 'write' (string, iocore.buffer or array of them expected, got " .. typename(data) .. ")",
      SCRIPT + 1)
  end
  for i = 1, rawlen(data) do
    local v = rawget(data, i)
    if type(v) ~= "string" and typename(v) ~= "iocore.buffer" then
      error(("bad argument #1 to 'write' (array of strings or iocore.buffer expected, item %d is %s)")
        :format(i, typename(v)), SCRIPT + 1)
    end
  end
end

-- A session in the plain state gets its state table only to wait.
local function write(s, data)
  local co = current("write", SCRIPT + 1)
  local st = streams[s]
  local hwm = is_session(s) and B.attached(s)
  if not hwm then
    st = stream_of(s, "write", co, SCRIPT)
    hwm = B.attached(s)
  end
  check_data(data)
  local ok, msg, code = S.send(s, data)
  if not ok and code == "ENOBUFS" then
    st = st or state_of(s)
    -- the queue is full: wait until it has drained, then the send is taken
    while not ok and code == "ENOBUFS" and not st.closed do
      local ws = st.writers
      if ws then ws[#ws + 1] = co else st.writers = { co } end
      co_yield()
      if st.closed then return write_failure(st) end
      ok, msg, code = S.send(s, data)
    end
  end
  if not ok then return nil, msg, code end
  if hwm == 0 then return true end
  -- want_drain: the queued bytes, and an on_drain asked for while there are
  -- some (a write the kernel takes at once gives no on_drain by itself)
  local pending = B.want_drain(s)
  if pending > hwm then
    st = st or state_of(s)
    local low = hwm // 2
    repeat
      local ws = st.writers
      if ws then ws[#ws + 1] = co else st.writers = { co } end
      co_yield()
      if st.closed then return write_failure(st) end
      pending = B.want_drain(s)
    until pending <= low
  end
  return true
end

-- ---- core methods -------------------------------------------------------------------------

local function spawn(core, fn, ...)
  if type(fn) ~= "function" then
    error("bad argument #1 to 'spawn' (function expected, got " .. type(fn) .. ")", 2)
  end
  local co = co_create(fn)
  owners[co] = core
  cores[B.lc(core)] = core
  local n, args = select("#", ...), { ... }
  C.post(core, function() wake(co, table.unpack(args, 1, n)) end)
  return true
end

local STREAM_KEYS = { handler = true, read_timeout = true, write_hwm = true }

local function dial(core, address, opts)
  local co = current("dial")
  if opts ~= nil and type(opts) ~= "table" then
    error("bad argument #2 to 'dial' (table expected, got " .. type(opts) .. ")", 2)
  end
  if opts and opts.on_recv ~= nil then
    error("bad argument #2 to 'dial' (field 'on_recv' is not for stream sessions: read with s:read*)", 2)
  end
  local copts = {}
  if opts then
    for k, v in pairs(opts) do
      if not STREAM_KEYS[k] then copts[k] = v end
    end
  end
  copts.on_connect, copts.on_recv, copts.on_close, copts.on_drain = on_connect, on_ready, on_close, on_drain
  if HAS_EOF then copts.on_eof = on_eof end
  local s, msg, code = C.connect(core, address, copts)
  if not s then return nil, msg, code end
  cores[B.lc(core)] = core
  local st = new_state(core, s, opts)
  st.connecting = co
  co_yield()
  local err = st.connect_err
  if err then
    st.connect_err = nil
    return nil, err, close_code(err)
  end
  return s
end

-- A handler listener's on_accept: the user's on_accept, then the handler
-- in a coroutine of its own, run at once up to its first wait. The
-- session stays in the plain state (no state table) unless the listener
-- has a read time-out or handlers of the script's (rec.stated).
local function accept_with_handler(rec)
  local hwm = rec.opts.write_hwm or DEFAULT_HWM
  return function(s)
    if rec.stated then
      new_state(rec.core, s, rec.opts)
    else
      B.attach(s, hwm)
    end
    if rec.on_accept then
      rec.on_accept(s)
      local st = streams[s]
      if (st and st.closed) or S.closed(s) then return end
    end
    local co = co_create(rec.handler)
    owners[co] = s
    B.own(s, co) -- (the session object keeps co alive)
    wake(co, s)
  end
end

local function listen(core, address, opts)
  if type(opts.handler) ~= "function" then
    error("bad argument #2 to 'listen' (field 'handler' must be a function, got " .. type(opts.handler) .. ")", 3)
  end
  if opts.on_recv ~= nil then
    error("bad argument #2 to 'listen' (fields 'handler' and 'on_recv' exclude each other)", 3)
  end
  for _, k in ipairs({ "on_accept", "on_close", "on_drain", "on_eof" }) do
    if opts[k] ~= nil and type(opts[k]) ~= "function" then
      error(("bad argument #2 to 'listen' (field '%s' must be a function, got %s)"):format(k, type(opts[k])), 3)
    end
  end
  for _, k in ipairs({ "read_timeout", "write_hwm" }) do
    local v = opts[k]
    if v ~= nil and (math.type(v) ~= "integer" or v < 0) then
      error(("bad argument #2 to 'listen' (field '%s' must be a non-negative integer)"):format(k), 3)
    end
  end
  local rec = { core = core, handler = opts.handler, on_accept = opts.on_accept,
                opts = { read_timeout = opts.read_timeout, write_hwm = opts.write_hwm,
                         on_close = opts.on_close, on_drain = opts.on_drain, on_eof = opts.on_eof } }
  rec.stated = (opts.read_timeout or 0) > 0 or opts.on_close ~= nil or opts.on_drain ~= nil or opts.on_eof ~= nil
  local copts = {}
  for k, v in pairs(opts) do
    if not STREAM_KEYS[k] then copts[k] = v end
  end
  copts.on_accept, copts.on_recv, copts.on_close, copts.on_drain =
      accept_with_handler(rec), on_ready, on_close, on_drain
  if HAS_EOF then copts.on_eof = on_eof end
  local l, msg, code = C.listen(core, address, copts)
  if not l then return nil, msg, code end
  cores[B.lc(core)] = core
  stream_listeners[l] = rec
  return l
end

-- ---- iocore.sleep -------------------------------------------------------------------------

local function sleep(ms)
  local co = current("sleep")
  if math.type(ms) ~= "integer" and type(ms) ~= "number" then
    error("bad argument #1 to 'sleep' (number expected, got " .. type(ms) .. ")", 2)
  end
  if ms ~= ms or ms == math.huge or ms == -math.huge then
    error("bad argument #1 to 'sleep' (a finite number of milliseconds expected, got " .. tostring(ms) .. ")", 2)
  end
  ms = math.floor(ms)
  if ms < 0 then ms = 0 end
  if ms > 0x7fffffff then
    error("bad argument #1 to 'sleep' (at most 2^31-1 ms, got " .. tostring(ms) .. ")", 2)
  end
  C.after(core_of(owners[co]), ms, function() wake(co) end)
  co_yield()
  return true
end

-- ---- installing -------------------------------------------------------------------------------

-- The method table behind a metatable's __index (a table, or the first
-- upvalue of an __index function).
local function methods_of(name)
  local mt = debug.getregistry()[name]
  local idx = mt and mt.__index
  if type(idx) == "table" then return idx end
  if type(idx) == "function" then
    local _, v = debug.getupvalue(idx, 1)
    if type(v) == "table" then return v end
  end
  error("iocore.stream: cannot find the methods of " .. name)
end

-- Error reporting without the binding's report(): a posted function that
-- raises, so the error reaches on_error (and stats().handler_errors) like
-- any handler's, but on_error gets no session.
local function report_by_post(core, msg, s)
  local _ = s
  C.post(core, function() error(msg, 0) end)
end

-- Adds the stream style to the module table `iocore`. `methods`, when the
-- binding passes it, is { core = ..., session = ..., listener = ...,
-- report = fn(core, msg, session) }; otherwise the method tables are found
-- through the registry.
function M.install(iocore, methods)
  if installed[iocore] then return iocore end
  installed[iocore] = true
  methods = methods or {}
  local reg = debug.getregistry()
  local smt, cmt, lmt = reg["iocore.session"], reg["iocore.core"], reg["iocore.listener"]
  local sm = methods.session or methods_of("iocore.session")
  local cm = methods.core or methods_of("iocore.core")
  local lm = methods.listener or methods_of("iocore.listener")
  S, C, L = {}, {}, {}
  for k, v in pairs(sm) do S[k] = v end
  for k, v in pairs(cm) do C[k] = v end
  for k, v in pairs(lm) do L[k] = v end
  HAS_EOF = S.on_eof ~= nil
  SMT, SMT_FIELDS = smt, reg["iocore.session+fields"]
  local c_report = methods.report
  if c_report then
    -- the binding's own: on_error gets the session; it declines (false)
    -- outside a handler, then the posted error does
    report = function(core, msg, s)
      if not c_report(core, msg, s) then report_by_post(core, msg, s) end
    end
  else
    report = report_by_post
  end

  B = methods.rbuf or reg["iocore.rbuf"]
  if type(B) ~= "table" then error("iocore.stream: this iocore module has no stream receive buffer (rebuild it)") end
  DEFAULT_MAX = B.max
  if B.set_finish then B.set_finish(finish) end
  M.limits.max, M.limits.read_ahead = B.max, B.read_ahead
  sm.read, sm.read_line, sm.read_until = B.make_readers(owners, PARK, try_park, read, read_line, read_until)
  sm.write = B.make_writer(owners, write)

  cm.spawn = spawn
  cm.dial = dial
  -- the binding's methods that stream sessions need to see through
  require("iocore.stream_wrap")({
    sm = sm, cm = cm, lm = lm, smt = smt, cmt = cmt, lmt = lmt, S = S, C = C, L = L,
    streams = streams, state_of = state_of, stream_listeners = stream_listeners,
    pending_read_timeouts = pending_read_timeouts, wake_reader = wake_reader,
    wake_writers = wake_writers, listen = listen, typename = typename,
    ECLOSED_MSG = ECLOSED_MSG, HAS_EOF = HAS_EOF, B = B,
  })

  iocore.sleep = sleep
  require("iocore.names").install(iocore, { wake = wake, core_of = function(co) return owners[co] and core_of(owners[co]) end })
  return iocore
end

-- For the project's other pure-Lua modules (iocore.redis): resumes an
-- iocore coroutine that suspended itself with coroutine.yield(), handled
-- like every wake here (an error is reported and aborts its session; a
-- handler that returns closes its session).
M.wake = wake

-- Loaded by hand after the module (`require "iocore"; require "iocore.stream"`):
-- install into it now.
local loaded = package.loaded.iocore
if type(loaded) == "table" then M.install(loaded) end

return M
