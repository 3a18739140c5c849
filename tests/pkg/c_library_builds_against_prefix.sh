#!/usr/bin/env bash
# scripts/install --prefix puts the header, libiocore.a, libiocore.so and
# iocore.pc under a prefix; examples/echo.c builds against that installed copy
# with `pkg-config --cflags --libs iocore` (shared) and with the static
# library, and each binary echoes a line over loopback, then stops on SIGTERM.
. "$(dirname "$0")/lib.sh"
need pkg-config
need cc
prefix=$tmp/prefix
timeout -k 5 600 scripts/install --prefix "$prefix" > "$tmp/install.log" 2>&1 ||
  { cat "$tmp/install.log"; fail "scripts/install --prefix failed"; }
for f in include/iocore.h lib/libiocore.a lib/libiocore.so lib/pkgconfig/iocore.pc; do
  [[ -f $prefix/$f ]] || fail "$prefix/$f not installed"
done
export PKG_CONFIG_PATH=$prefix/lib/pkgconfig
cflags=$(pkg-config --cflags iocore) || fail "pkg-config --cflags iocore"
libs=$(pkg-config --libs iocore) || fail "pkg-config --libs iocore"
[[ $cflags == *"-I$prefix/include"* ]] || fail "cflags '$cflags' do not name $prefix/include"
# (only the installed header: the repo's src/ is not on the include path)
# shellcheck disable=SC2086
cc -o "$tmp/echo_shared" examples/echo.c $cflags $libs \
  > "$tmp/cc-shared.log" 2>&1 || { cat "$tmp/cc-shared.log"; fail "echo.c against the shared library"; }
# Static: the archive itself, plus the private libraries the .pc lists.
private=$(pkg-config --static --libs-only-l iocore | sed 's/-liocore//')
# shellcheck disable=SC2086
cc -o "$tmp/echo_static" examples/echo.c $cflags \
  "$(pkg-config --variable=libdir iocore)/libiocore.a" $private \
  > "$tmp/cc-static.log" 2>&1 || { cat "$tmp/cc-static.log"; fail "echo.c against the static library"; }
# (ldd's output captured first: grep -q closing the pipe early would fail it)
deps=$(LD_LIBRARY_PATH=$prefix/lib ldd "$tmp/echo_shared")
[[ $deps == *"$prefix/lib/libiocore.so"* ]] || fail "echo_shared does not load $prefix/lib/libiocore.so: $deps"
deps=$(ldd "$tmp/echo_static")
[[ $deps != *libiocore* ]] || fail "echo_static loads a shared libiocore: $deps"

run_echo() { # name binary
  local log=$tmp/$1.log pid line port rc
  LD_LIBRARY_PATH=$prefix/lib timeout -k 5 60 "$2" 127.0.0.1:0 1 > "$log" 2>&1 &
  pid=$!
  bg_pids+=("$pid")
  line=$(wait_for_line "$log" 'echo listening on 127\.0\.0\.1:[0-9]+' 20) ||
    { cat "$log"; fail "$1 did not start"; }
  port=$(sed -E 's/.*127\.0\.0\.1:([0-9]+).*/\1/' <<< "$line")
  echo_roundtrip "$port" "hello from $1" || fail "$1 on port $port did not echo"
  kill -TERM "$pid"
  wait "$pid"; rc=$?
  [[ $rc -eq 0 ]] || { cat "$log"; fail "$1 exited $rc after SIGTERM"; }
  grep -q 'echo stopped: 1 accepted' "$log" || { cat "$log"; fail "$1: no clean stop line"; }
  echo "ok: $1 ($line) echoed and stopped cleanly"
}
run_echo echo_shared "$tmp/echo_shared"
run_echo echo_static "$tmp/echo_static"
