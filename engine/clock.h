/*
 * The two clocks the process reads, for the layers that may read clocks: net/, store/
 * and tools/. It lives beside assert.h and limits.h because engine/ is the one layer
 * every other layer may include; engine's own code never reads a clock (DESIGN.md:
 * the domain is pure and time is passed in), and tests/layers.sh checks that no
 * source file of engine/ includes this header.
 */
#ifndef RINGPAY_ENGINE_CLOCK_H
#define RINGPAY_ENGINE_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic time in nanoseconds, for durations and deadlines. */
static inline uint64_t clock_mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* Wall-clock time in milliseconds since 1970-01-01T00:00:00Z, for timestamps that are
 * stored or shown (created_at, log lines). */
static inline int64_t clock_wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

#endif
