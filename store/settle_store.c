/*
 * settle's LMDB store (store/settle_store.h): the back office's rules (engine/settle.h)
 * over one environment, in transactions that are each all-or-nothing and durable.
 *
 * Layouts. Keys sort by LMDB's byte order: integers in keys are big-endian, dates are
 * uint32 (days since 1970-01-01, never negative here), a merchant is [u8 len][bytes].
 * Values start with RECORD_VERSION; integers in values are little-endian.
 *
 *   DBI           key                                   value
 *   meta          ASCII name                            [ver][7 zero][i64 LE]
 *                 ("format", "seq:batch", "seq:file", "seq:dlq", "seq:outbox",
 *                  "replicated", "horizon", "closed_through")
 *   batches       bkey = [mlen][merchant][cur 3][date]  batch (88 bytes + merchant)
 *   batch_seq     [seq]                                 bkey     (every batch)
 *   batch_merch   [mlen][merchant][seq]                 bkey
 *   batch_date    [date][seq]                           bkey
 *   open_seq      [seq]                                 bkey     (open batches only)
 *   open_date     [date][seq]                           bkey     (open batches only)
 *   dates         [date]                                [ver][0 x7][closed_at i64]
 *                 (dates closed by a request; dates <= meta closed_through are closed)
 *   seen          ekey = [shard u8][event seq u64]      [ver][0 x3][date i32]
 *   seen_exp      [date][ekey]                          empty
 *   captures      payment id (22)                       capture (24 + merchant)
 *   capture_date  [date][payment id]                    empty
 *   adjustments   [bkey][ekey]                          [ver][type][0 x2][src date i32]
 *                                                       [amount i64]
 *   offsets       [tlen][topic][partition u32]          [ver][7 zero][next i64]
 *   dlq           [id]                                  dead letter (48 + strings)
 *   outbox        [seq]                                 outbox message (8 + strings)
 *   recon_files   [file]                                summary (104 bytes)
 *   recon_items   [file][item]                          item (80 + strings)
 *   recon_seen    [file][transaction id]                [line u64] (0: listed missing)
 *   recon_dates   [file][date]                          empty
 *   idem          idempotency key (1..255)              [ver][0][status u16][body len u32]
 *                                                       [created i64][fp 32][body]
 *   idem_exp      [created_ms u64][idempotency key]     empty
 *
 * Invariants: every write happens inside txn_run, whose transaction is committed whole
 * or aborted whole; the first LMDB error of a transaction sticks (t->err) and every
 * later call of it returns that error; in-memory state (stats, the replicated mark, an
 * upload's summary) changes only after a commit succeeded, so a body may run twice
 * (after MAP_FULL) with the same result; a batch is checked before it is written and
 * after it is read; an open batch has exactly its two open-index entries. An apply
 * transaction keeps what it read and changed (batches, partition offsets, closed dates,
 * its cursors) in memory for its own body only (txn_cache): written before the body
 * ends, never carried into another transaction.
 */
#include "store/settle_store.h"

#include <errno.h>
#include <fcntl.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/apply.h"
#include "engine/assert.h"
#include "engine/ids.h"
#include "engine/json.h"
#include "engine/limits.h"
#include "store/dirlock.h"
#include "store/manifest.h"
#include "store/record.h"

#define SETTLE_FORMAT_VERSION 1
#define SETTLE_MANIFEST       "MANIFEST"
#define SETTLE_MANIFEST_TEXT  "ringpay-settle 1\n"

enum sdbi {
    D_META,
    D_BATCHES,
    D_BATCH_SEQ,
    D_BATCH_MERCH,
    D_BATCH_DATE,
    D_OPEN_SEQ,
    D_OPEN_DATE,
    D_DATES,
    D_SEEN,
    D_SEEN_EXP,
    D_CAPTURES,
    D_CAPTURE_DATE,
    D_ADJUST,
    D_OFFSETS,
    D_DLQ,
    D_OUTBOX,
    D_RECON_FILES,
    D_RECON_ITEMS,
    D_RECON_SEEN,
    D_RECON_DATES,
    D_IDEM,
    D_IDEM_EXP,
    D_COUNT
};

static const char *const dbi_names[D_COUNT] = {
    "meta",        "batches",     "batch_seq", "batch_merch", "batch_date",  "open_seq",
    "open_date",   "dates",       "seen",      "seen_exp",    "captures",    "capture_date",
    "adjustments", "offsets",     "dlq",       "outbox",      "recon_files", "recon_items",
    "recon_seen",  "recon_dates", "idem",      "idem_exp"};

struct txn_cache;

struct settle_store {
    MDB_env *env;
    MDB_dbi dbi[D_COUNT];
    struct dirlock lock;
    bool shared;
    int publisher_fd; /* shared stores: DIR/PUBLISHER, locked while we publish; -1 */
    char data_dir[STORE_PATH_MAX];
    size_t map_bytes, map_max_bytes;
    uint32_t retention_days;
    uint64_t replicated_pending, replicated_stored;
    bool trim_pending;
    int failed;
    unsigned fault_after_puts;
    int fault_errno, fault_persistent;
    unsigned fault_after_commits;
    int fault_commit_errno;
    struct settle_store_stats stats;
    struct txn_cache *cache; /* apply transactions' working memory (allocated at open) */
    char path[STORE_PATH_MAX];
    /* idempotency (section "Idempotency"): the record the running *_idem call writes in
     * its final transaction, at which point, and whether a commit wrote it */
    int64_t idem_ttl_ms;
    const struct settle_idem_put *idem;
    int idem_at;
    bool idem_written;
};

/* One write (or read) transaction. */
struct stx {
    struct settle_store *s;
    MDB_txn *txn;
    int err; /* first error, sticky */
    bool writable;
    int64_t now_ms;
    struct settle_calendar *cal; /* NULL: no horizon work in this transaction */
    int32_t horizon;             /* read (and advanced) at the start */
    int64_t closed_through;      /* dates <= it are closed */
    struct settle_store_stats d; /* counters to add on commit */
    bool trim_done;
    bool idem_put;       /* this transaction wrote the armed idempotency record */
    struct txn_cache *c; /* apply transactions only (else NULL): see txn_cache */
};

typedef void (*stx_body_fn)(struct stx *t, void *arg);

/* ---- Small codecs ------------------------------------------------------------------- */

#define BKEY_MAX      (1 + MERCHANT_ID_MAX_BYTES + CURRENCY_BYTES + 4)
#define EKEY_LEN      9
#define BATCH_FIXED   88
#define BATCH_MAX     (BATCH_FIXED + MERCHANT_ID_MAX_BYTES)
#define CAPTURE_FIXED 24

