/*
 * End-to-end tests of the payment API (SPEC §2, §6; DESIGN "Group commit", "Ledger")
 * against the real `ringpay serve --cores 2` over loopback HTTP, each ending with
 * `ringpay check` on the stopped engine's data:
 *   - lifecycle: authorize, get, partial capture, partial refunds up to the limit, void,
 *     every illegal transition (409 invalid_state), balances after each step, and the
 *     ledger (postings per DESIGN's table, paging with after/next_after);
 *   - idempotency: byte-identical replays with Idempotent-Replayed, 409
 *     idempotency_key_reused, keys scoped per merchant, stored refusals replayed;
 *   - malformed and hostile requests (more than 80), each with its status, code and
 *     param, and none of them changing anything;
 *   - concurrency: 32 connections on one hot merchant and merchants of both shards;
 *     balances equal what the answers said;
 *   - the same Idempotency-Key on many connections at once: exactly one operation;
 *   - a body in a later TCP segment than its head; pipelined authorizations to both
 *     shards answered in order;
 *   - log syncs wake the shard threads, never the main thread.
 * Workers never call cmocka assertions: they record, the test thread asserts.
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

#include "harness.h"
#include "pay_client.h"

#define NSHARDS   2
#define AUTH_PATH "/v1/payments/authorize"
#define PAYMENT_KEYS                                                                               \
    "id,merchant_id,amount,currency,status,captured_amount,refunded_amount,reference,"             \
    "created_at,updated_at"
#define REFUND_KEYS "id,payment_id,amount,currency,payment_status,created_at"

static struct rp_server srv;
static const char *const two_cores[] = {"--cores", "2", NULL};
static unsigned nshards = NSHARDS; /* of the running server, for id checks */

/* ---- helpers ---------------------------------------------------------------------- */

/* A payment object as answered, after checking its shape against SPEC §2. */
struct pay {
    char id[32];
    char merchant[80];
    char currency[8];
    char status[24];
    char reference[600];
    bool reference_null;
    long long amount, captured, refunded;
    char created[32], updated[32];
};

struct rfd {
    char id[32];
    char payment_id[32];
    char currency[8];
    char payment_status[24];
    long long amount;
    char created[32];
};

static void call(struct pc_conn *pc, const char *method, const char *path, const char *key,
                 const char *body, struct rp_response *r)
{
    int err = pc_call(pc, method, path, key, body, r);
    if (err)
        fail_msg("%s %s: transport error %d", method, path, err);
}

static void expect_status(const struct rp_response *r, int status, const char *what)
{
    if (r->status != status)
        fail_msg("%s: expected status %d, got %d: %s", what, status, r->status, r->body);
}

/* Asserts an error answer: status, the SPEC error body with code, and its message. */
static void expect_error(const struct rp_response *r, int status, const char *code,
                         const char *message, const char *what)
{
    expect_status(r, status, what);
    rp_assert_error_body(r, code);
    if (message && !strstr(r->body, message))
        fail_msg("%s: message \"%s\" missing: %s", what, message, r->body);
    if (rp_header(r, "Idempotent-Replayed"))
        fail_msg("%s: a fresh answer says Idempotent-Replayed: %s", what, r->body);
}

/* Checks "pay_" or "rfd_" + 2 hex shard + 16 hex sequence, and the shard. */
static void expect_id(const char *id, const char *prefix, unsigned shard)
{
    if (strlen(id) != 22 || strncmp(id, prefix, 4) != 0)
        fail_msg("bad id %s (prefix %s)", id, prefix);
    for (int i = 4; i < 22; i++)
        if (!strchr("0123456789abcdef", id[i]))
            fail_msg("bad id %s: not lower-case hex", id);
    unsigned got = (unsigned)strtoul((char[3]){id[4], id[5], 0}, NULL, 16);
    if (got != shard)
        fail_msg("id %s carries shard %u, expected %u", id, got, shard);
}

static void parse_payment(const char *body, struct pay *p)
{
    struct pc_json j;
    memset(p, 0, sizeof(*p));
    if (pc_json_parse(&j, body, strlen(body)) != 0)
        fail_msg("payment is not JSON: %s", body);
    char keys[256];
    if (!pc_json_keys(&j, 0, keys, sizeof(keys)) || strcmp(keys, PAYMENT_KEYS) != 0)
        fail_msg("payment members differ from SPEC: %s", body);
    int ref = pc_json_get(&j, 0, "reference");
    p->reference_null = pc_json_null(&j, ref);
    bool ok =
        pc_json_str(&j, pc_json_get(&j, 0, "id"), p->id, sizeof(p->id)) &&
        pc_json_str(&j, pc_json_get(&j, 0, "merchant_id"), p->merchant, sizeof(p->merchant)) &&
        pc_json_str(&j, pc_json_get(&j, 0, "currency"), p->currency, sizeof(p->currency)) &&
        pc_json_str(&j, pc_json_get(&j, 0, "status"), p->status, sizeof(p->status)) &&
        (p->reference_null || pc_json_str(&j, ref, p->reference, sizeof(p->reference))) &&
        pc_json_int(&j, pc_json_get(&j, 0, "amount"), &p->amount) &&
        pc_json_int(&j, pc_json_get(&j, 0, "captured_amount"), &p->captured) &&
        pc_json_int(&j, pc_json_get(&j, 0, "refunded_amount"), &p->refunded) &&
        pc_json_str(&j, pc_json_get(&j, 0, "created_at"), p->created, sizeof(p->created)) &&
        pc_json_str(&j, pc_json_get(&j, 0, "updated_at"), p->updated, sizeof(p->updated));
    pc_json_free(&j);
    if (!ok || !pc_is_timestamp(p->created) || !pc_is_timestamp(p->updated))
        fail_msg("payment members have wrong types: %s", body);
    if (strcmp(p->updated, p->created) < 0)
        fail_msg("updated_at before created_at: %s", body);
    expect_id(p->id, "pay_", pc_shard_of(p->merchant, nshards));
}

static void parse_refund(const char *body, struct rfd *r)
{
    struct pc_json j;
    memset(r, 0, sizeof(*r));
    if (pc_json_parse(&j, body, strlen(body)) != 0)
        fail_msg("refund is not JSON: %s", body);
    char keys[256];
    if (!pc_json_keys(&j, 0, keys, sizeof(keys)) || strcmp(keys, REFUND_KEYS) != 0)
        fail_msg("refund members differ from SPEC: %s", body);
    bool ok =
        pc_json_str(&j, pc_json_get(&j, 0, "id"), r->id, sizeof(r->id)) &&
        pc_json_str(&j, pc_json_get(&j, 0, "payment_id"), r->payment_id, sizeof(r->payment_id)) &&
        pc_json_str(&j, pc_json_get(&j, 0, "currency"), r->currency, sizeof(r->currency)) &&
        pc_json_str(&j, pc_json_get(&j, 0, "payment_status"), r->payment_status,
                    sizeof(r->payment_status)) &&
        pc_json_int(&j, pc_json_get(&j, 0, "amount"), &r->amount) &&
        pc_json_str(&j, pc_json_get(&j, 0, "created_at"), r->created, sizeof(r->created));
    pc_json_free(&j);
    if (!ok || !pc_is_timestamp(r->created))
        fail_msg("refund members have wrong types: %s", body);
}

/* POSTs and expects `status` with a payment body; returns it parsed. */
static void post_payment(struct pc_conn *pc, const char *path, const char *key, const char *body,
                         int status, struct pay *p)
{
    struct rp_response r;
    call(pc, "POST", path, key, body, &r);
    expect_status(&r, status, path);
    if (rp_header(&r, "Idempotent-Replayed"))
        fail_msg("%s key %s: first answer marked as a replay", path, key);
    parse_payment(r.body, p);
    rp_response_free(&r);
}

static void op_path(char *out, size_t cap, const char *id, const char *op)
{
    snprintf(out, cap, "/v1/payments/%s%s%s", id, op ? "/" : "", op ? op : "");
}

/* POST {id}/{op} expecting 409 with code and message. */
static void expect_refused(struct pc_conn *pc, const char *id, const char *op, const char *key,
                           const char *body, const char *code, const char *message)
{
    char path[128];
    op_path(path, sizeof(path), id, op);
    struct rp_response r;
    call(pc, "POST", path, key, body, &r);
    char what[192];
    snprintf(what, sizeof(what), "POST %s %s", path, body ? body : "(no body)");
    expect_error(&r, 409, code, message, what);
    rp_response_free(&r);
}

static void expect_balance(struct pc_conn *pc, const char *m, const char *cur, long long pending,
                           long long available)
{
    long long p = -1, a = -1;
    int err = pc_balance(pc, m, cur, &p, &a);
    if (err)
        fail_msg("balances of %s %s: error %d", m, cur, err);
    if (p != pending || a != available)
        fail_msg("balances of %s %s: pending %lld available %lld, expected %lld %lld", m, cur, p, a,
                 pending, available);
}

