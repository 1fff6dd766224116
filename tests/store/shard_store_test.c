/*
 * Tests of the group commit of store/shard_store.c through its public API, with real
 * operations decoded by the engine's codec: authorize/capture/void/refund applied in
 * batches and read back after reopening, idempotency within one batch, state checks
 * that see the earlier writes of the same batch, MAP_FULL growth and the 503 answer
 * of a batch the store could not commit, and store_check over the result.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/api.h"
#include "store/check.h"
#include "store/manifest.h"
#include "store/shard_store.h"

#define NOW_MS 1764064800123LL

struct req {
    const char *method, *path, *query, *body, *idem;
};

/* An item with its own op and answer buffer. */
struct slot {
    struct op op;
    char body[ENGINE_ANSWER_MAX_BYTES];
};

/* The answer of the last get(), NUL-terminated. */
static char read_body[ENGINE_READ_ANSWER_MAX_BYTES + 1];

static char *make_tmp(void)
{
    char *dir = strdup("/tmp/rp_shard_store_XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    char err[256];
    assert_int_equal(store_manifest_open(dir, 1, err, sizeof(err)), 0);
    return dir;
}

static void rm_rf(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static struct engine_span span(const char *s)
{
    return (struct engine_span){s, s ? strlen(s) : 0};
}

/* Decodes r (auth off, one shard) into slot and points item at it. */
static void prepare(struct slot *sl, struct batch_item *it, struct req r)
{
    struct api_request q = {.method = span(r.method),
                            .path = span(r.path),
                            .query = span(r.query),
                            .body = span(r.body),
                            .idem_key = span(r.idem),
                            .request_id = span("req-1")};
    struct api_error err;
    memset(&sl->op, 0, sizeof(sl->op));
    assert_int_equal(api_decode(&q, 1, &sl->op, &err), 0);
    memset(it, 0, sizeof(*it));
    it->op = &sl->op;
    it->answer.body = sl->body;
    it->answer.cap = sizeof(sl->body);
}

static struct slot *slots(size_t n)
{
    struct slot *s = calloc(n, sizeof(*s));
    assert_non_null(s);
    return s;
}

/* The "id" of a payment or refund answer. */
static void answer_id(const struct batch_item *it, char id[ID_BYTES + 1])
{
    assert_true(it->answer.len > 7 + ID_BYTES);
    assert_memory_equal(it->answer.body, "{\"id\":\"", 7);
    memcpy(id, it->answer.body + 7, ID_BYTES);
    id[ID_BYTES] = '\0';
}

static int contains(const struct batch_item *it, const char *needle)
{
    static char buf[ENGINE_READ_ANSWER_MAX_BYTES + 1];
    memcpy(buf, it->answer.body, it->answer.len);
    buf[it->answer.len] = '\0';
    return strstr(buf, needle) != NULL;
}

/* Runs one read operation against the committed state. */
static const char *get(struct shard_store *s, const char *path, const char *query)
{
    struct slot sl;
    struct batch_item it;
    prepare(&sl, &it, (struct req){"GET", path, query, NULL, NULL});
    it.answer.body = read_body;
    it.answer.cap = ENGINE_READ_ANSWER_MAX_BYTES;
    assert_int_equal(shard_store_read(s, &it, 1, NOW_MS), 0);
    assert_int_equal(it.rc, 0);
    assert_int_equal(it.answer.status, 200);
    read_body[it.answer.len] = '\0';
    return read_body;
}

static void authorize_req(char *path_body, size_t cap, int64_t amount, const char *m)
{
    snprintf(path_body, cap, "{\"merchant_id\":\"%s\",\"amount\":%lld,\"currency\":\"KRW\"}", m,
             (long long)amount);
}

static void test_lifecycle_survives_reopen(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    assert_int_equal(shard_store_open(&s, dir, 0, NULL), 0);
    struct slot *sl = slots(4);
    struct batch_item it[4];
    prepare(&sl[0], &it[0],
            (struct req){"POST", "/v1/payments/authorize", NULL,
                         "{\"merchant_id\":\"m-1\",\"amount\":15000,"
                         "\"currency\":\"KRW\",\"reference\":\"order-77\"}",
                         "k1"});
    prepare(&sl[1], &it[1],
            (struct req){"POST", "/v1/payments/authorize", NULL,
                         "{\"merchant_id\":\"m-1\",\"amount\":5000,"
                         "\"currency\":\"KRW\"}",
                         "k2"});
    assert_int_equal(shard_store_apply_batch(s, it, 2, NOW_MS), 0);
    assert_int_equal(it[0].answer.status, 201);
    assert_int_equal(it[1].answer.status, 201);
    char pay1[ID_BYTES + 1], pay2[ID_BYTES + 1], p1cap[64], p1rfd[64], p2void[64];
    answer_id(&it[0], pay1);
    answer_id(&it[1], pay2);
    assert_string_not_equal(pay1, pay2);

    /* Capture, refund (sees the capture of the same batch) and void in one batch. */
    snprintf(p1cap, sizeof(p1cap), "/v1/payments/%s/capture", pay1);
    snprintf(p1rfd, sizeof(p1rfd), "/v1/payments/%s/refund", pay1);
    snprintf(p2void, sizeof(p2void), "/v1/payments/%s/void", pay2);
    prepare(&sl[0], &it[0], (struct req){"POST", p1cap, NULL, "{\"amount\":12000}", "k3"});
    prepare(&sl[1], &it[1], (struct req){"POST", p1rfd, NULL, "{\"amount\":500}", "k4"});
    prepare(&sl[2], &it[2], (struct req){"POST", p2void, NULL, "{}", "k5"});
    /* A capture of the voided payment, later in the same batch: invalid_state. */
    char p2cap[64];
    snprintf(p2cap, sizeof(p2cap), "/v1/payments/%s/capture", pay2);
    prepare(&sl[3], &it[3], (struct req){"POST", p2cap, NULL, "{}", "k6"});
    assert_int_equal(shard_store_apply_batch(s, it, 4, NOW_MS + 1000), 0);
    assert_int_equal(it[0].answer.status, 200);
    assert_int_equal(it[1].answer.status, 201);
    assert_true(contains(&it[1], "\"payment_status\":\"partially_refunded\""));
    assert_int_equal(it[2].answer.status, 200);
    assert_int_equal(it[3].answer.status, 409);
    assert_true(contains(&it[3], "invalid_state"));
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    assert_int_equal(st.batches, 2);
    assert_int_equal(st.items, 6);
    shard_store_close(s);

    /* Everything is there after reopening the environment. */
    assert_int_equal(shard_store_open(&s, dir, 0, NULL), 0);
    char path[64];
    snprintf(path, sizeof(path), "/v1/payments/%s", pay1);
    get(s, path, NULL);
    assert_non_null(strstr(read_body, "\"status\":\"partially_refunded\""));
    assert_non_null(strstr(read_body, "\"captured_amount\":12000"));
    assert_non_null(strstr(read_body, "\"refunded_amount\":500"));
    assert_non_null(strstr(read_body, "\"reference\":\"order-77\""));
    snprintf(path, sizeof(path), "/v1/payments/%s", pay2);
    get(s, path, NULL);
    assert_non_null(strstr(read_body, "\"status\":\"voided\""));
    get(s, "/v1/merchants/m-1/balances", NULL);
    assert_non_null(strstr(read_body, "\"pending\":0,\"available\":11500"));
    /* 6 entries: 2 authorizations, capture + release, void, refund. */
    get(s, "/v1/merchants/m-1/ledger", "limit=4");
    assert_non_null(strstr(read_body, "\"seq\":4"));
    assert_null(strstr(read_body, "\"seq\":5"));
    assert_non_null(strstr(read_body, "\"next_after\":4"));
    get(s, "/v1/merchants/m-1/ledger", "after=4");
    assert_non_null(strstr(read_body, "\"seq\":5"));
    assert_non_null(strstr(read_body, "\"seq\":6"));
    assert_non_null(strstr(read_body, "\"debit\":\"available\",\"credit\":\"clearing\""));
    assert_non_null(strstr(read_body, "\"next_after\":null"));
    shard_store_close(s);

    FILE *rep = tmpfile();
    assert_int_equal(store_check(dir, rep), 0);
    fclose(rep);
    free(sl);
    rm_rf(dir);
    free(dir);
}

static void test_same_key_twice_in_one_batch(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    assert_int_equal(shard_store_open(&s, dir, 0, NULL), 0);
    struct slot *sl = slots(3);
    struct batch_item it[3];
    const char *body = "{\"merchant_id\":\"m-1\",\"amount\":700,\"currency\":\"KRW\"}";
    prepare(&sl[0], &it[0], (struct req){"POST", "/v1/payments/authorize", NULL, body, "same"});
    prepare(&sl[1], &it[1], (struct req){"POST", "/v1/payments/authorize", NULL, body, "same"});
    prepare(&sl[2], &it[2],
            (struct req){"POST", "/v1/payments/authorize", NULL,
                         "{\"merchant_id\":\"m-1\",\"amount\":701,"
                         "\"currency\":\"KRW\"}",
                         "same"});
    assert_int_equal(shard_store_apply_batch(s, it, 3, NOW_MS), 0);
    assert_int_equal(it[0].answer.status, 201);
    assert_false(it[0].answer.replayed);
    assert_int_equal(it[1].answer.status, 201);
    assert_true(it[1].answer.replayed);
    assert_int_equal(it[1].answer.len, it[0].answer.len);
    assert_memory_equal(it[1].answer.body, it[0].answer.body, it[0].answer.len);
    assert_int_equal(it[2].answer.status, 409);
    assert_true(contains(&it[2], "idempotency_key_reused"));
    get(s, "/v1/merchants/m-1/balances", NULL);
    assert_non_null(strstr(read_body, "\"pending\":700,"));
    get(s, "/v1/merchants/m-1/ledger", NULL);
    assert_non_null(strstr(read_body, "\"seq\":1"));
    assert_null(strstr(read_body, "\"seq\":2"));
    shard_store_close(s);
    free(sl);
    rm_rf(dir);
    free(dir);
}

/* Applies `count` authorizations of `amount` for merchant m as one batch. */
static int authorize_batch(struct shard_store *s, struct slot *sl, struct batch_item *it,
                           size_t count, int64_t amount, const char *m, int key_base,
                           char (*bodies)[128], char (*keys)[32])
{
    for (size_t i = 0; i < count; i++) {
        authorize_req(bodies[i], sizeof(bodies[i]), amount, m);
        snprintf(keys[i], sizeof(keys[i]), "key-%d", key_base + (int)i);
        prepare(&sl[i], &it[i],
                (struct req){"POST", "/v1/payments/authorize", NULL, bodies[i], keys[i]});
    }
    return shard_store_apply_batch(s, it, count, NOW_MS);
}

#define FILL 40

static void test_map_full_grows_and_loses_nothing(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    struct shard_store_options opt = {.map_bytes = 64 * 1024, .map_max_bytes = 256 << 20};
    assert_int_equal(shard_store_open(&s, dir, 0, &opt), 0);
    struct slot *sl = slots(FILL);
    struct batch_item it[FILL];
    char bodies[FILL][128], keys[FILL][32];
    for (int round = 0; round < 10; round++) {
        assert_int_equal(authorize_batch(s, sl, it, FILL, 100, "m-1", round * FILL, bodies, keys),
                         0);
        for (int i = 0; i < FILL; i++) {
            assert_int_equal(it[i].rc, 0);
            assert_int_equal(it[i].answer.status, 201);
        }
    }
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    assert_true(st.map_full >= 1);
    assert_true(st.map_grows >= 1);
    assert_int_equal(st.batches, 10);
    assert_int_equal(st.failed_commits, 0);
    shard_store_close(s);
    assert_int_equal(shard_store_open(&s, dir, 0, &opt), 0);
    get(s, "/v1/merchants/m-1/balances", NULL);
    assert_non_null(strstr(read_body, "\"pending\":40000,")); /* 400 x 100 */
    shard_store_close(s);
    FILE *rep = tmpfile();
    assert_int_equal(store_check(dir, rep), 0);
    fclose(rep);
    free(sl);
    rm_rf(dir);
    free(dir);
}

static void test_map_full_at_ceiling_answers_503(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    struct shard_store_options opt = {.map_bytes = 96 * 1024, .map_max_bytes = 96 * 1024};
    assert_int_equal(shard_store_open(&s, dir, 0, &opt), 0);
    struct slot *sl = slots(400);
    struct batch_item *it = calloc(400, sizeof(*it));
    char(*bodies)[128] = calloc(400, 128);
    char(*keys)[32] = calloc(400, 32);
    assert_int_equal(authorize_batch(s, sl, it, 2, 100, "m-1", 0, bodies, keys), 0);
    int rc = authorize_batch(s, sl, it, 400, 100, "m-1", 100, bodies, keys);
    assert_int_equal(rc, -ENOSPC);
    for (int i = 0; i < 400; i++) {
        assert_int_equal(it[i].rc, -ENOSPC);
        assert_int_equal(it[i].answer.status, 503);
        assert_true(contains(&it[i], "\"code\":\"overloaded\""));
        assert_true(contains(&it[i], "\"request_id\":\"req-1\""));
    }
    /* Nothing of the failed batch exists, and MAP_FULL (found before any write) does
     * not fail the store: it goes on serving small batches. */
    assert_int_equal(shard_store_failed(s), 0);
    get(s, "/v1/merchants/m-1/balances", NULL);
    assert_non_null(strstr(read_body, "\"pending\":200,"));
    assert_int_equal(authorize_batch(s, sl, it, 1, 5, "m-1", 100, bodies, keys), 0);
    assert_int_equal(it[0].answer.status, 201);
    assert_false(it[0].answer.replayed); /* key-100 was not stored by the failed batch */
    shard_store_close(s);
    FILE *rep = tmpfile();
    assert_int_equal(store_check(dir, rep), 0);
    fclose(rep);
    free(sl);
    free(it);
    free(bodies);
    free(keys);
    rm_rf(dir);
    free(dir);
}

static void test_store_error_mid_batch_answers_503(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    struct shard_store_options opt = {.fault_after_puts = 9, .fault_errno = EIO};
    assert_int_equal(shard_store_open(&s, dir, 0, &opt), 0);
    struct slot *sl = slots(4);
    struct batch_item it[4];
    char bodies[4][128], keys[4][32];
    assert_int_equal(authorize_batch(s, sl, it, 4, 100, "m-1", 0, bodies, keys), -EIO);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(it[i].answer.status, 503);
        assert_int_equal(it[i].rc, -EIO);
    }
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    assert_int_equal(st.failed_commits, 1);
    assert_int_equal(st.map_grows, 0);
    /* The fault was one-off, but an I/O error fails the store for good: it refuses
     * without touching the environment, until it is reopened. */
    assert_int_equal(shard_store_failed(s), -EIO);
    assert_int_equal(authorize_batch(s, sl, it, 4, 100, "m-1", 0, bodies, keys), -EIO);
    assert_int_equal(it[0].answer.status, 503);
    assert_int_equal(shard_store_sync(s), -EIO);
    shard_store_get_stats(s, &st);
    assert_int_equal(st.failed_commits, 1);
    shard_store_close(s);
    assert_int_equal(shard_store_open(&s, dir, 0, NULL), 0);
    /* Reopened: the same batch now commits, as first-time requests. */
    assert_int_equal(authorize_batch(s, sl, it, 4, 100, "m-1", 0, bodies, keys), 0);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(it[i].answer.status, 201);
        assert_false(it[i].answer.replayed);
    }
    char id[ID_BYTES + 1];
    answer_id(&it[0], id);
    assert_string_equal(id, "pay_000000000000000001"); /* no sequence was burnt */
    shard_store_close(s);
    free(sl);
    rm_rf(dir);
    free(dir);
}

