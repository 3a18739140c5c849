#!/usr/bin/env bash
# docs/scaling.md and docs/redis.md state settings of the example and of
# iocore.redis; each must be what the code says.
. "$(dirname "$0")/lib.sh"
doc=docs/scaling.md
grep -q 'inter 200ms fall 2 rise 2' "$doc" && grep -q 'inter 200ms fall 2 rise 2' examples/cluster/start ||
  fail "health check settings differ between $doc and examples/cluster/start"
grep -q 'retries 3' "$doc" && grep -q '^  retries 3' examples/cluster/start || fail "retries differ"
grep -q 'on-marked-down shutdown-sessions' examples/cluster/start || fail "on-marked-down missing"
grep -q 'connects 300 members' "$doc" && grep -q 'CLIENTS:-300' tests/cluster/cluster_chat_through_haproxy.sh ||
  fail "the member count differs between $doc and the test"
# iocore.redis defaults: "| `name` | value |" rows of docs/redis.md against DEFAULTS in redis.lua
for key in connect_timeout timeout write_hwm max_bulk max_messages; do
  code=$(sed -n "s/^  $key = \([^,]*\),.*/\1/p" lua/iocore/redis.lua)
  [[ -n $code ]] || fail "no default for $key in lua/iocore/redis.lua"
  val=$(lua5.4 -e "io.write(string.format('%d', $code))")
  row=$(grep -E "^\| \`$key\` \|" docs/redis.md) || fail "docs/redis.md has no row for $key"
  [[ $row == *"| $val |"* ]] || fail "docs/redis.md says '$row', the code $key = $val"
done
echo "ok: docs/scaling.md and docs/redis.md agree with the code"
