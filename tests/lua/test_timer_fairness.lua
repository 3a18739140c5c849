-- Timers and sessions share the Lua state fairly (docs/lua-api.md,
-- "Timers and sessions"): however many timers are due and however slow
-- their handlers, a session's event waits for at most one timer handler
-- (the one running when it arrived) besides other sessions' events.
local H = require "helpers"
local lu = H.lu

TestTimerFairness = H.class()

local SLOW, ROUNDS = 40, 40

local function busy(core, ms)
  local untilt = core:now() + ms
  while core:now() < untilt do end
end

-- SLOW repeating timers, every 1 ms with a 3 ms handler (each is due again
-- before it returns, so the state is saturated by them), and a client and an
-- echo server on the same core playing ping-pong for ROUNDS round trips;
-- `worst`: the most timer handlers started between two of the server's
-- receives. The data crosses twice in between (echo, next ping). On one
-- worker each crossing waits for at most the one timer handler running when
-- it arrived: worst <= 2. With two workers a timer may also start on the
-- other worker before the socket's own worker has queued the data (more so
-- when the scheduler delays that worker), so the test only asks that the
-- data never waits behind the timers' queued firings (SLOW of them: what
-- happened before the rule, when every timer event queued ran first; and on
-- one worker, the sockets were not looked at at all while timers were due).
local function ping_pong_between_slow_timers(threads, bound)
  H.with_core({ threads = threads }, function(core)
    local started, since, worst, pings, pongs = 0, 0, 0, 0, 0
    local timers, c, l = {}, nil, nil
    local function start_client()
      c = H.client(core, l:address(), {
        on_connect = function(c) c.s:send("p") end,
        on_recv = function(c)
          pongs = pongs + 1
          if pongs < ROUNDS then
            c.s:send("p")
          else
            for _, t in ipairs(timers) do t:cancel() end
            c.s:close()
            core:stop(1000)
          end
        end,
      })
    end
    for i = 1, SLOW do
      timers[i] = core:every(1, function()
        started = started + 1
        since = since + 1
        if started == SLOW then start_client() end -- once the timers are busy
        busy(core, 3)
      end)
    end
    l = H.echo_server(core, {
      on_recv = function(s, data)
        if pings > 0 and since > worst then worst = since end
        pings = pings + 1
        since = 0
        s:send(data)
      end,
    })
    lu.assertTrue(core:run(60000), "the ping-pong did not finish within 60 s")
    l:close()
    H.wait_for(core, function() return c.closed end, "the client's close")
    lu.assertEquals(pongs, ROUNDS)
    -- the timers kept the state busy throughout the ping-pong
    lu.assertTrue(started >= SLOW + ROUNDS // 2, ("the timers ran %d handlers only"):format(started))
    lu.assertTrue(worst <= bound, ("%d timer handlers started between a ping's echo and the next ping "
      .. "(threads = %d, %d slow timers; at most %d expected)"):format(worst, threads, SLOW, bound))
  end)
end

function TestTimerFairness:test_session_events_wait_for_at_most_one_timer_handler_on_one_worker()
  ping_pong_between_slow_timers(1, 2)
end

function TestTimerFairness:test_session_events_do_not_wait_behind_queued_timers_on_two_workers()
  ping_pong_between_slow_timers(2, SLOW // 2)
end
