/*
 * Tests of the storage core of store/shard_store.c below the engine: environment
 * open/reopen and format check, record codecs, postings and balances, the outbox,
 * the MAP_FULL grow-and-retry path and injected store failures. Includes the .c to
 * reach its statics (STYLE rule 8); links rp_store only for the other modules.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "store/shard_store.c"

static char *make_tmp(void)
{
    char *dir = strdup("/tmp/rp_shard_env_XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void rm_rf(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static struct record_ledger_entry entry(const char *pid, uint8_t debit, uint8_t credit,
                                        int64_t amount)
{
    struct record_ledger_entry e = {.debit = debit, .credit = credit, .amount = amount};
    memcpy(e.currency, "KRW", 3);
    e.created_at_ms = 1764064800123;
    e.payment_id_len = (uint8_t)strlen(pid);
    memcpy(e.payment_id, pid, e.payment_id_len);
    return e;
}

#define PAY_ID "pay_030000000000000001"

/* Body: an authorize-like posting for merchant m-1 and one outbox event. */
struct post_arg {
    int64_t amount;
    uint64_t ledger_seq, event_seq;
    int calls;
    int rc;
};

static void post_body(struct shard_txn *t, void *varg)
{
    struct post_arg *a = varg;
    a->calls++;
    struct posting p = {.payment_id = PAY_ID,
                        .merchant_id = "m-1",
                        .merchant_id_len = 3,
                        .currency = "KRW",
                        .debit = LEDGER_CLEARING,
                        .credit = LEDGER_PENDING,
                        .amount = a->amount};
    a->rc = st_posting_add(t, &p, 1764064800123, &a->ledger_seq);
    if (a->rc)
        return;
    uint64_t seq = 0;
    a->rc = st_next_sequence(t, ENGINE_SEQ_EVENT, &seq);
    if (a->rc)
        return;
    static const char json[] = "{\"type\":\"payment.authorized\"}";
    struct engine_event ev = {.seq = seq,
                              .topic = "payment.authorized",
                              .key = {"m-1", 3},
                              .value = {json, sizeof(json) - 1}};
    a->rc = st_event_append(t, &ev);
    a->event_seq = seq;
}

static struct balance read_balance(struct shard_store *s, const char *m)
{
    struct shard_txn t = {.s = s};
    assert_int_equal(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t.txn), 0);
    struct balance b;
    memset(&b, 0, sizeof(b));
    int rc = balance_read(&t, m, strlen(m), "KRW", &b);
    assert_true(rc == 0 || rc == -ENOENT);
    mdb_txn_abort(t.txn);
    return b;
}

static struct payment sample_payment(void)
{
    struct payment p;
    memset(&p, 0, sizeof(p));
    strcpy(p.id, PAY_ID);
    strcpy(p.merchant_id, "m-1");
    p.merchant_id_len = 3;
    strcpy(p.currency, "KRW");
    p.status = PAYMENT_PARTIALLY_REFUNDED;
    p.amount = 15000;
    p.captured_amount = 12000;
    p.refunded_amount = 500;
    p.has_reference = true;
    p.reference_len = 8;
    strcpy(p.reference, "order-77");
    p.created_at_ms = 1764064800123;
    p.updated_at_ms = 1764064900000;
    return p;
}