static void put_u32be(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_u32be(const uint8_t *p)
{
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

/* memcpy that allows (NULL, 0): absent keys, values and reasons are copied as nothing. */
static void put_bytes(uint8_t *dst, const void *src, size_t n)
{
    if (n)
        memcpy(dst, src, n);
}

static size_t bkey_encode(uint8_t *k, const struct settle_key *key)
{
    ASSERT(key->date >= 0);
    size_t n = record_key_merchant(k, key->merchant_id, key->merchant_id_len);
    memcpy(k + n, key->currency, CURRENCY_BYTES);
    put_u32be(k + n + CURRENCY_BYTES, (uint32_t)key->date);
    return n + CURRENCY_BYTES + 4;
}

static int bkey_decode(const void *data, size_t len, struct settle_key *key)
{
    const uint8_t *k = data;
    const char *m;
    size_t mlen;
    size_t n = record_key_split(k, len, &m, &mlen);
    if (n == 0 || len != n + CURRENCY_BYTES + 4 || !record_currency_valid((const char *)k + n))
        return -EBADMSG;
    uint32_t date = get_u32be(k + n + CURRENCY_BYTES);
    if (date > SETTLE_DATE_MAX)
        return -EBADMSG;
    settle_key_set(key, m, mlen, (const char *)k + n, (int32_t)date);
    return 0;
}

static void ekey_encode(uint8_t k[EKEY_LEN], const struct settle_event *ev)
{
    ASSERT(ev->event_shard < SHARDS_MAX && ev->event_seq >= 1);
    k[0] = (uint8_t)ev->event_shard;
    record_put_u64be(k + 1, ev->event_seq);
}

static size_t batch_encode(uint8_t *out, const struct settle_batch *b)
{
    settle_batch_check(b);
    memset(out, 0, BATCH_FIXED);
    out[0] = RECORD_VERSION;
    out[1] = b->closed ? 1 : 0;
    out[2] = b->key.merchant_id_len;
    memcpy(out + 4, b->key.currency, CURRENCY_BYTES);
    record_put_u32le(out + 8, (uint32_t)b->key.date);
    const int64_t v[9] = {b->gross,         b->refunds,      b->adjustments,
                          b->capture_count, b->refund_count, b->adjustment_count,
                          b->created_at_ms, b->closed_at_ms, (int64_t)b->seq};
    for (int i = 0; i < 9; i++)
        record_put_u64le(out + 16 + 8 * i, (uint64_t)v[i]);
    memcpy(out + BATCH_FIXED, b->key.merchant_id, b->key.merchant_id_len);
    return BATCH_FIXED + b->key.merchant_id_len;
}

static int batch_decode(const void *data, size_t len, struct settle_batch *b)
{
    const uint8_t *p = data;
    if (len < BATCH_FIXED || p[0] != RECORD_VERSION || p[1] > 1 || p[3] || p[7] || p[12] || p[13] ||
        p[14] || p[15] || len != (size_t)BATCH_FIXED + p[2])
        return -EBADMSG;
    memset(b, 0, sizeof(*b));
    uint32_t date = record_get_u32le(p + 8);
    if (!record_merchant_valid((const char *)p + BATCH_FIXED, p[2]) ||
        !record_currency_valid((const char *)p + 4) || date > SETTLE_DATE_MAX)
        return -EBADMSG;
    settle_key_set(&b->key, (const char *)p + BATCH_FIXED, p[2], (const char *)p + 4,
                   (int32_t)date);
    b->closed = p[1];
    int64_t v[9];
    for (int i = 0; i < 9; i++)
        v[i] = (int64_t)record_get_u64le(p + 16 + 8 * i);
    b->gross = v[0];
    b->refunds = v[1];
    b->adjustments = v[2];
    b->capture_count = v[3];
    b->refund_count = v[4];
    b->adjustment_count = v[5];
    b->created_at_ms = v[6];
    b->closed_at_ms = v[7];
    b->seq = (uint64_t)v[8];
    return settle_batch_valid(b) && b->seq >= 1 ? 0 : -EBADMSG;
}

static size_t capture_encode(uint8_t *out, const struct settle_capture *c)
{
    memset(out, 0, CAPTURE_FIXED);
    out[0] = RECORD_VERSION;
    out[1] = c->merchant_id_len;
    memcpy(out + 4, c->currency, CURRENCY_BYTES);
    record_put_u64le(out + 8, (uint64_t)c->amount);
    record_put_u32le(out + 16, (uint32_t)c->value_date);
    memcpy(out + CAPTURE_FIXED, c->merchant_id, c->merchant_id_len);
    return CAPTURE_FIXED + c->merchant_id_len;
}

static int capture_decode(const void *data, size_t len, const char *pid, struct settle_capture *c)
{
    const uint8_t *p = data;
    if (len < CAPTURE_FIXED || p[0] != RECORD_VERSION || len != (size_t)CAPTURE_FIXED + p[1])
        return -EBADMSG;
    memset(c, 0, sizeof(*c));
    memcpy(c->payment_id, pid, ID_BYTES);
    c->merchant_id_len = p[1];
    memcpy(c->merchant_id, p + CAPTURE_FIXED, p[1]);
    memcpy(c->currency, p + 4, CURRENCY_BYTES);
    c->amount = (int64_t)record_get_u64le(p + 8);
    c->value_date = (int32_t)record_get_u32le(p + 16);
    if (!record_merchant_valid(c->merchant_id, c->merchant_id_len) ||
        !record_currency_valid(c->currency) || c->amount < AMOUNT_MIN || c->amount > AMOUNT_MAX ||
        c->value_date < SETTLE_DATE_MIN || c->value_date > SETTLE_DATE_MAX)
        return -EBADMSG;
    return 0;
}

/* ---- Environment ------------------------------------------------------------------- */

static int errno_of(int mdb_rc)
{
    switch (mdb_rc) {
    case 0:
        return 0;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
        return -ENOSPC;
    case MDB_NOTFOUND:
        return -ENOENT;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        return -EBADMSG;
    default:
        if (mdb_rc > 0)
            return -mdb_rc;
        return mdb_rc > -4096 ? mdb_rc : -EIO;
    }
}

static int meta_get(struct stx *t, const char *name, int64_t *v)
{
    MDB_val k = {.mv_size = strlen(name), .mv_data = (void *)name}, val;
    int rc = mdb_get(t->txn, t->s->dbi[D_META], &k, &val);
    if (rc)
        return rc;
    return record_i64_decode(val.mv_data, val.mv_size, v) ? MDB_CORRUPTED : 0;
}

/* Records an LMDB result in the transaction; the first error sticks. */
static int tfail(struct stx *t, int rc)
{
    if (rc && t->err == 0)
        t->err = rc;
    return rc;
}

static MDB_cursor *hot_cursor(struct stx *t, int dbi);

/* The test-only fault injection of a put: 0, or the error it injects (sticky). */
static int put_fault(struct stx *t)
{
    struct settle_store *s = t->s;
    if (s->fault_errno) {
        if (s->fault_after_puts > 0) {
            s->fault_after_puts--;
        } else {
            int e = s->fault_errno;
            if (!s->fault_persistent)
                s->fault_errno = 0;
            return tfail(t, e);
        }
    }
    return 0;
}

/* mdb_put (through the table's hot cursor when it has one) with the test-only fault
 * injection: 0 or the sticky error. With `exists`, MDB_KEYEXIST is no error: it sets
 * *exists (the stored value is then in *val). */
static int tput_val(struct stx *t, int dbi, const void *k, size_t klen, MDB_val *val,
                    unsigned flags, bool *exists)
{
    ASSERT(t->writable);
    if (t->err)
        return t->err;
    if (put_fault(t))
        return t->err;
    MDB_val key = {.mv_size = klen, .mv_data = (void *)k};
    MDB_cursor *c = hot_cursor(t, dbi);
    int rc =
        c ? mdb_cursor_put(c, &key, val, flags) : mdb_put(t->txn, t->s->dbi[dbi], &key, val, flags);
    if (exists != NULL && rc == MDB_KEYEXIST) {
        *exists = true;
        return 0;
    }
    return tfail(t, rc);
}

static int tput(struct stx *t, int dbi, const void *k, size_t klen, const void *v, size_t vlen,
                unsigned flags)
{
    MDB_val val = {.mv_size = vlen, .mv_data = (void *)v};
    return tput_val(t, dbi, k, klen, &val, flags, NULL);
}

/* Inserts k -> v unless k exists (one search for both): 0 when inserted, 1 with the
 * stored value in *old (nothing written), or the sticky error. */
static int tput_new(struct stx *t, int dbi, const void *k, size_t klen, const void *v, size_t vlen,
                    MDB_val *old)
{
    *old = (MDB_val){.mv_size = vlen, .mv_data = (void *)v};
    bool exists = false;
    int rc = tput_val(t, dbi, k, klen, old, MDB_NOOVERWRITE, &exists);
    return rc ? rc : exists ? 1 : 0;
}

/* Reserves vlen bytes for key k and returns them in *out (MDB_RESERVE). */
static int treserve(struct stx *t, int dbi, const void *k, size_t klen, size_t vlen, void **out)
{
    ASSERT(t->writable);
    if (t->err)
        return t->err;
    MDB_val key = {.mv_size = klen, .mv_data = (void *)k};
    MDB_val val = {.mv_size = vlen, .mv_data = NULL};
    int rc = tfail(t, mdb_put(t->txn, t->s->dbi[dbi], &key, &val, MDB_RESERVE));
    if (rc == 0)
        *out = val.mv_data;
    return rc;
}

static int tdel(struct stx *t, int dbi, const void *k, size_t klen)
{
    if (t->err)
        return t->err;
    MDB_val key = {.mv_size = klen, .mv_data = (void *)k};
    int rc = mdb_del(t->txn, t->s->dbi[dbi], &key, NULL);
    return rc == MDB_NOTFOUND ? 0 : tfail(t, rc);
}

/* 0 and *v, -ENOENT, or the sticky error. */
static int tget(struct stx *t, int dbi, const void *k, size_t klen, MDB_val *v)
{
    if (t->err)
        return t->err;
    MDB_val key = {.mv_size = klen, .mv_data = (void *)k};
    MDB_cursor *c = hot_cursor(t, dbi);
    int rc = c ? mdb_cursor_get(c, &key, v, MDB_SET) : mdb_get(t->txn, t->s->dbi[dbi], &key, v);
    if (rc == MDB_NOTFOUND)
        return -ENOENT;
    return tfail(t, rc);
}

static int meta_put(struct stx *t, const char *name, int64_t v)
{
    uint8_t buf[RECORD_I64_BYTES];
    record_i64_encode(buf, v);
    return tput(t, D_META, name, strlen(name), buf, sizeof(buf), 0);
}

/* The next value of counter `name` (1, 2, ...). */
static int meta_next(struct stx *t, const char *name, uint64_t *out)
{
    int64_t v = 0;
    if (t->err)
        return t->err;
    int rc = meta_get(t, name, &v);
    if (rc && rc != MDB_NOTFOUND)
        return tfail(t, rc);
    ASSERT(v >= 0 && v < INT64_MAX);
    if ((rc = meta_put(t, name, v + 1)))
        return rc;
    *out = (uint64_t)v + 1;
    return 0;
}

static int cursor_open(struct stx *t, int dbi, MDB_cursor **c)
{
    if (t->err)
        return t->err;
    return tfail(t, mdb_cursor_open(t->txn, t->s->dbi[dbi], c));
}

/* ---- Manifest and open --------------------------------------------------------------- */

/* Checks DIR/MANIFEST, or writes it atomically on first use. */
static int manifest_check(const char *dir, char *why, size_t why_bytes)
{
    char path[STORE_PATH_MAX], tmp[STORE_PATH_MAX], buf[64];
    snprintf(path, sizeof(path), "%s/%s", dir, SETTLE_MANIFEST);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd >= 0) {
        ssize_t n = read(fd, buf, sizeof(buf) - 1);
        close(fd);
        if (n == (ssize_t)strlen(SETTLE_MANIFEST_TEXT) &&
            memcmp(buf, SETTLE_MANIFEST_TEXT, (size_t)n) == 0)
            return 0;
        snprintf(why, why_bytes,
                 "%s is not a settle data directory of this version (its %s "
                 "does not say \"ringpay-settle 1\")",
                 dir, SETTLE_MANIFEST);
        return -EINVAL;
    }
    if (errno != ENOENT) {
        snprintf(why, why_bytes, "cannot read %s: %s", path, strerror(errno));
        return -errno;
    }
    snprintf(tmp, sizeof(tmp), "%s/%s.tmp", dir, SETTLE_MANIFEST);
    fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    size_t len = strlen(SETTLE_MANIFEST_TEXT);
    int rc = fd < 0 ? -errno : 0;
    if (rc == 0 && write(fd, SETTLE_MANIFEST_TEXT, len) != (ssize_t)len)
        rc = -EIO;
    if (rc == 0 && fsync(fd))
        rc = -errno;
    if (fd >= 0)
        close(fd);
    if (rc == 0 && rename(tmp, path))
        rc = -errno;
    if (rc == 0)
        rc = store_manifest_sync_dir(dir);
    if (rc)
        snprintf(why, why_bytes, "cannot write %s: %s", path, strerror(-rc));
    return rc;
}

/* mdb_txn_begin, adopting the map another member of a shared store grew beyond ours
 * (MDB_MAP_RESIZED: our next transaction sees its data only through a map as large). */
static int txn_begin(struct settle_store *s, unsigned flags, MDB_txn **txn)
{
    int rc = mdb_txn_begin(s->env, NULL, flags, txn);
    if (rc != MDB_MAP_RESIZED)
        return rc;
    MDB_envinfo info;
    if ((rc = mdb_env_set_mapsize(s->env, 0)) || (rc = mdb_env_info(s->env, &info)))
        return rc;
    s->map_bytes = info.me_mapsize;
    if (s->map_max_bytes < s->map_bytes)
        s->map_max_bytes = s->map_bytes;
    s->stats.map_adopted++;
    return mdb_txn_begin(s->env, NULL, flags, txn);
}

static int open_dbis(struct settle_store *s)
{
    MDB_txn *txn = NULL;
    int rc = txn_begin(s, 0, &txn);
    if (rc)
        return rc;
    for (int i = 0; i < D_COUNT && rc == 0; i++)
        rc = mdb_dbi_open(txn, dbi_names[i], MDB_CREATE, &s->dbi[i]);
    struct stx t = {.s = s, .txn = txn, .writable = true};
    int64_t v = 0;
    if (rc == 0) {
        rc = meta_get(&t, "format", &v);
        if (rc == MDB_NOTFOUND)
            rc = meta_put(&t, "format", SETTLE_FORMAT_VERSION);
        else if (rc == 0 && v != SETTLE_FORMAT_VERSION)
            rc = MDB_VERSION_MISMATCH;
    }
    if (rc == 0) {
        rc = meta_get(&t, "replicated", &v);
        s->replicated_stored = rc == 0 ? (uint64_t)v : 0;
        rc = rc == MDB_NOTFOUND ? 0 : rc;
    }
    if (rc) {
        mdb_txn_abort(txn);
        return rc;
    }
    s->replicated_pending = s->replicated_stored;
    s->trim_pending = true;
    return mdb_txn_commit(txn);
}

static int env_open(struct settle_store *s)
{
    int rc = mdb_env_create(&s->env);
    if (rc)
        return rc;
    if ((rc = mdb_env_set_maxdbs(s->env, D_COUNT)) ||
        (rc = mdb_env_set_mapsize(s->env, s->map_bytes)))
        goto out_close_env;
    /* The default durable commit: data fdatasync, then the meta page synced. */
    rc = mdb_env_open(s->env, s->path, MDB_NOTLS | MDB_NORDAHEAD, 0600);
    if (rc)
        goto out_close_env;
    unsigned got = 0;
    if ((rc = mdb_env_get_flags(s->env, &got)))
        goto out_close_env;
    ASSERT((got & (MDB_NOSYNC | MDB_NOMETASYNC | MDB_MAPASYNC | MDB_WRITEMAP)) == 0);
    MDB_envinfo info;
    if ((rc = mdb_env_info(s->env, &info)))
        goto out_close_env;
    s->map_bytes = info.me_mapsize;
    if ((rc = open_dbis(s)))
        goto out_close_env;
    /* State a killed process left in the page cache is on disk before anything else. */
    if ((rc = mdb_env_sync(s->env, 1)))
        goto out_close_env;
    return 0;

out_close_env:
    mdb_env_close(s->env);
    s->env = NULL;
    return rc;
}

static void options_apply(struct settle_store *s, const struct settle_store_options *o)
{
    s->map_bytes = o && o->map_bytes ? o->map_bytes : SETTLE_MAP_DEFAULT_BYTES;
    s->map_max_bytes = o && o->map_max_bytes ? o->map_max_bytes : SETTLE_MAP_MAX_BYTES;
    if (s->map_max_bytes < s->map_bytes)
        s->map_max_bytes = s->map_bytes;
    s->retention_days = o && o->retention_days ? o->retention_days : SETTLE_RETENTION_DAYS_DEFAULT;
    s->idem_ttl_ms = o && o->idem_ttl_ms > 0 ? o->idem_ttl_ms : SETTLE_IDEM_TTL_MS;
    if (o) {
        s->fault_after_puts = o->fault_after_puts;
        s->fault_errno = o->fault_errno;
        s->fault_persistent = o->fault_persistent;
        s->fault_after_commits = o->fault_after_commits;
        s->fault_commit_errno = o->fault_commit_errno;
    }
}

static int txn_run(struct settle_store *s, struct settle_calendar *cal, int64_t now_ms,
                   stx_body_fn body, void *arg);
static void recover_uploads(struct stx *t, void *arg);
static void stats_init(struct settle_store *s);
static struct txn_cache *txn_cache_alloc(void);

int settle_store_open(struct settle_store **out, const char *data_dir,
                      const struct settle_store_options *opt, char *why, size_t why_bytes)
{
    ASSERT(out != NULL && data_dir != NULL && why != NULL);
    *out = NULL;
    if (opt && opt->retention_days &&
        (opt->retention_days < SETTLE_RETENTION_DAYS_MIN ||
         opt->retention_days > SETTLE_RETENTION_DAYS_MAX)) {
        snprintf(why, why_bytes, "retention must be %d..%d days", SETTLE_RETENTION_DAYS_MIN,
                 SETTLE_RETENTION_DAYS_MAX);
        return -EINVAL;
    }
    struct settle_store *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->cache = txn_cache_alloc();
    if (s->cache == NULL) {
        free(s);
        return -ENOMEM;
    }
    s->lock.fd = -1;
    s->publisher_fd = -1;
    s->shared = opt && opt->shared;
    snprintf(s->data_dir, sizeof(s->data_dir), "%s", data_dir);
    options_apply(s, opt);
    bool alone = true;
    int rc = 0;
    if (mkdir(data_dir, 0700) && errno != EEXIST) {
        rc = -errno;
        snprintf(why, why_bytes, "cannot create %s: %s", data_dir, strerror(errno));
        goto out_free;
    }
    rc = s->shared ? dirlock_acquire_shared(&s->lock, data_dir, &alone, why, why_bytes)
                   : dirlock_acquire(&s->lock, data_dir, true, why, why_bytes);
    if (rc)
        goto out_free;
    if ((rc = manifest_check(data_dir, why, why_bytes)))
        goto out_unlock;
    snprintf(s->path, sizeof(s->path), "%s/store", data_dir);
    if (mkdir(s->path, 0700) && errno != EEXIST) {
        rc = -errno;
        snprintf(why, why_bytes, "cannot create %s: %s", s->path, strerror(errno));
        goto out_unlock;
    }
    if ((rc = store_manifest_sync_dir(data_dir)) || (rc = errno_of(env_open(s)))) {
        snprintf(why, why_bytes, "cannot open the store in %s: %s", s->path, strerror(-rc));
        goto out_unlock;
    }
    if ((rc = store_manifest_sync_dir(s->path)))
        goto out_close_env;
    stats_init(s);
    if (alone && (rc = txn_run(s, NULL, 0, recover_uploads, NULL))) {
        snprintf(why, why_bytes, "cannot recover %s: %s", s->path, strerror(-rc));
        goto out_close_env;
    }
    /* Alone, a member held the lock exclusively for the recovery: now it shares it. */
    if (s->shared && alone && (rc = dirlock_share(&s->lock, data_dir, why, why_bytes)))
        goto out_close_env;
    *out = s;
    return 0;

out_close_env:
    mdb_env_close(s->env);
out_unlock:
    dirlock_release(&s->lock);
out_free:
    free(s->cache);
    free(s);
    return rc;
}

void settle_store_close(struct settle_store *s)
{
    if (s == NULL)
        return;
    mdb_env_close(s->env);
    if (s->publisher_fd >= 0)
        close(s->publisher_fd);
    dirlock_release(&s->lock);
    free(s->cache);
    free(s);
}

int settle_store_failed(const struct settle_store *s)
{
    ASSERT(s != NULL);
    return s->failed;
}

static void stats_init(struct settle_store *s)
{
    MDB_txn *txn = NULL;
    MDB_stat st;
    if (txn_begin(s, MDB_RDONLY, &txn))
        return;
    if (mdb_stat(txn, s->dbi[D_OPEN_SEQ], &st) == 0)
        s->stats.open_batches = st.ms_entries;
    struct stx t = {.s = s, .txn = txn};
    int64_t v;
    if (meta_get(&t, "seq:outbox", &v) == 0)
        s->stats.outbox_seq = (uint64_t)v;
    s->stats.horizon = meta_get(&t, "horizon", &v) == 0 ? (int32_t)v : SETTLE_DATE_MIN;
    mdb_txn_abort(txn);
}

void settle_store_get_stats(const struct settle_store *s, struct settle_store_stats *out)
{
    ASSERT(s != NULL && out != NULL);
    *out = s->stats;
    out->map_bytes = s->map_bytes;
    out->replicated_seq = s->replicated_stored;
    if (!s->shared)
        return;
    /* Other members change these too: read them (a failed read keeps our own). */
    MDB_txn *txn = NULL;
    MDB_stat st;
    if (mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn))
        return;
    if (mdb_stat(txn, s->dbi[D_OPEN_SEQ], &st) == 0)
        out->open_batches = st.ms_entries;
    struct stx t = {.s = (struct settle_store *)s, .txn = txn};
    int64_t v;
    if (meta_get(&t, "seq:outbox", &v) == 0)
        out->outbox_seq = (uint64_t)v;
    mdb_txn_abort(txn);
}

bool settle_store_shared(const struct settle_store *s)
{
    ASSERT(s != NULL);
    return s->shared;
}

bool settle_store_publisher(struct settle_store *s, bool *took)
{
    ASSERT(s != NULL && took != NULL);
    *took = false;
    if (!s->shared || s->publisher_fd >= 0)
        return true;
    char path[STORE_PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/PUBLISHER", s->data_dir);
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0)
        return false;
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        close(fd);
        return false;
    }
    /* The mark the previous publisher stored: resume after it. */
    MDB_txn *txn = NULL;
    int64_t v = 0;
    if (txn_begin(s, MDB_RDONLY, &txn)) {
        close(fd);
        return false;
    }
    struct stx t = {.s = s, .txn = txn};
    int rc = meta_get(&t, "replicated", &v);
    mdb_txn_abort(txn);
    if (rc && rc != MDB_NOTFOUND) {
        close(fd);
        return false;
    }
    s->replicated_stored = s->replicated_pending = rc == 0 ? (uint64_t)v : 0;
    s->trim_pending = true;
    s->publisher_fd = fd;
    *took = true;
    return true;
}

/* ---- Write transactions ---------------------------------------------------------------- */

static int fault_take(unsigned *after, int *err, int persistent)
{
    if (*err == 0)
        return 0;
    if (*after > 0) {
        (*after)--;
        return 0;
    }
    int e = *err;
    if (!persistent)
        *err = 0;
    return e;
}

static int map_grow(struct settle_store *s)
{
    if (s->map_bytes >= s->map_max_bytes)
        return MDB_MAP_FULL;
    size_t next = s->map_bytes * 2;
    if (next > s->map_max_bytes || next < s->map_bytes)
        next = s->map_max_bytes;
    int rc = mdb_env_set_mapsize(s->env, next);
    if (rc)
        return rc;
    MDB_envinfo info;
    if ((rc = mdb_env_info(s->env, &info)))
        return rc;
    ASSERT(info.me_mapsize >= next);
    s->map_bytes = info.me_mapsize;
    s->stats.map_grows++;
    return 0;
}

/* The horizon: today minus the retention, never backwards. */
static void horizon_advance(struct stx *t)
{
    int64_t v = SETTLE_DATE_MIN;
    int rc = meta_get(t, "horizon", &v);
    if (rc && rc != MDB_NOTFOUND) {
        tfail(t, rc);
        return;
    }
    t->horizon = (int32_t)v;
    int32_t today;
    if (t->cal == NULL || settle_business_date(t->cal, t->now_ms, &today))
        return;
    int32_t h = today - (int32_t)t->s->retention_days;
    if (h > t->horizon && meta_put(t, "horizon", h) == 0)
        t->horizon = h;
}

/* Deletes up to *budget entries of index dbi (keys [date][id]) dated before the horizon,
 * and their records in main (keyed by the id). */
static void expire_index(struct stx *t, int dbi, int main, size_t *budget)
{
    MDB_cursor *c = NULL;
    if (*budget == 0 || cursor_open(t, dbi, &c))
        return;
    MDB_val k, v;
    int rc;
    while (*budget > 0 && (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) == 0) {
        if (k.mv_size <= 4) {
            rc = MDB_CORRUPTED;
            break;
        }
        if ((int64_t)get_u32be(k.mv_data) >= t->horizon)
            break;
        MDB_val id = {.mv_size = k.mv_size - 4, .mv_data = (uint8_t *)k.mv_data + 4};
        rc = mdb_del(t->txn, t->s->dbi[main], &id, NULL);
        if ((rc && rc != MDB_NOTFOUND) || (rc = mdb_cursor_del(c, 0)))
            break;
        (*budget)--;
        t->d.expired++;
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND)
        tfail(t, rc);
}

/* Deletes outbox messages at or below the replicated mark, a bounded number. */
static void outbox_trim(struct stx *t, uint64_t mark)
{
    MDB_cursor *c = NULL;
    t->trim_done = false;
    if (cursor_open(t, D_OUTBOX, &c))
        return;
    MDB_val k, v;
    int rc;
    size_t trimmed = 0;
    while ((rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) == 0) {
        if (k.mv_size != 8) {
            rc = MDB_CORRUPTED;
            break;
        }
        if (record_get_u64be(k.mv_data) > mark) {
            rc = MDB_NOTFOUND;
            break;
        }
        if (trimmed == SHARD_OUTBOX_TRIM_MAX)
            break;
        if ((rc = mdb_cursor_del(c, 0)))
            break;
        trimmed++;
    }
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND)
        t->trim_done = true;
    else if (rc)
        tfail(t, rc);
}

