/*
 * HTTP/1.1 basics of `ringpay serve` over real sockets (SPEC §2, §6): keep-alive with
 * curl, the headers every response carries, 404/405 error bodies, HEAD, Connection:
 * close, HTTP/1.0, requests split across many writes, Expect: 100-continue (the interim
 * answer carries the request's X-Request-Id, the client's or a made one), a chunked POST
 * followed by a pipelined GET on the same connection, and the access log (SPEC §6: one
 * line per request with method, route template, status, duration_us, request_id, core
 * and client address; off; one in N).
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
#include <time.h>

#include "harness.h"

static struct rp_server srv;
static const char *const one_core[] = {"--cores", "1", NULL};

/* Reads one response on c and asserts its status and X-Request-Id (id may be NULL). */
static void expect_response(struct rp_conn *c, int status, const char *id, bool head,
                            struct rp_response *out)
{
    struct rp_response r;
    int err = rp_read_response(c, &r, head, RP_IO_TIMEOUT_MS);
    if (err)
        fail_msg("expected %d (id %s): read error %d", status, id ? id : "-", err);
    if (r.status != status)
        fail_msg("expected status %d, got %d (id %s): %s", status, r.status, id ? id : "-", r.body);
    if (id) {
        const char *got = rp_header(&r, "X-Request-Id");
        assert_non_null(got);
        assert_string_equal(got, id);
    }
    if (out)
        *out = r;
    else
        rp_response_free(&r);
}

