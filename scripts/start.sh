#!/bin/sh
# Build everything and run kettled in the foreground on 127.0.0.1:7379.
# Ctrl-C stops it cleanly. Extra arguments go to kettled.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
sh "$top/scripts/build.sh" "$top/build"
exec "$top/build/kettled" "$@"