static void test_codecs(void **state)
{
    uint8_t buf[RECORD_PAYMENT_MAX_BYTES];
    struct record_ledger_entry e = entry("pay_x", 1, 2, 500), d;
    size_t n = record_ledger_encode(buf, &e);
    assert_int_equal(n, RECORD_LEDGER_FIXED_BYTES + 5);
    assert_int_equal(record_ledger_decode(buf, n, &d), 0);
    assert_int_equal(d.amount, 500);
    assert_int_equal(d.debit, 1);
    assert_memory_equal(d.payment_id, "pay_x", 5);
    buf[0] = 2;
    assert_int_equal(record_ledger_decode(buf, n, &d), -EBADMSG);
    assert_int_equal(record_ledger_decode(buf, 3, &d), -EBADMSG);

    uint8_t i64[RECORD_I64_BYTES];
    int64_t v = 0;
    record_i64_encode(i64, -42);
    assert_int_equal(record_i64_decode(i64, sizeof(i64), &v), 0);
    assert_int_equal(v, -42);
    assert_int_equal(record_i64_decode(i64, 8, &v), -EBADMSG);
    i64[3] = 1;
    assert_int_equal(record_i64_decode(i64, sizeof(i64), &v), -EBADMSG);

    uint8_t evb[128];
    struct record_event ev = {"m-1", 3, "payment.voided", 14, "{}", 2}, dev;
    n = record_event_encode(evb, &ev);
    assert_int_equal(n, record_event_size(&ev));
    assert_int_equal(record_event_decode(evb, n, &dev), 0);
    assert_int_equal(dev.merchant_len, 3);
    assert_memory_equal(dev.topic, "payment.voided", 14);
    assert_memory_equal(dev.json, "{}", 2);
    assert_int_equal(record_event_decode(evb, n - 1, &dev), -EBADMSG);
    evb[1] = 60; /* merchant length past the end */
    assert_int_equal(record_event_decode(evb, n, &dev), -EBADMSG);

    /* Payment: round trip, then every single-byte corruption either fails to decode
     * or decodes to a payment that still satisfies the invariants; never a crash. */
    struct payment p = sample_payment(), q;
    n = record_payment_encode(buf, &p);
    assert_int_equal(n, RECORD_PAYMENT_FIXED_BYTES + 3 + 8);
    assert_int_equal(record_payment_decode(buf, n, &q), 0);
    assert_memory_equal(&p, &q, sizeof(p));
    for (size_t i = 0; i < n; i++) {
        uint8_t copy[RECORD_PAYMENT_MAX_BYTES];
        memcpy(copy, buf, n);
        copy[i] ^= 0x5a;
        if (record_payment_decode(copy, n, &q) == 0)
            payment_check(&q);
    }
    assert_int_equal(record_payment_decode(buf, n + 1, &q), -EBADMSG);

    struct refund r = {.id = "rfd_030000000000000001",
                       .payment_id = PAY_ID,
                       .merchant_id = "m-1",
                       .merchant_id_len = 3,
                       .currency = "KRW",
                       .amount = 500,
                       .payment_status = PAYMENT_PARTIALLY_REFUNDED,
                       .created_at_ms = 1764064900000},
                  rr;
    n = record_refund_encode(buf, &r);
    assert_int_equal(record_refund_decode(buf, n, &rr), 0);
    assert_string_equal(rr.id, r.id);
    assert_string_equal(rr.payment_id, r.payment_id);
    assert_string_equal(rr.merchant_id, "m-1");
    assert_string_equal(rr.currency, "KRW");
    assert_int_equal(rr.amount, 500);
    assert_int_equal(rr.payment_status, PAYMENT_PARTIALLY_REFUNDED);
    assert_int_equal(rr.created_at_ms, r.created_at_ms);
    buf[1] = PAYMENT_VOIDED;
    assert_int_equal(record_refund_decode(buf, n, &rr), -EBADMSG);

    /* Idempotency record: absent and empty parts stay apart. */
    struct idem_record rec =
                           {.fp = {{"POST", 4}, {"/v1/payments/authorize", 22}, {NULL, 0}, {"", 0}},
                            .status = 201,
                            .body = {"{\"id\":1}", 8},
                            .created_at_ms = 77},
                       drec;
    uint8_t ib[256];
    n = record_idem_encode(ib, &rec);
    assert_int_equal(n, record_idem_size(&rec));
    assert_int_equal(record_idem_decode(ib, n, &drec), 0);
    assert_int_equal(drec.status, 201);
    assert_null(drec.fp[IDEM_FP_QUERY].ptr);
    assert_non_null(drec.fp[IDEM_FP_BODY].ptr);
    assert_int_equal(drec.fp[IDEM_FP_BODY].len, 0);
    assert_memory_equal(drec.fp[IDEM_FP_PATH].ptr, "/v1/payments/authorize", 22);
    assert_memory_equal(drec.body.ptr, "{\"id\":1}", 8);
    assert_int_equal(record_idem_decode(ib, n - 1, &drec), -EBADMSG);
    record_put_u32le(ib + 16, 0xffffffffu); /* a length past the end */
    assert_int_equal(record_idem_decode(ib, n, &drec), -EBADMSG);

    /* Keys of one merchant are contiguous and ordered by sequence. */
    uint8_t k1[RECORD_KEY_MAX], k2[RECORD_KEY_MAX], k3[RECORD_KEY_MAX];
    const char *m;
    size_t mlen;
    size_t l1 = record_key_ledger(k1, "m", 1, 2);
    size_t l2 = record_key_ledger(k2, "m", 1, 256);
    size_t l3 = record_key_ledger(k3, "m-", 2, 1);
    assert_true(memcmp(k1, k2, l1) < 0);
    assert_true(memcmp(k2, k3, l2 < l3 ? l2 : l3) < 0);
    assert_int_equal(record_key_split(k3, l3, &m, &mlen), 3);
    assert_int_equal(mlen, 2);
    k3[0] = 100;
    assert_int_equal(record_key_split(k3, l3, &m, &mlen), 0);
    assert_false(record_merchant_valid("a b", 3));
    assert_false(record_merchant_valid("", 0));
}

