/*
 * `ringpay settle` through its HTTP API, without Kafka (--kafka-brokers none): the real
 * binary on loopback, its store filled beforehand with events made by the real engine
 * (tests/store/settle_gen.h) through settle_store_apply, as the consumer would.
 *
 * The events are the worked example of docs/backoffice.md in UTC: merchant m-1, EUR,
 * payments A (authorized 10000, captured 8000) and B (5000) on 2026-11-24, C (12000)
 * and E (3000) on 2026-11-25, a refund of 2000 of A on the 25th, a voided payment D,
 * and one poison message. settle's clock (RINGPAY_SETTLE_TEST_CLOCK) is 2026-11-25
 * 12:00 UTC, so the 24th is due (it ended at midnight, plus 10 minutes of grace) and
 * the close timer closes it at start; the 25th stays open.
 *
 * Tests: listings (filters, paging, strict queries, CSV), a settlement by id, the close
 * route (future date refused, idempotent), reconciliation (every category, a wrong
 * header, the media type, the size bound, a whole chunked body and a streamed one,
 * items, rematch), the admin gate (unsigned 401, a merchant key 403, an admin key
 * signing a streamed upload, a body that does not match its signature 401 with nothing
 * stored), one process per data directory, and `settle dlq list/replay` afterwards.
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

#include "engine/settle.h"
#include "engine/sign.h"
#include "harness.h"
#include "pay_client.h"
#include "store/settle_store.h"
#include "tests/store/settle_gen.h"

static struct rp_server st;
static struct rp_run_result run;
static char pay_a[ID_BYTES + 1], pay_b[ID_BYTES + 1], pay_c[ID_BYTES + 1], pay_e[ID_BYTES + 1];

static const char *const clock_env[] = {"RINGPAY_SETTLE_TEST_CLOCK=2026-11-25T12:00:00.000Z", NULL};

static int64_t at(const char *t)
{
    int64_t ms;
    assert_int_equal(settle_time_parse(t, strlen(t), &ms), 0);
    return ms;
}

/* The worked example's events, applied to the store in st.data_dir. */
static void fill_store(void)
{
    struct settle_gen g;
    settle_gen_init(&g, 3, 64);
    char d[ID_BYTES + 1];
    assert_int_equal(
        settle_gen_authorize(&g, "m-1", "EUR", 10000, at("2026-11-24T10:00:00.000Z"), pay_a), 201);
    assert_int_equal(settle_gen_capture(&g, pay_a, 8000, at("2026-11-24T10:05:00.000Z")), 200);
    assert_int_equal(
        settle_gen_authorize(&g, "m-1", "EUR", 5000, at("2026-11-24T11:00:00.000Z"), pay_b), 201);
    assert_int_equal(settle_gen_capture(&g, pay_b, 5000, at("2026-11-24T11:05:00.000Z")), 200);
    assert_int_equal(settle_gen_authorize(&g, "m-1", "EUR", 700, at("2026-11-24T12:00:00.000Z"), d),
                     201);
    assert_int_equal(settle_gen_void(&g, d, at("2026-11-24T12:01:00.000Z")), 200);
    assert_int_equal(
        settle_gen_authorize(&g, "m-1", "EUR", 12000, at("2026-11-25T01:00:00.000Z"), pay_c), 201);
    assert_int_equal(settle_gen_capture(&g, pay_c, 12000, at("2026-11-25T01:05:00.000Z")), 200);
    assert_int_equal(settle_gen_refund(&g, pay_a, 2000, at("2026-11-25T08:00:00.000Z")), 201);
    assert_int_equal(
        settle_gen_authorize(&g, "m-1", "EUR", 3000, at("2026-11-25T09:00:00.000Z"), pay_e), 201);
    assert_int_equal(settle_gen_capture(&g, pay_e, 3000, at("2026-11-25T09:05:00.000Z")), 200);

    size_t n = settle_gen_events(&g);
    struct settle_msg msgs[32];
    assert_true(n + 1 <= 32);
    for (size_t i = 0; i < n; i++) {
        size_t len;
        const char *topic;
        const char *v = settle_gen_event(&g, i, &len, &topic);
        msgs[i] = (struct settle_msg){.topic = topic,
                                      .topic_len = strlen(topic),
                                      .partition = 0,
                                      .offset = (int64_t)i,
                                      .key = "m-1",
                                      .key_len = 3,
                                      .value = v,
                                      .value_len = len};
    }
    static const char poison[] = "{\"event_id\":\"not an event\"";
    msgs[n] = (struct settle_msg){.topic = "payment.captured",
                                  .topic_len = 16,
                                  .partition = 1,
                                  .offset = 0,
                                  .value = poison,
                                  .value_len = sizeof(poison) - 1};
    struct settle_store *s;
    char why[256];
    assert_int_equal(settle_store_open(&s, st.data_dir, NULL, why, sizeof(why)), 0);
    struct settle_calendar cal;
    settle_calendar_init(&cal, settle_offset_utc, NULL, 0, 10 * 60 * 1000);
    assert_int_equal(settle_store_apply(s, &cal, msgs, n + 1, at("2026-11-25T11:00:00.000Z")), 0);
    assert_int_equal(msgs[n].result, SETTLE_MSG_DEAD_LETTER);
    settle_store_close(s);
    settle_gen_free(&g);
}

