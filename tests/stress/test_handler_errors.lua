-- Errors raised by handlers: every kind of error value, in every kind of
-- handler, in on_error itself, and in __gc. In-process (one core serving
-- its own clients); the watchdog of run.lua turns a lock left held into a
-- failure.
local lu = require "luaunit"
local S = require "lib"

TestHandlerErrors = S.class()
TestHandlerErrors.limits = {
  test_every_error_in_every_handler = { 120, 900 },
  test_errors_in_on_error_itself = { 60, 600 },
  test_errors_in_gc_metamethods = { 60, 600 },
}

local N = S.size(100, 10000)

local bad_tostring_mt = { __tostring = function() error("__tostring fails too") end }

local KINDS = { "string", "table", "nil", "bad_tostring" }
local function raise(kind)
  if kind == "string" then error("boom: a string")
  elseif kind == "table" then error({ code = 42 })
  elseif kind == "nil" then error(nil)
  else error(setmetatable({}, bad_tostring_mt)) end
end

-- What on_error must get for each kind (the message is always a string).
local function check_message(kind, msg, where)
  if type(msg) ~= "string" then
    lu.fail(("%s, %s: on_error got a %s, not a message"):format(where, kind, type(msg)), 2)
  end
  local want = ({ string = "boom: a string", table = "(error object is a table value)",
                  ["nil"] = "(error object is a nil value)", bad_tostring = "__tostring fails too" })[kind]
  if not msg:find(want, 1, true) then
    lu.fail(("%s, %s: message %q lacks %q"):format(where, kind, msg:sub(1, 300), want), 2)
  end
  if not msg:find("stack traceback", 1, true) then
    lu.fail(("%s, %s: no traceback in %q"):format(where, kind, msg:sub(1, 300)), 2)
  end
end

-- Each place an error can be raised, with how to make it happen `n` times.
-- The server's listener handlers look at `plan.server`, the clients' at
-- `plan.client`; a trigger makes one session (or timer, or post).
local PLACES = {
  "server on_accept", "server on_recv", "server on_drain", "server on_close",
  "client on_connect", "client on_recv", "client on_close", "timer (after)", "timer (every)", "post",
}

