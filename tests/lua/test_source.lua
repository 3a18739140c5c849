-- The binding's source keeps to its rules: it sees only the public C API
-- (iocore.h), the Lua headers and its portability layer (lplatform.h);
-- operating-system calls live in lplatform_*.c only; misuse is reported
-- through luaL_argerror / luaL_typeerror, never a hand-formatted string.
local H = require "helpers"
local lu = H.lu

TestSource = H.class()

local function binding_files()
  local files = {}
  local p = io.popen("ls " .. H.shq(H.root .. "/src/lua") .. " 2>/dev/null")
  for name in p:lines() do
    if name:match("%.[ch]$") then files[#files + 1] = name end
  end
  p:close()
  if #files == 0 then lu.skip("src/lua not found from " .. H.root) end
  return files
end

local ALLOWED = {
  ["iocore.h"] = true, ["lua.h"] = true, ["lauxlib.h"] = true, ["lplatform.h"] = true, ["lbind.h"] = true,
  -- the C library
  ["errno.h"] = true, ["stdatomic.h"] = true, ["stdbool.h"] = true, ["stddef.h"] = true, ["stdint.h"] = true,
  ["stdio.h"] = true, ["stdlib.h"] = true, ["string.h"] = true,
}

function TestSource:test_binding_includes_only_the_public_header_lua_and_lplatform()
  for _, name in ipairs(binding_files()) do
    if not name:match("^lplatform_") then
      local src = H.read_file(H.root .. "/src/lua/" .. name)
      for header in src:gmatch('#%s*include%s*[<"]([^>"]+)[>"]') do
        lu.assertTrue(ALLOWED[header], ("src/lua/%s includes %s"):format(name, header))
      end
    end
  end
end

function TestSource:test_binding_uses_no_internal_names_or_raw_system_calls()
  local forbidden = { "ioc__", "IOC__", "pthread_", "signalfd", "eventfd", "poll%(", "lua_href",
                      "objects_lock", "core%->sessions" }
  for _, name in ipairs(binding_files()) do
    if not name:match("^lplatform") then
      local src = H.read_file(H.root .. "/src/lua/" .. name)
      for _, pat in ipairs(forbidden) do
        lu.assertNil(src:find(pat), ("src/lua/%s uses %s"):format(name, pat))
      end
    end
  end
end

function TestSource:test_misuse_is_reported_through_luaL_argerror_not_formatted_by_hand()
  for _, name in ipairs(binding_files()) do
    local src = H.read_file(H.root .. "/src/lua/" .. name)
    lu.assertNil(src:find('"bad argument', 1, true), ("src/lua/%s formats a 'bad argument' message"):format(name))
  end
end
