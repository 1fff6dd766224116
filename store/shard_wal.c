/*
 * The shard store's write-ahead log mode (shard_store.h, `wal`; docs/architecture.md
 * "The write-ahead log").
 *
 * State of a shard = LMDB (everything up to the last checkpoint's log position C)
 *                  + the frozen layer (being written into LMDB by the checkpointer)
 *                  + the active layer (taking batches),
 * read in the order active, frozen, LMDB (through one read transaction, m->rtxn, that
 * is renewed only when a checkpoint completed, so that LMDB and the layers never show
 * the same change twice or miss one).
 *
 * A batch: every operation is applied by engine_apply to the active layer (a savepoint
 * before it; a failed operation is rolled back and answered 503), and each operation
 * that changed anything is appended to the log's current record (store/walrec.h: the
 * decoded operation, its fingerprint, the batch's `now`). The answers' position is the
 * log's written end; they leave once the log's syncer made it durable (shard.c). While
 * one write + fdatasync is in flight the next batches are applied and staged.
 *
 * Checkpoints: when the active layer holds checkpoint_ops operations, or checkpoint_ms
 * passed with any, or it is short of room, and no checkpoint is running, the shard
 * freezes it at a record boundary P (the log's written end) and takes the other, empty
 * layer. The checkpointer thread waits until P is durable in the log (LMDB must never
 * hold a change the log could lose), writes every entry of the frozen layer into one
 * LMDB write transaction with "wal_pos" = P, "now", the replicated mark, an outbox trim
 * and an idempotency sweep, commits it with LMDB's durable commit, recycles the log's
 * segments below P, and hands the layer back. The request path never waits for LMDB.
 *
 * Recovery (at open): LMDB's "wal_pos" C is where the log starts to matter; every valid
 * record from C on is applied again through engine_apply with its own `now`, into the
 * active layer (a checkpoint is written in between when the layer fills). A torn, short,
 * corrupt or stale record ends the log (wal.h): it was never acknowledged.
 *
 * Determinism: replaying a record must give the state the live run had. engine_apply is
 * a function of the state, the operation and `now`; `now` is logged and never goes
 * backwards along the log (the shard's clock is clamped to the last batch's). Two things
 * happen at checkpoints, off the log, so they must not change any answer: the outbox
 * trim (nothing reads events below the replicated mark) and the idempotency sweep. For
 * the sweep, an idempotency record older than the TTL is treated as absent by every
 * read in this mode, whether or not it was swept yet, and a checkpoint sweeps only
 * records older than its own newest `now` minus the TTL: every later operation has a
 * `now` at least that large, so the records it deletes were already absent to it.
 *
 * Threads: the shard thread owns the active layer, the log's writer side and m->rtxn;
 * the checkpointer thread owns LMDB write transactions and, while a checkpoint runs,
 * reads the frozen layer (the shard only reads it meanwhile). They meet under m->mu.
 */
#define _GNU_SOURCE
#include "store/shard_wal.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/assert.h"
#include "engine/clock.h"
#include "engine/limits.h"
#include "store/overlay.h"
#include "store/record.h"
#include "store/shard_store_int.h"
#include "store/wal.h"
#include "store/walrec.h"

/* Tables of a layer beyond the LMDB databases: what the layered reads need and LMDB
 * answers with a cursor. Never written into LMDB. */
enum {
    TABLE_LEDGER_LAST = SHARD_DBI_COUNT, /* [mlen][merchant] -> u64 LE last ledger seq */
    TABLE_CURRENCIES,                    /* [mlen][merchant] -> 3-letter codes in the layer */
};
_Static_assert(TABLE_CURRENCIES < OVERLAY_TABLES, "the tables fit a layer");

/* What the shard hands the checkpointer: a frozen layer and what it covers. */
struct ckpt_job {
    struct overlay *layer;
    uint64_t pos;   /* the log position the layer covers: records [C, pos) */
    int64_t now_ms; /* the newest `now` in it */
    uint64_t ops;   /* operations in it */
    uint64_t mark;  /* the replicated mark to store */
};

struct event_mark {
    uint64_t pos; /* the log position whose durability makes... */
    uint64_t seq; /* ...the events up to this one durable */
};

struct shard_wal {
    struct wal *wal;
    struct overlay layers[2];
    struct overlay *active;
    struct overlay *frozen; /* NULL: no checkpoint running */
    MDB_txn *rtxn;          /* the shard thread's LMDB read transaction */
    uint64_t ckpt_pos;      /* LMDB holds every record before this position */
    int64_t last_now;       /* the newest `now` logged: the clock never goes back */
    int64_t last_ckpt_ms;   /* monotonic time of the last freeze */
    uint64_t active_ops;    /* operations in the active layer */
    uint64_t ckpt_ops_max;
    uint32_t ckpt_ms;
    struct walrec_writer *wr; /* the record being built, or NULL */
    size_t rec_bound;         /* the most its operations can have added to a layer */
    size_t rec_ops;           /* its operations */
    size_t last_batch_ops;    /* operations the last batch logged */

    uint64_t event_seq;     /* the last event appended (in a layer or LMDB) */
    uint64_t event_bytes;   /* key + value bytes of the events appended since open */
    uint64_t event_durable; /* the last event whose record is durable */
    struct event_mark marks[SHARD_EVENT_MARKS];
    unsigned marks_head, marks_len;

    /* shared with the checkpointer, under mu */
    pthread_mutex_t mu;
    pthread_cond_t cv;
    struct ckpt_job job;
    bool job_pending; /* handed over, not taken back */
    bool job_done;    /* finished (job_err says how); atomic read as a hint */
    int job_err;
    bool stop;
    pthread_t tid;
    bool started;
    void (*hook)(void *arg, int step);
    void *hook_arg;

    /* counters: the checkpointer's are atomics */
    uint64_t checkpoints, checkpoint_ns, checkpoint_ops, checkpoint_bytes, checkpoint_pos;
    uint64_t overlay_full;
    uint64_t replayed_records, replayed_ops, replay_ns;
};

static void stat_add(uint64_t *f, uint64_t d)
{
    __atomic_store_n(f, __atomic_load_n(f, __ATOMIC_RELAXED) + d, __ATOMIC_RELAXED);
}

/* ---- the engine's store over the layers and LMDB ---------------------------------- */

struct wal_ctx {
    struct shard_store *s;
    struct shard_wal *m;
    struct shard_txn rt; /* LMDB, read-only, through m->rtxn */
    int64_t now_ms;
    int err; /* a layer was full or a read failed: the operation must be rolled back */
};

static void ctx_init(struct wal_ctx *c, struct shard_store *s, int64_t now_ms)
{
    memset(c, 0, sizeof(*c));
    c->s = s;
    c->m = s->wal;
    c->rt.s = s;
    c->rt.txn = s->wal->rtxn;
    c->now_ms = now_ms;
}

