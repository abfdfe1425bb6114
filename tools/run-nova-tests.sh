#!/usr/bin/env bash
# Run tests/nova (lmcaps inside nova 34) with the nova venv and stestr.
# Usage: tools/run-nova-tests.sh [VENV] [-- stestr run args]
#   VENV defaults to .venv-nova; it is created by tools/setup-nova-venv.sh
#   when missing.  Exits non-zero when any test fails.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=.venv-nova
if [ $# -gt 0 ] && [ "$1" != "--" ]; then
    VENV=$1
    shift
fi
[ "${1:-}" = "--" ] && shift
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac

if [ ! -x "$VENV/bin/stestr" ]; then
    "$ROOT/tools/setup-nova-venv.sh" "$VENV"
fi

cd "$ROOT"
start=$(date +%s)
rc=0
"$VENV/bin/stestr" --test-path=./tests/nova --top-dir=./ run "$@" || rc=$?
echo "tests/nova wall time: $(( $(date +%s) - start )) s (exit $rc)"
exit $rc