/* ---- Idempotency ------------------------------------------------------------------------ */

/* Where a *_idem call's record is written: the transaction that completes it. */
enum idem_at { IDEM_AT_NONE = 0, IDEM_AT_CLOSE, IDEM_AT_UPLOAD, IDEM_AT_REMATCH, IDEM_AT_DLQ };

#define IDEM_FIXED   48
#define IDEM_KEY_MAX (8 + IDEMPOTENCY_KEY_MAX_BYTES)

_Static_assert(SETTLE_IDEM_BODY_MAX_BYTES <= UINT32_MAX, "a body length fits its field");

static size_t idem_exp_key(uint8_t *k, int64_t created_ms, const char *key, size_t key_len)
{
    record_put_u64be(k, (uint64_t)created_ms);
    memcpy(k + 8, key, key_len);
    return 8 + key_len;
}

/* Writes a record and its expiry entry; the key must be new. */
static void idem_write(struct stx *t, const char *key, size_t key_len, const uint8_t *fp,
                       uint16_t status, const char *body, size_t len)
{
    ASSERT(key_len >= 1 && key_len <= IDEMPOTENCY_KEY_MAX_BYTES);
    ASSERT(len <= SETTLE_IDEM_BODY_MAX_BYTES && status >= 200 && status <= 599);
    ASSERT(t->now_ms > 0);
    uint8_t *v;
    MDB_val old;
    /* The caller looked the key up with nothing in between on the one writing thread;
     * only another member of a shared store can have stored it since (the same request
     * sent to two members at once: both did the work, as after a crash between the
     * work and its record). The first record stays: later replays answer it. */
    int rc = tget(t, D_IDEM, key, key_len, &old);
    if (rc == 0 && t->s->shared)
        return;
    if (rc != -ENOENT) {
        ASSERT(t->err != 0);
        return;
    }
    if (treserve(t, D_IDEM, key, key_len, IDEM_FIXED + len, (void **)&v))
        return;
    memset(v, 0, IDEM_FIXED);
    v[0] = RECORD_VERSION;
    v[2] = (uint8_t)status;
    v[3] = (uint8_t)(status >> 8);
    record_put_u32le(v + 4, (uint32_t)len);
    record_put_u64le(v + 8, (uint64_t)t->now_ms);
    memcpy(v + 16, fp, SETTLE_IDEM_FP_BYTES);
    put_bytes(v + IDEM_FIXED, body, len);
    uint8_t xk[IDEM_KEY_MAX];
    tput(t, D_IDEM_EXP, xk, idem_exp_key(xk, t->now_ms, key, key_len), "", 0, 0);
}

static int idem_decode(const void *data, size_t size, struct settle_idem_record *out)
{
    const uint8_t *v = data;
    if (size < IDEM_FIXED || v[0] != RECORD_VERSION)
        return -EBADMSG;
    uint32_t len = record_get_u32le(v + 4);
    uint16_t status = (uint16_t)(v[2] | v[3] << 8);
    if (len > SETTLE_IDEM_BODY_MAX_BYTES || size != IDEM_FIXED + (size_t)len || status < 200 ||
        status > 599)
        return -EBADMSG;
    out->status = status;
    out->created_at_ms = (int64_t)record_get_u64le(v + 8);
    memcpy(out->fp, v + 16, SETTLE_IDEM_FP_BYTES);
    out->body_len = len;
    put_bytes((uint8_t *)out->body, v + IDEM_FIXED, len);
    return 0;
}

/* The final transaction of a *_idem call writes its record, the answer rendered from
 * the results. Other transactions (and other calls' bodies) pass. */
static void idem_emit(struct stx *t, enum idem_at at, const struct settle_idem_result *res)
{
    const struct settle_idem_put *p = t->s->idem;
    if (p == NULL || t->s->idem_at != (int)at || t->err)
        return;
    char body[SETTLE_IDEM_BODY_MAX_BYTES];
    size_t len = p->render(p->arg, res, body, sizeof(body));
    ASSERT(len <= sizeof(body)); /* every stored answer fits by construction */
    idem_write(t, p->key, p->key_len, p->fp, p->status, body, len);
    if (t->err == 0)
        t->idem_put = true;
}

/* Deletes records created before now - ttl, oldest first, a bounded number. */
static void idem_expire(struct stx *t)
{
    int64_t cutoff = t->now_ms - t->s->idem_ttl_ms;
    MDB_cursor *c = NULL;
    if (t->now_ms <= 0 || cutoff <= 0 || cursor_open(t, D_IDEM_EXP, &c))
        return;
    MDB_val k, v;
    int rc;
    size_t n = 0;
    while (n < SETTLE_IDEM_EXPIRE_MAX && (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) == 0) {
        if (k.mv_size <= 8 || k.mv_size > IDEM_KEY_MAX) {
            rc = MDB_CORRUPTED;
            break;
        }
        if ((int64_t)record_get_u64be(k.mv_data) >= cutoff)
            break;
        MDB_val key = {.mv_size = k.mv_size - 8, .mv_data = (uint8_t *)k.mv_data + 8};
        rc = mdb_del(t->txn, t->s->dbi[D_IDEM], &key, NULL);
        if ((rc && rc != MDB_NOTFOUND) || (rc = mdb_cursor_del(c, 0)))
            break;
        n++;
    }
    mdb_cursor_close(c);
    t->d.idem_expired += n;
    if (rc && rc != MDB_NOTFOUND)
        tfail(t, rc);
}

/* Housekeeping at the end of every write transaction. */
static void housekeep(struct stx *t)
{
    struct settle_store *s = t->s;
    t->trim_done = !s->trim_pending;
    if (s->replicated_pending > s->replicated_stored) {
        int64_t stored = 0; /* never backwards, whoever wrote it (shared stores) */
        int rc = meta_get(t, "replicated", &stored);
        if (rc && rc != MDB_NOTFOUND)
            tfail(t, rc);
        else if ((uint64_t)stored < s->replicated_pending)
            meta_put(t, "replicated", (int64_t)s->replicated_pending);
    }
    if (s->trim_pending || s->replicated_pending > s->replicated_stored)
        outbox_trim(t, s->replicated_pending);
    if (t->cal != NULL) {
        size_t budget = SETTLE_EXPIRE_MAX;
        expire_index(t, D_SEEN_EXP, D_SEEN, &budget);
        expire_index(t, D_CAPTURE_DATE, D_CAPTURES, &budget);
    }
    idem_expire(t);
}

static void stats_add(struct settle_store_stats *a, const struct settle_store_stats *d)
{
    a->messages += d->messages;
    a->counted += d->counted;
    a->adjusted += d->adjusted;
    a->duplicates += d->duplicates;
    a->ignored += d->ignored;
    a->stale += d->stale;
    a->dead_letters += d->dead_letters;
    a->batches_closed += d->batches_closed;
    a->expired += d->expired;
    a->recon_lines += d->recon_lines;
    a->idem_expired += d->idem_expired;
    a->open_batches += d->open_batches; /* may wrap negative: added as a difference */
    if (d->outbox_seq)
        a->outbox_seq = d->outbox_seq;
}

/* Runs body once in a fresh write transaction and commits it. */
static int txn_once(struct settle_store *s, struct stx *t, stx_body_fn body, void *arg)
{
    int rc = txn_begin(s, 0, &t->txn);
    if (rc)
        return rc;
    t->err = 0;
    t->writable = true;
    t->idem_put = false;
    memset(&t->d, 0, sizeof(t->d));
    int64_t through = SETTLE_DATE_MIN - 1;
    rc = meta_get(t, "closed_through", &through);
    if (rc && rc != MDB_NOTFOUND)
        tfail(t, rc);
    t->closed_through = through;
    horizon_advance(t);
    if (t->err == 0)
        body(t, arg);
    if (t->err == 0)
        housekeep(t);
    if (t->err) {
        rc = t->err;
        mdb_txn_abort(t->txn);
    } else if ((rc = fault_take(&s->fault_after_commits, &s->fault_commit_errno,
                                s->fault_persistent))) {
        mdb_txn_abort(t->txn); /* as if its fdatasync had failed */
    } else {
        rc = mdb_txn_commit(t->txn);
    }
    t->txn = NULL;
    if (rc == 0) {
        s->replicated_stored = s->replicated_pending;
        s->trim_pending = !t->trim_done;
        stats_add(&s->stats, &t->d);
        s->stats.horizon = t->horizon;
        s->idem_written |= t->idem_put;
    }
    return rc;
}

static int store_fail(struct settle_store *s, int err)
{
    ASSERT(err < 0);
    if (s->failed == 0)
        s->failed = err;
    return s->failed;
}

/*
 * Runs body in a write transaction and commits it durably. MAP_FULL: grow, run again
 * once. Returns 0 or -errno; an error other than "does not fit" fails the store.
 */
static int txn_run(struct settle_store *s, struct settle_calendar *cal, int64_t now_ms,
                   stx_body_fn body, void *arg)
{
    ASSERT(s != NULL && s->env != NULL && body != NULL);
    if (s->failed)
        return s->failed;
    struct stx t = {.s = s, .cal = cal, .now_ms = now_ms};
    int rc = txn_once(s, &t, body, arg);
    if (rc == MDB_MAP_FULL) {
        s->stats.map_full++;
        rc = map_grow(s);
        if (rc == 0)
            rc = txn_once(s, &t, body, arg);
    }
    if (rc == 0) {
        s->stats.commits++;
        return 0;
    }
    s->stats.failed_commits++;
    bool before_write = rc == MDB_MAP_FULL || rc == MDB_TXN_FULL;
    /* A body's own refusal (a plain -errno it chose, e.g. -EINVAL) is not a store
     * failure either: it was returned before anything was committed. */
    bool own = rc < 0 && rc > -4096 && rc != -EIO;
    rc = errno_of(rc);
    if (!before_write && !own)
        rc = store_fail(s, rc);
    return rc;
}

/* ---- Read transactions ------------------------------------------------------------------ */

static int rtxn_begin(struct settle_store *s, struct stx *t)
{
    memset(t, 0, sizeof(*t));
    t->s = s;
    return errno_of(txn_begin(s, MDB_RDONLY, &t->txn));
}

static void rtxn_end(struct stx *t)
{
    mdb_txn_abort(t->txn);
    t->txn = NULL;
}

/* ---- One apply transaction's working memory ------------------------------------------- */

/*
 * What an apply transaction (settle_store_apply) read and changed, kept in memory until
 * its end so that each is read from LMDB once and written once, instead of once per
 * message: the batches it touched (a message's aggregate read-modify-write becomes an
 * update in memory), the next offset of each partition, and whether each date is closed.
 * Rules:
 *  - It lives for ONE transaction body: txn_cache_reset at the start of every body (so
 *    also of a body run again after MAP_FULL), and nothing in it survives the body.
 *    Nothing of the store is cached across transactions: another process may write the
 *    store between two of them.
 *  - Reads see it first (it holds this transaction's newest state); a batch is checked
 *    when it enters it (batch_read, op_batch_put) and again when written (batch_encode).
 *  - Every dirty entry is written before the body ends (txn_cache_flush), and dirty
 *    batches before a cursor reads the batches table (op_batch_next_open), so the
 *    transaction commits exactly the records the uncached path would have written.
 *  - Bounded: when a table is full, batches are flushed and the table emptied; a
 *    partition or date that finds no room is read and written directly, every time in
 *    that transaction (so a value is never in both places).
 */
#define TXN_BATCHES_MAX 4096                  /* distinct batches held (a full consumer batch) */
#define TXN_BATCH_SLOTS (2 * TXN_BATCHES_MAX) /* open addressing, at most half full */
#define TXN_OFFSETS_MAX 256                   /* (topic, partition) pairs held */
#define TXN_DATES_MAX   8                     /* dates whose closed state is held */
_Static_assert((TXN_BATCH_SLOTS & (TXN_BATCH_SLOTS - 1)) == 0, "a power of two");
_Static_assert(TXN_BATCHES_MAX < UINT16_MAX, "a slot holds an index + 1 in 16 bits");

struct txn_batch {
    struct settle_batch b;
    bool dirty; /* changed since read: written at the flush */
};

struct txn_offset {
    uint8_t key[1 + SETTLE_TOPIC_MAX_BYTES + 4];
    size_t klen;
    int64_t next; /* -1: none stored */
    bool dirty;
};

struct txn_cache {
    MDB_cursor *cur[D_COUNT]; /* opened on first use, closed at the end of the body */
    uint32_t nbatches, noffsets, ndates;
    uint16_t slot[TXN_BATCH_SLOTS]; /* 0: empty, else index + 1 into batches */
    struct txn_batch batches[TXN_BATCHES_MAX];
    struct txn_offset offsets[TXN_OFFSETS_MAX];
    int32_t dates[TXN_DATES_MAX];
    bool closed[TXN_DATES_MAX];
};

static struct txn_cache *txn_cache_alloc(void)
{
    return malloc(sizeof(struct txn_cache));
}

static void txn_cache_reset(struct txn_cache *c)
{
    memset(c->cur, 0, sizeof(c->cur));
    c->nbatches = c->noffsets = c->ndates = 0;
    memset(c->slot, 0, sizeof(c->slot));
}

/* The apply transaction's own cursor on dbi (NULL outside one, or when it cannot be
 * opened: the caller then uses mdb_get / mdb_put). Gets and puts go through it because
 * LMDB looks for a key on the cursor's current leaf page before it descends from the
 * root, and a consumer's keys come in runs that share pages (event and payment ids of
 * one engine shard are sequential). */
static MDB_cursor *hot_cursor(struct stx *t, int dbi)
{
    if (t->c == NULL)
        return NULL;
    MDB_cursor **c = &t->c->cur[dbi];
    if (*c == NULL && mdb_cursor_open(t->txn, t->s->dbi[dbi], c))
        *c = NULL;
    return *c;
}

static void txn_cache_close_cursors(struct txn_cache *c)
{
    for (int i = 0; i < D_COUNT; i++)
        if (c->cur[i])
            mdb_cursor_close(c->cur[i]);
    memset(c->cur, 0, sizeof(c->cur));
}

static uint32_t key_hash(const struct settle_key *k)
{
    uint32_t h = 2166136261u; /* FNV-1a over merchant, currency and date */
    for (size_t i = 0; i < k->merchant_id_len; i++)
        h = (h ^ (uint8_t)k->merchant_id[i]) * 16777619u;
    for (size_t i = 0; i < CURRENCY_BYTES; i++)
        h = (h ^ (uint8_t)k->currency[i]) * 16777619u;
    return (h ^ (uint32_t)k->date) * 16777619u;
}

/* The slot of key k: its entry's, or the empty one where it would go. */
static uint16_t *cache_slot(struct txn_cache *c, const struct settle_key *k)
{
    uint32_t i = key_hash(k) & (TXN_BATCH_SLOTS - 1);
    for (;; i = (i + 1) & (TXN_BATCH_SLOTS - 1)) {
        uint16_t *sl = &c->slot[i];
        if (*sl == 0 || settle_key_equal(&c->batches[*sl - 1].b.key, k))
            return sl;
    }
}

static int batch_write(struct stx *t, const struct settle_batch *b)
{
    uint8_t bk[BKEY_MAX], v[BATCH_MAX];
    size_t bklen = bkey_encode(bk, &b->key);
    return tput(t, D_BATCHES, bk, bklen, v, batch_encode(v, b), 0);
}

/* Writes the dirty batches; they stay held, clean. */
static void cache_flush_batches(struct stx *t)
{
    struct txn_cache *c = t->c;
    for (uint32_t i = 0; i < c->nbatches && t->err == 0; i++) {
        if (!c->batches[i].dirty)
            continue;
        batch_write(t, &c->batches[i].b);
        c->batches[i].dirty = false;
    }
}

/* Holds b (read from the store, or changed: dirty). */
static void cache_batch_hold(struct stx *t, const struct settle_batch *b, bool dirty)
{
    struct txn_cache *c = t->c;
    ASSERT(c->nbatches <= TXN_BATCHES_MAX);
    uint16_t *sl = cache_slot(c, &b->key);
    if (*sl == 0 && c->nbatches == TXN_BATCHES_MAX) {
        cache_flush_batches(t); /* full: write everything, start empty */
        c->nbatches = 0;
        memset(c->slot, 0, sizeof(c->slot));
        sl = cache_slot(c, &b->key);
    }
    if (*sl == 0) {
        c->batches[c->nbatches].dirty = false;
        c->batches[c->nbatches].b.seq = b->seq;
        *sl = (uint16_t)++c->nbatches;
    }
    struct txn_batch *e = &c->batches[*sl - 1];
    ASSERT(b->seq >= 1 && e->b.seq == b->seq); /* stored, and the same batch */
    settle_batch_check(b);
    e->b = *b;
    e->dirty = e->dirty || dirty;
}

