-- Turns the raw rows of scripts/bench into docs/benchmarks.md, the data files
-- for bench/chart.gp, and a one-screen summary on stdout.
--
--   lua5.4 bench/report.lua RESULTS STATUS META OUT.md CHART_DIR PNG_NAME
--
-- RESULTS: tab-separated, a header line, then one row per measurement:
--   group job system round cpu_us rps p99_ms requests errors bytes_conn rss_before_kb rss_after_kb
-- ("-" = not measured). STATUS: job system pass|fail|skip reason. META: key value.
local results_path, status_path, meta_path, md_path, chart_dir, png_name = table.unpack(arg)
assert(chart_dir, "usage: report.lua RESULTS STATUS META OUT.md CHART_DIR PNG_NAME")

local function lines(path)
  local f = assert(io.open(path))
  local t = {}
  for l in f:lines() do t[#t + 1] = l end
  f:close()
  return t
end
local function split(l)
  local t = {}
  for field in (l .. "\t"):gmatch("([^\t]*)\t") do t[#t + 1] = field end
  return t
end

local meta = {}
for _, l in ipairs(lines(meta_path)) do
  local k, v = l:match("^([^\t]+)\t(.*)$")
  if k then meta[k] = v end
end

-- rows[group][job][system] = list of rows
local rows, header = {}, nil
for i, l in ipairs(lines(results_path)) do
  local f = split(l)
  if i == 1 then
    header = f
  else
    local r = {}
    for j, name in ipairs(header) do r[name] = f[j] end
    rows[r.group] = rows[r.group] or {}
    rows[r.group][r.job] = rows[r.group][r.job] or {}
    local by_sys = rows[r.group][r.job]
    by_sys[r.system] = by_sys[r.system] or {}
    table.insert(by_sys[r.system], r)
  end
end

local status = {}
for _, l in ipairs(lines(status_path)) do
  local f = split(l)
  if f[1] and f[1] ~= "" then
    status[#status + 1] = { job = f[1], system = f[2], state = f[3], reason = f[4] or "" }
  end
end

-- ---- statistics -----------------------------------------------------------------
local function values(list, field)
  local t = {}
  for _, r in ipairs(list or {}) do
    local v = tonumber(r[field])
    if v then t[#t + 1] = v end
  end
  table.sort(t)
  return t
end
local function median(t)
  local n = #t
  if n == 0 then return nil end
  if n % 2 == 1 then return t[(n + 1) // 2] end
  return (t[n // 2] + t[n // 2 + 1]) / 2
end
-- stat(group, job, system, field) -> median, min, max, n
local function stat(group, job, system, field)
  local t = values(rows[group] and rows[group][job] and rows[group][job][system], field)
  return median(t), t[1], t[#t], #t
end
local function errors(group, job, system)
  local sum = 0
  for _, r in ipairs(rows[group] and rows[group][job] and rows[group][job][system] or {}) do
    sum = sum + (tonumber(r.errors) or 0)
  end
  return sum
end

-- ---- formatting -------------------------------------------------------------------
local function thousands(n)
  local s = string.format("%.0f", n)
  local out = s:reverse():gsub("(%d%d%d)", "%1,"):reverse()
  return (out:gsub("^,", ""))
end
local function fmt(v, kind)
  if v == nil then return "—" end
  if kind == "cpu" then return string.format("%.2f", v)
  elseif kind == "rps" then return thousands(v)
  elseif kind == "ms" then return string.format(v < 10 and "%.2f" or "%.1f", v)
  elseif kind == "bytes" then return string.format("%.0f", v)
  elseif kind == "ratio" then return string.format("%.2f×", v)
  end
  return tostring(v)
end
local function ratio(a, b)
  if a == nil or b == nil or b == 0 then return nil end
  return a / b
end

local SYSTEMS = {
  stream = "iocore, stream style", callback = "iocore, callback style",
  stream_min = "iocore, stream style doing the callback server's work (control)",
  c_framing = "callback style, framing = \"line\" (C)", lua_lines = "callback style, lines found in Lua",
  stream_lines = "stream style, s:read_line()",
  iocore = "iocore (Lua)", dflt = "iocore (Lua), its default thread count", epoll = "iocore (Lua), epoll",
  luv = "luv (Lua)", nginx_c = "nginx C", nginx_lua = "nginx Lua",
  floor = "floor: io_uring C, 1 thread", redis = "redis-server",
  iocore_luvparse = "iocore running luv_redis.lua's parser (control)",
  uring_1t = "io_uring, 1 thread", uring_2t = "io_uring, 2 threads",
  epoll_1t = "epoll, 1 thread", epoll_2t = "epoll, 2 threads",
  uring_4t = "io_uring, 4 threads", uring_8t = "io_uring, 8 threads",
  epoll_4t = "epoll, 4 threads", epoll_8t = "epoll, 8 threads",
  iocore_quiet = "iocore (default threads), alone", iocore_busy = "iocore (default threads), neighbour spinning",
  luv_quiet = "luv, alone", luv_busy = "luv, neighbour spinning",
  bc_broadcast = "iocore, core:broadcast", bc_loop = "iocore, s:send loop", bc_floor = "C, write(2) per copy",
}
local JOBS = { sresp = "RESP -P16, stream vs callback", shttp = "HTTP keep-alive, stream vs callback",
               sline = "line echo", sidle = "idle session, stream vs callback",
               http = "HTTP keep-alive", conn = "new connection per request", resp = "RESP", idle = "idle connection",
               nb = "HTTP keep-alive beside a CPU-bound neighbour", http1 = "HTTP keep-alive, client on one core",
               bcast = "broadcast" }
local ORDER = {
  http = { "iocore", "dflt", "luv", "nginx_c", "nginx_lua", "floor" },
  conn = { "iocore", "epoll", "dflt", "luv", "nginx_c" },
  resp = { "iocore", "iocore_luvparse", "luv", "redis" },
  idle = { "iocore", "luv", "nginx_c" },
  sresp = { "stream", "callback", "stream_min", "luv" },
  shttp = { "stream", "callback", "stream_min" },
  sline = { "c_framing", "lua_lines", "stream_lines" },
  sidle = { "stream", "callback", "stream_min" },
  bcast = { "bc_broadcast", "bc_loop", "bc_floor" },
}
local VARIANTS = { "uring_1t", "uring_2t", "epoll_1t", "epoll_2t", "uring_4t", "uring_8t", "epoll_4t", "epoll_8t" }

local function state_of(job, system)
  for _, s in ipairs(status) do
    if s.job == job and s.system == system then return s.state, s.reason end
  end
  return nil
end

-- ---- targets ------------------------------------------------------------------------
local function cpu(job, sys) return (stat("cmp", job, sys, "cpu_us")) end
local targets = {
  { what = "HTTP keep-alive: server CPU per request ≤ 0.75 × luv",
    value = ratio(cpu("http", "iocore"), cpu("http", "luv")), limit = 0.75, le = true },
  { what = "HTTP keep-alive: server CPU per request ≤ 1.0 × nginx C",
    value = ratio(cpu("http", "iocore"), cpu("http", "nginx_c")), limit = 1.0, le = true },
  { what = "HTTP keep-alive: p99 latency ≤ luv",
    value = ratio((stat("cmp", "http", "iocore", "p99_ms")), (stat("cmp", "http", "luv", "p99_ms"))), limit = 1.0, le = true },
  { what = "new connection per request on the default backend: server CPU per request ≤ 1.0 × nginx C",
    value = ratio(cpu("conn", "iocore"), cpu("conn", "nginx_c")), limit = 1.0, le = true },
  { what = "RESP: server CPU per request ≤ 0.6 × luv",
    value = ratio(cpu("resp", "iocore"), cpu("resp", "luv")), limit = 0.6, le = true,
    control = ratio(cpu("resp", "iocore_luvparse"), cpu("resp", "luv")) },
  { what = "RESP: throughput ≥ 1.3 × luv",
    value = ratio((stat("cmp", "resp", "iocore", "rps")), (stat("cmp", "resp", "luv", "rps"))), limit = 1.3, le = false,
    control = ratio((stat("cmp", "resp", "iocore_luvparse", "rps")), (stat("cmp", "resp", "luv", "rps"))) },
  { what = "idle connection: server RSS ≤ 400 bytes each",
    value = (stat("cmp", "idle", "iocore", "bytes_conn")), limit = 400, le = true, bytes = true },
}
-- The worker-thread targets: keep-alive at the default thread count beside
-- the peers (job 1), the new-connection path on both Linux backends (job 2),
-- what a second worker costs (job 5), and a busy neighbour (job 6).
local function var_cpu(job, sys) return (stat("var", job, sys, "cpu_us")) end
local nb_quiet = ratio(stat("nb", "http", "iocore_quiet", "cpu_us"), stat("nb", "http", "luv_quiet", "cpu_us"))
local nb_busy = ratio(stat("nb", "http", "iocore_busy", "cpu_us"), stat("nb", "http", "luv_busy", "cpu_us"))
for _, t in ipairs({
  { what = "HTTP keep-alive, iocore at its default thread count: server CPU per request ≤ 0.85 × luv",
    value = ratio(cpu("http", "dflt"), cpu("http", "luv")), limit = 0.85, le = true },
  { what = "HTTP keep-alive, iocore at its default thread count: server CPU per request ≤ 1.0 × nginx C",
    value = ratio(cpu("http", "dflt"), cpu("http", "nginx_c")), limit = 1.0, le = true },
  { what = "HTTP keep-alive, iocore at its default thread count: server CPU per request ≤ 1.2 × the floor program",
    value = ratio(cpu("http", "dflt"), cpu("http", "floor")), limit = 1.2, le = true },
  { what = "new connection per request on epoll: server CPU per request ≤ 1.0 × nginx C",
    value = ratio(cpu("conn", "epoll"), cpu("conn", "nginx_c")), limit = 1.0, le = true },
  { what = "HTTP keep-alive: 2 workers ≤ 1.05 × the CPU per request of 1 worker (io_uring)",
    value = ratio(var_cpu("http", "uring_2t"), var_cpu("http", "uring_1t")), limit = 1.05, le = true,
    control = ratio(var_cpu("http", "epoll_2t"), var_cpu("http", "epoll_1t")), control_what = "epoll" },
  { what = "new connection per request: 2 workers ≤ 1.05 × the CPU per request of 1 worker (io_uring)",
    value = ratio(var_cpu("conn", "uring_2t"), var_cpu("conn", "uring_1t")), limit = 1.05, le = true,
    control = ratio(var_cpu("conn", "epoll_2t"), var_cpu("conn", "epoll_1t")), control_what = "epoll" },
  { what = "HTTP keep-alive beside a CPU-bound neighbour: iocore ÷ luv moves by ≤ 10 %",
    value = nb_quiet and nb_busy and math.abs(nb_busy / nb_quiet - 1) * 100, limit = 10, le = true, pct = true },
}) do targets[#targets + 1] = t end
-- Jobs 9-12 (group "st"): the stream style beside the callback style.
local function st_cpu(job, sys) return (stat("st", job, sys, "cpu_us")) end
for _, t in ipairs({
  -- The style's cost is the same work done both ways: the stream-style
  -- server doing the callback server's work (stream_min) against it. The
  -- examples parse more than the callback servers do (a command table and
  -- argument checks; every header), so their ratio is shown beside it.
  { what = "RESP -P16: stream-style server CPU per request ≤ 1.15 × the callback-style one (the same work)",
    value = ratio(st_cpu("sresp", "stream_min"), st_cpu("sresp", "callback")), limit = 1.15, le = true,
    control = ratio(st_cpu("sresp", "stream"), st_cpu("sresp", "callback")),
    control_what = "the stream-style example, which parses more", aside = true },
  { what = "RESP -P16: stream-style server CPU per request ≤ 0.6 × luv",
    value = ratio(st_cpu("sresp", "stream_min"), st_cpu("sresp", "luv")), limit = 0.6, le = true,
    control = ratio(st_cpu("sresp", "stream"), st_cpu("sresp", "luv")),
    control_what = "the stream-style example", aside = true },
  { what = "HTTP keep-alive: stream-style server CPU per request ≤ 1.15 × the callback-style one (the same work)",
    value = ratio(st_cpu("shttp", "stream_min"), st_cpu("shttp", "callback")), limit = 1.15, le = true,
    control = ratio(st_cpu("shttp", "stream"), st_cpu("shttp", "callback")),
    control_what = "the stream-style example, which parses every header", aside = true },
  { what = "line echo: CPU per line with framing = \"line\" (C) < the same server finding lines in Lua",
    value = ratio(st_cpu("sline", "c_framing"), st_cpu("sline", "lua_lines")), limit = 1.0, le = true },
  { what = "idle stream-style session (parked in read_line): server RSS ≤ 1.5 KiB each",
    value = (stat("st", "sidle", "stream", "bytes_conn")), limit = 1536, le = true, bytes = true,
    beside = (stat("st", "sidle", "callback", "bytes_conn")) },
}) do targets[#targets + 1] = t end
-- Job 13 (group "bc"): broadcast beside a loop of sends.
local function bc(job, sys) return (stat("bc", job, sys, "cpu_us")) end
targets[#targets + 1] = {
  what = "broadcast of 1 KiB to 1,000 sessions: server CPU per delivered message ≤ 0.5 × a loop of s:send(string)",
  value = ratio(bc("bcast", "bc_broadcast"), bc("bcast", "bc_loop")), limit = 0.5, le = true,
  control = ratio(bc("bcast_call", "bc_broadcast"), bc("bcast_call", "bc_loop")),
  control_what = "CPU inside the call alone" }

local met_count = 0
for _, t in ipairs(targets) do
  if t.value ~= nil then
    t.met = t.le and t.value <= t.limit or (not t.le and t.value >= t.limit)
    if t.met then met_count = met_count + 1 end
  end
  t.shown = t.value == nil and "—" or (t.bytes and (fmt(t.value, "bytes") .. " B"))
    or (t.pct and string.format("%.0f %%", t.value)) or fmt(t.value, "ratio")
  t.verdict = t.value == nil and "not measured" or (t.met and "**met**" or "not met")
  t.short = t.shown
  if t.control then
    t.shown = t.shown .. " (" .. (t.aside and "" or "control, ") .. (t.control_what or "the same parser as luv") .. ": " ..
      fmt(t.control, "ratio") .. ")"
  end
  if t.beside then t.shown = t.shown .. " (callback style: " .. fmt(t.beside, "bytes") .. " B)" end
end

-- ---- markdown -------------------------------------------------------------------------
local md = {}
local function w(...) md[#md + 1] = table.concat({ ... }) end

w("# Benchmarks")
w("")
w("iocore's Lua front end against what users would otherwise pick, on one machine in one run. ",
  "Written by `scripts/bench`; do not edit by hand.")
w("")
w("- **Machine:** ", meta.nproc or "?", " cores, ", meta.cpu or "?", "; ", meta.kernel or "?", "; ", meta.os or "?")
w("- **Date:** ", meta.date or "?", " — ", meta.rounds or "?", " interleaved round(s) (A B C … A B C …), run time ",
  meta.elapsed and string.format("%d min %02d s", tonumber(meta.elapsed) // 60, tonumber(meta.elapsed) % 60) or "?")
w("- **iocore:** commit ", meta.commit or "?", "; module ", meta.module or "?", "; backends here: ", meta.backends or "?")
w("- **Load average** (1, 5, 15 min) before the run: ", meta.load_start or "?", "; after: ", meta.load_end or "?",
  " (anything much above 0 means other work shared the 2 cores)")
w("- **Peers:** luv ", meta.v_luv or "?", " on Lua ", meta.v_lua or "?", "; nginx ", meta.v_nginx or "?",
  " (1 worker); redis-server ", meta.v_redis or "?", "; load from wrk ", meta.v_wrk or "?", ", ab, redis-benchmark")
w("- **Reproduce:** `", meta.command or "scripts/bench", "` (the quick self-check is `scripts/bench --quick`)")
w("")
w("The steady figure is **server CPU time per request**: utime+stime of the server process ",
  "(nginx: master + worker) from `/proc/PID/stat`, read before and after each load run and divided by ",
  "the requests the load tool completed. On a 2-core machine the load tool and the server share the ",
  "CPUs, so requests per second mostly measure the client; CPU per request does not. ",
  "Ratios are iocore ÷ peer: below 1 is better for CPU and latency, above 1 is better for throughput.")
w("")
w("![server CPU per request and memory per idle connection](", png_name, ")")
w("")
w("## Targets")
w("")
w("| target | measured | |")
w("| --- | --- | --- |")
for _, t in ipairs(targets) do w("| ", t.what, " | ", t.shown, " | ", t.verdict, " |") end
w("")

local function range(group, job, sys, field, kind)
  local m, lo, hi, n = stat(group, job, sys, field)
  if not m then return "—" end
  if n > 1 then return string.format("%s (%s–%s)", fmt(m, kind), fmt(lo, kind), fmt(hi, kind)) end
  return fmt(m, kind)
end
local function missing_note(job, sys)
  local st, why = state_of(job, sys)
  if st == "skip" then return "skipped: " .. why end
  if st == "fail" then return "FAILED: " .. why end
  return "no data"
end

local function load_table(job, title, how)
  if not rows.cmp or not rows.cmp[job] then
    local any = false
    for _, s in ipairs(status) do if s.job == job and SYSTEMS[s.system] and not s.system:match("_%dt$") then any = true end end
    if not any then return end
  end
  w("## ", title)
  w("")
  w(how)
  w("")
  w("| system | CPU µs/request, median (min–max) | requests/s | p99 ms | iocore ÷ this: CPU | req/s | p99 |")
  w("| --- | --- | --- | --- | --- | --- | --- |")
  local base_cpu = stat("cmp", job, "iocore", "cpu_us")
  local base_rps = stat("cmp", job, "iocore", "rps")
  local base_p99 = stat("cmp", job, "iocore", "p99_ms")
  for _, sys in ipairs(ORDER[job]) do
    local c = stat("cmp", job, sys, "cpu_us")
    local name = SYSTEMS[sys]
    if sys == "floor" then name = name .. " (yardstick)" end
    if c then
      local rps, p99 = stat("cmp", job, sys, "rps"), stat("cmp", job, sys, "p99_ms")
      local errs = errors("cmp", job, sys)
      local rc = sys == "iocore" and "" or fmt(ratio(base_cpu, c), "ratio")
      local rr = sys == "iocore" and "" or fmt(ratio(base_rps, rps), "ratio")
      local rp = sys == "iocore" and "" or fmt(ratio(base_p99, p99), "ratio")
      w("| ", name, errs > 0 and string.format(" (%d errors)", errs) or "", " | ", range("cmp", job, sys, "cpu_us", "cpu"),
        " | ", fmt(rps, "rps"), " | ", fmt(p99, "ms"), " | ", rc, " | ", rr, " | ", rp, " |")
    elseif state_of(job, sys) then
      w("| ", name, " | ", missing_note(job, sys), " | | | | | |")
    end
  end
  w("")
end

load_table("http", "1. HTTP/1.1 keep-alive \"Hello, World!\"",
  "`wrk " .. (meta.wrk or "") .. "`. iocore: `examples/http_hello.lua` (" .. (meta.threads or "1") .. " worker thread(s) like each peer, default backend; the second row runs it at its default thread count); " ..
  "luv: `peers/luv_http.lua`; nginx: `peers/nginx.conf` (port 8082 `return 200`, port 8083 `content_by_lua_block`). " ..
  "The floor program (one thread, io_uring, no parsing) shows what the kernel's loopback TCP alone costs.")
load_table("conn", "2. A new connection per request",
  "`ab " .. (meta.ab or "") .. "` without `-k`: HTTP/1.0, the server closes after each answer, so every request " ..
  "is an accept, a read, a write and a close. Same servers as job 1, and iocore with one worker on epoll.")
load_table("resp", "3. RESP: PING, SET, GET",
  "`redis-benchmark " .. (meta.redis or "") .. "` (four tests: PING inline, PING bulk, SET, GET; " ..
  "requests/s = all requests ÷ the sum of the tests' times; p99 = the worst test's). " ..
  "iocore: `examples/callback/resp_server.lua`; luv: `peers/luv_redis.lua`; redis-server with `--save \"\" --appendonly no`. " ..
  "The two Lua servers parse differently (resp_server.lua walks the buffer by position, luv_redis.lua copies " ..
  "and re-concatenates it), and in this job the Lua code is most of the server's CPU; so the control row runs " ..
  "luv_redis.lua's own parser and replies on iocore (`bench/resp_luv_parser.lua`): the same Lua per request, " ..
  "only the library differs.")

do -- 4. idle memory
  local any = rows.cmp and rows.cmp.idle
  for _, s in ipairs(status) do if s.job == "idle" then any = true end end
  if any then
    w("## 4. Memory per idle connection")
    w("")
    w("A fresh server each round; its RSS (`VmRSS`, nginx: master + worker) settled, then ",
      tonumber(meta.idle) and thousands(tonumber(meta.idle)) or "?",
      " connections opened by `bench/idle_conns.c` and held idle, RSS settled again. Bytes per connection = ",
      "the difference ÷ connections. HTTP servers of job 1.")
    w("")
    w("| system | bytes per connection, median (min–max) | RSS before → after (kB, median) | iocore ÷ this |")
    w("| --- | --- | --- | --- |")
    local base = stat("cmp", "idle", "iocore", "bytes_conn")
    for _, sys in ipairs(ORDER.idle) do
      local b = stat("cmp", "idle", sys, "bytes_conn")
      if b then
        local errs = errors("cmp", "idle", sys)
        w("| ", SYSTEMS[sys], errs > 0 and string.format(" (%d connections lost)", errs) or "", " | ",
          range("cmp", "idle", sys, "bytes_conn", "bytes"), " | ",
          fmt((stat("cmp", "idle", sys, "rss_before_kb")), "bytes"), " → ", fmt((stat("cmp", "idle", sys, "rss_after_kb")), "bytes"),
          " | ", sys == "iocore" and "" or fmt(ratio(base, b), "ratio"), " |")
      elseif state_of("idle", sys) then
        w("| ", SYSTEMS[sys], " | ", missing_note("idle", sys), " | | |")
      end
    end
    w("")
  end
end

do -- 5. variants
  local any = rows.var ~= nil
  for _, s in ipairs(status) do if s.system:match("_%dt$") then any = true end end
  if any then
    w("## 5. iocore: backends and worker threads")
    w("")
    w("Jobs 1–3 again, iocore only, with `IOCORE_BACKEND` forced and 1 or 2 worker threads (the scripts' second argument); ",
      "jobs 1 and 2 with 4 and 8 (job 7: more workers than cores). Medians; CPU in µs per request.")
    w("")
    w("| iocore | HTTP CPU | HTTP req/s | HTTP p99 ms | new-conn CPU | new-conn req/s | RESP CPU | RESP req/s | RESP p99 ms |")
    w("| --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for _, v in ipairs(VARIANTS) do
      local cells = {}
      local function cell(job, field, kind)
        local m = stat("var", job, v, field)
        if m then return fmt(m, kind) end
        local st = state_of(job, v)
        return st == "skip" and "skipped" or st == "fail" and "FAILED" or "—"
      end
      cells[#cells + 1] = cell("http", "cpu_us", "cpu")
      cells[#cells + 1] = cell("http", "rps", "rps")
      cells[#cells + 1] = cell("http", "p99_ms", "ms")
      cells[#cells + 1] = cell("conn", "cpu_us", "cpu")
      cells[#cells + 1] = cell("conn", "rps", "rps")
      cells[#cells + 1] = cell("resp", "cpu_us", "cpu")
      cells[#cells + 1] = cell("resp", "rps", "rps")
      cells[#cells + 1] = cell("resp", "p99_ms", "ms")
      w("| ", SYSTEMS[v], " | ", table.concat(cells, " | "), " |")
    end
    w("")
  end
end

do -- 6. a CPU-bound neighbour
  if rows.nb then
    w("## 6. Beside a CPU-bound neighbour")
    w("")
    w("Job 1's load on iocore (its default thread count) and luv, each measured alone and then with a process spinning ",
      "on the last core, in the same rounds. Medians; CPU in µs per request.")
    w("")
    w("| system | CPU alone | CPU with neighbour | req/s alone | req/s with neighbour |")
    w("| --- | --- | --- | --- | --- |")
    for _, sys in ipairs({ "iocore", "luv" }) do
      local q, b = stat("nb", "http", sys .. "_quiet", "cpu_us"), stat("nb", "http", sys .. "_busy", "cpu_us")
      if q or b then
        w("| ", sys, " | ", fmt(q, "cpu"), " | ", fmt(b, "cpu"), " | ", fmt((stat("nb", "http", sys .. "_quiet", "rps")), "rps"),
          " | ", fmt((stat("nb", "http", sys .. "_busy", "rps")), "rps"), " |")
      end
    end
    local rq = ratio(stat("nb", "http", "iocore_quiet", "cpu_us"), stat("nb", "http", "luv_quiet", "cpu_us"))
    local rb = ratio(stat("nb", "http", "iocore_busy", "cpu_us"), stat("nb", "http", "luv_busy", "cpu_us"))
    w("")
    w("iocore/luv CPU per request: ", fmt(rq, "ratio"), " alone, ", fmt(rb, "ratio"), " with the neighbour",
      (rq and rb) and string.format(" (moved %.0f %%).", (rb / rq - 1) * 100) or ".")
    w("")
  end
end

do -- 8. one client core
  if rows.one then
    w("## 8. Keep-alive with the client on one core")
    w("")
    w("`taskset -c 0 wrk -t1 -c64`: the load generator holds one core, so requests per second compare servers ",
      "rather than how much CPU the client left them. Medians.")
    w("")
    w("| system | CPU µs/req | req/s | p99 ms |")
    w("| --- | --- | --- | --- |")
    for _, sys in ipairs(ORDER.http) do
      local c = stat("one", "http1", sys, "cpu_us")
      if c then
        w("| ", SYSTEMS[sys], " | ", fmt(c, "cpu"), " | ", fmt((stat("one", "http1", sys, "rps")), "rps"), " | ",
          fmt((stat("one", "http1", sys, "p99_ms")), "ms"), " |")
      end
    end
    w("")
  end
end

-- ---- jobs 9-12: the stream style (group "st") ----------------------------------------------
-- A table of one job: each system's median (and range) of `field`, and its
-- ratio to the first system of ORDER[job] that has a number.
local function st_table(job, title, how, field, unit, per)
  local any = rows.st and rows.st[job]
  for _, s in ipairs(status) do if s.job == job then any = true end end
  if not any then return end
  local kind = field == "bytes_conn" and "bytes" or "cpu"
  local base_sys = ORDER[job][1]
  local base = stat("st", job, base_sys, field)
  w("## ", title)
  w("")
  w(how)
  w("")
  if field == "bytes_conn" then
    w("| system | bytes per connection, median (min–max) | RSS before → after (kB, median) | ", base_sys, " ÷ this |")
    w("| --- | --- | --- | --- |")
  else
    w("| system | ", unit, ", median (min–max) | ", per, "/s | ", SYSTEMS[base_sys], " ÷ this: CPU |")
    w("| --- | --- | --- | --- |")
  end
  for _, sys in ipairs(ORDER[job]) do
    local v = stat("st", job, sys, field)
    local errs = errors("st", job, sys)
    local name = SYSTEMS[sys] .. (errs > 0 and string.format(" (%d errors)", errs) or "")
    if v then
      local r = sys == base_sys and "" or fmt(ratio(base, v), "ratio")
      if field == "bytes_conn" then
        w("| ", name, " | ", range("st", job, sys, field, kind), " | ",
          fmt((stat("st", job, sys, "rss_before_kb")), "bytes"), " → ", fmt((stat("st", job, sys, "rss_after_kb")), "bytes"),
          " | ", r, " |")
      else
        w("| ", name, " | ", range("st", job, sys, field, kind), " | ", fmt((stat("st", job, sys, "rps")), "rps"), " | ", r, " |")
      end
    elseif state_of(job, sys) then
      w("| ", SYSTEMS[sys], " | ", missing_note(job, sys), " | | |")
    end
  end
  w("")
end

st_table("sresp", "9. RESP -P16: stream style against callback style",
  "`redis-benchmark " .. (meta.redis or "") .. "` as in job 3. Stream style: `" .. (meta.resp_stream or "?") ..
  "` (a handler coroutine per connection reading with `s:read_line()` / `s:read(n)` and answering with `s:write()`); " ..
  "callback style: `" .. (meta.resp_callback or "?") .. "` (on_recv parsing by position); luv: `peers/luv_redis.lua`. " ..
  "The example does more per request than the callback server (a command table, argument checks); the control row " ..
  "runs `bench/resp_stream.lua`, stream style doing the callback server's work, so the two rows separate the cost " ..
  "of the style from the cost of the script; the targets above compare the control with the callback server.",
  "cpu_us", "CPU µs/request", "requests")
st_table("shttp", "10. HTTP keep-alive: stream style against callback style",
  "`wrk " .. (meta.wrk or "") .. "` as in job 1. Stream style: `" .. (meta.http_stream or "?") ..
  "`; callback style: `examples/http_hello.lua`, which only looks for the end of each request's head. The example " ..
  "parses the request line and every header; the control row runs `bench/http_stream.lua`, stream style doing " ..
  "http_hello.lua's work, and the targets above compare it with the callback server.", "cpu_us", "CPU µs/request", "requests")
st_table("sline", "11. Line echo: lines framed in C against lines found in Lua",
  "`bench/line_load.c`: " .. (meta.line_load or "?") .. ", each connection sending batches of lines and waiting for their echo. " ..
  "`bench/line_echo_c.lua` (`framing = \"line\"`: one `on_recv` per line), `bench/line_echo_lua.lua` (the same server " ..
  "finding the lines in Lua, the unfinished one kept in the session), and `bench/line_echo_stream.lua` (stream style).",
  "cpu_us", "CPU µs/line", "lines")
st_table("sidle", "12. Memory per idle session: stream style against callback style",
  "As job 4 (" .. (tonumber(meta.idle) and thousands(tonumber(meta.idle)) or "?") ..
  " connections held idle by `bench/idle_conns.c`), with the servers of job 9: in stream style every connection has " ..
  "its handler coroutine parked in `s:read_line()`; in callback style it has no Lua object at all until data comes. " ..
  "A parked coroutine keeps the stack it grew to: the example parks from inside a function called by its handler, " ..
  "the control (`bench/resp_stream.lua`) from the handler itself.",
  "bytes_conn")

-- ---- job 13: broadcast (group "bc") ----------------------------------------------------
do
  local any = rows.bc and rows.bc.bcast
  for _, s in ipairs(status) do if s.job == "bcast" then any = true end end
  if any then
    w("## 13. Broadcast: one message to ", meta.broadcast or "1,000 sessions", "")
    w("")
    w("Each round sends one 1 KiB message to every session and waits until every copy is in ",
      "(`bench/broadcast_client.c`, closed loop). `bench/broadcast_server.lua` with one worker (io_uring where it runs) ",
      "sends it with `core:broadcast(sessions, msg)` (encoded once: one shared buffer) or with a Lua loop of ",
      "`s:send(msg)` (a copy per session); `bench/broadcast_floor.c` writes each copy with write(2) from plain C, ",
      "which is about what the kernel's TCP send costs alone. CPU is the server's utime + stime per delivered message; ",
      "user is the part outside the kernel; \"in the call\" is the CPU time spent inside `core:broadcast` or the send ",
      "loop per copy (on io_uring the kernel's send runs after the handler, so this is the cost of queueing). ",
      "Buffers: the most alive (and their bytes) right after a round's copies were queued.")
    w("")
    w("| system | CPU µs / message, median (min–max) | user µs / message | µs in the call / copy | messages/s | buffers alive | their bytes |")
    w("| --- | --- | --- | --- | --- | --- | --- |")
    for _, sys in ipairs(ORDER.bcast) do
      local v = stat("bc", "bcast", sys, "cpu_us")
      if v then
        local floor = sys == "bc_floor"
        w("| ", SYSTEMS[sys], " | ", range("bc", "bcast", sys, "cpu_us", "cpu"), " | ",
          fmt((stat("bc", "bcast_user", sys, "cpu_us")), "cpu"), " | ",
          floor and "—" or fmt((stat("bc", "bcast_call", sys, "cpu_us")), "cpu"), " | ",
          fmt((stat("bc", "bcast", sys, "rps")), "rps"), " | ",
          floor and "—" or fmt((stat("bc", "bcast_mem", sys, "requests")), "bytes"), " | ",
          floor and "—" or fmt((stat("bc", "bcast_mem", sys, "bytes_conn")), "bytes"), " |")
      elseif state_of("bcast", sys) then
        w("| ", SYSTEMS[sys], " | ", missing_note("bcast", sys), " | | | | | |")
      end
    end
    w("")
    local r_all = ratio(bc("bcast", "bc_broadcast"), bc("bcast", "bc_loop"))
    local r_user = ratio(bc("bcast_user", "bc_broadcast"), bc("bcast_user", "bc_loop"))
    local r_call = ratio(bc("bcast_call", "bc_broadcast"), bc("bcast_call", "bc_loop"))
    local r_floor = ratio(bc("bcast", "bc_broadcast"), bc("bcast", "bc_floor"))
    w("core:broadcast ÷ the send loop: ", fmt(r_all, "ratio"), " of the CPU per delivered message, ",
      fmt(r_user, "ratio"), " of its user part, ", fmt(r_call, "ratio"), " of the time in the call; ",
      "core:broadcast ÷ plain C write(2): ", fmt(r_floor, "ratio"), ".")
    w("")
  end
end

local problems = {}
for _, s in ipairs(status) do
  if s.state ~= "pass" then problems[#problems + 1] = s end
end
if #problems > 0 then
  w("## Not measured")
  w("")
  for _, s in ipairs(problems) do
    w("- ", JOBS[s.job] or s.job, ", ", SYSTEMS[s.system] or s.system, ": ", s.state == "skip" and "skipped" or "FAILED", " — ", s.reason)
  end
  w("")
end

w("## Method")
w("")
w("- Every server listens on 127.0.0.1 on its own port; all are started before the first job and stopped at the end ",
  "(also on Ctrl-C or failure). Idle servers do not spend CPU, so each is measured alone.")
w("- Each job warms every server up once, then runs ", meta.rounds or "?", " rounds; within a round the systems take turns ",
  "in a fixed order, so slow drift (thermal, other tenants) spreads over all of them. The tables show medians and the spread.")
w("- CPU time comes from `/proc/PID/stat` in clock ticks (10 ms); a run spends whole seconds of CPU, so the rounding is ",
  "well under 1 %.")
w("- `scripts/bench --quick` runs every job once with tiny sizes; `scripts/test` uses it to check that the harness still works ",
  "(no timing assertions).")
w("")

local f = assert(io.open(md_path, "w"))
f:write(table.concat(md, "\n"))
f:close()

-- ---- chart data ---------------------------------------------------------------------------
-- One file per panel of bench/chart.gp: rows of  "label" value colour
os.execute("mkdir -p '" .. chart_dir:gsub("'", "'\\''") .. "'")
local COLOUR = { iocore = 1, dflt = 12, epoll = 9, luv = 2, nginx_c = 3, nginx_lua = 4, redis = 5, floor = 6, iocore_luvparse = 11,
                 uring_1t = 7, uring_2t = 8, epoll_1t = 9, epoll_2t = 10,
                 uring_4t = 7, uring_8t = 8, epoll_4t = 9, epoll_8t = 10 }
local CHART_LABEL = { iocore = "iocore", dflt = "iocore default threads", epoll = "iocore epoll", luv = "luv", nginx_c = "nginx C", nginx_lua = "nginx Lua",
                      redis = "redis-server", floor = "floor", uring_1t = "uring 1t",
                      iocore_luvparse = "iocore (luv parser)",
                      uring_2t = "uring 2t", epoll_1t = "epoll 1t", epoll_2t = "epoll 2t",
                      uring_4t = "uring 4t", uring_8t = "uring 8t", epoll_4t = "epoll 4t", epoll_8t = "epoll 8t" }
local function panel(name, group, job, systems, field)
  local out = {}
  for _, s in ipairs(systems) do
    local v = stat(group, job, s, field)
    if v then out[#out + 1] = string.format("%q %.3f %d", CHART_LABEL[s], v, COLOUR[s]) end
  end
  if #out == 0 then out[1] = '"no data" 0 0' end
  local fh = assert(io.open(chart_dir .. "/" .. name, "w"))
  fh:write(table.concat(out, "\n"), "\n")
  fh:close()
end
for _, job in ipairs({ "http", "conn", "resp" }) do
  panel(job .. ".dat", "cmp", job, ORDER[job], "cpu_us")
  panel("var-" .. job .. ".dat", "var", job, VARIANTS, "cpu_us")
end
panel("idle.dat", "cmp", "idle", ORDER.idle, "bytes_conn")
local vars = assert(io.open(chart_dir .. "/vars.gp", "w"))
vars:write(string.format("title_machine = %q\n",
  string.format("%s cores, %s, %s, %s", meta.nproc or "?", meta.cpu or "?", meta.kernel or "?", meta.date or "?")))
vars:close()

-- ---- one-screen summary -----------------------------------------------------------------
local p = print
p("")
p(string.format("== %s: %s cores, %s, %s, %s round(s)", meta.mode or "bench", meta.nproc or "?", meta.cpu or "?", meta.kernel or "?", meta.rounds or "?"))
p(string.format("%-28s %-16s %10s %12s %9s %11s", "job", "system", "CPU us/req", "req/s", "p99 ms", "iocore/this"))
for _, job in ipairs({ "http", "conn", "resp" }) do
  local base = stat("cmp", job, "iocore", "cpu_us")
  for _, sys in ipairs(ORDER[job]) do
    local c = stat("cmp", job, sys, "cpu_us")
    if c then
      p(string.format("%-28s %-16s %10s %12s %9s %11s", JOBS[job], sys, fmt(c, "cpu"), fmt((stat("cmp", job, sys, "rps")), "rps"),
        fmt((stat("cmp", job, sys, "p99_ms")), "ms"), sys == "iocore" and "" or fmt(ratio(base, c), "ratio")))
    end
  end
end
do
  local base = stat("cmp", "idle", "iocore", "bytes_conn")
  for _, sys in ipairs(ORDER.idle) do
    local b = stat("cmp", "idle", sys, "bytes_conn")
    if b then
      p(string.format("%-28s %-16s %10s %12s %9s %11s", "idle connection (bytes)", sys, fmt(b, "bytes"), "", "",
        sys == "iocore" and "" or fmt(ratio(base, b), "ratio")))
    end
  end
end
for _, job in ipairs({ "sresp", "shttp", "sline", "sidle" }) do
  local field = job == "sidle" and "bytes_conn" or "cpu_us"
  local base = stat("st", job, ORDER[job][1], field)
  for _, sys in ipairs(ORDER[job]) do
    local v = stat("st", job, sys, field)
    if v then
      p(string.format("%-28s %-16s %10s %12s %9s %11s", JOBS[job], sys, fmt(v, field == "bytes_conn" and "bytes" or "cpu"),
        fmt((stat("st", job, sys, "rps")), "rps"), "", sys == ORDER[job][1] and "" or fmt(ratio(base, v), "ratio")))
    end
  end
end
for _, v in ipairs(VARIANTS) do
  local c = {}
  for _, job in ipairs({ "http", "conn", "resp" }) do c[#c + 1] = fmt((stat("var", job, v, "cpu_us")), "cpu") end
  if rows.var then
    p(string.format("%-28s %-16s %s", "iocore " .. v .. " (CPU us/req)", "", "http " .. c[1] .. ", conn " .. c[2] .. ", resp " .. c[3]))
  end
end
p(string.format("targets met: %d of %d", met_count, #targets))
for _, t in ipairs(targets) do
  p(string.format("  %-68s %8s  %-7s%s", t.what, t.short, t.value == nil and "not measured" or (t.met and "met" or "NOT MET"),
    t.control and ("  (control" .. (t.control_what and "" or ", luv's parser") .. ": " .. fmt(t.control, "ratio") .. ")") or ""))
end