/* Starts settle with settle's clock from env (clock_env unless given). */
static void start_at(const char *const extra[], const char *const env[])
{
    const char *args[16] = {"--kafka-brokers", "none", "--access-log", "off"};
    int n = 4;
    for (int i = 0; extra && extra[i]; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    if (rp_server_respawn(&st, "settle", args, env) != 0)
        fail_msg("settle did not start");
}

static void start(const char *const extra[])
{
    start_at(extra, clock_env);
}

static int setup(void **state)
{
    (void)state;
    assert_int_equal(rp_server_prepare(&st), 0);
    fill_store();
    return 0;
}

static int teardown(void **state)
{
    int rc = rp_server_stop(&st);
    assert_int_equal(rc, 0);
    return rp_teardown(state);
}

/* ---- requests ------------------------------------------------------------------- */

static int get(const char *path, struct rp_response *r)
{
    return rp_request(st.port, "GET", path, NULL, NULL, r);
}

/* A POST with the given Idempotency-Key. */
static int post_key(const char *path, const char *type, const char *body, const char *key,
                    struct rp_response *r)
{
    char ct[64], k[300];
    snprintf(ct, sizeof(ct), "Content-Type: %s", type);
    snprintf(k, sizeof(k), "Idempotency-Key: %s", key);
    const char *h[] = {k, ct, NULL};
    return rp_request(st.port, "POST", path, h, body, r);
}

/* A POST with a key of its own (settle stores answers by key: a reused key replays). */
static int post(const char *path, const char *type, const char *body, struct rp_response *r)
{
    static unsigned seq;
    char key[32];
    snprintf(key, sizeof(key), "k-%u", ++seq);
    return post_key(path, type, body, key, r);
}

static void expect_status(struct rp_response *r, int status)
{
    if (r->status != status)
        fail_msg("status %d, want %d: %s", r->status, status, r->body);
}

/* Asserts "name":value (an integer) in a JSON body, at any depth (the first one). */
static void expect_int(const char *body, const char *name, long long want)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", name);
    const char *p = strstr(body, pat);
    char *end;
    long long v = p ? strtoll(p + strlen(pat), &end, 10) : 0;
    if (p == NULL || end == p + strlen(pat))
        fail_msg("no %s in %s", name, body);
    if (v != want)
        fail_msg("%s is %lld, want %lld: %s", name, v, want, body);
}

static void expect_error(const char *method, const char *path, const char *type, const char *body,
                         int status, const char *code, const char *param)
{
    struct rp_response r;
    assert_int_equal(strcmp(method, "GET") == 0 ? get(path, &r) : post(path, type, body, &r), 0);
    expect_status(&r, status);
    rp_assert_error_body(&r, code);
    if (param) {
        char c[64], p[64];
        assert_true(pc_error_parts(r.body, c, sizeof(c), p, sizeof(p)));
        if (strcmp(p, param) != 0)
            fail_msg("param %s, want %s: %s", p, param, r.body);
    }
    rp_response_free(&r);
}

/* ---- settlements ------------------------------------------------------------------- */

static void test_settlements(void **state)
{
    (void)state;
    start(NULL);
    struct rp_response r;
    /* The timer closed the 24th at start; the 25th is open. */
    assert_int_equal(get("/v1/settlements/stl_20261124_EUR_m-1", &r), 0);
    expect_status(&r, 200);
    assert_non_null(strstr(r.body, "\"status\":\"closed\""));
    expect_int(r.body, "gross", 13000);
    expect_int(r.body, "net", 13000);
    expect_int(r.body, "capture_count", 2);
    rp_response_free(&r);
    assert_int_equal(get("/v1/settlements/stl_20261125_EUR_m-1", &r), 0);
    expect_status(&r, 200);
    assert_non_null(strstr(r.body, "\"status\":\"open\""));
    expect_int(r.body, "gross", 15000);
    expect_int(r.body, "refunds", 2000);
    expect_int(r.body, "net", 13000);
    assert_non_null(strstr(r.body, "\"closed_at\":null"));
    rp_response_free(&r);

    /* Listing, filters and paging. */
    assert_int_equal(get("/v1/settlements?merchant_id=m-1&status=closed", &r), 0);
    expect_status(&r, 200);
    assert_non_null(strstr(r.body, "stl_20261124_EUR_m-1"));
    assert_null(strstr(r.body, "stl_20261125_EUR_m-1"));
    rp_response_free(&r);
    assert_int_equal(get("/v1/settlements?limit=1", &r), 0);
    assert_non_null(strstr(r.body, "\"next_after\":1"));
    rp_response_free(&r);
    assert_int_equal(get("/v1/settlements?after=1&limit=", &r), 0);
    assert_non_null(strstr(r.body, "stl_20261125_EUR_m-1"));
    assert_non_null(strstr(r.body, "\"next_after\":null"));
    rp_response_free(&r);
    assert_int_equal(get("/v1/settlements?date=2026-11-25&format=csv", &r), 0);
    expect_status(&r, 200);
    assert_non_null(strstr(rp_header(&r, "content-type"), "text/csv"));
    assert_int_equal(strncmp(r.body, "id,merchant_id,currency,business_date,status,", 45), 0);
    assert_non_null(strstr(r.body, "\r\nstl_20261125_EUR_m-1,m-1,EUR,2026-11-25,open,15000,2000,0,"
                                   "13000,2,1,\r\n"));
    rp_response_free(&r);
    expect_error("GET", "/v1/settlements?status=paid", NULL, NULL, 400, "invalid_param", "status");
    expect_error("GET", "/v1/settlements?limit=1001", NULL, NULL, 400, "invalid_param", "limit");
    expect_error("GET", "/v1/settlements?color=red", NULL, NULL, 400, "invalid_param", "query");
    expect_error("GET", "/v1/settlements?date=2026-02-30", NULL, NULL, 400, "invalid_param",
                 "date");
    expect_error("GET", "/v1/settlements/stl_nope", NULL, NULL, 404, "not_found", NULL);
    expect_error("GET", "/v1/nothing", NULL, NULL, 404, "not_found", NULL);

    /* Closing: a future date is refused; today closes, once. */
    const char *json = "application/json";
    expect_error("POST", "/v1/settlements/close", json, "{\"date\":\"2026-11-26\"}", 400,
                 "invalid_param", "date");
    expect_error("POST", "/v1/settlements/close", json, "{\"date\":25}", 400, "invalid_param",
                 "date");
    expect_error("POST", "/v1/settlements/close", json, "{\"date\":", 400, "invalid_json", NULL);
    expect_error("POST", "/v1/settlements/close?x=1", json, "{\"date\":\"2026-11-25\"}", 400,
                 "invalid_param", "query");
    const char *no_key[] = {"Content-Type: application/json", NULL};
    assert_int_equal(rp_request(st.port, "POST", "/v1/settlements/close", no_key,
                                "{\"date\":\"2026-11-25\"}", &r),
                     0);
    expect_status(&r, 400);
    rp_assert_error_body(&r, "missing_idempotency_key");
    rp_response_free(&r);
    expect_error("GET", "/v1/settlements/close", NULL, NULL, 405, "method_not_allowed", NULL);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(post("/v1/settlements/close", json, "{\"date\":\"2026-11-25\"}", &r), 0);
        expect_status(&r, 200);
        expect_int(r.body, "batches_closed", i == 0 ? 1 : 0);
        rp_response_free(&r);
    }
    assert_int_equal(get("/v1/settlements?status=open", &r), 0);
    assert_non_null(strstr(r.body, "{\"settlements\":[],\"next_after\":null}"));
    rp_response_free(&r);
}

