/*
 * Clients that vanish (SPEC §6: the process never crashes on input): 200 clients in a
 * row send half a head, half a body, a head waiting for 100-continue, or nothing, then
 * close with a FIN or an RST (SO_LINGER 0). The server keeps answering new clients
 * throughout, frees every such connection (ringpay_connections_open falls back to just
 * the scraping connection) and still exits 0 on SIGTERM.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "harness.h"

static struct rp_server srv;

static const char *const partial[] = {
    "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Req",
    "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 100\r\n\r\n0123456789012345",
    "POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n10\r\nabc",
    "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\nExpect: 100-continue\r\n\r\n",
    "",
    "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\nGET /healthz HTTP/1.1\r\nHo",
};

static void healthz_200(void)
{
    struct rp_response r;
    int err = rp_request(srv.port, "GET", "/healthz", NULL, NULL, &r);
    if (err)
        fail_msg("server stopped answering: error %d", err);
    assert_int_equal(r.status, 200);
    rp_response_free(&r);
}

static void test_vanishing_clients(void **state)
{
    const char *const args[] = {"--cores", "2", NULL};
    rp_must_start(&srv, args);
    int64_t t0 = rp_now_ms();
    for (int i = 0; i < 200 && rp_now_ms() - t0 < 30000; i++) {
        int fd = rp_connect(srv.port, RP_IO_TIMEOUT_MS);
        if (fd < 0)
            fail_msg("connect %d failed: %d", i, fd);
        const char *p = partial[i % (sizeof(partial) / sizeof(partial[0]))];
        if (*p)
            assert_int_equal(rp_send_str(fd, p), 0);
        if (i % 3 == 0)
            rp_sleep_ms(1); /* sometimes let the server read first */
        if (i % 2 == 0)
            rp_close_rst(fd);
        else
            close(fd);
        if (i % 25 == 24)
            healthz_200();
        assert_true(rp_server_alive(&srv));
    }
    healthz_200();
    /* Every vanished connection is released: only the scrape itself stays open. */
    const char *const none[] = {NULL};
    double open = -1;
    for (int i = 0; i < 30; i++) {
        open = rp_scrape(srv.port, "ringpay_connections_open", none);
        if (open == 1)
            break;
        rp_sleep_ms(100);
    }
    if (open != 1)
        fail_msg("ringpay_connections_open is %g after all clients left (want 1)", open);
    assert_int_equal(rp_server_stop(&srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_vanishing_clients, rp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
