#!/usr/bin/env bash
# Runs every Google Benchmark program of bench/ (build/bench/*_bench: the HTTP parser,
# the JSON codec and engine_apply, signing, the group commit; issue 10's log append joins
# through rp_microbench() in bench/CMakeLists.txt) and writes one JSON file per program.
#
# usage: bench/microbench.sh BUILD_DIR OUT_DIR [MIN_TIME_S]
#        (or: cmake --build build --target microbench  ->  build/microbench/*.json)
# MIN_TIME_S: Google Benchmark's --benchmark_min_time per benchmark (default 0.5).
# The group-commit benchmark syncs a real directory under $TMPDIR (default /tmp).
set -euo pipefail
build=${1:?usage: bench/microbench.sh BUILD_DIR OUT_DIR [MIN_TIME_S]}
out=${2:?usage: bench/microbench.sh BUILD_DIR OUT_DIR [MIN_TIME_S]}
min=${3:-0.5}
mkdir -p "$out"
found=0
for exe in "$build"/bench/*_bench; do
    [ -x "$exe" ] || continue
    found=1
    name=$(basename "$exe")
    echo "== $name" >&2
    "$exe" --benchmark_min_time="$min" --benchmark_out="$out/$name.json" \
        --benchmark_out_format=json >&2
done
[ $found = 1 ] || { echo "microbench: no *_bench programs in $build/bench (build first)" >&2; exit 1; }
