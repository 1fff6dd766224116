/*
 * Tests of engine/apply.c through the codec, on the in-memory store (mem_store.h):
 * the (state, operation) table, idempotent replay and conflicts, ownership, ledger
 * postings and balances, events, paging, and injected store failures.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "engine/apply.h"
#include "engine/ids.h"
#include "tests/engine/mem_store.h"

#define NSHARDS 2
#define T0      1795600800123LL

struct env {
    struct mem_store m;
    char body[ENGINE_READ_ANSWER_MAX_BYTES];
    struct answer a;
    int rc; /* of engine_apply */
    char last_id[ID_BYTES + 1];
};

static int setup(void **state)
{
    struct env *e = calloc(1, sizeof(*e));
    assert_non_null(e);
    assert_int_equal(mem_store_init(&e->m, 4096, 8 << 20), 0);
    *state = e;
    return 0;
}

static int teardown(void **state)
{
    struct env *e = *state;
    mem_store_free(&e->m);
    free(e);
    return 0;
}

static struct engine_span S(const char *s) {
    return (struct engine_span){s, s ? strlen(s) : 0};
}

/* One request through api_decode and engine_apply; returns the HTTP status. Decode
 * errors are rendered like net/ would. */
static int
req(struct env *e, const char *method, const char *path, const char *query, const char *body,
    const char *key, const char *auth, int64_t now)
{
    struct api_request r = {.method = S(method),
                            .path = S(path),
                            .query = S(query),
                            .body = S(body),
                            .idem_key = S(key),
                            .auth_merchant = S(auth),
                            .request_id = S("req-x")};
    struct op op;
    struct api_error err;
    e->a = (struct answer){.body = e->body, .cap = sizeof(e->body)};
    e->rc = 0;
    if (api_decode(&r, NSHARDS, &op, &err) != 0) {
        struct jw w;
        jw_init(&w, e->body, sizeof(e->body));
        assert_int_equal(api_render_error(&w, &err, op.request_id, op.request_id_len), 0);
        e->a.status = err.status;
        e->a.len = w.len;
        return err.status;
    }
    e->rc = engine_apply(&mem_store_ops, &e->m, &op, now, &e->a);
    if (e->rc)
        return -1;
    assert_true(e->a.len < e->a.cap);
    e->body[e->a.len] = '\0';
    return e->a.status;
}

/* Whether the last answer's body contains s. */
static bool has(const struct env *e, const char *s)
{
    return strstr(e->body, s) != NULL;
}

static void expect_code(const struct env *e, const char *code)
{
    char want[80];
    snprintf(want, sizeof(want), "\"code\":\"%s\"", code);
    if (!has(e, want))
        fail_msg("want %s in %s", code, e->body);
}

/* POST authorize; remembers the new payment id in e->last_id. */
static int authorize(struct env *e, const char *merchant, int64_t amount, const char *key)
{
    char body[256];
    snprintf(body, sizeof(body), "{\"merchant_id\":\"%s\",\"amount\":%lld,\"currency\":\"KRW\"}",
             merchant, (long long)amount);
    int st = req(e, "POST", "/v1/payments/authorize", NULL, body, key, NULL, T0);
    if (st == 201) {
        const char *p = strstr(e->body, "\"id\":\"");
        assert_non_null(p);
        memcpy(e->last_id, p + 6, ID_BYTES);
        e->last_id[ID_BYTES] = '\0';
    }
    return st;
}

static int act(struct env *e, const char *id, const char *verb, const char *body, const char *key,
               const char *auth)
{
    char path[96];
    snprintf(path, sizeof(path), "/v1/payments/%s/%s", id, verb);
    return req(e, "POST", path, NULL, body, key, auth, T0 + 1000);
}

