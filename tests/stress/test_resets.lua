-- Abrupt resets (SO_LINGER 0) at every moment of a session's life.
local lu = require "luaunit"
local S = require "lib"

TestResets = S.class()
TestResets.limits = { test_resets_everywhere_server_serves_throughout = { 90, 600 } }

-- 2,000 connections (long: 50,000), 32 at a time, reset in turn: right
-- after connecting (while the server accepts), right after sending (its
-- receive in flight), while the server sends 256 KiB, and with 1 MiB queued
-- behind a peer that reads one byte. Every 100 resets a new client must be
-- served an echo within 2 s. Passes when every reset connection was dealt
-- with (no job hangs 5 s, the server never closes one first), every probe
-- was served, the server reported no handler error, and it returns to its
-- idle state: active 0, sockets/operations/objects back to where they were.
function TestResets:test_resets_everywhere_server_serves_throughout()
  local total = S.size(2000, 50000)
  local srv = S.server({})
  local base = srv.start_stats
  local lg = S.loadgen("resets", srv:addr(), { total = total, concurrency = 32, timeout = S.size(60000, 500000) })
  local r = lg:result(S.size(80000, 560000))
  local st = srv:stats()
  S.note("%d resets in %.1f s (accept %d, recv %d, send %d, queued %d); %d probes served, slowest %d ms",
    r.done, r.secs, r.accept, r.recv, r.send, r.queued, r.probes_served, r.probe_max_ms)
  S.note("server: %d accepted, %d closed with an error (%s)", st.accepted, st.close_err,
    (function()
      local t = {}
      for k, v in pairs(st) do
        if type(k) == "string" and k:match("^close_E") then t[#t + 1] = k:sub(7) .. " " .. v end
      end
      table.sort(t)
      return table.concat(t, ", ")
    end)())
  S.check(r, "done", total)
  S.check(r, "job_timeouts", 0)
  S.check(r, "server_closed_first", 0)
  S.check(r, "connect_failed", 0)
  S.check(r, "probes_failed", 0)
  lu.assertTrue(r.probes_served >= total // 100, "too few probes were served")
  lu.assertTrue(r.accept > 0 and r.recv > 0 and r.send > 0 and r.queued > 0)
  S.assert_no_leak(srv, base)
  st = srv:stats()
  lu.assertEquals(st.errors, 0, "handler errors: " .. tostring(st.last_error))
  lu.assertEquals(st.st_accepts_posted, base.st_accepts_posted, "posted accepts not back to N")
  S.stop_server(srv)
end
