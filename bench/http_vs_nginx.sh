#!/usr/bin/env bash
# GET /healthz of ringpay versus nginx returning the same fixed body, driven by the
# same wrk with the same threads, connections and duration, in one run, alternating
# the servers ROUNDS times so that machine noise hits all alike. ringpay runs twice:
# with its access log on (the default, written to a file) and off.
#
# usage: bench/http_vs_nginx.sh [build dir] (env: CONNS=64 DURATION=10 ROUNDS=3 DEPTH=16)
# Prints a markdown table: requests/s and p50/p99 latency per server and mode, and the
# ratio ringpay/nginx of the medians.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${1:-build}
CONNS=${CONNS:-64}
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
DEPTH=${DEPTH:-16}
CORES=$(nproc)
RP_PORT=18180
NG_PORT=18181
NOLOG_PORT=18182
. bench/lib.sh
start_nginx $NG_PORT
start_ringpay ringpay $RP_PORT
start_ringpay nolog $NOLOG_PORT --access-log off
wait_up http://127.0.0.1:$NG_PORT/ http://127.0.0.1:$RP_PORT/readyz \
    http://127.0.0.1:$NOLOG_PORT/readyz

# run NAME PORT MODE -> appends "name mode rps p50_us p99_us" to $tmp/results
run() {
    local name=$1 port=$2 mode=$3 args=()
    [ "$mode" = pipelined ] && args=(-s bench/pipeline.lua)
    local out
    out=$(wrk -t2 -c"$CONNS" -d"${DURATION}s" --latency "${args[@]}" \
        "http://127.0.0.1:$port/healthz" ${args:+-- /healthz "$DEPTH"})
    local rps p50 p99
    rps=$(awk '/Requests\/sec/ {print $2}' <<<"$out")
    p50=$(awk '$1=="50%" {print $2}' <<<"$out")
    p99=$(awk '$1=="99%" {print $2}' <<<"$out")
    echo "$name $mode $rps $(to_us "$p50") $(to_us "$p99")" >>"$tmp/results"
}
to_us() { # wrk prints 1.23ms / 456.00us / 1.2s
    awk -v v="$1" 'BEGIN { n = v + 0; if (v ~ /us$/) print n; else if (v ~ /ms$/) print n*1000;
                           else if (v ~ /s$/) print n*1000000; else print n }'
}

for _ in $(seq "$ROUNDS"); do
    for mode in keepalive pipelined; do
        run nginx $NG_PORT $mode
        run ringpay $RP_PORT $mode
        run ringpay-nolog $NOLOG_PORT $mode
    done
done

echo "cores=$CORES wrk -t2 -c$CONNS -d${DURATION}s, rounds=$ROUNDS, pipeline depth=$DEPTH;" \
    "ringpay = access log on (to a file), ringpay-nolog = --access-log off"
echo
echo "| mode | server | requests/s (median) | p50 µs | p99 µs | ratio ringpay/nginx |"
echo "|---|---|---:|---:|---:|---:|"
for mode in keepalive pipelined; do
    ng=""
    for name in nginx ringpay ringpay-nolog; do
        read -r rps p50 p99 < <(awk -v n=$name -v m=$mode '$1==n && $2==m' "$tmp/results" |
            sort -k3 -g | awk '{a[NR]=$0} END {split(a[int((NR+1)/2)], f, " "); print f[3], f[4], f[5]}')
        ratio=""
        [ "$name" = nginx ] && ng=$rps
        [ "$name" != nginx ] && ratio=$(awk -v a="$rps" -v b="$ng" 'BEGIN { printf "%.2f×", a/b }')
        printf "| %s | %s | %.0f | %.0f | %.0f | %s |\n" "$mode" "$name" "$rps" "$p50" "$p99" "$ratio"
    done
done
echo
echo "raw runs (server mode rps p50_us p99_us):"
sed 's/^/    /' "$tmp/results"