/* The held closed state of date: 1 closed, 0 open, or -1 when not held (then *room is
 * where to hold it, TXN_DATES_MAX when there is no room). */
static int cache_date(struct txn_cache *c, int32_t date, uint32_t *room)
{
    for (uint32_t i = 0; i < c->ndates; i++)
        if (c->dates[i] == date)
            return c->closed[i];
    *room = c->ndates < TXN_DATES_MAX ? c->ndates : TXN_DATES_MAX;
    return -1;
}

/* ---- The rules' store (struct settle_ops) --------------------------------------------- */

static int op_seen_get(void *ctx, const struct settle_event *ev)
{
    uint8_t k[EKEY_LEN];
    MDB_val v;
    ekey_encode(k, ev);
    return tget(ctx, D_SEEN, k, sizeof(k), &v);
}

static int op_seen_put(void *ctx, const struct settle_event *ev, int32_t date)
{
    struct stx *t = ctx;
    uint8_t k[EKEY_LEN], v[8] = {RECORD_VERSION}, x[4 + EKEY_LEN];
    ekey_encode(k, ev);
    record_put_u32le(v + 4, (uint32_t)date);
    put_u32be(x, (uint32_t)date);
    memcpy(x + 4, k, EKEY_LEN);
    if (tput(t, D_SEEN, k, sizeof(k), v, sizeof(v), MDB_NOOVERWRITE))
        return t->err;
    return tput(t, D_SEEN_EXP, x, sizeof(x), NULL, 0, 0);
}

static int op_horizon_get(void *ctx, int32_t *date)
{
    struct stx *t = ctx;
    *date = t->horizon;
    return t->err;
}

static int op_date_closed(void *ctx, int32_t date)
{
    struct stx *t = ctx;
    uint8_t k[4];
    MDB_val v;
    if (date <= t->closed_through)
        return t->err ? t->err : 1;
    uint32_t room = TXN_DATES_MAX;
    if (t->c) {
        int held = cache_date(t->c, date, &room);
        if (held >= 0)
            return t->err ? t->err : held;
    }
    put_u32be(k, (uint32_t)date);
    int rc = tget(t, D_DATES, k, sizeof(k), &v);
    rc = rc == -ENOENT ? 0 : rc == 0 ? 1 : rc;
    if (rc >= 0 && t->c && room < TXN_DATES_MAX) { /* an apply closes no date: it holds */
        t->c->dates[room] = date;
        t->c->closed[room] = rc;
        t->c->ndates++;
    }
    return rc;
}

static int batch_read(struct stx *t, const uint8_t *bk, size_t bklen, struct settle_batch *out)
{
    MDB_val v;
    struct settle_key key;
    int rc = tget(t, D_BATCHES, bk, bklen, &v);
    if (rc)
        return rc;
    if (batch_decode(v.mv_data, v.mv_size, out) || bkey_decode(bk, bklen, &key) ||
        !settle_key_equal(&key, &out->key))
        return tfail(t, MDB_CORRUPTED);
    return 0;
}

static int op_batch_get(void *ctx, const struct settle_key *k, struct settle_batch *out)
{
    struct stx *t = ctx;
    uint8_t bk[BKEY_MAX];
    if (t->c) {
        uint16_t sl = *cache_slot(t->c, k);
        if (sl) {
            *out = t->c->batches[sl - 1].b;
            return t->err;
        }
    }
    int rc = batch_read(t, bk, bkey_encode(bk, k), out);
    if (rc == 0 && t->c)
        cache_batch_hold(t, out, false);
    return rc;
}

static int op_batch_next_open(void *ctx, const struct settle_key *k, struct settle_batch *out)
{
    struct stx *t = ctx;
    uint8_t bk[BKEY_MAX];
    struct settle_key from = *k;
    if (k->date >= SETTLE_DATE_MAX)
        return -ENOENT;
    from.date = k->date + 1;
    size_t n = bkey_encode(bk, &from), prefix = n - 4;
    MDB_cursor *c = NULL;
    if (t->c)
        cache_flush_batches(t); /* the cursor reads the table: it must hold them */
    if (cursor_open(t, D_BATCHES, &c))
        return t->err;
    MDB_val key = {.mv_size = n, .mv_data = bk}, v;
    int rc = mdb_cursor_get(c, &key, &v, MDB_SET_RANGE);
    int ret = -ENOENT;
    for (; rc == 0; rc = mdb_cursor_get(c, &key, &v, MDB_NEXT)) {
        if (key.mv_size != n || memcmp(key.mv_data, bk, prefix) != 0)
            break;
        if (batch_decode(v.mv_data, v.mv_size, out)) {
            rc = MDB_CORRUPTED;
            break;
        }
        if (!out->closed) {
            ret = 0;
            break;
        }
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND)
        return tfail(t, rc);
    return ret;
}

/* The four index keys of a batch: [seq], [merchant][seq], [date][seq]. */
static size_t key_seq(uint8_t *k, uint64_t seq)
{
    record_put_u64be(k, seq);
    return 8;
}

static size_t key_date_seq(uint8_t *k, int32_t date, uint64_t seq)
{
    put_u32be(k, (uint32_t)date);
    record_put_u64be(k + 4, seq);
    return 12;
}

static int op_batch_put(void *ctx, struct settle_batch *b)
{
    struct stx *t = ctx;
    uint8_t bk[BKEY_MAX], v[BATCH_MAX], ik[1 + MERCHANT_ID_MAX_BYTES + 8];
    size_t bklen = bkey_encode(bk, &b->key);
    ASSERT(!b->closed);
    if (b->seq == 0) {
        uint64_t seq;
        if (meta_next(t, "seq:batch", &seq))
            return t->err;
        b->seq = seq;
        size_t n = record_key_merchant(ik, b->key.merchant_id, b->key.merchant_id_len);
        record_put_u64be(ik + n, seq);
        tput(t, D_BATCH_SEQ, ik + n, 8, bk, bklen, MDB_APPEND);
        tput(t, D_BATCH_MERCH, ik, n + 8, bk, bklen, MDB_NOOVERWRITE);
        uint8_t dk[12];
        key_date_seq(dk, b->key.date, seq);
        tput(t, D_BATCH_DATE, dk, sizeof(dk), bk, bklen, MDB_NOOVERWRITE);
        tput(t, D_OPEN_SEQ, ik + n, 8, bk, bklen, MDB_NOOVERWRITE);
        tput(t, D_OPEN_DATE, dk, sizeof(dk), bk, bklen, MDB_NOOVERWRITE);
        t->d.open_batches++;
    }
    if (t->c) {
        cache_batch_hold(t, b, true); /* written once, at the end of the body */
        return t->err;
    }
    return tput(t, D_BATCHES, bk, bklen, v, batch_encode(v, b), 0);
}

static int op_adjustment_put(void *ctx, const struct settle_key *target,
                             const struct settle_event *ev, int32_t source, int64_t amount)
{
    uint8_t k[BKEY_MAX + EKEY_LEN], v[16] = {RECORD_VERSION, (uint8_t)ev->type};
    size_t n = bkey_encode(k, target);
    ekey_encode(k + n, ev);
    record_put_u32le(v + 4, (uint32_t)source);
    record_put_u64le(v + 8, (uint64_t)amount);
    return tput(ctx, D_ADJUST, k, n + EKEY_LEN, v, sizeof(v), MDB_NOOVERWRITE);
}

static int op_capture_put(void *ctx, const struct settle_capture *cap)
{
    struct stx *t = ctx;
    uint8_t v[CAPTURE_FIXED + MERCHANT_ID_MAX_BYTES], x[4 + ID_BYTES];
    MDB_val old;
    size_t vlen = capture_encode(v, cap);
    int rc = tput_new(t, D_CAPTURES, cap->payment_id, ID_BYTES, v, vlen, &old);
    if (rc < 0)
        return rc;
    if (rc == 1) { /* one capture per payment: a second would be a new id; keep one entry */
        struct settle_capture prev;
        if (capture_decode(old.mv_data, old.mv_size, cap->payment_id, &prev))
            return tfail(t, MDB_CORRUPTED);
        put_u32be(x, (uint32_t)prev.value_date);
        memcpy(x + 4, cap->payment_id, ID_BYTES);
        tdel(t, D_CAPTURE_DATE, x, sizeof(x));
        tput(t, D_CAPTURES, cap->payment_id, ID_BYTES, v, vlen, 0);
    }
    put_u32be(x, (uint32_t)cap->value_date);
    memcpy(x + 4, cap->payment_id, ID_BYTES);
    return tput(t, D_CAPTURE_DATE, x, sizeof(x), NULL, 0, 0);
}

static const struct settle_ops store_ops = {
    .seen_get = op_seen_get,
    .seen_put = op_seen_put,
    .horizon_get = op_horizon_get,
    .date_closed = op_date_closed,
    .batch_get = op_batch_get,
    .batch_next_open = op_batch_next_open,
    .batch_put = op_batch_put,
    .adjustment_put = op_adjustment_put,
    .capture_put = op_capture_put,
};

/* ---- Outbox --------------------------------------------------------------------------- */

#define OUT_FIXED 8

/* Appends one outbox message. key may be NULL. */
static int outbox_append(struct stx *t, const char *topic, const char *key, size_t key_len,
                         const char *value, size_t value_len, const struct settle_out_header *h,
                         size_t nh)
{
    size_t tlen = strlen(topic), size = OUT_FIXED + tlen + 2 + key_len + value_len;
    ASSERT(tlen <= SETTLE_TOPIC_MAX_BYTES && key_len <= SETTLE_KEY_MAX_BYTES && nh <= 4);
    for (size_t i = 0; i < nh; i++)
        size += 3 + h[i].name_len + h[i].value_len;
    uint64_t seq;
    uint8_t k[8], *p;
    if (meta_next(t, "seq:outbox", &seq))
        return t->err;
    record_put_u64be(k, seq);
    if (treserve(t, D_OUTBOX, k, sizeof(k), size, (void **)&p))
        return t->err;
    p[0] = RECORD_VERSION;
    p[1] = (uint8_t)tlen;
    p[2] = key ? 1 : 0;
    p[3] = (uint8_t)nh;
    record_put_u32le(p + 4, (uint32_t)value_len);
    uint8_t *w = p + OUT_FIXED;
    put_bytes(w, topic, tlen);
    w += tlen;
    *w++ = (uint8_t)(key_len >> 8);
    *w++ = (uint8_t)key_len;
    put_bytes(w, key, key_len);
    w += key_len;
    for (size_t i = 0; i < nh; i++) {
        ASSERT(h[i].name_len < 256 && h[i].value_len < 65536);
        *w++ = (uint8_t)h[i].name_len;
        *w++ = (uint8_t)(h[i].value_len >> 8);
        *w++ = (uint8_t)h[i].value_len;
        put_bytes(w, h[i].name, h[i].name_len);
        w += h[i].name_len;
        put_bytes(w, h[i].value, h[i].value_len);
        w += h[i].value_len;
    }
    put_bytes(w, value, value_len);
    w += value_len;
    ASSERT((size_t)(w - p) == size);
    t->d.outbox_seq = seq;
    return 0;
}

static int outbox_decode(const void *data, size_t len, struct settle_out_msg *m)
{
    const uint8_t *p = data, *end = p + len;
    if (len < OUT_FIXED + 2 || p[0] != RECORD_VERSION || p[2] > 1 || p[3] > SETTLE_OUT_HEADERS_MAX)
        return -EBADMSG;
    const uint8_t *w = p + OUT_FIXED;
    m->topic = (const char *)w;
    m->topic_len = p[1];
    w += p[1];
    if (end - w < 2)
        return -EBADMSG;
    m->key_len = (size_t)w[0] << 8 | w[1];
    w += 2;
    if ((size_t)(end - w) < m->key_len)
        return -EBADMSG;
    m->key = p[2] ? (const char *)w : NULL;
    w += m->key_len;
    m->nheaders = p[3];
    for (size_t i = 0; i < m->nheaders; i++) {
        if (end - w < 3)
            return -EBADMSG;
        struct settle_out_header *h = &m->headers[i];
        h->name_len = w[0];
        h->value_len = (size_t)w[1] << 8 | w[2];
        w += 3;
        if ((size_t)(end - w) < h->name_len + h->value_len)
            return -EBADMSG;
        h->name = (const char *)w;
        h->value = (const char *)w + h->name_len;
        w += h->name_len + h->value_len;
    }
    m->value_len = record_get_u32le(p + 4);
    if ((size_t)(end - w) != m->value_len)
        return -EBADMSG;
    m->value = (const char *)w;
    return 0;
}

