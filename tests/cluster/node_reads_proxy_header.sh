#!/usr/bin/env bash
# examples/cluster/node.lua in "proxy-lua" mode: a PROXY v1 header makes
# the greeting name the client's address from it; a connection without a
# header is closed at once, with a line in the node's log, and the node goes
# on serving. (No Redis needed: the node answers lines "failed" meanwhile.)
. "$(dirname "$0")/lib.sh"
read -r chat health dead < <(lua5.4 - <<'LUA'
local c = require("iocore").core { threads = 1, signals = false }
local ls = {}
for i = 1, 3 do ls[i] = assert(c:listen("127.0.0.1:0")) end
for _, l in ipairs(ls) do io.write(l:address():match(":(%d+)$"), " "); l:close() end
c:close()
LUA
)
timeout -k 5 60 lua5.4 examples/cluster/node.lua t1 "127.0.0.1:$chat" "127.0.0.1:$health" "127.0.0.1:$dead" proxy-lua \
  > "$tmp/node.log" 2>&1 &
bg_pids+=("$!")
wait_for_count "$tmp/node.log" "chat on 127\.0\.0\.1:$chat" 1 20 || { cat "$tmp/node.log"; fail "node did not start"; }

exec 3<>"/dev/tcp/127.0.0.1/$chat" || fail "connect"
printf 'no header here\n' >&3
if IFS= read -r -t 5 line <&3; then fail "a connection without a PROXY header got '$line'"; fi
exec 3<&- 3>&-
wait_for_count "$tmp/node.log" 'closing a connection: no PROXY protocol header' 1 10 ||
  { cat "$tmp/node.log"; fail "no log line for the connection without a header"; }

exec 3<>"/dev/tcp/127.0.0.1/$chat" || fail "connect"
printf 'PROXY TCP4 192.0.2.1 127.0.0.1 5555 80\r\nhi\n' >&3
IFS= read -r -t 5 hello <&3
IFS= read -r -t 5 answer <&3
exec 3<&- 3>&-
[[ $hello == "hello 192.0.2.1:5555 t1" ]] || fail "greeting '$hello', want 'hello 192.0.2.1:5555 t1'"
[[ $answer == failed* ]] || fail "a line with Redis down got '$answer', want 'failed ...'"
echo "ok: PROXY v1 header read ($hello), a connection without one closed, Redis down answered: $answer"