static void get_payment(struct pc_conn *pc, const char *id, struct pay *p, char **raw)
{
    char path[128];
    op_path(path, sizeof(path), id, NULL);
    struct rp_response r;
    call(pc, "GET", path, NULL, NULL, &r);
    expect_status(&r, 200, path);
    parse_payment(r.body, p);
    if (raw)
        *raw = strdup(r.body);
    rp_response_free(&r);
}

/* Stops the server with SIGTERM, runs `ringpay check`, asserts exit 0 and the count. */
static void stop_and_check(long long want_payments)
{
    int code = pc_server_halt(&srv);
    if (code != 0) {
        rp_server_dump_log(&srv, 4096);
        fail_msg("ringpay serve exited %d on SIGTERM", code);
    }
    static struct rp_run_result res;
    long long pays = -1;
    int rc = pc_check(&srv, &res, &pays);
    if (rc != 0)
        fail_msg("ringpay check exited %d:\n%s%s", rc, res.out, res.err);
    if (pays != want_payments)
        fail_msg("ringpay check counts %lld payments, expected %lld:\n%s", pays, want_payments,
                 res.out);
    assert_non_null(strstr(res.out, "; OK"));
    rp_server_stop(&srv);
}

/* ---- 1. lifecycle --------------------------------------------------------------- */

struct want_entry {
    const char *pay; /* payment id */
    const char *debit, *credit;
    long long amount;
    const char *currency;
};

/* Asserts the merchant's ledger equals want, read whole and in pages of 3. */
static void expect_ledger(struct pc_conn *pc, const char *m, const struct want_entry *want, int n)
{
    static struct pc_entry got[64];
    int cnt = 0;
    int err = pc_ledger_all(pc, m, 3, got, 64, &cnt);
    if (err)
        fail_msg("ledger of %s: error %d", m, err);
    if (cnt != n)
        fail_msg("ledger of %s: %d entries, expected %d", m, cnt, n);
    for (int i = 0; i < n; i++) {
        if (strcmp(got[i].payment_id, want[i].pay) != 0 ||
            strcmp(got[i].debit, want[i].debit) != 0 ||
            strcmp(got[i].credit, want[i].credit) != 0 || got[i].amount != want[i].amount ||
            strcmp(got[i].currency, want[i].currency) != 0)
            fail_msg("ledger of %s, entry %d: %s %s->%s %lld %s, expected %s %s->%s %lld %s", m, i,
                     got[i].payment_id, got[i].debit, got[i].credit, got[i].amount, got[i].currency,
                     want[i].pay, want[i].debit, want[i].credit, want[i].amount, want[i].currency);
        if (i > 0 && got[i].seq <= got[i - 1].seq)
            fail_msg("ledger of %s: seq not increasing at entry %d", m, i);
    }
}

/* One page: its entry count, its next_after (-1 for null), the seqs. */
static void expect_page(struct pc_conn *pc, const char *query, int want_n, long long want_next)
{
    char path[160];
    snprintf(path, sizeof(path), "/v1/merchants/lc-m1/ledger%s", query);
    struct rp_response r;
    call(pc, "GET", path, NULL, NULL, &r);
    expect_status(&r, 200, path);
    struct pc_json j;
    assert_int_equal(pc_json_parse(&j, r.body, r.body_len), 0);
    char keys[64], m[16];
    assert_true(pc_json_keys(&j, 0, keys, sizeof(keys)));
    assert_string_equal(keys, "merchant_id,entries,next_after");
    assert_true(pc_json_str(&j, pc_json_get(&j, 0, "merchant_id"), m, sizeof(m)));
    assert_string_equal(m, "lc-m1");
    int arr = pc_json_get(&j, 0, "entries");
    if (pc_json_size(&j, arr) != want_n)
        fail_msg("%s: %d entries, expected %d: %s", path, pc_json_size(&j, arr), want_n, r.body);
    for (int i = 0; i < want_n; i++) {
        int e = pc_json_at(&j, arr, i);
        char ek[128], ts[32];
        assert_true(pc_json_keys(&j, e, ek, sizeof(ek)));
        assert_string_equal(ek, "seq,payment_id,debit,credit,amount,currency,created_at");
        assert_true(pc_json_str(&j, pc_json_get(&j, e, "created_at"), ts, sizeof(ts)));
        assert_true(pc_is_timestamp(ts));
    }
    int na = pc_json_get(&j, 0, "next_after");
    long long next = -1;
    if (!pc_json_null(&j, na))
        assert_true(pc_json_int(&j, na, &next));
    if (next != want_next)
        fail_msg("%s: next_after %lld, expected %lld: %s", path, next, want_next, r.body);
    if (want_n > 0 && next >= 0) {
        long long last;
        assert_true(
            pc_json_int(&j, pc_json_get(&j, pc_json_at(&j, arr, want_n - 1), "seq"), &last));
        assert_int_equal(last, next); /* next_after is the last seq of the page */
    }
    pc_json_free(&j);
    rp_response_free(&r);
}

/* Pages through lc-m1's 10 entries by 3 and checks the boundaries. */
static void lifecycle_paging(struct pc_conn *pc)
{
    static struct pc_entry all[16];
    int n = 0;
    assert_int_equal(pc_ledger_all(pc, "lc-m1", 1000, all, 16, &n), 0);
    assert_int_equal(n, 10);
    char q[96];
    expect_page(pc, "?limit=3", 3, all[2].seq);
    snprintf(q, sizeof(q), "?after=%lld&limit=3", all[2].seq);
    expect_page(pc, q, 3, all[5].seq);
    snprintf(q, sizeof(q), "?limit=3&after=%lld", all[5].seq);
    expect_page(pc, q, 3, all[8].seq);
    snprintf(q, sizeof(q), "?after=%lld&limit=3", all[8].seq);
    expect_page(pc, q, 1, -1);
    expect_page(pc, "", 10, -1);               /* default limit 100 */
    expect_page(pc, "?after=&limit=", 10, -1); /* empty values: the defaults (SPEC §2) */
    expect_page(pc, "?after=&limit=3", 3, all[2].seq);
    expect_page(pc, "?limit=10", 10, -1); /* exactly the rest: last page */
    expect_page(pc, "?limit=9", 9, all[8].seq);
    snprintf(q, sizeof(q), "?after=%lld", all[9].seq);
    expect_page(pc, q, 0, -1); /* past the end */
    /* A merchant with no entries has an empty last page; its balances list is empty. */
    struct rp_response r;
    call(pc, "GET", "/v1/merchants/never-used/ledger", NULL, NULL, &r);
    expect_status(&r, 200, "ledger of never-used");
    assert_string_equal(r.body, "{\"merchant_id\":\"never-used\",\"entries\":[],"
                                "\"next_after\":null}");
    rp_response_free(&r);
    call(pc, "GET", "/v1/merchants/never-used/balances", NULL, NULL, &r);
    expect_status(&r, 200, "balances of never-used");
    assert_string_equal(r.body, "{\"merchant_id\":\"never-used\",\"balances\":[]}");
    rp_response_free(&r);
}

static void lifecycle_refunds(struct pc_conn *pc, const struct pay *p1, char rfd_ids[3][32])
{
    char path[128];
    op_path(path, sizeof(path), p1->id, "refund");
    static const struct {
        const char *key, *body;
        long long amount, avail_after;
        const char *status;
    } steps[] = {
        {"lc-rf-1", "{\"amount\":2000}", 2000, 10000, "partially_refunded"},
        {"lc-rf-2", "{\"amount\":3000}", 3000, 7000, "partially_refunded"},
        {"lc-rf-4", NULL, 7000, 0, "refunded"}, /* no body: what is left */
    };
    for (int i = 0; i < 3; i++) {
        if (i == 2) /* 7001 is one more than what is left */
            expect_refused(pc, p1->id, "refund", "lc-rf-3", "{\"amount\":7001}",
                           "amount_exceeds_remaining", NULL);
        struct rp_response r;
        call(pc, "POST", path, steps[i].key, steps[i].body, &r);
        expect_status(&r, 201, steps[i].key);
        struct rfd f;
        parse_refund(r.body, &f);
        rp_response_free(&r);
        expect_id(f.id, "rfd_", pc_shard_of("lc-m1", nshards));
        assert_string_equal(f.payment_id, p1->id);
        assert_string_equal(f.currency, "KRW");
        assert_string_equal(f.payment_status, steps[i].status);
        assert_int_equal(f.amount, steps[i].amount);
        if (i > 0)
            assert_true(strcmp(f.id, rfd_ids[i - 1]) > 0); /* new, later id */
        strcpy(rfd_ids[i], f.id);
        expect_balance(pc, "lc-m1", "KRW", 0, steps[i].avail_after);
    }
}

/* Authorize 15000 KRW, capture 12000 (3000 released), refund it in three steps, then
 * every transition from refunded is refused. */