int settle_store_outbox_scan(struct settle_store *s, uint64_t after_seq, size_t max,
                             settle_out_visit_fn fn, void *arg)
{
    ASSERT(s != NULL && fn != NULL);
    struct stx t;
    MDB_cursor *c = NULL;
    int rc = rtxn_begin(s, &t);
    if (rc)
        return rc;
    if (after_seq == UINT64_MAX || (rc = errno_of(mdb_cursor_open(t.txn, s->dbi[D_OUTBOX], &c)))) {
        rtxn_end(&t);
        return rc;
    }
    uint8_t kb[8];
    record_put_u64be(kb, after_seq + 1);
    MDB_val k = {.mv_size = 8, .mv_data = kb}, v;
    int mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    for (size_t seen = 0; mrc == 0 && seen < max && rc == 0; seen++) {
        struct settle_out_msg m;
        if (k.mv_size != 8 || outbox_decode(v.mv_data, v.mv_size, &m)) {
            rc = -EBADMSG;
            break;
        }
        m.seq = record_get_u64be(k.mv_data);
        ASSERT(m.seq > after_seq);
        rc = fn(arg, &m);
        if (rc == 0)
            mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    if (rc == 0 && mrc && mrc != MDB_NOTFOUND)
        rc = errno_of(mrc);
    mdb_cursor_close(c);
    rtxn_end(&t);
    return rc;
}

void settle_store_set_replicated(struct settle_store *s, uint64_t seq)
{
    ASSERT(s != NULL);
    if (seq > s->replicated_pending)
        s->replicated_pending = seq;
}

static void noop_body(struct stx *t, void *arg)
{
    (void)t;
    (void)arg;
}

int settle_store_flush(struct settle_store *s, struct settle_calendar *cal, int64_t now_ms)
{
    return txn_run(s, cal, now_ms, noop_body, NULL);
}

/* ---- Dead letters ------------------------------------------------------------------------ */

#define DLQ_FIXED 48

/* Stores a dead letter and publishes it to payment.dlq: the original value, with the
 * reason and source in headers. */
static int dead_letter(struct stx *t, const struct settle_msg *m, const char *reason)
{
    size_t rlen = strlen(reason), tlen = m->topic_len, klen = m->key ? m->key_len : 0;
    size_t vlen = m->value ? m->value_len : 0;
    bool cut = vlen > SETTLE_DLQ_VALUE_MAX_BYTES;
    if (cut)
        vlen = SETTLE_DLQ_VALUE_MAX_BYTES;
    if (tlen > SETTLE_TOPIC_MAX_BYTES)
        tlen = SETTLE_TOPIC_MAX_BYTES;
    if (klen > SETTLE_KEY_MAX_BYTES)
        klen = SETTLE_KEY_MAX_BYTES;
    uint64_t id;
    uint8_t k[8], *p;
    if (meta_next(t, "seq:dlq", &id))
        return t->err;
    record_put_u64be(k, id);
    size_t size = DLQ_FIXED + tlen + rlen + klen + vlen;
    if (treserve(t, D_DLQ, k, sizeof(k), size, (void **)&p))
        return t->err;
    memset(p, 0, DLQ_FIXED);
    p[0] = RECORD_VERSION;
    p[1] = 1; /* pending */
    p[2] = (uint8_t)tlen;
    p[3] = cut;
    p[4] = (uint8_t)rlen;
    p[5] = m->key ? 1 : 0;
    p[6] = (uint8_t)(klen >> 8);
    p[7] = (uint8_t)klen;
    record_put_u32le(p + 8, (uint32_t)m->partition);
    record_put_u64le(p + 16, (uint64_t)m->offset);
    record_put_u64le(p + 24, (uint64_t)t->now_ms);
    record_put_u64le(p + 32, (uint64_t)-1);
    record_put_u32le(p + 40, (uint32_t)vlen);
    record_put_u32le(p + 44, (uint32_t)(m->value ? m->value_len : 0));
    uint8_t *w = p + DLQ_FIXED;
    put_bytes(w, m->topic, tlen);
    put_bytes(w + tlen, reason, rlen);
    put_bytes(w + tlen + rlen, m->key, klen);
    put_bytes(w + tlen + rlen + klen, m->value, vlen);
    char part[16], off[24];
    int pn = snprintf(part, sizeof(part), "%d", (int)m->partition);
    int on = snprintf(off, sizeof(off), "%lld", (long long)m->offset);
    struct settle_out_header h[4] = {
        {"ringpay-reason", 14, reason, rlen},
        {"ringpay-topic", 13, m->topic, tlen},
        {"ringpay-partition", 17, part, (size_t)pn},
        {"ringpay-offset", 14, off, (size_t)on},
    };
    t->d.dead_letters++;
    return outbox_append(t, "payment.dlq", m->key ? m->key : NULL, klen, m->value ? m->value : "",
                         vlen, h, 4);
}

static int dlq_decode(uint64_t id, const void *data, size_t len, struct settle_dead_letter *d)
{
    const uint8_t *p = data;
    if (len < DLQ_FIXED || p[0] != RECORD_VERSION || p[1] < 1 || p[1] > 2 || p[3] > 1 || p[5] > 1)
        return -EBADMSG;
    memset(d, 0, sizeof(*d));
    d->id = id;
    d->replayed = p[1] == 2;
    d->truncated = p[3];
    d->topic_len = p[2];
    d->reason_len = p[4];
    d->key_len = (size_t)p[6] << 8 | p[7];
    d->partition = (int32_t)record_get_u32le(p + 8);
    d->offset = (int64_t)record_get_u64le(p + 16);
    d->created_at_ms = (int64_t)record_get_u64le(p + 24);
    d->replayed_at_ms = (int64_t)record_get_u64le(p + 32);
    d->value_len = record_get_u32le(p + 40);
    if (len != DLQ_FIXED + d->topic_len + d->reason_len + d->key_len + d->value_len)
        return -EBADMSG;
    d->topic = (const char *)p + DLQ_FIXED;
    d->reason = d->topic + d->topic_len;
    d->key = p[5] ? d->reason + d->reason_len : NULL;
    d->value = d->reason + d->reason_len + d->key_len;
    return 0;
}

/* ---- Consuming ------------------------------------------------------------------------- */

static size_t offset_key(uint8_t *k, const char *topic, size_t tlen, int32_t partition)
{
    ASSERT(tlen >= 1 && tlen <= SETTLE_TOPIC_MAX_BYTES && partition >= 0);
    k[0] = (uint8_t)tlen;
    memcpy(k + 1, topic, tlen);
    put_u32be(k + 1 + tlen, (uint32_t)partition);
    return 1 + tlen + 4;
}

/* The stored next offset of ok (-1: none), read from the store. */
static int offset_read(struct stx *t, const uint8_t *ok, size_t oklen, int64_t *next)
{
    MDB_val v;
    int rc = tget(t, D_OFFSETS, ok, oklen, &v);
    *next = -1;
    if (rc == -ENOENT)
        return 0;
    if (rc == 0 && (record_i64_decode(v.mv_data, v.mv_size, next) || *next < 0))
        rc = tfail(t, MDB_CORRUPTED);
    return rc;
}

static void offset_write(struct stx *t, const uint8_t *ok, size_t oklen, int64_t next)
{
    uint8_t buf[RECORD_I64_BYTES];
    record_i64_encode(buf, next);
    tput(t, D_OFFSETS, ok, oklen, buf, sizeof(buf), 0);
}

/* The transaction's entry of the partition of key ok, read once (NULL: no room, or the
 * store failed: the caller reads and writes the store directly). */
static struct txn_offset *offset_held(struct stx *t, const uint8_t *ok, size_t oklen)
{
    struct txn_cache *c = t->c;
    for (uint32_t i = c->noffsets; i-- > 0;)
        if (c->offsets[i].klen == oklen && memcmp(c->offsets[i].key, ok, oklen) == 0)
            return &c->offsets[i];
    if (c->noffsets == TXN_OFFSETS_MAX)
        return NULL;
    struct txn_offset *o = &c->offsets[c->noffsets];
    ASSERT(oklen <= sizeof(o->key));
    if (offset_read(t, ok, oklen, &o->next))
        return NULL;
    memcpy(o->key, ok, oklen);
    o->klen = oklen;
    o->dirty = false;
    c->noffsets++;
    return o;
}

/* One message: see settle_store_apply. */
static void apply_msg(struct stx *t, struct settle_msg *m)
{
    uint8_t ok[1 + SETTLE_TOPIC_MAX_BYTES + 4];
    size_t oklen = 0;
    struct txn_offset *held = NULL;
    int64_t next = -1;
    m->date = 0;
    memset(&m->batch, 0, sizeof(m->batch));
    t->d.messages++;
    if (m->offset >= 0) {
        oklen = offset_key(ok, m->topic, m->topic_len, m->partition);
        held = offset_held(t, ok, oklen);
        if (held)
            next = held->next;
        else if (t->err || offset_read(t, ok, oklen, &next))
            return;
        if (m->offset < next) {
            m->result = SETTLE_MSG_STALE;
            t->d.stale++;
            return;
        }
    }
    struct settle_event ev;
    struct settle_result res;
    char reason[SETTLE_REASON_MAX_BYTES + 1];
    if (settle_event_parse(m->topic, m->topic_len, m->value ? m->value : "",
                           m->value ? m->value_len : 0, &ev, reason)) {
        m->result = SETTLE_MSG_DEAD_LETTER;
        dead_letter(t, m, reason);
    } else if (settle_apply_event(&store_ops, t, t->cal, &ev, t->now_ms, &res)) {
        return; /* a store error: sticky in t->err */
    } else {
        static const enum settle_msg_result map[] = {
            [SETTLE_COUNTED] = SETTLE_MSG_COUNTED,     [SETTLE_ADJUSTED] = SETTLE_MSG_ADJUSTED,
            [SETTLE_DUPLICATE] = SETTLE_MSG_DUPLICATE, [SETTLE_IGNORED] = SETTLE_MSG_IGNORED,
            [SETTLE_REFUSED] = SETTLE_MSG_DEAD_LETTER,
        };
        m->result = map[res.outcome];
        m->date = res.date;
        m->batch = res.batch;
        t->d.counted += res.outcome == SETTLE_COUNTED;
        t->d.adjusted += res.outcome == SETTLE_ADJUSTED;
        t->d.duplicates += res.outcome == SETTLE_DUPLICATE;
        t->d.ignored += res.outcome == SETTLE_IGNORED;
        if (res.outcome == SETTLE_REFUSED)
            dead_letter(t, m, res.reason);
    }
    if (m->offset < 0)
        return;
    if (held == NULL) {
        offset_write(t, ok, oklen, m->offset + 1);
        return;
    }
    ASSERT(m->offset >= held->next); /* never backwards: a lower one was stale */
    held->next = m->offset + 1;      /* written once, at the end of the body */
    held->dirty = true;
}

struct apply_run {
    struct settle_msg *msgs;
    size_t n;
};

/* Writes what the transaction holds changed (see txn_cache). */
static void txn_cache_flush(struct stx *t)
{
    struct txn_cache *c = t->c;
    cache_flush_batches(t);
    for (uint32_t i = 0; i < c->noffsets && t->err == 0; i++)
        if (c->offsets[i].dirty)
            offset_write(t, c->offsets[i].key, c->offsets[i].klen, c->offsets[i].next);
}

static void apply_body(struct stx *t, void *arg)
{
    struct apply_run *a = arg;
    ASSERT(t->c == NULL && t->s->cache != NULL);
    t->c = t->s->cache;
    txn_cache_reset(t->c);
    for (size_t i = 0; i < a->n && t->err == 0; i++)
        apply_msg(t, &a->msgs[i]);
    if (t->err == 0)
        txn_cache_flush(t);
    txn_cache_close_cursors(t->c);
    t->c = NULL;
}

int settle_store_apply(struct settle_store *s, struct settle_calendar *cal, struct settle_msg *msgs,
                       size_t n, int64_t now_ms)
{
    ASSERT(s != NULL && cal != NULL && (msgs != NULL || n == 0));
    ASSERT(now_ms >= 0 && now_ms <= TIME_MS_MAX);
    for (size_t i = 0; i < n; i++) {
        ASSERT(msgs[i].topic != NULL && msgs[i].topic_len >= 1 &&
               msgs[i].topic_len <= SETTLE_TOPIC_MAX_BYTES);
        ASSERT(msgs[i].partition >= 0 && msgs[i].offset >= SETTLE_NO_OFFSET);
        msgs[i].result = 0;
    }
    struct apply_run a = {msgs, n};
    return txn_run(s, cal, now_ms, apply_body, &a);
}

int settle_store_offset_get(struct settle_store *s, const char *topic, size_t topic_len,
                            int32_t partition, int64_t *next)
{
    struct stx t;
    uint8_t k[1 + SETTLE_TOPIC_MAX_BYTES + 4];
    MDB_val v;
    int rc = rtxn_begin(s, &t);
    if (rc)
        return rc;
    rc = tget(&t, D_OFFSETS, k, offset_key(k, topic, topic_len, partition), &v);
    if (rc == 0 && record_i64_decode(v.mv_data, v.mv_size, next))
        rc = -EBADMSG;
    rtxn_end(&t);
    return errno_of(rc);
}

/* ---- A shared store's group progress (D_META "p:" + offset key -> high, wall ms) ------ */

#define PROGRESS_PREFIX     "p:"
#define PROGRESS_PREFIX_LEN 2
#define PROGRESS_VAL        16

struct progress_run {
    const struct settle_progress *p;
    size_t n;
    int64_t wall_ms;
};

static void progress_body(struct stx *t, void *arg)
{
    const struct progress_run *r = arg;
    for (size_t i = 0; i < r->n && t->err == 0; i++) {
        uint8_t k[PROGRESS_PREFIX_LEN + 1 + SETTLE_TOPIC_MAX_BYTES + 4], v[PROGRESS_VAL];
        memcpy(k, PROGRESS_PREFIX, PROGRESS_PREFIX_LEN);
        size_t klen = PROGRESS_PREFIX_LEN + offset_key(k + PROGRESS_PREFIX_LEN, r->p[i].topic,
                                                       r->p[i].topic_len, r->p[i].partition);
        record_put_u64be(v, (uint64_t)r->p[i].high);
        record_put_u64be(v + 8, (uint64_t)r->wall_ms);
        tput(t, D_META, k, klen, v, sizeof(v), 0);
    }
}

int settle_store_progress_put(struct settle_store *s, struct settle_calendar *cal,
                              const struct settle_progress *p, size_t n, int64_t now_ms,
                              int64_t wall_ms)
{
    struct progress_run r = {.p = p, .n = n, .wall_ms = wall_ms};
    return txn_run(s, cal, now_ms, progress_body, &r);
}

bool settle_store_progress_caught_up(struct settle_store *s, int64_t wall_ms, int64_t fresh_ms)
{
    struct stx t;
    MDB_cursor *c = NULL;
    if (rtxn_begin(s, &t))
        return false;
    if (mdb_cursor_open(t.txn, s->dbi[D_META], &c)) {
        rtxn_end(&t);
        return false;
    }
    MDB_val k = {.mv_size = PROGRESS_PREFIX_LEN, .mv_data = (void *)PROGRESS_PREFIX}, v;
    bool ok = true;
    size_t seen = 0;
    int rc;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && ok;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size <= PROGRESS_PREFIX_LEN + 5 ||
            memcmp(k.mv_data, PROGRESS_PREFIX, PROGRESS_PREFIX_LEN) != 0)
            break;
        seen++;
        if (v.mv_size != PROGRESS_VAL) {
            ok = false;
            break;
        }
        int64_t high = (int64_t)record_get_u64be(v.mv_data);
        int64_t at = (int64_t)record_get_u64be((const uint8_t *)v.mv_data + 8);
        MDB_val next_v;
        MDB_val ok_k = {.mv_size = k.mv_size - PROGRESS_PREFIX_LEN,
                        .mv_data = (uint8_t *)k.mv_data + PROGRESS_PREFIX_LEN};
        int64_t next = 0;
        int g = mdb_get(t.txn, s->dbi[D_OFFSETS], &ok_k, &next_v);
        if (g == 0 && record_i64_decode(next_v.mv_data, next_v.mv_size, &next))
            g = MDB_CORRUPTED;
        ok = (g == 0 || g == MDB_NOTFOUND) && high >= 0 && wall_ms - at <= fresh_ms && next >= high;
    }
    mdb_cursor_close(c);
    rtxn_end(&t);
    return ok && seen > 0;
}

int settle_store_offsets(struct settle_store *s, settle_offset_visit_fn fn, void *arg)
{
    struct stx t;
    MDB_cursor *c = NULL;
    int rc = rtxn_begin(s, &t);
    if (rc)
        return rc;
    if ((rc = errno_of(mdb_cursor_open(t.txn, s->dbi[D_OFFSETS], &c)))) {
        rtxn_end(&t);
        return rc;
    }
    MDB_val k, v;
    int mrc;
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_FIRST); mrc == 0 && rc == 0;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        const uint8_t *p = k.mv_data;
        int64_t next;
        if (k.mv_size < 6 || k.mv_size != (size_t)p[0] + 5 ||
            record_i64_decode(v.mv_data, v.mv_size, &next)) {
            rc = -EBADMSG;
            break;
        }
        rc = fn(arg, (const char *)p + 1, p[0], (int32_t)get_u32be(p + 1 + p[0]), next);
    }
    if (rc == 0 && mrc != MDB_NOTFOUND)
        rc = errno_of(mrc);
    mdb_cursor_close(c);
    rtxn_end(&t);
    return rc;
}

/* ---- Closing ------------------------------------------------------------------------------ */

/* Closes the batch of open_date entry (date, seq) -> batch key bkv. The entry's bytes are
 * copied first: the writes below may move the pages they point into. */
static void close_one(struct stx *t, const MDB_val *k, const MDB_val *bkv)
{
    struct settle_batch b;
    uint8_t bk[BKEY_MAX], dk[12], seqk[8], v[BATCH_MAX];
    char ev[SETTLE_OUT_EVENT_MAX_BYTES];
    if (bkv->mv_size > sizeof(bk) || k->mv_size != sizeof(dk)) {
        tfail(t, MDB_CORRUPTED);
        return;
    }
    size_t bklen = bkv->mv_size;
    memcpy(bk, bkv->mv_data, bklen);
    memcpy(dk, k->mv_data, sizeof(dk));
    uint64_t seq = record_get_u64be(dk + 4);
    if (batch_read(t, bk, bklen, &b))
        return;
    if (b.closed || b.seq != seq || (uint32_t)b.key.date != get_u32be(dk)) {
        tfail(t, MDB_CORRUPTED);
        return;
    }
    settle_batch_close(&b, t->now_ms);
    if (tdel(t, D_OPEN_DATE, dk, sizeof(dk)) || tdel(t, D_OPEN_SEQ, seqk, key_seq(seqk, seq)) ||
        tput(t, D_BATCHES, bk, bklen, v, batch_encode(v, &b), 0))
        return;
    struct jw w;
    jw_init(&w, ev, sizeof(ev));
    settle_render_closed_event(&w, &b);
    ASSERT(jw_finish(&w) == 0);
    outbox_append(t, "settlement.closed", b.key.merchant_id, b.key.merchant_id_len, ev, w.len, NULL,
                  0);
    t->d.batches_closed++;
    t->d.open_batches--;
}

struct close_run {
    int32_t first, last;    /* close open batches with first <= date <= last */
    int32_t mark_date;      /* a date to mark closed (close request), or -1 */
    int32_t through;        /* advance closed_through to this (automatic), or -1 */
    bool more;              /* out: open batches of the range are left */
    uint64_t closed;        /* out */
    uint64_t closed_before; /* batches the earlier transactions of this call closed */
};

static void close_body(struct stx *t, void *arg)
{
    struct close_run *r = arg;
    r->more = false;
    r->closed = 0;
    if (r->mark_date >= 0 && r->mark_date > t->closed_through) {
        uint8_t dk[4], v[RECORD_I64_BYTES];
        MDB_val old;
        put_u32be(dk, (uint32_t)r->mark_date);
        record_i64_encode(v, t->now_ms);
        if (tget(t, D_DATES, dk, sizeof(dk), &old) == -ENOENT)
            tput(t, D_DATES, dk, sizeof(dk), v, sizeof(v), 0);
    }
    if (r->through > t->closed_through && meta_put(t, "closed_through", r->through) == 0)
        t->closed_through = r->through;
    MDB_cursor *c = NULL;
    if (cursor_open(t, D_OPEN_DATE, &c))
        return;
    uint8_t kb[12];
    key_date_seq(kb, r->first, 0);
    uint64_t before = t->d.batches_closed;
    int rc = 0;
    /* Each close deletes its entry, so the first entry from `first` on is the next one. */
    while (t->err == 0) {
        MDB_val k = {.mv_size = sizeof(kb), .mv_data = kb}, v;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
        if (rc)
            break;
        if (k.mv_size != 12) {
            tfail(t, MDB_CORRUPTED);
            break;
        }
        if ((int32_t)get_u32be(k.mv_data) > r->last)
            break;
        if (t->d.batches_closed - before == SETTLE_CLOSE_MAX) {
            r->more = true;
            break;
        }
        close_one(t, &k, &v);
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND)
        tfail(t, rc);
    r->closed = t->d.batches_closed - before;
    if (!r->more)
        idem_emit(t, IDEM_AT_CLOSE,
                  &(struct settle_idem_result){.closed = r->closed_before + r->closed});
}

