/*
 * Tests of engine/api.c: routing, method and idempotency-key checks, body and query
 * validation, authentication of the merchant, and the exact bytes of every renderer.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine/api.h"
#include "engine/ids.h"

#define NSHARDS 4

static struct engine_span S(const char *s) {
    return (struct engine_span){s, s ? strlen(s) : 0};
}

struct result {
    int rc;
    struct op op;
    struct api_error err;
};

static struct result *decode(const char *method, const char *path, const char *query,
                             const char *body, const char *key, const char *auth)
{
    static struct result r;
    struct api_request req = {.method = S(method),
                              .path = S(path),
                              .query = S(query),
                              .body = S(body),
                              .idem_key = S(key),
                              .idem_key_count = key ? 1 : 0,
                              .auth_merchant = S(auth),
                              .request_id = S("req-1")};
    r.rc = api_decode(&req, NSHARDS, &r.op, &r.err);
    return &r;
}

#define PAY "pay_02000000000000000b"

static void expect_error(const struct result *r, int status, const char *code, const char *param)
{
    if (r->rc != -EINVAL)
        fail_msg("decoded, wanted %d %s", status, code);
    assert_int_equal(r->err.status, status);
    assert_string_equal(r->err.code, code);
    if (param == NULL) {
        assert_false(r->err.has_param);
    } else {
        assert_true(r->err.has_param);
        assert_string_equal(r->err.param, param);
    }
}

static void test_routes(void **state)
{
    (void)state;
    struct result *r;
    r = decode("POST", "/v1/payments/authorize", NULL,
               "{\"merchant_id\":\"m-1\",\"amount\":15000,\"currency\":\"KRW\"}", "k1", NULL);
    assert_int_equal(r->rc, 0);
    assert_int_equal(r->op.kind, OP_AUTHORIZE);
    assert_int_equal(r->op.shard, engine_shard_of_merchant("m-1", 3, NSHARDS));
    assert_string_equal(r->op.merchant_id, "m-1");
    assert_int_equal(r->op.merchant_id_len, 3);
    assert_int_equal(r->op.amount, 15000);
    assert_string_equal(r->op.currency, "KRW");
    assert_false(r->op.has_reference);
    assert_string_equal(r->op.idem_key, "k1");
    assert_false(r->op.authenticated);
    assert_string_equal(r->op.request_id, "req-1");
    assert_int_equal(r->op.fp_body.len, strlen("{\"merchant_id\":\"m-1\",\"amount\":15000,"
                                               "\"currency\":\"KRW\"}"));
    assert_int_equal(r->op.fp_path.len, strlen("/v1/payments/authorize"));

    static const struct {
        const char *method, *path;
        enum op_kind kind;
    } ok[] = {
        {"POST", "/v1/payments/" PAY "/capture", OP_CAPTURE},
        {"POST", "/v1/payments/" PAY "/void", OP_VOID},
        {"POST", "/v1/payments/" PAY "/refund", OP_REFUND},
        {"GET", "/v1/payments/" PAY, OP_GET_PAYMENT},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        r = decode(ok[i].method, ok[i].path, NULL, NULL, "k", NULL);
        assert_int_equal(r->rc, 0);
        assert_int_equal(r->op.kind, ok[i].kind);
        assert_int_equal(r->op.shard, 2);
        assert_string_equal(r->op.payment_id, PAY);
        assert_int_equal(r->op.amount, 0);
    }
    r = decode("GET", "/v1/merchants/m_1-X/balances", NULL, NULL, NULL, NULL);
    assert_int_equal(r->rc, 0);
    assert_int_equal(r->op.kind, OP_BALANCES);
    assert_string_equal(r->op.merchant_id, "m_1-X");
    assert_int_equal(r->op.shard, engine_shard_of_merchant("m_1-X", 5, NSHARDS));
    r = decode("GET", "/v1/merchants/m-1/ledger", NULL, NULL, NULL, NULL);
    assert_int_equal(r->rc, 0);
    assert_int_equal(r->op.kind, OP_LEDGER);
    assert_int_equal(r->op.after, 0);
    assert_int_equal(r->op.limit, LEDGER_PAGE_DEFAULT);
}

static void test_not_found_and_method(void **state)
{
    (void)state;
    static const char *const shapes[] = {
        "/",
        "/v1",
        "/v1/",
        "/v2/payments/authorize",
        "/v1/payments",
        "/v1/payments/",
        "/v1/payments/authorize/",
        "/v1/payments/" PAY "/",
        "/v1/payments/" PAY "/capture/",
        "/v1/payments/" PAY "/settle",
        "/v1/payments//capture",
        "/v1//payments/authorize",
        "/v1/merchants/m-1",
        "/v1/merchants/m-1/orders",
        "/v1/merchants//balances",
        "/v1/payments/" PAY "/capture/x",
        "/V1/payments/authorize",
        "/v1/Payments/authorize",
        "/healthz",
        "v1/payments/authorize",
    };
    for (size_t i = 0; i < sizeof(shapes) / sizeof(shapes[0]); i++) {
        struct result *r = decode("POST", shapes[i], NULL, "{}", "k", NULL);
        if (r->rc != -EINVAL || r->err.status != 404)
            fail_msg("%s: rc %d status %d", shapes[i], r->rc, r->err.status);
        assert_string_equal(r->err.code, "not_found");
    }
    /* Malformed ids, refund ids and shards beyond the process's count are 404 too. */
    expect_error(decode("GET", "/v1/payments/pay_02000000000000000B", NULL, NULL, NULL, NULL), 404,
                 "not_found", NULL);
    expect_error(decode("GET", "/v1/payments/rfd_02000000000000000b", NULL, NULL, NULL, NULL), 404,
                 "not_found", NULL);
    expect_error(decode("POST", "/v1/payments/pay_04000000000000000b/void", NULL, NULL, "k", NULL),
                 404, "not_found", NULL);
    /* Known shape, wrong method: 405 with Allow, checked before the id. */
    struct result *r = decode("GET", "/v1/payments/authorize", NULL, NULL, NULL, NULL);
    expect_error(r, 405, "method_not_allowed", NULL);
    assert_string_equal(r->err.allow, "POST");
    r = decode("POST", "/v1/payments/garbage", NULL, NULL, "k", NULL);
    expect_error(r, 405, "method_not_allowed", NULL);
    assert_string_equal(r->err.allow, "GET");
    expect_error(decode("GET", "/v1/payments/" PAY "/capture", NULL, NULL, NULL, NULL), 405,
                 "method_not_allowed", NULL);
    expect_error(decode("DELETE", "/v1/payments/" PAY, NULL, NULL, NULL, NULL), 405,
                 "method_not_allowed", NULL);
    expect_error(decode("post", "/v1/payments/authorize", NULL, "{}", "k", NULL), 405,
                 "method_not_allowed", NULL);
    expect_error(decode("POST", "/v1/merchants/m-1/balances", NULL, NULL, "k", NULL), 405,
                 "method_not_allowed", NULL);
}

