#!/bin/sh
# Installs the Debian packages ferry builds, tests and benchmarks with,
# skipping those already present.  Needs root (or sudo) only when something
# is missing.
set -eu

PKGS="gcc make libc6-dev pkg-config
libjansson-dev libzstd-dev libssl-dev libxxhash-dev liburing-dev
libibverbs-dev librdmacm-dev libcriterion-dev
iproute2 procps util-linux jq fio iperf3
gnuplot-nox qemu-system-x86"

missing=""
for p in $PKGS; do
	if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
		missing="$missing $p"
	fi
done
[ -z "$missing" ] && exit 0

echo "deps: installing$missing"
if [ "$(id -u)" -eq 0 ]; then
	SUDO=""
elif command -v sudo >/dev/null 2>&1; then
	SUDO="sudo"
else
	echo "deps: missing packages:$missing; run this script as root" >&2
	exit 1
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
# shellcheck disable=SC2086
$SUDO apt-get install -y -q --no-install-recommends $missing
