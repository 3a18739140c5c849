-- iocore.redis against a real redis-server on loopback (and against fake
-- servers for the failures Redis will not produce on demand).
--   lua5.4 tests/cluster/test_redis.lua [-p pattern]
-- Prints luaunit's report and a last line "TESTS passed=P failed=F".
local lu = require "luaunit"
local iocore = require "iocore"
local redis = require "iocore.redis"
local H = require "redis_harness"

local port = H.free_port()
local addr = "127.0.0.1:" .. port
H.start_redis(port)

local core, errors

local function setup()
  core, errors = H.core()
end
local function teardown()
  if core then
    H.assert_closed_cleanly(core, errors)
    core = nil
  end
end

local function with_client(fn, opts)
  H.in_coroutine(core, function()
    local r = assert(redis.connect(core, addr, opts))
    fn(r)
    r:close()
  end)
end

Test = { setUp = setup, tearDown = teardown }

function Test.test_redis_commands_return_typed_replies()
  with_client(function(r)
    lu.assertEquals(r:set("k1", "v1"), "OK")
    lu.assertEquals(r:get("k1"), "v1")
    lu.assertIs(r:get("no-such-key"), redis.null)
    lu.assertEquals(r:del("n1"), 0)
    lu.assertEquals(r:incr("n1"), 1)
    lu.assertEquals(r:incrby("n1", 41), 42)
    lu.assertEquals(r:rpush("l1", "a", "b", 3), 3)
    lu.assertEquals(r:lrange("l1", 0, -1), { "a", "b", "3" })
    local bin = "a\r\nb\0c\n"
    r:set("bin", bin)
    lu.assertEquals(r:get("bin"), bin)
    local big = ("x"):rep(300000)
    r:set("big", big)
    lu.assertEquals(r:get("big"), big)
    lu.assertEquals(r:call("PING"), "PONG")
    r:del("k1", "n1", "l1", "bin", "big")
  end)
end

function Test.test_redis_error_reply_is_eredis_and_connection_stays()
  with_client(function(r)
    r:set("s1", "x")
    local v, msg, code = r:lpush("s1", "y")
    lu.assertNil(v)
    lu.assertEquals(code, "EREDIS")
    lu.assertStrContains(msg, "EREDIS: WRONGTYPE")
    v, msg, code = r:call("NOSUCHCOMMAND")
    lu.assertEquals(code, "EREDIS")
    lu.assertStrContains(msg, "unknown command")
    lu.assertEquals(r:get("s1"), "x")
    lu.assertEquals(r.connects, 1)
    r:del("s1")
  end)
end

