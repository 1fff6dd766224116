/*
 * GET /metrics over the wire (SPEC §2): Prometheus text 0.0.4 whose request counters
 * move by exactly the requests made (3 x /healthz 200, one 404, one 405), whose latency
 * histogram is cumulative and counts every answered request, and which has one
 * ringpay_connections_open gauge per core.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static struct rp_server srv;

#define REQS "ringpay_http_requests_total"
#define HIST "ringpay_http_request_duration_seconds"

struct snapshot {
    double healthz_200;
    double status_404;
    double status_405;
    double metrics_200;
    double hist_inf;
    double hist_count;
};

/* Scrapes /metrics and checks the text-format basics. Caller frees r. */
static void scrape(struct rp_response *r)
{
    assert_int_equal(rp_request(srv.port, "GET", "/metrics", NULL, NULL, r), 0);
    assert_int_equal(r->status, 200);
    const char *ct = rp_header(r, "Content-Type");
    assert_non_null(ct);
    if (strncmp(ct, "text/plain", 10) != 0 || !strstr(ct, "version=0.0.4"))
        fail_msg("Content-Type \"%s\", want text/plain; version=0.0.4", ct);
    assert_non_null(strstr(r->body, "# TYPE " REQS " counter"));
    assert_non_null(strstr(r->body, "# TYPE " HIST " histogram"));
    assert_non_null(strstr(r->body, "# TYPE ringpay_connections_open gauge"));
}

static struct snapshot take(void)
{
    struct rp_response r;
    scrape(&r);
    const char *const hz[] = {"route=\"/healthz\"", "status=\"200\"", NULL};
    const char *const s404[] = {"status=\"404\"", NULL};
    const char *const s405[] = {"status=\"405\"", NULL};
    const char *const m200[] = {"route=\"/metrics\"", "status=\"200\"", NULL};
    const char *const inf[] = {"le=\"+Inf\"", NULL};
    struct snapshot s = {
        .healthz_200 = rp_metric_sum(r.body, REQS, hz, NULL),
        .status_404 = rp_metric_sum(r.body, REQS, s404, NULL),
        .status_405 = rp_metric_sum(r.body, REQS, s405, NULL),
        .metrics_200 = rp_metric_sum(r.body, REQS, m200, NULL),
        .hist_inf = rp_metric_sum(r.body, HIST "_bucket", inf, NULL),
        .hist_count = rp_metric_sum(r.body, HIST "_count", NULL, NULL),
    };
    rp_response_free(&r);
    return s;
}

static void test_counters_move(void **state)
{
    const char *const args[] = {"--cores", "1", NULL};
    rp_must_start(&srv, args);
    struct snapshot a = take();
    for (int i = 0; i < 3; i++) {
        struct rp_response r;
        assert_int_equal(rp_request(srv.port, "GET", "/healthz", NULL, NULL, &r), 0);
        assert_int_equal(r.status, 200);
        rp_response_free(&r);
    }
    struct rp_response r;
    assert_int_equal(rp_request(srv.port, "GET", "/does-not-exist", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    rp_response_free(&r);
    assert_int_equal(rp_request(srv.port, "POST", "/healthz", NULL, "x", &r), 0);
    assert_int_equal(r.status, 405);
    rp_response_free(&r);
    rp_sleep_ms(50);
    struct snapshot b = take();

    if (b.healthz_200 - a.healthz_200 != 3)
        fail_msg("healthz 200 counter moved by %g, want 3", b.healthz_200 - a.healthz_200);
    if (b.status_404 - a.status_404 != 1)
        fail_msg("404 counters moved by %g, want 1", b.status_404 - a.status_404);
    if (b.status_405 - a.status_405 != 1)
        fail_msg("405 counters moved by %g, want 1", b.status_405 - a.status_405);
    /* The first scrape is counted once it was answered. */
    assert_true(b.metrics_200 >= 1);
    /* 5 requests plus perhaps the first scrape went through the histogram. */
    double d = b.hist_inf - a.hist_inf;
    if (d < 5 || d > 6)
        fail_msg("histogram +Inf bucket moved by %g, want 5 or 6", d);
    assert_true(b.hist_count == b.hist_inf);
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* Buckets are cumulative: non-decreasing in le, and +Inf equals _count, per core. */
static void test_histogram_shape_two_cores(void **state)
{
    const char *const args[] = {"--cores", "2", NULL};
    rp_must_start(&srv, args);
    for (int i = 0; i < 20; i++) {
        struct rp_response r;
        assert_int_equal(rp_request(srv.port, "GET", "/healthz", NULL, NULL, &r), 0);
        rp_response_free(&r);
    }
    struct rp_response r;
    scrape(&r);
    int matched = 0;
    const char *const none[] = {NULL};
    rp_metric_sum(r.body, "ringpay_connections_open", none, &matched);
    assert_int_equal(matched, 2);
    for (int core = 0; core < 2; core++) {
        char label[32];
        snprintf(label, sizeof(label), "core=\"%d\"", core);
        const char *const one[] = {label, NULL};
        rp_metric_sum(r.body, "ringpay_connections_open", one, &matched);
        assert_int_equal(matched, 1);
        double prev = -1, prev_le = -INFINITY;
        int buckets = 0;
        for (const char *p = r.body; (p = strstr(p, HIST "_bucket{")) != NULL; p++) {
            const char *eol = strchr(p, '\n');
            const char *le = strstr(p, "le=\"");
            const char *c = strstr(p, label);
            if (!eol || !le || le > eol || !c || c > eol)
                continue;
            double le_v = strtod(le + 4, NULL);
            double v = strtod(strchr(p, '}') + 1, NULL);
            if (le_v <= prev_le || v < prev)
                fail_msg("core %d: bucket le=%g value %g after le=%g value %g", core, le_v, v,
                         prev_le, prev);
            prev_le = le_v;
            prev = v;
            buckets++;
        }
        assert_true(buckets >= 2);
        assert_true(isinf(prev_le));
        assert_true(prev == rp_metric_sum(r.body, HIST "_count", one, NULL));
    }
    const char *const hz[] = {"route=\"/healthz\"", "status=\"200\"", NULL};
    assert_true(rp_metric_sum(r.body, REQS, hz, NULL) >= 21); /* + readiness probe */
    rp_response_free(&r);
    assert_int_equal(rp_server_stop(&srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_counters_move, rp_teardown),
        cmocka_unit_test_teardown(test_histogram_shape_two_cores, rp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
