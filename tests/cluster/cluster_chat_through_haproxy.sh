#!/usr/bin/env bash
# The cluster example end to end (examples/cluster/start): HAProxy in front
# of 3 chat nodes relaying through Redis pub/sub, all on loopback ports it
# picks. CLIENTS (default 300) members through HAProxy send lines in rounds;
# one node is killed (SIGKILL) mid-run, then Redis is killed and started
# again (REDIS_CYCLES times, default 1; LINES lines per member per round,
# default 1: scripts/stress raises all three). tests/cluster/chat_clients.lua checks delivery (every "ok" line to
# every member exactly once, in per-sender order; nothing lost silently),
# the failover, and the peers the nodes saw; its "figure" lines are the
# run's numbers. Every process is bounded by `timeout` and reaped.
. "$(dirname "$0")/lib.sh"
need haproxy
need redis-server
need redis-cli
dir=$tmp/cluster
redis2_pid=$tmp/redis2.pid
cleanup_all() {
  [[ -f $redis2_pid ]] && kill -KILL "$(cat "$redis2_pid")" 2>/dev/null
  cleanup
}
trap cleanup_all EXIT

timeout -k 10 300 examples/cluster/start --nodes 3 --dir "$dir" > "$tmp/start.log" 2>&1 &
start=$!
bg_pids+=("$start")
for ((t = 0; t < 300; t++)); do
  grep -q '^ready' "$dir/state" 2>/dev/null && break
  kill -0 "$start" 2>/dev/null || break
  sleep 0.1
done
grep -q '^ready' "$dir/state" 2>/dev/null || { cat "$tmp/start.log"; fail "the cluster did not start"; }
cat "$dir/state"
read -r _ redis_pid redis_port < <(grep '^redis ' "$dir/state")
read -r _ _ victim _ < <(grep '^node n2 ' "$dir/state")
read -r _ _ port < <(grep '^haproxy ' "$dir/state")
all_pids=$(awk '/^(redis|haproxy) / { print $2 } /^node / { print $3 }' "$dir/state")
check_peers=0
grep -q 'proxy protocol on' "$dir/cluster.log" && check_peers=1
grep -m1 -oE 'proxy protocol on[^)]*' "$dir/cluster.log" | sed 's/^/nodes: /'

export ADDR=127.0.0.1:$port CLIENTS=${CLIENTS:-300} CHECK_PEERS=$check_peers
export KILL_NODE_CMD="kill -KILL $victim"
# (the Redis to kill: the example's first, then the one the last restart started)
export REDIS_KILL_CMD="p=\$(cat '$redis2_pid' 2>/dev/null || echo $redis_pid); kill -KILL \$p; \
while kill -0 \$p 2>/dev/null; do sleep 0.05; done"
export REDIS_START_CMD="env -u LD_PRELOAD timeout -k 5 300 redis-server --port $redis_port --bind 127.0.0.1 --save '' \
--appendonly no --dir '$tmp' --pidfile '$redis2_pid' > '$tmp/redis2.log' 2>&1 &"
timeout -k 5 "${CLUSTER_CLIENTS_TIMEOUT:-400}" lua5.4 tests/cluster/chat_clients.lua > "$tmp/clients.log" 2>&1
rc=$?
grep -E '^(figure|check|skip|handler error)' "$tmp/clients.log"
if [[ $rc -ne 0 ]]; then
  tail -n 30 "$tmp/clients.log"
  grep -vE '^\[redis\]' "$dir/cluster.log" | tail -n 40
fi

kill -TERM "$start"
wait "$start"
for p in $all_pids; do
  ! kill -0 "$p" 2>/dev/null || fail "process $p of the cluster still running after the stop"
done
[[ $rc -eq 0 ]] || fail "chat_clients.lua found problems (exit $rc)"
down=$(grep -m1 -oE 'Server nodes/n2 is DOWN[^,]*' "$dir/cluster.log") || fail "HAProxy never marked n2 down"
echo "haproxy: $down"
echo "ok: cluster of 3 nodes behind HAProxy: delivery, failover and Redis restart checked"
