# Helpers shared by the packaging tests (sourced). Each test is a script that
# exits 0 (passed), 1 (failed) or 77 (skipped, after printing why); every
# process it starts is bounded by `timeout` and reaped, and its files live in
# a temporary folder removed on exit.
set -uo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
cd "$root"
tmp=$(mktemp -d "${TMPDIR:-/tmp}/iocore-pkg.XXXXXX")
bg_pids=()
cleanup() {
  local p
  for p in "${bg_pids[@]}"; do
    kill -TERM "$p" 2>/dev/null
  done
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

# The project's version, from the C header (the one place it is written).
header_version() { sed -n 's/^#define IOC_VERSION_STRING "\(.*\)"$/\1/p' src/include/iocore.h; }

# wait_for_line FILE REGEX SECONDS: the first line of FILE matching REGEX.
wait_for_line() {
  local i line
  for ((i = 0; i < $3 * 10; i++)); do
    line=$(grep -m1 -E "$2" "$1" 2>/dev/null) && { echo "$line"; return 0; }
    sleep 0.1
  done
  return 1
}

# echo_roundtrip PORT TEXT: sends TEXT to 127.0.0.1:PORT and checks that it
# comes back (bash's /dev/tcp; a 5 s bound on the read).
echo_roundtrip() {
  local got
  exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
  printf '%s\n' "$2" >&3
  IFS= read -r -t 5 got <&3
  exec 3<&- 3>&-
  [[ $got == "$2" ]]
}