static void lifecycle_p1(struct pc_conn *pc, struct pay *p1)
{
    struct pay g;
    char path[128], rfd_ids[3][32];
    post_payment(pc, AUTH_PATH, "lc-auth-1",
                 "{\"merchant_id\":\"lc-m1\",\"amount\":15000,\"currency\":\"KRW\","
                 "\"reference\":\"order-77\"}",
                 201, p1);
    assert_string_equal(p1->merchant, "lc-m1");
    assert_string_equal(p1->currency, "KRW");
    assert_string_equal(p1->status, "authorized");
    assert_string_equal(p1->reference, "order-77");
    assert_int_equal(p1->amount, 15000);
    assert_int_equal(p1->captured, 0);
    assert_int_equal(p1->refunded, 0);
    assert_string_equal(p1->created, p1->updated);
    get_payment(pc, p1->id, &g, NULL);
    assert_string_equal(g.status, "authorized");
    assert_string_equal(g.created, p1->created);
    expect_balance(pc, "lc-m1", "KRW", 15000, 0);

    op_path(path, sizeof(path), p1->id, "capture");
    post_payment(pc, path, "lc-cap-1", "{\"amount\":12000}", 200, &g);
    assert_string_equal(g.id, p1->id);
    assert_string_equal(g.status, "captured");
    assert_int_equal(g.amount, 15000);
    assert_int_equal(g.captured, 12000);
    assert_int_equal(g.refunded, 0);
    assert_string_equal(g.created, p1->created);
    expect_balance(pc, "lc-m1", "KRW", 0, 12000);
    expect_refused(pc, p1->id, "capture", "lc-cap-2", "{}", "invalid_state", "payment is captured");
    expect_refused(pc, p1->id, "void", "lc-void-1", NULL, "invalid_state", "payment is captured");

    lifecycle_refunds(pc, p1, rfd_ids);
    get_payment(pc, p1->id, &g, NULL);
    assert_string_equal(g.status, "refunded");
    assert_int_equal(g.captured, 12000);
    assert_int_equal(g.refunded, 12000);
    expect_refused(pc, p1->id, "refund", "lc-rf-5", NULL, "invalid_state", "payment is refunded");
    expect_refused(pc, p1->id, "refund", "lc-rf-6", "{\"amount\":1}", "invalid_state",
                   "payment is refunded");
    expect_refused(pc, p1->id, "capture", "lc-cap-3", NULL, "invalid_state", "payment is refunded");
    expect_refused(pc, p1->id, "void", "lc-void-2", NULL, "invalid_state", "payment is refunded");
    expect_balance(pc, "lc-m1", "KRW", 0, 0);
}

/* The void path, in a second currency; then nothing is legal any more. */
static void lifecycle_p2(struct pc_conn *pc, const struct pay *p1, struct pay *p2)
{
    struct pay g;
    char path[128];
    post_payment(pc, AUTH_PATH, "lc-auth-2",
                 "{\"merchant_id\":\"lc-m1\",\"amount\":500,\"currency\":\"USD\"}", 201, p2);
    assert_true(p2->reference_null);
    assert_true(strcmp(p2->id, p1->id) > 0);
    struct rp_response r;
    call(pc, "GET", "/v1/merchants/lc-m1/balances", NULL, NULL, &r);
    expect_status(&r, 200, "balances");
    assert_string_equal(r.body, "{\"merchant_id\":\"lc-m1\",\"balances\":["
                                "{\"currency\":\"KRW\",\"pending\":0,\"available\":0},"
                                "{\"currency\":\"USD\",\"pending\":500,\"available\":0}]}");
    rp_response_free(&r);
    op_path(path, sizeof(path), p2->id, "void");
    post_payment(pc, path, "lc-void-3", NULL, 200, &g);
    assert_string_equal(g.status, "voided");
    assert_int_equal(g.amount, 500);
    assert_int_equal(g.captured, 0);
    assert_int_equal(g.refunded, 0);
    expect_balance(pc, "lc-m1", "USD", 0, 0);
    expect_refused(pc, p2->id, "capture", "lc-cap-4", NULL, "invalid_state", "payment is voided");
    expect_refused(pc, p2->id, "refund", "lc-rf-7", NULL, "invalid_state", "payment is voided");
    expect_refused(pc, p2->id, "void", "lc-void-4", "{}", "invalid_state", "payment is voided");
}

/* From authorized: a refund is illegal, an over-capture exceeds, a full capture. */
static void lifecycle_p3(struct pc_conn *pc, struct pay *p3)
{
    struct pay g;
    char path[128];
    post_payment(pc, AUTH_PATH, "lc-auth-3",
                 "{\"merchant_id\":\"lc-m1\",\"amount\":700,\"currency\":\"KRW\","
                 "\"reference\":\"\xec\xa3\xbc\xeb\xac\xb8-7 \\\"q\\\"\"}",
                 201, p3);
    assert_string_equal(p3->reference, "\xec\xa3\xbc\xeb\xac\xb8-7 \\\"q\\\"");
    expect_refused(pc, p3->id, "refund", "lc-rf-8", NULL, "invalid_state", "payment is authorized");
    expect_refused(pc, p3->id, "capture", "lc-cap-5", "{\"amount\":701}",
                   "amount_exceeds_remaining", NULL);
    expect_balance(pc, "lc-m1", "KRW", 700, 0);
    op_path(path, sizeof(path), p3->id, "capture");
    post_payment(pc, path, "lc-cap-6", NULL, 200, &g);
    assert_string_equal(g.status, "captured");
    assert_int_equal(g.captured, 700);
    expect_balance(pc, "lc-m1", "KRW", 0, 700);
}

static void test_lifecycle(void **state)
{
    (void)state;
    rp_must_start(&srv, two_cores);
    struct pc_conn pc;
    pc_init(&pc, srv.port);
    struct pay p1, p2, p3;
    lifecycle_p1(&pc, &p1);
    lifecycle_p2(&pc, &p1, &p2);
    lifecycle_p3(&pc, &p3);
    const struct want_entry want[] = {
        {p1.id, "clearing", "pending", 15000, "KRW"},
        {p1.id, "pending", "available", 12000, "KRW"},
        {p1.id, "pending", "clearing", 3000, "KRW"},
        {p1.id, "available", "clearing", 2000, "KRW"},
        {p1.id, "available", "clearing", 3000, "KRW"},
        {p1.id, "available", "clearing", 7000, "KRW"},
        {p2.id, "clearing", "pending", 500, "USD"},
        {p2.id, "pending", "clearing", 500, "USD"},
        {p3.id, "clearing", "pending", 700, "KRW"},
        {p3.id, "pending", "available", 700, "KRW"}, /* full capture: nothing released */
    };
    expect_ledger(&pc, "lc-m1", want, 10);
    lifecycle_paging(&pc);
    pc_close(&pc);
    stop_and_check(3);
}

/* ---- 2. idempotency ------------------------------------------------------------- */

/* POSTs and expects a replay of `first`: same status, same bytes, the header. */
static void expect_replay(struct pc_conn *pc, const char *path, const char *key, const char *body,
                          const struct rp_response *first)
{
    struct rp_response r;
    call(pc, "POST", path, key, body, &r);
    if (r.status != first->status || strcmp(r.body, first->body) != 0)
        fail_msg("replay of key %s: %d %s, expected %d %s", key, r.status, r.body, first->status,
                 first->body);
    const char *h = rp_header(&r, "Idempotent-Replayed");
    if (!h || strcmp(h, "true") != 0)
        fail_msg("replay of key %s lacks Idempotent-Replayed: true", key);
    rp_response_free(&r);
}

static void expect_reused(struct pc_conn *pc, const char *path, const char *key, const char *body)
{
    struct rp_response r;
    call(pc, "POST", path, key, body, &r);
    char what[160];
    snprintf(what, sizeof(what), "key %s reused on %s", key, path);
    expect_error(&r, 409, "idempotency_key_reused", NULL, what);
    rp_response_free(&r);
}

#define IDEM_A "{\"merchant_id\":\"idem-a\",\"amount\":4200,\"currency\":\"EUR\"}"

