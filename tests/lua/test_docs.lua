-- Numbers docs/lua-api.md states that come from the code, checked against
-- the code: the module's own values (iocore.limits), the C sources'
-- constants, and measurements where the number is behaviour.
local H = require "helpers"
local lu = H.lu
local iocore = H.iocore

TestDocs = H.class()

local function doc()
  local text = H.read_file(H.root .. "/docs/lua-api.md")
  if not text then lu.skip("docs/lua-api.md not found from " .. H.root) end
  return text
end

local function source(path)
  local text = H.read_file(H.root .. "/" .. path)
  if not text then lu.skip(path .. " not found from " .. H.root) end
  return text
end

-- The value of `#define NAME <expr>` in a C source, for the simple forms
-- used there: 32, (64 * 1024), (16u * 1024u).
local function define(text, name)
  local expr = text:match("#define%s+" .. name .. "%s+([^\n]+)")
  lu.assertNotNil(expr, "#define " .. name)
  expr = expr:gsub("/%*.*", ""):gsub("(%d+)u", "%1")
  local v = load("return " .. expr)()
  return math.tointeger(v)
end

local function kib(n) return n // 1024 end

function TestDocs:test_watchdog_period_in_docs_is_the_modules()
  local text = doc()
  local div, lo, hi = text:match("`handler_timeout/(%d+)` ms %(clamped to (%d+)%.%.(%d+) ms%)")
  lu.assertNotNil(div, "the watchdog period sentence in docs/lua-api.md")
  lu.assertEquals(tonumber(div), iocore.limits.watchdog_divisor)
  lu.assertEquals(tonumber(lo), iocore.limits.watchdog_min_ms)
  lu.assertEquals(tonumber(hi), iocore.limits.watchdog_max_ms)
  local count = text:match("checks the time%-out every (%d+) instructions")
  lu.assertEquals(tonumber(count), define(source("src/lua/lbind.h"), "LB_CO_HOOK_COUNT"))
end

function TestDocs:test_cork_limit_in_docs_is_the_libraries()
  local n = doc():match("A write starts anyway once (%d+) KiB are held")
  lu.assertNotNil(n, "the cork sentence in docs/lua-api.md")
  lu.assertEquals(tonumber(n), kib(define(source("src/include/iocore.h"), "IOC_CORK_MAX")))
end

function TestDocs:test_option_ranges_and_defaults_in_docs_are_the_modules()
  local text = doc()
  local accepts = text:match("| `accepts` | `16` | [^\n]-, 1%.%.(%d+) |")
  lu.assertEquals(tonumber(accepts), iocore.limits.max_accepts)
  lu.assertStrContains(text, "field 'accepts' out of range 1.." .. iocore.limits.max_accepts)
  local mp = text:match("| `max_pending` | `(%d+) MiB` |")
  lu.assertEquals(tonumber(mp) * (1 << 20), iocore.limits.default_max_pending)
  -- the limit itself: the range the option reader enforces
  H.with_core(function(core)
    local ok, err = pcall(core.listen, core, "127.0.0.1:0", { accepts = iocore.limits.max_accepts + 1 })
    lu.assertFalse(ok)
    lu.assertStrContains(err, "out of range 1.." .. iocore.limits.max_accepts)
  end)
end

function TestDocs:test_send_chunk_sizes_in_docs_are_the_c_constants()
  local text = doc()
  local least, count = text:match("a chunk of their own size, at least (%d+) bytes,.-one gathered write of up to (%d+) chunks")
  lu.assertNotNil(least, "the send row of the sizes table")
  local net = source("src/net/net.h")
  lu.assertEquals(tonumber(least), define(net, "IOC__CHUNK_SMALL"))
  lu.assertEquals(tonumber(count), define(net, "IOC__SEND_IOV_MAX"))
end

local RECV_BUFS = {
  io_uring = { "src/backend/uring.c", "UR_BUF_SIZE" },
  epoll = { "src/backend/epoll.c", "EP_RECV_BUF" },
  iocp = { "src/backend/iocp.c", "IOCP_RECV_BUF" },
}

-- The largest on_recv chunk per backend: the docs' number is the backend's
-- receive buffer, and a large transfer on this backend reaches exactly it.
function TestDocs:test_on_recv_chunk_size_in_docs_per_backend()
  local text = doc()
  for backend, src in pairs(RECV_BUFS) do
    local n = text:match("| `on_recv` data, " .. backend .. " | at most (%d+) KiB per call")
    lu.assertNotNil(n, "the on_recv row for " .. backend)
    lu.assertEquals(tonumber(n), kib(define(source(src[1]), src[2])), backend)
  end
  H.with_core(function(core)
    local want = tonumber(text:match("| `on_recv` data, " .. core:backend() .. " | at most (%d+) KiB per call")) * 1024
    local N = 16 << 20
    local max, total = 0, 0
    local l = H.listen(core, { on_recv = function(s, d)
      total = total + #d
      if #d > max then max = #d end
    end })
    local c = H.client(core, l:address(), { on_connect = function(c) c.s:send(string.rep("x", N)) end })
    H.wait_for(core, function() return total == N end, "the transfer", 30000)
    lu.assertEquals(max, want, "the largest on_recv chunk on " .. core:backend())
    c.s:close()
    H.wait_for(core, function() return c.closed and core:stats().active == 0 end, "closes")
    l:close()
  end)
end
