#!/usr/bin/env bash
# The Windows echo example, served under wine, talked to from Linux: proves
# the IOCP backend carries real connections across the wine boundary.
#
#   tests/win/echo_smoke.sh build/windows/bin/debug/echo.exe
#
# Runs `wine echo.exe 127.0.0.1:0 2` (WINEPREFIX and WINEDEBUG come from the
# environment), connects with bash's /dev/tcp, and checks: a line comes
# back; two clients at once each get their own 256 KiB back byte for byte;
# SIGINT (delivered by wine as Ctrl-C) stops the server gracefully with
# exit status 0 and the right counts. Prints one line per check and
#   RESULT win-echo: P passed, F failed
set -uo pipefail

exe=${1:?usage: echo_smoke.sh path/to/echo.exe}
tmp=$(mktemp -d)
passed=0 failed=0 pid=

cleanup() {
  [[ -n $pid ]] && kill -KILL "$pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

ok() { echo "ok iocp echo $1"; passed=$((passed + 1)); }
fail() { echo "FAIL iocp echo $1"; failed=$((failed + 1)); }
finish() {
  echo "--- echo.exe output:"
  tr -d '\r' < "$tmp/out" | sed 's/^/    /'
  echo "RESULT win-echo: $passed passed, $failed failed"
  [[ $failed -eq 0 ]]
  exit $?
}

wine "$exe" 127.0.0.1:0 2 > "$tmp/out" 2>&1 &
pid=$!
port=
for _ in $(seq 600); do # wine's first start in a prefix can take a while
  port=$(tr -d '\r' < "$tmp/out" | sed -n 's/^echo listening on 127\.0\.0\.1:\([0-9]*\) (iocp.*/\1/p')
  [[ -n $port ]] && break
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if [[ -z $port ]]; then
  fail "listens: no 'echo listening on 127.0.0.1:PORT (iocp' line within 60 s"
  finish
fi
ok "listens on 127.0.0.1:$port with the iocp backend"

# One line there and back.
if exec 3<>"/dev/tcp/127.0.0.1/$port"; then
  printf 'hello from linux\n' >&3
  reply=
  IFS= read -r -t 10 reply <&3
  exec 3>&-
  if [[ $reply == "hello from linux" ]]; then ok "echoes a line"; else fail "echoes a line: got '$reply'"; fi
else
  fail "accepts a connection from linux"
fi

# Two clients at once, 256 KiB each (text, so bash can carry it), written
# while the reply is read back.
client() { # n
  local n=$1
  head -c 196608 /dev/urandom | base64 -w0 > "$tmp/in$n"
  exec 4<>"/dev/tcp/127.0.0.1/$port" || return 1
  cat "$tmp/in$n" >&4 &
  local writer=$!
  timeout 30 head -c "$(stat -c %s "$tmp/in$n")" <&4 > "$tmp/back$n"
  wait "$writer"
  exec 4>&-
}
client 1 & c1=$!
client 2 & c2=$!
wait "$c1"; wait "$c2"
for n in 1 2; do
  if cmp -s "$tmp/in$n" "$tmp/back$n"; then
    ok "client $n gets its 256 KiB back byte for byte"
  else
    fail "client $n: $(stat -c %s "$tmp/back$n" 2>/dev/null || echo 0) of $(stat -c %s "$tmp/in$n") bytes came back intact"
  fi
done

# Graceful stop.
sleep 0.5 # the closes above reach the server
kill -INT "$pid"
rc=0
for _ in $(seq 200); do
  kill -0 "$pid" 2>/dev/null || break
  sleep 0.1
done
if kill -0 "$pid" 2>/dev/null; then
  fail "stops on SIGINT within 20 s"
else
  wait "$pid"; rc=$?
  pid=
  stopped=$(tr -d '\r' < "$tmp/out" | grep '^echo stopped:')
  if [[ $rc -eq 0 && $stopped == "echo stopped: 3 accepted, "* ]]; then
    ok "stops on SIGINT: $stopped"
  else
    fail "stops on SIGINT: exit $rc, '${stopped:-no stop line}'"
  fi
fi
finish