static void test_idempotency(void **state)
{
    (void)state;
    rp_must_start(&srv, two_cores);
    struct pc_conn pc;
    pc_init(&pc, srv.port);
    struct rp_response first, cap_first, err_first;
    struct pay p, q;
    char cap[128];

    call(&pc, "POST", AUTH_PATH, "idem-key-1", IDEM_A, &first);
    expect_status(&first, 201, "authorize");
    assert_null(rp_header(&first, "Idempotent-Replayed"));
    parse_payment(first.body, &p);
    char *got = NULL;
    get_payment(&pc, p.id, &q, &got);
    assert_string_equal(got, first.body); /* GET shows the payment as answered */
    free(got);
    for (int i = 0; i < 3; i++)
        expect_replay(&pc, AUTH_PATH, "idem-key-1", IDEM_A, &first);
    expect_balance(&pc, "idem-a", "EUR", 4200, 0); /* once, not four times */

    /* Same key, another request: another amount, the same JSON spaced differently
     * (the fingerprint is byte for byte), another path of the same merchant. */
    expect_reused(&pc, AUTH_PATH, "idem-key-1",
                  "{\"merchant_id\":\"idem-a\",\"amount\":4201,\"currency\":\"EUR\"}");
    expect_reused(&pc, AUTH_PATH, "idem-key-1",
                  "{\"merchant_id\": \"idem-a\",\"amount\":4200,\"currency\":\"EUR\"}");
    op_path(cap, sizeof(cap), p.id, "capture");
    expect_reused(&pc, cap, "idem-key-1", NULL);
    expect_reused(&pc, AUTH_PATH, "idem-key-1", /* a refusal is not stored */
                  "{\"merchant_id\":\"idem-a\",\"amount\":4201,\"currency\":\"EUR\"}");
    expect_replay(&pc, AUTH_PATH, "idem-key-1", IDEM_A, &first);

    /* Scoped per merchant: the same key for idem-b is a new payment. */
    post_payment(&pc, AUTH_PATH, "idem-key-1",
                 "{\"merchant_id\":\"idem-b\",\"amount\":4200,\"currency\":\"EUR\"}", 201, &q);
    assert_string_not_equal(q.id, p.id);
    assert_string_equal(q.merchant, "idem-b");
    expect_balance(&pc, "idem-b", "EUR", 4200, 0);
    expect_balance(&pc, "idem-a", "EUR", 4200, 0);

    /* A refusal (409 amount_exceeds_remaining) is stored and replayed as it was, even
     * after the payment moved on; so is a success after later changes. */
    call(&pc, "POST", cap, "idem-cap-big", "{\"amount\":4201}", &err_first);
    expect_error(&err_first, 409, "amount_exceeds_remaining", NULL, "over-capture");
    call(&pc, "POST", cap, "idem-cap-ok", "{\"amount\":4000}", &cap_first);
    expect_status(&cap_first, 200, "capture");
    expect_replay(&pc, cap, "idem-cap-big", "{\"amount\":4201}", &err_first);
    char rf[128];
    op_path(rf, sizeof(rf), p.id, "refund");
    struct rp_response rf_first;
    call(&pc, "POST", rf, "idem-rf-1", "{\"amount\":1000}", &rf_first);
    expect_status(&rf_first, 201, "refund");
    expect_replay(&pc, cap, "idem-cap-ok", "{\"amount\":4000}", &cap_first);
    expect_replay(&pc, rf, "idem-rf-1", "{\"amount\":1000}", &rf_first);
    expect_replay(&pc, AUTH_PATH, "idem-key-1", IDEM_A, &first); /* still the original */
    struct pay g;
    get_payment(&pc, p.id, &g, NULL);
    assert_string_equal(g.status, "partially_refunded");
    assert_int_equal(g.captured, 4000);
    assert_int_equal(g.refunded, 1000);
    expect_balance(&pc, "idem-a", "EUR", 0, 3000);

    /* Keys at the limits: 1 byte and 255 printable bytes are fine. */
    char long_key[256];
    memset(long_key, '~', 255);
    long_key[255] = '\0';
    long_key[0] = ' ' + 1;
    struct pay k1, k2;
    post_payment(&pc, AUTH_PATH, "x",
                 "{\"merchant_id\":\"idem-a\",\"amount\":1,\"currency\":\"EUR\"}", 201, &k1);
    post_payment(&pc, AUTH_PATH, long_key,
                 "{\"merchant_id\":\"idem-a\",\"amount\":2,\"currency\":\"EUR\"}", 201, &k2);
    expect_balance(&pc, "idem-a", "EUR", 3, 3000);

    rp_response_free(&first);
    rp_response_free(&cap_first);
    rp_response_free(&err_first);
    rp_response_free(&rf_first);
    pc_close(&pc);
    stop_and_check(4);
}

/* ---- 3. malformed and hostile requests ------------------------------------------ */

/* Request shapes: by default a POST carries a unique Idempotency-Key, Content-Type
 * application/json and Content-Length. "{P}" in a path is the valid payment's id. */
enum {
    B_NO_KEY = 1,     /* no Idempotency-Key */
    B_EMPTY_KEY = 2,  /* "Idempotency-Key:" with an empty value */
    B_LONG_KEY = 4,   /* a 256-byte key */
    B_HIGH_KEY = 8,   /* a key holding the byte 0x80 */
    B_NO_CT = 16,     /* no Content-Type */
    B_CT_TEXT = 32,   /* Content-Type: text/plain */
    B_NO_LEN = 64,    /* neither Content-Length nor chunked */
    B_BIG_LEN = 128,  /* Content-Length: 70000, no body sent */
    B_TWO_KEYS = 256, /* the same Idempotency-Key header twice */
};

struct bad_case {
    const char *what;
    const char *method, *path, *body;
    unsigned flags;
    int status;
    const char *code;
    const char *param; /* NULL: not checked; "": must be null */
    const char *allow; /* 405: the Allow header */
};

#define BM  "\"merchant_id\":\"mal-m\""
#define BA  "\"amount\":100"
#define BC  "\"currency\":\"KRW\""
#define M65 "m1234567890123456789012345678901234567890123456789012345678901234"
#define R129                                                                                       \
    "r123456789012345678901234567890123456789012345678901234567890123456789012345678901"           \
    "23456789012345678901234567890123456789012345678"

#define AUTH_BAD(what, body, param)                                                                \
    {                                                                                              \
        what, "POST", AUTH_PATH, body, 0, 400, "invalid_param", param, NULL                        \
    }
#define JSON_BAD(what, body)                                                                       \
    {                                                                                              \
        what, "POST", AUTH_PATH, body, 0, 400, "invalid_json", "", NULL                            \
    }
#define LEDGER_BAD(query, param)                                                                   \
    {                                                                                              \
        "ledger " query, "GET", "/v1/merchants/mal-m/ledger" query, NULL, 0, 400, "invalid_param", \
            param, NULL                                                                            \
    }
#define NOT_FOUND(what, method, path)                                                              \
    {                                                                                              \
        what, method, path, NULL, 0, 404, "not_found", "", NULL                                    \
    }