static void test_open_reopen_postings(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    assert_int_equal(shard_store_open(&s, dir, 3, NULL), 0);
    assert_int_equal(s->map_bytes, SHARD_MAP_DEFAULT_BYTES);
    struct shard_txn t;
    struct post_arg a = {.amount = 700};
    assert_int_equal(txn_run(s, &t, post_body, &a), 0);
    assert_int_equal(a.rc, 0);
    assert_int_equal(a.ledger_seq, 1);
    assert_int_equal(a.event_seq, 1);
    a.amount = 300;
    assert_int_equal(txn_run(s, &t, post_body, &a), 0);
    assert_int_equal(a.ledger_seq, 2);
    assert_int_equal(a.event_seq, 2);
    shard_store_close(s);

    /* After reopening, balances, ledger and sequences continue where they were. */
    assert_int_equal(shard_store_open(&s, dir, 3, NULL), 0);
    struct balance b = read_balance(s, "m-1");
    assert_int_equal(b.pending, 1000);
    assert_int_equal(b.clearing, -1000);
    assert_int_equal(b.available, 0);
    b = read_balance(s, "m-2");
    assert_int_equal(b.pending, 0);
    a.amount = 5;
    assert_int_equal(txn_run(s, &t, post_body, &a), 0);
    assert_int_equal(a.ledger_seq, 3);
    assert_int_equal(a.event_seq, 3);
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    assert_int_equal(st.commits, 1);
    shard_store_close(s);

    /* Another format version in meta is refused. */
    MDB_env *env;
    MDB_txn *txn;
    MDB_dbi meta;
    char path[600];
    snprintf(path, sizeof(path), "%s/shard-003", dir);
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_set_maxdbs(env, 8), 0);
    assert_int_equal(mdb_env_open(env, path, 0, 0600), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &txn), 0);
    assert_int_equal(mdb_dbi_open(txn, "meta", 0, &meta), 0);
    uint8_t v[RECORD_I64_BYTES];
    record_i64_encode(v, 99);
    MDB_val k = {6, "format"}, val = {sizeof(v), v};
    assert_int_equal(mdb_put(txn, meta, &k, &val, 0), 0);
    assert_int_equal(mdb_txn_commit(txn), 0);
    mdb_env_close(env);
    assert_int_equal(shard_store_open(&s, dir, 3, NULL), -EBADMSG);
    assert_null(s);
    rm_rf(dir);
    free(dir);
}

