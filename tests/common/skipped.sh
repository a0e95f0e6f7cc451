#!/usr/bin/env bash
# Prints how many tests skipped, and why, from the skip log the harness's skip() appends to
# (tests/common/mod.rs: one "<test binary>::<test><TAB><reason>" line per skip; a test that skips
# several cases has several lines and counts once). A missing log means nothing skipped.
set -euo pipefail
log=${1:?usage: skipped.sh SKIP_LOG}
n=0
if [ -s "$log" ]; then
    n=$(cut -f1 "$log" | sort -u | wc -l)
fi
if [ "$n" = 1 ]; then noun=test; else noun=tests; fi
if [ "$n" = 0 ]; then
    echo "0 tests skipped"
else
    echo "$n $noun skipped (under CI=true a skip is a failure):"
    sort -u "$log" | sed 's/\t/: /; s/^/  /'
fi
