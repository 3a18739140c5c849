-- The cluster test's members: N chat clients through HAProxy (one process,
-- callback style), driven through rounds of lines while a node is killed
-- and Redis is restarted, then the checks:
--   * every line answered "ok" reached every member that had joined before
--     it was sent and stayed connected to the end, exactly once;
--   * no member got a line twice, and each got every sender's lines in order;
--   * every line got an answer ("ok" or "failed ...") unless its sender's
--     own session died with the node; lines sent while Redis was down: "failed";
--   * the address each node saw (hello) is the client's own (CHECK_PEERS=1);
--   * the killed node's members reconnect and carry on (failover time).
-- Environment: ADDR, CLIENTS, KILL_NODE_CMD, REDIS_KILL_CMD, REDIS_START_CMD,
-- CHECK_PEERS; LINES (lines per member in each steady round, default 1) and
-- REDIS_CYCLES (Redis restarts, default 1) for the long form. Prints "figure ..." lines, "check ok|FAILED ..." lines and
-- exits 0 when every check passed.
local iocore = require "iocore"

local ADDR = assert(os.getenv("ADDR"), "ADDR")
local N = tonumber(os.getenv("CLIENTS") or "300")
local CHECK_PEERS = os.getenv("CHECK_PEERS") == "1"
local LINES = tonumber(os.getenv("LINES") or "1")
local REDIS_CYCLES = tonumber(os.getenv("REDIS_CYCLES") or "1")
io.stdout:setvbuf("line")

local function now()
  local f = assert(io.open("/proc/uptime"))
  local v = f:read("n")
  f:close()
  return v * 1000
end

