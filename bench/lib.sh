# Shared by the bench/*_vs_nginx.sh scripts: a temp dir cleaned up on exit, and servers
# started side by side on loopback. Source it after setting BUILD and CORES.

tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT

# start_nginx PORT: nginx (one worker per CPU, bench/nginx.conf) answering a fixed body.
start_nginx() {
    sed -e "s/NWORKERS/$(nproc)/" -e "s#PIDFILE#$tmp/nginx.pid#" -e "s/PORT/$1/" \
        bench/nginx.conf >"$tmp/nginx.conf"
    nginx -c "$tmp/nginx.conf" -p "$tmp" &
}

# start_ringpay NAME PORT [serve flags...]: `ringpay serve --cores $CORES` on its own
# data directory $tmp/NAME, its logs (access log included, unless the flags turn it off)
# written to $tmp/NAME.log as a production engine would. Before it starts, one merchant
# key for each of m-0 .. m-(MERCHANTS-1) (default 64) is created in its data directory
# and the keys' JSON lines are kept in $tmp/NAME.keys, for `ringpay load --keys`.
start_ringpay() {
    local name=$1 port=$2 i
    shift 2
    mkdir -p "$tmp/$name"
    for i in $(seq 0 $((${MERCHANTS:-64} - 1))); do
        "$BUILD/ringpay" keys add --data "$tmp/$name" --merchant "m-$i"
    done >"$tmp/$name.keys"
    "$BUILD/ringpay" serve --listen 127.0.0.1:"$port" --cores "$CORES" --data "$tmp/$name" \
        --log-level error "$@" 2>>"$tmp/$name.log" &
}

# wait_up URL...: until every URL answers 2xx (at most 5 s).
wait_up() {
    local u ok
    for _ in $(seq 50); do
        ok=1
        for u in "$@"; do curl -sf "$u" >/dev/null || ok=0; done
        [ $ok = 1 ] && return 0
        sleep 0.1
    done
    echo "bench: servers did not come up: $*" >&2
    return 1
}
