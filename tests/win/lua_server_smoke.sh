#!/usr/bin/env bash
# examples/server.lua served by the Windows Lua (lua.exe + iocore.dll on the
# IOCP backend) under wine, talked to from Linux.
#
#   tests/win/lua_server_smoke.sh path/to/lua.exe
#
# WINEPREFIX, WINEDEBUG, LUA_PATH and LUA_CPATH (iocore.dll's folder) come
# from the environment (tests/win/run_lua.sh --smoke sets them). Runs
# `wine lua.exe examples/server.lua 127.0.0.1:0`, connects with bash's
# /dev/tcp and checks: it listens on iocp; it prints the accept message
# with the client's address; it echoes; it prints the client leaving; and
# SIGINT, which wine delivers as the console's Ctrl-C, stops it gracefully
# while a client is still connected: that client sees a clean end of
# stream, the script prints "server stopped" and exits 0. Then a script
# that gets Ctrl-C between iocore.core() and run(): the signal is held and
# run() returns true at once. Prints one line per check and
#   RESULT win-lua-server: P passed, F failed
set -uo pipefail

exe=${1:?usage: lua_server_smoke.sh path/to/lua.exe}
tmp=$(mktemp -d)
passed=0 failed=0 pid=

cleanup() {
  [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
  exec 3>&- 4>&- 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

ok() { echo "ok lua server $1"; passed=$((passed + 1)); }
fail() { echo "FAIL lua server $1"; failed=$((failed + 1)); }
finish() {
  local f
  for f in "$tmp/server.out" "$tmp/out"; do
    [[ -f $f ]] || continue
    echo "--- output of $( [[ $f == */server.out ]] && echo server.lua || echo the last script ):"
    tr -d '\r' < "$f" | sed 's/^/    /'
  done
  echo "RESULT win-lua-server: $passed passed, $failed failed"
  [[ $failed -eq 0 ]]
  exit $?
}
out() { tr -d '\r' < "$tmp/out"; }
# wait_line PATTERN: up to 20 s for a line of output matching the grep -E pattern
wait_line() {
  local _
  for _ in $(seq 200); do
    out | grep -qE "$1" && return 0
    kill -0 "$pid" 2>/dev/null || { out | grep -qE "$1"; return $?; }
    sleep 0.1
  done
  return 1
}

wine "$exe" examples/server.lua 127.0.0.1:0 > "$tmp/out" 2>&1 &
pid=$!
port=
if wait_line '^listening on 127\.0\.0\.1:[0-9]+ \(iocp, '; then
  port=$(out | sed -n 's/^listening on 127\.0\.0\.1:\([0-9]*\) (iocp, .*/\1/p')
  ok "listens on 127.0.0.1:$port with the iocp backend"
else
  fail "listens: no 'listening on 127.0.0.1:PORT (iocp, ...' line within 20 s"
  finish
fi

# One client: the accept message names it, a line comes back, it leaves.
if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
  printf 'hello from linux\n' >&3
  reply=
  IFS= read -r -t 10 reply <&3
  if [[ $reply == "hello from linux" ]]; then ok "echoes a line"; else fail "echoes a line: got '$reply'"; fi
  if wait_line $'^client connected\t127\\.0\\.0\\.1:[0-9]+$'; then
    ok "prints the accept message: $(out | grep -m1 '^client connected' | tr '\t' ' ')"
  else
    fail "prints 'client connected<TAB>127.0.0.1:PORT'"
  fi
  exec 3>&-
  if wait_line '^client left'; then ok "prints the client leaving"; else fail "prints 'client left'"; fi
else
  fail "accepts a connection from linux"
fi

# Ctrl-C with a client connected: a graceful stop.
exec 4<>"/dev/tcp/127.0.0.1/$port" || fail "second client connects"
for _ in $(seq 100); do [[ $(out | grep -c '^client connected') -ge 2 ]] && break; sleep 0.1; done
kill -INT "$pid"
rest=$(timeout 20 cat <&4; echo "rc=$?")
exec 4>&-
if [[ $rest == "rc=0" ]]; then
  ok "Ctrl-C: the connected client sees a clean end of stream"
else
  fail "Ctrl-C: the connected client got '${rest}' (want nothing, then EOF)"
fi
for _ in $(seq 200); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
  fail "stops on Ctrl-C within 20 s"
else
  wait "$pid"; rc=$?
  pid=
  if [[ $rc -eq 0 ]] && out | grep -q '^server stopped$'; then
    ok "stops on Ctrl-C: exit 0, 'server stopped'"
  else
    fail "stops on Ctrl-C: exit $rc, $(out | grep -c '^server stopped') 'server stopped' line(s)"
  fi
fi

# Ctrl-C between iocore.core() and run() is held: the next run() stops at
# once and returns true (without the hold it would run its 20 s, or the
# process would end). The script waits for a file, on a second core that
# does not take signals.
cat > "$tmp/held.lua" <<'LUA'
local iocore = require "iocore"
local core = assert(iocore.core { threads = 1 })
local idle = assert(iocore.core { threads = 1, signals = false })
io.stdout:setvbuf("line")
print("ready")
repeat idle:run(20) until io.open(arg[1])
print("run returned", core:run(20000))
LUA
mv "$tmp/out" "$tmp/server.out"
wine "$exe" "$tmp/held.lua" "$tmp/go" > "$tmp/out" 2>&1 &
pid=$!
if wait_line '^ready'; then
  kill -INT "$pid"
  sleep 0.5
  : > "$tmp/go"
  for _ in $(seq 100); do
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  if kill -0 "$pid" 2>/dev/null; then
    fail "Ctrl-C before run() is held: still running 10 s after it"
  else
    wait "$pid"; rc=$?
    pid=
    if [[ $rc -eq 0 ]] && out | grep -q $'^run returned\ttrue$'; then
      ok "Ctrl-C before run() is held: run() returns true at once, exit 0"
    else
      fail "Ctrl-C before run() is held: exit $rc, output '$(out | tr '\n' ' ')'"
    fi
  fi
else
  fail "held.lua prints ready"
fi
finish