static void test_authorize(void **state)
{
    struct env *e = *state;
    assert_int_equal(authorize(e, "m-1", 15000, "a1"), 201);
    assert_false(e->a.replayed);
    uint32_t shard = engine_shard_of_merchant("m-1", 3, NSHARDS);
    char want_id[ID_BYTES + 1];
    ids_format(want_id, IDS_PAYMENT, shard, 1);
    assert_string_equal(e->last_id, want_id);
    char want[512];
    snprintf(want, sizeof(want),
             "{\"id\":\"%s\",\"merchant_id\":\"m-1\",\"amount\":15000,\"currency\":\"KRW\","
             "\"status\":\"authorized\",\"captured_amount\":0,\"refunded_amount\":0,"
             "\"reference\":null,\"created_at\":\"2026-11-25T10:00:00.123Z\","
             "\"updated_at\":\"2026-11-25T10:00:00.123Z\"}",
             want_id);
    assert_string_equal(e->body, want);
    const struct payment *p = mem_store_payment(&e->m, want_id);
    assert_non_null(p);
    assert_int_equal(p->status, PAYMENT_AUTHORIZED);
    const struct balance *b = mem_store_balance(&e->m, "m-1", "KRW");
    assert_non_null(b);
    assert_int_equal(b->pending, 15000);
    assert_int_equal(b->clearing, -15000);
    assert_int_equal(e->m.nentries, 1);
    /* The event. */
    assert_int_equal(e->m.nevents, 1);
    assert_string_equal(e->m.events[0].topic, "payment.authorized");
    assert_string_equal(e->m.events[0].key, "m-1");
    size_t len;
    const char *v = mem_store_event_value(&e->m, 0, &len);
    char evt[EVENT_ID_BYTES + 1];
    engine_event_id(evt, shard, 1);
    char head[256];
    snprintf(head, sizeof(head),
             "{\"event_id\":\"%s\",\"type\":\"payment.authorized\","
             "\"occurred_at\":\"2026-11-25T10:00:00.123Z\",\"amount\":15000,\"payment\":{",
             evt);
    assert_memory_equal(v, head, strlen(head));
    assert_memory_equal(v + strlen(head) - 1, want, strlen(want)); /* the payment after */
    assert_int_equal(len, strlen(head) - 1 + strlen(want) + 1);
    /* GET gives the same payment bytes. */
    char path[64];
    snprintf(path, sizeof(path), "/v1/payments/%s", want_id);
    assert_int_equal(req(e, "GET", path, NULL, NULL, NULL, NULL, T0 + 5), 200);
    assert_string_equal(e->body, want);
}

/* Drives a fresh payment of 1000 into status s (via the API), id in e->last_id. */
static void make(struct env *e, enum payment_status s, int n)
{
    char k[32];
    snprintf(k, sizeof(k), "mk-%d", n);
    assert_int_equal(authorize(e, "m-1", 1000, k), 201);
    snprintf(k, sizeof(k), "mk2-%d", n);
    switch (s) {
    case PAYMENT_AUTHORIZED:
        return;
    case PAYMENT_VOIDED:
        assert_int_equal(act(e, e->last_id, "void", NULL, k, NULL), 200);
        return;
    case PAYMENT_CAPTURED:
        assert_int_equal(act(e, e->last_id, "capture", NULL, k, NULL), 200);
        return;
    case PAYMENT_PARTIALLY_REFUNDED:
    case PAYMENT_REFUNDED:
        assert_int_equal(act(e, e->last_id, "capture", NULL, k, NULL), 200);
        snprintf(k, sizeof(k), "mk3-%d", n);
        assert_int_equal(act(e, e->last_id, "refund",
                             s == PAYMENT_REFUNDED ? "{}" : "{\"amount\":100}", k, NULL),
                         201);
        return;
    }
}

