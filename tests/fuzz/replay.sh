#!/bin/sh
# Replay the RESP fuzzing seed corpora through both targets (make check).
set -e
src=${KETTLE_SRCDIR:-$(dirname "$0")/../..}
for t in request reply; do
    n=$(ls "$src/tests/fuzz/corpus/$t" | wc -l)
    [ "$n" -gt 0 ] || { echo "empty corpus: $t"; exit 1; }
    ./tests/fuzz/fuzz-resp-$t-replay "$src/tests/fuzz/corpus/$t"
    echo "replayed $n inputs through fuzz-resp-$t"
done
