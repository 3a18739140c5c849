#!/usr/bin/env bash
# scripts/cluster -n 4 starts four processes of examples/cluster/worker.lua
# on one port (reuseport = true); 200 connections over loopback are all
# served, every process serves at least one, and Ctrl-C (SIGINT to
# scripts/cluster) stops all four gracefully: exit 0, no process left.
. "$(dirname "$0")/lib.sh"
need perl
port=$(free_port) || fail "no free port"
log=$tmp/cluster.log
with_sigint timeout -k 5 120 scripts/cluster -n 4 --grace 20 examples/cluster/worker.lua "127.0.0.1:$port" \
  > "$log" 2>&1 &
cluster=$!
bg_pids+=("$cluster")
wait_for_count "$log" "listening on 127\.0\.0\.1:$port" 4 30 || { cat "$log"; fail "4 nodes did not start"; }
node_pids=$(grep -oE 'pid [0-9]+ listening' "$log" | awk '{ print $2 }' | sort -u)
[[ $(wc -w <<< "$node_pids") -eq 4 ]] || { cat "$log"; fail "want 4 node processes, got: $node_pids"; }

timeout -k 5 90 lua5.4 tests/cluster/clients.lua "127.0.0.1:$port" 200 20 > "$tmp/clients.log" 2>&1 ||
  { tail -n 20 "$tmp/clients.log"; fail "not every connection was served"; }
served=$(grep -oE '^reply node [0-9]+ pid [0-9]+' "$tmp/clients.log" | awk '{ print $5 }' | sort | uniq -c)
echo "connections per process (count pid):"; echo "$served"
for p in $node_pids; do
  grep -qE " $p\$" <<< "$served" || fail "process $p served no connection"
done

# Ctrl-C: SIGINT to the foreground process group (timeout made its own)
kill -INT -- "-$cluster"
wait "$cluster"; rc=$?
[[ $rc -eq 0 ]] || { cat "$log"; fail "scripts/cluster exited $rc after Ctrl-C"; }
grep -q '\[cluster\] stopped' "$log" || { cat "$log"; fail "no '[cluster] stopped' line"; }
total=$(grep -oE 'stopped after [0-9]+ connection' "$log" | awk '{ s += $3 } END { print s + 0 }')
[[ $total -eq 200 ]] || { cat "$log"; fail "the nodes report $total connections, want 200"; }
for p in $node_pids; do
  ! kill -0 "$p" 2>/dev/null || fail "node process $p still running after the stop"
done
echo "ok: 4 processes on port $port served 200 connections, each at least one; Ctrl-C stopped them all"
