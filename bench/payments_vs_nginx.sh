#!/usr/bin/env bash
# Durable authorizations over HTTP versus nginx answering a fixed body, same load
# generator (`ringpay load`, the same signed POST /v1/payments/authorize bytes, 64
# keep-alive connections, closed loop), in one run, alternating ROUNDS times; ringpay
# three times: as deployed (requests signed and verified, access log on, to a file),
# with --auth off, and with --access-log off. Every server gets signed requests, so the
# load generator's HMAC costs the same in every row. Then, in the same
# run: one durable LMDB commit (store_bench BM_DurableCommit), and an open-loop run at
# half of ringpay's measured maximum, whose p99 is compared with 3 commits.
#
# usage: bench/payments_vs_nginx.sh [build dir]   (env: CONNS=64 DURATION=10 ROUNDS=3
#        THREADS=1 CORES=$(nproc) PIPELINE=1)
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
CONNS=${CONNS:-64}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-1}
PIPELINE=${PIPELINE:-1}
CORES=${CORES:-$(nproc)}
RP_PORT=18280
NG_PORT=18281
NOLOG_PORT=18282
NOAUTH_PORT=18283
. bench/lib.sh
start_nginx $NG_PORT
start_ringpay ringpay $RP_PORT
start_ringpay nolog $NOLOG_PORT --access-log off
start_ringpay noauth $NOAUTH_PORT --auth off
wait_up http://127.0.0.1:$NG_PORT/ http://127.0.0.1:$RP_PORT/readyz \
    http://127.0.0.1:$NOLOG_PORT/readyz http://127.0.0.1:$NOAUTH_PORT/readyz

load() { # port keys [extra args] -> JSON line
    local port=$1 keys=$2
    shift 2
    "$BUILD/ringpay" load --target 127.0.0.1:"$port" --scenario authorize --keys "$keys" \
        --connections "$CONNS" --threads "$THREADS" --pipeline "$PIPELINE" \
        --duration-s "$DURATION" --json "$@"
}
field() { python3 -c 'import json,sys; d=json.loads(sys.argv[1]); print(eval(sys.argv[2]))' "$@"; }

for r in $(seq "$ROUNDS"); do
    load $NG_PORT "$tmp/ringpay.keys" >>"$tmp/nginx.json"
    load $RP_PORT "$tmp/ringpay.keys" >>"$tmp/ringpay.json"
    load $NOAUTH_PORT "$tmp/noauth.keys" >>"$tmp/noauth.json"
    load $NOLOG_PORT "$tmp/nolog.keys" >>"$tmp/nolog.json"
done
median() { # file expr
    python3 - "$1" "$2" <<'PY'
import json, sys, statistics
rows = [json.loads(l) for l in open(sys.argv[1])]
print(statistics.median(eval(sys.argv[2], {}, {"d": d}) for d in rows))
PY
}
ng_rps=$(median "$tmp/nginx.json" 'd["rps"]')
rp_rps=$(median "$tmp/ringpay.json" 'd["rps"]')
nl_rps=$(median "$tmp/nolog.json" 'd["rps"]')
na_rps=$(median "$tmp/noauth.json" 'd["rps"]')
half=$(python3 -c "print(int($rp_rps / 2))")
scrape() { curl -s "http://127.0.0.1:$RP_PORT/metrics" | awk '/^ringpay_shard_/ {
    sub(/\{.*\}/, "", $1); sum[$1] += $2 } END { for (k in sum) print k, sum[k] }'; }