static void test_state_table(void **state)
{
    struct env *e = *state;
    static const struct {
        enum payment_status from;
        const char *verb, *body;
        int status;
        const char *code; /* error code, or the status after (in the body) */
    } table[] = {
        {PAYMENT_AUTHORIZED, "capture", "{}", 200, "\"status\":\"captured\""},
        {PAYMENT_AUTHORIZED, "capture", "{\"amount\":1000}", 200, "\"captured_amount\":1000"},
        {PAYMENT_AUTHORIZED, "capture", "{\"amount\":1}", 200, "\"captured_amount\":1,"},
        {PAYMENT_AUTHORIZED, "capture", "{\"amount\":1001}", 409, "amount_exceeds_remaining"},
        {PAYMENT_AUTHORIZED, "void", "{}", 200, "\"status\":\"voided\""},
        {PAYMENT_AUTHORIZED, "refund", "{}", 409, "invalid_state"},
        {PAYMENT_CAPTURED, "capture", "{}", 409, "invalid_state"},
        {PAYMENT_CAPTURED, "void", "{}", 409, "invalid_state"},
        {PAYMENT_CAPTURED, "refund", "{}", 201, "\"payment_status\":\"refunded\""},
        {PAYMENT_CAPTURED, "refund", "{\"amount\":999}", 201, "\"partially_refunded\""},
        {PAYMENT_CAPTURED, "refund", "{\"amount\":1001}", 409, "amount_exceeds_remaining"},
        {PAYMENT_PARTIALLY_REFUNDED, "capture", "{}", 409, "invalid_state"},
        {PAYMENT_PARTIALLY_REFUNDED, "void", "{}", 409, "invalid_state"},
        {PAYMENT_PARTIALLY_REFUNDED, "refund", "{}", 201, "\"amount\":900,"},
        {PAYMENT_PARTIALLY_REFUNDED, "refund", "{\"amount\":901}", 409, "amount_exceeds_remaining"},
        {PAYMENT_REFUNDED, "capture", "{}", 409, "invalid_state"},
        {PAYMENT_REFUNDED, "void", "{}", 409, "invalid_state"},
        {PAYMENT_REFUNDED, "refund", "{}", 409, "invalid_state"},
        {PAYMENT_REFUNDED, "refund", "{\"amount\":1}", 409, "invalid_state"},
        {PAYMENT_VOIDED, "capture", "{}", 409, "invalid_state"},
        {PAYMENT_VOIDED, "void", "{}", 409, "invalid_state"},
        {PAYMENT_VOIDED, "refund", "{}", 409, "invalid_state"},
    };
    static const char *const names[] = {"",         "authorized", "captured", "partially_refunded",
                                        "refunded", "voided"};
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        make(e, table[i].from, (int)i);
        struct payment before = *mem_store_payment(&e->m, e->last_id);
        size_t entries = e->m.nentries, events = e->m.nevents;
        uint64_t writes = e->m.writes;
        char key[16];
        snprintf(key, sizeof(key), "t-%zu", i);
        int st = act(e, e->last_id, table[i].verb, table[i].body, key, NULL);
        if (st != table[i].status || !has(e, table[i].code))
            fail_msg("row %zu (%s %s): %d %s", i, names[table[i].from], table[i].verb, st, e->body);
        if (st == 409) {
            /* Refused: the payment, ledger and outbox are untouched; only the key is
             * recorded (one write). */
            const struct payment *after = mem_store_payment(&e->m, e->last_id);
            assert_memory_equal(after, &before, sizeof(before));
            assert_int_equal(e->m.nentries, entries);
            assert_int_equal(e->m.nevents, events);
            assert_int_equal(e->m.writes, writes + 1);
            if (strcmp(table[i].code, "invalid_state") == 0) {
                char msg[64];
                snprintf(msg, sizeof(msg), "\"message\":\"payment is %s\"", names[table[i].from]);
                assert_true(has(e, msg));
            }
        } else {
            assert_int_equal(e->m.nevents, events + 1);
        }
        /* GET works in every state. */
        char path[64];
        snprintf(path, sizeof(path), "/v1/payments/%s", e->last_id);
        assert_int_equal(req(e, "GET", path, NULL, NULL, NULL, NULL, T0), 200);
    }
}

