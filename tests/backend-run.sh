#!/bin/sh
# Run one test binary on one I/O backend: backend-run.sh BACKEND tests/unit/epoll/test-loop.epoll
# The binary is the test's name without its extension, in the build tree.
# A backend that cannot run here makes the binary exit 77 (skip) and say why.
backend=$1
test=$2
name=$(basename "$test")
bin=tests/unit/${name%.*}
[ -x "$bin" ] || { echo "backend-run: $bin not built" >&2; exit 99; }
KETTLE_IO=$backend
export KETTLE_IO
echo "# $bin on $backend"
exec "$bin"
