-- Time: core:now(), and the session time-outs (idle, write, connect; read is
-- accepted for the stream style) as listener/connect options and through
-- s:timeouts{...}.
local H = require "helpers"
local P = require "peer"
local lu = H.lu

TestTimeouts = P.class()

local KiB, MiB = 1024, 1 << 20

local run_for = P.run_for

function TestTimeouts:test_core_now_is_monotonic_milliseconds()
  H.with_core(function(core)
    local t0 = core:now()
    lu.assertEquals(type(t0), "number")
    local last, backwards = t0, 0
    for _ = 1, 10000 do
      local t = core:now()
      if t < last then backwards = backwards + 1 end
      last = t
    end
    lu.assertEquals(backwards, 0, "core:now() went backwards")
    local in_timer, in_handler
    core:after(200, function() in_timer = core:now() end)
    H.wait_for(core, function() return in_timer end, "the timer")
    -- a 200 ms timer cannot fire before 200 ms have passed (milliseconds,
    -- not seconds or microseconds)
    lu.assertTrue(in_timer - t0 >= 190, ("now() advanced %s over a 200 ms timer"):format(in_timer - t0))
    lu.assertTrue(in_timer - t0 < 60000, ("now() advanced %s over a 200 ms timer"):format(in_timer - t0))
    core:post(function() in_handler = core:now() end)
    H.wait_for(core, function() return in_handler end, "the post")
    lu.assertTrue(in_handler >= in_timer)
  end)
end