/* ---- reconciliation ---------------------------------------------------------------- */

static char bank_file[1024];

static const char *make_bank_file(void)
{
    snprintf(bank_file, sizeof(bank_file),
             "transaction_id,amount,currency,value_date\n"
             "%s,8000,EUR,2026-11-24\n"
             "%s,5500,EUR,2026-11-24\n"
             "%s,12000,USD,2026-11-25\n"
             "pay_0300000000000000ff,300,EUR,2026-11-24\n"
             "%s,8000,EUR,2026-11-24\n"
             "pay_030000000000000009,12.00,EUR,2026-11-24\n",
             pay_a, pay_b, pay_c, pay_a);
    return bank_file;
}

static void expect_every_category(const char *body)
{
    expect_int(body, "lines", 6);
    static const char *const cats[] = {
        "matched",           "amount_mismatch", "currency_mismatch", "unknown_transaction",
        "duplicate_in_file", "missing_in_bank", "malformed"};
    for (size_t i = 0; i < 7; i++)
        expect_int(body, cats[i], 1);
    assert_non_null(strstr(body, "\"status\":\"done\""));
}

/* Sends the bank file with Transfer-Encoding: chunked (a whole body, not streamed). */
static void upload_chunked(const char *csv, const char *key, struct rp_response *r)
{
    char raw[2048];
    int n = snprintf(
        raw, sizeof(raw),
        "POST /v1/reconciliation/files HTTP/1.1\r\nHost: a\r\nIdempotency-Key: %s\r\n"
        "Content-Type: text/csv\r\nTransfer-Encoding: chunked\r\n\r\n%zx\r\n%s\r\n0\r\n\r\n",
        key, strlen(csv), csv);
    assert_int_equal(pc_raw(st.port, raw, (size_t)n, r), 0);
}