local core = assert(iocore.core { threads = 2, signals = false, handler_timeout = 10000 })
local errors = {}
core:on_error(function(m) errors[#errors + 1] = tostring(m); print("handler error: " .. tostring(m)) end)

local members = {}  -- every session ever: { client, s, local_addr, peer_seen, node, joined_at, closed_at, got, last }
local clients = {}  -- i -> { m = current member, seq, pending = line }
local lines = {}    -- "i:seq" -> { sender, seq, sent_at, round, ack, ack_at, died }
local stats = { reconnects = 0 }
local killed_at, failover_ms

local function log(fmt, ...) print((fmt):format(...)) end

local connect

local function on_line(m, line)
  local c = m.client
  local kind, rest = line:match("^(%S+)%s?(.*)$")
  if kind == "hello" then
    local addr, node = rest:match("^(%S+) (%S+)$")
    m.peer_seen, m.node, m.joined_at = addr, node, now()
    if c.rejoining then
      c.rejoining = nil
      if killed_at then
        local t = m.joined_at - killed_at
        if not failover_ms or t > failover_ms then failover_ms = t end
      end
    end
  elseif kind == "msg" then
    local _, text = rest:match("^(%S+) (.*)$")
    local sender, seq = (text or ""):match("^L(%d+):(%d+)$")
    if not sender then
      m.bad = (m.bad or 0) + 1
      return
    end
    seq = tonumber(seq)
    local key = sender .. ":" .. seq
    m.got[key] = (m.got[key] or 0) + 1
    local last = m.last[sender]
    if last and seq <= last then m.disorder = (m.disorder or 0) + 1 end
    m.last[sender] = seq
  elseif kind == "ok" or kind == "failed" then
    local l = c.pending
    if not l or c.m ~= m then
      m.stray = (m.stray or 0) + 1
      return
    end
    c.pending = nil
    l.ack, l.ack_at, l.why = kind, now(), rest
  else
    m.bad = (m.bad or 0) + 1
  end
end

function connect(c)
  local m = { client = c, got = {}, last = {}, buf = "" }
  members[#members + 1] = m
  c.m = m
  core:connect(ADDR, {
    on_connect = function(s, err)
      if err then return end
      m.s = s
      m.local_addr = s:address()
    end,
    on_recv = function(s, data)
      local buf = m.buf .. data
      local pos = 1
      while true do
        local nl = buf:find("\n", pos, true)
        if not nl then break end
        on_line(m, buf:sub(pos, nl - 1))
        pos = nl + 1
      end
      m.buf = buf:sub(pos)
    end,
    on_close = function(s, err)
      m.closed_at = now()
      if c.pending then c.pending.died = true; c.pending = nil end
      if c.m == m and not stats.ending then
        -- the node went away: connect again (through HAProxy) after a pause
        c.rejoining = true
        stats.reconnects = stats.reconnects + 1
        core:after(100 + math.random(200), function() if not stats.ending then connect(c) end end)
      end
    end,
  })
end

-- one line from every joined client without a pending line
local function round(name)
  local n = 0
  for _, c in ipairs(clients) do
    local m = c.m
    if m.s and m.joined_at and not m.closed_at and not c.pending then
      c.seq = c.seq + 1
      local l = { sender = c.i, seq = c.seq, sent_at = now(), round = name }
      lines[c.i .. ":" .. c.seq] = l
      c.pending = l
      m.s:send(("L%d:%d\n"):format(c.i, c.seq))
      n = n + 1
    end
  end
  return n
end

local function wait_until(cond, ms, what)
  local deadline = now() + ms
  while not cond() do
    if now() > deadline then
      log("check FAILED: timed out after %d ms waiting for %s", ms, what)
      return false
    end
    iocore.sleep(20)
  end
  return true
end

local function all_joined()
  for _, c in ipairs(clients) do
    local m = c.m
    if not (m.joined_at and not m.closed_at) then return false end
  end
  return true
end
local function none_pending()
  for _, c in ipairs(clients) do if c.pending then return false end end
  return true
end
local function count(roundname, ack)
  local n = 0
  for _, l in pairs(lines) do
    if l.round == roundname and (ack == nil or l.ack == ack) then n = n + 1 end
  end
  return n
end

local ok_all = true
local function check(cond, fmt, ...)
  if cond then log("check ok: " .. fmt, ...) else ok_all = false; log("check FAILED: " .. fmt, ...) end
end

-- the answers of a round's failed lines, for the log
local function why(roundname)
  local seen = {}
  for _, l in pairs(lines) do
    if l.round == roundname and l.ack == "failed" then seen[l.why] = (seen[l.why] or 0) + 1 end
  end
  for w, n in pairs(seen) do log("  round %s: %d x failed %s", roundname, n, w) end
end

local function run_cmd(var)
  local cmd = os.getenv(var)
  if cmd and cmd ~= "" then
    local r = os.execute(cmd)
    log("ran %s: %s", var, tostring(r))
  end
end

core:spawn(function()
  for i = 1, N do
    clients[i] = { i = i, seq = 0 }
    connect(clients[i])
  end
  if not wait_until(all_joined, 60000, N .. " clients to join") then ok_all = false; core:stop(); return end
  log("figure: %d clients joined", N)

  -- A: steady state
  for _ = 1, LINES do
    round("A")
    if not wait_until(none_pending, 60000, "round A's answers") then ok_all = false end
  end
  check(count("A", "ok") == N * LINES, "round A: %d of %d lines ok (steady state)", count("A", "ok"), N * LINES)

  -- B: one node killed
  iocore.sleep(300)
  killed_at = now()
  run_cmd("KILL_NODE_CMD")
  iocore.sleep(50)
  round("B")
  if not wait_until(function() return all_joined() and none_pending() end, 60000,
      "the killed node's members to reconnect") then ok_all = false end
  log("figure: failover %d ms (kill to the last member back), %d reconnects",
    math.floor(failover_ms or 0), stats.reconnects)
  check(stats.reconnects > 0, "the killed node had members (%d reconnected)", stats.reconnects)
  -- after the dead node's heartbeat expired: everything ok again
  iocore.sleep(5000) -- LIVE_MS (3 s) and a heartbeat (0.5 s), with room for a loaded machine
  for _ = 1, LINES do
    round("B2")
    if not wait_until(none_pending, 60000, "round B2's answers") then ok_all = false end
  end
  check(count("B2", "ok") == count("B2"), "round B2 (after failover): %d of %d lines ok",
    count("B2", "ok"), count("B2"))

  for cycle = 1, REDIS_CYCLES do
    -- C: Redis down
    run_cmd("REDIS_KILL_CMD")
    iocore.sleep(300)
    round("C" .. cycle)
    if not wait_until(none_pending, 30000, "round C's answers") then ok_all = false end
    check(count("C" .. cycle, "ok") == 0 and count("C" .. cycle, "failed") == count("C" .. cycle),
      "round C%d (Redis down): %d of %d lines failed, %d ok", cycle, count("C" .. cycle, "failed"), count("C" .. cycle), count("C" .. cycle, "ok"))
    run_cmd("REDIS_START_CMD")
    -- until a line goes through again (the nodes reconnect and resubscribe)
    local back = false
    local deadline = now() + 30000
    local probe = 0
    while not back and now() < deadline do
      iocore.sleep(250)
      probe = probe + 1
      local c = clients[1]
      if c.m.joined_at and not c.m.closed_at and not c.pending then
        round("probe" .. cycle .. "." .. probe) -- everyone sends: no member may miss a line that was ok
        wait_until(none_pending, 30000, "a probe round's answers")
        back = count("probe" .. cycle .. "." .. probe, "ok") == count("probe" .. cycle .. "." .. probe)
      end
    end
    check(back, "lines go through again after Redis restart %d (%d probe rounds)", cycle, probe)
    for _ = 1, LINES do
      round("D" .. cycle)
      if not wait_until(none_pending, 60000, "round D's answers") then ok_all = false end
    end
    why("B"); why("C" .. cycle); why("D" .. cycle)
    check(count("D" .. cycle, "ok") == count("D" .. cycle), "round D%d (after Redis restart): %d of %d lines ok",
      cycle, count("D" .. cycle, "ok"), count("D" .. cycle))
    iocore.sleep(1000)
  end

  iocore.sleep(1500) -- the last deliveries
  stats.ending = true
  core:stop()
end)

core:run()

-- ---- checks ---------------------------------------------------------------------------

local sent, ok_lines, failed, died, unanswered = 0, 0, 0, 0, 0
for _, l in pairs(lines) do
  sent = sent + 1
  if l.ack == "ok" then ok_lines = ok_lines + 1
  elseif l.ack == "failed" then failed = failed + 1
  elseif l.died then died = died + 1
  else unanswered = unanswered + 1 end
end
local delivered, lost, dup, disorder, bad, stray = 0, 0, 0, 0, 0, 0
local peers_ok, peers_checked = 0, 0
for _, m in ipairs(members) do
  for _, n in pairs(m.got) do
    delivered = delivered + n
    if n > 1 then dup = dup + 1 end
  end
  disorder = disorder + (m.disorder or 0)
  bad = bad + (m.bad or 0)
  stray = stray + (m.stray or 0)
  if m.peer_seen then
    peers_checked = peers_checked + 1
    if m.peer_seen == m.local_addr then peers_ok = peers_ok + 1 end
  end
  if m.joined_at and not m.closed_at then -- stayed to the end
    for key, l in pairs(lines) do
      if l.ack == "ok" and l.sent_at > m.joined_at and (m.got[key] or 0) ~= 1 then lost = lost + 1 end
    end
  end
end
log("figure: clients %d, sessions %d, lines %d (ok %d, failed %d, died with their node %d, unanswered %d)",
  N, #members, sent, ok_lines, failed, died, unanswered)
log("figure: delivered %d, lost %d, duplicates %d, out of order %d", delivered, lost, dup, disorder)
check(lost == 0, "lost = %d (ok lines missing at a member that stayed)", lost)
check(dup == 0, "duplicates = %d", dup)
check(disorder == 0, "out of per-sender order = %d", disorder)
check(unanswered == 0, "lines without an answer (sender still connected) = %d", unanswered)
check(bad == 0 and stray == 0, "malformed lines %d, answers without a line %d", bad, stray)
check(#errors == 0, "handler errors in the clients: %d", #errors)
if CHECK_PEERS then
  check(peers_ok == peers_checked and peers_checked > 0,
    "peers the nodes saw = the clients' own addresses: %d of %d", peers_ok, peers_checked)
else
  log("skip: peer check (PROXY protocol not in this build's listeners): nodes saw HAProxy's address")
end
for _, m in ipairs(members) do
  if m.s and not m.s:closed() then m.s:close() end
end
local deadline = now() + 10000
while now() < deadline do
  collectgarbage()
  local st = core:stats()
  if st.active == 0 and st.sockets == 0 and st.ops_inflight == 0 and st.queued == 0 then break end
  core:run(50)
end
local st = core:stats()
check(st.active == 0 and st.sockets == 0 and st.ops_inflight == 0 and st.queued == 0,
  "the clients' core closed cleanly (sessions %d, sockets %d, operations %d, queued %d)",
  st.active, st.sockets, st.ops_inflight, st.queued)
core:close()
os.exit(ok_all and 0 or 1)
