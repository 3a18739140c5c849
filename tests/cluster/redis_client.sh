#!/usr/bin/env bash
# iocore.redis (lua/iocore/redis.lua) against a real redis-server on a
# loopback port: tests/cluster/test_redis.lua (luaunit; its tests are
# counted one by one). Any redis-server left behind is killed at exit.
. "$(dirname "$0")/lib.sh"
need redis-server
need redis-cli
cleanup_redis() {
  local f
  for f in "$tmp"/*.pid; do [[ -f $f ]] && kill -KILL "$(cat "$f")" 2>/dev/null; done
  cleanup
}
trap cleanup_redis EXIT
cd tests/cluster || exit 1
CLUSTER_TMP=$tmp timeout -k 5 240 lua5.4 test_redis.lua "$@"