function TestHandlerErrors:test_every_error_in_every_handler()
  S.with_core(nil, function(core, ctx)
    local plan = { kind = "string", place = "" }
    local BIG = ("x"):rep(65536)
    local function maybe(place) if plan.place == place then raise(plan.kind) end end
    local closed_clients, server_closed = 0, 0
    local l = assert(core:listen("127.0.0.1:0", {
      on_accept = function(s)
        maybe("server on_accept")
        if plan.place == "server on_drain" then
          -- the second send queues behind the first: on_drain follows
          s:send(BIG)
          s:send("y")
        elseif plan.place == "client on_recv" then
          s:send("hi")
        end
      end,
      on_recv = function(s, data) maybe("server on_recv") end,
      on_drain = function(s) maybe("server on_drain") end,
      on_close = function(s, err)
        server_closed = server_closed + 1
        maybe("server on_close")
      end,
    }))
    local addr = l:address()
    local function client()
      core:connect(addr, {
        on_connect = function(s, err)
          if err then return end
          maybe("client on_connect")
          if plan.place == "server on_recv" then s:send("x")
          elseif plan.place == "server on_close" or plan.place == "client on_close" then s:close() end
        end,
        on_recv = function(s, data)
          maybe("client on_recv")
          if plan.place == "server on_drain" then
            -- whether a send "could not be written at once" is up to the
            -- kernel: a session whose sends went out whole gets no on_drain
            -- and simply ends here
            s.got = (s.got or 0) + #data
            if s.got >= #BIG + 1 then s:close() end
          end
        end,
        on_close = function(s, err)
          closed_clients = closed_clients + 1
          maybe("client on_close")
        end,
      })
    end

    local report = {}
    local base_errors = core:stats().handler_errors
    for _, kind in ipairs(KINDS) do
      for _, place in ipairs(PLACES) do
        plan.kind, plan.place = kind, place
        ctx.errors = {}
        closed_clients, server_closed = 0, 0
        local started = 0
        -- a session's error may come from either side, in either order:
        -- it is done when both sides have closed
        local function done() return math.min(closed_clients, server_closed) end
        if place == "timer (after)" then
          for _ = 1, N do core:after(0, function() raise(kind) end) end
        elseif place == "timer (every)" then
          local fired, t = 0, nil
          t = core:every(1, function()
            fired = fired + 1
            if fired >= N then t:cancel() end
            raise(kind)
          end)
        elseif place == "post" then
          for _ = 1, N do core:post(function() raise(kind) end) end
        end
        local is_session = place:match("^server") or place:match("^client")
        -- sessions: at most 64 in flight, until N errors (each session
        -- raises at most one)
        local ok = S.run_until(core, function()
          if is_session then
            while #ctx.errors + (started - done()) < N and started - done() < 64 do
              started = started + 1
              client()
            end
          end
          return #ctx.errors >= N and (not is_session or done() >= started)
        end, S.size(30000, 300000))
        if not ok then
          lu.fail(("%s, %s: %d of %d errors reported (%d clients closed)"):format(place, kind, #ctx.errors, N,
            closed_clients))
        end
        core:run(20) -- nothing more may come
        lu.assertEquals(#ctx.errors, N, place .. ", " .. kind .. ": errors reported")
        for i, e in ipairs(ctx.errors) do
          check_message(kind, e.msg, place)
          if is_session then
            lu.assertNotNil(e.session, place .. ": on_error got no session")
          else
            lu.assertNil(e.session, place .. ": on_error got a session for a non-session handler")
          end
          if i > 3 then break end -- the same code path; spare the time
        end
        if kind == "bad_tostring" and place == PLACES[1] then report[#report + 1] = ctx.errors[1].msg:match("^[^\n]*") end
      end
    end
    ctx.errors = {}
    local total = N * #KINDS * #PLACES
    lu.assertEquals(core:stats().handler_errors - base_errors, total, "stats().handler_errors")
    S.note("%d errors (%d kinds x %d handlers x %d), each reported with a traceback; an error object whose "
      .. "__tostring fails reads: %s", total, #KINDS, #PLACES, N, report[1] or "?")

    -- still serving: an echo round trip; the lock is free, the stack clean
    plan.place = ""
    local l2 = assert(core:listen("127.0.0.1:0", { on_recv = function(s, d) s:send(d) end }))
    local got, stack_inside
    core:connect(l2:address(), {
      on_connect = function(s) s:send("ping") end,
      on_recv = function(s, d) got = d; stack_inside = core:stats().stack; s:close() end,
    })
    lu.assertTrue(S.run_until(core, function() return got ~= nil end, 5000), "no echo after the errors")
    lu.assertEquals(got, "ping")
    lu.assertEquals(stack_inside, 0, "handler thread stack inside a handler")
    lu.assertEquals(core:stats().stack, 0, "handler thread stack between handlers")
    l:close()
    l2:close()
  end)
end

-- on_error itself raises (each kind, 100 times; long: 10,000) for every
-- error: reported on stderr, never propagated; the server keeps serving,
-- the stack stays clean.
function TestHandlerErrors:test_errors_in_on_error_itself()
  S.with_core(nil, function(core)
    local calls = 0
    local kind = "string"
    core:on_error(function(msg, s)
      calls = calls + 1
      raise(kind)
  end)
  local n = N -- of each kind (each writes two lines to stderr)
  for _, k in ipairs(KINDS) do
    kind = k
    for _ = 1, n do core:post(function() error("first") end) end
    lu.assertTrue(S.run_until(core, function() return calls >= n end, 30000), "on_error not called for " .. k)
    calls = 0
  end
  lu.assertEquals(core:stats().handler_errors, n * #KINDS)
  local l = assert(core:listen("127.0.0.1:0", { on_recv = function(s, d) s:send(d) end }))
  local got
  core:connect(l:address(), {
    on_connect = function(s) s:send("ping") end,
    on_recv = function(s, d) got = d; s:close() end,
  })
  lu.assertTrue(S.run_until(core, function() return got ~= nil end, 5000), "no echo after on_error failed")
  lu.assertEquals(core:stats().stack, 0)
  l:close()
  end)
end

-- Session fields whose __gc raises (each kind, 100 times; long: 10,000),
-- collected inside handlers and between runs: Lua turns those into
-- warnings; nothing reaches on_error, nothing breaks, the stack stays clean.
function TestHandlerErrors:test_errors_in_gc_metamethods()
  S.with_core(nil, function(core, ctx)
    local finalized = 0
    local function gc_bomb(kind)
      return setmetatable({}, { __gc = function()
        finalized = finalized + 1
        raise(kind)
      end })
    end
    local i = 0
    local l = assert(core:listen("127.0.0.1:0", {
      on_accept = function(s)
        i = i + 1
        s.bomb = gc_bomb(KINDS[i % #KINDS + 1])
        if i % 50 == 0 then collectgarbage() end -- finalizers run inside a handler
      end,
      on_recv = function(s, d) s:send(d) end,
    }))
    local n = 2 * N -- sessions: two finalizers each, so N per kind
    local done = 0
    local started = 0
    lu.assertTrue(S.run_until(core, function()
      while started < n and started - done < 64 do
        started = started + 1
        core:connect(l:address(), {
          on_connect = function(s) s.bomb = gc_bomb(KINDS[started % #KINDS + 1]); s:send("x") end,
          on_recv = function(s) s:close() end,
          on_close = function() done = done + 1 end,
        })
      end
      return done >= n
    end, S.size(60000, 600000)), "sessions did not finish")
    collectgarbage()
    collectgarbage()
    core:run(50)
    collectgarbage()
    S.note("%d finalizers raised (4 kinds), inside handlers and out", finalized)
    lu.assertTrue(finalized >= n, "finalizers ran: " .. finalized)
    lu.assertEquals(#ctx.errors, 0, "an error in __gc reached on_error")
    local got
    core:connect(l:address(), {
      on_connect = function(s) s:send("ping") end,
      on_recv = function(s, d) got = d; s:close() end,
    })
    lu.assertTrue(S.run_until(core, function() return got ~= nil end, 5000), "no echo after the finalizers")
    lu.assertEquals(core:stats().stack, 0)
    l:close()
  end)
end
