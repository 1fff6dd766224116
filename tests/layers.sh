#!/bin/sh
# The layer rules of DESIGN.md ("Layers"), checked on the includes of every source file:
#   engine/  the pure domain: includes only engine/ headers and the C library (no
#            liburing, LMDB, librdkafka), and its sources never read a clock
#            (engine/clock.h is for the other layers; time is passed in);
#   net/     may use engine/ and liburing, not store/ or tools/;
#   store/   may use engine/, LMDB and librdkafka, not net/ or tools/.
# Prints one line per violation and exits 1 if there is any.
set -u
root=${1:-.}
cd "$root" || exit 2
bad=0
files=0
check() { # check FILE PATTERN WHY
    if grep -nE "$2" "$1" >/dev/null; then
        grep -nE "$2" "$1" | sed "s|^|$1:|; s|$| <- $3|"
        bad=$((bad + 1))
    fi
}
for f in engine/*.c engine/*.h; do
    files=$((files + 1))
    check "$f" '#include *"(net|store|tools)/' "engine/ is pure: no other layer"
    check "$f" '#include *<(liburing|lmdb|librdkafka)' "engine/ is pure: no I/O library"
done
for f in engine/*.c; do
    check "$f" '#include *"engine/clock.h"|clock_gettime|[^_]time\(NULL\)|gettimeofday' \
        "engine/ never reads a clock: time is passed in"
done
for f in net/*.c net/*.h; do
    files=$((files + 1))
    check "$f" '#include *"(store|tools)/' "net/ may use engine/ and liburing only"
done
for f in store/*.c store/*.h; do
    files=$((files + 1))
    check "$f" '#include *"(net|tools)/' "store/ may use engine/, LMDB and librdkafka only"
done
echo "[==========] layers: $files files checked"
if [ "$bad" -ne 0 ]; then
    echo "[  FAILED  ] $bad file(s) break a layer rule"
    exit 1
fi
echo "[  PASSED  ] 1 test(s)."