static const struct bad_case bad_cases[] = {
    /* Idempotency-Key */
    {"no key", "POST", AUTH_PATH, "{" BM "," BA "," BC "}", B_NO_KEY, 400,
     "missing_idempotency_key", "", NULL},
    {"empty key", "POST", AUTH_PATH, "{" BM "," BA "," BC "}", B_EMPTY_KEY, 400, "invalid_param",
     "Idempotency-Key", NULL},
    {"256-byte key", "POST", AUTH_PATH, "{" BM "," BA "," BC "}", B_LONG_KEY, 400, "invalid_param",
     "Idempotency-Key", NULL},
    {"key with byte 0x80", "POST", AUTH_PATH, "{" BM "," BA "," BC "}", B_HIGH_KEY, 400,
     "invalid_param", "Idempotency-Key", NULL},
    {"two keys", "POST", AUTH_PATH, "{" BM "," BA "," BC "}", B_TWO_KEYS, 400, "invalid_param",
     "Idempotency-Key", NULL},
    {"query on authorize", "POST", AUTH_PATH "?merchant_id=mal-m", "{" BM "," BA "," BC "}", 0, 400,
     "invalid_param", "query", NULL},
    {"query on capture", "POST", "/v1/payments/{P}/capture?amount=5", "{}", 0, 400, "invalid_param",
     "query", NULL},
    /* JSON syntax */
    JSON_BAD("not JSON", "hello"),
    JSON_BAD("truncated", "{" BM "," BA),
    JSON_BAD("trailing comma", "{" BM "," BA "," BC ",}"),
    JSON_BAD("single quotes", "{'merchant_id':'mal-m','amount':100,'currency':'KRW'}"),
    JSON_BAD("two objects", "{" BM "," BA "," BC "}{}"),
    JSON_BAD("top-level array", "[{" BM "," BA "," BC "}]"),
    JSON_BAD("top-level string", "\"mal-m\""),
    JSON_BAD("raw tab in a string", "{" BM "," BA "," BC ",\"reference\":\"a\tb\"}"),
    JSON_BAD("unquoted key", "{merchant_id:\"mal-m\"," BA "," BC "}"),
    JSON_BAD("missing colon", "{\"merchant_id\" \"mal-m\"," BA "," BC "}"),
    /* amount */
    AUTH_BAD("float amount", "{" BM ",\"amount\":10.5," BC "}", "amount"),
    AUTH_BAD("exponent amount", "{" BM ",\"amount\":1e3," BC "}", "amount"),
    AUTH_BAD("string amount", "{" BM ",\"amount\":\"100\"," BC "}", "amount"),
    AUTH_BAD("negative amount", "{" BM ",\"amount\":-5," BC "}", "amount"),
    AUTH_BAD("zero amount", "{" BM ",\"amount\":0," BC "}", "amount"),
    AUTH_BAD("amount 10^15+1", "{" BM ",\"amount\":1000000000000001," BC "}", "amount"),
    AUTH_BAD("amount 10^23", "{" BM ",\"amount\":99999999999999999999999," BC "}", "amount"),
    AUTH_BAD("null amount", "{" BM ",\"amount\":null," BC "}", "amount"),
    AUTH_BAD("boolean amount", "{" BM ",\"amount\":true," BC "}", "amount"),
    AUTH_BAD("object amount", "{" BM ",\"amount\":{\"v\":1}," BC "}", "amount"),
    AUTH_BAD("array amount", "{" BM ",\"amount\":[100]," BC "}", "amount"),
    AUTH_BAD("missing amount", "{" BM "," BC "}", "amount"),
    /* members */
    AUTH_BAD("missing merchant_id", "{" BA "," BC "}", "merchant_id"),
    AUTH_BAD("missing currency", "{" BM "," BA "}", "currency"),
    AUTH_BAD("empty object", "{}", "merchant_id"),
    AUTH_BAD("unknown field", "{" BM "," BA "," BC ",\"foo\":1}", "foo"),
    AUTH_BAD("duplicate amount", "{" BM "," BA "," BC ",\"amount\":200}", "amount"),
    AUTH_BAD("escaped duplicate", "{" BM "," BA "," BC ",\"\\u0061mount\":100}", "amount"),
    AUTH_BAD("lower-case currency", "{" BM "," BA ",\"currency\":\"krw\"}", "currency"),
    AUTH_BAD("4-letter currency", "{" BM "," BA ",\"currency\":\"KRWX\"}", "currency"),
    AUTH_BAD("2-letter currency", "{" BM "," BA ",\"currency\":\"KR\"}", "currency"),
    AUTH_BAD("numeric currency", "{" BM "," BA ",\"currency\":410}", "currency"),
    AUTH_BAD("65-byte merchant", "{\"merchant_id\":\"" M65 "\"," BA "," BC "}", "merchant_id"),
    AUTH_BAD("empty merchant", "{\"merchant_id\":\"\"," BA "," BC "}", "merchant_id"),
    AUTH_BAD("merchant with space", "{\"merchant_id\":\"mal m\"," BA "," BC "}", "merchant_id"),
    AUTH_BAD("merchant with slash", "{\"merchant_id\":\"mal/m\"," BA "," BC "}", "merchant_id"),
    AUTH_BAD("merchant with dot", "{\"merchant_id\":\"mal.m\"," BA "," BC "}", "merchant_id"),
    AUTH_BAD("numeric merchant", "{\"merchant_id\":123," BA "," BC "}", "merchant_id"),
    AUTH_BAD("array merchant", "{\"merchant_id\":[\"mal-m\"]," BA "," BC "}", "merchant_id"),
    AUTH_BAD("129-char reference", "{" BM "," BA "," BC ",\"reference\":\"" R129 "\"}",
             "reference"),
    AUTH_BAD("control char in reference", "{" BM "," BA "," BC ",\"reference\":\"a\\u0001b\"}",
             "reference"),
    AUTH_BAD("DEL in reference",
             "{" BM "," BA "," BC ",\"reference\":\"a\x7f"
             "b\"}",
             "reference"),
    AUTH_BAD("numeric reference", "{" BM "," BA "," BC ",\"reference\":5}", "reference"),
    AUTH_BAD("object reference", "{" BM "," BA "," BC ",\"reference\":{}}", "reference"),
    AUTH_BAD("invalid UTF-8 reference", "{" BM "," BA "," BC ",\"reference\":\"a\xff\"}",
             "reference"),
    AUTH_BAD("lone surrogate reference", "{" BM "," BA "," BC ",\"reference\":\"\\ud800\"}",
             "reference"),
    /* framing the codec cannot see */
    {"text/plain body", "POST", AUTH_PATH, "{" BM "," BA "," BC "}", B_CT_TEXT, 415,
     "unsupported_media_type", "", NULL},
    {"no Content-Type", "POST", AUTH_PATH, "{" BM "," BA "," BC "}", B_NO_CT, 415,
     "unsupported_media_type", "", NULL},
    {"no length", "POST", AUTH_PATH, NULL, B_NO_LEN, 411, "length_required", "", NULL},
    {"declared 70000-byte body", "POST", AUTH_PATH, NULL, B_BIG_LEN, 413, "body_too_large", "",
     NULL},
    /* methods */
    {"GET authorize", "GET", AUTH_PATH, NULL, 0, 405, "method_not_allowed", "", "POST"},
    {"PUT payment", "PUT", "/v1/payments/{P}", "{}", 0, 405, "method_not_allowed", "", "GET"},
    {"POST payment", "POST", "/v1/payments/{P}", "{}", 0, 405, "method_not_allowed", "", "GET"},
    {"GET capture", "GET", "/v1/payments/{P}/capture", NULL, 0, 405, "method_not_allowed", "",
     "POST"},
    {"DELETE balances", "DELETE", "/v1/merchants/mal-m/balances", NULL, 0, 405,
     "method_not_allowed", "", "GET"},
    {"POST ledger", "POST", "/v1/merchants/mal-m/ledger", "{}", 0, 405, "method_not_allowed", "",
     "GET"},
    /* paths and ids */
    NOT_FOUND("payment trailing slash", "GET", "/v1/payments/{P}/"),
    NOT_FOUND("authorize trailing slash", "POST", "/v1/payments/authorize/"),
    NOT_FOUND("balances trailing slash", "GET", "/v1/merchants/mal-m/balances/"),
    NOT_FOUND("empty segment", "GET", "/v1//payments/{P}"),
    NOT_FOUND("v2", "GET", "/v2/payments/{P}"),
    NOT_FOUND("unknown action", "POST", "/v1/payments/{P}/cancel"),
    NOT_FOUND("short id", "GET", "/v1/payments/pay_zz"),
    NOT_FOUND("sequence 0", "GET", "/v1/payments/pay_000000000000000000"),
    NOT_FOUND("shard 5 of 2", "GET", "/v1/payments/pay_050000000000000001"),
    NOT_FOUND("upper-case id", "GET", "/v1/payments/PAY_000000000000000001"),
    NOT_FOUND("upper-case hex", "GET", "/v1/payments/pay_00000000000000000A"),
    NOT_FOUND("refund id as payment", "GET", "/v1/payments/rfd_000000000000000001"),
    NOT_FOUND("unknown payment shard 0", "GET", "/v1/payments/pay_00000000000000ffff"),
    NOT_FOUND("unknown payment shard 1", "GET", "/v1/payments/pay_01000000000000ffff"),
    NOT_FOUND("capture unknown payment", "POST", "/v1/payments/pay_01000000000000ffff/capture"),
    NOT_FOUND("void unknown payment", "POST", "/v1/payments/pay_00000000000000fffe/void"),
    NOT_FOUND("refund malformed id", "POST", "/v1/payments/pay_xyz/refund"),
    NOT_FOUND("outside /v1", "GET", "/payments/{P}"),
    /* capture, void, refund bodies */
    {"capture amount 0", "POST", "/v1/payments/{P}/capture", "{\"amount\":0}", 0, 400,
     "invalid_param", "amount", NULL},
    {"capture with currency", "POST", "/v1/payments/{P}/capture",
     "{\"amount\":5,\"currency\":\"KRW\"}", 0, 400, "invalid_param", "currency", NULL},
    {"void with amount", "POST", "/v1/payments/{P}/void", "{\"amount\":5}", 0, 400, "invalid_param",
     "amount", NULL},
    {"refund bad JSON", "POST", "/v1/payments/{P}/refund", "{\"amount\":", 0, 400, "invalid_json",
     "", NULL},
    {"capture over the amount", "POST", "/v1/payments/{P}/capture", "{\"amount\":1001}", 0, 409,
     "amount_exceeds_remaining", NULL, NULL},
    {"refund an authorized payment", "POST", "/v1/payments/{P}/refund", NULL, 0, 409,
     "invalid_state", NULL, NULL},
    /* ledger query and merchant paths */
    LEDGER_BAD("?limit=0", "limit"),
    LEDGER_BAD("?limit=1001", "limit"),
    LEDGER_BAD("?limit=abc", "limit"),
    LEDGER_BAD("?limit=5&limit=6", "limit"),
    LEDGER_BAD("?after=-1", "after"),
    LEDGER_BAD("?after=01", "after"),
    LEDGER_BAD("?after=9223372036854775808", "after"),
    LEDGER_BAD("?foo=1", "foo"),
    {"merchant path with dot", "GET", "/v1/merchants/mal.m/balances", NULL, 0, 400, "invalid_param",
     "merchant_id", NULL},
    {"65-byte merchant path", "GET", "/v1/merchants/" M65 "/ledger", NULL, 0, 400, "invalid_param",
     "merchant_id", NULL},
};

/* Replaces "{P}" in path by id. */
static void fill_path(char *out, size_t cap, const char *path, const char *id)
{
    const char *p = strstr(path, "{P}");
    if (!p)
        snprintf(out, cap, "%s", path);
    else
        snprintf(out, cap, "%.*s%s%s", (int)(p - path), path, id, p + 3);
}

