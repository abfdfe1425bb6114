#!/usr/bin/env bash
# Run the functional suite (or a part of it) N times in a row, as CI runs it
# (CI=true, one test at a time), and print "RUNS passed in a row of N".
# Usage: tools/repeat-functional.sh N [stestr filter regex]
#   e.g. tools/repeat-functional.sh 20 tests.functional.libvirt
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:?how many runs}
shift
export CI=${CI:-true} OS_LOG_CAPTURE=${OS_LOG_CAPTURE:-1}
ok=0
for i in $(seq 1 "$runs"); do
    start=$(date +%s)
    if .venv/bin/stestr --test-path=./tests/functional run --concurrency=1 \
            "$@" > /tmp/lmcaps-repeat-$i.log 2>&1; then
        ok=$((ok + 1))
        echo "run $i: passed ($(grep -E '^ - Passed: ' /tmp/lmcaps-repeat-$i.log | awk '{print $3}') tests, $(( $(date +%s) - start )) s)"
        rm -f /tmp/lmcaps-repeat-$i.log
    else
        echo "run $i: FAILED (log: /tmp/lmcaps-repeat-$i.log)"
        sed -nE 's/^\{[0-9]+\} ([^ ]+) \[[^]]*\] \.\.\. FAILED$/  \1/p' \
            /tmp/lmcaps-repeat-$i.log
        break
    fi
done
echo "$ok passed in a row of $runs"
[ "$ok" = "$runs" ]
