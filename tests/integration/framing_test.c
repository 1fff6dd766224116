/*
 * Over-the-wire framing errors and limits (SPEC §6, net/http.h): each malformed or
 * oversized request gets its status (400, 413, 414, 431, 501, 505) with the SPEC §2 error
 * body, and then the connection is closed without any further answer, so nothing
 * smuggled after the bad request is ever parsed. Well-formed edge cases next to them
 * (CL 0, upper-case "Chunked", a body of exactly 64 KiB) keep the connection open. The
 * server answers /healthz after all of it.
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

/* The smuggled tail after each bad request: answering it would show a desync. */
#define SMUGGLE "GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

struct bad_case {
    const char *name;
    const char *wire;
    int status;
    const char *code; /* NULL: any code */
};

static const struct bad_case cases[] = {
    {"CL and TE",
     "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
     "Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n" SMUGGLE,
     400, NULL},
    {"TE and CL",
     "POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n"
     "Content-Length: 5\r\n\r\n0\r\n\r\n" SMUGGLE,
     400, NULL},
    {"duplicate CL",
     "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n"
     "Content-Length: 5\r\n\r\nhello" SMUGGLE,
     400, NULL},
    {"CL +5", "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: +5\r\n\r\nhello" SMUGGLE, 400,
     NULL},
    {"CL 0x5", "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 0x5\r\n\r\nhello" SMUGGLE, 400,
     NULL},
    {"CL -1", "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: -1\r\n\r\n" SMUGGLE, 400, NULL},
    {"CL list", "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 5,5\r\n\r\nhello" SMUGGLE,
     400, NULL},
    {"TE gzip", "POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip\r\n\r\n" SMUGGLE, 501,
     NULL},
    {"bare LF", "GET /healthz HTTP/1.1\nHost: a\n\n" SMUGGLE, 400, NULL},
    {"bare LF inside", "GET /healthz HTTP/1.1\r\nHost: a\nX-A: b\r\n\r\n" SMUGGLE, 400, NULL},
    {"space before colon", "GET /healthz HTTP/1.1\r\nHost : a\r\n\r\n" SMUGGLE, 400, NULL},
    {"TE space before colon",
     "POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding : chunked\r\n"
     "\r\n0\r\n\r\n" SMUGGLE,
     400, NULL},
    {"obs-fold", "GET /healthz HTTP/1.1\r\nHost: a\r\nX-A: b\r\n  c\r\n\r\n" SMUGGLE, 400, NULL},
    {"control char in value",
     "GET /healthz HTTP/1.1\r\nHost: a\r\nX-A: b\x01"
     "c\r\n\r\n" SMUGGLE,
     400, NULL},
    {"bad method token", "G(T /healthz HTTP/1.1\r\nHost: a\r\n\r\n" SMUGGLE, 400, NULL},
    {"missing Host", "GET /healthz HTTP/1.1\r\nX-A: b\r\n\r\n" SMUGGLE, 400, NULL},
    {"chunk size zz",
     "POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "zz\r\nhello\r\n0\r\n\r\n" SMUGGLE,
     400, NULL},
    {"chunk size 0x5",
     "POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "0x5\r\nhello\r\n0\r\n\r\n" SMUGGLE,
     400, NULL},
    {"chunk size -5",
     "POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "-5\r\nhello\r\n0\r\n\r\n" SMUGGLE,
     400, NULL},
    {"chunk without CRLF",
     "POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
     "5\r\nhelloXX0\r\n\r\n" SMUGGLE,
     400, NULL},
    {"chunked on 1.0",
     "POST /healthz HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n"
     "0\r\n\r\n" SMUGGLE,
     400, NULL},
    {"HTTP/1.2", "GET /healthz HTTP/1.2\r\nHost: a\r\n\r\n" SMUGGLE, 505, NULL},
    {"HTTP/3.0", "GET /healthz HTTP/3.0\r\nHost: a\r\n\r\n" SMUGGLE, 505, NULL},
    {"declared body over 64 KiB",
     "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 70000\r\n"
     "\r\n",
     413, "body_too_large"},
};

/* Sends wire, expects one answer with status/code, then a close and nothing else. */
static void expect_rejected(const char *name, const char *wire, size_t len, int status,
                            const char *code)
{
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    int err = rp_send_all(c.fd, wire, len);
    if (err && err != -EPIPE && err != -ECONNRESET)
        fail_msg("%s: send error %d", name, err);
    struct rp_response r;
    err = rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS);
    if (err)
        fail_msg("%s: no answer (read error %d), want %d", name, err, status);
    if (r.status != status)
        fail_msg("%s: got %d, want %d: %s", name, r.status, status, r.body);
    rp_assert_error_body(&r, code);
    rp_response_free(&r);
    size_t extra = 0;
    if (rp_conn_wait_close(&c, 3000, &extra) != 0)
        fail_msg("%s: connection left open after %d", name, status);
    if (extra != 0)
        fail_msg("%s: %zu more bytes after the %d (a smuggled request was answered)", name, extra,
                 status);
    rp_conn_close(&c);
}

