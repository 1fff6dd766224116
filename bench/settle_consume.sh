#!/usr/bin/env bash
# How fast `ringpay settle` consumes the engine's events (issue 9, docs/backoffice.md):
# the engine (--cores 2) replicates a lifecycle load to rp_mock_kafka, then a fresh
# settle consumes the whole backlog; prints the events (payment.captured +
# payment.refunded) and settle's rate from its first counted event to its last, and its
# peak RSS. Usage: bench/settle_consume.sh [BUILD_DIR] [LOAD_SECONDS]
# PERF=FILE: settle runs under `perf record -g -o FILE` (then: perf report -i FILE).
set -euo pipefail
B=${1:-build}
SECS=${2:-10}
BIN=$B/ringpay
T=$(mktemp -d /tmp/settle-bench-XXXXXX)
PIDS=()
cleanup() { for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$T"; }
trap cleanup EXIT

mkfifo "$T/mock.in"
"$B/tests/kafka/rp_mock_kafka" <"$T/mock.in" >"$T/mock.out" 2>/dev/null &
PIDS+=($!)
exec 9>"$T/mock.in"
for _ in $(seq 50); do grep -q bootstrap "$T/mock.out" && break; sleep 0.1; done
BOOT=$(awk '/bootstrap/{print $2}' "$T/mock.out")

"$BIN" serve --cores 2 --auth off --access-log off --kafka-brokers "$BOOT" --data "$T/engine" \
    --listen 127.0.0.1:18190 2>"$T/engine.log" &
PIDS+=($!)
for _ in $(seq 100); do curl -sf 127.0.0.1:18190/healthz >/dev/null && break; sleep 0.1; done
"$BIN" load --target 127.0.0.1:18190 --scenario lifecycle --capture-pct 90 --void-pct 5 \
    --refund-pct 30 --get-pct 0 --balances-pct 0 --connections 32 --duration-s "$SECS" --json \
    >"$T/load.json"
sleep 3 # the engine's last events reach the cluster
count() { kcat -b "$BOOT" -C -t "$1" -o beginning -e -q -f 'x\n' 2>/dev/null | wc -l; }
N=$(($(count payment.captured) + $(count payment.refunded)))
echo "events in payment.captured + payment.refunded: $N"
# settle's own rate, not the engine's leftover writeback: the page cache is flushed first
# (the engine's checkpoints just wrote tens of MB that would otherwise compete with
# settle's durable commits on the same disk).
sync
sleep "${SETTLE_DELAY:-0}"

"$BIN" settle --kafka-brokers "$BOOT" --auth off --access-log off --data "$T/settle" \
    --listen 127.0.0.1:18191 2>"$T/settle.log" &
SP=$!
PIDS+=($SP)
if [ -n "${PERF:-}" ]; then
    perf record -e cpu-clock -F 2000 -g -o "$PERF" -p "$SP" 2>/dev/null &
    PP=$!
    PIDS+=($PP)
fi
counted() {
    { curl -sf 127.0.0.1:18191/metrics 2>/dev/null || true; } |
        awk '/^ringpay_settle_events_total\{outcome="(counted|adjusted|duplicate)"\}/{s+=$2} END{print s+0}'
}
first=""
while :; do
    c=$(counted)
    now=$(date +%s.%N)
    if [ -z "$first" ] && [ "${c:-0}" -gt 0 ]; then first=$now; c0=$c; fi
    [ "${c:-0}" -ge "$N" ] && break
    sleep 0.05
done
last=$(date +%s.%N)
if [ -n "${PERF:-}" ]; then kill -INT "$PP"; wait "$PP" || true; fi
rss=$(awk '/VmHWM/{print $2}' /proc/$SP/status)
batches=$(curl -sf 127.0.0.1:18191/metrics | awk '/^ringpay_settle_consume_batches_total/{print $2}')
applys=$(curl -sf 127.0.0.1:18191/metrics | awk '/^ringpay_settle_apply_seconds_total/{print $2}')
echo "time in settle_store_apply: $applys s"
echo "transactions: $batches (mean $((N / batches)) events each)"
awk -v n="$N" -v c0="$c0" -v a="$first" -v b="$last" -v rss="$rss" 'BEGIN {
    printf "settle consumed %d events in %.2f s after its first: %.0f events/s; peak RSS %.1f MiB\n",
        n - c0, b - a, (n - c0) / (b - a), rss / 1024 }'