static void test_reconciliation(void **state)
{
    (void)state;
    start((const char *const[]){"--recon-max-bytes", "100000", NULL});
    struct rp_response r;
    const char *csv = make_bank_file();
    assert_int_equal(post("/v1/reconciliation/files", "text/csv", csv, &r), 0);
    expect_status(&r, 201);
    expect_every_category(r.body);
    char id[32];
    assert_true(pc_body_str(r.body, "id", id, sizeof(id)));
    rp_response_free(&r);

    upload_chunked(csv, "c", &r);
    expect_status(&r, 201);
    expect_every_category(r.body);
    rp_response_free(&r);

    /* The items: every line not matched, and the missing payment after the last line. */
    char path[128];
    snprintf(path, sizeof(path), "/v1/reconciliation/files/%s?limit=3", id);
    assert_int_equal(get(path, &r), 0);
    expect_status(&r, 200);
    assert_non_null(strstr(r.body, "\"category\":\"amount_mismatch\""));
    assert_non_null(strstr(r.body, "\"expected_amount\":5000"));
    assert_non_null(strstr(r.body, "\"next_after\":5"));
    rp_response_free(&r);
    snprintf(path, sizeof(path), "/v1/reconciliation/files/%s?after=5", id);
    assert_int_equal(get(path, &r), 0);
    assert_non_null(strstr(r.body, "\"category\":\"malformed\""));
    assert_non_null(strstr(r.body, "\"line\":7"));
    assert_non_null(strstr(r.body, "\"category\":\"missing_in_bank\""));
    assert_non_null(strstr(r.body, pay_e));
    rp_response_free(&r);
    snprintf(path, sizeof(path), "/v1/reconciliation/files/%s/rematch", id);
    assert_int_equal(post(path, "application/json", "", &r), 0);
    expect_status(&r, 200);
    expect_int(r.body, "rematches", 1);
    expect_int(r.body, "unknown_transaction", 1);
    rp_response_free(&r);

    expect_error("POST", "/v1/reconciliation/files", "text/csv",
                 "transaction_id,amount,currency\npay_x,1,EUR\n", 400, "invalid_param", "header");
    expect_error("POST", "/v1/reconciliation/files", "text/csv", "", 400, "invalid_param",
                 "header");
    expect_error("POST", "/v1/reconciliation/files", "application/json", csv, 415,
                 "unsupported_media_type", NULL);
    /* Over --recon-max-bytes: refused at the head, before any of the body is read. */
    static const char too_big[] = "POST /v1/reconciliation/files HTTP/1.1\r\nHost: a\r\n"
                                  "Idempotency-Key: b\r\nContent-Type: text/csv\r\n"
                                  "Content-Length: 100001\r\n\r\n";
    assert_int_equal(pc_raw(st.port, too_big, sizeof(too_big) - 1, &r), 0);
    expect_status(&r, 413);
    rp_assert_error_body(&r, "body_too_large");
    assert_non_null(strstr(rp_header(&r, "connection"), "close"));
    rp_response_free(&r);
    /* A chunked statement larger than the HTTP body limit streams too (4 KiB chunks, a
     * trailer); past --recon-max-bytes it is 413 as it comes; bad framing is 400. */
    {
        static char body[90000];
        size_t bl = (size_t)snprintf(body, sizeof(body), "%s",
                                     "transaction_id,amount,currency,value_date\n");
        for (int i = 0; bl + 64 < 88000; i++)
            bl += (size_t)snprintf(body + bl, sizeof(body) - bl, "pay_07%016x,%d,EUR,2026-11-24\n",
                                   i + 1, 100 + i);
        static char wire[100000];
        size_t wl = (size_t)snprintf(wire, sizeof(wire),
                                     "POST /v1/reconciliation/files HTTP/1.1\r\nHost: a\r\n"
                                     "Idempotency-Key: ch\r\nContent-Type: text/csv\r\n"
                                     "Transfer-Encoding: chunked\r\n\r\n");
        for (size_t off = 0; off < bl; off += 4096) {
            size_t k = bl - off < 4096 ? bl - off : 4096;
            wl += (size_t)snprintf(wire + wl, sizeof(wire) - wl, "%zx\r\n", k);
            memcpy(wire + wl, body + off, k);
            wl += k;
            wl += (size_t)snprintf(wire + wl, sizeof(wire) - wl, "\r\n");
        }
        wl += (size_t)snprintf(wire + wl, sizeof(wire) - wl, "0\r\nX-Checksum: none\r\n\r\n");
        assert_int_equal(pc_raw(st.port, wire, wl, &r), 0);
        expect_status(&r, 201);
        assert_non_null(strstr(r.body, "\"unknown_transaction\":"));
        long long lines_in = 0;
        for (size_t i = 0; i < bl; i++)
            lines_in += body[i] == '\n';
        expect_int(r.body, "lines", lines_in - 1);
        rp_response_free(&r);
        /* over --recon-max-bytes (100000 here): the same body twice in one stream */
        static char twice[210000];
        size_t hl = (size_t)(strstr(wire, "\r\n\r\n") - wire) + 4;
        size_t tl = wl - strlen("0\r\nX-Checksum: none\r\n\r\n"); /* up to the last chunk */
        memcpy(twice, wire, tl);
        memcpy(twice + tl, wire + hl, wl - hl); /* every chunk again, then the end */
        tl += wl - hl;
        assert_int_equal(pc_raw(st.port, twice, tl, &r), 0);
        expect_status(&r, 413);
        rp_assert_error_body(&r, "body_too_large");
        rp_response_free(&r);
        static const char broken[] = "POST /v1/reconciliation/files HTTP/1.1\r\nHost: a\r\n"
                                     "Idempotency-Key: cb\r\nContent-Type: text/csv\r\n"
                                     "Transfer-Encoding: chunked\r\n\r\n5\r\nabcdeXX";
        assert_int_equal(pc_raw(st.port, broken, sizeof(broken) - 1, &r), 0);
        expect_status(&r, 400);
        rp_assert_error_body(&r, "bad_request");
        assert_non_null(strstr(rp_header(&r, "connection"), "close"));
        rp_response_free(&r);
    }

    /* Expect: 100-continue on a streamed upload: the interim answer, then the body. */
    char raw[2048];
    int n =
        snprintf(raw, sizeof(raw),
                 "POST /v1/reconciliation/files HTTP/1.1\r\nHost: a\r\nIdempotency-Key: e\r\n"
                 "Content-Type: text/csv\r\nExpect: 100-continue\r\nContent-Length: %zu\r\n\r\n",
                 strlen(csv));
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, st.port), 0);
    assert_int_equal(rp_send_all(c.fd, raw, (size_t)n), 0);
    assert_int_equal(rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS), 0);
    expect_status(&r, 100);
    rp_response_free(&r);
    assert_int_equal(rp_send_all(c.fd, csv, strlen(csv)), 0);
    assert_int_equal(rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS), 0);
    expect_status(&r, 201);
    expect_every_category(r.body);
    rp_response_free(&r);
    rp_conn_close(&c);

    /* A request pipelined right behind a streamed body, in the same write: answered in
     * order on the same connection once the body ended. */
    char *two = NULL;
    int tn = asprintf(&two,
                      "POST /v1/reconciliation/files HTTP/1.1\r\nHost: a\r\nIdempotency-Key: p\r\n"
                      "Content-Type: text/csv\r\nContent-Length: %zu\r\n\r\n%s"
                      "GET /v1/settlements/stl_20261124_EUR_m-1 HTTP/1.1\r\nHost: a\r\n\r\n",
                      strlen(csv), csv);
    assert_true(tn > 0);
    assert_int_equal(rp_conn_open(&c, st.port), 0);
    assert_int_equal(rp_send_all(c.fd, two, (size_t)tn), 0);
    free(two);
    assert_int_equal(rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS), 0);
    expect_status(&r, 201);
    expect_every_category(r.body);
    rp_response_free(&r);
    assert_int_equal(rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS), 0);
    expect_status(&r, 200);
    assert_non_null(strstr(r.body, "\"id\":\"stl_20261124_EUR_m-1\""));
    rp_response_free(&r);
    rp_conn_close(&c);

    /* A client that goes away in the middle of its body: nothing is stored, the slot is
     * free again (five more uploads after it, more than SETTLE_UPLOADS_MAX at once). */
    n = snprintf(raw, sizeof(raw),
                 "POST /v1/reconciliation/files HTTP/1.1\r\nHost: a\r\nIdempotency-Key: f\r\n"
                 "Content-Type: text/csv\r\nContent-Length: 5000\r\n\r\n%.40s",
                 csv);
    for (int i = 0; i < 5; i++) {
        assert_int_equal(rp_conn_open(&c, st.port), 0);
        assert_int_equal(rp_send_all(c.fd, raw, (size_t)n), 0);
        rp_sleep_ms(20);
        rp_close_rst(c.fd);
        c.fd = -1;
        rp_conn_close(&c);
    }
    rp_sleep_ms(100);
    assert_int_equal(post("/v1/reconciliation/files", "text/csv", csv, &r), 0);
    expect_status(&r, 201);
    assert_non_null(strstr(r.body, "\"id\":\"rcf_0000000000000006\"")); /* 5 done before */
    rp_response_free(&r);

    expect_error("GET", "/v1/reconciliation/files/rcf_00000000000000ff", NULL, NULL, 404,
                 "not_found", NULL);
    expect_error("POST", "/v1/reconciliation/files/rcf_00000000000000ff/rematch", "text/csv", "",
                 404, "not_found", NULL);
    /* Each upload logs its progress (at least its last line). */
    static char log[1 << 16];
    FILE *f = fopen(st.log_path, "r");
    assert_non_null(f);
    log[fread(log, 1, sizeof(log) - 1, f)] = '\0';
    fclose(f);
    assert_non_null(strstr(log, "\"reconciliation progress\",\"lines\":6,"));
}

