-- Every send accounted for: a peer that never reads, a server that keeps
-- sending 1 KiB records under max_pending. A send either queues (and is then
-- delivered, in order, exactly once) or returns ENOBUFS (dropped, counted);
-- nothing in between, nothing lost quietly, nothing leaks.
local lu = require "luaunit"
local S = require "lib"

TestAccounting = S.class()

local COUNT, SIZE = 10000, 1024
local MAX_PENDING = 256 * 1024

local function start()
  local srv = S.server({ max_pending = MAX_PENDING })
  return srv, srv.start_stats
end

-- Waits for the server to report the sends done and (if closing) the close.
local function server_result(srv, need_close)
  local st = srv:wait_stats(function(st)
    return st.acct_done == 1 and (not need_close or st.acct_close ~= "-")
  end, 20000)
  lu.assertNotNil(st, "the server did not finish its sends (and close)")
  return st
end

-- 10,000 sends to a peer that reads nothing for 1.5 s, then close(); the
-- peer then reads to EOF. delivered + refused (ENOBUFS) == sent, exactly:
-- the peer gets precisely the records whose send returned true, in order,
-- each once (same count, same index hash, strictly increasing indices),
-- then a clean EOF.
function TestAccounting:test_close_delivers_every_accepted_send()
  local srv, base = start()
  local lg = S.loadgen("accounted", srv:addr(), { count = COUNT, size = SIZE, action = "close", wait = 1500,
                                                  ["then"] = "drain" })
  local r = lg:result(30000)
  local st = server_result(srv, true)
  S.note("sent %d: %d queued, %d refused with ENOBUFS, %d on_drain; peer got %d records, then %s",
    COUNT, st.acct_ok, st.acct_enobufs, st.acct_drains, r.records, r["end"])
  lu.assertEquals(st.acct_other, 0, "sends failing with something else than ENOBUFS")
  lu.assertEquals(st.acct_ok + st.acct_enobufs, COUNT, "queued + refused != sent")
  lu.assertTrue(st.acct_enobufs > 0, "max_pending was never reached: nothing tested")
  lu.assertTrue(st.acct_drains > 0, "no on_drain after sends were refused")
  S.check(r, "bad", 0)
  S.check(r, "partial", 0)
  S.check(r, "end", "eof")
  S.check(r, "records", st.acct_ok, "delivered != queued")
  S.check(r, "hash", st.acct_hash, "the delivered records are not the queued ones")
  lu.assertEquals(st.acct_close, "clean", "the session's on_close error")
  S.assert_no_leak(srv, base)
  S.stop_server(srv)
end

-- The same, but the peer resets (SO_LINGER 0) after 1 s without reading
-- anything. The server's session must close with ECONNRESET (or EPIPE),
-- its queue dropped, nothing left behind; and its figures must add up:
-- queued + refused == sent, written to the socket <= queued, and at least
-- what was written when the last send returned.
function TestAccounting:test_peer_reset_with_sends_queued()
  local srv, base = start()
  local lg = S.loadgen("accounted", srv:addr(), { count = COUNT, size = SIZE, action = "none", wait = 1000,
                                                  ["then"] = "reset" })
  local r = lg:result(30000)
  local st = server_result(srv, true)
  local queued_bytes = st.acct_ok * SIZE
  S.note("sent %d: %d queued, %d refused; %d of %d queued bytes reached the kernel, %d dropped at the reset "
    .. "(%d still queued when the last send returned)", COUNT, st.acct_ok, st.acct_enobufs, st.acct_written,
    queued_bytes, queued_bytes - st.acct_written, st.acct_pending_end)
  S.check(r, "records", 0)
  lu.assertEquals(st.acct_other, 0)
  lu.assertEquals(st.acct_ok + st.acct_enobufs, COUNT, "queued + refused != sent")
  lu.assertTrue(st.acct_pending_end > 0, "nothing was queued when the peer reset: nothing tested")
  lu.assertTrue(st.acct_written <= queued_bytes, "more written than queued")
  lu.assertTrue(st.acct_written >= queued_bytes - st.acct_pending_end, "written went backwards")
  lu.assertTrue(st.acct_close == "ECONNRESET" or st.acct_close == "EPIPE",
    "on_close error after the peer's reset: " .. tostring(st.acct_close))
  S.assert_no_leak(srv, base)
  S.stop_server(srv)
end

-- The server aborts with its queue full; the peer then reads what reached
-- it. It must get only whole, valid records in increasing order, no more
-- than was written before the abort (queued minus what was still pending),
-- and then the reset.
function TestAccounting:test_abort_drops_the_queue_and_nothing_else()
  local srv, base = start()
  local lg = S.loadgen("accounted", srv:addr(), { count = COUNT, size = SIZE, action = "abort", wait = 1500,
                                                  ["then"] = "drain" })
  local r = lg:result(30000)
  local st = server_result(srv, true)
  local limit = st.acct_ok * SIZE - st.acct_pending_end
  S.note("sent %d: %d queued, %d refused; %d bytes still queued at abort (dropped); peer got %d bytes "
    .. "(%d records), at most %d could arrive, then %s", COUNT, st.acct_ok, st.acct_enobufs, st.acct_pending_end,
    r.bytes, r.records, limit, r["end"])
  lu.assertEquals(st.acct_ok + st.acct_enobufs, COUNT, "queued + refused != sent")
  lu.assertTrue(st.acct_pending_end > 0, "nothing was queued at the abort: nothing tested")
  S.check(r, "bad", 0)
  lu.assertTrue(r.bytes <= limit, ("the peer got %d bytes, but only %d were written before the abort"):format(
    r.bytes, limit))
  lu.assertTrue(r["end"] == "reset" or r["end"] == "eof", "the peer's read ended with " .. tostring(r["end"]))
  S.assert_no_leak(srv, base)
  S.stop_server(srv)
end