static void test_idempotent_replay(void **state)
{
    struct env *e = *state;
    const char *body = "{\"merchant_id\":\"m-1\",\"amount\":700,\"currency\":\"EUR\"}";
    assert_int_equal(req(e, "POST", "/v1/payments/authorize", NULL, body, "K", NULL, T0), 201);
    char first[1024];
    size_t first_len = e->a.len;
    memcpy(first, e->body, first_len);
    size_t pays = e->m.npayments, entries = e->m.nentries, events = e->m.nevents;
    uint64_t writes = e->m.writes;

    /* Same key, same request, later: byte for byte, flagged, nothing written. */
    assert_int_equal(req(e, "POST", "/v1/payments/authorize", NULL, body, "K", NULL, T0 + 9999),
                     201);
    assert_true(e->a.replayed);
    assert_int_equal(e->a.len, first_len);
    assert_memory_equal(e->body, first, first_len);
    assert_int_equal(e->m.npayments, pays);
    assert_int_equal(e->m.nentries, entries);
    assert_int_equal(e->m.nevents, events);
    assert_int_equal(e->m.writes, writes);

    /* Same key, another body (even one space): 409, nothing written. */
    const char *body2 = "{\"merchant_id\":\"m-1\",\"amount\":700, \"currency\":\"EUR\"}";
    assert_int_equal(req(e, "POST", "/v1/payments/authorize", NULL, body2, "K", NULL, T0), 409);
    expect_code(e, "idempotency_key_reused");
    assert_false(e->a.replayed);
    assert_int_equal(e->m.writes, writes);
    /* ... or another path with the same merchant scope. */
    assert_int_equal(act(e, "pay_000000000000000001", "void", NULL, "K", "m-1"), 409);
    expect_code(e, "idempotency_key_reused");
    /* A query string on a POST never gets this far: the codec refuses it (400), so the
     * fingerprint's query part is always empty for a POST. */
    assert_int_equal(req(e, "POST", "/v1/payments/authorize", "x=1", body, "K", NULL, T0), 400);
    expect_code(e, "invalid_param");
    assert_int_equal(e->m.writes, writes);
    /* The key is scoped to the merchant: m-2 may use "K" too. */
    assert_int_equal(req(e, "POST", "/v1/payments/authorize", NULL,
                         "{\"merchant_id\":\"m-2\",\"amount\":700,\"currency\":\"EUR\"}", "K", NULL,
                         T0),
                     201);
    assert_false(e->a.replayed);
    /* Another key, same body: a new payment. */
    assert_int_equal(req(e, "POST", "/v1/payments/authorize", NULL, body, "K2", NULL, T0), 201);
    assert_false(e->a.replayed);
    assert_int_equal(e->m.npayments, pays + 2);
}

static void test_refusals_are_replayed(void **state)
{
    struct env *e = *state;
    make(e, PAYMENT_VOIDED, 1);
    char id[ID_BYTES + 1];
    strcpy(id, e->last_id);
    assert_int_equal(act(e, id, "capture", "{}", "c1", NULL), 409);
    char first[1024];
    size_t first_len = e->a.len;
    memcpy(first, e->body, first_len);
    assert_int_equal(act(e, id, "capture", "{}", "c1", NULL), 409);
    assert_true(e->a.replayed);
    assert_memory_equal(e->body, first, first_len);
    /* An over-amount refusal too, even after the payment could take it: the first
     * answer stands. */
    make(e, PAYMENT_AUTHORIZED, 2);
    strcpy(id, e->last_id);
    assert_int_equal(act(e, id, "capture", "{\"amount\":5000}", "c2", NULL), 409);
    expect_code(e, "amount_exceeds_remaining");
    assert_int_equal(act(e, id, "capture", "{\"amount\":5000}", "c2", NULL), 409);
    assert_true(e->a.replayed);
    /* A success replays after later changes, with the old body. */
    assert_int_equal(act(e, id, "capture", "{\"amount\":400}", "c3", NULL), 200);
    memcpy(first, e->body, e->a.len);
    first_len = e->a.len;
    assert_int_equal(act(e, id, "refund", "{}", "r1", NULL), 201);
    assert_int_equal(act(e, id, "capture", "{\"amount\":400}", "c3", NULL), 200);
    assert_true(e->a.replayed);
    assert_int_equal(e->a.len, first_len);
    assert_memory_equal(e->body, first, first_len);
    /* Validation errors (400) are not stored: the fixed request then runs. */
    make(e, PAYMENT_AUTHORIZED, 3);
    strcpy(id, e->last_id);
    assert_int_equal(act(e, id, "capture", "{\"amount\":0}", "c4", NULL), 400);
    assert_int_equal(act(e, id, "capture", "{\"amount\":10}", "c4", NULL), 200);
    assert_false(e->a.replayed);
}