/* ---- idempotent replay of settle's POSTs ------------------------------------------------ */

/* POSTs with key and checks the status, and whether the answer is a replay. The body is
 * copied to out (may be NULL). */
static void idem_post(const char *path, const char *type, const char *body, const char *key,
                      int status, bool replayed, char *out, size_t cap)
{
    struct rp_response r;
    assert_int_equal(post_key(path, type, body, key, &r), 0);
    expect_status(&r, status);
    const char *h = rp_header(&r, "idempotent-replayed");
    if (replayed ? h == NULL || strcmp(h, "true") != 0 : h != NULL)
        fail_msg("%s %s key %s: Idempotent-Replayed %s, want %s: %s", path, body, key,
                 h ? h : "absent", replayed ? "true" : "absent", r.body);
    assert_true(rp_header_count(&r, "idempotent-replayed") <= 1);
    assert_non_null(rp_header(&r, "x-request-id"));
    if (out)
        snprintf(out, cap, "%s", r.body);
    rp_response_free(&r);
}

/* The same POST twice with one key: the second is the first answer, byte for byte. */
static void idem_twice(const char *path, const char *type, const char *body, const char *key,
                       int status, char *first, size_t cap)
{
    char again[4096];
    idem_post(path, type, body, key, status, false, first, cap);
    idem_post(path, type, body, key, status, true, again, sizeof(again));
    if (strcmp(first, again) != 0)
        fail_msg("replay differs:\n%s\n%s", first, again);
}

static void expect_file_count(unsigned files)
{
    char path[96];
    struct rp_response r;
    for (unsigned i = 1; i <= files + 1; i++) {
        snprintf(path, sizeof(path), "/v1/reconciliation/files/rcf_%016x", i);
        assert_int_equal(get(path, &r), 0);
        if (r.status != (i <= files ? 200 : 404))
            fail_msg("%s: %d, want %d files", path, r.status, files);
        rp_response_free(&r);
    }
}