/* Builds the raw request of case c (number i) into out; returns its length. */
static size_t build_bad(const struct bad_case *c, int i, const char *id, char *out, size_t cap)
{
    char path[256], key[320];
    fill_path(path, sizeof(path), c->path, id);
    size_t blen = c->body ? strlen(c->body) : 0;
    int n = snprintf(out, cap, "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", c->method, path);
    bool post = strcmp(c->method, "GET") != 0;
    if (c->flags & B_LONG_KEY) {
        memset(key, 'k', 256);
        key[256] = '\0';
    } else if (c->flags & B_HIGH_KEY) {
        snprintf(key, sizeof(key), "bad-\x80-%d", i);
    } else {
        snprintf(key, sizeof(key), "bad-%d", i);
    }
    if (c->flags & B_EMPTY_KEY)
        n += snprintf(out + n, cap - (size_t)n, "Idempotency-Key:\r\n");
    else if (post && !(c->flags & B_NO_KEY))
        n += snprintf(out + n, cap - (size_t)n, "Idempotency-Key: %s\r\n", key);
    if (c->flags & B_TWO_KEYS)
        n += snprintf(out + n, cap - (size_t)n, "Idempotency-Key: %s\r\n", key);
    if (c->flags & B_CT_TEXT)
        n += snprintf(out + n, cap - (size_t)n, "Content-Type: text/plain\r\n");
    else if (post && !(c->flags & B_NO_CT))
        n += snprintf(out + n, cap - (size_t)n, "Content-Type: application/json\r\n");
    if (c->flags & B_BIG_LEN)
        n += snprintf(out + n, cap - (size_t)n, "Content-Length: 70000\r\n");
    else if (post && !(c->flags & B_NO_LEN))
        n += snprintf(out + n, cap - (size_t)n, "Content-Length: %zu\r\n", blen);
    n += snprintf(out + n, cap - (size_t)n, "\r\n%s", c->body ? c->body : "");
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static void run_bad_case(const struct bad_case *c, int i, const char *id)
{
    static char raw[8192];
    size_t len = build_bad(c, i, id, raw, sizeof(raw));
    struct rp_response r;
    int err = pc_raw(srv.port, raw, len, &r);
    if (err)
        fail_msg("case %d (%s): transport error %d", i, c->what, err);
    if (r.status != c->status)
        fail_msg("case %d (%s): status %d, expected %d: %s", i, c->what, r.status, c->status,
                 r.body);
    rp_assert_error_body(&r, c->code);
    char code[64], param[128];
    if (!pc_error_parts(r.body, code, sizeof(code), param, sizeof(param)))
        fail_msg("case %d (%s): unreadable error body %s", i, c->what, r.body);
    if (c->param && strcmp(param, c->param) != 0)
        fail_msg("case %d (%s): param \"%s\", expected \"%s\": %s", i, c->what, param, c->param,
                 r.body);
    if (c->allow) {
        const char *allow = rp_header(&r, "Allow");
        if (!allow || strcmp(allow, c->allow) != 0)
            fail_msg("case %d (%s): Allow %s, expected %s", i, c->what, allow ? allow : "-",
                     c->allow);
    }
    rp_response_free(&r);
}

static void test_malformed(void **state)
{
    (void)state;
    rp_must_start(&srv, two_cores);
    struct pc_conn pc;
    pc_init(&pc, srv.port);
    struct pay p;
    post_payment(&pc, AUTH_PATH, "mal-setup",
                 "{\"merchant_id\":\"mal-m\",\"amount\":1000,\"currency\":\"KRW\"}", 201, &p);
    char *before = NULL, *after = NULL;
    get_payment(&pc, p.id, &p, &before);
    int n = (int)(sizeof(bad_cases) / sizeof(bad_cases[0]));
    assert_true(n >= 40);
    for (int i = 0; i < n; i++)
        run_bad_case(&bad_cases[i], i, p.id);

    /* Nothing changed: the payment, the balances, the ledger. */
    get_payment(&pc, p.id, &p, &after);
    assert_string_equal(after, before);
    free(before);
    free(after);
    expect_balance(&pc, "mal-m", "KRW", 1000, 0);
    static struct pc_entry e[8];
    int cnt = 0;
    assert_int_equal(pc_ledger_all(&pc, "mal-m", 100, e, 8, &cnt), 0);
    assert_int_equal(cnt, 1);
    struct rp_response r;
    call(&pc, "GET", "/healthz", NULL, NULL, &r);
    expect_status(&r, 200, "healthz after the bad requests");
    rp_response_free(&r);
    pc_close(&pc);
    stop_and_check(1);
}

/* ---- 4. concurrency ------------------------------------------------------------- */

#define LOAD_THREADS   32
#define LOAD_ITERS     12
#define LOAD_MERCHANTS 8  /* besides "hot" */
#define LOAD_RETRIES   50 /* 503 overloaded answers retried with the same key */

static const char *const load_merchants[LOAD_MERCHANTS] = {
    "cm-0", "cm-1", "cm-2", "cm-3", "cm-4", "cm-5", "cm-6", "cm-7",
};

/* What one worker's answers said, per merchant (index LOAD_MERCHANTS is "hot"). */
struct load_worker {
    pthread_t tid;
    int port, idx;
    long long pending[LOAD_MERCHANTS + 1], available[LOAD_MERCHANTS + 1];
    int entries[LOAD_MERCHANTS + 1]; /* ledger postings the answers imply */
    int payments, retries;
    char error[512]; /* first failure, "" when none */
};

/* One POST with retries on 503; 0 and *r filled with the final answer, or -1 with
 * w->error set. */
static int load_post(struct load_worker *w, struct pc_conn *pc, const char *path, const char *key,
                     const char *body, int want, struct rp_response *r)
{
    for (int attempt = 0; attempt <= LOAD_RETRIES; attempt++) {
        int err = pc_call(pc, "POST", path, key, body, r);
        if (err) {
            snprintf(w->error, sizeof(w->error), "%s key %s: transport error %d", path, key, err);
            return -1;
        }
        if (r->status == want)
            return 0;
        bool busy = r->status == 503;
        if (!busy) {
            snprintf(w->error, sizeof(w->error), "%s key %s: status %d, expected %d: %s", path, key,
                     r->status, want, r->body);
            rp_response_free(r);
            return -1;
        }
        rp_response_free(r);
        w->retries++;
        rp_sleep_ms(20);
    }
    snprintf(w->error, sizeof(w->error), "%s key %s: still 503 after %d retries", path, key,
             LOAD_RETRIES);
    return -1;
}

/* Reads a number member of an answer; -1 with w->error when missing. */
static long long answer_int(struct load_worker *w, const struct rp_response *r, const char *key)
{
    long long v;
    if (pc_body_int(r->body, key, &v))
        return v;
    snprintf(w->error, sizeof(w->error), "answer lacks %s: %s", key, r->body);
    return -1;
}

/* One payment: authorize, then by kind leave it, void it, capture all and refund a
 * third, or capture half and refund the rest. Accounts what the answers said. */
static int load_one(struct load_worker *w, struct pc_conn *pc, int i)
{
    int mi = i % 2 == 0 ? LOAD_MERCHANTS : (w->idx + i) % LOAD_MERCHANTS;
    const char *m = mi == LOAD_MERCHANTS ? "hot" : load_merchants[mi];
    long long amount = 100 + (w->idx * 31 + i * 17) % 900;
    int kind = (w->idx + i) % 4;
    char key[64], body[160], path[128], id[32];
    struct rp_response r;
    snprintf(key, sizeof(key), "ld-%d-%d-a", w->idx, i);
    snprintf(body, sizeof(body), "{\"merchant_id\":\"%s\",\"amount\":%lld,\"currency\":\"KRW\"}", m,
             amount);
    if (load_post(w, pc, AUTH_PATH, key, body, 201, &r))
        return -1;
    bool ok = pc_body_str(r.body, "id", id, sizeof(id)) && answer_int(w, &r, "amount") == amount;
    rp_response_free(&r);
    if (!ok)
        return -1;
    w->payments++;
    w->entries[mi]++;
    if (kind == 0) {
        w->pending[mi] += amount;
        return 0;
    }
    if (kind == 1) {
        op_path(path, sizeof(path), id, "void");
        snprintf(key, sizeof(key), "ld-%d-%d-v", w->idx, i);
        if (load_post(w, pc, path, key, NULL, 200, &r))
            return -1;
        rp_response_free(&r);
        w->entries[mi]++;
        return 0;
    }
    op_path(path, sizeof(path), id, "capture");
    snprintf(key, sizeof(key), "ld-%d-%d-c", w->idx, i);
    snprintf(body, sizeof(body), "{\"amount\":%lld}", kind == 2 ? amount : amount / 2);
    if (load_post(w, pc, path, key, body, 200, &r))
        return -1;
    long long captured = answer_int(w, &r, "captured_amount");
    rp_response_free(&r);
    if (captured < 0)
        return -1;
    w->available[mi] += captured;
    w->entries[mi] += captured == amount ? 1 : 2;
    op_path(path, sizeof(path), id, "refund");
    snprintf(key, sizeof(key), "ld-%d-%d-r", w->idx, i);
    snprintf(body, sizeof(body), "{\"amount\":%lld}", captured / 3 + 1);
    if (load_post(w, pc, path, key, kind == 2 ? body : NULL, 201, &r))
        return -1;
    long long refunded = answer_int(w, &r, "amount");
    rp_response_free(&r);
    if (refunded < 0)
        return -1;
    w->available[mi] -= refunded;
    w->entries[mi]++;
    return 0;
}

static void *load_main(void *arg)
{
    struct load_worker *w = arg;
    struct pc_conn pc;
    pc_init(&pc, w->port);
    int64_t deadline = rp_now_ms() + 60000;
    for (int i = 0; i < LOAD_ITERS && rp_now_ms() < deadline; i++)
        if (load_one(w, &pc, i) != 0)
            break;
    if (!w->error[0] && rp_now_ms() >= deadline)
        snprintf(w->error, sizeof(w->error), "worker %d: out of time", w->idx);
    pc_close(&pc);
    return NULL;
}

static void test_concurrent_load(void **state)
{
    (void)state;
    /* The merchants cover both shards, so both shards and the cross-core hand-off
     * take the load. */
    bool shard_used[NSHARDS] = {false};
    for (int i = 0; i < LOAD_MERCHANTS; i++)
        shard_used[pc_shard_of(load_merchants[i], NSHARDS)] = true;
    assert_true(shard_used[0] && shard_used[1]);
    rp_raise_nofile(1024);
    rp_must_start(&srv, two_cores);
    static struct load_worker w[LOAD_THREADS];
    memset(w, 0, sizeof(w));
    for (int t = 0; t < LOAD_THREADS; t++) {
        w[t].port = srv.port;
        w[t].idx = t;
        assert_int_equal(pthread_create(&w[t].tid, NULL, load_main, &w[t]), 0);
    }
    for (int t = 0; t < LOAD_THREADS; t++)
        pthread_join(w[t].tid, NULL);
    long long pending[LOAD_MERCHANTS + 1] = {0}, available[LOAD_MERCHANTS + 1] = {0};
    int entries[LOAD_MERCHANTS + 1] = {0}, payments = 0, retries = 0;
    for (int t = 0; t < LOAD_THREADS; t++) {
        if (w[t].error[0])
            fail_msg("worker %d: %s", t, w[t].error);
        for (int m = 0; m <= LOAD_MERCHANTS; m++) {
            pending[m] += w[t].pending[m];
            available[m] += w[t].available[m];
            entries[m] += w[t].entries[m];
        }
        payments += w[t].payments;
        retries += w[t].retries;
    }
    print_message("load: %d payments, %d retried 503 answers\n", payments, retries);
    assert_int_equal(payments, LOAD_THREADS * LOAD_ITERS);
    struct pc_conn pc;
    pc_init(&pc, srv.port);
    static struct pc_entry e[2048];
    for (int m = 0; m <= LOAD_MERCHANTS; m++) {
        const char *name = m == LOAD_MERCHANTS ? "hot" : load_merchants[m];
        expect_balance(&pc, name, "KRW", pending[m], available[m]);
        int cnt = 0;
        assert_int_equal(pc_ledger_all(&pc, name, 1000, e, 2048, &cnt), 0);
        if (cnt != entries[m])
            fail_msg("ledger of %s: %d entries, the answers imply %d", name, cnt, entries[m]);
    }
    pc_close(&pc);
    stop_and_check(payments);
}

/* ---- 5. one Idempotency-Key on many connections at once ------------------------- */

#define SAME_CONNS  8
#define SAME_ROUNDS 8

/* Rounds 0..SAME_ROUNDS-1: everybody authorizes with key same-<round>. Round
 * SAME_ROUNDS: everybody captures payment cap_id with one key. Round SAME_ROUNDS+1:
 * everybody captures payment race_id, each with its own key. */
struct same_shared {
    int port;
    pthread_barrier_t barrier;
    char cap_id[32], race_id[32];
};

struct same_worker {
    pthread_t tid;
    struct same_shared *sh;
    int idx;
    int status[SAME_ROUNDS + 2];
    bool replayed[SAME_ROUNDS + 2];
    char body[SAME_ROUNDS + 2][512];
    int err;
};

static void *same_main(void *arg)
{
    struct same_worker *w = arg;
    struct pc_conn pc;
    pc_init(&pc, w->sh->port);
    struct rp_response r;
    /* Connect first, so the barrier releases requests rather than handshakes. */
    if (pc_call(&pc, "GET", "/healthz", NULL, NULL, &r) == 0)
        rp_response_free(&r);
    for (int round = 0; round < SAME_ROUNDS + 2; round++) {
        char key[64], path[128];
        const char *body = NULL;
        if (round < SAME_ROUNDS) {
            snprintf(key, sizeof(key), "same-%d", round);
            snprintf(path, sizeof(path), "%s", AUTH_PATH);
            body = "{\"merchant_id\":\"same-m\",\"amount\":250,\"currency\":\"JPY\"}";
        } else if (round == SAME_ROUNDS) {
            snprintf(key, sizeof(key), "same-capture");
            op_path(path, sizeof(path), w->sh->cap_id, "capture");
        } else {
            snprintf(key, sizeof(key), "race-capture-%d", w->idx);
            op_path(path, sizeof(path), w->sh->race_id, "capture");
        }
        pthread_barrier_wait(&w->sh->barrier);
        int err = pc_call(&pc, "POST", path, key, body, &r);
        if (err) {
            w->err = err;
            w->status[round] = -1;
            continue;
        }
        w->status[round] = r.status;
        w->replayed[round] = rp_header(&r, "Idempotent-Replayed") != NULL;
        snprintf(w->body[round], sizeof(w->body[round]), "%s", r.body);
        rp_response_free(&r);
    }
    pc_close(&pc);
    return NULL;
}

/* All answers of `round` are `status` with one body; exactly one is not a replay. */
static void expect_one_operation(struct same_worker *w, int round, int status)
{
    int fresh = 0;
    for (int i = 0; i < SAME_CONNS; i++) {
        if (w[i].status[round] != status)
            fail_msg("round %d conn %d: status %d: %s", round, i, w[i].status[round],
                     w[i].body[round]);
        if (strcmp(w[i].body[round], w[0].body[round]) != 0)
            fail_msg("round %d: answers differ:\n%s\n%s", round, w[0].body[round],
                     w[i].body[round]);
        fresh += !w[i].replayed[round];
    }
    if (fresh != 1)
        fail_msg("round %d: %d answers were not replays, expected exactly 1", round, fresh);
}

static void test_concurrent_same_key(void **state)
{
    (void)state;
    rp_must_start(&srv, two_cores);
    struct pc_conn pc;
    pc_init(&pc, srv.port);
    static struct same_shared sh;
    static struct same_worker w[SAME_CONNS];
    memset(w, 0, sizeof(w));
    sh.port = srv.port;
    struct pay cap, race;
    post_payment(&pc, AUTH_PATH, "same-setup-1",
                 "{\"merchant_id\":\"same-m\",\"amount\":1000,\"currency\":\"JPY\"}", 201, &cap);
    post_payment(&pc, AUTH_PATH, "same-setup-2",
                 "{\"merchant_id\":\"same-m\",\"amount\":2000,\"currency\":\"JPY\"}", 201, &race);
    strcpy(sh.cap_id, cap.id);
    strcpy(sh.race_id, race.id);
    assert_int_equal(pthread_barrier_init(&sh.barrier, NULL, SAME_CONNS), 0);
    for (int i = 0; i < SAME_CONNS; i++) {
        w[i].sh = &sh;
        w[i].idx = i;
        assert_int_equal(pthread_create(&w[i].tid, NULL, same_main, &w[i]), 0);
    }
    for (int i = 0; i < SAME_CONNS; i++)
        pthread_join(w[i].tid, NULL);
    pthread_barrier_destroy(&sh.barrier);
    for (int i = 0; i < SAME_CONNS; i++)
        if (w[i].err)
            fail_msg("conn %d: transport error %d", i, w[i].err);

    char ids[SAME_ROUNDS][32];
    for (int round = 0; round < SAME_ROUNDS; round++) {
        expect_one_operation(w, round, 201);
        struct pay p;
        parse_payment(w[0].body[round], &p);
        strcpy(ids[round], p.id);
        for (int k = 0; k < round; k++)
            assert_string_not_equal(ids[k], ids[round]);
    }
    expect_one_operation(w, SAME_ROUNDS, 200);
    /* Different keys on one payment: one capture wins, the rest see its state. */
    int won = 0;
    for (int i = 0; i < SAME_CONNS; i++) {
        int st = w[i].status[SAME_ROUNDS + 1];
        if (st == 200)
            won++;
        else if (st != 409 || !strstr(w[i].body[SAME_ROUNDS + 1], "\"invalid_state\""))
            fail_msg("race conn %d: %d %s", i, st, w[i].body[SAME_ROUNDS + 1]);
    }
    assert_int_equal(won, 1);

    /* The ledger shows one authorization per key and one capture per payment. */
    static struct pc_entry e[64];
    int cnt = 0;
    assert_int_equal(pc_ledger_all(&pc, "same-m", 5, e, 64, &cnt), 0);
    assert_int_equal(cnt, 2 + SAME_ROUNDS + 2);
    for (int round = 0; round < SAME_ROUNDS; round++) {
        int seen = 0;
        for (int i = 0; i < cnt; i++)
            seen += strcmp(e[i].payment_id, ids[round]) == 0;
        if (seen != 1)
            fail_msg("payment %s has %d ledger entries, expected 1", ids[round], seen);
    }
    expect_balance(&pc, "same-m", "JPY", 250LL * SAME_ROUNDS, 3000);
    pc_close(&pc);
    stop_and_check(2 + SAME_ROUNDS);
}

/* ---- 6. framing the payment path must survive ------------------------------------ */

/* A body that arrives in a later TCP segment than its head is still one request, also
 * when another connection's request is served in between (found broken: the answer
 * never came). One core, so both connections share one reactor. */
static void side_request(int port)
{
    struct rp_response r;
    struct pc_conn side;
    pc_init(&side, port);
    call(&side, "GET", "/v1/merchants/split-other/ledger?limit=5", NULL, NULL, &r);
    expect_status(&r, 200, "request between head and body");
    rp_response_free(&r);
    pc_close(&side);
}

static void test_split_body(void **state)
{
    (void)state;
    static const char *const one_core[] = {"--cores", "1", NULL};
    nshards = 1;
    rp_must_start(&srv, one_core);
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    for (int i = 0; i < 4; i++) {
        char body[128], head[512];
        snprintf(body, sizeof(body),
                 "{\"merchant_id\":\"split-m\",\"amount\":%d,\"currency\":\"KRW\"}", 10 + i);
        snprintf(head, sizeof(head),
                 "POST " AUTH_PATH " HTTP/1.1\r\nHost: 127.0.0.1\r\nIdempotency-Key: split-%d"
                 "\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                 i, strlen(body));
        assert_int_equal(rp_send_str(c.fd, head), 0);
        rp_sleep_ms(20);
        if (i % 2 == 1)
            side_request(srv.port);
        assert_int_equal(rp_send_str(c.fd, body), 0);
        struct rp_response r;
        int err = rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS);
        if (err)
            fail_msg("authorize %d with its body in a second segment: no answer (%d)", i, err);
        expect_status(&r, 201, "split authorize");
        struct pay p;
        parse_payment(r.body, &p);
        assert_int_equal(p.amount, 10 + i);
        rp_response_free(&r);
    }
    rp_conn_close(&c);
    struct pc_conn pc;
    pc_init(&pc, srv.port);
    expect_balance(&pc, "split-m", "KRW", 46, 0);
    pc_close(&pc);
    stop_and_check(4);
    nshards = NSHARDS;
}

/* Pipelined payment requests for merchants of both shards, in one write: the answers
 * come in request order (SPEC §2), each the right one (X-Request-Id, merchant). */
#define PIPE_N 12

/* The data directory remembers its shard count: starting on it with another --cores
 * fails at once with one line, and the data stays usable with the right count. */
static void test_other_core_count_refused(void **state)
{
    (void)state;
    nshards = NSHARDS;
    rp_must_start(&srv, two_cores);
    assert_int_equal(pc_server_halt(&srv), 0);
    const char *const args[] = {"serve", "--listen", "127.0.0.1:0", "--cores",
                                "1",     "--data",   srv.data_dir,  NULL};
    static struct rp_run_result res;
    assert_int_equal(rp_run(args, NULL, NULL, 10000, &res), 0);
    assert_int_equal(res.code, 2);
    assert_int_equal(rp_count_lines(res.err), 1);
    assert_non_null(strstr(res.err, "ringpay: "));
    assert_non_null(strstr(res.err, "holds 2 shards; started with --cores 1"));
    assert_int_equal(pc_server_restart(&srv, two_cores), 0);
}

/* Appends a pipelined authorization of amount KRW for merchant to wire[len..cap), with
 * key as its Idempotency-Key and X-Request-Id; returns the new length. */
static size_t append_authorize(char *wire, size_t len, size_t cap, const char *merchant, int amount,
                               const char *key)
{
    char body[128];
    snprintf(body, sizeof(body), "{\"merchant_id\":\"%s\",\"amount\":%d,\"currency\":\"KRW\"}",
             merchant, amount);
    int n = snprintf(wire + len, cap - len,
                     "POST " AUTH_PATH " HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                     "X-Request-Id: %s\r\nIdempotency-Key: %s\r\n"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n%s",
                     key, key, strlen(body), body);
    assert_true(n > 0 && (size_t)n < cap - len);
    return len + (size_t)n;
}

static void test_pipelined(void **state)
{
    (void)state;
    nshards = NSHARDS;
    rp_must_start(&srv, two_cores);
    static const char *const pm[2] = {"cm-0", "cm-1"};
    static char wire[PIPE_N * 512];
    size_t len = 0;
    assert_int_not_equal(pc_shard_of(pm[0], NSHARDS), pc_shard_of(pm[1], NSHARDS));
    for (int i = 0; i < PIPE_N; i++) {
        char key[32];
        snprintf(key, sizeof(key), "pipe-%d", i);
        len = append_authorize(wire, len, sizeof(wire), pm[i % 2], 100 + i, key);
    }
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    assert_int_equal(rp_send_all(c.fd, wire, len), 0);
    for (int i = 0; i < PIPE_N; i++) {
        struct rp_response r;
        int err = rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS);
        if (err)
            fail_msg("pipelined answer %d: error %d", i, err);
        char want[32];
        snprintf(want, sizeof(want), "pipe-%d", i);
        const char *rid = rp_header(&r, "X-Request-Id");
        if (!rid || strcmp(rid, want) != 0)
            fail_msg("answer %d carries X-Request-Id %s: out of order", i, rid ? rid : "-");
        expect_status(&r, 201, want);
        struct pay p;
        parse_payment(r.body, &p);
        assert_string_equal(p.merchant, pm[i % 2]);
        assert_int_equal(p.amount, 100 + i);
        rp_response_free(&r);
    }
    rp_conn_close(&c);
    stop_and_check(PIPE_N);
}