/* Looks key up in the active layer, then the frozen one: 0 or -ENOENT. */
static int layers_get(const struct shard_wal *m, unsigned table, const void *key, size_t key_len,
                      const uint8_t **val, size_t *val_len)
{
    if (overlay_get(m->active, table, key, key_len, val, val_len) == 0)
        return 0;
    if (m->frozen && overlay_get(m->frozen, table, key, key_len, val, val_len) == 0)
        return 0;
    return -ENOENT;
}

/* Reserves a value in the active layer; a full layer fails the operation (it was
 * checked for room before it started, so this is a broken bound, reported, not fatal). */
static uint8_t *layer_put(struct wal_ctx *c, unsigned table, const void *key, size_t key_len,
                          size_t val_len)
{
    uint8_t *dst = NULL;
    if (c->err == 0 && overlay_put(c->m->active, table, key, key_len, val_len, &dst) != 0)
        c->err = -ENOSPC;
    return c->err ? NULL : dst;
}

static int lmdb_err(struct wal_ctx *c, int rc)
{
    if (rc && rc != -ENOENT && c->err == 0)
        c->err = rc;
    return rc;
}

static int w_payment_get(void *ctx, const char *id, size_t id_len, struct payment *out)
{
    struct wal_ctx *c = ctx;
    if (id_len != RECORD_PAYMENT_ID_BYTES)
        return -ENOENT;
    const uint8_t *v;
    size_t n;
    if (layers_get(c->m, SHARD_DBI_PAYMENTS, id, id_len, &v, &n) == 0) {
        ASSERT(record_payment_decode(v, n, out) == 0 && memcmp(out->id, id, id_len) == 0);
        return 0;
    }
    return lmdb_err(c, ss_payment_get(&c->rt, id, id_len, out));
}

static int w_payment_put(void *ctx, const struct payment *p)
{
    struct wal_ctx *c = ctx;
    uint8_t buf[RECORD_PAYMENT_MAX_BYTES];
    size_t n = record_payment_encode(buf, p);
    uint8_t *dst = layer_put(c, SHARD_DBI_PAYMENTS, p->id, RECORD_PAYMENT_ID_BYTES, n);
    if (dst == NULL)
        return c->err;
    memcpy(dst, buf, n);
    return 0;
}

static int w_refund_put(void *ctx, const struct refund *r)
{
    struct wal_ctx *c = ctx;
    uint8_t buf[RECORD_REFUND_MAX_BYTES];
    size_t n = record_refund_encode(buf, r);
    uint8_t *dst = layer_put(c, SHARD_DBI_REFUNDS, r->id, RECORD_PAYMENT_ID_BYTES, n);
    if (dst == NULL)
        return c->err;
    memcpy(dst, buf, n);
    return 0;
}

static int w_next_sequence(void *ctx, enum engine_seq which, uint64_t *out)
{
    struct wal_ctx *c = ctx;
    const char *name = ss_seq_name(which);
    size_t len = strlen(name);
    const uint8_t *v;
    size_t n;
    uint64_t cur = 0;
    if (layers_get(c->m, SHARD_DBI_META, name, len, &v, &n) == 0) {
        int64_t i;
        ASSERT(record_i64_decode(v, n, &i) == 0);
        cur = (uint64_t)i;
    } else {
        int rc = ss_meta_get(c->rt.txn, c->s, name, &cur);
        if (rc && rc != MDB_NOTFOUND)
            return lmdb_err(c, ss_errno_of(rc));
    }
    ASSERT(cur < UINT64_MAX);
    uint8_t *dst = layer_put(c, SHARD_DBI_META, name, len, RECORD_I64_BYTES);
    if (dst == NULL)
        return c->err;
    record_i64_encode(dst, (int64_t)(cur + 1));
    *out = cur + 1;
    return 0;
}

/* An idempotency record older than the TTL is absent in this mode (see the top). */
static int w_idem_get(void *ctx, const char *m, size_t mlen, const char *k, size_t klen,
                      struct idem_record *out)
{
    struct wal_ctx *c = ctx;
    uint8_t kbuf[RECORD_KEY_MAX];
    size_t kl = record_key_idem(kbuf, m, mlen, k, klen);
    const uint8_t *v;
    size_t n;
    int rc;
    if (layers_get(c->m, SHARD_DBI_IDEM, kbuf, kl, &v, &n) == 0) {
        ASSERT(record_idem_decode(v, n, out) == 0);
        rc = 0;
    } else {
        rc = lmdb_err(c, ss_idem_get(&c->rt, m, mlen, k, klen, out));
    }
    if (rc == 0 && out->created_at_ms < c->now_ms - c->s->idem_ttl_ms)
        return -ENOENT;
    return rc;
}

static int w_idem_put(void *ctx, const char *m, size_t mlen, const char *k, size_t klen,
                      const struct idem_record *rec)
{
    struct wal_ctx *c = ctx;
    uint8_t kbuf[RECORD_KEY_MAX];
    size_t kl = record_key_idem(kbuf, m, mlen, k, klen);
    size_t n = record_idem_size(rec);
    uint8_t *dst = layer_put(c, SHARD_DBI_IDEM, kbuf, kl, n);
    if (dst == NULL)
        return c->err;
    ASSERT(record_idem_encode(dst, rec) == n);
    uint8_t xbuf[8 + RECORD_KEY_MAX];
    size_t xl = record_key_idem_exp(xbuf, rec->created_at_ms, kbuf, kl);
    return layer_put(c, SHARD_DBI_IDEM_EXP, xbuf, xl, 0) ? 0 : c->err;
}

static int balance_read(struct wal_ctx *c, const char *m, size_t mlen, const char *cur,
                        struct balance *b)
{
    uint8_t kbuf[RECORD_KEY_MAX];
    size_t kl = record_key_balance(kbuf, m, mlen, cur);
    const uint8_t *v;
    size_t n;
    if (layers_get(c->m, SHARD_DBI_BALANCES, kbuf, kl, &v, &n) == 0) {
        struct record_balance rb;
        ASSERT(record_balance_decode(v, n, &rb) == 0);
        memset(b, 0, sizeof(*b));
        memcpy(b->currency, cur, CURRENCY_BYTES);
        b->clearing = rb.clearing;
        b->pending = rb.pending;
        b->available = rb.available;
        return 0;
    }
    return lmdb_err(c, ss_balance_get(&c->rt, m, mlen, cur, b));
}

static int ledger_last(struct wal_ctx *c, const char *m, size_t mlen, uint64_t *seq)
{
    uint8_t kbuf[RECORD_KEY_MAX];
    size_t kl = record_key_merchant(kbuf, m, mlen);
    const uint8_t *v;
    size_t n;
    if (layers_get(c->m, TABLE_LEDGER_LAST, kbuf, kl, &v, &n) == 0) {
        ASSERT(n == 8);
        *seq = record_get_u64le(v);
        return 0;
    }
    return lmdb_err(c, ss_ledger_last_seq(&c->rt, m, mlen, seq));
}

