#!/bin/sh
# Build everything with ASan+UBSan and run the whole test suite (make check):
# unit tests (the reactor suite once per I/O backend), fuzz corpus replay,
# integration tests with real processes. Ends with "N passed, N failed".
set -u
top=$(cd "$(dirname "$0")/.." && pwd)
builddir="$top/build-check"
sh "$top/scripts/build.sh" "$builddir" --enable-sanitizers || exit 1
cd "$builddir"
jobs=${KETTLE_TEST_JOBS:-2}
make -j"$jobs" check >check.out 2>&1
status=$?
grep -E '^(PASS|FAIL|SKIP|XFAIL|XPASS|ERROR):' check.out
if [ $status -ne 0 ]; then
    for log in $(grep -lE '^:test-result: (FAIL|ERROR|XPASS)' $(find . -name '*.trs') 2>/dev/null); do
        echo "==== ${log%.trs}.log"
        tail -n 80 "${log%.trs}.log"
    done
    grep -E 'error|Error' check.out | head -n 40
fi
pass=$(grep -cE '^(PASS|XFAIL):' check.out)
fail=$(grep -cE '^(FAIL|XPASS|ERROR):' check.out)
skip=$(grep -cE '^SKIP:' check.out)
echo "$pass passed, $fail failed, $skip skipped"
[ $status -eq 0 ] && [ "$fail" -eq 0 ] && [ "$pass" -gt 0 ]