static void test_ownership_and_not_found(void **state)
{
    struct env *e = *state;
    assert_int_equal(authorize(e, "m-1", 1000, "o1"), 201);
    char id[ID_BYTES + 1], path[64];
    strcpy(id, e->last_id);
    snprintf(path, sizeof(path), "/v1/payments/%s", id);
    /* Another merchant sees 404, for writes and reads, and nothing changes. */
    size_t events = e->m.nevents;
    assert_int_equal(act(e, id, "capture", NULL, "x1", "m-2"), 404);
    expect_code(e, "not_found");
    assert_int_equal(mem_store_payment(&e->m, id)->status, PAYMENT_AUTHORIZED);
    assert_int_equal(e->m.nevents, events);
    assert_int_equal(req(e, "GET", path, NULL, NULL, NULL, "m-2", T0), 404);
    assert_int_equal(req(e, "GET", path, NULL, NULL, NULL, "m-1", T0), 200);
    /* The 404 was stored in m-2's scope and replays. */
    assert_int_equal(act(e, id, "capture", NULL, "x1", "m-2"), 404);
    assert_true(e->a.replayed);
    /* The owner may capture. */
    assert_int_equal(act(e, id, "capture", NULL, "x1", "m-1"), 200);
    assert_false(e->a.replayed);
    /* A well-formed id that does not exist: 404, stored only with a scope. */
    char ghost[ID_BYTES + 1];
    ids_format(ghost, IDS_PAYMENT, 1, 999);
    uint64_t writes = e->m.writes;
    assert_int_equal(act(e, ghost, "void", NULL, "g1", NULL), 404);
    assert_int_equal(e->m.writes, writes);
    assert_int_equal(act(e, ghost, "void", NULL, "g1", "m-1"), 404);
    assert_int_equal(e->m.writes, writes + 1);
    snprintf(path, sizeof(path), "/v1/payments/%s", ghost);
    assert_int_equal(req(e, "GET", path, NULL, NULL, NULL, NULL, T0), 404);
}

static int64_t sum_all_balances(const struct mem_store *m)
{
    int64_t s = 0;
    for (size_t i = 0; i < m->nbalances; i++)
        s += m->balances[i].b.clearing + m->balances[i].b.pending + m->balances[i].b.available;
    return s;
}

static void test_ledger_and_balances(void **state)
{
    struct env *e = *state;
    assert_int_equal(authorize(e, "m-7", 1000, "l1"), 201);
    char a[ID_BYTES + 1];
    strcpy(a, e->last_id);
    assert_int_equal(act(e, a, "capture", "{\"amount\":600}", "l2", NULL), 200);
    assert_true(has(e, "\"refunded_amount\":0"));
    assert_int_equal(act(e, a, "refund", "{\"amount\":100}", "l3", NULL), 201);
    /* The refund id shares the payment's shard. */
    const char *rid = strstr(e->body, "\"id\":\"") + 6;
    assert_int_equal(ids_shard_of(rid, ID_BYTES), ids_shard_of(a, ID_BYTES));
    assert_memory_equal(rid, "rfd_", 4);
    assert_int_equal(authorize(e, "m-7", 50, "l4"), 201);
    char b[ID_BYTES + 1];
    strcpy(b, e->last_id);
    assert_int_equal(act(e, b, "void", NULL, "l5", NULL), 200);
    assert_int_equal(authorize(e, "m-7", 30, "l6"), 201);
    assert_int_equal(sum_all_balances(&e->m), 0);

    assert_int_equal(req(e, "GET", "/v1/merchants/m-7/balances", NULL, NULL, NULL, NULL, T0), 200);
    assert_string_equal(e->body, "{\"merchant_id\":\"m-7\",\"balances\":[{\"currency\":\"KRW\","
                                 "\"pending\":30,\"available\":500}]}");
    assert_int_equal(req(e, "GET", "/v1/merchants/nobody/balances", NULL, NULL, NULL, NULL, T0),
                     200);
    assert_string_equal(e->body, "{\"merchant_id\":\"nobody\",\"balances\":[]}");

    /* Ledger: authorize, capture (2), refund, authorize, void, authorize = 7 entries. */
    struct {
        const char *debit, *credit;
        int amount;
    } want[] = {{"clearing", "pending", 1000}, {"pending", "available", 600},
                {"pending", "clearing", 400},  {"available", "clearing", 100},
                {"clearing", "pending", 50},   {"pending", "clearing", 50},
                {"clearing", "pending", 30}};
    uint64_t after = 0;
    size_t seen = 0;
    for (int page = 0; page < 4; page++) {
        char q[64];
        snprintf(q, sizeof(q), "after=%llu&limit=3", (unsigned long long)after);
        assert_int_equal(req(e, "GET", "/v1/merchants/m-7/ledger", q, NULL, NULL, NULL, T0), 200);
        const char *p = e->body;
        while ((p = strstr(p, "{\"seq\":")) != NULL) {
            char expect[128];
            snprintf(expect, sizeof(expect), "\"debit\":\"%s\",\"credit\":\"%s\",\"amount\":%d,",
                     want[seen].debit, want[seen].credit, want[seen].amount);
            const char *end = strchr(p, '}');
            if (strstr(p, expect) == NULL || strstr(p, expect) > end)
                fail_msg("entry %zu: %s", seen, p);
            after = strtoull(p + 7, NULL, 10);
            seen++;
            p++;
        }
        if (has(e, "\"next_after\":null"))
            break;
        char na[48];
        snprintf(na, sizeof(na), "\"next_after\":%llu}", (unsigned long long)after);
        assert_true(has(e, na));
    }
    assert_int_equal(seen, 7);
    /* Another merchant's entries are not in m-7's ledger. */
    assert_int_equal(authorize(e, "m-8", 5, "l7"), 201);
    assert_int_equal(req(e, "GET", "/v1/merchants/m-7/ledger", "limit=1000", NULL, NULL, NULL, T0),
                     200);
    assert_false(has(e, "\"amount\":5,"));
    assert_true(has(e, "\"next_after\":null"));
}

