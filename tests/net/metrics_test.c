/*
 * Tests of net/metrics.c: counters land under their route and status, the latency
 * histogram is cumulative with +Inf equal to the count, and a buffer that is too small
 * is reported instead of a cut-off scrape.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <string.h>

#include "net/metrics.h"

static const char *const routes[] = {"/healthz", "other"};

static void test_render_counts_and_histogram(void **state)
{
    (void)state;
    struct metrics m0, m1;
    metrics_init(&m0, 0, routes, 2);
    metrics_init(&m1, 1, routes, 2);
    metrics_request(&m0, 0, 200, 50000);      /* 50 µs */
    metrics_request(&m0, 0, 200, 2000000);    /* 2 ms */
    metrics_request(&m1, 1, 404, 7000000000); /* 7 s: beyond the last bucket */
    metrics_request(&m1, 1, 418, 1000);       /* a status outside the table */
    metrics_add(&m0.connections_open, 3);
    metrics_add(&m0.connections_open, -1);
    const struct metrics *all[] = {&m0, &m1};
    char buf[16384];
    struct metrics_out o;
    metrics_out_init(&o, buf, sizeof(buf) - 1);
    metrics_render(&o, all, 2);
    metrics_family(&o, "ringpay_x_total", "counter", "An application family.");
    metrics_sample_u64(&o, "ringpay_x_total", "shard=\"1\"", 7);
    metrics_sample_seconds(&o, "ringpay_y_seconds_total", NULL, 1500000000);
    long n = metrics_out_len(&o);
    assert_true(n > 0);
    buf[n] = '\0';
    assert_non_null(strstr(buf, "ringpay_http_requests_total{core=\"0\",route=\"/healthz\","
                                "status=\"200\"} 2\n"));
    assert_non_null(strstr(buf, "ringpay_http_requests_total{core=\"1\",route=\"other\","
                                "status=\"404\"} 1\n"));
    assert_non_null(strstr(buf, "route=\"other\",status=\"other\"} 1\n"));
    assert_non_null(strstr(buf, "_bucket{core=\"0\",le=\"0.0001\"} 1\n"));
    assert_non_null(strstr(buf, "_bucket{core=\"0\",le=\"0.0025\"} 2\n"));
    assert_non_null(strstr(buf, "_bucket{core=\"0\",le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(buf, "_bucket{core=\"1\",le=\"5\"} 1\n"));
    assert_non_null(strstr(buf, "_bucket{core=\"1\",le=\"+Inf\"} 2\n"));
    assert_non_null(strstr(buf, "ringpay_connections_open{core=\"0\"} 2\n"));
    assert_null(strstr(buf, "status=\"500\"")); /* zero counters are not rendered */
    assert_non_null(strstr(buf, "# HELP ringpay_x_total An application family.\n"
                                "# TYPE ringpay_x_total counter\n"
                                "ringpay_x_total{shard=\"1\"} 7\n"
                                "ringpay_y_seconds_total 1.500000\n"));
}

static void test_small_buffer_is_an_error(void **state)
{
    (void)state;
    struct metrics m;
    metrics_init(&m, 0, routes, 2);
    metrics_request(&m, 0, 200, 1000);
    const struct metrics *all[] = {&m};
    char buf[64];
    struct metrics_out o;
    metrics_out_init(&o, buf, sizeof(buf));
    metrics_render(&o, all, 1);
    assert_int_equal(metrics_out_len(&o), -ENOSPC);
    metrics_sample_u64(&o, "x", NULL, 1); /* later writes do nothing */
    assert_int_equal(metrics_out_len(&o), -ENOSPC);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_render_counts_and_histogram),
        cmocka_unit_test(test_small_buffer_is_an_error),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