struct overflow_arg {
    int committed;
    int rc;
};

static void overflow_body(struct shard_txn *t, void *varg)
{
    struct overflow_arg *a = varg;
    struct posting p = {.payment_id = PAY_ID,
                        .merchant_id = "m-1",
                        .merchant_id_len = 3,
                        .currency = "KRW",
                        .debit = LEDGER_CLEARING,
                        .credit = LEDGER_PENDING,
                        .amount = AMOUNT_MAX};
    while ((a->rc = st_posting_add(t, &p, 1, NULL)) == 0 && a->committed < 10000)
        a->committed++;
    assert_int_equal(t->err, 0);
}

static void test_balance_overflow_is_the_operations_failure(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    assert_int_equal(shard_store_open(&s, dir, 0, NULL), 0);
    struct shard_txn t;
    /* 9223 maximal authorizations fit in int64; the next one would not. It fails
     * alone (t->err stays 0) and the transaction still commits the others. */
    struct overflow_arg a = {0};
    assert_int_equal(txn_run(s, &t, overflow_body, &a), 0);
    int committed = a.committed;
    assert_int_equal(a.rc, -EOVERFLOW);
    assert_int_equal(committed, INT64_MAX / AMOUNT_MAX);
    struct balance b = read_balance(s, "m-1");
    assert_int_equal(b.pending, (int64_t)committed * AMOUNT_MAX);
    shard_store_close(s);
    rm_rf(dir);
    free(dir);
}

/* Body: many large events, enough to overflow a tiny map. */
struct fill_arg {
    int events;
    int calls;
};

static void fill_body(struct shard_txn *t, void *varg)
{
    struct fill_arg *a = varg;
    static char json[RECORD_EVENT_MAX_BYTES];
    memset(json, 'x', sizeof(json));
    a->calls++;
    for (int i = 0; i < a->events; i++) {
        uint64_t seq = 0;
        if (st_next_sequence(t, ENGINE_SEQ_EVENT, &seq))
            return;
        struct engine_event ev = {.seq = seq,
                                  .topic = "payment.captured",
                                  .key = {"m-1", 3},
                                  .value = {json, sizeof(json)}};
        if (st_event_append(t, &ev))
            return;
    }
}

static uint64_t outbox_count(struct shard_store *s)
{
    MDB_txn *txn;
    MDB_stat st;
    assert_int_equal(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_stat(txn, s->dbi[SHARD_DBI_OUTBOX], &st), 0);
    mdb_txn_abort(txn);
    return st.ms_entries;
}

static void test_map_full_grows_and_loses_nothing(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    struct shard_store_options opt = {.map_bytes = 64 * 1024, .map_max_bytes = 64 << 20};
    assert_int_equal(shard_store_open(&s, dir, 0, &opt), 0);
    struct shard_txn t;
    uint64_t committed = 0;
    for (int round = 0; round < 12; round++) {
        struct fill_arg a = {.events = 8};
        assert_int_equal(txn_run(s, &t, fill_body, &a), 0);
        committed += 8;
        assert_int_equal(outbox_count(s), committed);
    }
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    assert_true(st.map_full >= 1);
    assert_true(st.map_grows >= 1);
    assert_true(st.map_bytes > 64 * 1024);
    assert_int_equal(st.failed_commits, 0);
    shard_store_close(s);
    assert_int_equal(shard_store_open(&s, dir, 0, &opt), 0);
    assert_int_equal(outbox_count(s), committed);
    shard_store_close(s);
    rm_rf(dir);
    free(dir);
}

