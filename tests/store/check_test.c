/*
 * Tests of store/check.c: a data directory built by real batches passes; then each
 * kind of damage, written straight into LMDB, makes store_check fail with a report
 * line that names it: a balance that no longer matches the payments, a balance that
 * does not sum to zero, a missing outbox event, a lost payment (its ledger entries
 * and idempotency record dangle), a garbage record, a missing manifest.
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
#include "engine/ids.h"
#include "store/check.h"
#include "store/manifest.h"
#include "store/record.h"
#include "store/shard_store.h"

#define NOW_MS  1764064800123LL
#define NSHARDS 2

struct fixture {
    char *dir;
    char pay[4][ID_BYTES + 1]; /* shard 0: pay[0] captured+refunded, pay[1] authorized */
};

static struct engine_span span(const char *s)
{
    return (struct engine_span){s, s ? strlen(s) : 0};
}

/* Applies one POST on its merchant's shard; returns the answer's status and id. */
static int post(struct shard_store *s, const char *path, const char *body, const char *key,
                char id[ID_BYTES + 1])
{
    static struct op op;
    static char out[ENGINE_ANSWER_MAX_BYTES];
    struct api_request q = {
        .method = span("POST"), .path = span(path), .body = span(body), .idem_key = span(key)};
    struct api_error err;
    assert_int_equal(api_decode(&q, NSHARDS, &op, &err), 0);
    struct batch_item it = {.op = &op, .answer = {.body = out, .cap = sizeof(out)}};
    assert_int_equal(shard_store_apply_batch(s, &it, 1, NOW_MS), 0);
    if (id) {
        memcpy(id, out + 7, ID_BYTES);
        id[ID_BYTES] = '\0';
    }
    return it.answer.status;
}

/* Two shards; merchants chosen so that each shard holds one. */
static const char *merchant_of_shard(uint32_t shard)
{
    static char m[NSHARDS][16];
    for (int i = 0;; i++) {
        snprintf(m[shard], sizeof(m[shard]), "m-%d", i);
        if (engine_shard_of_merchant(m[shard], strlen(m[shard]), NSHARDS) == shard)
            return m[shard];
    }
}

