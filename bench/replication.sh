#!/usr/bin/env bash
# Replication to Kafka (issue 8), three measurements in one run (docs/benchmarks.md):
#
#  1. Durable authorize throughput with replication on (the embedded cluster, the
#     default) versus --replication off, same load generator (`ringpay load`, closed
#     loop, CONNS keep-alive connections), both engines side by side, alternating
#     ROUNDS short runs (the order flips every round); medians, the per-round ratios and
#     their median, and each engine's CPU time per request (from /proc, the embedded
#     cluster's threads included), which other tenants of the machine disturb less.
#  2. Replication lag (commit to delivery report) p50/p99 at half of the replicating
#     engine's median maximum, open loop, from the engine's lag histogram (delta over
#     the run; quantiles interpolated inside a bucket, like Prometheus).
#  3. Drain after an outage: a third engine replicates to rp_mock_kafka (librdkafka's
#     mock cluster in its own process, tests/kafka/mock_kafka.c); every broker goes down,
#     an open-loop load at OUTAGE_RATE (default: half the maximum) runs for OUTAGE_S
#     (60) seconds, the brokers come back and the load stops: the drain rate is the
#     backlog at that moment over the time until it is empty (polled every 50 ms), set
#     against the rate events were produced during the outage.
#
# usage: bench/replication.sh [build dir]   (env: ON_FLAGS="--kafka-conf linger.ms=50" CONNS=64 DURATION=6 ROUNDS=10
#        CORES=$(nproc) OUTAGE_S=60 OUTAGE_RATE=<half> SKIP_DRAIN=)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
CONNS=${CONNS:-64}
DURATION=${DURATION:-6}
ROUNDS=${ROUNDS:-10}
CORES=${CORES:-$(nproc)}
OUTAGE_S=${OUTAGE_S:-60}
ON_PORT=18380
OFF_PORT=18381
EXT_PORT=18382
tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT

serve() { # port data [flags...]
    local port=$1 data=$2
    shift 2
    "$BUILD/ringpay" serve --listen 127.0.0.1:"$port" --cores "$CORES" --data "$tmp/$data" \
        --access-log off --log-level warn --auth off "$@" 2>>"$tmp/$data.log" &
}
ready() { # port
    for _ in $(seq 100); do
        curl -sf "http://127.0.0.1:$1/readyz" >/dev/null && return 0
        sleep 0.1
    done
    echo "bench: engine on $1 did not come up" >&2
    cat "$tmp"/*.log >&2
    exit 1
}
load() { # port [extra args] -> JSON line
    local port=$1
    shift
    "$BUILD/ringpay" load --target 127.0.0.1:"$port" --scenario authorize \
        --connections "$CONNS" --duration-s "$DURATION" --json "$@"
}
metric() { # port name -> sum over shards
    curl -s "http://127.0.0.1:$1/metrics" | awk -v n="$2" '$1 ~ "^"n"({|$)" { s += $2 } END { printf "%d\n", s }'
}
median() { # file expr
    python3 - "$1" "$2" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
print(statistics.median(eval(sys.argv[2], {}, {"d": d}) for d in rows))
PY
}

# ---- 1. throughput, on versus off ----------------------------------------------------
serve $ON_PORT on ${ON_FLAGS:-}
on_pid=$!
serve $OFF_PORT off --replication off
off_pid=$!
ready $ON_PORT
ready $OFF_PORT
cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$1/stat"; }
measure() { # port pid name: one run, its JSON line and the engine's CPU ticks
    local c0 c1
    c0=$(cpu_ticks "$2")
    load "$1" >>"$tmp/$3.json"
    c1=$(cpu_ticks "$2")
    echo $((c1 - c0)) >>"$tmp/$3.cpu"
}
load0=$(cut -d' ' -f1 /proc/loadavg)
for r in $(seq "$ROUNDS"); do
    if [ $((r % 2)) -eq 1 ]; then
        measure $ON_PORT "$on_pid" on
        measure $OFF_PORT "$off_pid" off
    else
        measure $OFF_PORT "$off_pid" off
        measure $ON_PORT "$on_pid" on
    fi
done
load1=$(cut -d' ' -f1 /proc/loadavg)
on_rps=$(median "$tmp/on.json" 'd["rps"]')
off_rps=$(median "$tmp/off.json" 'd["rps"]')
summary=$(python3 - "$tmp" "$(getconf CLK_TCK)" <<'PY'
import json, statistics, sys
tmp, hz = sys.argv[1], int(sys.argv[2])
def rows(n):
    return [json.loads(l) for l in open(f"{tmp}/{n}.json")]
def cpu_us(n):
    r = rows(n)
    ticks = [int(l) for l in open(f"{tmp}/{n}.cpu")]
    return [t / hz * 1e6 / d["ok"] for t, d in zip(ticks, r)]
on, off = rows("on"), rows("off")
ratios = [a["rps"] / b["rps"] for a, b in zip(on, off)]
cu_on, cu_off = cpu_us("on"), cpu_us("off")
print("on / off requests/s: median of the per-round ratios %.2f (ratio of the medians %.2f);"
      " per round: %s" % (statistics.median(ratios),
      statistics.median(d["rps"] for d in on) / statistics.median(d["rps"] for d in off),
      " ".join("%.2f" % x for x in ratios)))
print("engine CPU per request (median): on %.0f µs, off %.0f µs (+%.0f µs, %.2f×)"
      % (statistics.median(cu_on), statistics.median(cu_off),
         statistics.median(cu_on) - statistics.median(cu_off),
         statistics.median(cu_on) / statistics.median(cu_off)))
PY
)
echo "cores=$CORES connections=$CONNS duration=${DURATION}s rounds=$ROUNDS (order flips every round);" \
    "load average $load0 before, $load1 after"
echo
echo "| engine | requests/s (median) | p50 µs | p99 µs |"
echo "|---|---:|---:|---:|"
echo "| replication on (embedded cluster) | $(printf %.0f "$on_rps") | $(median "$tmp/on.json" 'd["latency_us"]["p50"]') | $(median "$tmp/on.json" 'd["latency_us"]["p99"]') |"
echo "| --replication off | $(printf %.0f "$off_rps") | $(median "$tmp/off.json" 'd["latency_us"]["p50"]') | $(median "$tmp/off.json" 'd["latency_us"]["p99"]') |"
echo
echo "$summary"
kill "$off_pid" # the engine without replication is not needed any more

# ---- 2. replication lag at half the maximum ------------------------------------------
half=$(python3 -c "print(int($on_rps / 2))")
hist() { curl -s "http://127.0.0.1:$ON_PORT/metrics" | awk '/^ringpay_replication_lag_seconds_bucket/ {
    match($0, /le="[^"]*"/); le = substr($0, RSTART + 4, RLENGTH - 5); s[le] += $2 }
    END { for (k in s) print k, s[k] }'; }
hist >"$tmp/h0"
open=$(load $ON_PORT --rate "$half")
hist >"$tmp/h1"
lag=$(python3 - "$tmp/h0" "$tmp/h1" <<'PY'
import sys
def read(f):
    return {k: float(v) for k, v in (l.split() for l in open(f))}
a, b = read(sys.argv[1]), read(sys.argv[2])
les = sorted((float("inf") if k == "+Inf" else float(k), b[k] - a.get(k, 0)) for k in b)
total = les[-1][1]
def q(p):
    want, prev_le, prev_c = p * total, 0.0, 0.0
    for le, c in les:
        if c >= want:
            if le == float("inf"):
                return prev_le
            return prev_le + (le - prev_le) * (want - prev_c) / max(c - prev_c, 1e-9)
        prev_le, prev_c = le, c
    return prev_le
print("%d events; p50 %.1f ms, p99 %.1f ms" % (total, q(0.5) * 1e3, q(0.99) * 1e3))
PY
)
p50=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["latency_us"]["p50"])' "$open")
p99=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["latency_us"]["p99"])' "$open")
echo
echo "open loop at half the maximum ($half/s), replication on: answers p50 $p50 µs, p99 $p99 µs;" \
    "replication lag (commit to delivery report): $lag"

# ---- 3. drain after an outage -------------------------------------------------------
[ -n "${SKIP_DRAIN:-}" ] && exit 0
rate=${OUTAGE_RATE:-$half}
coproc MOCK { "$BUILD/tests/kafka/rp_mock_kafka" 3; }
read -r -u "${MOCK[0]}" _ boot
cmd() { echo "$1" >&"${MOCK[1]}"; read -r -u "${MOCK[0]}" reply; [ "$reply" = ok ] || { echo "mock: $1: $reply" >&2; exit 1; }; }
serve $EXT_PORT ext --kafka-brokers "$boot"
ready $EXT_PORT
load $EXT_PORT --duration-s 3 --rate "$rate" >/dev/null # warm up: topics, connections
seq0=$(metric $EXT_PORT ringpay_replication_event_seq)
cmd down
out=$(load $EXT_PORT --duration-s "$OUTAGE_S" --rate "$rate")
seq1=$(metric $EXT_PORT ringpay_replication_event_seq)
backlog=$(metric $EXT_PORT ringpay_replication_backlog_events)
bytes=$(metric $EXT_PORT ringpay_replication_backlog_bytes)
del0=$(metric $EXT_PORT ringpay_replication_delivered_total)
t0=$(date +%s.%N)
cmd up
first=""
start=$SECONDS
while :; do
    b=$(metric $EXT_PORT ringpay_replication_backlog_events)
    now=$(date +%s.%N)
    [ -z "$first" ] && [ "$(metric $EXT_PORT ringpay_replication_delivered_total)" -gt "$del0" ] && first=$now
    [ "$b" -eq 0 ] && break
    if [ $((SECONDS - start)) -gt 600 ]; then
        echo "bench: backlog still $b after 600 s" >&2
        exit 1
    fi
    sleep 0.02
done
t1=$(date +%s.%N)
python3 - "$seq0" "$seq1" "$backlog" "$bytes" "$t0" "${first:-$t0}" "$t1" "$OUTAGE_S" "$out" <<'PY'
import json, sys
seq0, seq1, backlog, nbytes = (int(x) for x in sys.argv[1:5])
t0, first, t1, outage = (float(x) for x in sys.argv[5:9])
out = json.loads(sys.argv[9])
produced = (seq1 - seq0) / outage
drain = backlog / (t1 - t0)
drain_first = backlog / max(t1 - first, 1e-3)
print()
print("outage of %d s at %d requests/s offered (%d answered 2xx, p99 %d µs): %d events produced,"
      " %.0f events/s; backlog %d events, %.1f MiB" % (outage, out["rate"] if "rate" in out else 0,
      out["ok"], out["latency_us"]["p99"], seq1 - seq0, produced, backlog, nbytes / 2**20))
print("drained in %.2f s after the brokers returned (first delivery after %.2f s): %.0f events/s,"
      " %.1f× the production rate (%.0f events/s, %.1f× counted from the first delivery)"
      % (t1 - t0, first - t0, drain, drain / produced, drain_first, drain_first / produced))
PY