static void test_idempotency(void **state)
{
    (void)state;
    start(NULL);
    const char *json = "application/json", *csvt = "text/csv";
    const char *csv = make_bank_file();
    char a[4096], b[4096];

    /* Close: replayed with the first count (a second close would say 0). */
    idem_twice("/v1/settlements/close", json, "{\"date\":\"2026-11-25\"}", "close-1", 200, a,
               sizeof(a));
    expect_int(a, "batches_closed", 1);
    idem_post("/v1/settlements/close", json, "{\"date\":\"2026-11-24\"}", "close-1", 409, false, b,
              sizeof(b));
    assert_non_null(strstr(b, "\"code\":\"idempotency_key_reused\""));
    idem_post("/v1/settlements/close", json, "{\"date\":\"2026-11-25\"}", "close-2", 200, false, b,
              sizeof(b));
    expect_int(b, "batches_closed", 0);
    /* the same key on another route is another request */
    idem_post("/v1/dead-letters/1/replay", json, "{\"date\":\"2026-11-25\"}", "close-1", 409, false,
              NULL, 0);

    /* Upload (streamed, Content-Length): one file, the same summary replayed. */
    idem_twice("/v1/reconciliation/files", csvt, csv, "bank-1", 201, a, sizeof(a));
    assert_non_null(strstr(a, "\"id\":\"rcf_0000000000000001\""));
    expect_every_category(a);
    expect_file_count(1);
    /* the same bytes chunked (read whole, not streamed) are the same request */
    struct rp_response r;
    upload_chunked(csv, "bank-1", &r);
    expect_status(&r, 201);
    assert_non_null(rp_header(&r, "idempotent-replayed"));
    assert_string_equal(r.body, a);
    rp_response_free(&r);
    /* another body with the key: 409 at its last byte, nothing stored */
    idem_post("/v1/reconciliation/files", csvt, "transaction_id,amount,currency,value_date\n",
              "bank-1", 409, false, b, sizeof(b));
    assert_non_null(strstr(b, "\"code\":\"idempotency_key_reused\""));
    expect_file_count(1);

    /* Validation errors are not stored: the key may be used again for a good request. */
    idem_post("/v1/reconciliation/files", csvt, "transaction_id,amount\n", "bank-2", 400, false,
              NULL, 0);
    idem_post("/v1/reconciliation/files", csvt, csv, "bank-2", 201, false, b, sizeof(b));
    assert_non_null(strstr(b, "\"id\":\"rcf_0000000000000002\""));
    idem_post("/v1/settlements/close", json, "{\"date\":\"2026-11-26\"}", "close-3", 400, false,
              NULL, 0);
    idem_post("/v1/settlements/close", json, "{\"date\":", "close-3", 400, false, NULL, 0);
    idem_post("/v1/settlements/close", json, "{\"date\":\"2026-11-24\"}", "close-3", 200, false,
              NULL, 0);
    expect_file_count(2);

    /* Rematch: replayed (a second one would say "rematches":2). */
    idem_twice("/v1/reconciliation/files/rcf_0000000000000001/rematch", json, "", "rm-1", 200, a,
               sizeof(a));
    expect_int(a, "rematches", 1);
    idem_post("/v1/reconciliation/files/rcf_0000000000000001/rematch", json, "", "rm-2", 200, false,
              b, sizeof(b));
    expect_int(b, "rematches", 2);
    /* a 404 the route gave is an answer: stored and replayed */
    idem_twice("/v1/reconciliation/files/rcf_00000000000000ff/rematch", json, "", "rm-404", 404, a,
               sizeof(a));
    assert_non_null(strstr(a, "\"code\":\"not_found\""));

    /* Dead-letter replay: the outcome replayed, the letter processed once. */
    idem_twice("/v1/dead-letters/1/replay", json, "", "dlq-1", 200, a, sizeof(a));
    assert_string_equal(a, "{\"id\":1,\"outcome\":\"still_refused\"}");
    idem_twice("/v1/dead-letters/9/replay", json, "", "dlq-9", 404, a, sizeof(a));
    assert_non_null(strstr(a, "\"code\":\"not_found\""));

    /* Durable: after a restart the same keys still replay, and no file was added. */
    assert_int_equal(rp_server_signal(&st, SIGTERM), 0);
    assert_int_equal(rp_server_wait(&st, RP_STOP_TIMEOUT_MS), 0);
    start(NULL);
    idem_post("/v1/settlements/close", json, "{\"date\":\"2026-11-25\"}", "close-1", 200, true, b,
              sizeof(b));
    expect_int(b, "batches_closed", 1);
    idem_post("/v1/reconciliation/files", csvt, csv, "bank-1", 201, true, b, sizeof(b));
    assert_non_null(strstr(b, "\"id\":\"rcf_0000000000000001\""));
    idem_post("/v1/reconciliation/files/rcf_0000000000000001/rematch", json, "", "rm-1", 200, true,
              b, sizeof(b));
    expect_int(b, "rematches", 1);
    idem_post("/v1/dead-letters/1/replay", json, "", "dlq-1", 200, true, NULL, 0);
    expect_file_count(2);

    /* Two uploads with one key in flight at once: the first to end classifies, the other
     * (the same body) replays its answer at its last byte: still one file. */
    char head[512];
    int hn = snprintf(head, sizeof(head),
                      "POST /v1/reconciliation/files HTTP/1.1\r\nHost: a\r\nIdempotency-Key: "
                      "bank-3\r\nContent-Type: text/csv\r\nContent-Length: %zu\r\n\r\n",
                      strlen(csv));
    struct rp_conn c1, c2;
    assert_int_equal(rp_conn_open(&c1, st.port), 0);
    assert_int_equal(rp_conn_open(&c2, st.port), 0);
    assert_int_equal(rp_send_all(c1.fd, head, (size_t)hn), 0);
    assert_int_equal(rp_send_all(c1.fd, csv, 10), 0);
    assert_int_equal(rp_send_all(c2.fd, head, (size_t)hn), 0);
    assert_int_equal(rp_send_all(c2.fd, csv, strlen(csv)), 0);
    assert_int_equal(rp_read_response(&c2, &r, false, RP_IO_TIMEOUT_MS), 0);
    expect_status(&r, 201);
    assert_null(rp_header(&r, "idempotent-replayed"));
    snprintf(a, sizeof(a), "%s", r.body);
    rp_response_free(&r);
    assert_int_equal(rp_send_all(c1.fd, csv + 10, strlen(csv) - 10), 0);
    assert_int_equal(rp_read_response(&c1, &r, false, RP_IO_TIMEOUT_MS), 0);
    expect_status(&r, 201);
    assert_non_null(rp_header(&r, "idempotent-replayed"));
    assert_string_equal(r.body, a);
    rp_response_free(&r);
    rp_conn_close(&c1);
    rp_conn_close(&c2);
    expect_file_count(3);

    /* Kept 24 h: a day and a half later the records are gone (deleted by the first write
     * transaction), so the key is new again. */
    assert_int_equal(rp_server_signal(&st, SIGTERM), 0);
    assert_int_equal(rp_server_wait(&st, RP_STOP_TIMEOUT_MS), 0);
    static const char *const later[] = {"RINGPAY_SETTLE_TEST_CLOCK=2026-11-27T00:00:00.000Z", NULL};
    start_at(NULL, later);
    idem_post("/v1/settlements/close", json, "{\"date\":\"2026-11-26\"}", "close-9", 200, false,
              NULL, 0);
    idem_post("/v1/settlements/close", json, "{\"date\":\"2026-11-25\"}", "close-1", 200, false, b,
              sizeof(b));
    expect_int(b, "batches_closed", 0);
    idem_post("/v1/reconciliation/files", csvt, csv, "bank-1", 201, false, b, sizeof(b));
    assert_non_null(strstr(b, "\"id\":\"rcf_0000000000000004\""));
    /* the new records are kept */
    idem_post("/v1/settlements/close", json, "{\"date\":\"2026-11-26\"}", "close-9", 200, true,
              NULL, 0);
}