static void test_events(void **state)
{
    struct env *e = *state;
    assert_int_equal(authorize(e, "m-1", 1000, "e1"), 201);
    char id[ID_BYTES + 1];
    strcpy(id, e->last_id);
    assert_int_equal(act(e, id, "capture", "{\"amount\":250}", "e2", NULL), 200);
    assert_int_equal(act(e, id, "refund", "{\"amount\":50}", "e3", NULL), 201);
    assert_int_equal(e->m.nevents, 3);
    size_t len;
    const char *v = mem_store_event_value(&e->m, 1, &len);
    char buf[4096];
    memcpy(buf, v, len);
    buf[len] = '\0';
    assert_string_equal(e->m.events[1].topic, "payment.captured");
    assert_non_null(strstr(buf, "\"type\":\"payment.captured\""));
    assert_non_null(strstr(buf, "\"amount\":250,\"released_amount\":750,\"payment\":{"));
    assert_non_null(strstr(buf, "\"status\":\"captured\""));
    assert_non_null(strstr(buf, "\"occurred_at\":\"2026-11-25T10:00:01.123Z\""));
    v = mem_store_event_value(&e->m, 2, &len);
    memcpy(buf, v, len);
    buf[len] = '\0';
    assert_non_null(strstr(buf, "\"type\":\"payment.refunded\",\"occurred_at\":"));
    assert_non_null(strstr(buf, "\"amount\":50,\"refund\":{\"id\":\"rfd_"));
    assert_non_null(strstr(buf, "\"status\":\"partially_refunded\""));
    /* Event ids are distinct and follow the event sequence. */
    for (size_t i = 0; i < 3; i++) {
        char evt[EVENT_ID_BYTES + 1];
        engine_event_id(evt, ids_shard_of(id, ID_BYTES), i + 1);
        v = mem_store_event_value(&e->m, i, &len);
        assert_memory_equal(v + strlen("{\"event_id\":\""), evt, EVENT_ID_BYTES);
    }
    /* Void event. */
    assert_int_equal(authorize(e, "m-1", 80, "e4"), 201);
    assert_int_equal(act(e, e->last_id, "void", NULL, "e5", NULL), 200);
    v = mem_store_event_value(&e->m, 4, &len);
    memcpy(buf, v, len);
    buf[len] = '\0';
    assert_non_null(strstr(buf, "\"type\":\"payment.voided\""));
    assert_non_null(strstr(buf, "\"amount\":80,\"released_amount\":80,"));
}

