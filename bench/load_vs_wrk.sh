#!/usr/bin/env bash
# The load generator checked against wrk on GET /healthz (the suite's "tool check",
# alone): an engine on 1 core (CPU 0), `wrk -t1 -c64` and `ringpay load --scenario
# healthz --connections 64 --threads 1`, each pinned to CPU 1, alternating ROUNDS times,
# keep-alive and pipelined x16; medians, the ratio load / wrk, and each tool's count
# checked against the engine's own count of answers. Prints a markdown table.
#
# usage: bench/load_vs_wrk.sh [build dir]   (env: ROUNDS=5 DURATION=5)
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/suite.py --tool-check --mode full --build "${1:-build}" \
    --tool-rounds "${ROUNDS:-5}" --tool-duration "${DURATION:-5}"