/* Adds cur to the merchant's list of currencies in the active layer (if missing). */
static int currency_note(struct wal_ctx *c, const char *m, size_t mlen, const char *cur)
{
    uint8_t kbuf[RECORD_KEY_MAX];
    size_t kl = record_key_merchant(kbuf, m, mlen);
    const uint8_t *v = NULL;
    size_t n = 0;
    if (overlay_get(c->m->active, TABLE_CURRENCIES, kbuf, kl, &v, &n) == 0)
        for (size_t i = 0; i + CURRENCY_BYTES <= n; i += CURRENCY_BYTES)
            if (memcmp(v + i, cur, CURRENCY_BYTES) == 0)
                return 0;
    if (n + CURRENCY_BYTES > 2 * MERCHANT_CURRENCIES_MAX * CURRENCY_BYTES)
        return c->err = -EBADMSG; /* more currencies than the engine ever allows */
    uint8_t list[2 * MERCHANT_CURRENCIES_MAX * CURRENCY_BYTES];
    if (n)
        memcpy(list, v, n);
    memcpy(list + n, cur, CURRENCY_BYTES);
    uint8_t *dst = layer_put(c, TABLE_CURRENCIES, kbuf, kl, n + CURRENCY_BYTES);
    if (dst == NULL)
        return c->err;
    memcpy(dst, list, n + CURRENCY_BYTES);
    return 0;
}

static int w_posting_add(void *ctx, const struct posting *p, int64_t now_ms, uint64_t *seq)
{
    struct wal_ctx *c = ctx;
    ledger_posting_check(p);
    struct balance b;
    int rc = balance_read(c, p->merchant_id, p->merchant_id_len, p->currency, &b);
    if (rc == -ENOENT) {
        memset(&b, 0, sizeof(b));
        memcpy(b.currency, p->currency, CURRENCY_BYTES);
    } else if (rc) {
        return rc;
    }
    rc = ledger_balance_apply(&b, p);
    if (rc)
        return rc; /* -EOVERFLOW: this operation's failure */
    uint64_t last = 0;
    if ((rc = ledger_last(c, p->merchant_id, p->merchant_id_len, &last)) != 0)
        return rc;
    struct record_ledger_entry e = {.debit = (uint8_t)p->debit,
                                    .credit = (uint8_t)p->credit,
                                    .amount = p->amount,
                                    .created_at_ms = now_ms,
                                    .payment_id_len = RECORD_PAYMENT_ID_BYTES};
    memcpy(e.currency, p->currency, 3);
    memcpy(e.payment_id, p->payment_id, RECORD_PAYMENT_ID_BYTES);
    uint8_t kbuf[RECORD_KEY_MAX], vbuf[RECORD_LEDGER_MAX_BYTES];
    size_t kl = record_key_ledger(kbuf, p->merchant_id, p->merchant_id_len, last + 1);
    size_t vl = record_ledger_encode(vbuf, &e);
    uint8_t *dst = layer_put(c, SHARD_DBI_LEDGER, kbuf, kl, vl);
    if (dst == NULL)
        return c->err;
    memcpy(dst, vbuf, vl);
    /* The last seq under the merchant prefix (the ledger key without its seq). */
    if ((dst = layer_put(c, TABLE_LEDGER_LAST, kbuf, kl - 8, 8)) == NULL)
        return c->err;
    record_put_u64le(dst, last + 1);
    struct record_balance rb = {b.clearing, b.pending, b.available};
    kl = record_key_balance(kbuf, p->merchant_id, p->merchant_id_len, p->currency);
    if ((dst = layer_put(c, SHARD_DBI_BALANCES, kbuf, kl, RECORD_BALANCE_BYTES)) == NULL)
        return c->err;
    record_balance_encode(dst, &rb);
    if ((rc = currency_note(c, p->merchant_id, p->merchant_id_len, p->currency)) != 0)
        return rc;
    if (seq)
        *seq = last + 1;
    return 0;
}

static int w_balance_get(void *ctx, const char *m, size_t mlen, const char *cur,
                         struct balance *out)
{
    return balance_read(ctx, m, mlen, cur, out);
}

struct currency_set {
    char codes[2 * MERCHANT_CURRENCIES_MAX][CURRENCY_BYTES];
    size_t n;
};

static int currency_add(struct currency_set *set, const char *cur)
{
    for (size_t i = 0; i < set->n; i++)
        if (memcmp(set->codes[i], cur, CURRENCY_BYTES) == 0)
            return 0;
    if (set->n == 2 * MERCHANT_CURRENCIES_MAX)
        return -EBADMSG;
    memcpy(set->codes[set->n++], cur, CURRENCY_BYTES);
    return 0;
}

static int collect_lmdb_currency(void *arg, const struct balance *b)
{
    return currency_add(arg, b->currency);
}

static int collect_layer(struct currency_set *set, const struct overlay *o, const uint8_t *key,
                         size_t key_len)
{
    const uint8_t *v;
    size_t n;
    if (o == NULL || overlay_get(o, TABLE_CURRENCIES, key, key_len, &v, &n) != 0)
        return 0;
    int rc = 0;
    for (size_t i = 0; rc == 0 && i + CURRENCY_BYTES <= n; i += CURRENCY_BYTES)
        rc = currency_add(set, (const char *)v + i);
    return rc;
}

static int currency_cmp(const void *a, const void *b)
{
    return memcmp(a, b, CURRENCY_BYTES);
}

/* The merchant's currencies from LMDB and both layers, in order, each read layered. */
static int w_balance_list(void *ctx, const char *m, size_t mlen, engine_balance_fn fn, void *arg)
{
    struct wal_ctx *c = ctx;
    struct currency_set *set = malloc(sizeof(*set));
    if (set == NULL)
        return c->err = -ENOMEM;
    set->n = 0;
    uint8_t kbuf[RECORD_KEY_MAX];
    size_t kl = record_key_merchant(kbuf, m, mlen);
    int rc = ss_balance_list(&c->rt, m, mlen, collect_lmdb_currency, set);
    if (rc == 0)
        rc = collect_layer(set, c->m->frozen, kbuf, kl);
    if (rc == 0)
        rc = collect_layer(set, c->m->active, kbuf, kl);
    if (rc == 0)
        qsort(set->codes, set->n, CURRENCY_BYTES, currency_cmp);
    for (size_t i = 0; rc == 0 && i < set->n; i++) {
        struct balance b;
        rc = balance_read(c, m, mlen, set->codes[i], &b);
        if (rc == 0)
            rc = fn(arg, &b);
    }
    free(set);
    return lmdb_err(c, rc);
}

struct page_walk {
    engine_entry_fn fn;
    void *arg;
    uint32_t seen;
    uint64_t last;
};

static int page_visit(void *arg, const struct ledger_entry *e)
{
    struct page_walk *w = arg;
    w->seen++;
    w->last = e->seq;
    return w->fn(w->arg, e);
}