struct scan_acc {
    int n;
    uint64_t seqs[16];
    char first_topic[32];
    int json_has_event_id;
    int stop_after;
};

static int scan_fn(void *arg, const struct shard_event *ev)
{
    struct scan_acc *a = arg;
    if (a->n == 0)
        snprintf(a->first_topic, sizeof(a->first_topic), "%.*s", (int)ev->topic_len, ev->topic);
    assert_int_equal(ev->key_len, 3);
    assert_memory_equal(ev->key, "m-1", 3);
    char want[64];
    snprintf(want, sizeof(want), "\"event_id\":\"evt_00_%016llx\"", (unsigned long long)ev->seq);
    char json[ENGINE_EVENT_MAX_BYTES + 1];
    memcpy(json, ev->value, ev->value_len);
    json[ev->value_len] = '\0';
    if (strstr(json, want))
        a->json_has_event_id++;
    a->seqs[a->n++] = ev->seq;
    return a->stop_after && a->n == a->stop_after ? 77 : 0;
}

static void test_outbox_scan_mark_and_trim(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    assert_int_equal(shard_store_open(&s, dir, 0, NULL), 0);
    struct slot *sl = slots(4);
    struct batch_item it[4];
    char bodies[4][128], keys[4][32];
    assert_int_equal(authorize_batch(s, sl, it, 4, 100, "m-1", 0, bodies, keys), 0);

    struct scan_acc a = {0};
    assert_int_equal(shard_store_outbox_scan(s, 0, 100, scan_fn, &a), 0);
    assert_int_equal(a.n, 4);
    assert_string_equal(a.first_topic, "payment.authorized");
    assert_int_equal(a.json_has_event_id, 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(a.seqs[i], (uint64_t)i + 1);
    a = (struct scan_acc){0};
    assert_int_equal(shard_store_outbox_scan(s, 1, 2, scan_fn, &a), 0); /* window */
    assert_int_equal(a.n, 2);
    assert_int_equal(a.seqs[0], 2);
    a = (struct scan_acc){.stop_after = 1};
    assert_int_equal(shard_store_outbox_scan(s, 0, 100, scan_fn, &a), 77);

    /* The mark rides the next batch, even an empty one, and trims the outbox. */
    shard_store_set_replicated(s, 2);
    assert_int_equal(shard_store_apply_batch(s, NULL, 0, NOW_MS), 0);
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    assert_int_equal(st.event_seq, 4);
    assert_int_equal(st.replicated_seq, 2);
    a = (struct scan_acc){0};
    assert_int_equal(shard_store_outbox_scan(s, 0, 100, scan_fn, &a), 0);
    assert_int_equal(a.n, 2);
    assert_int_equal(a.seqs[0], 3);
    shard_store_close(s);

    /* After reopening, the mark is known and never goes backwards. */
    assert_int_equal(shard_store_open(&s, dir, 0, NULL), 0);
    shard_store_get_stats(s, &st);
    assert_int_equal(st.replicated_seq, 2);
    assert_int_equal(st.event_seq, 4);
    shard_store_set_replicated(s, 1);
    assert_int_equal(shard_store_apply_batch(s, NULL, 0, NOW_MS), 0);
    shard_store_get_stats(s, &st);
    assert_int_equal(st.replicated_seq, 2);
    shard_store_close(s);

    /* check accepts the trimmed outbox (the gap lies below the mark). */
    FILE *rep = tmpfile();
    assert_int_equal(store_check(dir, rep), 0);
    fclose(rep);
    free(sl);
    rm_rf(dir);
    free(dir);
}

static void test_operation_failing_alone_is_dropped(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    assert_int_equal(shard_store_open(&s, dir, 0, NULL), 0);
    shard_store_close(s);
    /* m-1's KRW balances at the edge of int64 (still zero-sum). */
    char path[600];
    snprintf(path, sizeof(path), "%s/shard-000", dir);
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi dbi;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, path, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "balances", 0, &dbi), 0);
    uint8_t k[8] = {3, 'm', '-', '1', 'K', 'R', 'W'}, v[32] = {1};
    int64_t edge = INT64_MAX - 10;
    for (int i = 0; i < 8; i++) {
        v[8 + i] = (uint8_t)((uint64_t)-edge >> (8 * i));
        v[16 + i] = (uint8_t)((uint64_t)edge >> (8 * i));
    }
    MDB_val key = {7, k}, val = {32, v};
    assert_int_equal(mdb_put(txn, dbi, &key, &val, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);

    assert_int_equal(shard_store_open(&s, dir, 0, NULL), 0);
    struct slot *sl = slots(3);
    struct batch_item it[3];
    char b0[128], b1[128], b2[128];
    authorize_req(b0, sizeof(b0), 5, "m-2");
    authorize_req(b1, sizeof(b1), 100, "m-1");
    authorize_req(b2, sizeof(b2), 7, "m-2");
    prepare(&sl[0], &it[0], (struct req){"POST", "/v1/payments/authorize", NULL, b0, "x0"});
    prepare(&sl[1], &it[1], (struct req){"POST", "/v1/payments/authorize", NULL, b1, "x1"});
    prepare(&sl[2], &it[2], (struct req){"POST", "/v1/payments/authorize", NULL, b2, "x2"});
    /* The engine sees the overflow coming (through balance_get) and refuses it alone. */
    assert_int_equal(shard_store_apply_batch(s, it, 3, NOW_MS), 0);
    assert_int_equal(it[0].answer.status, 201);
    assert_int_equal(it[1].answer.status, 409);
    assert_true(contains(&it[1], "amount_exceeds_remaining"));
    assert_int_equal(it[2].answer.status, 201);
    get(s, "/v1/merchants/m-2/balances", NULL);
    assert_non_null(strstr(read_body, "\"pending\":12,"));
    get(s, "/v1/merchants/m-1/balances", NULL);
    assert_non_null(strstr(read_body, "\"pending\":9223372036854775797,"));
    shard_store_close(s);

    /* An operation that fails by itself inside the store (simulated: a non-sticky
     * -EOVERFLOW on item 1's third put) is dropped with a 503; the others commit. */
    struct shard_store_options opt = {.fault_after_puts = 7 + 2, .fault_errno = -EOVERFLOW};
    assert_int_equal(shard_store_open(&s, dir, 0, &opt), 0);
    authorize_req(b1, sizeof(b1), 100, "m-3");
    prepare(&sl[0], &it[0], (struct req){"POST", "/v1/payments/authorize", NULL, b0, "y0"});
    prepare(&sl[1], &it[1], (struct req){"POST", "/v1/payments/authorize", NULL, b1, "y1"});
    prepare(&sl[2], &it[2], (struct req){"POST", "/v1/payments/authorize", NULL, b2, "y2"});
    assert_int_equal(shard_store_apply_batch(s, it, 3, NOW_MS), 0);
    assert_int_equal(it[0].answer.status, 201);
    assert_int_equal(it[1].answer.status, 503);
    assert_int_equal(it[1].rc, -EOVERFLOW);
    assert_true(contains(&it[1], "\"code\":\"overloaded\""));
    assert_int_equal(it[2].answer.status, 201);
    char id[ID_BYTES + 1];
    answer_id(&it[0], id);
    assert_string_equal(id, "pay_000000000000000003");
    answer_id(&it[2], id); /* the dropped attempt burnt no sequence number */
    assert_string_equal(id, "pay_000000000000000004");
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    assert_int_equal(st.dropped_items, 1);
    assert_int_equal(st.batches, 1);
    get(s, "/v1/merchants/m-3/balances", NULL);
    assert_non_null(strstr(read_body, "\"balances\":[]"));
    get(s, "/v1/merchants/m-2/balances", NULL);
    assert_non_null(strstr(read_body, "\"pending\":24,"));
    shard_store_close(s);
    free(sl);
    rm_rf(dir);
    free(dir);
}