static int close_loop(struct settle_store *s, struct settle_calendar *cal, int64_t now_ms,
                      struct close_run *r, uint64_t *closed)
{
    uint64_t total = 0;
    int rc;
    do {
        r->closed_before = total;
        rc = txn_run(s, cal, now_ms, close_body, r);
        if (rc == 0)
            total += r->closed;
    } while (rc == 0 && r->more);
    if (closed)
        *closed = total;
    return rc;
}

int settle_store_close_date(struct settle_store *s, struct settle_calendar *cal, int32_t date,
                            int64_t now_ms, uint64_t *closed)
{
    ASSERT(s != NULL && cal != NULL);
    int32_t today;
    if (closed)
        *closed = 0;
    if (date < SETTLE_DATE_MIN || date > SETTLE_DATE_MAX ||
        settle_business_date(cal, now_ms, &today) || date > today)
        return -EINVAL;
    struct close_run r = {.first = date, .last = date, .mark_date = date, .through = -1};
    return close_loop(s, cal, now_ms, &r, closed);
}

int settle_store_close_due(struct settle_store *s, struct settle_calendar *cal, int64_t now_ms,
                           uint64_t *closed)
{
    ASSERT(s != NULL && cal != NULL);
    int32_t due;
    if (closed)
        *closed = 0;
    int rc = settle_due_through(cal, now_ms, &due);
    if (rc)
        return rc;
    if (due < SETTLE_DATE_MIN)
        return 0;
    struct close_run r = {.first = SETTLE_DATE_MIN, .last = due, .mark_date = -1, .through = due};
    return close_loop(s, cal, now_ms, &r, closed);
}

/* ---- Reading batches -------------------------------------------------------------------- */

int settle_store_batch_get(struct settle_store *s, const struct settle_key *k,
                           struct settle_batch *out)
{
    struct stx t;
    int rc = rtxn_begin(s, &t);
    if (rc)
        return rc;
    rc = op_batch_get(&t, k, out);
    rtxn_end(&t);
    return errno_of(rc);
}

static bool filter_match(const struct settle_filter *f, const struct settle_batch *b)
{
    if (f->has_merchant && (f->merchant_id_len != b->key.merchant_id_len ||
                            memcmp(f->merchant_id, b->key.merchant_id, f->merchant_id_len) != 0))
        return false;
    if (f->has_date && f->date != b->key.date)
        return false;
    return f->status == SETTLE_ANY || (f->status == SETTLE_OPEN) == !b->closed;
}

/* Pages an index whose keys are [prefix][seq BE] and values batch keys. */
static int list_index(struct stx *t, int dbi, const uint8_t *prefix, size_t plen,
                      const struct settle_filter *f, uint64_t after, uint32_t limit,
                      settle_batch_visit_fn fn, void *arg, uint64_t *next_after)
{
    uint8_t kb[1 + MERCHANT_ID_MAX_BYTES + 8];
    MDB_cursor *c = NULL;
    *next_after = 0;
    if (after == UINT64_MAX)
        return 0;
    int rc = errno_of(mdb_cursor_open(t->txn, t->s->dbi[dbi], &c));
    if (rc)
        return rc;
    memcpy(kb, prefix, plen);
    record_put_u64be(kb + plen, after + 1);
    MDB_val k = {.mv_size = plen + 8, .mv_data = kb}, v;
    uint32_t returned = 0, examined = 0;
    uint64_t last = 0;
    int mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    for (; mrc == 0 && rc == 0; mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != plen + 8 || memcmp(k.mv_data, prefix, plen) != 0)
            break;
        if (returned == limit || examined == SETTLE_LIST_SCAN_MAX) {
            *next_after = last; /* a row follows */
            break;
        }
        struct settle_batch b;
        last = record_get_u64be((const uint8_t *)k.mv_data + plen);
        examined++;
        rc = batch_read(t, v.mv_data, v.mv_size, &b);
        if (rc) {
            rc = rc == -ENOENT ? -EBADMSG : rc; /* an index entry without its batch */
            break;
        }
        if (b.seq != last) {
            rc = -EBADMSG;
            break;
        }
        if (filter_match(f, &b)) {
            returned++;
            rc = fn(arg, &b);
        }
    }
    if (rc == 0 && mrc && mrc != MDB_NOTFOUND)
        rc = errno_of(mrc);
    mdb_cursor_close(c);
    return errno_of(rc);
}

int settle_store_batch_list(struct settle_store *s, const struct settle_filter *f, uint64_t after,
                            uint32_t limit, settle_batch_visit_fn fn, void *arg,
                            uint64_t *next_after)
{
    ASSERT(s != NULL && f != NULL && fn != NULL && next_after != NULL);
    ASSERT(limit >= 1 && limit <= SETTLE_PAGE_MAX);
    struct stx t;
    uint8_t prefix[1 + MERCHANT_ID_MAX_BYTES];
    size_t plen = 0;
    int dbi = D_BATCH_SEQ;
    int rc = rtxn_begin(s, &t);
    if (rc)
        return rc;
    if (f->has_merchant) {
        dbi = D_BATCH_MERCH;
        plen = record_key_merchant(prefix, f->merchant_id, f->merchant_id_len);
    } else if (f->has_date) {
        dbi = D_BATCH_DATE;
        put_u32be(prefix, (uint32_t)f->date);
        plen = 4;
    } else if (f->status == SETTLE_OPEN) {
        dbi = D_OPEN_SEQ;
    }
    rc = list_index(&t, dbi, prefix, plen, f, after, limit, fn, arg, next_after);
    rtxn_end(&t);
    return rc;
}

int settle_store_adjustments(struct settle_store *s, const struct settle_key *k,
                             settle_adjustment_visit_fn fn, void *arg)
{
    struct stx t;
    uint8_t bk[BKEY_MAX];
    MDB_cursor *c = NULL;
    int rc = rtxn_begin(s, &t);
    if (rc)
        return rc;
    size_t n = bkey_encode(bk, k);
    if ((rc = errno_of(mdb_cursor_open(t.txn, s->dbi[D_ADJUST], &c)))) {
        rtxn_end(&t);
        return rc;
    }
    MDB_val key = {.mv_size = n, .mv_data = bk}, v;
    int mrc;
    for (mrc = mdb_cursor_get(c, &key, &v, MDB_SET_RANGE); mrc == 0 && rc == 0;
         mrc = mdb_cursor_get(c, &key, &v, MDB_NEXT)) {
        const uint8_t *p = v.mv_data, *kp = key.mv_data;
        if (key.mv_size != n + EKEY_LEN || memcmp(kp, bk, n) != 0)
            break;
        if (v.mv_size != 16 || p[0] != RECORD_VERSION) {
            rc = -EBADMSG;
            break;
        }
        struct settle_adjustment a;
        engine_event_id(a.event_id, kp[n], record_get_u64be(kp + n + 1));
        a.type = (enum settle_event_type)p[1];
        a.source_date = (int32_t)record_get_u32le(p + 4);
        a.amount = (int64_t)record_get_u64le(p + 8);
        rc = fn(arg, &a);
    }
    if (rc == 0 && mrc && mrc != MDB_NOTFOUND)
        rc = errno_of(mrc);
    mdb_cursor_close(c);
    rtxn_end(&t);
    return rc;
}

static int capture_read(struct stx *t, const char *pid, struct settle_capture *out)
{
    MDB_val v;
    int rc = tget(t, D_CAPTURES, pid, ID_BYTES, &v);
    if (rc)
        return rc;
    return capture_decode(v.mv_data, v.mv_size, pid, out) ? tfail(t, MDB_CORRUPTED) : 0;
}

int settle_store_capture_get(struct settle_store *s, const char *payment_id,
                             struct settle_capture *out)
{
    struct stx t;
    int rc = rtxn_begin(s, &t);
    if (rc)
        return rc;
    rc = capture_read(&t, payment_id, out);
    rtxn_end(&t);
    return errno_of(rc);
}

/* ---- Dead letters: list and replay ------------------------------------------------------ */

int settle_store_dlq_list(struct settle_store *s, uint64_t after, uint32_t limit, bool pending_only,
                          settle_dlq_visit_fn fn, void *arg, uint64_t *next_after)
{
    ASSERT(limit >= 1 && limit <= SETTLE_PAGE_MAX && next_after != NULL);
    struct stx t;
    MDB_cursor *c = NULL;
    *next_after = 0;
    int rc = rtxn_begin(s, &t);
    if (rc)
        return rc;
    if (after == UINT64_MAX || (rc = errno_of(mdb_cursor_open(t.txn, s->dbi[D_DLQ], &c)))) {
        rtxn_end(&t);
        return rc;
    }
    uint8_t kb[8];
    record_put_u64be(kb, after + 1);
    MDB_val k = {.mv_size = 8, .mv_data = kb}, v;
    uint32_t returned = 0, examined = 0;
    uint64_t last = 0;
    int mrc;
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); mrc == 0 && rc == 0;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (returned == limit || examined == SETTLE_LIST_SCAN_MAX) {
            *next_after = last;
            break;
        }
        struct settle_dead_letter d;
        last = k.mv_size == 8 ? record_get_u64be(k.mv_data) : 0;
        examined++;
        if (k.mv_size != 8 || dlq_decode(last, v.mv_data, v.mv_size, &d)) {
            rc = -EBADMSG;
            break;
        }
        if (pending_only && d.replayed)
            continue;
        returned++;
        rc = fn(arg, &d);
    }
    if (rc == 0 && mrc && mrc != MDB_NOTFOUND)
        rc = errno_of(mrc);
    mdb_cursor_close(c);
    rtxn_end(&t);
    return rc;
}

struct replay_run {
    uint64_t id;
    bool process; /* false: only mark replayed */
    enum settle_msg_result result;
    int status; /* 0, -ENOENT, -EALREADY */
};

/* Rewrites dead letter id's state (and reason) with a new record. */
static void dlq_rewrite(struct stx *t, const struct settle_dead_letter *d, bool replayed,
                        const char *reason, size_t rlen)
{
    struct settle_msg m = {.topic = d->topic,
                           .topic_len = d->topic_len,
                           .partition = d->partition,
                           .offset = d->offset,
                           .key = d->key,
                           .key_len = d->key_len,
                           .value = d->value,
                           .value_len = d->value_len};
    size_t size = DLQ_FIXED + d->topic_len + rlen + d->key_len + d->value_len;
    uint8_t k[8], *p;
    /* Copy out of the map first: the reserve may move the old record's pages. */
    uint8_t *copy = malloc(size);
    if (copy == NULL) {
        tfail(t, -ENOMEM); /* this call's failure, not the store's */
        return;
    }
    memset(copy, 0, DLQ_FIXED);
    copy[0] = RECORD_VERSION;
    copy[1] = replayed ? 2 : 1;
    copy[2] = (uint8_t)d->topic_len;
    copy[3] = d->truncated;
    copy[4] = (uint8_t)rlen;
    copy[5] = d->key ? 1 : 0;
    copy[6] = (uint8_t)(d->key_len >> 8);
    copy[7] = (uint8_t)d->key_len;
    record_put_u32le(copy + 8, (uint32_t)m.partition);
    record_put_u64le(copy + 16, (uint64_t)m.offset);
    record_put_u64le(copy + 24, (uint64_t)d->created_at_ms);
    record_put_u64le(copy + 32, (uint64_t)(replayed ? t->now_ms : -1));
    record_put_u32le(copy + 40, (uint32_t)d->value_len);
    record_put_u32le(copy + 44, (uint32_t)d->value_len);
    uint8_t *w = copy + DLQ_FIXED;
    put_bytes(w, d->topic, d->topic_len);
    put_bytes(w + d->topic_len, reason, rlen);
    put_bytes(w + d->topic_len + rlen, d->key, d->key_len);
    put_bytes(w + d->topic_len + rlen + d->key_len, d->value, d->value_len);
    record_put_u64be(k, d->id);
    if (treserve(t, D_DLQ, k, sizeof(k), size, (void **)&p) == 0)
        memcpy(p, copy, size);
    free(copy);
}

static void replay_body(struct stx *t, void *arg)
{
    struct replay_run *r = arg;
    uint8_t k[8];
    MDB_val v;
    struct settle_dead_letter d;
    r->status = 0;
    record_put_u64be(k, r->id);
    int rc = tget(t, D_DLQ, k, sizeof(k), &v);
    if (rc == -ENOENT) {
        r->status = -ENOENT;
        return;
    }
    if (rc)
        return;
    if (dlq_decode(r->id, v.mv_data, v.mv_size, &d)) {
        tfail(t, MDB_CORRUPTED);
        return;
    }
    if (d.replayed) {
        r->status = -EALREADY;
        return;
    }
    if (!r->process) {
        dlq_rewrite(t, &d, true, d.reason, d.reason_len);
        return;
    }
    struct settle_event ev;
    struct settle_result res;
    char reason[SETTLE_REASON_MAX_BYTES + 1];
    const char *why = NULL;
    if (d.truncated)
        why = "the stored value was cut at the dead-letter bound";
    else if (settle_event_parse(d.topic, d.topic_len, d.value, d.value_len, &ev, reason))
        why = reason;
    else if (settle_apply_event(&store_ops, t, t->cal, &ev, t->now_ms, &res))
        return;
    else if (res.outcome == SETTLE_REFUSED)
        why = res.reason;
    if (why) {
        r->result = SETTLE_MSG_DEAD_LETTER;
        dlq_rewrite(t, &d, false, why, strlen(why));
        idem_emit(t, IDEM_AT_DLQ, &(struct settle_idem_result){.outcome = r->result});
        return;
    }
    r->result = res.outcome == SETTLE_COUNTED     ? SETTLE_MSG_COUNTED
                : res.outcome == SETTLE_ADJUSTED  ? SETTLE_MSG_ADJUSTED
                : res.outcome == SETTLE_DUPLICATE ? SETTLE_MSG_DUPLICATE
                                                  : SETTLE_MSG_IGNORED;
    t->d.counted += res.outcome == SETTLE_COUNTED;
    t->d.adjusted += res.outcome == SETTLE_ADJUSTED;
    dlq_rewrite(t, &d, true, d.reason, d.reason_len);
    idem_emit(t, IDEM_AT_DLQ, &(struct settle_idem_result){.outcome = r->result});
}

int settle_store_dlq_replay(struct settle_store *s, struct settle_calendar *cal, uint64_t id,
                            int64_t now_ms, enum settle_msg_result *result)
{
    ASSERT(s != NULL && cal != NULL);
    struct replay_run r = {.id = id, .process = true};
    int rc = txn_run(s, cal, now_ms, replay_body, &r);
    if (rc == 0 && result)
        *result = r.result;
    return rc ? rc : r.status;
}

int settle_store_dlq_mark_replayed(struct settle_store *s, uint64_t id, int64_t now_ms)
{
    struct replay_run r = {.id = id, .process = false};
    int rc = txn_run(s, NULL, now_ms, replay_body, &r);
    return rc ? rc : r.status;
}

/* ---- Reconciliation ------------------------------------------------------------------- */

#define FILE_REC_BYTES 104
#define ITEM_FIXED     80

static void file_encode(uint8_t out[FILE_REC_BYTES], const struct recon_summary *s,
                        uint64_t next_item, uint32_t ndates)
{
    memset(out, 0, FILE_REC_BYTES);
    out[0] = RECORD_VERSION;
    out[1] = (uint8_t)s->status;
    record_put_u32le(out + 4, s->rematches);
    record_put_u64le(out + 8, s->lines);
    for (int c = 0; c < RECON_CATEGORIES; c++)
        record_put_u64le(out + 16 + 8 * c, s->counts[c]);
    record_put_u64le(out + 72, (uint64_t)s->created_at_ms);
    record_put_u64le(out + 80, next_item);
    record_put_u32le(out + 88, ndates);
}