static void test_table(void **state)
{
    const char *const args[] = {"--cores", "1", NULL};
    rp_must_start(&srv, args);
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_rejected(cases[i].name, cases[i].wire, strlen(cases[i].wire), cases[i].status,
                        cases[i].code);
    struct rp_response r;
    assert_int_equal(rp_request(srv.port, "GET", "/healthz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    rp_response_free(&r);
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* Appends s to a growing buffer (bounded by cap). */
static void put(char *buf, size_t cap, size_t *len, const char *s)
{
    size_t n = strlen(s);
    assert_true(*len + n < cap);
    memcpy(buf + *len, s, n + 1);
    *len += n;
}

static void put_run(char *buf, size_t cap, size_t *len, char ch, size_t n)
{
    assert_true(*len + n < cap);
    memset(buf + *len, ch, n);
    *len += n;
    buf[*len] = '\0';
}

static void test_limits(void **state)
{
    const char *const args[] = {"--cores", "1", NULL};
    rp_must_start(&srv, args);
    size_t cap = 256 * 1024, len = 0;
    char *b = malloc(cap);
    assert_non_null(b);

    put(b, cap, &len, "GET /");
    put_run(b, cap, &len, 'a', 9000);
    put(b, cap, &len, " HTTP/1.1\r\nHost: a\r\n\r\n" SMUGGLE);
    expect_rejected("request line > 8 KiB", b, len, 414, "uri_too_long");

    len = 0;
    put(b, cap, &len, "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Big: ");
    put_run(b, cap, &len, 'b', 9000);
    put(b, cap, &len, "\r\n\r\n" SMUGGLE);
    expect_rejected("header line > 8 KiB", b, len, 431, "headers_too_large");

    len = 0;
    put(b, cap, &len, "GET /healthz HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < 5; i++) { /* 5 x 7 KiB lines: each fine, together > 32 KiB */
        char name[32];
        snprintf(name, sizeof(name), "X-H%d: ", i);
        put(b, cap, &len, name);
        put_run(b, cap, &len, 'c', 7000);
        put(b, cap, &len, "\r\n");
    }
    put(b, cap, &len, "\r\n" SMUGGLE);
    expect_rejected("head > 32 KiB", b, len, 431, "headers_too_large");

    len = 0;
    put(b, cap, &len, "GET /healthz HTTP/1.1\r\nHost: a\r\n");
    for (int i = 0; i < 100; i++) { /* with Host: 101 fields */
        char line[32];
        snprintf(line, sizeof(line), "X-F%d: v\r\n", i);
        put(b, cap, &len, line);
    }
    put(b, cap, &len, "\r\n" SMUGGLE);
    expect_rejected("101 header fields", b, len, 431, "headers_too_large");

    len = 0;
    put(b, cap, &len, "POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 17; i++) { /* 17 x 4 KiB decoded: over 64 KiB */
        put(b, cap, &len, "1000\r\n");
        put_run(b, cap, &len, 'd', 4096);
        put(b, cap, &len, "\r\n");
    }
    put(b, cap, &len, "0\r\n\r\n" SMUGGLE);
    expect_rejected("chunked body > 64 KiB", b, len, 413, "body_too_large");
    free(b);
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* Requests right at the limits, and harmless edge cases, are served and keep the
 * connection open. */
static void test_accepted_edges(void **state)
{
    const char *const args[] = {"--cores", "1", NULL};
    rp_must_start(&srv, args);
    size_t cap = 128 * 1024, len = 0;
    char *b = malloc(cap);
    assert_non_null(b);
    put(b, cap, &len,
        "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 65536\r\n"
        "X-Request-Id: max-body\r\n\r\n");
    put_run(b, cap, &len, 'e', 65536);
    put(b, cap, &len,
        "GET /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\n"
        "X-Request-Id: cl0\r\n\r\n");
    put(b, cap, &len, "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Pad: ");
    put_run(b, cap, &len, 'f', 7000); /* a long header line under 8 KiB */
    put(b, cap, &len, "\r\nX-Request-Id: long-line\r\n\r\n");
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    assert_int_equal(rp_send_all(c.fd, b, len), 0);
    static const struct {
        int status;
        const char *id;
    } want[] = {{405, "max-body"}, {200, "cl0"}, {200, "long-line"}};
    for (size_t i = 0; i < 3; i++) {
        struct rp_response r;
        int err = rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS);
        if (err)
            fail_msg("%s: read error %d", want[i].id, err);
        if (r.status != want[i].status || !rp_header(&r, "X-Request-Id") ||
            strcmp(rp_header(&r, "X-Request-Id"), want[i].id) != 0)
            fail_msg("%s: got %d", want[i].id, r.status);
        rp_response_free(&r);
    }
    /* Still open and in sync. */
    assert_int_equal(rp_send_str(c.fd, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    struct rp_response r;
    assert_int_equal(rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    rp_response_free(&r);
    rp_conn_close(&c);
    free(b);
    assert_int_equal(rp_server_stop(&srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_table, rp_teardown),
        cmocka_unit_test_teardown(test_limits, rp_teardown),
        cmocka_unit_test_teardown(test_accepted_edges, rp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
