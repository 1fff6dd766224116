#!/usr/bin/env bash
# The benchmark suite (issue 11): bench/suite.py does the work; see its header and
# docs/benchmarks.md section 5.
#   bench/suite.sh [--mode quick|full|smoke] [--out DIR] [--no-docs] [--render DIR]
# quick (default): a few minutes; full: under ~30 minutes (10 M payments pre-filled).
# Needs a build (./dev.sh build) and the packages dev.sh installs (./dev.sh bench does both).
set -euo pipefail
cd "$(dirname "$0")/.."
exec python3 bench/suite.py "$@"
