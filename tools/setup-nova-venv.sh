#!/usr/bin/env bash
# Create (or bring up to date) the virtualenv that runs lmcaps inside nova
# and the tests under tests/nova.  Idempotent: a second run only checks.
#
# Usage: tools/setup-nova-venv.sh [VENV]   (default: .venv-nova, relative to
#        the repository root)
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${1:-.venv-nova}
case "$VENV" in /*) ;; *) VENV="$ROOT/$VENV" ;; esac
PYTHON=${PYTHON:-python3}

NOVA_VERSION=34.0.0
PLACEMENT_VERSION=16.0.0
# OpenStack's upper-constraints pin SQLAlchemy 2.0.x; with 2.1 nova's
# DB-backed tests fail on a deprecation turned into an error.
REQS=(
    # [vmware]: oslo.vmware, for nova's VMware driver and its tests
    "nova[vmware]==${NOVA_VERSION}"
    "SQLAlchemy<2.1"
    ddt requests-mock oslotest stestr osprofiler testresources
    testscenarios testtools wsgi-intercept hypothesis
    # nova's functional tests (tests/nova/test_api_e2e.py) run placement
    # in-process through its fixture
    "openstack-placement==${PLACEMENT_VERSION}"
    # lmcaps[osc]: the OpenStackClient plugin and its openstacksdk calls
    # (tests/nova/test_osc.py runs the openstack shell in-process)
    "python-openstackclient>=7.0" "osc-lib>=3.0" "openstacksdk>=4.0"
    "os-traits>=3.0"
)

if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -m venv "$VENV"
fi
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check)
# This machine's pip config names local indexes that may lack a package;
# pip warns once per package about each: keep the rest of stderr.
quiet_pip() {
    "${PIP[@]}" "$@" 2> >(grep -v 'is ignored: it is neither a file' >&2)
}

have_nova() {
    "$VENV/bin/python" - "$NOVA_VERSION" "$PLACEMENT_VERSION" <<'EOF'
import sys
from importlib import metadata
try:
    ok = metadata.version('nova') == sys.argv[1]
    ok = ok and metadata.version('openstack-placement') == sys.argv[2]
    import placement.tests.functional.fixtures.placement  # noqa
    import sqlalchemy, stestr, ddt, oslotest, testscenarios  # noqa
    import wsgi_intercept, hypothesis, requests_mock  # noqa
    import osprofiler, testresources  # noqa
    import oslo_vmware  # noqa
    import placement, openstackclient, osc_lib, openstack  # noqa
    major_minor = tuple(int(p) for p in sqlalchemy.__version__.split('.')[:2])
    ok = ok and major_minor < (2, 1)
except Exception:
    ok = False
sys.exit(0 if ok else 1)
EOF
}

if ! have_nova; then
    quiet_pip install --quiet "${REQS[@]}"
fi

# nova's functional API fixture (OSAPIFixture) looks for etc/nova/api-paste.ini
# under site-packages; pip puts nova's etc/ under the venv.
SITE=$("$VENV/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
if [ ! -e "$SITE/etc/nova/api-paste.ini" ]; then
    mkdir -p "$SITE/etc"
    ln -sfn "$VENV/etc/nova" "$SITE/etc/nova"
fi

# lmcaps itself, editable, so that its entry points (lmcaps.drivers,
# lmcaps.checks, nova.api.extra_spec_validators ...) are those of the tree.
quiet_pip install --quiet --no-deps -e "$ROOT"

"$VENV/bin/python" -c 'import nova, lmcaps.nova; print("nova", nova.__file__)'
