/*
 * Pipelining (SPEC §2): requests written back to back in one write are all answered,
 * strictly in request order, on one connection; a mix of 200, 404, 405 (a POST with a
 * body that must be read past) and HEAD (no body) keeps the stream in sync; a pipeline
 * far deeper than the server's per-connection window (CONN_PIPELINE_MAX) is answered in
 * full; several pipelining connections at once do not mix their answers.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

static struct rp_server srv;

enum kind { K_GET, K_404, K_POST, K_HEAD };

static enum kind kind_of(int i)
{
    if (i == 50 || i == 77)
        return K_POST;
    if (i % 10 == 3)
        return K_404;
    if (i % 25 == 7)
        return K_HEAD;
    return K_GET;
}

static const int status_of[] = {[K_GET] = 200, [K_404] = 404, [K_POST] = 405, [K_HEAD] = 200};

/* Appends request i (id "<tag><i>") of the mixed kind (mixed) or a plain GET. */
static size_t append_request(char *buf, size_t cap, const char *tag, int i, bool mixed)
{
    enum kind k = mixed ? kind_of(i) : K_GET;
    switch (k) {
    case K_404:
        return (size_t)snprintf(buf, cap,
                                "GET /missing/%d HTTP/1.1\r\nHost: a\r\n"
                                "X-Request-Id: %s%d\r\n\r\n",
                                i, tag, i);
    case K_POST:
        return (size_t)snprintf(buf, cap,
                                "POST /healthz HTTP/1.1\r\nHost: a\r\n"
                                "Content-Length: 17\r\nX-Request-Id: %s%d\r\n\r\n"
                                "GET /smuggled 1\r\n",
                                tag, i);
    case K_HEAD:
        return (size_t)snprintf(buf, cap,
                                "HEAD /healthz HTTP/1.1\r\nHost: a\r\n"
                                "X-Request-Id: %s%d\r\n\r\n",
                                tag, i);
    default:
        return (size_t)snprintf(buf, cap,
                                "GET /healthz HTTP/1.1\r\nHost: a\r\n"
                                "X-Request-Id: %s%d\r\n\r\n",
                                tag, i);
    }
}

/* Builds n pipelined requests into a malloc'd buffer. */
static char *build(int n, const char *tag, bool mixed, size_t *len)
{
    size_t cap = (size_t)n * 128 + 1, off = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (int i = 0; i < n; i++)
        off += append_request(buf + off, cap - off, tag, i, mixed);
    assert_true(off < cap);
    *len = off;
    return buf;
}

/* Reads n responses and checks ids and statuses in order. */
static void expect_in_order(struct rp_conn *c, int n, const char *tag, bool mixed)
{
    for (int i = 0; i < n; i++) {
        enum kind k = mixed ? kind_of(i) : K_GET;
        struct rp_response r;
        int err = rp_read_response(c, &r, k == K_HEAD, RP_IO_TIMEOUT_MS);
        if (err)
            fail_msg("response %d of %d (%s): read error %d", i, n, tag, err);
        char want[32];
        snprintf(want, sizeof(want), "%s%d", tag, i);
        const char *id = rp_header(&r, "X-Request-Id");
        if (!id || strcmp(id, want) != 0 || r.status != status_of[k])
            fail_msg("response %d: want %s/%d, got %s/%d", i, want, status_of[k],
                     id ? id : "(none)", r.status);
        if (k == K_404)
            rp_assert_error_body(&r, "not_found");
        rp_response_free(&r);
    }
}

static void test_hundred_mixed_in_one_write(void **state)
{
    const char *const args[] = {"--cores", "1", NULL};
    rp_must_start(&srv, args);
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    for (int round = 0; round < 3; round++) {
        size_t len;
        char tag[8];
        snprintf(tag, sizeof(tag), "r%c", 'a' + round);
        char *buf = build(100, round == 0 ? "r" : tag, true, &len);
        assert_int_equal(rp_send_all(c.fd, buf, len), 0);
        free(buf);
        expect_in_order(&c, 100, round == 0 ? "r" : tag, true);
    }
    /* Nothing more than the 300 answers arrived (the POST bodies were not parsed). */
    assert_int_equal(c.len, 0);
    rp_conn_close(&c);
    assert_int_equal(rp_server_stop(&srv), 0);
}

static void test_thousand_deep(void **state)
{
    const char *const args[] = {"--cores", "1", NULL};
    rp_must_start(&srv, args);
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    size_t len;
    char *buf = build(1000, "d", false, &len);
    assert_int_equal(rp_send_all(c.fd, buf, len), 0);
    free(buf);
    expect_in_order(&c, 1000, "d", false);
    rp_conn_close(&c);
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* Eight connections on two cores pipeline at the same time. */
static void test_parallel_pipelines(void **state)
{
    const char *const args[] = {"--cores", "2", NULL};
    rp_must_start(&srv, args);
    enum { CONNS = 8 };
    struct rp_conn c[CONNS];
    char tags[CONNS][8];
    for (int i = 0; i < CONNS; i++) {
        assert_int_equal(rp_conn_open(&c[i], srv.port), 0);
        snprintf(tags[i], sizeof(tags[i]), "p%d-", i);
        size_t len;
        char *buf = build(100, tags[i], true, &len);
        assert_int_equal(rp_send_all(c[i].fd, buf, len), 0);
        free(buf);
    }
    for (int i = 0; i < CONNS; i++) {
        expect_in_order(&c[i], 100, tags[i], true);
        rp_conn_close(&c[i]);
    }
    assert_int_equal(rp_server_stop(&srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_hundred_mixed_in_one_write, rp_teardown),
        cmocka_unit_test_teardown(test_thousand_deep, rp_teardown),
        cmocka_unit_test_teardown(test_parallel_pipelines, rp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
