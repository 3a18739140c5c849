-- Bulk data through one core: clients and an echo server on the same core,
-- byte-exact both ways.
local H = require "helpers"
local lu = H.lu

TestEcho = H.class()

-- n sessions each send a payload (sizes from `sizes`) in random pieces; the
-- server echoes; each client closes once it has everything back.
local function echo_many(core, sizes, piece_max)
  local server_closes, server_errs = 0, {}
  local l = H.echo_server(core, {
    on_close = function(s, err)
      server_closes = server_closes + 1
      if err then server_errs[#server_errs + 1] = err end
    end,
  })
  local payloads, clients = {}, {}
  for i, n in ipairs(sizes) do payloads[i] = H.payload(n, i) end
  local finished = 0
  for i = 1, #sizes do
    clients[i] = H.client(core, l:address(), {
      on_connect = function(c, err)
        if err then return end
        local p, pos = payloads[i], 1
        while pos <= #p do
          local n = math.random(1, piece_max)
          assert(c.s:send(p:sub(pos, pos + n - 1)))
          pos = pos + n
        end
      end,
      on_recv = function(c)
        if c.received >= #payloads[i] and not c.s:closed() then c.s:close() end
      end,
      on_close = function() finished = finished + 1 end,
    })
  end
  H.wait_for(core, function() return finished == #sizes and server_closes == #sizes end,
    "every echo to finish", 40000)
  for i, c in ipairs(clients) do
    lu.assertNil(c.connect_err, "client " .. i)
    lu.assertNil(c.close_err, "client " .. i)
    lu.assertEquals(c.received, #payloads[i], "client " .. i .. " byte count")
    if c:data() ~= payloads[i] then
      local d = c:data()
      local at = 1
      while at <= #d and d:byte(at) == payloads[i]:byte(at) do at = at + 1 end
      lu.fail(("client %d: echo differs from what it sent at byte %d of %d"):format(i, at, #payloads[i]))
    end
  end
  lu.assertEquals(server_errs, {})
  local total = 0
  for _, n in ipairs(sizes) do total = total + n end
  local st = core:stats()
  lu.assertEquals(st.bytes_in, 2 * total)  -- server in + client in
  lu.assertEquals(st.bytes_out, 2 * total)
  lu.assertEquals(st.accepted, #sizes)
  lu.assertEquals(st.connected, #sizes)
  l:close()
end

function TestEcho:test_echo_random_payloads_up_to_1MiB_over_50_sessions()
  H.with_core({ threads = 2 }, function(core)
    math.randomseed(2024)
    local sizes = { 1, 1 << 20, 65536, 65537, 100 }
    while #sizes < 50 do sizes[#sizes + 1] = math.random(1, 1 << 20) end
    echo_many(core, sizes, 200000)
  end)
end

function TestEcho:test_echo_many_small_sends_one_thread()
  H.with_core({ threads = 1 }, function(core)
    math.randomseed(99)
    local sizes = {}
    for i = 1, 20 do sizes[i] = math.random(1, 64 * 1024) end
    echo_many(core, sizes, 100)
  end)
end

function TestEcho:test_echo_with_four_threads()
  H.with_core({ threads = 4 }, function(core)
    math.randomseed(4)
    local sizes = {}
    for i = 1, 30 do sizes[i] = math.random(1, 256 * 1024) end
    echo_many(core, sizes, 5000)
  end)
end
