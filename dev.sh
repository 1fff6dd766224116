#!/usr/bin/env bash
# The two quick-start commands of the README:
#   ./dev.sh serve [serve flags]  installs what is missing, builds, runs `ringpay serve`
#   ./dev.sh test                 installs what is missing, builds with warnings as
#                                 errors, runs every test under ctest
# Other verbs: build, asan (sanitizer build + unit tests), fuzz (long fuzz run), and
#   ./dev.sh bench [--mode quick|full]  the benchmark suite (bench/suite.sh): rewrites
#                                       docs/benchmarks.md section 5 and docs/bench/*.png
set -euo pipefail
cd "$(dirname "$0")"

# Debian 12 packages the build, the tests and the benchmarks use.
PKGS=(build-essential cmake pkg-config git
      liburing-dev liblmdb-dev lmdb-utils librdkafka-dev libssl-dev libjsmn-dev
      libcmocka-dev libbenchmark-dev clang libclang-rt-14-dev
      curl python3 nodejs openssl wrk nginx-light haproxy kcat procps iproute2 tzdata
      postgresql-15 redis-server redis-tools gnuplot-nox)

install_missing() {
    local missing=() p
    for p in "${PKGS[@]}"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" ||
            missing+=("$p")
    done
    [ ${#missing[@]} -eq 0 ] && return 0
    local sudo=""
    [ "$(id -u)" -ne 0 ] && sudo=sudo
    echo "dev.sh: installing ${missing[*]}" >&2
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends \
        "${missing[@]}" >/dev/null
}

build() { # build DIR [cmake args...]
    local dir=$1
    shift
    cmake -S . -B "$dir" -DCMAKE_BUILD_TYPE=RelWithDebInfo "$@" >/dev/null
    cmake --build "$dir" -j"$(nproc)"
}

verb=${1:-}
[ $# -gt 0 ] && shift
case "$verb" in
serve)
    install_missing
    build build
    exec ./build/ringpay serve "$@"
    ;;
test)
    install_missing
    build build -DRINGPAY_WERROR=ON
    cd build
    exec ctest --output-on-failure --timeout 600 -j2 "$@"
    ;;
build)
    install_missing
    build build "$@"
    ;;
asan)
    install_missing
    build build-asan -DRINGPAY_WERROR=ON -DRINGPAY_SANITIZE=ON
    cd build-asan
    exec ctest --output-on-failure --timeout 900 -j2 "$@"
    ;;
fuzz)
    install_missing
    build build -DRINGPAY_WERROR=ON
    exec cmake --build build --target fuzz-long
    ;;
bench)
    install_missing
    build build
    exec bench/suite.sh "$@"
    ;;
*)
    echo "usage: ./dev.sh serve [flags] | test | build | asan | fuzz | bench" >&2
    exit 2
    ;;
esac