/* LMDB's entries after `after`, then the layers' (they continue LMDB's sequence). */
static int w_ledger_page(void *ctx, const char *m, size_t mlen, uint64_t after, uint32_t limit,
                         engine_entry_fn fn, void *arg, bool *more)
{
    struct wal_ctx *c = ctx;
    struct page_walk w = {.fn = fn, .arg = arg, .last = after};
    *more = false;
    int rc = ss_ledger_page(&c->rt, m, mlen, after, limit, page_visit, &w, more);
    if (rc || *more || after == UINT64_MAX)
        return lmdb_err(c, rc);
    for (uint64_t seq = w.last + 1; seq != 0; seq++) {
        uint8_t kbuf[RECORD_KEY_MAX];
        size_t kl = record_key_ledger(kbuf, m, mlen, seq);
        const uint8_t *v;
        size_t n;
        if (layers_get(c->m, SHARD_DBI_LEDGER, kbuf, kl, &v, &n) != 0)
            break;
        if (w.seen == limit) {
            *more = true;
            break;
        }
        struct record_ledger_entry re;
        ASSERT(record_ledger_decode(v, n, &re) == 0);
        struct ledger_entry e = {.seq = seq,
                                 .debit = (enum ledger_account)re.debit,
                                 .credit = (enum ledger_account)re.credit,
                                 .amount = re.amount,
                                 .created_at_ms = re.created_at_ms};
        memcpy(e.payment_id, re.payment_id, RECORD_PAYMENT_ID_BYTES);
        memcpy(e.currency, re.currency, CURRENCY_BYTES);
        w.seen++;
        if ((rc = fn(arg, &e)) != 0)
            return rc;
    }
    return 0;
}

static int w_event_append(void *ctx, const struct engine_event *ev)
{
    struct wal_ctx *c = ctx;
    ASSERT(ev->seq >= 1 && ev->topic != NULL);
    struct record_event re = {.merchant = ev->key.ptr,
                              .merchant_len = ev->key.len,
                              .topic = ev->topic,
                              .topic_len = strlen(ev->topic),
                              .json = ev->value.ptr,
                              .json_len = ev->value.len};
    uint8_t kbuf[8];
    record_put_u64be(kbuf, ev->seq);
    size_t n = record_event_size(&re);
    uint8_t *dst = layer_put(c, SHARD_DBI_OUTBOX, kbuf, sizeof(kbuf), n);
    if (dst == NULL)
        return c->err;
    ASSERT(record_event_encode(dst, &re) == n);
    ASSERT(ev->seq > c->m->event_seq);
    c->m->event_seq = ev->seq;
    c->m->event_bytes += re.merchant_len + re.json_len;
    return 0;
}

static const struct engine_store wal_write_store = {
    .payment_get = w_payment_get,
    .payment_put = w_payment_put,
    .refund_put = w_refund_put,
    .next_sequence = w_next_sequence,
    .idem_get = w_idem_get,
    .idem_put = w_idem_put,
    .posting_add = w_posting_add,
    .balance_get = w_balance_get,
    .balance_list = w_balance_list,
    .ledger_page = w_ledger_page,
    .event_append = w_event_append,
};

static const struct engine_store wal_read_store = {
    .payment_get = w_payment_get,
    .idem_get = w_idem_get,
    .balance_get = w_balance_get,
    .balance_list = w_balance_list,
    .ledger_page = w_ledger_page,
};

/* ---- applying one operation ------------------------------------------------------- */

/* The most an operation can add to a layer (engine/limits.h). */
static size_t op_bound_bytes(const struct op *op)
{
    return OVERLAY_OP_FIXED_BYTES + op->fp_method.len + op->fp_path.len + op->fp_query.len +
           op->fp_body.len;
}

static bool layer_has_room(const struct overlay *o, size_t bytes)
{
    return overlay_free_bytes(o) >= bytes && overlay_free_entries(o) >= OVERLAY_OP_ENTRIES;
}

/*
 * Runs op against the active layer at now_ms. Returns 1 when it changed the layer, 0
 * when it changed nothing (a replay, a refusal without a stored answer), or -errno: it
 * failed and was rolled back (-EOVERFLOW: the operation's own failure; anything else is
 * a store error).
 */
static int apply_one(struct shard_store *s, const struct op *op, int64_t now_ms,
                     struct answer *answer)
{
    struct shard_wal *m = s->wal;
    overlay_save(m->active);
    uint64_t puts = m->active->puts, event_seq = m->event_seq, event_bytes = m->event_bytes;
    struct wal_ctx c;
    ctx_init(&c, s, now_ms);
    int rc = engine_apply(&wal_write_store, &c, op, now_ms, answer);
    if (rc == 0 && c.err)
        rc = c.err; /* engine_apply saw a failure it did not report: be strict */
    if (rc) {
        overlay_rollback(m->active);
        m->event_seq = event_seq;
        m->event_bytes = event_bytes;
        return rc;
    }
    return m->active->puts != puts;
}

/* ---- the log's records ------------------------------------------------------------- */

/* Waits (at most timeout_ms) for the log's syncer to report, then takes its reports. */
static int log_wait(struct shard_wal *m, int timeout_ms)
{
    struct pollfd p = {.fd = wal_event_fd(m->wal), .events = POLLIN};
    poll(&p, 1, timeout_ms);
    return wal_poll(m->wal);
}

/* Starts a record, waiting for room in the staging buffer (a write in flight) or for a
 * prepared segment (the checkpointer prepares them) as long as it takes. */
static int record_begin(struct shard_store *s)
{
    struct shard_wal *m = s->wal;
    m->rec_bound = 0;
    m->rec_ops = 0;
    while ((m->wr = wal_begin(m->wal)) == NULL) {
        int rc = wal_poll(m->wal);
        if (rc)
            return rc;
        if (wal_kick(m->wal))
            continue; /* the staged bytes went out: the other buffer is free */
        if (wal_busy(m->wal)) {
            rc = log_wait(m, 100);
        } else { /* no prepared segment: ask the checkpointer, which prepares them */
            pthread_mutex_lock(&m->mu);
            pthread_cond_signal(&m->cv);
            pthread_mutex_unlock(&m->mu);
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
        if (rc)
            return rc;
    }
    return 0;
}

static void record_finish(struct shard_store *s, int64_t now_ms)
{
    struct shard_wal *m = s->wal;
    if (m->wr == NULL)
        return;
    if (m->wr->n > 0)
        wal_finish(m->wal, now_ms, s->replicated_pending);
    else
        wal_abandon(m->wal);
    m->wr = NULL;
}

/* A record's operations can add at most a quarter of a layer (bytes and entries), so
 * that recovery, which must apply a record whole into one layer, can always make room
 * for it by writing a checkpoint first (see replay_record). */
static bool record_full(const struct shard_wal *m, size_t bound)
{
    return m->rec_bound + bound > m->active->arena_bytes / 4 ||
           (m->rec_ops + 1) * OVERLAY_OP_ENTRIES > m->active->entries_max / 4;
}

/* Appends op to the current record (a new one when it is full). 0 or -errno. */
static int record_add(struct shard_store *s, const struct op *op, int64_t now_ms)
{
    struct shard_wal *m = s->wal;
    size_t bound = op_bound_bytes(op);
    if (m->wr && record_full(m, bound))
        record_finish(s, now_ms);
    for (;;) {
        int rc = m->wr ? 0 : record_begin(s);
        if (rc)
            return rc;
        if (walrec_add(m->wr, op) == 0) {
            m->rec_bound += bound;
            m->rec_ops++;
            return 0;
        }
        ASSERT(m->wr->n > 0); /* a fresh record always has room for one operation */
        record_finish(s, now_ms);
    }
}

/* Notes that the events up to event_seq become durable with log position pos. */
static void event_mark_push(struct shard_wal *m, uint64_t pos, uint64_t seq)
{
    if (m->marks_len > 0) {
        struct event_mark *last = &m->marks[(m->marks_head + m->marks_len - 1) % SHARD_EVENT_MARKS];
        if (last->seq == seq)
            return;
        if (m->marks_len == SHARD_EVENT_MARKS) { /* merge: those events just wait longer */
            *last = (struct event_mark){pos, seq};
            return;
        }
    }
    m->marks[(m->marks_head + m->marks_len++) % SHARD_EVENT_MARKS] = (struct event_mark){pos, seq};
}

static void event_marks_take(struct shard_wal *m)
{
    uint64_t durable = wal_durable(m->wal);
    while (m->marks_len > 0 && m->marks[m->marks_head].pos <= durable) {
        m->event_durable = m->marks[m->marks_head].seq;
        m->marks_head = (m->marks_head + 1) % SHARD_EVENT_MARKS;
        m->marks_len--;
    }
}

/* ---- checkpoints ------------------------------------------------------------------- */

/* The bytes this thread caused to be written to storage so far (0 when unknown). */
static uint64_t thread_write_bytes(void)
{
    FILE *f = fopen("/proc/thread-self/io", "r");
    if (f == NULL)
        return 0;
    char line[128];
    unsigned long long v = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "write_bytes: %llu", &v) == 1)
            break;
    fclose(f);
    return v;
}