scrape >"$tmp/m0"
open=$(load $RP_PORT "$tmp/ringpay.keys" --rate "$half")
scrape >"$tmp/m1"
shard_line=$(python3 - "$tmp/m0" "$tmp/m1" <<'PY'
import sys
def read(f):
    return {k: float(v) for k, v in (l.split() for l in open(f))}
a, b = read(sys.argv[1]), read(sys.argv[2])
d = {k: b[k] - a.get(k, 0) for k in b}
c = d["ringpay_shard_commits_total"] or 1
s = d["ringpay_shard_idle_syncs_total"] or 1
print("during it, per shard commit: %d commits, mean batch %.1f, mean apply+commit %.0f µs;"
      " %d idle syncs, mean %.0f µs" % (d["ringpay_shard_commits_total"],
      d["ringpay_shard_batch_jobs_total"] / c, d["ringpay_shard_commit_seconds_total"] / c * 1e6,
      d["ringpay_shard_idle_syncs_total"], d["ringpay_shard_idle_sync_seconds_total"] / s * 1e6))
PY
)
commit_us=$("$BUILD/bench/store_bench" --benchmark_filter='BM_DurableCommit' \
    --benchmark_format=json 2>/dev/null | python3 -c '
import json, sys
b = json.load(sys.stdin)["benchmarks"][0]
print(round(b["real_time"] * {"ns": 1e-3, "us": 1, "ms": 1e3}[b["time_unit"]], 1))')

echo "cores=$CORES connections=$CONNS threads=$THREADS pipeline=$PIPELINE duration=${DURATION}s rounds=$ROUNDS"
echo
echo "| server | requests/s (median) | p50 µs | p99 µs | ratio |"
echo "|---|---:|---:|---:|---:|"
echo "| nginx, fixed body | $(printf %.0f "$ng_rps") | $(median "$tmp/nginx.json" 'd["latency_us"]["p50"]') | $(median "$tmp/nginx.json" 'd["latency_us"]["p99"]') | |"
echo "| ringpay, durable authorize | $(printf %.0f "$rp_rps") | $(median "$tmp/ringpay.json" 'd["latency_us"]["p50"]') | $(median "$tmp/ringpay.json" 'd["latency_us"]["p99"]') | $(python3 -c "print('%.2f×' % ($rp_rps / $ng_rps))") |"
echo "| ringpay, --auth off | $(printf %.0f "$na_rps") | $(median "$tmp/noauth.json" 'd["latency_us"]["p50"]') | $(median "$tmp/noauth.json" 'd["latency_us"]["p99"]') | $(python3 -c "print('%.2f×' % ($na_rps / $ng_rps))") |"
echo "| ringpay, access log off | $(printf %.0f "$nl_rps") | $(median "$tmp/nolog.json" 'd["latency_us"]["p50"]') | $(median "$tmp/nolog.json" 'd["latency_us"]["p99"]') | $(python3 -c "print('%.2f×' % ($nl_rps / $ng_rps))") |"
echo
echo "auth on / off: $(python3 -c "print('%.2f×' % ($rp_rps / $na_rps))") (medians; per round:" \
    "$(python3 - "$tmp/ringpay.json" "$tmp/noauth.json" <<'PY'
import json, sys
a = [json.loads(l)["rps"] for l in open(sys.argv[1])]
b = [json.loads(l)["rps"] for l in open(sys.argv[2])]
print(", ".join("%.2f" % (x / y) for x, y in zip(a, b)))
PY
))"
echo
echo "one durable LMDB commit (store_bench BM_DurableCommit): ${commit_us} µs"
echo "open loop at half of ringpay's maximum ($half/s): p50 $(field "$open" 'd["latency_us"]["p50"]') µs," \
    "p99 $(field "$open" 'd["latency_us"]["p99"]') µs, answered $(field "$open" 'd["ok"]'), missed $(field "$open" 'd["missed"]');" \
    "p99 / commit = $(python3 -c "print('%.2f' % ($(field "$open" 'd["latency_us"]["p99"]') / $commit_us))")"
echo "$shard_line"
echo
echo "raw JSON:"
sed 's/^/    nginx   /' "$tmp/nginx.json"
sed 's/^/    ringpay /' "$tmp/ringpay.json"
sed 's/^/    noauth  /' "$tmp/noauth.json"
sed 's/^/    nolog   /' "$tmp/nolog.json"
echo "    open    $open"
