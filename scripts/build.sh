#!/bin/sh
# Build kettle out of tree: scripts/build.sh BUILDDIR [configure options...]
# Installs the Debian packages it needs first (scripts/deps.sh).
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
builddir=${1:-"$top/build"}
[ $# -gt 0 ] && shift
sh "$top/scripts/deps.sh"
cd "$top"
if [ ! -x configure ] || [ configure.ac -nt configure ] || [ Makefile.am -nt Makefile.in ]; then
    autoreconf -fi >/dev/null 2>&1 || autoreconf -fi
fi
mkdir -p "$builddir"
cd "$builddir"
if [ ! -f Makefile ] || [ "$top/configure" -nt config.status ]; then
    "$top/configure" --enable-werror "$@" >configure.out || { cat configure.out; exit 1; }
fi
make -j"$(nproc)" >make.out 2>&1 || { tail -n 60 make.out; exit 1; }
echo "build: $builddir"