static int file_decode(uint64_t seq, const void *data, size_t len, struct recon_summary *s,
                       uint64_t *next_item, uint32_t *ndates)
{
    const uint8_t *p = data;
    if (len != FILE_REC_BYTES || p[0] != RECORD_VERSION || p[1] < RECON_STATUS_PROCESSING ||
        p[1] > RECON_STATUS_FAILED)
        return -EBADMSG;
    memset(s, 0, sizeof(*s));
    s->seq = seq;
    s->status = (enum recon_status)p[1];
    s->rematches = record_get_u32le(p + 4);
    s->lines = record_get_u64le(p + 8);
    uint64_t sum = 0;
    for (int c = 0; c < RECON_CATEGORIES; c++) {
        s->counts[c] = record_get_u64le(p + 16 + 8 * c);
        if (c != RECON_MISSING_IN_BANK)
            sum += s->counts[c];
    }
    s->created_at_ms = (int64_t)record_get_u64le(p + 72);
    *next_item = record_get_u64le(p + 80);
    *ndates = record_get_u32le(p + 88);
    return sum == s->lines ? 0 : -EBADMSG;
}

static size_t item_key(uint8_t k[16], uint64_t file, uint64_t item)
{
    record_put_u64be(k, file);
    record_put_u64be(k + 8, item);
    return 16;
}

static int item_put(struct stx *t, uint64_t file, const struct recon_item *it)
{
    size_t rlen = it->reason ? strlen(it->reason) : 0;
    ASSERT(rlen < 256 && it->category != RECON_MATCHED);
    size_t mlen = it->has_capture ? it->capture.merchant_id_len : 0;
    size_t size = ITEM_FIXED + it->transaction_id_len + mlen + rlen;
    uint8_t k[16], *p;
    if (treserve(t, D_RECON_ITEMS, k, item_key(k, file, it->item), size, (void **)&p))
        return t->err;
    memset(p, 0, ITEM_FIXED);
    p[0] = RECORD_VERSION;
    p[1] = (uint8_t)it->category;
    p[2] = it->transaction_id_len;
    p[3] = (uint8_t)((it->has_line_fields ? 1 : 0) | (it->has_capture ? 2 : 0));
    p[4] = (uint8_t)rlen;
    p[5] = (uint8_t)mlen;
    record_put_u64le(p + 8, it->item);
    record_put_u64le(p + 16, it->line);
    record_put_u64le(p + 24, (uint64_t)it->amount);
    record_put_u32le(p + 32, (uint32_t)it->value_date);
    memcpy(p + 36, it->currency, CURRENCY_BYTES);
    if (it->has_capture) {
        record_put_u64le(p + 40, (uint64_t)it->capture.amount);
        record_put_u32le(p + 48, (uint32_t)it->capture.value_date);
        memcpy(p + 52, it->capture.currency, CURRENCY_BYTES);
        memcpy(p + 56, it->capture.payment_id, ID_BYTES);
    }
    uint8_t *w = p + ITEM_FIXED;
    put_bytes(w, it->transaction_id, it->transaction_id_len);
    put_bytes(w + it->transaction_id_len, it->capture.merchant_id, mlen);
    put_bytes(w + it->transaction_id_len + mlen, it->reason, rlen);
    return 0;
}

/* Decodes an item; its reason points into data. */
static int item_decode(const void *data, size_t len, struct recon_item *it)
{
    const uint8_t *p = data;
    if (len < ITEM_FIXED || p[0] != RECORD_VERSION || p[1] == RECON_MATCHED ||
        p[1] >= RECON_CATEGORIES || p[2] > RECON_FIELD_MAX_BYTES || p[3] > 3 ||
        p[5] > MERCHANT_ID_MAX_BYTES || len != (size_t)ITEM_FIXED + p[2] + p[5] + p[4])
        return -EBADMSG;
    memset(it, 0, sizeof(*it));
    it->category = (enum recon_category)p[1];
    it->transaction_id_len = p[2];
    it->has_line_fields = p[3] & 1;
    it->has_capture = p[3] & 2;
    it->item = record_get_u64le(p + 8);
    it->line = record_get_u64le(p + 16);
    it->amount = (int64_t)record_get_u64le(p + 24);
    it->value_date = (int32_t)record_get_u32le(p + 32);
    memcpy(it->currency, p + 36, CURRENCY_BYTES);
    const uint8_t *w = p + ITEM_FIXED;
    memcpy(it->transaction_id, w, p[2]);
    if (it->has_capture) {
        it->capture.amount = (int64_t)record_get_u64le(p + 40);
        it->capture.value_date = (int32_t)record_get_u32le(p + 48);
        memcpy(it->capture.currency, p + 52, CURRENCY_BYTES);
        memcpy(it->capture.payment_id, p + 56, ID_BYTES);
        it->capture.merchant_id_len = p[5];
        memcpy(it->capture.merchant_id, w + p[2], p[5]);
        if (!record_merchant_valid(it->capture.merchant_id, p[5]))
            return -EBADMSG;
    }
    if (it->has_line_fields &&
        (it->value_date < SETTLE_DATE_MIN || it->value_date > SETTLE_DATE_MAX ||
         !record_currency_valid(it->currency)))
        return -EBADMSG;
    it->reason = p[4] ? (const char *)w + p[2] + p[5] : NULL;
    /* reason is not NUL-terminated in the map: renderers take it through reason_buf */
    return 0;
}

/* Publishes an unmatched item to recon.unmatched (key: the merchant when known). */
static int item_publish(struct stx *t, uint64_t file, const struct recon_item *it, uint32_t round)
{
    char ev[SETTLE_OUT_EVENT_MAX_BYTES];
    struct jw w;
    jw_init(&w, ev, sizeof(ev));
    recon_render_unmatched_event(&w, file, it, round, t->now_ms);
    ASSERT(jw_finish(&w) == 0);
    return outbox_append(t, "recon.unmatched", it->has_capture ? it->capture.merchant_id : NULL,
                         it->has_capture ? it->capture.merchant_id_len : 0, ev, w.len, NULL, 0);
}

/* A line waiting for its commit. */
struct pline {
    uint64_t line;
    const char *reason; /* malformed: why (static text); NULL: l is valid */
    struct recon_line l;
};

struct settle_recon {
    struct settle_store *s;
    struct csv_reader csv;
    int64_t now_ms;
    bool header_seen, header_bad, dead;
    const char *error;
    bool created;
    uint64_t seq;
    struct recon_summary sum; /* committed state */
    uint64_t next_item;
    uint32_t ndates;
    size_t npending;
    struct pline pending[RECON_COMMIT_LINES];
};

/* A data line's category and its writes; counts go to *sum. */
static void recon_line_apply(struct stx *t, uint64_t file, const struct pline *pl,
                             struct recon_summary *sum, uint32_t *ndates)
{
    struct recon_item it;
    memset(&it, 0, sizeof(it));
    it.item = it.line = pl->line;
    sum->lines++;
    t->d.recon_lines++;
    memcpy(it.transaction_id, pl->l.transaction_id, pl->l.transaction_id_len);
    it.transaction_id_len = pl->l.transaction_id_len;
    const char *why = pl->reason;
    uint8_t sk[8 + RECON_FIELD_MAX_BYTES], dk[12], lv[8];
    MDB_val v;
    if (why == NULL) {
        /* a new value date, within the per-file bound */
        record_put_u64be(dk, file);
        put_u32be(dk + 8, (uint32_t)pl->l.value_date);
        int rc = tget(t, D_RECON_DATES, dk, sizeof(dk), &v);
        if (rc == -ENOENT && *ndates == RECON_VALUE_DATES_MAX)
            why = "more than 366 value dates in one file";
        else if (rc == -ENOENT && tput(t, D_RECON_DATES, dk, sizeof(dk), NULL, 0, 0) == 0)
            (*ndates)++;
        else if (rc && rc != -ENOENT)
            return;
    }
    if (why) {
        it.category = RECON_MALFORMED;
        it.reason = why;
        sum->counts[RECON_MALFORMED]++;
        item_put(t, file, &it);
        item_publish(t, file, &it, 0);
        return;
    }
    it.has_line_fields = true;
    it.amount = pl->l.amount;
    memcpy(it.currency, pl->l.currency, CURRENCY_BYTES);
    it.value_date = pl->l.value_date;
    record_put_u64be(sk, file);
    memcpy(sk + 8, pl->l.transaction_id, pl->l.transaction_id_len);
    size_t sklen = 8 + pl->l.transaction_id_len;
    int rc = tget(t, D_RECON_SEEN, sk, sklen, &v);
    if (rc && rc != -ENOENT)
        return;
    bool dup = rc == 0;
    struct settle_capture cap;
    bool known = false;
    if (!dup) {
        record_put_u64le(lv, pl->line);
        tput(t, D_RECON_SEEN, sk, sklen, lv, sizeof(lv), 0);
        if (pl->l.transaction_id_len == ID_BYTES) {
            rc = capture_read(t, pl->l.transaction_id, &cap);
            if (rc && rc != -ENOENT)
                return;
            known = rc == 0;
        }
    }
    it.category = recon_classify(&pl->l, known ? &cap : NULL, dup);
    sum->counts[it.category]++;
    if (it.category == RECON_MATCHED)
        return;
    if (known) {
        it.has_capture = true;
        it.capture = cap;
    }
    item_put(t, file, &it);
    item_publish(t, file, &it, 0);
}

struct flush_run {
    struct settle_recon *r;
    struct recon_summary sum; /* out: the new committed state */
    uint32_t ndates;
    uint64_t seq;
    enum recon_status status;
    uint64_t next_item;
};

static void flush_body(struct stx *t, void *arg)
{
    struct flush_run *f = arg;
    struct settle_recon *r = f->r;
    f->sum = r->sum;
    f->ndates = r->ndates;
    f->seq = r->seq;
    if (!r->created) {
        if (meta_next(t, "seq:file", &f->seq))
            return;
        memset(&f->sum, 0, sizeof(f->sum));
        f->sum.seq = f->seq;
        f->sum.created_at_ms = r->now_ms;
    }
    f->sum.status = f->status;
    for (size_t i = 0; i < r->npending && t->err == 0; i++)
        recon_line_apply(t, f->seq, &r->pending[i], &f->sum, &f->ndates);
    uint8_t k[8], v[FILE_REC_BYTES];
    record_put_u64be(k, f->seq);
    file_encode(v, &f->sum, f->next_item, f->ndates);
    tput(t, D_RECON_FILES, k, sizeof(k), v, sizeof(v), 0);
}

/* Commits the pending lines (and the file record, created on the first call). */
static int recon_flush(struct settle_recon *r, enum recon_status status)
{
    struct flush_run f = {.r = r, .status = status, .next_item = r->next_item};
    int rc = txn_run(r->s, NULL, r->now_ms, flush_body, &f);
    if (rc)
        return rc;
    r->created = true;
    r->seq = f.seq;
    r->sum = f.sum;
    r->ndates = f.ndates;
    r->npending = 0;
    return 0;
}

static int recon_line_cb(void *arg, const struct csv_line *line)
{
    struct settle_recon *r = arg;
    if (!r->header_seen) {
        r->header_seen = true;
        if (recon_header_check(line)) {
            r->header_bad = true;
            r->error = "the header row must be exactly " RECON_HEADER;
            return -EPROTO;
        }
        return 0;
    }
    struct pline *pl = &r->pending[r->npending++];
    memset(pl, 0, sizeof(*pl));
    pl->line = line->number;
    if (recon_line_parse(line, &pl->l, &pl->reason)) {
        /* keep a printable transaction id of a malformed line, to show it */
        const struct csv_field *f0 = line->nfields ? &line->fields[0] : NULL;
        bool ok = f0 && f0->len >= 1 && f0->len <= RECON_FIELD_MAX_BYTES;
        for (size_t i = 0; ok && i < f0->len; i++)
            ok = f0->ptr[i] > 0x20 && f0->ptr[i] < 0x7f;
        if (ok) {
            memcpy(pl->l.transaction_id, f0->ptr, f0->len);
            pl->l.transaction_id_len = (uint8_t)f0->len;
        }
    }
    if (r->npending == RECON_COMMIT_LINES)
        return recon_flush(r, RECON_STATUS_PROCESSING);
    return 0;
}

int settle_recon_begin(struct settle_store *s, int64_t now_ms, struct settle_recon **out)
{
    ASSERT(s != NULL && out != NULL);
    if (s->failed)
        return s->failed;
    struct settle_recon *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->s = s;
    r->now_ms = now_ms;
    csv_init(&r->csv);
    *out = r;
    return 0;
}

int settle_recon_feed(struct settle_recon *r, const void *data, size_t len)
{
    ASSERT(r != NULL && !r->dead);
    int rc = csv_feed(&r->csv, data, len, recon_line_cb, r);
    if (rc)
        r->dead = true;
    return rc;
}

const char *settle_recon_error(const struct settle_recon *r)
{
    return r->error;
}

uint64_t settle_recon_lines(const struct settle_recon *r)
{
    return r->sum.lines + r->npending;
}

/* missing_in_bank: the captures of the file's value dates that the file does not name
 * and that are not listed yet, RECON_COMMIT_LINES items per transaction. */
struct missing_run {
    uint64_t file;
    uint32_t round;
    int32_t date;       /* resume position: the date ... */
    char pid[ID_BYTES]; /* ... and the payment after which to go on (pid_set) */
    bool pid_set;
    bool done;
    struct recon_summary sum; /* in/out */
    uint64_t next_item;       /* in/out */
    uint32_t ndates;
    struct recon_summary sum_in;
    uint64_t next_item_in;
    int32_t date_in;
    char pid_in[ID_BYTES];
    bool pid_set_in;
};

/* Lists the missing captures of one date from the resume position; returns the items
 * added, stopping at budget. */
static size_t missing_date(struct stx *t, struct missing_run *m, size_t budget)
{
    uint8_t kb[4 + ID_BYTES], sk[8 + ID_BYTES];
    MDB_cursor *c = NULL;
    size_t added = 0;
    if (cursor_open(t, D_CAPTURE_DATE, &c))
        return 0;
    put_u32be(kb, (uint32_t)m->date);
    memset(kb + 4, 0, ID_BYTES);
    if (m->pid_set)
        memcpy(kb + 4, m->pid, ID_BYTES);
    MDB_val k = {.mv_size = sizeof(kb), .mv_data = kb}, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    if (rc == 0 && m->pid_set && k.mv_size == sizeof(kb) && memcmp(k.mv_data, kb, sizeof(kb)) == 0)
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    for (; rc == 0 && t->err == 0; rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != sizeof(kb) || get_u32be(k.mv_data) != (uint32_t)m->date)
            break;
        if (added == budget)
            break;
        const char *pid = (const char *)k.mv_data + 4;
        memcpy(m->pid, pid, ID_BYTES);
        m->pid_set = true;
        record_put_u64be(sk, m->file);
        memcpy(sk + 8, pid, ID_BYTES);
        MDB_val sv;
        int src = tget(t, D_RECON_SEEN, sk, sizeof(sk), &sv);
        if (src == 0)
            continue; /* named by a line, or listed already */
        if (src != -ENOENT)
            break;
        struct recon_item it;
        memset(&it, 0, sizeof(it));
        if (capture_read(t, pid, &it.capture))
            break;
        it.has_capture = true;
        it.category = RECON_MISSING_IN_BANK;
        it.item = m->next_item++;
        memcpy(it.transaction_id, pid, ID_BYTES);
        it.transaction_id_len = ID_BYTES;
        uint8_t zero[8] = {0};
        tput(t, D_RECON_SEEN, sk, sizeof(sk), zero, sizeof(zero), 0);
        item_put(t, m->file, &it);
        item_publish(t, m->file, &it, m->round);
        m->sum.counts[RECON_MISSING_IN_BANK]++;
        added++;
    }
    bool date_done = rc == MDB_NOTFOUND || (rc == 0 && added < budget);
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND)
        tfail(t, rc);
    if (date_done) {
        m->pid_set = false;
        m->date++; /* the next file date is found from here */
    }
    return added;
}

/* The next value date of the file at or after m->date, or false. */
static bool next_file_date(struct stx *t, struct missing_run *m)
{
    uint8_t kb[12];
    MDB_cursor *c = NULL;
    if (cursor_open(t, D_RECON_DATES, &c))
        return false;
    record_put_u64be(kb, m->file);
    put_u32be(kb + 8, (uint32_t)m->date);
    MDB_val k = {.mv_size = sizeof(kb), .mv_data = kb}, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    bool found = rc == 0 && k.mv_size == 12 && memcmp(k.mv_data, kb, 8) == 0;
    if (found) {
        int32_t d = (int32_t)get_u32be((const uint8_t *)k.mv_data + 8);
        if (d != m->date)
            m->pid_set = false;
        m->date = d;
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND)
        tfail(t, rc);
    return found;
}

