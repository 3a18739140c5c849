#!/usr/bin/env bash
# The cluster suite: runs tests/cluster/*.sh (or those named), each bounded in
# time, and prints "ok/FAIL/SKIP name" lines and one
#   RESULT cluster: P passed, F failed, S skipped
# A script that runs several tests (luaunit) prints "TESTS passed=P failed=F"
# and is counted as those P + F tests.
# Environment: CLUSTER_TEST_TIMEOUT (seconds per test, default 300).
cd "$(dirname "$0")/../.." || exit 1
names=("$@")
if [[ ${#names[@]} -eq 0 ]]; then
  for f in tests/cluster/*.sh; do
    case $(basename "$f") in lib.sh|run.sh|stubborn_node.sh) continue ;; esac
    names+=("$(basename "$f" .sh)")
  done
fi
passed=0 failed=0 skipped=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT
for n in "${names[@]}"; do
  echo "--- $n"
  timeout -k 10 "${CLUSTER_TEST_TIMEOUT:-300}" bash "tests/cluster/$n.sh" </dev/null | tee "$log"
  rc=${PIPESTATUS[0]}
  counts=$(grep -oE '^TESTS passed=[0-9]+ failed=[0-9]+' "$log" | tail -n 1)
  if [[ -n $counts && $rc -ne 77 ]]; then
    p=${counts#TESTS passed=}; p=${p%% *}; f=${counts##*failed=}
    passed=$((passed + p)) failed=$((failed + f))
    grep -E '^    Test.* \.\.\. (FAIL|ERROR)' "$log" | sed -E 's/^    (Test[^ ]*) .*/FAIL \1/'
    if [[ $rc -ne 0 && $f -eq 0 ]]; then echo "FAIL $n (exit $rc)"; failed=$((failed + 1)); fi
    continue
  fi
  case $rc in
    0) echo "ok $n"; passed=$((passed + 1)) ;;
    77) echo "SKIP $n"; skipped=$((skipped + 1)) ;;
    124|137) echo "FAIL $n (timed out)"; failed=$((failed + 1)) ;;
    *) echo "FAIL $n (exit $rc)"; failed=$((failed + 1)) ;;
  esac
done
echo "RESULT cluster: $passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