static void test_idempotency_key(void **state)
{
    (void)state;
    const char *path = "/v1/payments/" PAY "/capture";
    expect_error(decode("POST", path, NULL, "{}", NULL, NULL), 400, "missing_idempotency_key",
                 NULL);
    char key[300];
    memset(key, 'k', sizeof(key));
    key[255] = '\0';
    assert_int_equal(decode("POST", path, NULL, "{}", key, NULL)->rc, 0);
    key[255] = 'k';
    key[256] = '\0';
    expect_error(decode("POST", path, NULL, "{}", key, NULL), 400, "invalid_param",
                 "Idempotency-Key");
    expect_error(decode("POST", path, NULL, "{}", "", NULL), 400, "invalid_param",
                 "Idempotency-Key");
    expect_error(decode("POST", path, NULL, "{}", "a\tb", NULL), 400, "invalid_param",
                 "Idempotency-Key");
    expect_error(decode("POST", path, NULL, "{}", "caf\xc3\xa9", NULL), 400, "invalid_param",
                 "Idempotency-Key");
    expect_error(decode("POST", path, NULL, "{}", "a\x7f", NULL), 400, "invalid_param",
                 "Idempotency-Key");
    assert_int_equal(decode("POST", path, NULL, "{}", " ~!\"#", NULL)->rc, 0);
    /* GET ignores it, even when malformed. */
    assert_int_equal(decode("GET", "/v1/payments/" PAY, NULL, NULL, "", NULL)->rc, 0);
    /* The key is checked before the body. */
    expect_error(decode("POST", path, NULL, "{", NULL, NULL), 400, "missing_idempotency_key", NULL);
}

