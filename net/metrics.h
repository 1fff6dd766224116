/*
 * Per-core request metrics, rendered as Prometheus text.
 *
 * Each reactor owns one struct metrics and is its only writer; any thread may render
 * all of them. Counters are updated with relaxed atomic loads and stores (no locked
 * instructions: there is one writer), and read with relaxed loads, so a scrape sees
 * each counter whole, possibly a few requests behind.
 *
 * Routes are labels chosen by the application (an array of names given at init);
 * statuses are the small fixed set the engine can answer.
 */
#ifndef RINGPAY_NET_METRICS_H
#define RINGPAY_NET_METRICS_H

#include <stddef.h>
#include <stdint.h>

#define METRICS_ROUTES_MAX 16
#define METRICS_STATUSES   22
#define METRICS_BUCKETS    14

struct metrics {
    unsigned core;
    unsigned route_count;
    const char *const *route_names;
    uint64_t requests[METRICS_ROUTES_MAX][METRICS_STATUSES];
    uint64_t latency_buckets[METRICS_BUCKETS]; /* cumulative only at render time */
    uint64_t latency_count;
    uint64_t latency_sum_ns;
    uint64_t connections_open;
    uint64_t connections_accepted;
    uint64_t connections_rejected; /* over the per-core cap */
    uint64_t timeouts;             /* 408 and idle closes */
};

void metrics_init(struct metrics *m, unsigned core, const char *const *route_names,
                  unsigned route_count);

/* Counts one answered request of `route` with `status`, taking `latency_ns`. */
void metrics_request(struct metrics *m, unsigned route, int status, uint64_t latency_ns);

/* Adds delta to one of the gauge or counter fields (single writer). */
static inline void metrics_add(uint64_t *field, int64_t delta)
{
    uint64_t v = __atomic_load_n(field, __ATOMIC_RELAXED);
    __atomic_store_n(field, v + (uint64_t)delta, __ATOMIC_RELAXED);
}

/*
 * A Prometheus text (format 0.0.4) writer over a caller's buffer, for every family the
 * process exports (the reactors' below, the shards', later the replicator's), so the
 * text format lives in this one file. Writes stop at the first one that does not fit
 * and metrics_out_len() then reports -ENOSPC.
 */
struct metrics_out {
    char *buf;
    size_t cap, len;
    int full;
};

void metrics_out_init(struct metrics_out *o, char *buf, size_t cap);

/* "# HELP name help" and "# TYPE name type" (type: counter, gauge, histogram). */
void metrics_family(struct metrics_out *o, const char *name, const char *type, const char *help);

/* One sample "name{labels} value"; labels is the text between the braces, already
 * escaped (e.g. shard="0"), or NULL for none. */
void metrics_sample_u64(struct metrics_out *o, const char *name, const char *labels, uint64_t v);

/* The same with a floating-point value (seconds), printed with 6 decimals. */
void metrics_sample_seconds(struct metrics_out *o, const char *name, const char *labels,
                            uint64_t ns);

/* The length written, or -ENOSPC when something did not fit. */
long metrics_out_len(const struct metrics_out *o);

/* Renders every core's request metrics into o. */
void metrics_render(struct metrics_out *o, const struct metrics *const *cores, unsigned n);

#endif
