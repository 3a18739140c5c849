#!/usr/bin/env bash
# `luarocks make` from the checkout installs the C module and lua/ into a
# tree; a clean lua5.4 whose search paths hold only that tree requires
# "iocore" (and every iocore.* module of lua/), and the module serves a
# connection.
. "$(dirname "$0")/lib.sh"
need luarocks
tree=$tmp/tree
timeout -k 5 600 luarocks --lua-version 5.4 --tree "$tree" make > "$tmp/luarocks.log" 2>&1 ||
  { cat "$tmp/luarocks.log"; fail "luarocks make failed"; }
[[ -f $tree/lib/lua/5.4/iocore.so ]] || fail "no $tree/lib/lua/5.4/iocore.so"
mods=()
while IFS= read -r f; do
  m=${f#lua/}; m=${m%.lua}; m=${m%/init}; mods+=("${m//\//.}")
  [[ -f $tree/share/lua/5.4/${f#lua/} ]] || fail "$f not installed in the tree"
done < <(find lua -name '*.lua' 2>/dev/null | sort)
# No ";;": lua5.4's default paths (where scripts/setup installs) are out.
cd /
out=$(LUA_PATH="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua" \
      LUA_CPATH="$tree/lib/lua/5.4/?.so" LUA_INIT= \
      timeout -k 5 30 lua5.4 - "${mods[@]}" <<'LUA' 2>&1
local iocore = require "iocore"
assert(package.searchpath("iocore", package.cpath):find(os.getenv("LUA_CPATH"):match("^(.*)/%?"), 1, true))
for _, m in ipairs(arg) do require(m) end
local core = iocore.core { threads = 1 }
local got
local l = assert(core:listen("127.0.0.1:0", { on_recv = function(s, d) s:send(d) end }))
core:connect(l:address(), {
  on_connect = function(s, err) assert(not err, err); s:send("ping") end,
  on_recv = function(s, d) got = d; s:close(); l:close() end,
  on_close = function() core:stop() end,
})
core:run(10000)
core:close()
assert(got == "ping", "echo through the installed module: " .. tostring(got))
print("version " .. iocore.version .. ", modules: " .. #arg)
LUA
) || fail "clean lua5.4 against the tree: $out"
echo "$out"
echo "ok: luarocks tree $tree serves require \"iocore\" (${#mods[@]} Lua module(s) from lua/)"