/* Idempotency records older than the TTL are swept by later commits, in the same
 * transaction: the old key then makes a new payment, while a key inside the TTL still
 * replays. Records younger than the TTL are never touched. */
static void test_idem_expiry_sweeps_old_keys(void **state)
{
    (void)state;
    char *dir = make_tmp();
    struct shard_store_options opt = {.idem_ttl_ms = 60 * 1000};
    struct shard_store *s = NULL;
    assert_int_equal(shard_store_open(&s, dir, 0, &opt), 0);
    char body[256];
    authorize_req(body, sizeof(body), 1000, "m-ttl");
    struct slot *sl = slots(4);
    struct batch_item it[4];
    char first[ID_BYTES + 1], again[ID_BYTES + 1], young[ID_BYTES + 1], young2[ID_BYTES + 1];

    prepare(&sl[0], &it[0], (struct req){"POST", "/v1/payments/authorize", NULL, body, "old"});
    assert_int_equal(shard_store_apply_batch(s, &it[0], 1, NOW_MS), 0);
    answer_id(&it[0], first);
    /* 30 s later: inside the TTL, a new key; the old one still replays. */
    prepare(&sl[1], &it[1], (struct req){"POST", "/v1/payments/authorize", NULL, body, "young"});
    prepare(&sl[2], &it[2], (struct req){"POST", "/v1/payments/authorize", NULL, body, "old"});
    assert_int_equal(shard_store_apply_batch(s, &it[1], 2, NOW_MS + 30 * 1000), 0);
    answer_id(&it[1], young);
    assert_true(it[2].answer.replayed);
    answer_id(&it[2], again);
    assert_string_equal(again, first);
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    assert_int_equal(st.idem_swept, 0);

    /* 61 s after the first: "old" expired and is swept by this very commit (after its
     * own operations ran, so the replay below is still answered from the record). */
    prepare(&sl[3], &it[3], (struct req){"POST", "/v1/payments/authorize", NULL, body, "old"});
    assert_int_equal(shard_store_apply_batch(s, &it[3], 1, NOW_MS + 61 * 1000), 0);
    assert_true(it[3].answer.replayed);
    shard_store_get_stats(s, &st);
    assert_int_equal(st.idem_swept, 1);
    /* Next commit: "old" is gone, so it authorizes anew; "young" still replays. */
    prepare(&sl[0], &it[0], (struct req){"POST", "/v1/payments/authorize", NULL, body, "old"});
    prepare(&sl[1], &it[1], (struct req){"POST", "/v1/payments/authorize", NULL, body, "young"});
    assert_int_equal(shard_store_apply_batch(s, &it[0], 2, NOW_MS + 62 * 1000), 0);
    assert_int_equal(it[0].answer.status, 201);
    assert_false(it[0].answer.replayed);
    answer_id(&it[0], again);
    assert_string_not_equal(again, first);
    assert_true(it[1].answer.replayed);
    answer_id(&it[1], young2);
    assert_string_equal(young2, young);
    shard_store_close(s);
    assert_int_equal(store_check(dir, stderr), 0);
    free(sl);
    rm_rf(dir);
    free(dir);
}