static void hook(struct shard_wal *m, int step)
{
    if (m->hook)
        m->hook(m->hook_arg, step);
}

struct ckpt_put {
    struct shard_txn *t;
};

static int ckpt_put_entry(void *arg, unsigned table, const uint8_t *key, size_t key_len,
                          const uint8_t *val, size_t val_len)
{
    struct shard_txn *t = arg;
    if (table >= SHARD_DBI_COUNT)
        return 0; /* the layer's own indexes */
    MDB_val k = {.mv_size = key_len, .mv_data = (void *)key};
    MDB_val v = {.mv_size = val_len, .mv_data = (void *)val};
    return mdb_put(t->txn, t->s->dbi[table], &k, &v, 0);
}

/*
 * Writes a layer into LMDB in one durable transaction that also records the log
 * position it covers (see the top of the file). 0 or -errno (the store then fails for
 * good: whether the commit reached the disk is unknown).
 */
static int ckpt_write(struct shard_store *s, const struct ckpt_job *job)
{
    struct shard_wal *m = s->wal;
    uint64_t t0 = clock_mono_ns(), io0 = thread_write_bytes();
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return ss_errno_of(rc);
    struct shard_txn t = {.s = s, .txn = txn, .writable = 1};
    rc = overlay_walk(job->layer, ckpt_put_entry, &t);
    if (rc == 0)
        rc = ss_meta_put(txn, s, "wal_pos", job->pos);
    if (rc == 0)
        rc = ss_meta_put(txn, s, "now", (uint64_t)job->now_ms);
    uint64_t stored = 0;
    if (rc == 0 && (rc = ss_meta_get(txn, s, "replicated", &stored)) == MDB_NOTFOUND)
        rc = 0;
    if (rc == 0 && job->mark > stored)
        rc = ss_meta_put(txn, s, "replicated", job->mark);
    if (rc == 0) {
        /* Trim the replicated outbox: as many events as the layer can have added, and
         * more, so the trim outruns the appends. */
        bool done = false;
        uint64_t mark = job->mark > stored ? job->mark : stored;
        for (uint64_t k = 0; !done && t.err == 0 && k <= 2 * job->ops; k += SHARD_OUTBOX_TRIM_MAX)
            ss_outbox_trim(&t, mark, &done);
        ss_idem_sweep(&t, job->now_ms - s->idem_ttl_ms, 2 * job->ops + IDEM_SWEEP_MIN);
        rc = t.err;
    }
    if (rc) {
        mdb_txn_abort(txn);
        return ss_errno_of(rc);
    }
    hook(m, SHARD_CKPT_BEFORE_COMMIT);
    uint64_t id = (uint64_t)mdb_txn_id(txn);
    rc = mdb_txn_commit(txn);
    if (rc)
        return ss_errno_of(rc);
    /* LMDB's default commit syncs data, then writes and syncs the meta page; that the
     * last meta page is this transaction's says it ran (a commit that changed nothing
     * would not have written one, and this one always changes wal_pos). */
    if (ss_env_last_txn(s) != id)
        return -EIO;
    stat_add(&m->checkpoints, 1);
    stat_add(&m->checkpoint_ops, job->ops);
    stat_add(&m->checkpoint_ns, clock_mono_ns() - t0);
    stat_add(&m->checkpoint_bytes, thread_write_bytes() - io0);
    __atomic_store_n(&m->checkpoint_pos, job->pos, __ATOMIC_RELAXED);
    hook(m, SHARD_CKPT_COMMITTED);
    return 0;
}

static void wal_recycle_hook(void *arg)
{
    hook(arg, SHARD_CKPT_RECYCLED);
}

/* The checkpointer thread: runs handed-over jobs, keeps the log's spare segments
 * prepared in between. */
static void *ckpt_main(void *arg)
{
    struct shard_store *s = arg;
    struct shard_wal *m = s->wal;
    pthread_setname_np(pthread_self(), "rp-ckpt");
    pthread_mutex_lock(&m->mu);
    while (!m->stop) {
        if (!m->job_pending || m->job_done) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_nsec += 50 * 1000000L;
            if (ts.tv_nsec >= 1000000000L) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000L;
            }
            pthread_cond_timedwait(&m->cv, &m->mu, &ts);
            uint64_t below = m->ckpt_pos;
            pthread_mutex_unlock(&m->mu);
            int rc = wal_prepare(m->wal, below);
            pthread_mutex_lock(&m->mu);
            if (rc && m->job_err == 0) { /* a log that cannot go on: fail the store */
                m->job_err = rc;
                m->job_done = m->job_pending = true;
                m->job.layer = NULL;
            }
            continue;
        }
        struct ckpt_job job = m->job;
        pthread_mutex_unlock(&m->mu);
        int rc = 0;
        /* LMDB must never hold a change the log could still lose. */
        while (rc == 0 && wal_durable(m->wal) < job.pos) {
            rc = __atomic_load_n(&s->failed, __ATOMIC_RELAXED);
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
            if (__atomic_load_n(&m->stop, __ATOMIC_RELAXED))
                rc = -ECANCELED;
        }
        if (rc == 0)
            rc = ckpt_write(s, &job);
        if (rc == 0)
            rc = wal_prepare(m->wal, job.pos);
        if (rc == 0)
            hook(m, SHARD_CKPT_DONE);
        pthread_mutex_lock(&m->mu);
        m->job_err = rc;
        __atomic_store_n(&m->job_done, true, __ATOMIC_RELEASE);
    }
    pthread_mutex_unlock(&m->mu);
    return NULL;
}

