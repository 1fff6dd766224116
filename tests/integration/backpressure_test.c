/*
 * Bounded answers and pipelining that slows down instead of cutting off (SPEC §6):
 *   - 10,000 pipelined authorizations in one write get 10,000 answers, in order (the
 *     client writes from one thread and reads from another, as a pipelining client
 *     must; the engine reads only as fast as it answers);
 *   - 192 connections pipelining 64 authorizations each outrun the per-core job pools
 *     (made small with --jobs-per-core, so that this does not depend on timing): the
 *     connections wait for jobs (ringpay_job_pool_empty_total moves) and every request
 *     is still answered, in order;
 *   - 60 clients that pipeline 64 GET ledger?limit=1000 each and never read cost a
 *     bounded amount each (RSS growth within the stated per-connection bound plus the
 *     pools), and the engine keeps serving everyone else meanwhile;
 *   - a complete request followed by an empty line (old HTTP/1.0 clients add a CRLF
 *     after a POST body) and a half-close is answered before the connection closes, and
 *     so is a complete request followed by the start of another and a half-close;
 *   - a shard stalled on its disk (the power-loss shim makes every fsync take 4 s): the
 *     requests that cannot get a job are answered 503 overloaded with Retry-After after
 *     about a second (REACTOR_BUSY_WAIT_MAX_MS) — never a hang — and the engine serves
 *     normally once the disk is back.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/limits.h"
#include "harness.h"

static struct rp_server srv;

/* ASan keeps freed memory in its quarantine (256 MiB by default) and adds shadow memory,
 * so under it RSS measures ASan, not the engine: the RSS bound is enforced by the
 * ordinary build of the suite. */
#if defined(__SANITIZE_ADDRESS__)
static const bool under_asan = true;
#else
static const bool under_asan = false;
#endif

#define AUTH_PATH "/v1/payments/authorize"

