#!/usr/bin/env bash
# Install lmcaps into ./.venv, with the Debian packages its libvirt driver needs.
#   tools/install.sh          library, CLI and the libvirt driver
#   tools/install.sh --test   also the test tools and the nova venv (.venv-nova)
set -euo pipefail
cd "$(dirname "$0")/.."
with_tests=0
[ "${1:-}" = "--test" ] && with_tests=1

apt_pkgs="libvirt-dev pkg-config gcc"
[ "$with_tests" = 1 ] && apt_pkgs="$apt_pkgs libvirt-daemon libvirt-daemon-driver-qemu qemu-system-x86 binutils util-linux postgresql openssl golang-go golang-github-vmware-govmomi-dev"
missing=""
for p in $apt_pkgs; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing="$missing $p"
done
if [ -n "$missing" ]; then
    if [ "$(id -u)" != 0 ]; then
        echo "install.sh: needs root to apt-get install:$missing" >&2
        exit 1
    fi
    echo "install.sh: apt-get install$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip setuptools wheel
extras="libvirt,postgresql,xenapi,vmware,hyperv,powervm"
[ "$with_tests" = 1 ] && extras="$extras,test"
.venv/bin/pip install -q -e ".[$extras]"

if [ "$with_tests" = 1 ]; then
    bash tools/setup-nova-venv.sh .venv-nova
fi
if [ "$with_tests" = 1 ]; then
    echo "install.sh: done (.venv with the test tools, .venv-nova)"
else
    echo "install.sh: done (.venv)"
fi