static int setup(void **state)
{
    struct fixture *f = calloc(1, sizeof(*f));
    f->dir = strdup("/tmp/rp_check_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char err[256], body[128], path[64];
    assert_int_equal(store_manifest_open(f->dir, NSHARDS, err, sizeof(err)), 0);
    for (uint32_t sh = 0; sh < NSHARDS; sh++) {
        struct shard_store *s;
        assert_int_equal(shard_store_open(&s, f->dir, sh, NULL), 0);
        const char *m = merchant_of_shard(sh);
        snprintf(body, sizeof(body),
                 "{\"merchant_id\":\"%s\",\"amount\":15000,\"currency\":\"KRW\"}", m);
        assert_int_equal(post(s, "/v1/payments/authorize", body, "a1", f->pay[2 * sh]), 201);
        assert_int_equal(post(s, "/v1/payments/authorize", body, "a2", f->pay[2 * sh + 1]), 201);
        snprintf(path, sizeof(path), "/v1/payments/%s/capture", f->pay[2 * sh]);
        assert_int_equal(post(s, path, "{\"amount\":12000}", "c1", NULL), 200);
        snprintf(path, sizeof(path), "/v1/payments/%s/refund", f->pay[2 * sh]);
        assert_int_equal(post(s, path, "{\"amount\":500}", "r1", NULL), 201);
        shard_store_close(s);
    }
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fixture *f = *state;
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
    free(f->dir);
    free(f);
    return 0;
}

/* Runs store_check; returns its result and its report in buf. */
static int run_check(const char *dir, char *buf, size_t cap)
{
    FILE *rep = tmpfile();
    assert_non_null(rep);
    int rc = store_check(dir, rep);
    rewind(rep);
    size_t n = fread(buf, 1, cap - 1, rep);
    buf[n] = '\0';
    fclose(rep);
    return rc;
}

/* Opens shard 0 for raw edits. */
static MDB_txn *raw_begin(const char *dir, MDB_env **env)
{
    char path[600];
    snprintf(path, sizeof(path), "%s/shard-000", dir);
    MDB_txn *txn;
    assert_int_equal(mdb_env_create(env), 0);
    assert_int_equal(mdb_env_set_maxdbs(*env, 8), 0);
    assert_int_equal(mdb_env_open(*env, path, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(*env, NULL, 0, &txn), 0);
    return txn;
}

static void raw_commit(MDB_env *env, MDB_txn *txn)
{
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
}

static MDB_dbi dbi(MDB_txn *txn, const char *name)
{
    MDB_dbi d;
    assert_int_equal(mdb_dbi_open(txn, name, 0, &d), 0);
    return d;
}

/* Rewrites shard 0's merchant's KRW balance. */
static void put_balance(const char *dir, int64_t clearing, int64_t pending, int64_t available)
{
    MDB_env *env;
    MDB_txn *txn = raw_begin(dir, &env);
    const char *m = merchant_of_shard(0);
    uint8_t k[RECORD_KEY_MAX], v[RECORD_BALANCE_BYTES];
    MDB_val key = {record_key_balance(k, m, strlen(m), "KRW"), k};
    memset(v, 0, sizeof(v));
    v[0] = RECORD_VERSION;
    record_put_u64le(v + 8, (uint64_t)clearing);
    record_put_u64le(v + 16, (uint64_t)pending);
    record_put_u64le(v + 24, (uint64_t)available);
    MDB_val val = {sizeof(v), v};
    assert_int_equal(mdb_put(txn, dbi(txn, RECORD_DB_BALANCES), &key, &val, 0), 0);
    raw_commit(env, txn);
}

static void test_good_data_passes(void **state)
{
    struct fixture *f = *state;
    char rep[4096];
    assert_int_equal(run_check(f->dir, rep, sizeof(rep)), 0);
    assert_non_null(strstr(rep, "check: 2 shards, 4 payments, 10 ledger entries, 8 events;"));
    assert_non_null(strstr(rep, "; OK\n"));
    /* One line: the summary. */
    assert_ptr_equal(strchr(rep, '\n'), rep + strlen(rep) - 1);
}

static void test_balance_not_matching_payments(void **state)
{
    struct fixture *f = *state;
    /* Correct: pending 15000 (pay[1] open), available 11500, clearing -26500. Move 1
     * from pending to available: still zero-sum, but neither matches the payments. */
    put_balance(f->dir, -26500, 14999, 11501);
    char rep[4096];
    assert_int_equal(run_check(f->dir, rep, sizeof(rep)), 1);
    assert_non_null(strstr(rep, "shard 0: balance "));
    assert_non_null(strstr(rep, "/KRW: pending 14999, open authorizations 15000; available "
                                "11501, captured minus refunded 11500"));
    assert_non_null(strstr(rep, "FAILED: 1 problems"));
    put_balance(f->dir, -26500, 15000, 11500);
    assert_int_equal(run_check(f->dir, rep, sizeof(rep)), 0);
}

static void test_balance_not_zero_sum(void **state)
{
    struct fixture *f = *state;
    put_balance(f->dir, -26500, 15000, 11501);
    char rep[4096];
    assert_int_equal(run_check(f->dir, rep, sizeof(rep)), 1);
    assert_non_null(strstr(rep, "clearing -26500 + pending 15000 + available 11501 = 1, not 0"));
    assert_non_null(strstr(rep, "shard 0: the sum of all balances is not zero"));
    assert_non_null(strstr(rep, "all shards: the sum of all balances is not zero"));
}

static void test_missing_outbox_event(void **state)
{
    struct fixture *f = *state;
    MDB_env *env;
    MDB_txn *txn = raw_begin(f->dir, &env);
    uint8_t k[8];
    record_put_u64be(k, 2);
    MDB_val key = {8, k};
    assert_int_equal(mdb_del(txn, dbi(txn, RECORD_DB_OUTBOX), &key, NULL), 0);
    raw_commit(env, txn);
    char rep[4096];
    assert_int_equal(run_check(f->dir, rep, sizeof(rep)), 1);
    assert_non_null(strstr(rep, "shard 0: outbox: events 2..2 are missing"));
}

static void test_lost_payment(void **state)
{
    struct fixture *f = *state;
    MDB_env *env;
    MDB_txn *txn = raw_begin(f->dir, &env);
    MDB_val key = {ID_BYTES, f->pay[0]};
    assert_int_equal(mdb_del(txn, dbi(txn, RECORD_DB_PAYMENTS), &key, NULL), 0);
    raw_commit(env, txn);
    char rep[8192], want[128];
    assert_int_equal(run_check(f->dir, rep, sizeof(rep)), 1);
    snprintf(want, sizeof(want), "names unknown payment %s", f->pay[0]);
    assert_non_null(strstr(rep, want));
    snprintf(want, sizeof(want), "/a1: status 201 names %s, which does not exist", f->pay[0]);
    assert_non_null(strstr(rep, want));
    /* Its balance contribution is gone too. */
    assert_non_null(strstr(rep, "captured minus refunded 0"));
}

static void test_garbage_record(void **state)
{
    struct fixture *f = *state;
    MDB_env *env;
    MDB_txn *txn = raw_begin(f->dir, &env);
    MDB_val key = {ID_BYTES, f->pay[1]};
    char junk[40];
    for (size_t i = 0; i < sizeof(junk); i++)
        junk[i] = (char)(i * 37 + 11);
    MDB_val val = {sizeof(junk), junk};
    assert_int_equal(mdb_put(txn, dbi(txn, RECORD_DB_PAYMENTS), &key, &val, 0), 0);
    raw_commit(env, txn);
    char rep[8192], want[128];
    assert_int_equal(run_check(f->dir, rep, sizeof(rep)), 1);
    snprintf(want, sizeof(want), "payment %s: corrupt record (40 bytes)", f->pay[1]);
    assert_non_null(strstr(rep, want));
}

static void test_entries_not_matching_state(void **state)
{
    struct fixture *f = *state;
    /* Rewrite pay[1] (authorized 15000) as voided, keeping its entries: the release
     * entry is missing, and the balance keeps the open authorization. */
    MDB_env *env;
    MDB_txn *txn = raw_begin(f->dir, &env);
    MDB_val key = {ID_BYTES, f->pay[1]}, val;
    MDB_dbi d = dbi(txn, RECORD_DB_PAYMENTS);
    assert_int_equal(mdb_get(txn, d, &key, &val), 0);
    uint8_t buf[RECORD_PAYMENT_MAX_BYTES];
    memcpy(buf, val.mv_data, val.mv_size);
    buf[1] = PAYMENT_VOIDED;
    val.mv_data = buf;
    assert_int_equal(mdb_put(txn, d, &key, &val, 0), 0);
    raw_commit(env, txn);
    char rep[8192], want[200];
    assert_int_equal(run_check(f->dir, rep, sizeof(rep)), 1);
    snprintf(want, sizeof(want),
             "payment %s (voided): entries give authorized 15000 captured 0 released 0 "
             "refunded 0; state says 15000 0 15000 0",
             f->pay[1]);
    assert_non_null(strstr(rep, want));
    assert_non_null(strstr(rep, "pending 15000, open authorizations 0"));
}

static void test_lost_refund(void **state)
{
    struct fixture *f = *state;
    MDB_env *env;
    MDB_txn *txn = raw_begin(f->dir, &env);
    MDB_cursor *c;
    MDB_val k, v;
    assert_int_equal(mdb_cursor_open(txn, dbi(txn, RECORD_DB_REFUNDS), &c), 0);
    assert_int_equal(mdb_cursor_get(c, &k, &v, MDB_FIRST), 0);
    assert_int_equal(mdb_cursor_del(c, 0), 0);
    mdb_cursor_close(c);
    raw_commit(env, txn);
    char rep[8192], want[128];
    assert_int_equal(run_check(f->dir, rep, sizeof(rep)), 1);
    snprintf(want, sizeof(want), "payment %s: refunds sum to 0, refunded amount is 500", f->pay[0]);
    assert_non_null(strstr(rep, want));
    /* The refund's idempotency record now claims a refund that does not exist. */
    assert_non_null(strstr(rep, "/r1: status 201 names rfd_"));
}

static void test_no_manifest(void **state)
{
    char rep[1024];
    assert_int_equal(run_check("/tmp/rp-check-no-such-dir", rep, sizeof(rep)), -ENOENT);
    assert_non_null(strstr(rep, "check: cannot open /tmp/rp-check-no-such-dir/MANIFEST"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_good_data_passes, setup, teardown),
        cmocka_unit_test_setup_teardown(test_balance_not_matching_payments, setup, teardown),
        cmocka_unit_test_setup_teardown(test_balance_not_zero_sum, setup, teardown),
        cmocka_unit_test_setup_teardown(test_missing_outbox_event, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_payment, setup, teardown),
        cmocka_unit_test_setup_teardown(test_garbage_record, setup, teardown),
        cmocka_unit_test_setup_teardown(test_entries_not_matching_state, setup, teardown),
        cmocka_unit_test_setup_teardown(test_lost_refund, setup, teardown),
        cmocka_unit_test(test_no_manifest),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