static void test_store_failures(void **state)
{
    struct env *e = *state;
    /* Authorize writes: next_sequence(payment), payment_put, posting_add,
     * next_sequence(event), event_append, idem_put. Fail each once, then persistently. */
    for (int persist = 0; persist < 2; persist++) {
        for (uint64_t n = 1; n <= 6; n++) {
            mem_store_reset(&e->m);
            e->m.fail_write_at = n;
            e->m.fail_persist = persist;
            e->m.fail_errno = -EIO;
            assert_int_equal(authorize(e, "m-1", 10, "f"), -1);
            assert_int_equal(e->rc, -EIO);
            assert_int_equal(e->m.writes, n); /* stopped at the failure */
        }
        mem_store_reset(&e->m);
        e->m.fail_write_at = 7;
        assert_int_equal(authorize(e, "m-1", 10, "f"), 201);
    }
    /* Capture: payment_put, 2x posting_add, next_sequence, event_append, idem_put. */
    for (uint64_t n = 1; n <= 6; n++) {
        mem_store_reset(&e->m);
        e->m.fail_write_at = 0;
        assert_int_equal(authorize(e, "m-1", 10, "f"), 201);
        e->m.fail_write_at = e->m.writes + n;
        e->m.fail_persist = false;
        e->m.fail_errno = -ENOSPC;
        assert_int_equal(act(e, e->last_id, "capture", "{\"amount\":4}", "g", NULL), -1);
        assert_int_equal(e->rc, -ENOSPC);
    }
    e->m.fail_write_at = 0;
    /* A buffer below ENGINE_ANSWER_MAX_BYTES is refused before anything happens. */
    struct op op = {.kind = OP_GET_PAYMENT, .payment_id = "pay_000000000000000001"};
    char small[16];
    struct answer a = {.body = small, .cap = sizeof(small)};
    assert_int_equal(engine_apply(&mem_store_ops, &e->m, &op, T0, &a), -ENOBUFS);
}

static void test_currency_limit(void **state)
{
    struct env *e = *state;
    for (int i = 0; i <= MERCHANT_CURRENCIES_MAX; i++) {
        char body[128], key[16];
        snprintf(body, sizeof(body),
                 "{\"merchant_id\":\"m-c\",\"amount\":1,\"currency\":\"%c%c%c\"}", 'A' + i / 676,
                 'A' + i / 26 % 26, 'A' + i % 26);
        snprintf(key, sizeof(key), "c%d", i);
        int st = req(e, "POST", "/v1/payments/authorize", NULL, body, key, NULL, T0);
        if (i < MERCHANT_CURRENCIES_MAX) {
            assert_int_equal(st, 201);
        } else {
            assert_int_equal(st, 400);
            assert_true(has(e, "\"param\":\"currency\""));
        }
    }
    /* A currency it already uses still works. */
    assert_int_equal(req(e, "POST", "/v1/payments/authorize", NULL,
                         "{\"merchant_id\":\"m-c\",\"amount\":1,\"currency\":\"AAA\"}", "again",
                         NULL, T0),
                     201);
    assert_int_equal(req(e, "GET", "/v1/merchants/m-c/balances", NULL, NULL, NULL, NULL, T0), 200);
    assert_true(e->a.len > 256 * 40);
}

static void test_same_batch_reads_see_writes(void **state)
{
    struct env *e = *state;
    /* One "batch": capture then void of one payment; the void sees the capture. */
    assert_int_equal(authorize(e, "m-1", 1000, "b1"), 201);
    char id[ID_BYTES + 1];
    strcpy(id, e->last_id);
    assert_int_equal(act(e, id, "capture", NULL, "b2", NULL), 200);
    assert_int_equal(act(e, id, "void", NULL, "b3", NULL), 409);
    assert_true(has(e, "payment is captured"));
    /* Many partial refunds never exceed the captured amount. */
    int ok = 0;
    for (int i = 0; i < 12; i++) {
        char k[16];
        snprintf(k, sizeof(k), "rr%d", i);
        ok += act(e, id, "refund", "{\"amount\":90}", k, NULL) == 201;
    }
    assert_int_equal(ok, 11);
    assert_int_equal(mem_store_payment(&e->m, id)->refunded_amount, 990);
    assert_int_equal(act(e, id, "refund", NULL, "rr-last", NULL), 201);
    assert_true(has(e, "\"amount\":10,"));
    assert_int_equal(mem_store_payment(&e->m, id)->status, PAYMENT_REFUNDED);
    assert_int_equal(mem_store_balance(&e->m, "m-1", "KRW")->available, 0);
    assert_int_equal(sum_all_balances(&e->m), 0);
}

#define T(f) cmocka_unit_test_setup_teardown(f, setup, teardown)

int main(void)
{
    const struct CMUnitTest tests[] = {
        T(test_authorize),
        T(test_state_table),
        T(test_idempotent_replay),
        T(test_refusals_are_replayed),
        T(test_ownership_and_not_found),
        T(test_ledger_and_balances),
        T(test_events),
        T(test_store_failures),
        T(test_currency_limit),
        T(test_same_batch_reads_see_writes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
