#!/usr/bin/env bash
# A node that ignores SIGTERM is killed (SIGKILL) after --grace; scripts/cluster
# says so, exits 1, and leaves no process behind. A node that exits on its
# own is started again with --restart.
. "$(dirname "$0")/lib.sh"
log=$tmp/cluster.log
LUA=tests/cluster/stubborn_node.sh timeout -k 5 60 scripts/cluster -n 2 --grace 1 --restart \
  tests/cluster/stubborn_node.sh > "$log" 2>&1 &
cluster=$!
bg_pids+=("$cluster")
wait_for_count "$log" 'stubborn pid [0-9]+ up' 2 20 || { cat "$log"; fail "2 nodes did not start"; }
pids=$(grep -oE 'stubborn pid [0-9]+' "$log" | awk '{ print $3 }')
# --restart: kill one node from outside; it must come back
victim=$(head -n 1 <<< "$pids")
kill -KILL "$victim"
wait_for_count "$log" 'stubborn pid [0-9]+ up' 3 20 || { cat "$log"; fail "the killed node was not restarted"; }
grep -qE "exited on its own with status 137" "$log" || { cat "$log"; fail "no report of the node's exit"; }
pids=$(grep -oE 'stubborn pid [0-9]+' "$log" | awk '{ print $3 }')

kill -TERM "$cluster"
wait "$cluster"; rc=$?
[[ $rc -eq 1 ]] || { cat "$log"; fail "scripts/cluster exited $rc, want 1 (nodes had to be killed)"; }
[[ $(grep -c 'still running after 1s: SIGKILL' "$log") -eq 2 ]] || { cat "$log"; fail "want 2 SIGKILL reports"; }
for p in $pids; do
  ! kill -0 "$p" 2>/dev/null || fail "node process $p still running"
done
echo "ok: a node that ignores SIGTERM is killed after the grace time; --restart brings a dead node back"
