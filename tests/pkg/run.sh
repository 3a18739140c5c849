#!/usr/bin/env bash
# The packaging suite: runs tests/pkg/*.sh (or those named), each bounded in
# time, and prints "ok/FAIL/SKIP name" lines and one
#   RESULT pkg: P passed, F failed, S skipped
# Environment: PKG_TEST_TIMEOUT (seconds per test, default 600).
cd "$(dirname "$0")/../.." || exit 1
names=("$@")
if [[ ${#names[@]} -eq 0 ]]; then
  for f in tests/pkg/*.sh; do
    case $(basename "$f") in lib.sh|run.sh) continue ;; esac
    names+=("$(basename "$f" .sh)")
  done
fi
passed=0 failed=0 skipped=0
for n in "${names[@]}"; do
  echo "--- $n"
  timeout -k 10 "${PKG_TEST_TIMEOUT:-600}" bash "tests/pkg/$n.sh" </dev/null
  rc=$?
  case $rc in
    0) echo "ok $n"; passed=$((passed + 1)) ;;
    77) echo "SKIP $n"; skipped=$((skipped + 1)) ;;
    124|137) echo "FAIL $n (timed out)"; failed=$((failed + 1)) ;;
    *) echo "FAIL $n (exit $rc)"; failed=$((failed + 1)) ;;
  esac
done
echo "RESULT pkg: $passed passed, $failed failed, $skipped skipped"
[[ $failed -eq 0 ]]
