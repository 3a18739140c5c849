-- Part of iocore's stream style (lua/iocore/stream.lua): the binding's
-- methods that a stream session must see through, wrapped. Closing by this
-- side (close, abort) makes reads return ECLOSED at once and wakes parked
-- coroutines; handlers set on a stream session (on_close, on_drain,
-- on_eof) run behind the stream's own; on_recv on one raises; timeouts{}
-- takes `read`; listen takes `handler`; a stream listener's on_accept runs
-- before its handler. Each wrapper checks self and its arguments with the
-- binding's messages (the binding's own checks would name the wrapper).
--
-- Called once, by stream.lua's install, with `ctx`: the method tables (sm,
-- cm, lm) and metatables (smt, cmt, lmt), the binding's originals (S, C, L),
-- and stream.lua's state and functions it needs.
return function(ctx)
  local sm, cm, lm, smt, cmt, lmt = ctx.sm, ctx.cm, ctx.lm, ctx.smt, ctx.cmt, ctx.lmt
  local S, C, L = ctx.S, ctx.C, ctx.L
  local state_of, stream_listeners, pending_read_timeouts = ctx.state_of, ctx.stream_listeners,
      ctx.pending_read_timeouts
  local wake_reader, wake_writers, listen, typename = ctx.wake_reader, ctx.wake_writers, ctx.listen, ctx.typename
  local ECLOSED_MSG, HAS_EOF, B = ctx.ECLOSED_MSG, ctx.HAS_EOF, ctx.B

  -- (a session with user fields has a metatable of its own kind)
  local smt_fields = debug.getregistry()["iocore.session+fields"]
  local function self_check(obj, mt, method)
    local omt = getmetatable(obj)
    if omt ~= mt and not (mt == smt and omt == smt_fields and omt ~= nil) then
      error(("calling '%s' on bad self (%s expected, got %s)"):format(method, mt.__name, typename(obj)), 3)
    end
  end
  -- Calls the binding's f(obj, ...) on behalf of the script's method
  -- `method`. The binding names its caller in an argument error, and here
  -- that caller is this file calling a plain function: the name would be
  -- the wrapper's local and every argument number one too high (a method
  -- call does not count self). Such an error is raised again as the script
  -- sees it, at `level` (counted from this function: 1 is here); any other
  -- error goes on unchanged.
  local function as_method(method, level, f, ...)
    local r = table.pack(pcall(f, ...))
    if r[1] then return table.unpack(r, 2, r.n) end
    local msg = r[2]
    if type(msg) == "string" then
      local n, rest = msg:match("^[^\n]-bad argument #(%d+) to '[^']*' (.*)$")
      if n == "1" then error(("calling '%s' on bad self %s"):format(method, rest), level) end
      if n then error(("bad argument #%d to '%s' %s"):format(tonumber(n) - 1, method, rest), level) end
    end
    error(msg, 0)
  end
  local function fn_check(fn, method)
    if fn ~= nil and type(fn) ~= "function" then
      error(("bad argument #1 to '%s' (function expected, got %s)"):format(method, typename(fn)), 3)
    end
  end

  -- handlers set by the script on a stream session go behind ours
  local function chained(name, field)
    local orig = S[name]
    sm[name] = function(s, fn)
      self_check(s, smt, name)
      fn_check(fn, name)
      local st = state_of(s)
      if not st then
        local a, b, c = orig(s, fn)
        return a, b, c
      end
      if st.closed then return nil, ECLOSED_MSG, "ECLOSED" end
      st[field] = fn
      return s
    end
  end
  chained("on_close", "user_on_close")
  chained("on_drain", "user_on_drain")
  if HAS_EOF then chained("on_eof", "user_on_eof") end
  local orig_on_recv = S.on_recv
  sm.on_recv = function(s, fn)
    self_check(s, smt, "on_recv")
    fn_check(fn, "on_recv")
    if fn ~= nil and B.attached(s) then
      error("on_recv: the session is in stream style (read it with s:read*)", 2)
    end
    local a, b, c = orig_on_recv(s, fn)
    return a, b, c
  end
  -- this side closing: reads return ECLOSED from now on, at once
  local function closing(name)
    local orig = S[name]
    if not orig then return end
    sm[name] = function(s)
      self_check(s, smt, name)
      local st = state_of(s)
      if st and not st.local_closed then
        st.local_closed = true
        B.closing(s)
        if st.reader or st.writers then
          C.post(st.core, function()
            wake_reader(st)
            wake_writers(st)
          end)
        end
      end
      local a, b, c = orig(s)
      return a, b, c
    end
  end
  closing("close")
  closing("abort")
  local orig_timeouts = S.timeouts
  sm.timeouts = function(s, t)
    self_check(s, smt, "timeouts")
    if type(t) ~= "table" then
      error("bad argument #1 to 'timeouts' (table expected, got " .. typename(t) .. ")", 2)
    end
    local rest, any = {}, false
    for k, v in pairs(t) do
      if k == "read" then
        if math.type(v) ~= "integer" or v < 0 then
          error("bad argument #1 to 'timeouts' (field 'read' must be a non-negative integer)", 2)
        end
      else
        rest[k], any = v, true
      end
    end
    if any then
      if not orig_timeouts then
        error("bad argument #1 to 'timeouts' (only 'read' is supported by this build)", 2)
      end
      local ok, msg, code = as_method("timeouts", 3, orig_timeouts, s, rest)
      if not ok then return ok, msg, code end
    end
    if t.read ~= nil then
      if S.closed(s) then return nil, ECLOSED_MSG, "ECLOSED" end
      local ms = t.read > 0 and t.read or nil
      local st = state_of(s)
      if st then st.read_timeout = ms else pending_read_timeouts[s] = ms end
    end
    return s
  end

  local orig_listen = C.listen
  -- `coroutine = true`, the older name of the stream style: the listener's
  -- on_accept runs as its handler, in a coroutine of its own per session,
  -- where s:read* and s:write wait (and the session closes when it
  -- returns). Returns the options to use; raises (at the script's listen)
  -- on a misuse.
  local function coroutine_option(opts)
    local co = opts.coroutine
    if type(co) ~= "boolean" then
      error("bad argument #2 to 'listen' (field 'coroutine' must be a boolean, got " .. typename(co) .. ")", 3)
    end
    local o = {}
    for k, v in pairs(opts) do
      if k ~= "coroutine" then o[k] = v end
    end
    if not co then return o end
    if opts.handler ~= nil then
      error("bad argument #2 to 'listen' (fields 'coroutine' and 'handler' exclude each other: "
        .. "with coroutine = true, on_accept is the handler)", 3)
    end
    if type(opts.on_accept) ~= "function" then
      error("bad argument #2 to 'listen' (field 'coroutine' needs 'on_accept', the function to run per session, got "
        .. typename(opts.on_accept) .. ")", 3)
    end
    o.on_accept, o.handler = nil, opts.on_accept
    return o
  end

  cm.listen = function(core, address, opts)
    self_check(core, cmt, "listen")
    if tostring(core):find("(closed)", 1, true) then
      error("calling 'listen' on bad self (core is closed)", 2)
    end
    if type(address) ~= "string" then
      error("bad argument #1 to 'listen' (string expected, got " .. typename(address) .. ")", 2)
    end
    if opts ~= nil and type(opts) ~= "table" then
      error("bad argument #2 to 'listen' (table expected, got " .. typename(opts) .. ")", 2)
    end
    if opts ~= nil and opts.coroutine ~= nil then opts = coroutine_option(opts) end
    if opts == nil or opts.handler == nil then
      local a, b, c = as_method("listen", 3, orig_listen, core, address, opts)
      return a, b, c
    end
    local a, b, c = listen(core, address, opts)
    return a, b, c
  end
  -- stream.lua's listen (a handler listener) and dial reach the binding
  -- through C.listen and C.connect: their option errors name the script's
  -- call too (user -> cm.listen -> listen -> here; user -> dial -> here)
  C.listen = function(core, address, opts)
    local a, b, c = as_method("listen", 5, orig_listen, core, address, opts)
    return a, b, c
  end
  local orig_connect = C.connect
  C.connect = function(core, address, opts)
    local a, b, c = as_method("dial", 4, orig_connect, core, address, opts)
    return a, b, c
  end

  -- core:spawn checks its self here, so a wrong or closed core is named as
  -- spawn's (the spawn underneath would fail in its C.post, naming post);
  -- the tail call keeps spawn's own argument errors at the script's line
  local orig_spawn = cm.spawn
  if orig_spawn then
    cm.spawn = function(core, ...)
      self_check(core, cmt, "spawn")
      if tostring(core):find("(closed)", 1, true) then
        error("calling 'spawn' on bad self (core is closed)", 2)
      end
      return orig_spawn(core, ...)
    end
  end

  local orig_on_accept = L.on_accept
  lm.on_accept = function(l, fn)
    self_check(l, lmt, "on_accept")
    fn_check(fn, "on_accept")
    local rec = stream_listeners[l]
    if not rec then
      local a, b, c = orig_on_accept(l, fn)
      return a, b, c
    end
    rec.on_accept = fn
    return l
  end
end