static void test_map_full_at_ceiling_fails_cleanly(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    struct shard_store_options opt = {.map_bytes = 128 * 1024, .map_max_bytes = 128 * 1024};
    assert_int_equal(shard_store_open(&s, dir, 0, &opt), 0);
    struct shard_txn t;
    struct fill_arg small = {.events = 2};
    assert_int_equal(txn_run(s, &t, fill_body, &small), 0);
    struct fill_arg big = {.events = 64}; /* 256 KiB: cannot fit */
    assert_int_equal(txn_run(s, &t, fill_body, &big), MDB_MAP_FULL);
    assert_int_equal(big.calls, 1); /* no room to grow: no retry */
    assert_int_equal(outbox_count(s), 2);
    /* The store still works after the failure, and the event sequence has no gap. */
    assert_int_equal(txn_run(s, &t, fill_body, &small), 0);
    assert_int_equal(outbox_count(s), 4);
    MDB_txn *txn;
    uint64_t last = 0;
    assert_int_equal(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(ss_meta_get(txn, s, "seq:event", &last), 0);
    mdb_txn_abort(txn);
    assert_int_equal(last, 4);
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    assert_int_equal(st.failed_commits, 1);
    shard_store_close(s);
    rm_rf(dir);
    free(dir);
}

static void test_injected_faults(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    /* A persistent MAP_FULL: grown once, retried once, then given up; nothing written. */
    struct shard_store_options opt = {
        .fault_after_puts = 4, .fault_errno = MDB_MAP_FULL, .fault_persistent = 1};
    assert_int_equal(shard_store_open(&s, dir, 0, &opt), 0);
    struct shard_txn t;
    struct post_arg a = {.amount = 10};
    assert_int_equal(txn_run(s, &t, post_body, &a), 0); /* 4 puts: the last allowed */
    a.calls = 0;
    assert_int_equal(txn_run(s, &t, post_body, &a), MDB_MAP_FULL);
    assert_int_equal(a.calls, 2);
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    assert_int_equal(st.map_grows, 1);
    assert_int_equal(read_balance(s, "m-1").pending, 10);
    shard_store_close(s);

    /* A one-time I/O error in the middle aborts the whole transaction; no retry. */
    opt = (struct shard_store_options){.fault_after_puts = 2, .fault_errno = EIO};
    assert_int_equal(shard_store_open(&s, dir, 0, &opt), 0);
    a.calls = 0;
    assert_int_equal(txn_run(s, &t, post_body, &a), EIO);
    assert_int_equal(a.calls, 1);
    assert_int_equal(ss_errno_of(EIO), -EIO);
    assert_int_equal(read_balance(s, "m-1").pending, 10);
    assert_int_equal(read_balance(s, "m-1").clearing, -10);
    assert_int_equal(outbox_count(s), 1);
    /* The next batch succeeds and continues the sequences without a gap. */
    assert_int_equal(txn_run(s, &t, post_body, &a), 0);
    assert_int_equal(a.ledger_seq, 2);
    assert_int_equal(a.event_seq, 2);
    shard_store_close(s);
    rm_rf(dir);
    free(dir);
}

static void test_replicated_mark_rides_next_commit(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    assert_int_equal(shard_store_open(&s, dir, 0, NULL), 0);
    struct shard_txn t;
    struct post_arg a = {.amount = 1};
    assert_int_equal(txn_run(s, &t, post_body, &a), 0);
    shard_store_set_replicated(s, 1);
    shard_store_set_replicated(s, 0); /* never backwards */
    assert_int_equal(txn_run(s, &t, post_body, &a), 0);
    shard_store_close(s);
    assert_int_equal(shard_store_open(&s, dir, 0, NULL), 0);
    MDB_txn *txn;
    uint64_t mark = 0;
    assert_int_equal(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(ss_meta_get(txn, s, "replicated", &mark), 0);
    mdb_txn_abort(txn);
    assert_int_equal(mark, 1);
    shard_store_close(s);
    rm_rf(dir);
    free(dir);
}

/* Body: `events` small outbox events (a backlog that Kafka has not taken yet). */
static void backlog_body(struct shard_txn *t, void *varg)
{
    const int *events = varg;
    static const char json[] = "{\"type\":\"payment.authorized\"}";
    for (int i = 0; i < *events; i++) {
        uint64_t seq = 0;
        if (st_next_sequence(t, ENGINE_SEQ_EVENT, &seq))
            return;
        struct engine_event ev = {.seq = seq,
                                  .topic = "payment.authorized",
                                  .key = {"m-1", 3},
                                  .value = {json, sizeof(json) - 1}};
        if (st_event_append(t, &ev))
            return;
    }
}

/* A long outage's backlog is trimmed at most SHARD_OUTBOX_TRIM_MAX events per
 * transaction, over the following commits, and across a restart; events above the
 * mark stay. */
static void test_outbox_trim_is_bounded_per_commit(void **state)
{
    char *dir = make_tmp();
    struct shard_store *s = NULL;
    assert_int_equal(shard_store_open(&s, dir, 0, NULL), 0);
    struct shard_txn t;
    const uint64_t total = 3 * SHARD_OUTBOX_TRIM_MAX + 100;
    int per_txn = (int)(total / 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(txn_run(s, &t, backlog_body, &per_txn), 0);
    assert_int_equal(outbox_count(s), total);
    const uint64_t mark = total - 60; /* Kafka took all but the last 60 */
    shard_store_set_replicated(s, mark);
    assert_int_equal(shard_store_apply_batch(s, NULL, 0, 1), 0);
    assert_int_equal(outbox_count(s), total - SHARD_OUTBOX_TRIM_MAX);
    assert_int_equal(shard_store_apply_batch(s, NULL, 0, 1), 0);
    assert_int_equal(outbox_count(s), total - 2 * SHARD_OUTBOX_TRIM_MAX);
    shard_store_close(s); /* a restart in the middle of the trim */

    assert_int_equal(shard_store_open(&s, dir, 0, NULL), 0);
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    assert_int_equal(st.replicated_seq, mark);
    assert_int_equal(shard_store_apply_batch(s, NULL, 0, 1), 0);
    assert_int_equal(outbox_count(s), total - 3 * SHARD_OUTBOX_TRIM_MAX);
    assert_int_equal(shard_store_apply_batch(s, NULL, 0, 1), 0);
    assert_int_equal(outbox_count(s), 60);
    /* Nothing left to trim: the next empty batch changes nothing and writes nothing. */
    uint64_t written = shard_store_written(s);
    assert_int_equal(shard_store_apply_batch(s, NULL, 0, 1), 0);
    assert_int_equal(shard_store_written(s), written);
    assert_int_equal(outbox_count(s), 60);
    shard_store_get_stats(s, &st);
    assert_int_equal(st.outbox_trimmed, total - 60 - 2 * SHARD_OUTBOX_TRIM_MAX);
    MDB_txn *txn;
    MDB_cursor *c;
    MDB_val k, v;
    assert_int_equal(mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn), 0);
    assert_int_equal(mdb_cursor_open(txn, s->dbi[SHARD_DBI_OUTBOX], &c), 0);
    assert_int_equal(mdb_cursor_get(c, &k, &v, MDB_FIRST), 0);
    assert_int_equal(record_get_u64be(k.mv_data), mark + 1);
    mdb_cursor_close(c);
    mdb_txn_abort(txn);
    shard_store_close(s);
    rm_rf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_codecs),
        cmocka_unit_test(test_open_reopen_postings),
        cmocka_unit_test(test_balance_overflow_is_the_operations_failure),
        cmocka_unit_test(test_map_full_grows_and_loses_nothing),
        cmocka_unit_test(test_map_full_at_ceiling_fails_cleanly),
        cmocka_unit_test(test_injected_faults),
        cmocka_unit_test(test_replicated_mark_rides_next_commit),
        cmocka_unit_test(test_outbox_trim_is_bounded_per_commit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