/* Context switches of the server's main thread so far (voluntary + involuntary). */
static long main_thread_switches(void)
{
    char path[64], line[128];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)srv.pid, (int)srv.pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    long n = 0, v;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "voluntary_ctxt_switches: %ld", &v) == 1 ||
            sscanf(line, "nonvoluntary_ctxt_switches: %ld", &v) == 1)
            n += v;
    fclose(f);
    return n;
}

/*
 * Answers are handed from the log's syncer to the shard thread alone: the main thread
 * only starts and stops threads and waits for signals (a 200 ms tick). A poll on the
 * log's eventfd armed by the main thread made io_uring complete it on the main thread
 * at every sync the syncer made (an extra wake-up and hop per group of answers). Each
 * round below pipelines IDLE_PIPE authorizations of one merchant: one batch, too large
 * to be synced inline by the shard (WAL_INLINE_BATCH_MAX), so the syncer writes it.
 */
#define IDLE_ROUNDS 100
#define IDLE_PIPE   16
static void test_main_thread_idle(void **state)
{
    (void)state;
    nshards = NSHARDS;
    rp_must_start(&srv, two_cores);
    static char wire[IDLE_PIPE * 512];
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    long before = main_thread_switches();
    int64_t t0 = rp_now_ms();
    for (int round = 0; round < IDLE_ROUNDS; round++) {
        size_t len = 0;
        for (int i = 0; i < IDLE_PIPE; i++) {
            char key[32];
            snprintf(key, sizeof(key), "idle-%d-%d", round, i);
            len = append_authorize(wire, len, sizeof(wire), "idle-m", 100 + i, key);
        }
        assert_int_equal(rp_send_all(c.fd, wire, len), 0);
        for (int i = 0; i < IDLE_PIPE; i++) {
            struct rp_response r;
            assert_int_equal(rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS), 0);
            expect_status(&r, 201, "pipelined authorization");
            rp_response_free(&r);
        }
    }
    long woke = main_thread_switches() - before;
    int64_t ms = rp_now_ms() - t0;
    rp_conn_close(&c);
    /* Its tick: about 5 a second; allow twice that and 10 more. The rounds take ~0.1 s
     * here, so a wake-up per round (IDLE_ROUNDS) is far above it, and a slow machine
     * only raises the allowance (never a failure from the tick alone). */
    long allowed = 10 + (long)(ms / 100);
    if (woke > allowed)
        fail_msg("the main thread switched %ld times during %d rounds in %lld ms (at most %ld)",
                 woke, IDLE_ROUNDS, (long long)ms, allowed);
    stop_and_check(IDLE_ROUNDS * IDLE_PIPE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_lifecycle, pc_teardown),
        cmocka_unit_test_teardown(test_idempotency, pc_teardown),
        cmocka_unit_test_teardown(test_malformed, pc_teardown),
        cmocka_unit_test_teardown(test_concurrent_load, pc_teardown),
        cmocka_unit_test_teardown(test_concurrent_same_key, pc_teardown),
        cmocka_unit_test_teardown(test_split_body, pc_teardown),
        cmocka_unit_test_teardown(test_pipelined, pc_teardown),
        cmocka_unit_test_teardown(test_main_thread_idle, pc_teardown),
        cmocka_unit_test_teardown(test_other_core_count_refused, pc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
