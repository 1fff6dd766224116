/*
 * The signing gate and the limits of `ringpay serve`, over real sockets (SPEC §3):
 *   - unsigned, unknown key, revoked key, bad signature, stale timestamp: the same 401
 *     authentication_failed body; each single-byte change of method, path, query,
 *     idempotency key, body or timestamp of a signed request: 401; ±299 s pass, ±301 s
 *     fail; a refused request costs no shard work (the shards' job counter stands);
 *   - rotation: two keys work during the overlap, the revoked one fails as soon as the
 *     engine got SIGHUP (checked within a second);
 *   - scopes: merchant (its own routes; another merchant's body 403, payment 404), read
 *     (GETs only), admin (every merchant's GETs, no writes);
 *   - --auth off says so at start and in /readyz's body;
 *   - a merchant over its budget gets 429 with Retry-After while another merchant of
 *     the same shard is served; a client address over its request budget and over its
 *     connection cap gets 429; --allow and --ops-allow answer 403 to others;
 *   - a PROXY header from a peer that is not a listed balancer is a bad request.
 * PROXY through HAProxy is in proxy_test.c.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/ids.h"
#include "engine/sign.h"
#include "harness.h"

static struct rp_server srv;
static struct rp_run_result run;

struct key {
    char id[64];
    char secret[128];
};

/* Copies the string value of "name" in a one-line JSON object into out. */
static void json_field(const char *json, const char *name, char *out, size_t cap)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":\"", name);
    const char *p = strstr(json, pat);
    if (p == NULL)
        fail_msg("no %s in %s", name, json);
    p += strlen(pat);
    const char *e = strchr(p, '"');
    assert_non_null(e);
    snprintf(out, cap, "%.*s", (int)(e - p), p);
}

/* `ringpay keys add` on the server's data directory. merchant NULL: an admin key. */
static void add_key(const char *scope, const char *merchant, struct key *k)
{
    const char *argv[] = {
        "keys",   "add", "--data", srv.data_dir, "--scope", scope, merchant ? "--merchant" : NULL,
        merchant, NULL};
    assert_int_equal(rp_run(argv, NULL, NULL, 10000, &run), 0);
    if (run.code != 0)
        fail_msg("keys add: %d %s", run.code, run.err);
    json_field(run.out, "key_id", k->id, sizeof(k->id));
    json_field(run.out, "secret", k->secret, sizeof(k->secret));
}

static void revoke_key(const struct key *k)
{
    const char *argv[] = {"keys", "revoke", "--data", srv.data_dir, k->id, NULL};
    assert_int_equal(rp_run(argv, NULL, NULL, 10000, &run), 0);
    assert_int_equal(run.code, 0);
}

/* A request as sent: the parts that are signed, and extra header lines. */
struct req {
    const char *method;
    const char *target;
    const char *idem; /* NULL: no Idempotency-Key */
    const char *body; /* NULL: none */
    int64_t ts;
};

static int64_t now_s(void)
{
    return (int64_t)time(NULL);
}

/* The signature of q under k (what a correct client sends). */
static void sign(const struct key *k, const struct req *q, char sig[AUTH_SIGNATURE_BYTES + 1])
{
    char ts[24];
    snprintf(ts, sizeof(ts), "%lld", (long long)q->ts);
    struct sign_request sr = {
        .timestamp = ts,
        .timestamp_len = strlen(ts),
        .method = q->method,
        .method_len = strlen(q->method),
        .target = q->target,
        .target_len = strlen(q->target),
        .idempotency_key = q->idem,
        .idempotency_key_len = q->idem ? strlen(q->idem) : 0,
        .body = q->body,
        .body_len = q->body ? strlen(q->body) : 0,
    };
    struct sign_key sk;
    sign_key_init(&sk, k->secret, strlen(k->secret));
    assert_int_equal(sign_compute(&sk, &sr, sig), 0);
    sig[AUTH_SIGNATURE_BYTES] = '\0';
    sign_key_wipe(&sk);
}

