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

struct out {
    char *buf;
    size_t cap, len;
    int full;
};

static void emit(struct out *o, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void emit(struct out *o, const char *fmt, ...)
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

static void render_requests(struct out *o, const struct metrics *const *cores, unsigned n)
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

static void render_latency(struct out *o, const struct metrics *const *cores, unsigned n)
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

static void render_gauge(struct out *o, const struct metrics *const *cores, unsigned n,
                         const char *name, const char *type, const char *help, size_t field)
{
    emit(o, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
    for (unsigned c = 0; c < n; c++) {
        const uint64_t *p = (const uint64_t *)((const char *)cores[c] + field);
        emit(o, "%s{core=\"%u\"} %lu\n", name, cores[c]->core, (unsigned long)get(p));
    }
}

long metrics_render(const struct metrics *const *cores, unsigned n, char *buf, size_t cap)
{
    struct out o = {.buf = buf, .cap = cap};
    render_requests(&o, cores, n);
    render_latency(&o, cores, n);
    render_gauge(&o, cores, n, "ringpay_connections_open", "gauge", "Open client connections.",
                 offsetof(struct metrics, connections_open));
    render_gauge(&o, cores, n, "ringpay_connections_accepted_total", "counter",
                 "Client connections accepted.", offsetof(struct metrics, connections_accepted));
    render_gauge(&o, cores, n, "ringpay_connections_rejected_total", "counter",
                 "Connections refused with 503 over the per-core cap.",
                 offsetof(struct metrics, connections_rejected));
    render_gauge(&o, cores, n, "ringpay_http_timeouts_total", "counter",
                 "Connections closed by the header-read or idle timeout.",
                 offsetof(struct metrics, timeouts));
    if (o.full)
        return -ENOSPC;
    return (long)o.len;
}