-- Issue: idle_timeout counted received bytes only, so it cut active
-- downloads. Idle means nothing received AND nothing written: a client that
-- sends nothing but reads 3 MiB over ~6 s is not idle with idle_timeout 1 s.
function TestTimeouts:test_idle_timeout_counts_writes_so_a_download_is_not_cut()
  P.require()
  H.with_core(function(core)
    local data = H.payload(3 * MiB, 61)
    local server_err = "not yet"
    local l = H.listen(core, {
      idle_timeout = 1000,
      on_accept = function(s) s:send(data) end,
      on_close = function(_, err) server_err = err end,
    })
    -- the reader closes once it has everything; the server then sees its FIN
    local p = P.client(l:port(), { rcvbuf = 64 * KiB, rate = 512 * KiB, close_at = #data })
    P.event(core, p, "closed %d+", 40000)
    H.wait_for(core, function() return server_err ~= "not yet" end, "the server's on_close")
    lu.assertEquals(p:received(), #data, "bytes downloaded before the close")
    lu.assertTrue(p:data() == data, "the download differs")
    lu.assertNil(server_err)
    l:close()
  end)
end

-- s:timeouts{...} returns the session; idle per session, and 0 turns off
-- the listener's idle_timeout for one session.
function TestTimeouts:test_timeouts_sets_idle_per_session_and_0_turns_it_off()
  H.with_core(function(core)
    local errs, ret, n = {}, {}, 0
    local l = H.listen(core, {
      idle_timeout = 300,
      on_accept = function(s)
        n = n + 1
        s.n = n
        -- the first session keeps the listener's 300 ms; the second turns it off
        if n == 2 then ret[2] = s:timeouts { idle = 0 } end
        ret.s = ret.s or {}
        ret.s[n] = s
      end,
      on_close = function(s, err) errs[s.n] = err or "nil" end,
    })
    local a = H.client(core, l:address())
    H.wait_for(core, function() return n == 1 end, "the first accept")
    local b = H.client(core, l:address())
    H.wait_for(core, function() return n == 2 end, "the second accept")
    H.wait_for(core, function() return errs[1] end, "the idle close of session 1", 10000)
    run_for(core, 700)
    lu.assertIs(ret[2], ret.s[2], "timeouts{} returns the session")
    H.assert_msg(errs[1], "ETIMEDOUT", "session 1")
    lu.assertNil(errs[2], "session 2 (idle = 0) was closed: " .. tostring(errs[2]))
    b.s:close()
    H.wait_for(core, function() return errs[2] and a.closed and b.closed end, "closes")
    lu.assertEquals(errs[2], "nil")
    -- a session of a listener without idle_timeout, given one by timeouts{}
    local l2 = H.listen(core, {
      on_accept = function(s) s.n = 4; ret[4] = s:timeouts { idle = 200 } end,
      on_close = function(s, err) errs[s.n] = err or "nil" end,
    })
    local c = H.client(core, l2:address())
    H.wait_for(core, function() return errs[4] and c.closed end, "the idle close of session 4", 10000)
    H.assert_msg(errs[4], "ETIMEDOUT", "session 4 (timeouts{idle = 200})")
    lu.assertEquals(tostring(ret[4]):match("^iocore%.session"), "iocore.session")
    l:close()
    l2:close()
  end)
end

-- write_timeout: a non-empty send queue that makes no progress (the peer
-- reads nothing) closes the session with ETIMEDOUT; as a listener option
-- and per session.
local function stalled_send(core, listen_opts, on_accept)
  local server_err = "not yet"
  local o = {
    on_accept = function(s)
      if on_accept then on_accept(s) end
      s:send(H.payload(8 * MiB, 62))
    end,
    on_close = function(_, err) server_err = err end,
  }
  for k, v in pairs(listen_opts) do o[k] = v end
  local l = H.listen(core, o)
  local p = P.client(l:port(), { rcvbuf = 64 * KiB, no_read = true, deadline = 30 })
  H.wait_for(core, function() return server_err ~= "not yet" end, "the write time-out", 15000)
  H.assert_msg(server_err, "ETIMEDOUT", "on_close after the write time-out")
  p:kill("KILL")
  l:close()
end

function TestTimeouts:test_write_timeout_closes_a_send_queue_without_progress()
  P.require()
  H.with_core(function(core) stalled_send(core, { write_timeout = 500 }) end)
end

function TestTimeouts:test_timeouts_write_per_session()
  P.require()
  H.with_core(function(core)
    stalled_send(core, {}, function(s) lu.assertIs(s:timeouts { write = 500 }, s) end)
  end)
end

-- A slow reader that keeps reading is progress: write_timeout 500 ms does
-- not cut a 2 MiB download that takes ~4 s.
function TestTimeouts:test_write_timeout_not_hit_while_the_peer_reads_slowly()
  P.require()
  H.with_core(function(core)
    local data = H.payload(2 * MiB, 63)
    local server_err = "not yet"
    local l = H.listen(core, {
      write_timeout = 500,
      on_accept = function(s) s:send(data) end,
      on_close = function(_, err) server_err = err end,
    })
    local p = P.client(l:port(), { rcvbuf = 64 * KiB, rate = 512 * KiB, close_at = #data })
    P.event(core, p, "closed %d+", 40000)
    H.wait_for(core, function() return server_err ~= "not yet" end, "the server's on_close")
    lu.assertTrue(p:data() == data, "the download differs")
    lu.assertNil(server_err)
    l:close()
  end)
end

-- Issue: a connect time-out gave on_connect ECANCELED and on_close
-- ETIMEDOUT. Both carry the same "ETIMEDOUT: ..." string. The listener is a
-- "black hole" (accept queue full), so the connect hangs.
local function connect_timeout_case(core, opts, after_connect)
  local hole, port = P.blackhole(core)
  local got = {}
  local o = {
    on_connect = function(_, err) got.connect = err or "nil" end,
    on_close = function(_, err) got.close = err or "nil" end,
  }
  for k, v in pairs(opts) do o[k] = v end
  local s = assert(core:connect("127.0.0.1:" .. port, o))
  if after_connect then after_connect(s) end
  H.wait_for(core, function() return got.close end, "the connect time-out", 10000)
  H.assert_msg(got.connect, "ETIMEDOUT", "on_connect")
  lu.assertEquals(got.close, got.connect, "on_close's err differs from on_connect's")
  hole:kill("KILL")
end

function TestTimeouts:test_connect_timeout_on_connect_and_on_close_carry_the_same_error()
  P.require()
  H.with_core(function(core) connect_timeout_case(core, { connect_timeout = 300 }) end)
end

function TestTimeouts:test_timeouts_connect_per_session()
  P.require()
  H.with_core(function(core)
    connect_timeout_case(core, {}, function(s) lu.assertIs(s:timeouts { connect = 300 }, s) end)
  end)
end

-- read_timeout is for the stream style; a callback-style session accepts it
-- (listener option and timeouts{read=}) and is not closed by it.
function TestTimeouts:test_read_timeout_is_accepted_and_does_not_close_a_callback_session()
  H.with_core(function(core)
    local err, srv = "not yet", nil
    local l = H.listen(core, {
      read_timeout = 100,
      on_accept = function(s) srv = s; s:timeouts { read = 100 } end,
      on_close = function(_, e) err = e end,
    })
    local c = H.client(core, l:address())
    H.wait_for(core, function() return srv end, "accept")
    run_for(core, 500)
    lu.assertEquals(err, "not yet", "the read time-out closed a callback-style session")
    c.s:close()
    H.wait_for(core, function() return err ~= "not yet" and c.closed end, "closes")
    lu.assertNil(err)
    l:close()
  end)
end

function TestTimeouts:test_timeouts_misuse_raises()
  H.with_core(function(core)
    local results = {}
    local l = H.listen(core, {
      on_accept = function(s)
        results.not_table = table.pack(pcall(s.timeouts, s, "idle"))
        results.negative = table.pack(pcall(s.timeouts, s, { idle = -1 }))
        results.string = table.pack(pcall(s.timeouts, s, { write = "soon" }))
        s:close()
      end,
    })
    local c = H.client(core, l:address())
    H.wait_for(core, function() return c.closed and results.string end, "close")
    for what, r in pairs(results) do
      lu.assertFalse(r[1], what .. " did not raise")
      lu.assertStrContains(tostring(r[2]), "bad argument", false, what)
    end
    lu.assertFalse(pcall(core.listen, core, "127.0.0.1:0", { write_timeout = -1 }))
    lu.assertFalse(pcall(core.listen, core, "127.0.0.1:0", { close_timeout = "x" }))
    lu.assertFalse(pcall(core.connect, core, "127.0.0.1:9", { connect_timeout = -5 }))
    l:close()
  end)
end