static void missing_body(struct stx *t, void *arg)
{
    struct missing_run *m = arg;
    /* a retried body starts from the same position */
    m->sum = m->sum_in;
    m->next_item = m->next_item_in;
    m->date = m->date_in;
    memcpy(m->pid, m->pid_in, ID_BYTES);
    m->pid_set = m->pid_set_in;
    size_t budget = RECON_COMMIT_LINES;
    m->done = false;
    while (budget > 0 && t->err == 0) {
        if (!next_file_date(t, m)) {
            m->done = true;
            break;
        }
        budget -= missing_date(t, m, budget);
    }
    uint8_t k[8], v[FILE_REC_BYTES];
    record_put_u64be(k, m->file);
    file_encode(v, &m->sum, m->next_item, m->ndates);
    tput(t, D_RECON_FILES, k, sizeof(k), v, sizeof(v), 0);
    if (m->done) /* a rematch's last transaction (an upload's is status_body) */
        idem_emit(t, IDEM_AT_REMATCH, &(struct settle_idem_result){.sum = &m->sum});
}

static int missing_pass(struct settle_store *s, int64_t now_ms, uint64_t file, uint32_t round,
                        struct recon_summary *sum, uint64_t *next_item, uint32_t ndates)
{
    struct missing_run m = {.file = file, .round = round, .ndates = ndates};
    m.sum_in = *sum;
    m.next_item_in = *next_item;
    m.date_in = SETTLE_DATE_MIN;
    for (;;) {
        int rc = txn_run(s, NULL, now_ms, missing_body, &m);
        if (rc)
            return rc;
        m.sum_in = m.sum;
        m.next_item_in = m.next_item;
        m.date_in = m.date;
        memcpy(m.pid_in, m.pid, ID_BYTES);
        m.pid_set_in = m.pid_set;
        if (m.done)
            break;
    }
    *sum = m.sum;
    *next_item = m.next_item;
    return 0;
}

static void status_body(struct stx *t, void *arg)
{
    struct flush_run *f = arg;
    uint8_t k[8], v[FILE_REC_BYTES];
    record_put_u64be(k, f->seq);
    file_encode(v, &f->sum, f->next_item, f->ndates);
    tput(t, D_RECON_FILES, k, sizeof(k), v, sizeof(v), 0);
    if (f->sum.status == RECON_STATUS_DONE)
        idem_emit(t, IDEM_AT_UPLOAD, &(struct settle_idem_result){.sum = &f->sum});
}

int settle_recon_finish(struct settle_recon *r, struct recon_summary *out)
{
    ASSERT(r != NULL && out != NULL);
    int rc = r->dead ? -EPROTO : csv_finish(&r->csv, recon_line_cb, r);
    if (rc == 0 && !r->header_seen) {
        r->error = "the body is empty: the header row " RECON_HEADER " is missing";
        rc = -EPROTO;
    }
    /* items of missing payments are numbered after the file's last line */
    r->next_item = r->csv.line;
    if (rc == 0)
        rc = recon_flush(r, RECON_STATUS_PROCESSING);
    if (rc == 0)
        rc = missing_pass(r->s, r->now_ms, r->seq, 0, &r->sum, &r->next_item, r->ndates);
    if (rc == 0) {
        struct flush_run f = {
            .r = r, .seq = r->seq, .sum = r->sum, .next_item = r->next_item, .ndates = r->ndates};
        f.sum.status = RECON_STATUS_DONE;
        rc = txn_run(r->s, NULL, r->now_ms, status_body, &f);
        if (rc == 0)
            r->sum = f.sum;
    }
    if (rc == 0)
        *out = r->sum;
    free(r);
    return rc;
}

void settle_recon_abort(struct settle_recon *r)
{
    if (r == NULL)
        return;
    if (r->created && !r->s->failed) {
        struct flush_run f = {
            .r = r, .seq = r->seq, .sum = r->sum, .next_item = r->next_item, .ndates = r->ndates};
        f.sum.status = RECON_STATUS_FAILED;
        txn_run(r->s, NULL, r->now_ms, status_body, &f);
    }
    free(r);
}

/* At open: uploads a crash cut short are failed. */
static void recover_uploads(struct stx *t, void *arg)
{
    (void)arg;
    MDB_cursor *c = NULL;
    if (cursor_open(t, D_RECON_FILES, &c))
        return;
    MDB_val k, v;
    int rc;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST); rc == 0 && t->err == 0;
         rc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        struct recon_summary s;
        uint64_t next_item;
        uint32_t ndates;
        if (k.mv_size != 8 || file_decode(record_get_u64be(k.mv_data), v.mv_data, v.mv_size, &s,
                                          &next_item, &ndates)) {
            rc = MDB_CORRUPTED;
            break;
        }
        if (s.status != RECON_STATUS_PROCESSING)
            continue;
        s.status = RECON_STATUS_FAILED;
        uint8_t nv[FILE_REC_BYTES];
        file_encode(nv, &s, next_item, ndates);
        MDB_val val = {.mv_size = sizeof(nv), .mv_data = nv};
        rc = mdb_cursor_put(c, &k, &val, MDB_CURRENT);
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND)
        tfail(t, rc);
}

static int file_read(struct stx *t, uint64_t file, struct recon_summary *s, uint64_t *next_item,
                     uint32_t *ndates)
{
    uint8_t k[8];
    MDB_val v;
    record_put_u64be(k, file);
    int rc = tget(t, D_RECON_FILES, k, sizeof(k), &v);
    if (rc)
        return rc;
    return file_decode(file, v.mv_data, v.mv_size, s, next_item, ndates) ? tfail(t, MDB_CORRUPTED)
                                                                         : 0;
}

int settle_store_recon_get(struct settle_store *s, uint64_t file_seq, struct recon_summary *out)
{
    struct stx t;
    uint64_t next_item;
    uint32_t ndates;
    int rc = rtxn_begin(s, &t);
    if (rc)
        return rc;
    rc = file_read(&t, file_seq, out, &next_item, &ndates);
    rtxn_end(&t);
    return errno_of(rc);
}

int settle_store_recon_items(struct settle_store *s, uint64_t file_seq, uint64_t after,
                             uint32_t limit, settle_item_visit_fn fn, void *arg,
                             uint64_t *next_after)
{
    ASSERT(limit >= 1 && limit <= SETTLE_PAGE_MAX && next_after != NULL);
    struct stx t;
    MDB_cursor *c = NULL;
    *next_after = 0;
    int rc = rtxn_begin(s, &t);
    if (rc)
        return rc;
    if (after == UINT64_MAX || (rc = errno_of(mdb_cursor_open(t.txn, s->dbi[D_RECON_ITEMS], &c)))) {
        rtxn_end(&t);
        return rc;
    }
    uint8_t kb[16];
    MDB_val k = {.mv_size = item_key(kb, file_seq, after + 1), .mv_data = kb}, v;
    uint32_t returned = 0;
    uint64_t last = 0;
    int mrc;
    for (mrc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); mrc == 0 && rc == 0;
         mrc = mdb_cursor_get(c, &k, &v, MDB_NEXT)) {
        if (k.mv_size != 16 || record_get_u64be(k.mv_data) != file_seq)
            break;
        if (returned == limit) {
            *next_after = last;
            break;
        }
        struct recon_item it;
        char reason[256];
        last = record_get_u64be((const uint8_t *)k.mv_data + 8);
        if (item_decode(v.mv_data, v.mv_size, &it) || it.item != last) {
            rc = -EBADMSG;
            break;
        }
        if (it.reason) { /* NUL-terminate a copy for the callback */
            size_t rl = ((const uint8_t *)v.mv_data)[4];
            memcpy(reason, it.reason, rl);
            reason[rl] = '\0';
            it.reason = reason;
        }
        returned++;
        rc = fn(arg, &it);
    }
    if (rc == 0 && mrc && mrc != MDB_NOTFOUND)
        rc = errno_of(mrc);
    mdb_cursor_close(c);
    rtxn_end(&t);
    return rc;
}

/* Rematch: the reclassification of a file's items, RECON_COMMIT_LINES per transaction. */
struct rematch_run {
    uint64_t file;
    uint32_t round;
    uint64_t pos, pos_in; /* the last item examined */
    bool done;
    struct recon_summary sum, sum_in;
    uint64_t next_item;
    uint32_t ndates;
};

/* One item again: 1 when it changed. */
static int rematch_item(struct stx *t, struct rematch_run *m, MDB_cursor *c, struct recon_item *it)
{
    if (it->category != RECON_AMOUNT_MISMATCH && it->category != RECON_CURRENCY_MISMATCH &&
        it->category != RECON_UNKNOWN_TRANSACTION)
        return 0;
    struct recon_line l;
    memset(&l, 0, sizeof(l));
    memcpy(l.transaction_id, it->transaction_id, it->transaction_id_len);
    l.transaction_id_len = it->transaction_id_len;
    l.amount = it->amount;
    memcpy(l.currency, it->currency, CURRENCY_BYTES);
    l.value_date = it->value_date;
    struct settle_capture cap;
    bool known = false;
    if (l.transaction_id_len == ID_BYTES) {
        int rc = capture_read(t, l.transaction_id, &cap);
        if (rc && rc != -ENOENT)
            return rc;
        known = rc == 0;
    }
    enum recon_category now = recon_classify(&l, known ? &cap : NULL, false);
    if (now == it->category)
        return 0;
    m->sum.counts[it->category]--;
    m->sum.counts[now]++;
    if (now == RECON_MATCHED)
        return tfail(t, mdb_cursor_del(c, 0)) ? t->err : 1;
    it->category = now;
    it->has_capture = known;
    if (known)
        it->capture = cap;
    item_put(t, m->file, it);
    item_publish(t, m->file, it, m->round);
    return 1;
}

static void rematch_body(struct stx *t, void *arg)
{
    struct rematch_run *m = arg;
    m->sum = m->sum_in;
    m->pos = m->pos_in;
    m->done = false;
    MDB_cursor *c = NULL;
    if (cursor_open(t, D_RECON_ITEMS, &c))
        return;
    uint8_t kb[16];
    MDB_val k = {.mv_size = item_key(kb, m->file, m->pos + 1), .mv_data = kb}, v;
    size_t n = 0;
    int rc;
    for (rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE); rc == 0 && t->err == 0;) {
        if (k.mv_size != 16 || record_get_u64be(k.mv_data) != m->file) {
            rc = MDB_NOTFOUND;
            break;
        }
        if (n == RECON_COMMIT_LINES)
            break;
        struct recon_item it;
        char reason[256];
        if (item_decode(v.mv_data, v.mv_size, &it)) {
            rc = MDB_CORRUPTED;
            break;
        }
        if (it.reason) {
            size_t rl = ((const uint8_t *)v.mv_data)[4];
            memcpy(reason, it.reason, rl);
            reason[rl] = '\0';
            it.reason = reason;
        }
        m->pos = it.item;
        n++;
        int changed = rematch_item(t, m, c, &it);
        if (changed < 0)
            break;
        /* after a delete or a rewrite the cursor is re-seated past the item */
        k.mv_size = item_key(kb, m->file, m->pos + 1);
        k.mv_data = kb;
        rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    }
    mdb_cursor_close(c);
    if (rc == MDB_NOTFOUND)
        m->done = true;
    else if (rc)
        tfail(t, rc);
    uint8_t fk[8], fv[FILE_REC_BYTES];
    record_put_u64be(fk, m->file);
    file_encode(fv, &m->sum, m->next_item, m->ndates);
    tput(t, D_RECON_FILES, fk, sizeof(fk), fv, sizeof(fv), 0);
}

int settle_store_recon_rematch(struct settle_store *s, uint64_t file_seq, int64_t now_ms,
                               struct recon_summary *out)
{
    ASSERT(s != NULL && out != NULL);
    struct stx t;
    struct rematch_run m = {.file = file_seq};
    int rc = rtxn_begin(s, &t);
    if (rc)
        return rc;
    rc = file_read(&t, file_seq, &m.sum_in, &m.next_item, &m.ndates);
    rtxn_end(&t);
    if (rc)
        return errno_of(rc);
    if (m.sum_in.status == RECON_STATUS_PROCESSING)
        return -EBUSY;
    if (m.sum_in.status == RECON_STATUS_FAILED)
        return -EINVAL;
    m.sum_in.rematches++;
    m.round = m.sum_in.rematches;
    do {
        rc = txn_run(s, NULL, now_ms, rematch_body, &m);
        m.sum_in = m.sum;
        m.pos_in = m.pos;
    } while (rc == 0 && !m.done);
    if (rc == 0)
        rc = missing_pass(s, now_ms, file_seq, m.round, &m.sum_in, &m.next_item, m.ndates);
    if (rc == 0)
        *out = m.sum_in;
    return rc;
}

/* ---- Idempotency: reads and the *_idem calls -------------------------------------------- */

int settle_store_idem_get(struct settle_store *s, const char *key, size_t key_len,
                          struct settle_idem_record *out)
{
    ASSERT(s != NULL && out != NULL && key_len >= 1 && key_len <= IDEMPOTENCY_KEY_MAX_BYTES);
    struct stx t;
    MDB_val v;
    int rc = rtxn_begin(s, &t);
    if (rc)
        return rc;
    rc = tget(&t, D_IDEM, key, key_len, &v);
    if (rc == 0)
        rc = idem_decode(v.mv_data, v.mv_size, out);
    else if (rc != -ENOENT)
        rc = errno_of(rc);
    rtxn_end(&t);
    return rc;
}

struct idem_alone {
    const char *key;
    size_t key_len;
    const uint8_t *fp;
    uint16_t status;
    const char *body;
    size_t len;
};

static void idem_alone_body(struct stx *t, void *arg)
{
    const struct idem_alone *a = arg;
    idem_write(t, a->key, a->key_len, a->fp, a->status, a->body, a->len);
}

int settle_store_idem_put(struct settle_store *s, const char *key, size_t key_len,
                          const uint8_t fp[SETTLE_IDEM_FP_BYTES], uint16_t status, const char *body,
                          size_t len, int64_t now_ms)
{
    ASSERT(s != NULL && s->idem == NULL && now_ms > 0);
    struct idem_alone a = {key, key_len, fp, status, body, len};
    return txn_run(s, NULL, now_ms, idem_alone_body, &a);
}

int settle_store_idem_count(struct settle_store *s, uint64_t *out)
{
    struct stx t;
    MDB_stat st;
    int rc = rtxn_begin(s, &t);
    if (rc)
        return rc;
    rc = errno_of(mdb_stat(t.txn, s->dbi[D_IDEM], &st));
    if (rc == 0)
        *out = st.ms_entries;
    rtxn_end(&t);
    return rc;
}

/* Arms idem for the call about to run; idem_disarm checks it was written on success. */
static void idem_arm(struct settle_store *s, const struct settle_idem_put *idem, enum idem_at at)
{
    ASSERT(s->idem == NULL);
    ASSERT(idem == NULL || (idem->render != NULL && idem->key_len >= 1 &&
                            idem->key_len <= IDEMPOTENCY_KEY_MAX_BYTES));
    s->idem = idem;
    s->idem_at = idem ? (int)at : IDEM_AT_NONE;
    s->idem_written = false;
}

static int idem_disarm(struct settle_store *s, int rc)
{
    /* an operation that completed committed its record with its last transaction */
    ASSERT(rc != 0 || s->idem == NULL || s->idem_written);
    s->idem = NULL;
    s->idem_at = IDEM_AT_NONE;
    return rc;
}

int settle_store_close_date_idem(struct settle_store *s, struct settle_calendar *cal, int32_t date,
                                 int64_t now_ms, uint64_t *closed,
                                 const struct settle_idem_put *idem)
{
    idem_arm(s, idem, IDEM_AT_CLOSE);
    return idem_disarm(s, settle_store_close_date(s, cal, date, now_ms, closed));
}

int settle_recon_finish_idem(struct settle_recon *r, struct recon_summary *out,
                             const struct settle_idem_put *idem)
{
    struct settle_store *s = r->s;
    idem_arm(s, idem, IDEM_AT_UPLOAD);
    return idem_disarm(s, settle_recon_finish(r, out));
}

int settle_store_recon_rematch_idem(struct settle_store *s, uint64_t file_seq, int64_t now_ms,
                                    struct recon_summary *out, const struct settle_idem_put *idem)
{
    idem_arm(s, idem, IDEM_AT_REMATCH);
    return idem_disarm(s, settle_store_recon_rematch(s, file_seq, now_ms, out));
}

int settle_store_dlq_replay_idem(struct settle_store *s, struct settle_calendar *cal, uint64_t id,
                                 int64_t now_ms, enum settle_msg_result *result,
                                 const struct settle_idem_put *idem)
{
    idem_arm(s, idem, IDEM_AT_DLQ);
    return idem_disarm(s, settle_store_dlq_replay(s, cal, id, now_ms, result));
}