/* Hands the active layer to the checkpointer (there must be no record open and no
 * checkpoint running) and takes the other, empty one. */
static void freeze(struct shard_store *s)
{
    struct shard_wal *m = s->wal;
    ASSERT(m->frozen == NULL && m->wr == NULL && !overlay_empty(m->active));
    struct overlay *next = m->active == &m->layers[0] ? &m->layers[1] : &m->layers[0];
    ASSERT(overlay_empty(next));
    pthread_mutex_lock(&m->mu);
    m->job = (struct ckpt_job){.layer = m->active,
                               .pos = wal_written(m->wal),
                               .now_ms = m->last_now,
                               .ops = m->active_ops,
                               .mark = s->replicated_pending};
    m->job_pending = true;
    m->job_done = false;
    m->job_err = 0;
    pthread_cond_signal(&m->cv);
    pthread_mutex_unlock(&m->mu);
    m->frozen = m->active;
    m->active = next;
    m->active_ops = 0;
    m->last_ckpt_ms = clock_mono_ns() / 1000000;
}

/* Takes a finished checkpoint back: LMDB now holds the frozen layer, so the read
 * transaction moves on to the new LMDB state and the layer is dropped, together. */
static int ckpt_take(struct shard_store *s)
{
    struct shard_wal *m = s->wal;
    if (!__atomic_load_n(&m->job_done, __ATOMIC_ACQUIRE))
        return 0;
    pthread_mutex_lock(&m->mu);
    int err = m->job_err;
    bool had_layer = m->job.layer != NULL;
    uint64_t pos = m->job.pos, mark = m->job.mark;
    m->job_pending = m->job_done = false;
    pthread_mutex_unlock(&m->mu);
    if (err)
        return ss_fail(s, err);
    if (!had_layer)
        return 0;
    ASSERT(m->frozen != NULL);
    mdb_txn_reset(m->rtxn);
    int rc = mdb_txn_renew(m->rtxn);
    if (rc)
        return ss_fail(s, ss_errno_of(rc));
    overlay_reset(m->frozen);
    m->frozen = NULL;
    if (mark > s->replicated_stored) /* LMDB holds it now (stats: replicated_seq) */
        s->replicated_stored = mark;
    pthread_mutex_lock(&m->mu);
    m->ckpt_pos = pos;
    pthread_mutex_unlock(&m->mu);
    return 0;
}

/* Starts a checkpoint when one is due and none runs. */
static void ckpt_maybe(struct shard_store *s)
{
    struct shard_wal *m = s->wal;
    if (m->frozen || m->wr || overlay_empty(m->active))
        return;
    uint64_t now = clock_mono_ns() / 1000000;
    size_t low = m->active->arena_bytes / 4;
    if (m->active_ops >= m->ckpt_ops_max || now - (uint64_t)m->last_ckpt_ms >= m->ckpt_ms ||
        overlay_free_bytes(m->active) < low ||
        overlay_free_entries(m->active) < m->active->entries_max / 4)
        freeze(s);
}

/* ---- the shard thread's side -------------------------------------------------------- */

static int64_t clamp_now(struct shard_wal *m, int64_t now_ms)
{
    if (now_ms < m->last_now)
        now_ms = m->last_now;
    m->last_now = now_ms;
    return now_ms;
}

int shard_wal_apply_batch(struct shard_store *s, struct batch_item *items, size_t n, int64_t now_ms)
{
    struct shard_wal *m = s->wal;
    int rc = ckpt_take(s);
    now_ms = clamp_now(m, now_ms);
    uint64_t ops_before = m->active_ops;
    for (size_t i = 0; rc == 0 && i < n; i++) {
        struct batch_item *it = &items[i];
        size_t need = op_bound_bytes(it->op);
        if (!layer_has_room(m->active, need)) {
            record_finish(s, now_ms);
            ckpt_maybe(s);
            if (m->frozen == NULL && !overlay_empty(m->active))
                freeze(s);
            if (!layer_has_room(m->active, need)) {
                stat_add(&m->overlay_full, 1);
                ss_answer_overloaded(it, -EBUSY); /* both layers full: backpressure */
                continue;
            }
        }
        int applied = apply_one(s, it->op, now_ms, &it->answer);
        if (applied < 0) {
            ss_answer_overloaded(it, applied);
            s->stats.dropped_items++;
            if (applied != -EOVERFLOW)
                rc = ss_fail(s, applied);
            continue;
        }
        if (applied == 0)
            continue;
        m->active_ops++;
        rc = record_add(s, it->op, now_ms);
        if (rc)
            rc = ss_fail(s, rc);
    }
    record_finish(s, now_ms);
    if (rc) {
        for (size_t i = 0; i < n; i++)
            if (items[i].rc == 0)
                ss_answer_overloaded(&items[i], rc);
        return rc;
    }
    event_mark_push(m, wal_written(m->wal), m->event_seq);
    m->last_batch_ops = m->active_ops >= ops_before ? m->active_ops - ops_before : n;
    ckpt_maybe(s);
    s->stats.batches++;
    s->stats.items += n;
    s->stats.commits++;
    return 0;
}

int shard_wal_read(struct shard_store *s, struct batch_item *items, size_t n, int64_t now_ms)
{
    struct shard_wal *m = s->wal;
    int rc = ckpt_take(s);
    if (rc == 0)
        rc = s->failed;
    now_ms = clamp_now(m, now_ms);
    for (size_t i = 0; i < n; i++) {
        struct batch_item *it = &items[i];
        ASSERT(it->op->kind == OP_GET_PAYMENT || it->op->kind == OP_BALANCES ||
               it->op->kind == OP_LEDGER);
        struct wal_ctx c;
        ctx_init(&c, s, now_ms);
        it->rc = rc ? rc : engine_apply(&wal_read_store, &c, it->op, now_ms, &it->answer);
        if (it->rc == 0 && c.err)
            it->rc = c.err;
        if (it->rc)
            ss_answer_overloaded(it, it->rc);
    }
    return rc;
}

/* A small batch means the shard is not busy: it writes and syncs the log itself (no
 * hand-off to the syncer and back); a larger one goes to the syncer, so that the next
 * batch is applied while this one syncs. */
void shard_wal_kick(struct shard_store *s)
{
    struct shard_wal *m = s->wal;
    ASSERT(m->wr == NULL);
    if (m->last_batch_ops <= WAL_INLINE_BATCH_MAX && !wal_busy(m->wal)) {
        int rc = wal_write_here(m->wal);
        if (rc)
            ss_fail(s, rc);
        event_marks_take(m);
        return;
    }
    wal_kick(m->wal);
}