/* SPEC §2: two Idempotency-Key headers are 400 invalid_param, even when equal. */
static void test_idempotency_key_twice(void **state)
{
    (void)state;
    struct result r;
    struct api_request req = {.method = S("POST"),
                              .path = S("/v1/payments/" PAY "/capture"),
                              .body = S("{}"),
                              .idem_key = S("k1"),
                              .idem_key_count = 2};
    r.rc = api_decode(&req, NSHARDS, &r.op, &r.err);
    expect_error(&r, 400, "invalid_param", "Idempotency-Key");
    req.idem_key_count = 1;
    assert_int_equal(api_decode(&req, NSHARDS, &r.op, &r.err), 0);
}

/* SPEC §2: a query string on a POST route is 400 invalid_param, before anything else of
 * the request is looked at (but after the route and method). */
static void test_query_on_post(void **state)
{
    (void)state;
    const char *body = "{\"merchant_id\":\"m-1\",\"amount\":1,\"currency\":\"KRW\"}";
    expect_error(decode("POST", "/v1/payments/authorize", "x=1", body, "k", NULL), 400,
                 "invalid_param", "query");
    expect_error(decode("POST", "/v1/payments/" PAY "/refund", "amount=5", "{}", "k", NULL), 400,
                 "invalid_param", "query");
    expect_error(decode("POST", "/v1/payments/" PAY "/void", "a", NULL, NULL, NULL), 400,
                 "invalid_param", "query");
    /* An empty query (nothing after '?') is no query. */
    assert_int_equal(decode("POST", "/v1/payments/authorize", "", body, "k", NULL)->rc, 0);
    /* The method is checked first: GET on a POST route stays 405. */
    expect_error(decode("GET", "/v1/payments/authorize", "x=1", NULL, NULL, NULL), 405,
                 "method_not_allowed", NULL);
}

static const char *authorize_body(const char *merchant, const char *amount, const char *currency,
                                  const char *reference)
{
    static char body[1024];
    int n = snprintf(body, sizeof(body), "{\"merchant_id\":%s,\"amount\":%s,\"currency\":%s",
                     merchant, amount, currency);
    if (reference)
        n += snprintf(body + n, sizeof(body) - (size_t)n, ",\"reference\":%s", reference);
    snprintf(body + n, sizeof(body) - (size_t)n, "}");
    return body;
}

static struct result *authorize(const char *m, const char *a, const char *c, const char *ref)
{
    return decode("POST", "/v1/payments/authorize", NULL, authorize_body(m, a, c, ref), "k", NULL);
}