/* Appends authorization i (X-Request-Id "<tag><i>", a unique key) to buf. */
static size_t append_authorize(char *buf, size_t cap, const char *tag, int i, const char *merchant)
{
    char body[128];
    int bl =
        snprintf(body, sizeof(body), "{\"merchant_id\":\"%s\",\"amount\":%d,\"currency\":\"KRW\"}",
                 merchant, 100 + i);
    int n = snprintf(buf, cap,
                     "POST " AUTH_PATH " HTTP/1.1\r\nHost: a\r\nContent-Type: application/json\r\n"
                     "Idempotency-Key: %s%d\r\nX-Request-Id: %s%d\r\nContent-Length: %d\r\n\r\n%s",
                     tag, i, tag, i, bl, body);
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static char *build_authorizations(int n, const char *tag, const char *merchant, size_t *len)
{
    size_t cap = (size_t)n * 320 + 1;
    char *buf = malloc(cap);
    assert_non_null(buf);
    size_t off = 0;
    for (int i = 0; i < n; i++)
        off += append_authorize(buf + off, cap - off, tag, i, merchant);
    *len = off;
    return buf;
}

struct writer {
    pthread_t tid;
    int fd;
    const char *buf;
    size_t len;
    int err;
};

/* Writes the whole buffer with blocking sends: the engine's pace sets ours. */
static void *write_all(void *arg)
{
    struct writer *w = arg;
    size_t off = 0;
    while (off < w->len) {
        ssize_t k = send(w->fd, w->buf + off, w->len - off, MSG_NOSIGNAL);
        if (k < 0 && errno == EINTR)
            continue;
        if (k <= 0) {
            w->err = errno ? errno : EPIPE;
            return NULL;
        }
        off += (size_t)k;
    }
    return NULL;
}

/* Reads n answers and checks each is 201 with X-Request-Id "<tag><i>" in order. */
static void expect_created_in_order(struct rp_conn *c, int n, const char *tag)
{
    for (int i = 0; i < n; i++) {
        struct rp_response r;
        int err = rp_read_response(c, &r, false, 20000);
        if (err)
            fail_msg("%s: answer %d of %d: error %d (the connection was cut off?)", tag, i, n, err);
        char want[32];
        snprintf(want, sizeof(want), "%s%d", tag, i);
        const char *rid = rp_header(&r, "X-Request-Id");
        if (r.status != 201 || rid == NULL || strcmp(rid, want) != 0)
            fail_msg("%s: answer %d: status %d id %s, want 201 %s: %s", tag, i, r.status,
                     rid ? rid : "(none)", want, r.body);
        rp_response_free(&r);
    }
}

static void test_ten_thousand_in_one_write(void **state)
{
    const char *const args[] = {"--cores", "2", "--access-log", "off", NULL};
    rp_must_start(&srv, args);
    enum { N = 10000 };
    size_t len;
    char *buf = build_authorizations(N, "t", "bp-m1", &len);
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    struct writer w = {.fd = c.fd, .buf = buf, .len = len};
    assert_int_equal(pthread_create(&w.tid, NULL, write_all, &w), 0);
    expect_created_in_order(&c, N, "t");
    pthread_join(w.tid, NULL);
    assert_int_equal(w.err, 0);
    free(buf);
    /* The connection is still usable afterwards. */
    assert_int_equal(rp_send_str(c.fd, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    struct rp_response r;
    assert_int_equal(rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    rp_response_free(&r);
    rp_conn_close(&c);
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* More requests in flight than the job pools hold: connections wait, nothing fails. */
static void test_pools_exhausted_wait(void **state)
{
    const char *const args[] = {"--cores", "2", "--access-log", "off", "--jobs-per-core",
                                "64",      NULL};
    rp_must_start(&srv, args);
    enum { CONNS = 192, EACH = CONN_PIPELINE_MAX };
    _Static_assert(CONNS * EACH > 2 * 64 * 16, "far more in flight than both cores' pools");
    static struct rp_conn c[CONNS];
    static struct writer w[CONNS];
    static char *bufs[CONNS];
    static char tags[CONNS][12];
    rp_raise_nofile(CONNS + 64);
    for (int i = 0; i < CONNS; i++) {
        assert_int_equal(rp_conn_open(&c[i], srv.port), 0);
        snprintf(tags[i], sizeof(tags[i]), "x%d-", i);
        char merchant[16];
        snprintf(merchant, sizeof(merchant), "bp-x%d", i % 16);
        size_t len;
        bufs[i] = build_authorizations(EACH, tags[i], merchant, &len);
        w[i] = (struct writer){.fd = c[i].fd, .buf = bufs[i], .len = len};
    }
    /* Every connection's whole pipeline lands at once. */
    for (int i = 0; i < CONNS; i++)
        assert_int_equal(rp_send_all(c[i].fd, bufs[i], w[i].len), 0);
    for (int i = 0; i < CONNS; i++) {
        expect_created_in_order(&c[i], EACH, tags[i]);
        rp_conn_close(&c[i]);
        free(bufs[i]);
    }
    double waited = rp_scrape(srv.port, "ringpay_job_pool_empty_total", NULL);
    print_message("job pool empty: %.0f times for %d requests\n", waited, CONNS * EACH);
    assert_true(waited > 0);
    assert_int_equal(rp_scrape(srv.port, "ringpay_jobs_in_use", NULL), 0);
    assert_int_equal(rp_server_stop(&srv), 0);
}

static long rss_kib(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return -1;
    long kib = -1;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %ld kB", &kib) == 1)
            break;
    fclose(f);
    return kib;
}

/* One request on a fresh connection, timed; the status, or -1. */
static int timed_call(const char *method, const char *path, const char *const hdrs[],
                      const char *body, int64_t *ms)
{
    int64_t t0 = rp_now_ms();
    struct rp_response r;
    if (rp_request(srv.port, method, path, hdrs, body, &r) != 0)
        return -1;
    *ms = rp_now_ms() - t0;
    int st = r.status;
    rp_response_free(&r);
    return st;
}

static void test_non_reading_clients_are_bounded(void **state)
{
    const char *const args[] = {"--cores", "2", "--access-log", "off", NULL};
    rp_must_start(&srv, args);
    /* A merchant with 1,000 ledger entries: a full page is ~190 KB of JSON. */
    size_t len;
    char *buf = build_authorizations(1000, "L", "bp-ledger", &len);
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    struct writer w = {.fd = c.fd, .buf = buf, .len = len};
    assert_int_equal(pthread_create(&w.tid, NULL, write_all, &w), 0);
    expect_created_in_order(&c, 1000, "L");
    pthread_join(w.tid, NULL);
    free(buf);
    rp_conn_close(&c);

    long before = rss_kib(srv.pid);
    enum { CLIENTS = 60, EACH = 64 };
    static const char page[] =
        "GET /v1/merchants/bp-ledger/ledger?limit=1000 HTTP/1.1\r\nHost: a\r\n\r\n";
    static char wire[EACH * sizeof(page)];
    size_t wl = 0;
    for (int i = 0; i < EACH; i++)
        wl += (size_t)snprintf(wire + wl, sizeof(wire) - wl, "%s", page);
    int fds[CLIENTS];
    for (int i = 0; i < CLIENTS; i++) {
        fds[i] = rp_connect(srv.port, RP_IO_TIMEOUT_MS);
        assert_true(fds[i] >= 0);
        int small = 4096;
        setsockopt(fds[i], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
        assert_int_equal(rp_send_all(fds[i], wire, wl), 0);
    }
    rp_sleep_ms(2000); /* they are answered as far as their budgets allow, then stall */
    long after = rss_kib(srv.pid);

    /* Everyone else is served meanwhile. */
    int64_t ms = 0;
    assert_int_equal(timed_call("GET", "/healthz", NULL, NULL, &ms), 200);
    assert_true(ms < 1000);
    const char *const hdrs[] = {"Content-Type: application/json", "Idempotency-Key: bp-other",
                                NULL};
    assert_int_equal(timed_call("POST", AUTH_PATH, hdrs,
                                "{\"merchant_id\":\"bp-other\",\"amount\":5,\"currency\":\"KRW\"}",
                                &ms),
                     201);
    assert_true(ms < 1000);
    assert_int_equal(timed_call("GET", "/v1/merchants/bp-ledger/ledger?limit=10", NULL, NULL, &ms),
                     200);
    assert_true(ms < 1000);

    /* The bound: per connection, its budget and one largest answer, held in at most two
     * buffers of up to twice their content; per core, the large jobs (touched once). */
    long per_conn = 2L * (CONN_OUT_MAX_BYTES + CONN_ANSWER_MAX_BYTES) / 1024;
    long pools = 2L * JOB_LARGE_PER_CORE * (JOB_LARGE_DATA_BYTES + 4096) / 1024;
    long bound = CLIENTS * per_conn + pools;
    print_message("RSS %ld KiB -> %ld KiB: %ld KiB for %d non-reading clients (bound %ld KiB)\n",
                  before, after, after - before, CLIENTS, bound);
    assert_true(before > 0 && after > 0);
    if (under_asan)
        print_message("ASan build: the RSS bound is not checked\n");
    else
        assert_true(after - before <= bound);
    for (int i = 0; i < CLIENTS; i++)
        rp_close_rst(fds[i]);
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* Sends raw, half-closes, and reads every answer until the server closes. */
static int answers_after_half_close(const char *raw, int *statuses, int max)
{
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    assert_int_equal(rp_send_str(c.fd, raw), 0);
    assert_int_equal(shutdown(c.fd, SHUT_WR), 0);
    int n = 0;
    while (n < max) {
        struct rp_response r;
        int err = rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS);
        if (err == -ECONNRESET)
            break; /* closed after the last answer */
        if (err)
            fail_msg("answer %d: error %d", n, err);
        statuses[n++] = r.status;
        rp_response_free(&r);
    }
    assert_int_equal(rp_conn_wait_close(&c, RP_IO_TIMEOUT_MS, NULL), 0);
    rp_conn_close(&c);
    return n;
}

static void test_half_close_after_requests(void **state)
{
    const char *const args[] = {"--cores", "1", NULL};
    rp_must_start(&srv, args);
    static const char post[] = "POST " AUTH_PATH " HTTP/1.0\r\nContent-Type: application/json\r\n"
                               "Idempotency-Key: hc-1\r\nContent-Length: 52\r\n\r\n"
                               "{\"merchant_id\":\"hc-m\",\"amount\":100,\"currency\":\"KRW\"}";
    _Static_assert(sizeof("{\"merchant_id\":\"hc-m\",\"amount\":100,\"currency\":\"KRW\"}") - 1 ==
                       52,
                   "body length");
    int st[4];
    char raw[1024];
    /* HTTP/1.0 POST + the extra CRLF old clients send + half-close. */
    snprintf(raw, sizeof(raw), "%s\r\n", post);
    assert_int_equal(answers_after_half_close(raw, st, 4), 1);
    assert_int_equal(st[0], 201);
    /* HTTP/1.1 keep-alive: a GET, an empty line, half-close. */
    assert_int_equal(
        answers_after_half_close("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n\r\n", st, 4), 1);
    assert_int_equal(st[0], 200);
    /* Two complete requests and the start of a third: two answers, then close. */
    assert_int_equal(answers_after_half_close("GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"
                                              "GET /readyz HTTP/1.1\r\nHost: a\r\n\r\n"
                                              "GET /heal",
                                              st, 4),
                     2);
    assert_int_equal(st[0], 200);
    assert_int_equal(st[1], 200);
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* The engine under the power-loss shim (its disk model, with no cut): data and shadow
 * directories of the test's own, so the shim can be pointed at them. */
static char stall_data[RP_PATH_MAX], stall_shadow[RP_PATH_MAX];

static void set_slow_disk(long us)
{
    char path[RP_PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/slow", stall_shadow);
    if (us == 0) {
        unlink(path);
        return;
    }
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "%ld\n", us);
    fclose(f);
}

static void test_stalled_disk_is_reported_not_hung(void **state)
{
    char base[] = "/tmp/ringpay-stall-XXXXXX";
    assert_non_null(mkdtemp(base));
    snprintf(stall_data, sizeof(stall_data), "%s/data", base);
    snprintf(stall_shadow, sizeof(stall_shadow), "%s/shadow", base);
    assert_int_equal(mkdir(stall_data, 0700), 0);
    assert_int_equal(mkdir(stall_shadow, 0700), 0);
    char root_env[RP_PATH_MAX + 16], shadow_env[RP_PATH_MAX + 16];
    snprintf(root_env, sizeof(root_env), "RP_PL_ROOT=%s", stall_data);
    snprintf(shadow_env, sizeof(shadow_env), "RP_PL_SHADOW=%s", stall_shadow);
    const char *const env[] = {"LD_PRELOAD=" RP_PL_SHIM, root_env, shadow_env,
                               "ASAN_OPTIONS=verify_asan_link_order=0:detect_leaks=0", NULL};
    const char *const args[] = {"--cores", "1",      "--jobs-per-core", "16", "--access-log",
                                "off",     "--data", stall_data,        NULL};
    assert_int_equal(rp_server_start(&srv, args, env), 0);

    set_slow_disk(4000000); /* every fsync now takes 4 s */
    /* Connection a takes every job of the core (16) and waits for the stalled commit;
     * connection b's requests then find no job, and no job comes back for seconds. */
    size_t len;
    char *buf = build_authorizations(16, "sa", "bp-stall", &len);
    struct rp_conn a, c;
    assert_int_equal(rp_conn_open(&a, srv.port), 0);
    assert_int_equal(rp_send_all(a.fd, buf, len), 0);
    free(buf);
    rp_sleep_ms(200);
    buf = build_authorizations(8, "sb", "bp-stall", &len);
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    int64_t t0 = rp_now_ms();
    assert_int_equal(rp_send_all(c.fd, buf, len), 0);
    free(buf);
    for (int i = 0; i < 8; i++) {
        struct rp_response r;
        int err = rp_read_response(&c, &r, false, 20000);
        if (err)
            fail_msg("answer %d: error %d", i, err);
        if (r.status != 503)
            fail_msg("b's answer %d: status %d, want 503: %s", i, r.status, r.body);
        rp_assert_error_body(&r, "overloaded");
        assert_non_null(rp_header(&r, "Retry-After"));
        rp_response_free(&r);
    }
    int64_t waited = rp_now_ms() - t0;
    print_message("stalled disk: the requests that found no job got 503 after %lld ms\n",
                  (long long)waited);
    assert_true(waited >= 900 && waited < 3000); /* about REACTOR_BUSY_WAIT_MAX_MS */
    for (int i = 0; i < 16; i++) {               /* a's, once the disk let their commit through */
        struct rp_response r;
        assert_int_equal(rp_read_response(&a, &r, false, 30000), 0);
        assert_int_equal(r.status, 201);
        rp_response_free(&r);
    }
    rp_conn_close(&a);
    /* The disk is back: everything works again. */
    set_slow_disk(0);
    assert_int_equal(rp_send_str(c.fd, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    struct rp_response r;
    assert_int_equal(rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    rp_response_free(&r);
    rp_conn_close(&c);
    const char *const h[] = {"Content-Type: application/json", "Idempotency-Key: st-after", NULL};
    assert_int_equal(rp_request(srv.port, "POST", AUTH_PATH, h,
                                "{\"merchant_id\":\"bp-stall\",\"amount\":5,\"currency\":\"KRW\"}",
                                &r),
                     0);
    assert_int_equal(r.status, 201);
    rp_response_free(&r);
    assert_int_equal(rp_server_stop(&srv), 0);
    char cmd[RP_PATH_MAX + 16];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", base);
    assert_int_equal(system(cmd), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_ten_thousand_in_one_write, rp_teardown),
        cmocka_unit_test_teardown(test_pools_exhausted_wait, rp_teardown),
        cmocka_unit_test_teardown(test_non_reading_clients_are_bounded, rp_teardown),
        cmocka_unit_test_teardown(test_half_close_after_requests, rp_teardown),
        cmocka_unit_test_teardown(test_stalled_disk_is_reported_not_hung, rp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