/* Renders q with the given key id, timestamp text and signature (any may be NULL:
 * header left out). */
static size_t render(char *out, size_t cap, const struct req *q, const char *key_id, const char *ts,
                     const char *sig)
{
    int n = snprintf(out, cap, "%s %s HTTP/1.1\r\nHost: a\r\n", q->method, q->target);
    if (key_id)
        n += snprintf(out + n, cap - (size_t)n, "X-Ringpay-Key: %s\r\n", key_id);
    if (ts)
        n += snprintf(out + n, cap - (size_t)n, "X-Ringpay-Timestamp: %s\r\n", ts);
    if (sig)
        n += snprintf(out + n, cap - (size_t)n, "X-Ringpay-Signature: %s\r\n", sig);
    if (q->idem)
        n += snprintf(out + n, cap - (size_t)n, "Idempotency-Key: %s\r\n", q->idem);
    if (q->body)
        n += snprintf(out + n, cap - (size_t)n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                      strlen(q->body), q->body);
    else if (strcmp(q->method, "POST") == 0)
        n += snprintf(out + n, cap - (size_t)n, "Content-Length: 0\r\n\r\n");
    else
        n += snprintf(out + n, cap - (size_t)n, "\r\n");
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static int send_raw(const char *raw, size_t len, struct rp_response *r)
{
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    assert_int_equal(rp_send_all(c.fd, raw, len), 0);
    int err = rp_read_response(&c, r, strncmp(raw, "HEAD ", 5) == 0, RP_IO_TIMEOUT_MS);
    rp_conn_close(&c);
    return err;
}

/* Sends q signed by k; returns the status (and the body when body_out). */
static int call_signed(const struct key *k, const struct req *q, char *body_out, size_t cap)
{
    char sig[AUTH_SIGNATURE_BYTES + 1], ts[24], raw[8192];
    sign(k, q, sig);
    snprintf(ts, sizeof(ts), "%lld", (long long)q->ts);
    size_t len = render(raw, sizeof(raw), q, k->id, ts, sig);
    struct rp_response r;
    assert_int_equal(send_raw(raw, len, &r), 0);
    if (body_out)
        snprintf(body_out, cap, "%s", r.body);
    int st = r.status;
    rp_response_free(&r);
    return st;
}

/* The 401 every authentication failure gets: the same code and message. */
static void expect_401(const char *what, const char *raw, size_t len)
{
    struct rp_response r;
    assert_int_equal(send_raw(raw, len, &r), 0);
    if (r.status != 401)
        fail_msg("%s: status %d, want 401: %s", what, r.status, r.body);
    rp_assert_error_body(&r, "authentication_failed");
    if (strstr(r.body, "\"message\":\"the request is not signed by a valid key\"") == NULL)
        fail_msg("%s: a different 401 message (a hint?): %s", what, r.body);
    rp_response_free(&r);
}

static const char *const auth_on[] = {"--cores", "2", "--auth", "on", NULL};

/* Sends SIGHUP and waits until the log says the keys were reloaded `times` times. */
static void reload(int times)
{
    assert_int_equal(rp_server_signal(&srv, SIGHUP), 0);
    for (int64_t deadline = rp_now_ms() + 3000;; rp_sleep_ms(10)) {
        static char text[1 << 16];
        FILE *f = fopen(srv.log_path, "r");
        assert_non_null(f);
        size_t n = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
        text[n] = '\0';
        int seen = 0;
        for (const char *p = text; (p = strstr(p, "\"keys reloaded\"")) != NULL; p++)
            seen++;
        if (seen >= times)
            return;
        if (rp_now_ms() > deadline)
            fail_msg("no \"keys reloaded\" line after SIGHUP:\n%s", text);
    }
}

#define AUTH_BODY(m) "{\"merchant_id\":\"" m "\",\"amount\":100,\"currency\":\"KRW\"}"

static void test_signatures(void **state)
{
    rp_must_start(&srv, auth_on);
    struct key k;
    add_key("merchant", "au-m1", &k);
    reload(1);
    struct req q = {"POST", "/v1/payments/authorize", "au-1", AUTH_BODY("au-m1"), now_s()};
    assert_int_equal(call_signed(&k, &q, NULL, 0), 201);

    char raw[8192], sig[AUTH_SIGNATURE_BYTES + 1], ts[24];
    size_t len;
    /* Unsigned, half-signed, unknown key, malformed signature. */
    len = render(raw, sizeof(raw), &q, NULL, NULL, NULL);
    expect_401("unsigned", raw, len);
    q.idem = "au-2";
    sign(&k, &q, sig);
    snprintf(ts, sizeof(ts), "%lld", (long long)q.ts);
    len = render(raw, sizeof(raw), &q, k.id, ts, NULL);
    expect_401("no signature", raw, len);
    len = render(raw, sizeof(raw), &q, "rpk_0000000000000000", ts, sig);
    expect_401("unknown key", raw, len);
    len = render(raw, sizeof(raw), &q, k.id, ts, "v1=abc");
    expect_401("short signature", raw, len);

    /* Each single-byte change of a signed part, after signing: 401. */
    static const struct {
        const char *what;
        struct req sent;
    } changed[] = {
        {"method", {"PUT", "/v1/payments/authorize", "au-2", AUTH_BODY("au-m1"), 0}},
        {"path", {"POST", "/v1/payments/authorizE", "au-2", AUTH_BODY("au-m1"), 0}},
        {"query", {"POST", "/v1/payments/authorize?", "au-2", AUTH_BODY("au-m1"), 0}},
        {"idempotency key", {"POST", "/v1/payments/authorize", "au-3", AUTH_BODY("au-m1"), 0}},
        {"body", {"POST", "/v1/payments/authorize", "au-2", AUTH_BODY("au-m2"), 0}},
    };
    for (size_t i = 0; i < sizeof(changed) / sizeof(changed[0]); i++) {
        struct req s = changed[i].sent;
        s.ts = q.ts;
        len = render(raw, sizeof(raw), &s, k.id, ts, sig);
        expect_401(changed[i].what, raw, len);
    }
    char ts2[24];
    snprintf(ts2, sizeof(ts2), "%lld", (long long)q.ts + 1);
    len = render(raw, sizeof(raw), &q, k.id, ts2, sig);
    expect_401("timestamp", raw, len);
    /* A GET: the query is signed too. */
    struct req g = {"GET", "/v1/merchants/au-m1/ledger?limit=5", NULL, NULL, now_s()};
    assert_int_equal(call_signed(&k, &g, NULL, 0), 200);
    sign(&k, &g, sig);
    snprintf(ts, sizeof(ts), "%lld", (long long)g.ts);
    struct req g2 = g;
    g2.target = "/v1/merchants/au-m1/ledger?limit=6";
    len = render(raw, sizeof(raw), &g2, k.id, ts, sig);
    expect_401("GET query", raw, len);

    /* The clock window: ±299 s and ±300 s pass, ±301 s fail. */
    static const int skew[] = {-299, 299, -301, 301};
    for (size_t i = 0; i < 4; i++) {
        char idem[32];
        snprintf(idem, sizeof(idem), "au-skew-%zu", i);
        struct req s = {"POST", "/v1/payments/authorize", idem, AUTH_BODY("au-m1"),
                        now_s() + skew[i]};
        int st = call_signed(&k, &s, NULL, 0);
        if (st != (abs(skew[i]) < 300 ? 201 : 401))
            fail_msg("skew %+d s: status %d", skew[i], st);
    }

    /* Refused requests cost no shard work. */
    double jobs = rp_scrape(srv.port, "ringpay_shard_jobs_total", NULL);
    for (int i = 0; i < 50; i++) {
        len = render(raw, sizeof(raw), &q, k.id, ts2, sig);
        expect_401("bad signature", raw, len);
    }
    assert_true(rp_scrape(srv.port, "ringpay_shard_jobs_total", NULL) == jobs);
    assert_int_equal(rp_server_stop(&srv), 0);
}

static void test_rotation(void **state)
{
    rp_must_start(&srv, auth_on);
    struct key a, b;
    add_key("merchant", "au-rot", &a);
    reload(1);
    struct req q = {"GET", "/v1/merchants/au-rot/balances", NULL, NULL, now_s()};
    assert_int_equal(call_signed(&a, &q, NULL, 0), 200);
    /* A keep-alive connection opened before the reload keeps working across it. */
    struct rp_conn kc;
    assert_int_equal(rp_conn_open(&kc, srv.port), 0);
    char raw[4096], sig[AUTH_SIGNATURE_BYTES + 1], ts[24];
    sign(&a, &q, sig);
    snprintf(ts, sizeof(ts), "%lld", (long long)q.ts);
    size_t len = render(raw, sizeof(raw), &q, a.id, ts, sig);
    struct rp_response kr;
    assert_int_equal(rp_send_all(kc.fd, raw, len), 0);
    assert_int_equal(rp_read_response(&kc, &kr, false, RP_IO_TIMEOUT_MS), 0);
    assert_int_equal(kr.status, 200);
    rp_response_free(&kr);
    add_key("merchant", "au-rot", &b); /* rotation: a second active key */
    reload(2);
    assert_int_equal(rp_send_all(kc.fd, raw, len), 0);
    assert_int_equal(rp_read_response(&kc, &kr, false, RP_IO_TIMEOUT_MS), 0);
    assert_int_equal(kr.status, 200);
    rp_response_free(&kr);
    rp_conn_close(&kc);
    assert_int_equal(call_signed(&a, &q, NULL, 0), 200);
    assert_int_equal(call_signed(&b, &q, NULL, 0), 200);
    /* A third active key for the merchant is refused by `keys add`. */
    const char *argv[] = {"keys", "add", "--data", srv.data_dir, "--merchant", "au-rot", NULL};
    assert_int_equal(rp_run(argv, NULL, NULL, 10000, &run), 0);
    assert_true(run.code != 0);
    revoke_key(&a);
    assert_int_equal(call_signed(&a, &q, NULL, 0), 200); /* not reloaded yet */
    assert_int_equal(rp_server_signal(&srv, SIGHUP), 0);
    int64_t t0 = rp_now_ms();
    int st = 200;
    while ((st = call_signed(&a, &q, NULL, 0)) == 200 && rp_now_ms() - t0 < 1000)
        rp_sleep_ms(10);
    if (st != 401)
        fail_msg("the revoked key still works %lld ms after SIGHUP", (long long)(rp_now_ms() - t0));
    print_message("revoked key refused %lld ms after SIGHUP\n", (long long)(rp_now_ms() - t0));
    assert_int_equal(call_signed(&b, &q, NULL, 0), 200);
    /* A broken key file keeps the keys in force. */
    char path[RP_PATH_MAX + 8];
    snprintf(path, sizeof(path), "%s/keys", srv.data_dir);
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fputs("garbage\n", f);
    fclose(f);
    assert_int_equal(rp_server_signal(&srv, SIGHUP), 0);
    rp_sleep_ms(300);
    assert_int_equal(call_signed(&b, &q, NULL, 0), 200);
    assert_int_equal(rp_server_stop(&srv), 0);
}

static void test_scopes(void **state)
{
    rp_must_start(&srv, auth_on);
    struct key m1, m2, rd, adm;
    add_key("merchant", "au-s1", &m1);
    add_key("merchant", "au-s2", &m2);
    add_key("read", "au-s1", &rd);
    add_key("admin", NULL, &adm);
    reload(1);
    char body[2048], id[64];
    struct req q = {"POST", "/v1/payments/authorize", "sc-1", AUTH_BODY("au-s1"), now_s()};
    assert_int_equal(call_signed(&m1, &q, body, sizeof(body)), 201);
    json_field(body, "id", id, sizeof(id));
    char path[128];
    snprintf(path, sizeof(path), "/v1/payments/%s", id);
    struct req get = {"GET", path, NULL, NULL, now_s()};
    /* merchant: another merchant's body 403, another merchant's payment 404. */
    struct req other = {"POST", "/v1/payments/authorize", "sc-2", AUTH_BODY("au-s1"), now_s()};
    assert_int_equal(call_signed(&m2, &other, NULL, 0), 403);
    assert_int_equal(call_signed(&m2, &get, NULL, 0), 404);
    assert_int_equal(call_signed(&m1, &get, NULL, 0), 200);
    /* read: its merchant's GETs only. */
    assert_int_equal(call_signed(&rd, &get, NULL, 0), 200);
    struct req wr = {"POST", "/v1/payments/authorize", "sc-3", AUTH_BODY("au-s1"), now_s()};
    assert_int_equal(call_signed(&rd, &wr, body, sizeof(body)), 403);
    assert_non_null(strstr(body, "\"code\":\"forbidden\""));
    struct req bal2 = {"GET", "/v1/merchants/au-s2/balances", NULL, NULL, now_s()};
    assert_int_equal(call_signed(&rd, &bal2, NULL, 0), 403);
    /* admin: every merchant's GETs, no writes. */
    assert_int_equal(call_signed(&adm, &get, NULL, 0), 200);
    assert_int_equal(call_signed(&adm, &bal2, NULL, 0), 200);
    struct req aw = {"POST", "/v1/payments/authorize", "sc-4", AUTH_BODY("au-s1"), now_s()};
    assert_int_equal(call_signed(&adm, &aw, NULL, 0), 403);
    /* The ops endpoints need no signature. */
    struct rp_response r;
    assert_int_equal(rp_request(srv.port, "GET", "/readyz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_string_equal(r.body, "{\"status\":\"ready\"}");
    rp_response_free(&r);
    assert_int_equal(rp_server_stop(&srv), 0);
}

static void test_auth_off_says_so(void **state)
{
    const char *const off[] = {"--cores", "1", "--auth", "off", NULL};
    rp_must_start(&srv, off);
    struct rp_response r;
    assert_int_equal(rp_request(srv.port, "GET", "/readyz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"warning\":\"authentication is off"));
    rp_response_free(&r);
    FILE *f = fopen(srv.log_path, "r");
    char text[8192];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    assert_non_null(strstr(text, "AUTHENTICATION IS OFF"));
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* Two merchants that the engine's shard hash puts on the same shard of n. */
static void same_shard_merchants(unsigned n, char a[32], char b[32])
{
    snprintf(a, 32, "lim-a");
    uint32_t want = engine_shard_of_merchant(a, strlen(a), n);
    for (int i = 0;; i++) {
        snprintf(b, 32, "lim-b%d", i);
        if (engine_shard_of_merchant(b, strlen(b), n) == want)
            return;
    }
}

static void test_merchant_budget(void **state)
{
    const char *const args[] = {"--cores", "2", "--merchant-rps", "1", "--merchant-burst",
                                "3",       NULL};
    rp_must_start(&srv, args);
    char a[32], b[32], body[128], idem[32];
    same_shard_merchants(2, a, b);
    int st[5];
    for (int i = 0; i < 5; i++) {
        snprintf(body, sizeof(body), "{\"merchant_id\":\"%s\",\"amount\":5,\"currency\":\"KRW\"}",
                 a);
        snprintf(idem, sizeof(idem), "mb-%d", i);
        const char *const h[] = {"Content-Type: application/json", NULL, NULL};
        char ih[64];
        snprintf(ih, sizeof(ih), "Idempotency-Key: %s", idem);
        const char *const hdrs[] = {h[0], ih, NULL};
        struct rp_response r;
        assert_int_equal(rp_request(srv.port, "POST", "/v1/payments/authorize", hdrs, body, &r), 0);
        st[i] = r.status;
        if (r.status == 429) {
            rp_assert_error_body(&r, "rate_limited");
            const char *ra = rp_header(&r, "Retry-After");
            assert_non_null(ra);
            assert_true(atoi(ra) >= 1);
        }
        rp_response_free(&r);
    }
    assert_int_equal(st[0], 201);
    assert_int_equal(st[2], 201);
    assert_int_equal(st[3], 429); /* burst of 3, 1/s */
    assert_int_equal(st[4], 429);
    /* Another merchant of the same shard is served. */
    snprintf(body, sizeof(body), "{\"merchant_id\":\"%s\",\"amount\":5,\"currency\":\"KRW\"}", b);
    const char *const hdrs[] = {"Content-Type: application/json", "Idempotency-Key: mb-b", NULL};
    struct rp_response r;
    assert_int_equal(rp_request(srv.port, "POST", "/v1/payments/authorize", hdrs, body, &r), 0);
    assert_int_equal(r.status, 201);
    rp_response_free(&r);
    assert_true(rp_scrape(srv.port, "ringpay_merchant_rate_limited_total", NULL) >= 2);
    assert_int_equal(rp_server_stop(&srv), 0);
}

static void test_client_limits(void **state)
{
    /* A request budget per address: 3 at once. */
    const char *const budget[] = {"--cores", "1", "--client-rps", "1", "--client-burst", "3", NULL};
    rp_must_start(&srv, budget);
    rp_sleep_ms(3200); /* the readiness probes spent tokens: let the burst refill */
    int statuses[6];
    for (int i = 0; i < 6; i++) {
        struct rp_response r;
        assert_int_equal(rp_request(srv.port, "GET", "/healthz", NULL, NULL, &r), 0);
        statuses[i] = r.status;
        if (r.status == 429)
            assert_non_null(rp_header(&r, "Retry-After"));
        rp_response_free(&r);
    }
    assert_int_equal(statuses[0], 200);
    assert_int_equal(statuses[1], 200);
    assert_int_equal(statuses[2], 200);
    assert_int_equal(statuses[5], 429);
    assert_int_equal(rp_server_stop(&srv), 0);

    /* A connection cap per address: the third connection is refused with 429. */
    const char *const cap[] = {"--cores", "1", "--client-max-connections", "2", NULL};
    rp_must_start(&srv, cap);
    rp_sleep_ms(200); /* the readiness probes' connections are closed */
    struct rp_conn c1, c2, c3;
    assert_int_equal(rp_conn_open(&c1, srv.port), 0);
    assert_int_equal(rp_conn_open(&c2, srv.port), 0);
    rp_sleep_ms(100);
    assert_int_equal(rp_conn_open(&c3, srv.port), 0);
    struct rp_response r;
    assert_int_equal(rp_read_response(&c3, &r, false, RP_IO_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 429);
    rp_assert_error_body(&r, "rate_limited");
    rp_response_free(&r);
    rp_conn_close(&c3);
    /* The first two still work, and a closed one frees its place. */
    assert_int_equal(rp_send_str(c1.fd, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    assert_int_equal(rp_read_response(&c1, &r, false, RP_IO_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    rp_response_free(&r);
    rp_conn_close(&c2);
    rp_sleep_ms(100);
    assert_int_equal(rp_request(srv.port, "GET", "/healthz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    rp_response_free(&r);
    rp_conn_close(&c1);
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* Starts the server without the harness's readiness probe (which needs a 200 from
 * /healthz): waits until it answers anything. */
static void start_answering(const char *const args[])
{
    assert_int_equal(rp_server_spawn(&srv, args, NULL, NULL), 0);
    for (int64_t deadline = rp_now_ms() + RP_READY_TIMEOUT_MS;; rp_sleep_ms(20)) {
        struct rp_response r;
        if (rp_request(srv.port, "GET", "/healthz", NULL, NULL, &r) == 0) {
            rp_response_free(&r);
            return;
        }
        if (rp_now_ms() > deadline)
            fail_msg("the server did not answer");
    }
}

static void test_allow_lists(void **state)
{
    const char *const only_ten[] = {"--cores", "1", "--allow", "10.0.0.0/8", NULL};
    start_answering(only_ten);
    struct rp_response r;
    assert_int_equal(rp_request(srv.port, "GET", "/healthz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 403);
    rp_assert_error_body(&r, "forbidden");
    rp_response_free(&r);
    assert_int_equal(rp_server_stop(&srv), 0);

    const char *const ops[] = {"--cores", "1", "--ops-allow", "10.0.0.0/8,::1", NULL};
    rp_must_start(&srv, ops);
    assert_int_equal(rp_request(srv.port, "GET", "/metrics", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 403);
    rp_assert_error_body(&r, "forbidden");
    rp_response_free(&r);
    assert_int_equal(rp_request(srv.port, "GET", "/readyz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 403);
    rp_response_free(&r);
    assert_int_equal(rp_request(srv.port, "GET", "/healthz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    rp_response_free(&r);
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* PROXY headers are honoured only from listed balancers: from anyone else, a bad
 * request and a close. */
static void test_proxy_header_from_a_stranger(void **state)
{
    const char *const args[] = {"--cores", "1", NULL};
    rp_must_start(&srv, args);
    static const char v1[] = "PROXY TCP4 10.1.2.3 10.0.0.1 5555 8080\r\n"
                             "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    struct rp_response r;
    assert_int_equal(send_raw(v1, sizeof(v1) - 1, &r), 0);
    assert_int_equal(r.status, 400);
    rp_response_free(&r);
    static const char v2[] = "\r\n\r\n\0\r\nQUIT\n\x21\x11\x00\x0c"
                             "\x0a\x01\x02\x03\x0a\x00\x00\x01\x15\xb3\x1f\x90"
                             "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n";
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    assert_int_equal(rp_send_all(c.fd, v2, sizeof(v2) - 1), 0);
    int err = rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS);
    if (err == 0) {
        assert_true(r.status == 400);
        rp_response_free(&r);
    }
    assert_int_equal(rp_conn_wait_close(&c, RP_IO_TIMEOUT_MS, NULL), 0);
    rp_conn_close(&c);
    assert_int_equal(rp_server_stop(&srv), 0);
}

/* Log hygiene (SPEC §6): card-like numbers in every field a client controls, a secret and
 * signatures in flight; then every line of the server's log is scanned (rp_server_stop)
 * for the canaries and for any unmasked card number, secret or signature. */
static void test_log_hygiene(void **state)
{
    static const char *const cards[] = {"4111111111111111", "5500005555555559", "378282246310005"};
    for (size_t i = 0; i < 3; i++)
        rp_log_canary(cards[i]);
    rp_must_start(&srv, auth_on);
    static struct key k;
    add_key("merchant", "4111111111111111", &k); /* a merchant id that looks like a card */
    rp_log_canary(k.secret);
    reload(1);
    char body[512], target[256], idem[64];
    snprintf(body, sizeof(body),
             "{\"merchant_id\":\"4111111111111111\",\"amount\":100,\"currency\":\"KRW\","
             "\"reference\":\"card 5500005555555559 / 378282246310005\"}");
    snprintf(idem, sizeof(idem), "idem-4111111111111111");
    struct req q = {"POST", "/v1/payments/authorize", idem, body, now_s()};
    char sig[AUTH_SIGNATURE_BYTES + 1], ts[24], raw[8192];
    sign(&k, &q, sig);
    static char sig_canary[AUTH_SIGNATURE_BYTES + 1];
    memcpy(sig_canary, sig + 3, AUTH_SIGNATURE_BYTES - 3); /* the hex digits */
    rp_log_canary(sig_canary);
    snprintf(ts, sizeof(ts), "%lld", (long long)q.ts);
    size_t len = render(raw, sizeof(raw), &q, k.id, ts, sig);
    /* The request id, a header of the client's: card-like too. */
    static const char rid[] = "X-Request-Id: req-5500005555555559\r\n";
    size_t rl = sizeof(rid) - 1;
    char *p = strstr(raw, "Host: a\r\n");
    assert_non_null(p);
    memmove(p + rl, p, len - (size_t)(p - raw) + 1);
    memcpy(p, rid, rl);
    len += rl;
    struct rp_response r;
    assert_int_equal(send_raw(raw, len, &r), 0);
    assert_int_equal(r.status, 201);
    rp_response_free(&r);
    /* Refused requests with the same material: a bad signature, a card in the path and the
     * query, malformed JSON around a card number. */
    q.idem = "idem-2";
    len = render(raw, sizeof(raw), &q, k.id, ts, sig);
    assert_int_equal(send_raw(raw, len, &r), 0);
    assert_int_equal(r.status, 401);
    rp_response_free(&r);
    snprintf(target, sizeof(target), "/v1/payments/4111111111111111?pan=5500005555555559");
    struct req g = {"GET", target, NULL, NULL, now_s()};
    assert_int_equal(call_signed(&k, &g, NULL, 0), 404);
    struct req bad = {"POST", "/v1/payments/authorize", "idem-3", "{\"4111111111111111\":1",
                      now_s()};
    assert_int_equal(call_signed(&k, &bad, NULL, 0), 400);
    assert_int_equal(rp_server_stop(&srv), 0); /* the log scan */
}

/* `ringpay load --keys` signs every request with its merchant's key: a mixed run
 * (authorize, capture, refund) against the gate gets no 401 at all. */
static void test_load_signs(void **state)
{
    rp_must_start(&srv, auth_on);
    char path[RP_PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/keys.jsonl", srv.dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 8; i++) {
        char m[16];
        snprintf(m, sizeof(m), "m-%d", i);
        const char *argv[] = {"keys", "add", "--data", srv.data_dir, "--merchant", m, NULL};
        assert_int_equal(rp_run(argv, NULL, NULL, 10000, &run), 0);
        assert_int_equal(run.code, 0);
        fputs(run.out, f);
    }
    fclose(f);
    reload(1);
    char target[32];
    snprintf(target, sizeof(target), "127.0.0.1:%d", srv.port);
    const char *argv[] = {"load", "--target",   target,  "--keys",     path,  "--merchants",
                          "8",    "--scenario", "mixed", "--requests", "600", "--connections",
                          "8",    "--json",     NULL};
    assert_int_equal(rp_run(argv, NULL, NULL, 60000, &run), 0);
    if (run.code != 0 || strstr(run.out, "\"signed\":true") == NULL ||
        strstr(run.out, "\"errors\":0,") == NULL || strstr(run.out, "\"401\"") != NULL)
        fail_msg("signed load: exit %d\n%s%s", run.code, run.out, run.err);
    assert_non_null(strstr(run.out, "\"201\":"));
    assert_non_null(strstr(run.out, "\"200\":"));
    assert_int_equal(rp_server_stop(&srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_signatures, rp_teardown),
        cmocka_unit_test_teardown(test_rotation, rp_teardown),
        cmocka_unit_test_teardown(test_scopes, rp_teardown),
        cmocka_unit_test_teardown(test_auth_off_says_so, rp_teardown),
        cmocka_unit_test_teardown(test_merchant_budget, rp_teardown),
        cmocka_unit_test_teardown(test_client_limits, rp_teardown),
        cmocka_unit_test_teardown(test_allow_lists, rp_teardown),
        cmocka_unit_test_teardown(test_proxy_header_from_a_stranger, rp_teardown),
        cmocka_unit_test_teardown(test_log_hygiene, rp_teardown),
        cmocka_unit_test_teardown(test_load_signs, rp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