static void test_authorize_body(void **state)
{
    (void)state;
    struct result *r = authorize("\"m\"", "1000000000000000", "\"USD\"", "\"order-77\"");
    assert_int_equal(r->rc, 0);
    assert_true(r->op.amount == AMOUNT_MAX);
    assert_true(r->op.has_reference);
    assert_string_equal(r->op.reference, "order-77");
    assert_int_equal(r->op.reference_len, 8);
    r = authorize("\"m\"", "1", "\"USD\"", "null");
    assert_int_equal(r->rc, 0);
    assert_false(r->op.has_reference);

    char m64[80] = "\"", ref[1200] = "\"";
    memset(m64 + 1, 'a', 64);
    strcpy(m64 + 65, "\"");
    assert_int_equal(authorize(m64, "1", "\"USD\"", NULL)->rc, 0);
    strcpy(m64 + 65, "a\"");
    expect_error(authorize(m64, "1", "\"USD\"", NULL), 400, "invalid_param", "merchant_id");
    static const char *const bad_merchants[] = {"\"\"",         "\"m 1\"", "\"m/1\"", "\"m.1\"",
                                                "\"m\\u00e9\"", "1",       "null"};
    for (size_t i = 0; i < sizeof(bad_merchants) / sizeof(bad_merchants[0]); i++)
        expect_error(authorize(bad_merchants[i], "1", "\"USD\"", NULL), 400, "invalid_param",
                     "merchant_id");
    static const char *const bad_currencies[] = {"\"usd\"", "\"US\"", "\"USDX\"", "\"U1D\"",
                                                 "\"\"",    "840",    "null"};
    for (size_t i = 0; i < sizeof(bad_currencies) / sizeof(bad_currencies[0]); i++)
        expect_error(authorize("\"m\"", "1", bad_currencies[i], NULL), 400, "invalid_param",
                     "currency");
    /* reference: 128 characters, also of 4 bytes each; 129 is too many. */
    memset(ref + 1, 'r', 128);
    strcpy(ref + 129, "\"");
    assert_int_equal(authorize("\"m\"", "1", "\"USD\"", ref)->rc, 0);
    strcpy(ref + 129, "r\"");
    expect_error(authorize("\"m\"", "1", "\"USD\"", ref), 400, "invalid_param", "reference");
    size_t n = 1;
    for (int i = 0; i < 128; i++, n += 4)
        memcpy(ref + n, "\xf0\x9f\x98\x80", 4);
    strcpy(ref + n, "\"");
    r = authorize("\"m\"", "1", "\"USD\"", ref);
    assert_int_equal(r->rc, 0);
    assert_int_equal(r->op.reference_len, 512);
    strcpy(ref + n, "x\"");
    expect_error(authorize("\"m\"", "1", "\"USD\"", ref), 400, "invalid_param", "reference");
    expect_error(authorize("\"m\"", "1", "\"USD\"", "\"a\\u0001b\""), 400, "invalid_param",
                 "reference");
    expect_error(authorize("\"m\"", "1", "\"USD\"", "\"a\\nb\""), 400, "invalid_param",
                 "reference");
    expect_error(authorize("\"m\"", "1", "\"USD\"", "7"), 400, "invalid_param", "reference");
    /* Missing fields, unknown ones, invalid JSON. */
    expect_error(decode("POST", "/v1/payments/authorize", NULL,
                        "{\"merchant_id\":\"m\",\"currency\":\"USD\"}", "k", NULL),
                 400, "invalid_param", "amount");
    r = decode("POST", "/v1/payments/authorize", NULL,
               "{\"merchant_id\":\"m\",\"amount\":1,\"currency\":\"USD\",\"tip\":1}", "k", NULL);
    expect_error(r, 400, "invalid_param", "tip");
    assert_string_equal(r->err.message, "tip: unknown field");
    expect_error(decode("POST", "/v1/payments/authorize", NULL, "{\"merchant_id\":", "k", NULL),
                 400, "invalid_json", NULL);
    expect_error(decode("POST", "/v1/payments/authorize", NULL, "", "k", NULL), 400,
                 "invalid_param", "merchant_id");
}

static void test_amounts_through_codec(void **state)
{
    (void)state;
    static const struct {
        const char *body;
        int status;
        const char *code;
        int64_t amount;
    } cases[] = {
        {"{}", 0, NULL, 0},
        {"", 0, NULL, 0},
        {"{\"amount\":null}", 0, NULL, 0},
        {"{\"amount\":1}", 0, NULL, 1},
        {"{\"amount\":1000000000000000}", 0, NULL, 1000000000000000LL},
        {"{\"amount\":0}", 400, "invalid_param", 0},
        {"{\"amount\":1000000000000001}", 400, "invalid_param", 0},
        {"{\"amount\":1.0}", 400, "invalid_param", 0},
        {"{\"amount\":1e3}", 400, "invalid_param", 0},
        {"{\"amount\":\"1\"}", 400, "invalid_param", 0},
        {"{\"amount\":-1}", 400, "invalid_param", 0},
        {"{\"amount\":01}", 400, "invalid_json", 0},
        {"{\"amount\":5,\"note\":\"x\"}", 400, "invalid_param", 0},
        {"[]", 400, "invalid_json", 0},
    };
    const char *paths[] = {"/v1/payments/" PAY "/capture", "/v1/payments/" PAY "/refund"};
    for (size_t p = 0; p < 2; p++) {
        for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
            struct result *r = decode("POST", paths[p], NULL, cases[i].body, "k", NULL);
            if (cases[i].status == 0) {
                if (r->rc != 0 || r->op.amount != cases[i].amount)
                    fail_msg("%s %s: rc %d", paths[p], cases[i].body, r->rc);
                continue;
            }
            if (r->rc != -EINVAL || r->err.status != cases[i].status ||
                strcmp(r->err.code, cases[i].code) != 0)
                fail_msg("%s %s: rc %d status %d", paths[p], cases[i].body, r->rc, r->err.status);
        }
    }
    /* void takes no members at all. */
    assert_int_equal(decode("POST", "/v1/payments/" PAY "/void", NULL, "{}", "k", NULL)->rc, 0);
    assert_int_equal(decode("POST", "/v1/payments/" PAY "/void", NULL, "", "k", NULL)->rc, 0);
    expect_error(decode("POST", "/v1/payments/" PAY "/void", NULL, "{\"amount\":5}", "k", NULL),
                 400, "invalid_param", "amount");
}