/* Durability positions (shard_store.h): written moves only with a commit that wrote,
 * durable only with a completed sync, and each sync covers what was written before it
 * started. */
static void test_positions_follow_the_txn_id(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    struct shard_store_options opt = {.defer_meta_sync = 1};
    assert_int_equal(shard_store_open(&s, dir, 0, &opt), 0);
    uint64_t w0 = shard_store_written(s);
    assert_true(w0 >= 1);                         /* the DBIs were created */
    assert_int_equal(shard_store_durable(s), w0); /* opening synced */
    struct slot *sl = slots(2);
    struct batch_item it[2];
    char bodies[2][128], keys[2][32];
    /* A commit that wrote: its data sync covered the meta page before it only. */
    assert_int_equal(authorize_batch(s, sl, it, 1, 100, "m-1", 0, bodies, keys), 0);
    assert_int_equal(shard_store_written(s), w0 + 1);
    assert_int_equal(shard_store_durable(s), w0);
    /* Its event is committed but not durable: the replicator may not send it yet. */
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    assert_int_equal(st.event_seq, 1);
    assert_int_equal(shard_store_event_durable(s), 0);
    assert_true(st.event_bytes > 3); /* merchant + event JSON */
    /* A replay changes nothing: LMDB writes and syncs nothing, no position moves. */
    assert_int_equal(authorize_batch(s, sl, it, 1, 100, "m-1", 0, bodies, keys), 0);
    assert_true(it[0].answer.replayed);
    assert_int_equal(shard_store_written(s), w0 + 1);
    assert_int_equal(shard_store_durable(s), w0);
    get(s, "/v1/merchants/m-1/balances", NULL);
    assert_int_equal(shard_store_written(s), w0 + 1);
    /* An explicit sync covers what was written before it. */
    assert_int_equal(shard_store_sync(s), 0);
    assert_int_equal(shard_store_durable(s), w0 + 1);
    assert_int_equal(shard_store_event_durable(s), 1);
    assert_int_equal(authorize_batch(s, sl, it, 1, 100, "m-1", 1, bodies, keys), 0);
    assert_int_equal(shard_store_written(s), w0 + 2);
    assert_int_equal(shard_store_durable(s), w0 + 1);
    assert_int_equal(shard_store_event_durable(s), 1);
    /* The next commit that writes covers it too, without an explicit sync. */
    assert_int_equal(authorize_batch(s, sl, it, 1, 100, "m-1", 2, bodies, keys), 0);
    assert_int_equal(shard_store_written(s), w0 + 3);
    assert_int_equal(shard_store_durable(s), w0 + 2);
    assert_int_equal(shard_store_event_durable(s), 2);
    shard_store_get_stats(s, &st);
    assert_int_equal(st.event_seq, 3);
    assert_int_equal(st.event_durable, 2);
    shard_store_close(s);

    /* Without deferred meta syncs a commit that wrote is durable when it returns; a
     * reopened store starts with everything it shows durable. */
    assert_int_equal(shard_store_open(&s, dir, 0, NULL), 0);
    uint64_t w1 = shard_store_written(s);
    assert_int_equal(w1, w0 + 3);
    assert_int_equal(shard_store_durable(s), w1);
    assert_int_equal(authorize_batch(s, sl, it, 1, 100, "m-1", 3, bodies, keys), 0);
    assert_int_equal(shard_store_written(s), w1 + 1);
    assert_int_equal(shard_store_durable(s), w1 + 1);
    assert_int_equal(shard_store_event_durable(s), 4);
    shard_store_close(s);
    free(sl);
    rm_rf(dir);
    free(dir);
}

