-- iocore.resolve(name): a host name looked up from an iocore coroutine
-- (a listener handler, core:spawn, core:dial's caller), in stream style:
--
--   local addrs, msg, code = iocore.resolve("example.org")      -- { "93.184.215.14", ... }
--   local addrs = iocore.resolve("localhost:6379")              -- { "127.0.0.1:6379", ... }
--
-- It is the binding's callback-style core:resolve(name, fn) with the calling
-- coroutine parked until the answer: the lookup runs on the resolver thread,
-- so no worker and not the Lua lock waits for it. The answer is an array of
-- address strings in the resolver's order of preference (with the port when
-- the name had one: ready for dial), or nil, "ENOTFOUND: ...", "ENOTFOUND"
-- for a name that does not resolve (EAGAIN for a DNS server that does not
-- answer), or nil, "EINVAL: ...", "EINVAL" for a malformed name.
--
-- Installed by stream.lua's install, which passes `wake` (resumes a parked
-- coroutine the way every stream wake does) and `core_of(co)` (the core an
-- iocore coroutine runs on; nil for any other coroutine).
local M = {}

function M.install(iocore, parts)
  local wake, core_of = parts.wake, parts.core_of

  function iocore.resolve(name)
    local co, main = coroutine.running()
    local core = not main and core_of(co)
    if not core then
      error("resolve: not inside an iocore coroutine (use a listener handler, core:spawn or core:dial)", 2)
    end
    if type(name) ~= "string" then
      error(("bad argument #1 to 'resolve' (string expected, got %s)"):format(type(name)), 2)
    end
    local answer
    local ok, msg, code = core:resolve(name, function(...)
      answer = table.pack(...)
      wake(co)
    end)
    if not ok then return nil, msg, code end
    -- only the answer wakes this coroutine; the loop guards the contract
    while not answer do coroutine.yield() end
    return table.unpack(answer, 1, answer.n)
  end
end

return M