/* ---- the admin gate ------------------------------------------------------------------ */

struct key {
    char id[64];
    char secret[128];
};

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

static void add_key(const char *scope, const char *merchant, struct key *k)
{
    const char *argv[] = {
        "keys",   "add", "--data", st.data_dir, "--scope", scope, merchant ? "--merchant" : NULL,
        merchant, NULL};
    assert_int_equal(rp_run(argv, NULL, NULL, 10000, &run), 0);
    if (run.code != 0)
        fail_msg("keys add: %d %s", run.code, run.err);
    json_field(run.out, "key_id", k->id, sizeof(k->id));
    json_field(run.out, "secret", k->secret, sizeof(k->secret));
    rp_log_canary(strdup(k->secret));
}

/* Sends METHOD target with body signed by k over signed_body (a different body: a
 * forged request). */
static int call_signed(const struct key *k, const char *method, const char *target,
                       const char *type, const char *body, const char *signed_body,
                       struct rp_response *r)
{
    char ts[24], sig[AUTH_SIGNATURE_BYTES + 1];
    snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
    bool post_ = strcmp(method, "POST") == 0;
    struct sign_request sr = {
        .timestamp = ts,
        .timestamp_len = strlen(ts),
        .method = method,
        .method_len = strlen(method),
        .target = target,
        .target_len = strlen(target),
        .idempotency_key = post_ ? "k-9" : NULL,
        .idempotency_key_len = post_ ? 3 : 0,
        .body = signed_body,
        .body_len = signed_body ? strlen(signed_body) : 0,
    };
    struct sign_key sk;
    sign_key_init(&sk, k->secret, strlen(k->secret));
    assert_int_equal(sign_compute(&sk, &sr, sig), 0);
    sign_key_wipe(&sk);
    sig[AUTH_SIGNATURE_BYTES] = '\0';
    char h_key[96], h_ts[48], h_sig[96], h_ct[64];
    snprintf(h_key, sizeof(h_key), "X-Ringpay-Key: %s", k->id);
    snprintf(h_ts, sizeof(h_ts), "X-Ringpay-Timestamp: %s", ts);
    snprintf(h_sig, sizeof(h_sig), "X-Ringpay-Signature: %s", sig);
    snprintf(h_ct, sizeof(h_ct), "Content-Type: %s", type ? type : "text/csv");
    const char *h[] = {h_key, h_ts, h_sig, h_ct, post_ ? "Idempotency-Key: k-9" : NULL, NULL};
    return rp_request(st.port, method, target, h, body, r);
}

static void test_admin_gate(void **state)
{
    (void)state;
    struct key admin, merchant;
    add_key("admin", NULL, &admin);
    add_key("merchant", "m-1", &merchant);
    start((const char *const[]){"--auth", "on", NULL});
    expect_error("GET", "/v1/settlements", NULL, NULL, 401, "authentication_failed", NULL);
    expect_error("POST", "/v1/reconciliation/files", "text/csv", make_bank_file(), 401,
                 "authentication_failed", NULL);
    struct rp_response r;
    assert_int_equal(call_signed(&merchant, "GET", "/v1/settlements", NULL, NULL, NULL, &r), 0);
    expect_status(&r, 403);
    rp_assert_error_body(&r, "forbidden");
    rp_response_free(&r);
    assert_int_equal(
        call_signed(&admin, "GET", "/v1/settlements?status=closed", NULL, NULL, NULL, &r), 0);
    expect_status(&r, 200);
    assert_non_null(strstr(r.body, "stl_20261124_EUR_m-1"));
    rp_response_free(&r);

    /* A streamed upload is verified once its last byte arrived: a body that is not the
     * signed one is 401 and stores nothing (the next file is still rcf_...1). */
    const char *csv = make_bank_file();
    assert_int_equal(call_signed(&admin, "POST", "/v1/reconciliation/files", "text/csv", csv,
                                 "transaction_id,amount,currency,value_date\n", &r),
                     0);
    expect_status(&r, 401);
    rp_response_free(&r);
    assert_int_equal(
        call_signed(&admin, "POST", "/v1/reconciliation/files", "text/csv", csv, csv, &r), 0);
    expect_status(&r, 201);
    assert_non_null(strstr(r.body, "\"id\":\"rcf_0000000000000001\""));
    expect_every_category(r.body);
    rp_response_free(&r);
    assert_int_equal(
        call_signed(&merchant, "POST", "/v1/reconciliation/files", "text/csv", csv, csv, &r), 0);
    expect_status(&r, 403);
    rp_response_free(&r);
    /* A key added while settle runs works after SIGHUP. */
    struct key late;
    add_key("admin", NULL, &late);
    assert_int_equal(rp_server_signal(&st, SIGHUP), 0);
    for (int64_t dl = rp_now_ms() + 5000;; rp_sleep_ms(20)) {
        assert_int_equal(call_signed(&late, "GET", "/v1/settlements", NULL, NULL, NULL, &r), 0);
        int status = r.status;
        rp_response_free(&r);
        if (status == 200)
            break;
        if (rp_now_ms() > dl)
            fail_msg("the key added before SIGHUP is still refused (%d)", status);
    }
    /* /healthz needs no key. */
    assert_int_equal(get("/healthz", &r), 0);
    expect_status(&r, 200);
    rp_response_free(&r);
}

