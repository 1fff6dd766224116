# Shared by the bench/*_vs_nginx.sh scripts: a temp dir cleaned up on exit, and both
# servers started side by side on loopback. Source it after setting BUILD and CORES.

tmp=$(mktemp -d)
trap 'kill $(jobs -p) 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"' EXIT

# start_servers RINGPAY_PORT NGINX_PORT [NOLOG_PORT]: nginx (one worker per CPU,
# bench/nginx.conf) and `ringpay serve --cores $CORES` with its access log on (the
# default), writing its logs to a file as a production engine would; with NOLOG_PORT, a
# second ringpay with `--access-log off` on its own data directory, so that the log's
# cost is measured in the same run. Waits (at most 5 s) until all answer.
start_servers() {
    local rp=$1 ng=$2 nolog=${3:-}
    sed -e "s/NWORKERS/$(nproc)/" -e "s#PIDFILE#$tmp/nginx.pid#" -e "s/PORT/$ng/" \
        bench/nginx.conf >"$tmp/nginx.conf"
    nginx -c "$tmp/nginx.conf" -p "$tmp" &
    "$BUILD/ringpay" serve --listen 127.0.0.1:"$rp" --cores "$CORES" --data "$tmp/data" \
        --log-level error 2>>"$tmp/ringpay.log" &
    if [ -n "$nolog" ]; then
        "$BUILD/ringpay" serve --listen 127.0.0.1:"$nolog" --cores "$CORES" \
            --data "$tmp/data-nolog" --log-level error --access-log off 2>>"$tmp/ringpay.log" &
    fi
    for _ in $(seq 50); do
        curl -sf "http://127.0.0.1:$rp/readyz" >/dev/null &&
            curl -sf "http://127.0.0.1:$ng/" >/dev/null &&
            { [ -z "$nolog" ] || curl -sf "http://127.0.0.1:$nolog/readyz" >/dev/null; } &&
            return 0
        sleep 0.1
    done
    echo "bench: servers did not come up" >&2
    return 1
}
