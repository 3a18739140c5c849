-- s:write() above write_hwm waits until the queue has gone down, and comes
-- back however the bytes left: also when the kernel took a write larger
-- than the mark in one go (no on_drain follows such a send by itself).
local H = require "helpers"
local lu = H.lu
require "iocore.stream"

TestStreamWrite = H.class()

-- A stream handler writes `size` bytes in one write(), then "END"; a
-- client coroutine reads everything. Returns what the handler's write
-- returned and the bytes the client got.
local function write_then_end(core, size, hwm)
  local results = {}
  local l = H.listen(core, {
    write_hwm = hwm,
    handler = function(s)
      results.ok, results.err = s:write(H.payload(size, 7))
      results.ok2 = s:write("END")
      results.done = true
    end,
  })
  local got
  core:spawn(function()
    local c = assert(core:dial(l:address()))
    got = c:read(size + 3)
    c:close()
  end)
  H.wait_for(core, function() return results.done and got end,
    "the handler's write() returning and the client reading it all", 20000)
  l:close()
  return results, got
end

function TestStreamWrite:test_write_above_hwm_returns_when_the_kernel_takes_it_at_once()
  H.with_core(nil, function(core)
    -- 300 KiB above a 256 KiB mark: loopback takes it in one write
    local size = 300 * 1024
    local r, got = write_then_end(core, size, nil)
    lu.assertTrue(r.ok, tostring(r.err))
    lu.assertTrue(r.ok2)
    lu.assertEquals(#got, size + 3)
    lu.assertEquals(got, H.payload(size, 7) .. "END")
  end)
end

function TestStreamWrite:test_write_above_a_small_hwm_returns_each_time()
  H.with_core(nil, function(core)
    -- a 1 KiB mark: every 64 KiB write is above it
    local size = 64 * 1024
    for _ = 1, 5 do
      local r, got = write_then_end(core, size, 1024)
      lu.assertTrue(r.ok, tostring(r.err))
      lu.assertEquals(got, H.payload(size, 7) .. "END")
    end
  end)
end
