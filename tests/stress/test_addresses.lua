-- Bad addresses: every malformed form is refused whole, never truncated
-- into a valid one, never a crash.
local lu = require "luaunit"
local S = require "lib"

TestAddresses = S.class()

local BAD = {
  "", ":", "127.0.0.1", "127.0.0.1:", ":80", "127.0.0.1:-1", "127.0.0.1:65536", "127.0.0.1:4294967376",
  "127.0.0.1:99999999999999999999", "127.0.0.1:80x", "127.0.0.1:0x50", "127.0.0.1: 80", " 127.0.0.1:80",
  "127.0.0.1:80 ", "127.0.0.1:+80", "127.0.0.1:080", "1.2.3.256:80", "256.1.1.1:80", "999.1.1.1:80",
  "1.2.3:80", "1.2.3.4.5:80", "1..3.4:80", "01.2.3.4:80", "1.2.3.-4:80", "1.2.3.4a:80", "127.1:80",
  "0x7f.0.0.1:80", "[::1", "[::1]", "[::1]:", "::1]:80", "[::1:80", "[[::1]]:80", "::1:80", "[::1]80",
  "[:::1]:80", "[1::2::3]:80", "[12345::1]:80", "[::g]:80", "[1:2:3:4:5:6:7:8:9]:80", "[::1%]:80",
  "[::1%eth0]:80", "[::1%0]:80", "[::1]:65536", "[]:80", "[::ffff:1.2.3.256]:80", "[::1]:80]",
  "127.0.0.1:80\0", "127.0.0.1\0:80", "\0" .. "127.0.0.1:80", "127.0.0.1:8\0" .. "0", "[::1\0]:80",
  ("a"):rep(300) .. ":80", ("1"):rep(300) .. ":80", "127.0.0.1:" .. ("0"):rep(300),
  "[" .. ("0:"):rep(149) .. ":1]:80", "1.2.3.4" .. (" "):rep(293) .. ":80", ("x"):rep(65536) .. ":1",
  "example.com:99999", "localhost", "localhost:", "*:80", "0.0.0.0:80:80",
  "1.2.3.4:80\n", "\t1.2.3.4:80", "127.0.0.1:\239\188\152\239\188\144", "１２７.0.0.1:80",
}

-- Host names: listen wants an address (only "localhost" is special), so it
-- refuses them; connect resolves them (without blocking), so they are not
-- bad addresses there.
local NAMES = { "localhos:80", "localhost.:80", "example.com:80" }

-- Each of the forms above (over 70: out-of-range octets and ports,
-- unbalanced brackets, embedded NULs, empty, 300-byte hosts and ports, a
-- 64 KiB string, host names, stray spaces) makes both core:listen and
-- core:connect return exactly nil, "EINVAL: ...", "EINVAL", opening no
-- socket. A valid address followed by anything (a NUL, a space, a digit)
-- is refused too: nothing is cut to fit. The valid forms next to them are
-- accepted, so the parser is not simply refusing everything.
function TestAddresses:test_bad_addresses_einval_never_truncated()
  S.with_core(nil, function(core)
    lu.assertTrue(#BAD >= 50)
    local n = 0
    local cases = {}
    for _, addr in ipairs(BAD) do cases[#cases + 1] = { addr, { "listen", "connect" } } end
    for _, addr in ipairs(NAMES) do cases[#cases + 1] = { addr, { "listen" } } end
    for i, case in ipairs(cases) do
      local addr = case[1]
      for _, call in ipairs(case[2]) do
        local r = table.pack(core[call](core, addr))
        local ok = r.n == 3 and r[1] == nil and r[3] == "EINVAL" and type(r[2]) == "string"
            and r[2]:match("^EINVAL: .+") ~= nil
        if not ok then
          local shown = {}
          for k = 1, r.n do shown[k] = tostring(r[k]) end
          lu.fail(("%s(#%d %q): expected nil, \"EINVAL: ...\", \"EINVAL\"; got %s"):format(call, i,
            #addr > 80 and addr:sub(1, 80) .. "..." or addr, table.concat(shown, ", ")))
        end
        n = n + 1
      end
    end
    local st = core:stats()
    lu.assertEquals(st.sockets, 0, "sockets left open by refused addresses")
    lu.assertEquals(st.objects, 0, "objects left by refused addresses")

    -- the valid neighbours
    local good = { "127.0.0.1:0", "0.0.0.0:0", "localhost:0", "LocalHost:0" }
    local l6 = core:listen("[::1]:0")
    if l6 then
      good[#good + 1] = "[::1]:0"
      good[#good + 1] = "[0:0:0:0:0:0:0:1]:0"
      l6:close()
    end
    for _, addr in ipairs(good) do
      local l, err = core:listen(addr)
      lu.assertNotNil(l, addr .. ": " .. tostring(err))
      local port = l:port()
      lu.assertTrue(port > 0)
      -- connect to exactly this port, spelled out; and the same with a
      -- trailing NUL or digit must be refused, not cut back to it
      local host = addr:match("^(.*):0$")
      if host == "0.0.0.0" then host = "127.0.0.1" end
      local target = host .. ":" .. port
      local connected
      core:connect(target, { on_connect = function(s, e) connected = e or true; s:close() end })
      lu.assertTrue(S.run_until(core, function() return connected ~= nil end, 5000), "connect " .. target)
      lu.assertEquals(connected, true, "connect " .. target)
      for _, tail in ipairs({ "\0", "0", " ", "x", "\0" .. port }) do
        local r = table.pack(core:connect(target .. tail))
        lu.assertEquals(r[3], "EINVAL", ("connect(%q)"):format(target .. tail))
      end
      l:close()
      n = n + 1
    end
    S.note("%d malformed forms refused by listen and connect (%d calls); %d valid forms accepted", #BAD, n - #good,
      #good)
  end)
end

-- The same refusals in a loop with garbage around real addresses: random
-- bytes spliced into "127.0.0.1:<port>" either parse to exactly the address
-- they spell (the listener's address() is that very text) or return
-- EINVAL (or a system error for a well-formed address that cannot be
-- bound); never a crash. (The fuzzer in fuzz/ does this for the parser.)
function TestAddresses:test_spliced_garbage_is_refused_or_exact()
  S.with_core(nil, function(core)
    local seed = 7
    local function rand(n)
      seed = (seed * 1103515245 + 12345) % 2147483648
      return seed % n
    end
    local einval, other, accepted = 0, 0, 0
    local iters = S.size(5000, 200000)
    for _ = 1, iters do
      local base = "127.0.0.1:" .. (1 + rand(65535))
      local pos = rand(#base + 1)
      local junk = string.char(rand(256))
      local addr = base:sub(1, pos) .. junk .. base:sub(pos + 1)
      local r = table.pack(core:listen(addr, { accepts = 1 }))
      if r[1] then
        accepted = accepted + 1
        lu.assertEquals(r[1]:address(), addr, "bound to something else than the text says")
        r[1]:close()
      elseif r[3] == "EINVAL" then
        einval = einval + 1
      else
        -- a well-formed address may be busy or not ours to bind: fine,
        -- but only with a real code
        lu.assertNotNil(tostring(r[3]):match("^E%u+$"), ("listen(%q): %s"):format(addr, tostring(r[2])))
        other = other + 1
      end
    end
    collectgarbage()
    S.note("%d spliced addresses: %d EINVAL, %d bound, %d refused by the system", iters, einval, accepted, other)
    lu.assertTrue(einval > 0)
  end)
end