int shard_wal_poll(struct shard_store *s)
{
    struct shard_wal *m = s->wal;
    if (s->failed)
        return s->failed;
    int rc = wal_poll(m->wal);
    if (rc)
        return ss_fail(s, rc);
    wal_kick(m->wal);
    event_marks_take(m);
    if ((rc = ckpt_take(s)) != 0)
        return rc;
    ckpt_maybe(s);
    return 0;
}

int shard_wal_sync(struct shard_store *s)
{
    struct shard_wal *m = s->wal;
    while (s->failed == 0 && wal_durable(m->wal) < wal_written(m->wal)) {
        wal_kick(m->wal);
        int rc = log_wait(m, 100);
        if (rc)
            return ss_fail(s, rc);
    }
    event_marks_take(m);
    return s->failed;
}

bool shard_wal_ready(const struct shard_store *s)
{
    const struct shard_wal *m = s->wal;
    if (m->frozen == NULL)
        return true;
    return layer_has_room(m->active, m->active->arena_bytes / 8);
}

int shard_wal_event_fd(const struct shard_store *s)
{
    return wal_event_fd(s->wal->wal);
}

uint64_t shard_wal_written(const struct shard_store *s)
{
    return wal_written(s->wal->wal);
}

uint64_t shard_wal_durable(const struct shard_store *s)
{
    return wal_durable(s->wal->wal);
}

uint64_t shard_wal_event_durable(const struct shard_store *s)
{
    return s->wal->event_durable;
}

uint64_t shard_wal_event_seq(const struct shard_store *s)
{
    return s->wal->event_seq;
}

/* ---- outbox reads ------------------------------------------------------------------ */

int shard_wal_outbox_scan(struct shard_store *s, uint64_t after_seq, size_t max, shard_event_fn fn,
                          void *arg)
{
    struct shard_wal *m = s->wal;
    int rc = ckpt_take(s);
    if (rc)
        return rc;
    MDB_cursor *c = NULL;
    rc = mdb_cursor_open(m->rtxn, s->dbi[SHARD_DBI_OUTBOX], &c);
    if (rc)
        return ss_errno_of(rc);
    uint64_t last = after_seq;
    size_t seen = 0;
    rc = ss_scan_events(c, after_seq, max, fn, arg, &last, &seen);
    mdb_cursor_close(c);
    /* Then the layers, which continue LMDB's sequence. */
    for (uint64_t seq = last + 1; rc == 0 && seen < max && seq != 0; seq++) {
        uint8_t kbuf[8];
        record_put_u64be(kbuf, seq);
        const uint8_t *v;
        size_t n;
        if (layers_get(m, SHARD_DBI_OUTBOX, kbuf, sizeof(kbuf), &v, &n) != 0)
            break;
        struct record_event re;
        ASSERT(record_event_decode(v, n, &re) == 0);
        struct shard_event ev = {.seq = seq,
                                 .topic = re.topic,
                                 .topic_len = re.topic_len,
                                 .key = re.merchant,
                                 .key_len = re.merchant_len,
                                 .value = re.json,
                                 .value_len = re.json_len};
        seen++;
        rc = fn(arg, &ev);
    }
    return rc;
}

/* ---- recovery ----------------------------------------------------------------------- */

struct replay {
    struct shard_store *s;
    int64_t now_ms;
    uint8_t *answer; /* ENGINE_ANSWER_MAX_BYTES, thrown away */
    int err;
};

static int replay_bound(void *arg, const struct op *op)
{
    *(size_t *)arg += op_bound_bytes(op);
    return 0;
}

static int replay_op(void *arg, const struct op *op)
{
    struct replay *r = arg;
    struct answer a = {.body = (char *)r->answer, .cap = ENGINE_ANSWER_MAX_BYTES};
    int rc = apply_one(r->s, op, r->now_ms, &a);
    if (rc < 0) /* it succeeded when it was logged: the state is not what it was */
        return r->err = rc == -EOVERFLOW ? -EBADMSG : rc;
    r->s->wal->active_ops++;
    r->s->wal->replayed_ops++;
    return 0;
}

/* Writes the active layer into LMDB right now (recovery: the layer is full). */
static int ckpt_inline(struct shard_store *s, uint64_t pos)
{
    struct shard_wal *m = s->wal;
    struct ckpt_job job = {.layer = m->active,
                           .pos = pos,
                           .now_ms = m->last_now,
                           .ops = m->active_ops,
                           .mark = s->replicated_pending};
    int rc = ckpt_write(s, &job);
    if (rc)
        return rc;
    mdb_txn_reset(m->rtxn);
    if ((rc = mdb_txn_renew(m->rtxn)) != 0)
        return ss_errno_of(rc);
    overlay_reset(m->active);
    m->active_ops = 0;
    m->ckpt_pos = pos;
    if (job.mark > s->replicated_stored)
        s->replicated_stored = job.mark;
    return 0;
}

static int replay_record(void *arg, const struct walrec_header *h, const uint8_t *rec)
{
    struct replay *r = arg;
    struct shard_wal *m = r->s->wal;
    if (h->type != WALREC_OPS)
        return 0;
    /* A record adds at most a quarter of a layer (record_full): when the layer cannot
     * take it, a checkpoint of the records before it makes room. */
    size_t need = 0;
    if (walrec_ops(rec, h, replay_bound, &need) != 0)
        return r->err = -EBADMSG; /* a whole record whose operations do not decode */
    if (overlay_free_bytes(m->active) < need ||
        overlay_free_entries(m->active) < (size_t)h->n * OVERLAY_OP_ENTRIES) {
        int rc = overlay_empty(m->active) ? -E2BIG : ckpt_inline(r->s, h->pos);
        if (rc)
            return r->err = rc;
    }
    r->now_ms = h->now_ms;
    if (h->now_ms > m->last_now)
        m->last_now = h->now_ms;
    if (h->mark > r->s->replicated_pending)
        r->s->replicated_pending = h->mark;
    int rc = walrec_ops(rec, h, replay_op, r);
    m->replayed_records++;
    return rc ? rc : r->err;
}

static int replay_log(struct shard_store *s, char *why, size_t why_bytes)
{
    struct shard_wal *m = s->wal;
    uint64_t t0 = clock_mono_ns();
    struct replay r = {.s = s, .answer = malloc(ENGINE_ANSWER_MAX_BYTES)};
    if (r.answer == NULL)
        return -ENOMEM;
    int rc = wal_replay(m->wal, replay_record, &r);
    free(r.answer);
    if (rc) {
        snprintf(why, why_bytes, "shard %u: replaying the write-ahead log failed: %s", s->shard,
                 rc == -E2BIG ? "a record does not fit an empty overlay (raise --overlay-mb)"
                              : strerror(rc < 0 ? -rc : EIO));
        return rc < 0 ? rc : -EIO;
    }
    m->replay_ns = clock_mono_ns() - t0;
    m->event_durable = m->event_seq; /* everything replayed is on disk */
    return 0;
}

/* ---- open and close ----------------------------------------------------------------- */