static void test_curl_keepalive(void **state)
{
    rp_must_start(&srv, one_core);
    char cmd[512];
    snprintf(cmd, sizeof(cmd),
             "curl -sv --max-time 10 -o /dev/null -o /dev/null "
             "http://127.0.0.1:%d/healthz http://127.0.0.1:%d/healthz 2>&1",
             srv.port, srv.port);
    FILE *f = popen(cmd, "r");
    assert_non_null(f);
    static char out[65536];
    size_t n = fread(out, 1, sizeof(out) - 1, f);
    out[n] = '\0';
    int rc = pclose(f);
    if (rc != 0)
        fail_msg("curl failed (%d):\n%s", rc, out);
    int ok = 0;
    for (const char *p = out; (p = strstr(p, "< HTTP/1.1 200")) != NULL; p++)
        ok++;
    if (ok != 2 || !strstr(out, "Re-using existing connection") || strstr(out, "(#1)"))
        fail_msg("expected two 200s over one reused connection:\n%s", out);
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* Date must be an IMF-fixdate close to now. */
static void assert_date(const char *date)
{
    assert_non_null(date);
    struct tm tm;
    memset(&tm, 0, sizeof(tm));
    const char *end = strptime(date, "%a, %d %b %Y %H:%M:%S GMT", &tm);
    if (!end || *end || strlen(date) != 29)
        fail_msg("Date is not an IMF-fixdate: \"%s\"", date);
    time_t t = timegm(&tm);
    long skew = labs((long)(t - time(NULL)));
    if (skew > 5)
        fail_msg("Date is %ld s away from now: %s", skew, date);
}

static void test_common_headers(void **state)
{
    rp_must_start(&srv, one_core);
    struct rp_response r;
    const char *const with_id[] = {"X-Request-Id: my-id-42", NULL};
    assert_int_equal(rp_request(srv.port, "GET", "/healthz", with_id, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(rp_header(&r, "X-Request-Id"), "my-id-42");
    assert_date(rp_header(&r, "Date"));
    assert_non_null(rp_header(&r, "Content-Length"));
    assert_false(r.chunked);
    assert_non_null(rp_header(&r, "Content-Type"));
    assert_non_null(strstr(rp_header(&r, "Content-Type"), "application/json"));
    assert_true(r.body_len > 0 && r.body[0] == '{');
    rp_response_free(&r);

    /* Without one, an id is made, and two requests get different ids. */
    char first[256];
    assert_int_equal(rp_request(srv.port, "GET", "/readyz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    const char *made = rp_header(&r, "X-Request-Id");
    assert_non_null(made);
    assert_true(strlen(made) > 0 && strlen(made) < sizeof(first));
    snprintf(first, sizeof(first), "%s", made);
    assert_non_null(strstr(rp_header(&r, "Content-Type"), "application/json"));
    assert_date(rp_header(&r, "Date"));
    rp_response_free(&r);
    assert_int_equal(rp_request(srv.port, "GET", "/healthz", NULL, NULL, &r), 0);
    assert_non_null(rp_header(&r, "X-Request-Id"));
    assert_string_not_equal(rp_header(&r, "X-Request-Id"), first);
    rp_response_free(&r);
    assert_int_equal(rp_server_stop(&srv), 0);
}

static void test_not_found_and_method(void **state)
{
    rp_must_start(&srv, one_core);
    struct rp_response r;
    const char *const id[] = {"X-Request-Id: nf-1", NULL};
    assert_int_equal(rp_request(srv.port, "GET", "/no/such/path", id, NULL, &r), 0);
    assert_int_equal(r.status, 404);
    assert_string_equal(rp_header(&r, "X-Request-Id"), "nf-1");
    rp_assert_error_body(&r, "not_found");
    assert_non_null(strstr(r.body, "\"param\":null"));
    rp_response_free(&r);

    assert_int_equal(rp_request(srv.port, "POST", "/healthz", NULL, "{}", &r), 0);
    assert_int_equal(r.status, 405);
    rp_assert_error_body(&r, "method_not_allowed");
    const char *allow = rp_header(&r, "Allow");
    assert_non_null(allow);
    assert_non_null(strstr(allow, "GET"));
    rp_response_free(&r);

    assert_int_equal(rp_request(srv.port, "DELETE", "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 405);
    assert_non_null(rp_header(&r, "Allow"));
    rp_response_free(&r);
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* HEAD answers the GET's headers without a body: a GET pipelined behind it parses. */
static void test_head(void **state)
{
    rp_must_start(&srv, one_core);
    struct rp_response get;
    assert_int_equal(rp_request(srv.port, "GET", "/healthz", NULL, NULL, &get), 0);
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    assert_int_equal(rp_send_str(c.fd,
                                 "HEAD /healthz HTTP/1.1\r\nHost: a\r\nX-Request-Id: h1\r\n\r\n"
                                 "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Request-Id: g1\r\n\r\n"),
                     0);
    struct rp_response head;
    expect_response(&c, 200, "h1", true, &head);
    assert_int_equal(head.body_len, 0);
    assert_non_null(rp_header(&head, "Content-Length"));
    assert_int_equal(atoi(rp_header(&head, "Content-Length")), get.body_len);
    expect_response(&c, 200, "g1", false, NULL);
    rp_response_free(&head);
    rp_response_free(&get);
    rp_conn_close(&c);
    assert_int_equal(rp_server_stop(&srv), 0);
}

static void test_connection_close_and_http10(void **state)
{
    rp_must_start(&srv, one_core);
    struct rp_conn c;
    size_t extra = 1;

    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    assert_int_equal(rp_send_str(c.fd, "GET /healthz HTTP/1.1\r\nHost: a\r\n"
                                       "Connection: close\r\nX-Request-Id: c1\r\n\r\n"),
                     0);
    expect_response(&c, 200, "c1", false, NULL);
    assert_int_equal(rp_conn_wait_close(&c, 3000, &extra), 0);
    assert_int_equal(extra, 0);
    rp_conn_close(&c);

    /* HTTP/1.0 without keep-alive: answer, then close. */
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    assert_int_equal(rp_send_str(c.fd, "GET /healthz HTTP/1.0\r\nX-Request-Id: o1\r\n\r\n"), 0);
    expect_response(&c, 200, "o1", false, NULL);
    assert_int_equal(rp_conn_wait_close(&c, 3000, &extra), 0);
    rp_conn_close(&c);

    /* HTTP/1.0 with keep-alive: the connection stays usable. */
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    for (int i = 0; i < 3; i++) {
        char req[128], id[16];
        snprintf(id, sizeof(id), "k%d", i);
        snprintf(req, sizeof(req),
                 "GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\nX-Request-Id: %s\r\n\r\n", id);
        assert_int_equal(rp_send_str(c.fd, req), 0);
        expect_response(&c, 200, id, false, NULL);
    }
    rp_conn_close(&c);
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* Bytes of two requests (one chunked POST) cut at awkward places, 30 ms apart. */
static void test_split_writes(void **state)
{
    rp_must_start(&srv, one_core);
    static const char *const pieces[] = {
        "G",
        "ET /hea",
        "lthz HTTP/1.1\r",
        "\nHost: a\r\nX-Requ",
        "est-Id: s1\r\n\r",
        "\n" /* s1 complete */,
        "POST /healthz HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chu",
        "nked\r\nX-Request-Id: s2\r\n",
        "\r\n",
        "5",
        "\r",
        "\nhel",
        "lo\r",
        "\n1",
        "0\r\n0123456789abcdef\r\n0\r",
        "\n\r",
        "\n" /* s2 complete */ "GET /nope HTTP/1.1\r\nHost: a\r\nX-Request-Id: s3\r\n\r\nGET /he",
        "althz HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nX-Request-Id: s4\r\n\r\n",
    };
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    for (size_t i = 0; i < sizeof(pieces) / sizeof(pieces[0]); i++) {
        assert_int_equal(rp_send_str(c.fd, pieces[i]), 0);
        rp_sleep_ms(30);
    }
    expect_response(&c, 200, "s1", false, NULL);
    expect_response(&c, 405, "s2", false, NULL);
    struct rp_response nf;
    expect_response(&c, 404, "s3", false, &nf);
    rp_assert_error_body(&nf, "not_found");
    rp_response_free(&nf);
    expect_response(&c, 200, "s4", false, NULL);
    rp_conn_close(&c);
    assert_int_equal(rp_server_stop(&srv), 0);
}

static void test_expect_continue(void **state)
{
    rp_must_start(&srv, one_core);
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    assert_int_equal(rp_send_str(c.fd, "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n"
                                       "Expect: 100-continue\r\nX-Request-Id: e1\r\n\r\n"),
                     0);
    struct rp_response r;
    int err = rp_read_response(&c, &r, false, 3000);
    if (err)
        fail_msg("no interim response to Expect: 100-continue (read error %d)", err);
    assert_int_equal(r.status, 100);
    assert_int_equal(r.body_len, 0);
    assert_string_equal(rp_header(&r, "X-Request-Id"), "e1");
    rp_response_free(&r);
    assert_int_equal(rp_send_str(c.fd, "0123456789"), 0);
    expect_response(&c, 405, "e1", false, NULL);
    /* Without an X-Request-Id the 100 and the answer carry the same made-up id. */
    assert_int_equal(rp_send_str(c.fd, "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 2\r\n"
                                       "Expect: 100-continue\r\n\r\n"),
                     0);
    assert_int_equal(rp_read_response(&c, &r, false, 3000), 0);
    assert_int_equal(r.status, 100);
    char made[160];
    assert_non_null(rp_header(&r, "X-Request-Id"));
    snprintf(made, sizeof(made), "%s", rp_header(&r, "X-Request-Id"));
    rp_response_free(&r);
    assert_int_equal(rp_send_str(c.fd, "ab"), 0);
    expect_response(&c, 405, made, false, NULL);
    /* The body was consumed: the connection is still in sync. */
    assert_int_equal(
        rp_send_str(c.fd, "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Request-Id: e2\r\n\r\n"), 0);
    expect_response(&c, 200, "e2", false, NULL);

    /* A client that sends the body without waiting: at most one 100, then the answer. */
    assert_int_equal(rp_send_str(c.fd,
                                 "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
                                 "Expect: 100-continue\r\nX-Request-Id: e3\r\n\r\nabc"
                                 "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Request-Id: e4\r\n\r\n"),
                     0);
    assert_int_equal(rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS), 0);
    if (r.status == 100) {
        rp_response_free(&r);
        assert_int_equal(rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS), 0);
    }
    assert_int_equal(r.status, 405);
    assert_string_equal(rp_header(&r, "X-Request-Id"), "e3");
    rp_response_free(&r);
    expect_response(&c, 200, "e4", false, NULL);
    rp_conn_close(&c);
    assert_int_equal(rp_server_stop(&srv), 0);
}

static int count_lines_in(const char *text)
{
    int lines = 0;
    for (const char *p = text; (p = strstr(p, "\"msg\":\"access\"")) != NULL; p++)
        lines++;
    return lines;
}

/* Waits (at most 3 s) until the server's log holds `want` access lines; returns the
 * log's text (static). */
static const char *log_with_access_lines(int want)
{
    static char text[1 << 16];
    for (int64_t deadline = rp_now_ms() + 3000;; rp_sleep_ms(20)) {
        FILE *f = fopen(srv.log_path, "r");
        assert_non_null(f);
        size_t n = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
        text[n] = '\0';
        int lines = count_lines_in(text);
        if (lines >= want || rp_now_ms() > deadline) {
            if (lines != want)
                fail_msg("%d access lines, want %d:\n%s", lines, want, text);
            return text;
        }
    }
}

static int count_access_lines(void)
{
    static char text[1 << 16];
    FILE *f = fopen(srv.log_path, "r");
    assert_non_null(f);
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    return count_lines_in(text);
}

/* The access line whose request_id is id, or fail. */
static const char *access_line(const char *text, const char *id)
{
    static char line[4096];
    char key[160];
    snprintf(key, sizeof(key), "\"request_id\":\"%s\"", id);
    const char *p = strstr(text, key);
    if (p == NULL)
        fail_msg("no access line with %s:\n%s", key, text);
    const char *start = p;
    while (start > text && start[-1] != '\n')
        start--;
    const char *end = strchr(p, '\n');
    assert_non_null(end);
    snprintf(line, sizeof(line), "%.*s", (int)(end - start), start);
    return line;
}

static void test_access_log(void **state)
{
    const char *const two_cores[] = {"--cores", "2", NULL};
    rp_must_start(&srv, two_cores);
    rp_sleep_ms(200);
    int base = count_access_lines(); /* the start-up's readiness probes */
    const char *const post_hdrs[] = {"Content-Type: application/json", "Idempotency-Key: al-1",
                                     "X-Request-Id: acc-post", NULL};
    struct rp_response r;
    assert_int_equal(rp_request(srv.port, "POST", "/v1/payments/authorize", post_hdrs,
                                "{\"merchant_id\":\"al-m\",\"amount\":100,\"currency\":\"KRW\"}",
                                &r),
                     0);
    assert_int_equal(r.status, 201);
    rp_response_free(&r);
    const char *const get_hdrs[] = {"X-Request-Id: acc-404", NULL};
    assert_int_equal(rp_request(srv.port, "GET", "/v1/payments/pay_000000000000000009?x=1",
                                get_hdrs, NULL, &r),
                     0);
    assert_int_equal(r.status, 404);
    rp_response_free(&r);
    const char *text = log_with_access_lines(base + 2);
    const char *l = access_line(text, "acc-post");
    assert_true(strncmp(l, "{\"ts\":\"", 7) == 0);
    assert_non_null(strstr(l, "\"level\":\"info\",\"msg\":\"access\",\"method\":\"POST\","
                              "\"route\":\"/v1/payments/authorize\",\"status\":201,"
                              "\"duration_us\":"));
    assert_non_null(strstr(l, ",\"core\":"));
    assert_non_null(strstr(l, ",\"client\":\"127.0.0.1:"));
    l = access_line(text, "acc-404");
    /* The route is the template, never the id or the query the client sent. */
    assert_non_null(strstr(l, "\"method\":\"GET\",\"route\":\"/v1/payments/{id}\",\"status\":404,"));
    assert_null(strstr(text, "pay_000000000000000009"));
    assert_int_equal(rp_server_stop(&srv), 0);

    /* off: no access line at all. */
    const char *const off[] = {"--cores", "1", "--access-log", "off", NULL};
    rp_must_start(&srv, off);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(rp_request(srv.port, "GET", "/healthz", NULL, NULL, &r), 0);
        rp_response_free(&r);
    }
    rp_sleep_ms(200);
    log_with_access_lines(0);
    assert_non_null(strstr(log_with_access_lines(0), "\"msg\":\"listening\"")); /* the log works */
    assert_int_equal(rp_server_stop(&srv), 0);

    /* 3: one request in three (counted per core; one core here). The start-up's
     * readiness probes were requests too, so count what 30 more add: exactly 10. */
    const char *const third[] = {"--cores", "1", "--access-log", "3", NULL};
    rp_must_start(&srv, third);
    rp_sleep_ms(200);
    int before = count_access_lines();
    for (int i = 0; i < 30; i++) {
        assert_int_equal(rp_request(srv.port, "GET", "/healthz", NULL, NULL, &r), 0);
        rp_response_free(&r);
    }
    log_with_access_lines(before + 10);
    assert_int_equal(rp_server_stop(&srv), 0);
}

static void test_chunked_then_pipelined_get(void **state)
{
    rp_must_start(&srv, one_core);
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    assert_int_equal(rp_send_str(c.fd,
                                 "POST /healthz HTTP/1.1\r\nHost: a\r\n"
                                 "Transfer-Encoding: chunked\r\nX-Request-Id: ch1\r\n\r\n"
                                 "5\r\nhello\r\n3;ext=1\r\nabc\r\nA\r\n0123456789\r\n"
                                 "0\r\nX-Trailer: t\r\n\r\n"
                                 "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Request-Id: ch2\r\n\r\n"),
                     0);
    expect_response(&c, 405, "ch1", false, NULL);
    expect_response(&c, 200, "ch2", false, NULL);
    /* Upper-case "Chunked" is the same coding. */
    assert_int_equal(rp_send_str(c.fd,
                                 "POST /healthz HTTP/1.1\r\nHost: a\r\n"
                                 "Transfer-Encoding: Chunked\r\nX-Request-Id: ch3\r\n\r\n"
                                 "2\r\nok\r\n0\r\n\r\n"
                                 "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Request-Id: ch4\r\n\r\n"),
                     0);
    expect_response(&c, 405, "ch3", false, NULL);
    expect_response(&c, 200, "ch4", false, NULL);
    rp_conn_close(&c);
    assert_int_equal(rp_server_stop(&srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_curl_keepalive, rp_teardown),
        cmocka_unit_test_teardown(test_common_headers, rp_teardown),
        cmocka_unit_test_teardown(test_not_found_and_method, rp_teardown),
        cmocka_unit_test_teardown(test_head, rp_teardown),
        cmocka_unit_test_teardown(test_connection_close_and_http10, rp_teardown),
        cmocka_unit_test_teardown(test_split_writes, rp_teardown),
        cmocka_unit_test_teardown(test_expect_continue, rp_teardown),
        cmocka_unit_test_teardown(test_chunked_then_pipelined_get, rp_teardown),
        cmocka_unit_test_teardown(test_access_log, rp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