/* Injected commit and sync failures (once and persistent) fail the store for good:
 * positions stay where they were, nothing of the failed commit exists after reopening,
 * and every later write or sync returns the first error. */
static void test_commit_and_sync_faults_fail_the_store(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    struct slot *sl = slots(1);
    struct batch_item it[1];
    char bodies[1][128], keys[1][32];
    struct shard_store_options opt = {
        .defer_meta_sync = 1, .fault_after_commits = 1, .fault_commit_errno = EIO};
    assert_int_equal(shard_store_open(&s, dir, 0, &opt), 0);
    assert_int_equal(authorize_batch(s, sl, it, 1, 100, "m-1", 0, bodies, keys), 0);
    uint64_t w = shard_store_written(s), d = shard_store_durable(s);
    assert_int_equal(authorize_batch(s, sl, it, 1, 100, "m-1", 1, bodies, keys), -EIO);
    assert_int_equal(it[0].answer.status, 503);
    assert_int_equal(shard_store_failed(s), -EIO);
    assert_int_equal(shard_store_written(s), w);
    assert_int_equal(shard_store_durable(s), d);
    /* one-shot fault, yet the store stays failed */
    assert_int_equal(authorize_batch(s, sl, it, 1, 100, "m-1", 2, bodies, keys), -EIO);
    assert_int_equal(shard_store_sync(s), -EIO);
    assert_int_equal(shard_store_durable(s), d);
    shard_store_close(s);

    /* A persistent sync failure (no space for the file system's own metadata). */
    opt = (struct shard_store_options){
        .defer_meta_sync = 1, .fault_sync_errno = ENOSPC, .fault_persistent = 1};
    assert_int_equal(shard_store_open(&s, dir, 0, &opt), 0);
    assert_int_equal(authorize_batch(s, sl, it, 1, 100, "m-1", 1, bodies, keys), 0);
    assert_false(it[0].answer.replayed); /* key-1's failed commit left nothing */
    d = shard_store_durable(s);
    assert_int_equal(shard_store_sync(s), -ENOSPC);
    assert_int_equal(shard_store_failed(s), -ENOSPC);
    assert_int_equal(shard_store_durable(s), d);
    assert_int_equal(authorize_batch(s, sl, it, 1, 100, "m-1", 2, bodies, keys), -ENOSPC);
    shard_store_close(s);
    free(sl);
    rm_rf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_lifecycle_survives_reopen),
        cmocka_unit_test(test_same_key_twice_in_one_batch),
        cmocka_unit_test(test_map_full_grows_and_loses_nothing),
        cmocka_unit_test(test_map_full_at_ceiling_answers_503),
        cmocka_unit_test(test_store_error_mid_batch_answers_503),
        cmocka_unit_test(test_outbox_scan_mark_and_trim),
        cmocka_unit_test(test_operation_failing_alone_is_dropped),
        cmocka_unit_test(test_idem_expiry_sweeps_old_keys),
        cmocka_unit_test(test_positions_follow_the_txn_id),
        cmocka_unit_test(test_commit_and_sync_faults_fail_the_store),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
