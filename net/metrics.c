/*
 * Metrics counters and their Prometheus rendering (see metrics.h).
 */
#include "net/metrics.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine/assert.h"

static const int status_codes[METRICS_STATUSES] = {
    100, 200, 201, 204, 400, 401, 403, 404, 405, 408, 409,
    411, 413, 414, 415, 429, 431, 500, 501, 503, 505, 0 /* any other */
};

/* Upper bounds of the latency buckets, in nanoseconds (100 µs … 5 s). */
static const uint64_t bucket_ns[METRICS_BUCKETS] = {
    100000,   250000,   500000,    1000000,   2500000,   5000000,    10000000,
    25000000, 50000000, 100000000, 250000000, 500000000, 1000000000, 5000000000,
};

static const char *const bucket_le[METRICS_BUCKETS] = {
    "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01",
    "0.025",  "0.05",    "0.1",    "0.25",  "0.5",    "1",     "5",
};

void metrics_init(struct metrics *m, unsigned core, const char *const *route_names,
                  unsigned route_count)
{
    ASSERT(route_count >= 1 && route_count <= METRICS_ROUTES_MAX);
    memset(m, 0, sizeof(*m));
    m->core = core;
    m->route_names = route_names;
    m->route_count = route_count;
}

static unsigned status_index(int status)
{
    for (unsigned i = 0; i + 1 < METRICS_STATUSES; i++)
        if (status_codes[i] == status)
            return i;
    return METRICS_STATUSES - 1;
}

void metrics_request(struct metrics *m, unsigned route, int status, uint64_t latency_ns)
{
    ASSERT(route < m->route_count);
    metrics_add(&m->requests[route][status_index(status)], 1);
    unsigned b = 0;
    while (b < METRICS_BUCKETS && latency_ns > bucket_ns[b])
        b++;
    if (b < METRICS_BUCKETS)
        metrics_add(&m->latency_buckets[b], 1);
    metrics_add(&m->latency_count, 1);
    metrics_add(&m->latency_sum_ns, (int64_t)latency_ns);
}

static void emit(struct metrics_out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(struct metrics_out *o, const char *fmt, ...)
{
    if (o->full)
        return;
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(o->buf + o->len, o->cap - o->len, fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= o->cap - o->len)
        o->full = 1;
    else
        o->len += (size_t)n;
}

static uint64_t get(const uint64_t *p)
{
    return __atomic_load_n(p, __ATOMIC_RELAXED);
}

static void render_requests(struct metrics_out *o, const struct metrics *const *cores, unsigned n)
{
    emit(o, "# HELP ringpay_http_requests_total HTTP requests answered, by route and status.\n"
            "# TYPE ringpay_http_requests_total counter\n");
    for (unsigned c = 0; c < n; c++) {
        const struct metrics *m = cores[c];
        for (unsigned r = 0; r < m->route_count; r++)
            for (unsigned s = 0; s < METRICS_STATUSES; s++) {
                uint64_t v = get(&m->requests[r][s]);
                if (v == 0)
                    continue;
                char status[8];
                if (status_codes[s])
                    snprintf(status, sizeof(status), "%d", status_codes[s]);
                else
                    snprintf(status, sizeof(status), "other");
                emit(o, "ringpay_http_requests_total{core=\"%u\",route=\"%s\",status=\"%s\"} %lu\n",
                     m->core, m->route_names[r], status, (unsigned long)v);
            }
    }
}

static void render_latency(struct metrics_out *o, const struct metrics *const *cores, unsigned n)
{
    emit(o, "# HELP ringpay_http_request_duration_seconds Time from a request's last byte to its "
            "answer being queued.\n"
            "# TYPE ringpay_http_request_duration_seconds histogram\n");
    for (unsigned c = 0; c < n; c++) {
        const struct metrics *m = cores[c];
        uint64_t cum = 0;
        for (unsigned b = 0; b < METRICS_BUCKETS; b++) {
            cum += get(&m->latency_buckets[b]);
            emit(o, "ringpay_http_request_duration_seconds_bucket{core=\"%u\",le=\"%s\"} %lu\n",
                 m->core, bucket_le[b], (unsigned long)cum);
        }
        uint64_t count = get(&m->latency_count);
        emit(o, "ringpay_http_request_duration_seconds_bucket{core=\"%u\",le=\"+Inf\"} %lu\n",
             m->core, (unsigned long)count);
        emit(o, "ringpay_http_request_duration_seconds_sum{core=\"%u\"} %.9f\n", m->core,
             (double)get(&m->latency_sum_ns) / 1e9);
        emit(o, "ringpay_http_request_duration_seconds_count{core=\"%u\"} %lu\n", m->core,
             (unsigned long)count);
    }
}

static void render_gauge(struct metrics_out *o, const struct metrics *const *cores, unsigned n,
                         const char *name, const char *type, const char *help, size_t field)
{
    metrics_family(o, name, type, help);
    for (unsigned c = 0; c < n; c++) {
        const uint64_t *p = (const uint64_t *)((const char *)cores[c] + field);
        char labels[32];
        snprintf(labels, sizeof(labels), "core=\"%u\"", cores[c]->core);
        metrics_sample_u64(o, name, labels, get(p));
    }
}

void metrics_out_init(struct metrics_out *o, char *buf, size_t cap)
{
    ASSERT(buf != NULL && cap > 0);
    o->buf = buf;
    o->cap = cap;
    o->len = 0;
    o->full = 0;
}

void metrics_family(struct metrics_out *o, const char *name, const char *type, const char *help)
{
    emit(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

void metrics_sample_u64(struct metrics_out *o, const char *name, const char *labels, uint64_t v)
{
    if (labels)
        emit(o, "%s{%s} %lu\n", name, labels, (unsigned long)v);
    else
        emit(o, "%s %lu\n", name, (unsigned long)v);
}

void metrics_sample_seconds(struct metrics_out *o, const char *name, const char *labels,
                            uint64_t ns)
{
    if (labels)
        emit(o, "%s{%s} %.6f\n", name, labels, (double)ns / 1e9);
    else
        emit(o, "%s %.6f\n", name, (double)ns / 1e9);
}

long metrics_out_len(const struct metrics_out *o)
{
    return o->full ? -ENOSPC : (long)o->len;
}

void metrics_render(struct metrics_out *o, const struct metrics *const *cores, unsigned n)
{
    render_requests(o, cores, n);
    render_latency(o, cores, n);
    render_gauge(o, cores, n, "ringpay_connections_open", "gauge", "Open client connections.",
                 offsetof(struct metrics, connections_open));
    render_gauge(o, cores, n, "ringpay_connections_accepted_total", "counter",
                 "Client connections accepted.", offsetof(struct metrics, connections_accepted));
    render_gauge(o, cores, n, "ringpay_connections_rejected_total", "counter",
                 "Connections refused with 503 over the per-core cap.",
                 offsetof(struct metrics, connections_rejected));
    render_gauge(o, cores, n, "ringpay_http_timeouts_total", "counter",
                 "Connections closed by the header-read, idle or send-stall timeout.",
                 offsetof(struct metrics, timeouts));
}