static int layers_init(struct shard_wal *m, size_t arena_bytes)
{
    size_t slots = 1024;
    while (slots < arena_bytes / OVERLAY_BYTES_PER_SLOT)
        slots *= 2;
    for (int i = 0; i < 2; i++) {
        int rc = overlay_init(&m->layers[i], arena_bytes, slots);
        if (rc)
            return rc;
    }
    m->active = &m->layers[0];
    return 0;
}

/* Reads where the log starts to matter and the counters the layers continue. */
static int read_meta(struct shard_store *s, uint64_t *wal_pos)
{
    struct shard_wal *m = s->wal;
    uint64_t now = 0;
    int rc = ss_meta_get(m->rtxn, s, "wal_pos", wal_pos);
    if (rc == MDB_NOTFOUND)
        *wal_pos = 0, rc = 0;
    if (rc == 0 && (rc = ss_meta_get(m->rtxn, s, "now", &now)) == MDB_NOTFOUND)
        rc = 0;
    if (rc == 0 && (rc = ss_meta_get(m->rtxn, s, "seq:event", &m->event_seq)) == MDB_NOTFOUND)
        rc = 0;
    if (rc == 0 &&
        (rc = ss_meta_get(m->rtxn, s, "replicated", &s->replicated_stored)) == MDB_NOTFOUND)
        rc = 0;
    m->last_now = (int64_t)now;
    m->event_durable = m->event_seq;
    s->replicated_pending = s->replicated_stored;
    return ss_errno_of(rc);
}

int shard_wal_open(struct shard_store *s, const struct shard_store_options *opt, char *why,
                   size_t why_bytes)
{
    struct shard_wal *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return -ENOMEM;
    s->wal = m;
    m->ckpt_ops_max = opt->checkpoint_ops ? opt->checkpoint_ops : CHECKPOINT_OPS_DEFAULT;
    m->ckpt_ms = opt->checkpoint_ms ? opt->checkpoint_ms : CHECKPOINT_MS_DEFAULT;
    m->hook = opt->ckpt_hook;
    m->hook_arg = opt->ckpt_hook_arg;
    m->last_ckpt_ms = clock_mono_ns() / 1000000;
    pthread_mutex_init(&m->mu, NULL);
    pthread_cond_init(&m->cv, NULL);
    int rc = layers_init(m, opt->overlay_bytes ? opt->overlay_bytes : OVERLAY_ARENA_DEFAULT_BYTES);
    if (rc) {
        snprintf(why, why_bytes, "shard %u: no memory for the overlay", s->shard);
        return rc;
    }
    if ((rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &m->rtxn)) != 0)
        return ss_errno_of(rc);
    uint64_t from = 0;
    if ((rc = read_meta(s, &from)) != 0) {
        snprintf(why, why_bytes, "shard %u: cannot read the checkpoint: %s", s->shard,
                 strerror(-rc));
        return rc;
    }
    m->ckpt_pos = from;
    struct wal_options wo = {.segment_bytes = opt->wal_segment_bytes,
                             .fault_after_syncs = opt->wal_fault_after_syncs,
                             .fault_errno = opt->wal_fault_errno,
                             .recycle_hook = opt->ckpt_hook ? wal_recycle_hook : NULL,
                             .recycle_hook_arg = m};
    if ((rc = wal_open(&m->wal, s->path, from, &wo, why, why_bytes)) != 0)
        return rc;
    if ((rc = replay_log(s, why, why_bytes)) != 0)
        return rc;
    if (pthread_create(&m->tid, NULL, ckpt_main, s) != 0)
        return -EAGAIN;
    m->started = true;
    return 0;
}

/* Waits for the running checkpoint, if any, and takes it back. */
static int ckpt_wait(struct shard_store *s)
{
    struct shard_wal *m = s->wal;
    while (m->frozen && s->failed == 0) {
        int rc = ckpt_take(s);
        if (rc)
            return rc;
        if (m->frozen) {
            struct timespec ts = {0, 1000000};
            nanosleep(&ts, NULL);
        }
    }
    return s->failed;
}

/*
 * A clean close leaves everything in LMDB: the log synced, the running checkpoint
 * finished, the active layer written by a last one. The next open then replays nothing,
 * and `ringpay check` on a stopped engine sees the whole state. A failed store or a
 * checkpoint that fails here leaves the rest to the next open's replay.
 */
static void ckpt_final(struct shard_store *s)
{
    struct shard_wal *m = s->wal;
    if (m->wr)
        record_finish(s, m->last_now);
    if (shard_wal_sync(s) || ckpt_wait(s))
        return;
    if (!overlay_empty(m->active)) {
        freeze(s);
        ckpt_wait(s);
    }
}

void shard_wal_close(struct shard_store *s)
{
    struct shard_wal *m = s->wal;
    if (m == NULL)
        return;
    if (m->started && s->failed == 0)
        ckpt_final(s);
    if (m->started) {
        pthread_mutex_lock(&m->mu);
        m->stop = true;
        pthread_cond_signal(&m->cv);
        pthread_mutex_unlock(&m->mu);
        pthread_join(m->tid, NULL);
    }
    if (m->wr)
        wal_abandon(m->wal);
    if (m->wal)
        wal_close(m->wal);
    if (m->rtxn)
        mdb_txn_abort(m->rtxn);
    overlay_fini(&m->layers[0]);
    overlay_fini(&m->layers[1]);
    pthread_mutex_destroy(&m->mu);
    pthread_cond_destroy(&m->cv);
    free(m);
    s->wal = NULL;
}

void shard_wal_stats(const struct shard_store *s, struct shard_store_stats *out)
{
    const struct shard_wal *m = s->wal;
    struct wal_stats ws;
    wal_get_stats(m->wal, &ws);
    out->wal_written = wal_written(m->wal);
    out->wal_durable = wal_durable(m->wal);
    out->wal_writes = ws.writes;
    out->wal_syncs = ws.syncs;
    out->wal_bytes = ws.bytes;
    out->wal_sync_ns = ws.sync_ns;
    out->wal_segments_made = ws.segments_made;
    out->wal_segments_recycled = ws.segments_recycled;
    out->checkpoints = __atomic_load_n(&m->checkpoints, __ATOMIC_RELAXED);
    out->checkpoint_ns = __atomic_load_n(&m->checkpoint_ns, __ATOMIC_RELAXED);
    out->checkpoint_ops = __atomic_load_n(&m->checkpoint_ops, __ATOMIC_RELAXED);
    out->checkpoint_bytes = __atomic_load_n(&m->checkpoint_bytes, __ATOMIC_RELAXED);
    out->checkpoint_pos = __atomic_load_n(&m->checkpoint_pos, __ATOMIC_RELAXED);
    out->overlay_bytes = m->active->used + (m->frozen ? m->frozen->used : 0);
    out->overlay_ops = m->active_ops;
    out->overlay_full = __atomic_load_n(&m->overlay_full, __ATOMIC_RELAXED);
    out->replayed_records = m->replayed_records;
    out->replayed_ops = m->replayed_ops;
    out->replay_ns = m->replay_ns;
    out->event_seq = m->event_seq;
    out->event_bytes = m->event_bytes;
    out->event_durable = m->event_durable;
}
