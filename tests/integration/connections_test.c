/*
 * Many connections (SPEC §6, bounded connections per core):
 *   - 1,000 concurrent keep-alive connections on two cores all get 200, and while they
 *     are open the ringpay_connections_open gauges sum to 1,000 plus the scrape; after
 *     they close the sum falls back to 1;
 *   - with --cores 1 --max-connections 8 the 9th concurrent connection gets a 503
 *     (code "overloaded", Retry-After) and is closed, the 8 keep working, and once one
 *     of them leaves a new connection is served again.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static struct rp_server srv;

enum { MANY = 1000 };

/* Polls the gauge sum until it equals want (at most ~3 s); returns the last value. */
static double wait_open_connections(double want)
{
    const char *const none[] = {NULL};
    double v = -1;
    for (int i = 0; i < 30; i++) {
        v = rp_scrape(srv.port, "ringpay_connections_open", none);
        if (v == want)
            break;
        rp_sleep_ms(100);
    }
    return v;
}

static void get_on(struct rp_conn *c, const char *id, int status)
{
    char req[128];
    snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Request-Id: %s\r\n\r\n", id);
    assert_int_equal(rp_send_str(c->fd, req), 0);
    struct rp_response r;
    int err = rp_read_response(c, &r, false, 10000);
    if (err)
        fail_msg("connection %s: read error %d", id, err);
    if (r.status != status || !rp_header(&r, "X-Request-Id") ||
        strcmp(rp_header(&r, "X-Request-Id"), id) != 0)
        fail_msg("connection %s: status %d id %s", id, r.status,
                 rp_header(&r, "X-Request-Id") ? rp_header(&r, "X-Request-Id") : "-");
    rp_response_free(&r);
}

static void test_thousand_connections(void **state)
{
    assert_true(rp_raise_nofile(MANY + 256) >= MANY + 64);
    const char *const args[] = {"--cores", "2", NULL};
    rp_must_start(&srv, args);
    struct rp_conn *c = calloc(MANY, sizeof(*c));
    assert_non_null(c);
    for (int i = 0; i < MANY; i++) {
        int err = rp_conn_open(&c[i], srv.port);
        if (err)
            fail_msg("connection %d: connect error %d", i, err);
    }
    for (int i = 0; i < MANY; i++) {
        char req[96];
        snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Request-Id: c%d\r\n\r\n",
                 i);
        assert_int_equal(rp_send_str(c[i].fd, req), 0);
    }
    for (int i = 0; i < MANY; i++) {
        struct rp_response r;
        int err = rp_read_response(&c[i], &r, false, 10000);
        if (err)
            fail_msg("connection %d: read error %d", i, err);
        char id[16];
        snprintf(id, sizeof(id), "c%d", i);
        if (r.status != 200 || !rp_header(&r, "X-Request-Id") ||
            strcmp(rp_header(&r, "X-Request-Id"), id) != 0)
            fail_msg("connection %d: status %d", i, r.status);
        rp_response_free(&r);
    }
    double open = wait_open_connections(MANY + 1);
    if (open != MANY + 1)
        fail_msg("connections_open sums to %g with %d clients + the scrape", open, MANY);
    for (int i = 0; i < MANY; i++)
        rp_conn_close(&c[i]);
    free(c);
    open = wait_open_connections(1);
    if (open != 1)
        fail_msg("connections_open sums to %g after the clients left (want 1)", open);
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* Reads the answer to a connection over the cap: it may come unasked, or after a GET. */
static void expect_overloaded(struct rp_conn *c)
{
    struct rp_response r;
    int err = rp_read_response(c, &r, false, 500);
    if (err == -ETIMEDOUT) {
        assert_int_equal(rp_send_str(c->fd, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
        err = rp_read_response(c, &r, false, 3000);
    }
    if (err)
        fail_msg("connection over --max-connections: read error %d (want a 503)", err);
    if (r.status != 503)
        fail_msg("connection over --max-connections got %d, want 503", r.status);
    rp_assert_error_body(&r, "overloaded");
    assert_non_null(rp_header(&r, "Retry-After"));
    rp_response_free(&r);
    assert_int_equal(rp_conn_wait_close(c, 3000, NULL), 0);
}

static void test_max_connections(void **state)
{
    const char *const args[] = {"--cores", "1", "--max-connections", "8", NULL};
    rp_must_start(&srv, args);
    rp_sleep_ms(200); /* the readiness probe's connection is gone */
    struct rp_conn c[8], extra;
    char id[16];
    for (int i = 0; i < 8; i++) {
        assert_int_equal(rp_conn_open(&c[i], srv.port), 0);
        snprintf(id, sizeof(id), "m%d", i);
        get_on(&c[i], id, 200);
    }
    assert_int_equal(rp_conn_open(&extra, srv.port), 0);
    expect_overloaded(&extra);
    rp_conn_close(&extra);
    for (int i = 0; i < 8; i++) { /* the eight are unharmed */
        snprintf(id, sizeof(id), "n%d", i);
        get_on(&c[i], id, 200);
    }
    rp_conn_close(&c[0]);
    bool served = false;
    for (int attempt = 0; attempt < 30 && !served; attempt++) {
        struct rp_response r;
        if (rp_request(srv.port, "GET", "/healthz", NULL, NULL, &r) == 0) {
            served = r.status == 200;
            rp_response_free(&r);
        }
        if (!served)
            rp_sleep_ms(100);
    }
    assert_true(served);
    for (int i = 1; i < 8; i++)
        rp_conn_close(&c[i]);
    assert_int_equal(rp_server_stop(&srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_thousand_connections, rp_teardown),
        cmocka_unit_test_teardown(test_max_connections, rp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
