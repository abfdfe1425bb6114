#!/usr/bin/env bash
# Run every lmcaps test suite and print one closing line "N passed, N failed".
#   unit        tests/unit        (.venv, stestr)
#   functional  tests/functional  (.venv, stestr; real libvirtd + QEMU, needs root)
#   nova        tests/nova        (.venv-nova with nova 34 from PyPI, stestr)
# after the gates: tox -e pep8 (flake8) and tox -e mypy (lmcaps/).
set -uo pipefail
cd "$(dirname "$0")/.."
# oslotest: capture logs per test (shown with failures) instead of printing
export OS_LOG_CAPTURE=${OS_LOG_CAPTURE:-1}
passed=0; failed=0; skipped=0; rc=0
log=$(mktemp)
failures=()  # "suite: test id" of every failed test, repeated at the end

tally() {  # suite-name exit-code
    local p f s
    p=$(grep -E '^ - Passed: ' "$log" | tail -1 | awk '{print $3}')
    f=$(grep -E '^ - Failed: ' "$log" | tail -1 | awk '{print $3}')
    s=$(grep -E '^ - Skipped: ' "$log" | tail -1 | awk '{print $3}')
    passed=$((passed + ${p:-0})); failed=$((failed + ${f:-0})); skipped=$((skipped + ${s:-0}))
    local t
    while read -r t; do
        failures+=("$1: $t")
    done < <(sed -nE 's/^\{[0-9]+\} ([^ ]+) \[[^]]*\] \.\.\. FAILED$/\1/p' "$log")
    if [ "$2" != 0 ]; then
        rc=1
        [ "${f:-0}" = 0 ] && failed=$((failed + 1))  # a suite that did not run counts
        echo "run-tests: suite $1 FAILED (exit $2)"
    fi
}

suite() {  # name command...
    local name=$1; shift
    echo "=== $name: $*"
    "$@" 2>&1 | tee "$log"
    tally "$name" "${PIPESTATUS[0]}"
}

gate() {  # name command...: a check that passes or fails as a whole
    local name=$1; shift
    echo "=== $name: $*"
    if ! "$@"; then
        rc=1; failed=$((failed + 1))
        echo "run-tests: gate $name FAILED"
        failures+=("gate $name")
    fi
}

gate pep8+mypy .venv/bin/tox -q -e pep8,mypy
suite unit .venv/bin/stestr --test-path=./tests/unit run
suite functional .venv/bin/stestr --test-path=./tests/functional run --concurrency=1
suite nova bash tools/run-nova-tests.sh
rm -f "$log"

if [ "${CI:-}" = true ] && [ "$skipped" != 0 ]; then
    echo "run-tests: $skipped test(s) skipped under CI=true: a missing backend is a failure"
    rc=1
fi
for t in "${failures[@]}"; do
    echo "run-tests: FAILED $t"
done
echo "$passed passed, $failed failed, $skipped skipped"
exit $rc
