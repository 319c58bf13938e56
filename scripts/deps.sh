#!/bin/sh
# Install the Debian packages kettle needs to build, test and benchmark.
# Idempotent: does nothing when everything is already there. Needs root.
set -eu
PKGS="build-essential autoconf automake libtool pkg-config
liburing-dev libevent-dev libinih-dev libsystemd-dev libcmocka-dev
libseccomp-dev libedit-dev clang valgrind python3 redis-server redis-tools
systemd"
# operations: the scale-out test (haproxy), Prometheus and promtool (the
# metrics tests start a real prometheus), the Debian package build and its
# checks, groff for rendering the manual pages, curl for the README's scrape
PKGS="$PKGS haproxy prometheus dpkg-dev debhelper lintian git groff-base curl"
# the clients: kettle-bench reads saved runs (jansson); the tests render its
# SVG (rsvg-convert) and drive kettle-cli in tmux
PKGS="$PKGS libjansson-dev librsvg2-bin tmux"
# bench/run compares kettled with twemproxy (nutcracker) in front of redis-server
PKGS="$PKGS nutcracker"
missing=""
for p in $PKGS; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "deps: missing packages:$missing (run as root, or: sudo apt-get install$missing)" >&2
    exit 1
fi
echo "deps: installing$missing"
export DEBIAN_FRONTEND=noninteractive
apt-get update -q >/dev/null
# shellcheck disable=SC2086
apt-get install -y -q --no-install-recommends $missing >/dev/null
# The Debian packages start redis-server on 6379, HAProxy and Prometheus on
# 9090 where systemd runs; kettle's tests start their own.
if command -v systemctl >/dev/null 2>&1; then
    for unit in redis-server haproxy prometheus; do
        systemctl disable --now "$unit" >/dev/null 2>&1 || true
    done
fi
