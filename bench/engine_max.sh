#!/usr/bin/env bash
# Usage: bench/engine_max.sh [BUILD_DIR] [SECONDS] (the rate settle must keep up with, docs/benchmarks.md section 9)
# The engine's maximum durable authorize rate: serve --cores 2 --auth off, closed loop
# with 32 in flight per connection on 64 connections for SECS seconds.
set -euo pipefail
B=${1:-build}; SECS=${2:-10}
T=$(mktemp -d /tmp/engine-max-XXXXXX)
"$B/ringpay" serve --cores 2 --auth off --access-log off --data "$T/engine" --listen 127.0.0.1:18290 2>"$T/engine.log" &
P=$!
trap 'kill $P 2>/dev/null; wait $P 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 100); do curl -sf 127.0.0.1:18290/healthz >/dev/null && break; sleep 0.1; done
"$B/ringpay" load --target 127.0.0.1:18290 --scenario authorize --pipeline 32 --connections 64 --duration-s "$SECS" --json > "$T/load.json"
python3 -c "import json,sys; d=json.load(open('$T/load.json')); print({k:v for k,v in d.items() if not isinstance(v,(dict,list))})"
