/*
 * Slow and idle clients (SPEC §6) with --header-timeout-ms 1000 --idle-timeout-ms 1000:
 * a head dribbled one byte every 200 ms gets 408 (or a close) within about 1-3 s of its
 * first byte; an idle keep-alive connection is closed after about 1 s, a connection that
 * never sends anything too; a connection that keeps asking every 500 ms is not closed
 * (the idle timer restarts per request, it is not a lifetime).
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <string.h>

#include "harness.h"

static struct rp_server srv;
static const char *const timeouts[] = {
    "--cores", "1", "--header-timeout-ms", "1000", "--idle-timeout-ms", "1000", NULL};

/* True when fd has something to read (data, FIN or RST) within ms. */
static bool readable(int fd, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    return poll(&p, 1, ms) > 0;
}

static void test_slow_header_gets_408(void **state)
{
    rp_must_start(&srv, timeouts);
    static const char head[] = "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                               "X-Slow: aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa";
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    int64_t t0 = rp_now_ms();
    bool ended = false;
    for (size_t i = 0; i < sizeof(head) - 1 && rp_now_ms() - t0 < 5000; i++) {
        if (rp_send_all(c.fd, head + i, 1) != 0 || readable(c.fd, 200)) {
            ended = true;
            break;
        }
    }
    int64_t reacted = rp_now_ms() - t0;
    if (!ended)
        fail_msg("a head dribbled for %lld ms was neither answered nor closed", (long long)reacted);
    struct rp_response r;
    int err = rp_read_response(&c, &r, false, 1000);
    if (err == 0) {
        assert_int_equal(r.status, 408);
        rp_assert_error_body(&r, NULL);
        rp_response_free(&r);
        assert_int_equal(rp_conn_wait_close(&c, 3000, NULL), 0);
    } else {
        assert_true(err == -ECONNRESET); /* closed without an answer: allowed */
    }
    if (reacted < 800 || reacted > 3000)
        fail_msg("header timeout of 1000 ms fired after %lld ms", (long long)reacted);
    rp_conn_close(&c);
    /* The server is fine afterwards. */
    struct rp_response ok;
    assert_int_equal(rp_request(srv.port, "GET", "/healthz", NULL, NULL, &ok), 0);
    assert_int_equal(ok.status, 200);
    rp_response_free(&ok);
    assert_int_equal(rp_server_stop(&srv), 0);
}

static void test_idle_keepalive_closed(void **state)
{
    rp_must_start(&srv, timeouts);
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    assert_int_equal(rp_send_str(c.fd, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    struct rp_response r;
    assert_int_equal(rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    rp_response_free(&r);
    int64_t t0 = rp_now_ms();
    if (rp_conn_wait_close(&c, 4000, NULL) != 0)
        fail_msg("idle keep-alive connection still open after 4 s (idle timeout 1 s)");
    int64_t elapsed = rp_now_ms() - t0;
    if (elapsed < 800 || elapsed > 3000)
        fail_msg("idle timeout of 1000 ms fired after %lld ms", (long long)elapsed);
    rp_conn_close(&c);

    /* A connection that never sends a byte is not kept forever either. */
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    t0 = rp_now_ms();
    if (rp_conn_wait_close(&c, 4000, NULL) != 0)
        fail_msg("silent connection still open after 4 s");
    assert_true(rp_now_ms() - t0 >= 800);
    rp_conn_close(&c);
    assert_int_equal(rp_server_stop(&srv), 0);
}

static void test_busy_connection_survives(void **state)
{
    rp_must_start(&srv, timeouts);
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    for (int i = 0; i < 6; i++) { /* 6 x 500 ms: three idle timeouts' worth */
        char req[96];
        snprintf(req, sizeof(req), "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Request-Id: b%d\r\n\r\n",
                 i);
        assert_int_equal(rp_send_str(c.fd, req), 0);
        struct rp_response r;
        int err = rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS);
        if (err)
            fail_msg("request %d on a busy connection: read error %d", i, err);
        assert_int_equal(r.status, 200);
        rp_response_free(&r);
        rp_sleep_ms(500);
    }
    rp_conn_close(&c);
    assert_int_equal(rp_server_stop(&srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_slow_header_gets_408, rp_teardown),
        cmocka_unit_test_teardown(test_idle_keepalive_closed, rp_teardown),
        cmocka_unit_test_teardown(test_busy_connection_survives, rp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