/* ---- one process per directory, dead letters ----------------------------------------- */

static void test_lock_and_dlq(void **state)
{
    (void)state;
    start(NULL);
    const char *second[] = {"settle",    "--kafka-brokers", "none",        "--data",
                            st.data_dir, "--listen",        "127.0.0.1:0", NULL};
    assert_int_equal(rp_run(second, NULL, NULL, 10000, &run), 0);
    assert_int_equal(run.code, 2);
    assert_int_equal(rp_count_lines(run.err), 1);
    const char *list[] = {"settle", "dlq", "list", "--data", st.data_dir, NULL};
    assert_int_equal(rp_run(list, NULL, NULL, 10000, &run), 0);
    assert_int_equal(run.code, 2); /* settle holds the directory */
    assert_non_null(strstr(run.err, "dlq commands need settle stopped"));

    /* While settle runs, through its API. */
    struct rp_response r;
    assert_int_equal(get("/v1/dead-letters", &r), 0);
    expect_status(&r, 200);
    assert_non_null(strstr(r.body, "{\"dead_letters\":[{\"id\":1,\"status\":\"pending\""));
    assert_non_null(strstr(r.body, "\"value\":\"{\\\"event_id\\\":\\\"not an event\\\"\""));
    assert_non_null(strstr(r.body, "],\"next_after\":null}"));
    rp_response_free(&r);
    expect_error("GET", "/v1/dead-letters?status=new", NULL, NULL, 400, "invalid_param", "status");
    assert_int_equal(post("/v1/dead-letters/1/replay", "application/json", "", &r), 0);
    expect_status(&r, 200);
    assert_non_null(strstr(r.body, "{\"id\":1,\"outcome\":\"still_refused\"}"));
    rp_response_free(&r);
    expect_error("POST", "/v1/dead-letters/9/replay", "application/json", "", 404, "not_found",
                 NULL);

    assert_int_equal(rp_server_signal(&st, SIGTERM), 0);
    assert_int_equal(rp_server_wait(&st, RP_STOP_TIMEOUT_MS), 0);
    assert_int_equal(rp_run(list, NULL, NULL, 10000, &run), 0);
    assert_int_equal(run.code, 0);
    assert_int_equal(rp_count_lines(run.out), 1);
    assert_non_null(strstr(run.out, "\"id\":1,\"status\":\"pending\""));
    assert_non_null(strstr(run.out, "\"topic\":\"payment.captured\",\"partition\":1,\"offset\":0"));
    assert_non_null(strstr(run.out, "\"value\":\"{\\\"event_id\\\":\\\"not an event\\\"\""));
    const char *replay[] = {"settle", "dlq", "replay", "--data", st.data_dir, "--all", NULL};
    assert_int_equal(rp_run(replay, NULL, NULL, 10000, &run), 0);
    assert_int_equal(run.code, 1); /* still poison */
    assert_non_null(strstr(run.out, "{\"id\":1,\"outcome\":\"still_refused\"}"));
    start(NULL); /* the directory is free again */
}

/* The calendar flags reach the close timer: with --cutoff 13:00 the 25th's business day
 * has not started at 12:00 UTC, so the 24th is not due yet. Bad flags fail at start
 * with one line. */
static void test_calendar_flags(void **state)
{
    (void)state;
    static const char *const bad[][3] = {{"--cutoff", "25:00", NULL},
                                         {"--tz", "Mars/Olympus_Mons", NULL},
                                         {"--grace", "10d", NULL},
                                         {"--retention-days", "1", NULL}};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        const char *argv[] = {"settle",    "--kafka-brokers", "none",    "--data",
                              st.data_dir, bad[i][0],         bad[i][1], NULL};
        assert_int_equal(rp_run(argv, NULL, NULL, 10000, &run), 0);
        if (run.code != 2 || rp_count_lines(run.err) != 1)
            fail_msg("%s %s: exit %d, stderr %s", bad[i][0], bad[i][1], run.code, run.err);
    }
    const char *no_kafka[] = {"settle", "--data", st.data_dir, NULL};
    assert_int_equal(rp_run(no_kafka, NULL, NULL, 10000, &run), 0);
    assert_int_equal(run.code, 2);
    assert_non_null(strstr(run.err, "--kafka-brokers is required"));

    start((const char *const[]){"--cutoff", "13:00", "--grace", "0", NULL});
    struct rp_response r;
    assert_int_equal(get("/v1/settlements/stl_20261124_EUR_m-1", &r), 0);
    expect_status(&r, 200);
    assert_non_null(strstr(r.body, "\"status\":\"open\""));
    rp_response_free(&r);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_settlements, setup, teardown),
        cmocka_unit_test_setup_teardown(test_reconciliation, setup, teardown),
        cmocka_unit_test_setup_teardown(test_idempotency, setup, teardown),
        cmocka_unit_test_setup_teardown(test_admin_gate, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lock_and_dlq, setup, teardown),
        cmocka_unit_test_setup_teardown(test_calendar_flags, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