static void test_ledger_query(void **state)
{
    (void)state;
    const char *path = "/v1/merchants/m-1/ledger";
    struct result *r = decode("GET", path, "after=41&limit=1000", NULL, NULL, NULL);
    assert_int_equal(r->rc, 0);
    assert_int_equal(r->op.after, 41);
    assert_int_equal(r->op.limit, 1000);
    r = decode("GET", path, "limit=1&after=0", NULL, NULL, NULL);
    assert_int_equal(r->rc, 0);
    assert_int_equal(r->op.limit, 1);
    r = decode("GET", path, "after=9223372036854775807", NULL, NULL, NULL);
    assert_int_equal(r->rc, 0);
    assert_true(r->op.after == INT64_MAX);
    assert_int_equal(r->op.limit, 100);
    static const struct {
        const char *q, *param;
    } bad[] = {
        {"limit=0", "limit"},
        {"limit=1001", "limit"},
        {"limit=01", "limit"},
        {"limit=-1", "limit"},
        {"limit=1.0", "limit"},
        {"limit=+5", "limit"},
        {"limit=5&limit=5", "limit"},
        {"after=-1", "after"},
        {"after=01", "after"},
        {"after=x", "after"},
        {"after=9223372036854775808", "after"},
        {"after=1&after=2", "after"},
        {"foo=1", "foo"},
        {"after=1&", "query"},
        {"&", "query"},
        {"after%3D1", "after%3D1"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        r = decode("GET", path, bad[i].q, NULL, NULL, NULL);
        if (r->rc != -EINVAL || r->err.status != 400 || strcmp(r->err.param, bad[i].param) != 0)
            fail_msg("query %s: rc %d param %s", bad[i].q, r->rc, r->err.param);
    }
    /* An empty value (or a bare name) is the default (SPEC §2). */
    r = decode("GET", path, "after=&limit=", NULL, NULL, NULL);
    assert_int_equal(r->rc, 0);
    assert_int_equal(r->op.after, 0);
    assert_int_equal(r->op.limit, LEDGER_PAGE_DEFAULT);
    r = decode("GET", path, "after=7&limit", NULL, NULL, NULL);
    assert_int_equal(r->rc, 0);
    assert_int_equal(r->op.after, 7);
    assert_int_equal(r->op.limit, LEDGER_PAGE_DEFAULT);
    r = decode("GET", path, "limit=5&after", NULL, NULL, NULL);
    assert_int_equal(r->rc, 0);
    assert_int_equal(r->op.after, 0);
    assert_int_equal(r->op.limit, 5);
    /* Other routes ignore the query. */
    assert_int_equal(decode("GET", "/v1/merchants/m-1/balances", "x=1", NULL, NULL, NULL)->rc, 0);
    /* A bad merchant in the path. */
    expect_error(decode("GET", "/v1/merchants/m.1/ledger", NULL, NULL, NULL, NULL), 400,
                 "invalid_param", "merchant_id");
}

static void test_authenticated_merchant(void **state)
{
    (void)state;
    struct result *r =
        decode("POST", "/v1/payments/authorize", NULL,
               "{\"merchant_id\":\"m-1\",\"amount\":1,\"currency\":\"KRW\"}", "k", "m-2");
    expect_error(r, 403, "forbidden", NULL);
    r = decode("POST", "/v1/payments/authorize", NULL,
               "{\"merchant_id\":\"m-1\",\"amount\":1,\"currency\":\"KRW\"}", "k", "m-1");
    assert_int_equal(r->rc, 0);
    assert_true(r->op.authenticated);
    expect_error(decode("GET", "/v1/merchants/m-1/balances", NULL, NULL, NULL, "m-12"), 403,
                 "forbidden", NULL);
    expect_error(decode("GET", "/v1/merchants/m-1/ledger", NULL, NULL, NULL, "m"), 403, "forbidden",
                 NULL);
    r = decode("POST", "/v1/payments/" PAY "/refund", NULL, "{}", "k", "m-9");
    assert_int_equal(r->rc, 0);
    assert_true(r->op.authenticated);
    assert_string_equal(r->op.merchant_id, "m-9");
    r = decode("GET", "/v1/payments/" PAY, NULL, NULL, NULL, NULL);
    assert_false(r->op.authenticated);
    assert_int_equal(r->op.merchant_id_len, 0);
}

/* ---- Renderers ---- */

static char out[8192];

static void expect_json(struct jw *w, const char *want)
{
    assert_int_equal(jw_finish(w), 0);
    if (w->len != strlen(want) || memcmp(out, want, w->len) != 0)
        fail_msg("got  %.*s\nwant %s", (int)w->len, out, want);
}

static void test_render_payment_and_refund(void **state)
{
    (void)state;
    struct payment p = {.id = "pay_00000000000000002a",
                        .merchant_id = "m-1",
                        .merchant_id_len = 3,
                        .currency = "KRW",
                        .status = PAYMENT_AUTHORIZED,
                        .amount = 15000,
                        .has_reference = true,
                        .reference_len = 10,
                        .reference = "order-\"7\"7",
                        .created_at_ms = 1795600800123LL,
                        .updated_at_ms = 1795600801000LL};
    struct jw w;
    jw_init(&w, out, sizeof(out));
    assert_int_equal(api_render_payment(&w, &p), 0);
    expect_json(&w, "{\"id\":\"pay_00000000000000002a\",\"merchant_id\":\"m-1\",\"amount\":15000,"
                    "\"currency\":\"KRW\",\"status\":\"authorized\",\"captured_amount\":0,"
                    "\"refunded_amount\":0,\"reference\":\"order-\\\"7\\\"7\","
                    "\"created_at\":\"2026-11-25T10:00:00.123Z\","
                    "\"updated_at\":\"2026-11-25T10:00:01.000Z\"}");
    p.has_reference = false;
    p.reference_len = 0;
    p.status = PAYMENT_PARTIALLY_REFUNDED;
    p.captured_amount = 12000;
    p.refunded_amount = 500;
    jw_init(&w, out, sizeof(out));
    assert_int_equal(api_render_payment(&w, &p), 0);
    expect_json(&w,
                "{\"id\":\"pay_00000000000000002a\",\"merchant_id\":\"m-1\",\"amount\":15000,"
                "\"currency\":\"KRW\",\"status\":\"partially_refunded\",\"captured_amount\":12000,"
                "\"refunded_amount\":500,\"reference\":null,"
                "\"created_at\":\"2026-11-25T10:00:00.123Z\","
                "\"updated_at\":\"2026-11-25T10:00:01.000Z\"}");
    struct refund r = {.id = "rfd_000000000000000001",
                       .payment_id = "pay_00000000000000002a",
                       .currency = "KRW",
                       .amount = 500,
                       .payment_status = PAYMENT_PARTIALLY_REFUNDED,
                       .created_at_ms = 0};
    jw_init(&w, out, sizeof(out));
    assert_int_equal(api_render_refund(&w, &r), 0);
    expect_json(&w, "{\"id\":\"rfd_000000000000000001\",\"payment_id\":\"pay_00000000000000002a\","
                    "\"amount\":500,\"currency\":\"KRW\",\"payment_status\":\"partially_refunded\","
                    "\"created_at\":\"1970-01-01T00:00:00.000Z\"}");
    /* A payment with the biggest reference still fits an answer. */
    memset(p.reference, '"', REFERENCE_MAX_CHARS);
    p.has_reference = true;
    p.reference_len = REFERENCE_MAX_CHARS;
    jw_init(&w, out, ENGINE_ANSWER_MAX_BYTES);
    assert_int_equal(api_render_payment(&w, &p), 0);
}

static void test_render_error(void **state)
{
    (void)state;
    struct api_error e;
    struct jw w;
    api_error_set(&e, 409, "invalid_state", "payment is voided", NULL);
    jw_init(&w, out, sizeof(out));
    assert_int_equal(api_render_error(&w, &e, "req-\"1", 6), 0);
    expect_json(&w, "{\"error\":{\"code\":\"invalid_state\",\"message\":\"payment is voided\","
                    "\"param\":null,\"request_id\":\"req-\\\"1\"}}");
    struct result *r = decode("POST", "/v1/payments/authorize", NULL,
                              "{\"merchant_id\":\"m\",\"amount\":1,\"currency\":\"USD\","
                              "\"a\\u0001\":1}",
                              "k", NULL);
    assert_int_equal(r->rc, -EINVAL);
    jw_init(&w, out, sizeof(out));
    assert_int_equal(api_render_error(&w, &r->err, r->op.request_id, r->op.request_id_len), 0);
    expect_json(&w,
                "{\"error\":{\"code\":\"invalid_param\",\"message\":\"a\\u0001: unknown field\","
                "\"param\":\"a\\u0001\",\"request_id\":\"req-1\"}}");
    /* Too small a buffer: an error, never an overrun. */
    jw_init(&w, out, 20);
    assert_int_equal(api_render_error(&w, &e, "x", 1), -ENOBUFS);
}

static void test_render_lists(void **state)
{
    (void)state;
    struct jw w;
    jw_init(&w, out, sizeof(out));
    api_render_balances_begin(&w, "m-1", 3);
    api_render_balances_end(&w);
    expect_json(&w, "{\"merchant_id\":\"m-1\",\"balances\":[]}");
    struct balance b1 = {.currency = "EUR", .clearing = -12, .pending = 2, .available = 10};
    struct balance b2 = {
        .currency = "KRW", .clearing = -15000, .pending = 3000, .available = 12000};
    jw_init(&w, out, sizeof(out));
    api_render_balances_begin(&w, "m-1", 3);
    api_render_balance(&w, &b1);
    api_render_balance(&w, &b2);
    assert_int_equal(api_render_balances_end(&w), 0);
    expect_json(&w, "{\"merchant_id\":\"m-1\",\"balances\":["
                    "{\"currency\":\"EUR\",\"pending\":2,\"available\":10},"
                    "{\"currency\":\"KRW\",\"pending\":3000,\"available\":12000}]}");
    struct ledger_entry e = {.seq = 41,
                             .payment_id = "pay_00000000000000002a",
                             .currency = "KRW",
                             .debit = LEDGER_PENDING,
                             .credit = LEDGER_AVAILABLE,
                             .amount = 12000,
                             .created_at_ms = 1795600800123LL};
    jw_init(&w, out, sizeof(out));
    api_render_ledger_begin(&w, "m-1", 3);
    api_render_ledger_entry(&w, &e);
    e.seq = 42;
    e.debit = LEDGER_PENDING;
    e.credit = LEDGER_CLEARING;
    e.amount = 3000;
    api_render_ledger_entry(&w, &e);
    assert_int_equal(api_render_ledger_end(&w, true, 42), 0);
    expect_json(&w, "{\"merchant_id\":\"m-1\",\"entries\":["
                    "{\"seq\":41,\"payment_id\":\"pay_00000000000000002a\",\"debit\":\"pending\","
                    "\"credit\":\"available\",\"amount\":12000,\"currency\":\"KRW\","
                    "\"created_at\":\"2026-11-25T10:00:00.123Z\"},"
                    "{\"seq\":42,\"payment_id\":\"pay_00000000000000002a\",\"debit\":\"pending\","
                    "\"credit\":\"clearing\",\"amount\":3000,\"currency\":\"KRW\","
                    "\"created_at\":\"2026-11-25T10:00:00.123Z\"}],\"next_after\":42}");
    jw_init(&w, out, sizeof(out));
    api_render_ledger_begin(&w, "m-1", 3);
    api_render_ledger_end(&w, false, 0);
    expect_json(&w, "{\"merchant_id\":\"m-1\",\"entries\":[],\"next_after\":null}");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_routes),
        cmocka_unit_test(test_not_found_and_method),
        cmocka_unit_test(test_idempotency_key),
        cmocka_unit_test(test_idempotency_key_twice),
        cmocka_unit_test(test_query_on_post),
        cmocka_unit_test(test_authorize_body),
        cmocka_unit_test(test_amounts_through_codec),
        cmocka_unit_test(test_ledger_query),
        cmocka_unit_test(test_authenticated_merchant),
        cmocka_unit_test(test_render_payment_and_refund),
        cmocka_unit_test(test_render_error),
        cmocka_unit_test(test_render_lists),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
