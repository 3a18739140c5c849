#!/usr/bin/env bash
# The Lua suite on Windows: the mingw-built lua.exe (scripts/setup --windows
# builds it from Debian's lua5.4 source package) loading iocore.dll on the
# IOCP backend, under wine.
#
#   tests/win/run_lua.sh LUA_EXE MODULE_DIR [luaunit args]   tests/lua (run.lua)
#   tests/win/run_lua.sh --smoke LUA_EXE MODULE_DIR          tests/win/lua_server_smoke.sh
#
# Run from the repository root; WINEPREFIX and WINEDEBUG come from the
# environment. Sets IOCORE_BACKEND=iocp, LUA_CPATH to MODULE_DIR/?.dll and
# LUA_PATH to lua/, tests/lua/, tests/win/ (lua_skips.lua: the tests that
# cannot run on Windows, each skipped with its reason) and the folder of
# Debian's luaunit.lua (lua-unit). What the suite starts are Linux processes
# (tests/lua/helpers.lua); their files go to a temporary folder
# (IOCORE_TEST_TMP), and any of them still alive at the end is killed.
set -uo pipefail

smoke=0
if [[ ${1:-} == --smoke ]]; then smoke=1; shift; fi
lua_exe=${1:?usage: run_lua.sh [--smoke] LUA_EXE MODULE_DIR [args]}
module_dir=${2:?usage: run_lua.sh [--smoke] LUA_EXE MODULE_DIR [args]}
shift 2

if [[ ! -f $module_dir/iocore.dll ]]; then
  echo "run_lua.sh: no $module_dir/iocore.dll"
  echo "RESULT win-lua: 0 passed, 1 failed"
  exit 1
fi
luaunit=
for v in 5.4 5.3 5.2 5.1; do
  [[ -f /usr/share/lua/$v/luaunit.lua ]] && { luaunit=/usr/share/lua/$v; break; }
done
if [[ -z $luaunit && $smoke -eq 0 ]]; then
  echo "run_lua.sh: SKIP: no luaunit.lua under /usr/share/lua (Debian package lua-unit)"
  exit 77
fi

tmp=$(mktemp -d)
cleanup() {
  local f p
  for f in "$tmp"/*.pid; do
    [[ -f $f ]] || continue
    p=$(tr -dc 0-9 < "$f")
    [[ -n $p ]] && kill -KILL "$p" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap cleanup EXIT

export IOCORE_BACKEND=iocp IOCORE_TEST_TMP=$tmp
export LUA_CPATH="$module_dir/?.dll"
export LUA_PATH="lua/?.lua;lua/?/init.lua;tests/lua/?.lua;tests/win/?.lua${luaunit:+;Z:$luaunit/?.lua}"

if [[ $smoke -eq 1 ]]; then
  tests/win/lua_server_smoke.sh "$lua_exe"
else
  wine "$lua_exe" tests/lua/run.lua "$@"
fi