function Test.test_redis_pipeline_returns_every_reply_in_order()
  with_client(function(r)
    r:del("p1")
    local p = r:pipeline()
    for _ = 1, 1000 do p:incr("p1") end
    p:set("p2", "x")
    p:lpush("p2", "boom") -- an error reply in the middle
    p:get("p1")
    local res = assert(p:run())
    lu.assertEquals(#res, 1003)
    for i = 1, 1000 do lu.assertEquals(res[i], i) end
    lu.assertEquals(res[1001], "OK")
    lu.assertTrue(redis.is_error(res[1002]))
    lu.assertStrContains(tostring(res[1002]), "WRONGTYPE")
    lu.assertEquals(res[1003], "1000")
    lu.assertEquals(#assert(p:run()), 0) -- emptied by run
    r:del("p1", "p2")
  end)
end

function Test.test_redis_shared_client_answers_each_coroutine_its_own_reply()
  local r
  H.in_coroutine(core, function() r = assert(redis.connect(core, addr)) end)
  local done, bad = 0, {}
  for c = 1, 50 do
    core:spawn(function()
      local key = "cc" .. c
      r:del(key)
      for i = 1, 20 do
        local v = r:incr(key)
        if v ~= i then bad[#bad + 1] = ("%s: %s ~= %d"):format(key, tostring(v), i) end
        if i % 5 == 0 then
          local g = r:get(key)
          if g ~= tostring(i) then bad[#bad + 1] = key .. " get " .. tostring(g) end
        end
      end
      r:del(key)
      done = done + 1
    end)
  end
  H.run_until(core, function() return done == 50 end, 20000, "50 coroutines")
  lu.assertEquals(bad, {})
  lu.assertEquals(r.connects, 1)
  H.in_coroutine(core, function() r:close() end)
end

function Test.test_redis_down_gives_a_clear_error_naming_the_address()
  local dead = "127.0.0.1:" .. H.free_port()
  H.in_coroutine(core, function()
    local r, msg, code = redis.connect(core, dead, { connect_timeout = 2000 })
    lu.assertNil(r)
    lu.assertEquals(code, "ECONNREFUSED")
    lu.assertStrContains(msg, "ECONNREFUSED: redis " .. dead .. " is unreachable")
    -- a lazy client: the error comes with the first command, every time
    local c = redis.new(core, dead)
    for _ = 1, 2 do
      local v, m2, c2 = c:get("x")
      lu.assertNil(v)
      lu.assertEquals(c2, "ECONNREFUSED")
      lu.assertStrContains(m2, dead)
    end
  end)
end

function Test.test_redis_restart_fails_waiting_calls_then_reconnects()
  H.in_coroutine(core, function()
    local r = assert(redis.connect(core, addr, { timeout = 3000 }))
    lu.assertEquals(r:set("rk", "1"), "OK")
    -- a call waiting while Redis dies gets the connection's error
    local got
    core:spawn(function() got = { r:blpop("never-pushed", 0) } end)
    iocore.sleep(100)
    H.kill_redis(port)
    iocore.sleep(100)
    lu.assertNotNil(got, "the waiting call was not failed")
    lu.assertNil(got[1])
    lu.assertStrContains(got[2], "redis " .. addr .. ": connection lost")
    -- while it is down: a clear error, no hang
    local v, msg, code = r:get("rk")
    lu.assertNil(v)
    lu.assertEquals(code, "ECONNREFUSED", msg)
    H.start_redis(port)
    lu.assertEquals(r:set("rk", "2"), "OK")
    lu.assertEquals(r:get("rk"), "2")
    lu.assertEquals(r.connects, 2)
    r:del("rk")
    r:close()
  end)
end

-- A server that accepts and never answers: the call times out, the
-- connection is dropped (a late reply could not be matched any more), and
-- the next call connects again.
function Test.test_redis_timeout_fails_the_call_and_drops_the_connection()
  local accepted = 0
  local l = assert(core:listen("127.0.0.1:0", { on_accept = function() accepted = accepted + 1 end,
                                                on_recv = function() end }))
  H.in_coroutine(core, function()
    local r = assert(redis.connect(core, l:address(), { timeout = 300 }))
    local v, msg, code = r:get("x")
    lu.assertNil(v)
    lu.assertEquals(code, "ETIMEDOUT")
    lu.assertStrContains(msg, "no reply within 300 ms")
    lu.assertFalse(r:connected())
    v, msg, code = r:get("x")
    lu.assertEquals(code, "ETIMEDOUT")
    lu.assertEquals(accepted, 2)
    r:close()
  end)
  l:close()
end

-- Replies split into single bytes, and a reply that is not RESP.
function Test.test_redis_parser_reassembles_split_replies_and_rejects_garbage()
  local replies = {
    ["*1\r\n$3\r\nGET\r\n"] = "*3\r\n$5\r\nhello\r\n:42\r\n*2\r\n+OK\r\n$-1\r\n",
    ["*1\r\n$3\r\nBAD\r\n"] = "?what\r\n",
  }
  local l = assert(core:listen("127.0.0.1:0", { on_recv = function(s, data)
    local out = replies[data] or "-ERR unexpected\r\n"
    for i = 1, #out do
      core:after(i, function() if not s:closed() then s:send(out:sub(i, i)) end end)
    end
  end }))
  H.in_coroutine(core, function()
    local r = assert(redis.connect(core, l:address()))
    local v = assert(r:call("GET"))
    lu.assertEquals(v[1], "hello")
    lu.assertEquals(v[2], 42)
    lu.assertEquals(v[3][1], "OK")
    lu.assertIs(v[3][2], redis.null)
    local x, msg, code = r:call("BAD")
    lu.assertNil(x)
    lu.assertEquals(code, "EPROTO")
    lu.assertStrContains(msg, "unknown reply type")
    lu.assertFalse(r:connected())
    r:close()
  end)
  l:close()
end

function Test.test_redis_subscribe_delivers_messages_as_a_stream_in_order()
  H.in_coroutine(core, function()
    local sub = redis.new(core, addr)
    lu.assertTrue(sub:subscribe("ch1", "ch2"))
    local pub = assert(redis.connect(core, addr))
    for i = 1, 100 do
      lu.assertEquals(pub:publish(i % 2 == 0 and "ch1" or "ch2", "m" .. i), 1)
    end
    for i = 1, 100 do
      local m = assert(sub:read_message(5000))
      lu.assertEquals(m.kind, "message")
      lu.assertEquals(m.channel, i % 2 == 0 and "ch1" or "ch2")
      lu.assertEquals(m.data, "m" .. i)
    end
    local m, msg, code = sub:read_message(200)
    lu.assertNil(m)
    lu.assertEquals(code, "ETIMEDOUT", msg)
    -- a subscriber runs no other commands
    local v, _, c2 = sub:get("x")
    lu.assertNil(v)
    lu.assertEquals(c2, "EPROTO")
    sub:close()
    pub:close()
  end)
end

-- unsubscribe from some channels, then all: the client runs commands again
-- (SUBSCRIBE through r:call keeps the channel list too).
function Test.test_redis_unsubscribe_returns_the_client_to_commands()
  H.in_coroutine(core, function()
    local sub = assert(redis.connect(core, addr))
    local pub = assert(redis.connect(core, addr))
    assert(sub:subscribe("u1", "u2"))
    assert(sub:call("SUBSCRIBE", "u3"))
    lu.assertEquals(sub.channels, { u1 = "channel", u2 = "channel", u3 = "channel" })
    assert(sub:unsubscribe("u1"))
    lu.assertEquals(pub:publish("u1", "x"), 0)
    lu.assertEquals(pub:publish("u2", "y"), 1)
    lu.assertEquals(assert(sub:read_message(5000)).data, "y")
    local v, _, code = sub:get("k")
    lu.assertNil(v)
    lu.assertEquals(code, "EPROTO")
    assert(sub:unsubscribe())
    lu.assertEquals(pub:publish("u2", "z"), 0)
    lu.assertIs(sub:get("no-such-key"), redis.null)
    lu.assertEquals(sub.connects, 1)
    sub:close()
    pub:close()
  end)
end

-- read_message stops reading at max_messages; Redis holds the rest; every
-- message arrives, in order.
function Test.test_redis_subscriber_backpressure_loses_nothing()
  H.in_coroutine(core, function()
    local sub = redis.new(core, addr, { max_messages = 10 })
    assert(sub:subscribe("bp"))
    local pub = assert(redis.connect(core, addr))
    local p = pub:pipeline()
    for i = 1, 2000 do p:publish("bp", ("%05d"):format(i)) end
    assert(p:run())
    iocore.sleep(50)
    lu.assertTrue(sub.mtail - sub.mhead + 1 <= 10, "more than max_messages buffered")
    for i = 1, 2000 do
      local m = assert(sub:read_message(5000))
      lu.assertEquals(m.data, ("%05d"):format(i))
    end
    sub:close()
    pub:close()
  end)
end

function Test.test_redis_subscriber_resubscribes_after_redis_restarts()
  H.in_coroutine(core, function()
    local sub = redis.new(core, addr)
    assert(sub:subscribe("rs"))
    assert(sub:psubscribe("rs.*"))
    local pub = assert(redis.connect(core, addr))
    lu.assertEquals(pub:publish("rs", "before"), 1)
    lu.assertEquals(assert(sub:read_message(5000)).data, "before")
    H.kill_redis(port)
    local m, msg, code = sub:read_message(5000)
    lu.assertNil(m)
    lu.assertStrContains(msg, "connection lost")
    lu.assertNotNil(code)
    -- down: each read_message says so (one connect attempt each)
    m, msg, code = sub:read_message(100)
    lu.assertNil(m)
    lu.assertEquals(code, "ECONNREFUSED", msg)
    H.start_redis(port)
    m = assert(sub:read_message(5000))
    lu.assertEquals(m.kind, "subscribed")
    lu.assertTrue(m.reconnect)
    lu.assertEquals(m.channels, { "rs" })
    lu.assertEquals(m.patterns, { "rs.*" })
    lu.assertEquals(pub:publish("rs", "after"), 1)
    lu.assertEquals(pub:publish("rs.x", "pattern"), 1)
    lu.assertEquals(assert(sub:read_message(5000)).data, "after")
    local pm = assert(sub:read_message(5000))
    lu.assertEquals(pm.kind, "pmessage")
    lu.assertEquals(pm.pattern, "rs.*")
    lu.assertEquals(pm.channel, "rs.x")
    sub:close()
    pub:close()
  end)
end

-- A reply that takes 0.5 s (BLPOP with a time-out) holds its caller, not
-- the worker: a timer keeps firing meanwhile.
function Test.test_redis_waiting_blocks_no_worker()
  local ticks = 0
  local t = core:every(20, function() ticks = ticks + 1 end)
  H.in_coroutine(core, function()
    local r = assert(redis.connect(core, addr))
    lu.assertIs(r:blpop("never-pushed", "0.5"), redis.null)
    r:close()
  end)
  t:cancel()
  lu.assertTrue(ticks >= 10, "only " .. ticks .. " timer ticks while Redis slept")
end

-- password: AUTH on every connect; db: SELECT on every connect.
function Test.test_redis_password_and_db_are_sent_on_connect()
  H.in_coroutine(core, function()
    local admin = assert(redis.connect(core, addr))
    lu.assertEquals(admin:config("SET", "requirepass", "s3cret"), "OK")
    local ok, err = pcall(function()
      local anon = redis.new(core, addr)
      local v, msg, code = anon:get("x")
      anon:close()
      lu.assertNil(v)
      lu.assertEquals(code, "EREDIS")
      lu.assertStrContains(msg, "NOAUTH")
      local r, m2, c2 = redis.connect(core, addr, { password = "wrong" })
      lu.assertNil(r)
      lu.assertEquals(c2, "EREDIS", m2)
      local r1 = assert(redis.connect(core, addr, { password = "s3cret", db = 1 }))
      lu.assertEquals(r1:set("in-db-1", "yes"), "OK")
      local r0 = assert(redis.connect(core, addr, { password = "s3cret" }))
      lu.assertIs(r0:get("in-db-1"), redis.null)
      lu.assertEquals(r1:get("in-db-1"), "yes")
      r1:del("in-db-1")
      r0:close()
      r1:close()
    end)
    lu.assertEquals(admin:config("SET", "requirepass", ""), "OK")
    admin:close()
    if not ok then error(err, 0) end
  end)
end

function Test.test_redis_misuse_raises()
  lu.assertErrorMsgContains("iocore coroutine", function() redis.connect(core, addr) end)
  lu.assertErrorMsgContains("string expected", function() redis.new(core, 42) end)
  lu.assertErrorMsgContains("non-negative integer", function() redis.new(core, addr, { timeout = -1 }) end)
  H.in_coroutine(core, function()
    local r = assert(redis.connect(core, addr))
    lu.assertErrorMsgContains("string or number expected", function() r:set("k", {}) end)
    lu.assertErrorMsgContains("subscribe first", function() r:read_message() end)
    r:close()
  end)
end

local runner = lu.LuaUnit.new()
runner:setOutputType("text")
local rc = runner:runSuite("-v", table.unpack(arg))
local r = runner.result
print(("TESTS passed=%d failed=%d"):format(r.successCount or 0, (r.failureCount or 0) + (r.errorCount or 0)))
H.cleanup()
os.exit(rc == 0 and 0 or 1)
