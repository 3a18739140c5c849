# Helpers shared by the cluster tests (sourced). Each test is a script that
# exits 0 (passed), 1 (failed) or 77 (skipped, after printing why). Every
# process it starts is recorded and, at exit, sent SIGTERM, given 5 s, then
# SIGKILL, and reaped; its files live in a temporary folder removed on exit.
# The module under test: LUA_CPATH as given (scripts/test: the debug build),
# else build/bin/release.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
export LUA_CPATH=${LUA_CPATH:-$root/build/bin/release/?.so;;}
export LUA_PATH=${LUA_PATH:-$root/lua/?.lua;$root/lua/?/init.lua;$root/tests/cluster/?.lua;;}
tmp=$(mktemp -d "${TMPDIR:-/tmp}/iocore-cluster.XXXXXX")
bg_pids=()
cleanup() {
  local p
  for p in "${bg_pids[@]}"; do kill -TERM "$p" 2>/dev/null; done
  for p in "${bg_pids[@]}"; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$p" 2>/dev/null
    wait "$p" 2>/dev/null
  done
  rm -rf "$tmp"
}
trap cleanup EXIT
# (a TERM or INT from the runner's time-out runs the clean-up too)
trap 'exit 143' TERM INT

fail() { echo "FAIL: $*"; exit 1; }
skip() { echo "SKIP: $*"; exit 77; }
need() { command -v "$1" >/dev/null || skip "$1 not installed (scripts/setup --cluster)"; }

# A free loopback TCP port (bound and released by iocore itself; the caller
# binds it again a moment later).
free_port() {
  lua5.4 -e 'local c = require("iocore").core { threads = 1 }
    local l = assert(c:listen("127.0.0.1:0")); io.write((l:address():match(":(%d+)$"))); l:close(); c:close()'
}

# wait_for_count FILE REGEX N SECONDS: true once FILE has N lines matching REGEX.
wait_for_count() {
  local i c
  for ((i = 0; i < $4 * 10; i++)); do
    c=$(grep -cE "$2" "$1" 2>/dev/null)
    [[ ${c:-0} -ge $3 ]] && return 0
    sleep 0.1
  done
  return 1
}

# with_sigint CMD...: runs CMD with SIGINT at its default disposition (a
# background job of a script starts with SIGINT ignored, which no trap can
# undo), so the test can press "Ctrl-C" with kill -INT. Replaces the shell it
# runs in: start it as `with_sigint CMD... &` so that $! is CMD's pid.
with_sigint() { exec perl -e '$SIG{INT} = "DEFAULT"; exec @ARGV or die "exec $ARGV[0]: $!"' "$@"; }
