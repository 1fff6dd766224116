/*
 * The LMDB shard store: one LMDB environment per shard, written by one thread (the
 * shard thread) in group-commit batches. See shard_store.h for the contract and
 * record.h for the byte layouts.
 *
 * Invariants:
 * - The environment is opened with LMDB's default durable sync: mdb_txn_commit
 *   returns only after the data pages and then the meta page are fsynced. Never
 *   MDB_NOSYNC, MDB_MAPASYNC or MDB_NOMETASYNC (SPEC §6).
 * - Every write of a batch happens inside one write transaction; answers of a batch
 *   are valid only after mdb_txn_commit returned 0. Any store error aborts the whole
 *   transaction, so a batch is all-or-nothing on disk.
 * - Only the shard thread touches the environment, so no read transaction can be
 *   open while the map is grown (mdb_env_set_mapsize requires that in-process).
 */
#include "store/shard_store.h"

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/assert.h"
#include "store/manifest.h"
#include "store/record.h"


enum shard_dbi {
    SHARD_DBI_PAYMENTS,
    SHARD_DBI_REFUNDS,
    SHARD_DBI_IDEM,
    SHARD_DBI_LEDGER,
    SHARD_DBI_BALANCES,
    SHARD_DBI_OUTBOX,
    SHARD_DBI_META,
    SHARD_DBI_COUNT
};

static const char *const dbi_names[SHARD_DBI_COUNT] = {
    [SHARD_DBI_PAYMENTS] = "payments", [SHARD_DBI_REFUNDS] = "refunds",
    [SHARD_DBI_IDEM] = "idem",         [SHARD_DBI_LEDGER] = "ledger",
    [SHARD_DBI_BALANCES] = "balances", [SHARD_DBI_OUTBOX] = "outbox",
    [SHARD_DBI_META] = "meta",
};

struct shard_store {
    MDB_env *env;
    MDB_dbi dbi[SHARD_DBI_COUNT];
    unsigned shard;
    size_t map_bytes;     /* current map size */
    size_t map_max_bytes; /* ceiling of growth on MDB_MAP_FULL */
    uint64_t replicated_pending; /* mark to store with the next commit */
    uint64_t replicated_stored;  /* mark on disk */
    struct shard_store_stats stats;
    unsigned fault_after_puts; /* tests: puts that succeed before the fault */
    int fault_errno;           /* tests: LMDB code the injected fault returns; 0 = off */
    int fault_persistent;      /* tests: keep failing after the first fault */
    char path[STORE_PATH_MAX];
};

/* One write (or read) transaction of a batch. The first LMDB error sticks in err and
 * makes every later store call of the batch fail fast; the batch is then aborted. */
struct shard_txn {
    struct shard_store *s;
    MDB_txn *txn;
    int err;      /* first LMDB error, 0 while all went well */
    int writable; /* 0 in a read-only transaction */
};

typedef void (*shard_txn_body_fn)(struct shard_txn *t, void *arg);

static int meta_get(MDB_txn *txn, const struct shard_store *s, const char *name,
                                uint64_t *v);
static int meta_put(MDB_txn *txn, const struct shard_store *s, const char *name,
                                uint64_t v);

/* ---- environment ------------------------------------------------------------------ */

static int errno_of(int mdb_rc)
{
    /* LMDB returns errno values for system errors and MDB_* (< 0) for its own. */
    switch (mdb_rc) {
    case 0:
        return 0;
    case MDB_MAP_FULL:
    case MDB_TXN_FULL:
        return -ENOSPC;
    case MDB_CORRUPTED:
    case MDB_PAGE_NOTFOUND:
    case MDB_INVALID:
    case MDB_VERSION_MISMATCH:
        return -EBADMSG;
    default:
        if (mdb_rc > 0)
            return -mdb_rc; /* a system errno from LMDB */
        return mdb_rc > -4096 ? mdb_rc : -EIO; /* our own -errno, or another MDB_* */
    }
}

/* Opens or creates every named DBI and checks (or writes) the format version. */
static int open_dbis(struct shard_store *s)
{
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return rc;
    for (int i = 0; i < SHARD_DBI_COUNT; i++) {
        rc = mdb_dbi_open(txn, dbi_names[i], MDB_CREATE, &s->dbi[i]);
        if (rc)
            goto out_abort;
    }
    uint64_t format = 0;
    rc = meta_get(txn, s, "format", &format);
    if (rc == MDB_NOTFOUND)
        rc = meta_put(txn, s, "format", STORE_FORMAT_VERSION);
    else if (rc == 0 && format != STORE_FORMAT_VERSION)
        rc = MDB_VERSION_MISMATCH;
    if (rc)
        goto out_abort;
    return mdb_txn_commit(txn);

out_abort:
    mdb_txn_abort(txn);
    return rc;
}

static int env_open(struct shard_store *s, const char *path)
{
    int rc = mdb_env_create(&s->env);
    if (rc)
        return rc;
    rc = mdb_env_set_maxdbs(s->env, SHARD_DBI_COUNT);
    if (rc)
        goto out_close_env;
    rc = mdb_env_set_mapsize(s->env, s->map_bytes);
    if (rc)
        goto out_close_env;
    /* MDB_NOTLS: transactions are tied to the store, not to a thread's slot. No sync
     * flags are relaxed: every commit is durable before it returns. */
    rc = mdb_env_open(s->env, path, MDB_NOTLS | MDB_NORDAHEAD, 0600);
    if (rc)
        goto out_close_env;
    MDB_envinfo info;
    rc = mdb_env_info(s->env, &info);
    if (rc)
        goto out_close_env;
    s->map_bytes = info.me_mapsize; /* an existing file may be larger than asked */
    rc = open_dbis(s);
    if (rc)
        goto out_close_env;
    return 0;

out_close_env:
    mdb_env_close(s->env);
    s->env = NULL;
    return rc;
}

int shard_store_open(struct shard_store **out, const char *data_dir, unsigned shard,
                     const struct shard_store_options *opt)
{
    ASSERT(out != NULL && data_dir != NULL);
    *out = NULL;
    struct shard_store *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->shard = shard;
    s->map_bytes = opt && opt->map_bytes ? opt->map_bytes : SHARD_MAP_DEFAULT_BYTES;
    s->map_max_bytes = opt && opt->map_max_bytes ? opt->map_max_bytes : SHARD_MAP_MAX_BYTES;
    if (s->map_max_bytes < s->map_bytes)
        s->map_max_bytes = s->map_bytes;
    if (opt) {
        s->fault_after_puts = opt->fault_after_puts;
        s->fault_errno = opt->fault_errno;
        s->fault_persistent = opt->fault_persistent;
    }
    int rc = store_manifest_shard_path(data_dir, shard, s->path, sizeof(s->path));
    if (rc)
        goto out_free;
    if (mkdir(s->path, 0700) && errno != EEXIST) {
        rc = -errno;
        goto out_free;
    }
    rc = errno_of(env_open(s, s->path));
    if (rc)
        goto out_free;
    *out = s;
    return 0;

out_free:
    free(s);
    return rc;
}

void shard_store_close(struct shard_store *s)
{
    if (s == NULL)
        return;
    ASSERT(s->env != NULL);
    mdb_env_close(s->env);
    free(s);
}

/* ---- meta ------------------------------------------------------------------------- */

static int meta_get(MDB_txn *txn, const struct shard_store *s, const char *name,
                         uint64_t *v)
{
    MDB_val key = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val val;
    int rc = mdb_get(txn, s->dbi[SHARD_DBI_META], &key, &val);
    if (rc)
        return rc;
    int64_t i = 0;
    if (record_i64_decode(val.mv_data, val.mv_size, &i))
        return MDB_CORRUPTED;
    *v = (uint64_t)i;
    return 0;
}

static int meta_put(MDB_txn *txn, const struct shard_store *s, const char *name,
                         uint64_t v)
{
    uint8_t buf[RECORD_I64_BYTES];
    record_i64_encode(buf, (int64_t)v);
    MDB_val key = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val val = {.mv_size = sizeof(buf), .mv_data = buf};
    return mdb_put(txn, s->dbi[SHARD_DBI_META], &key, &val, 0);
}

/* ---- write transactions and MAP_FULL ---------------------------------------------- */

/* Doubles the map, up to map_max_bytes. Returns 0, or MDB_MAP_FULL at the ceiling. */
static int map_grow(struct shard_store *s)
{
    if (s->map_bytes >= s->map_max_bytes)
        return MDB_MAP_FULL;
    size_t next = s->map_bytes * 2;
    if (next > s->map_max_bytes || next < s->map_bytes)
        next = s->map_max_bytes;
    /* No transaction of this process is open here: only the shard thread uses the
     * environment and its write transaction was just aborted. */
    int rc = mdb_env_set_mapsize(s->env, next);
    if (rc)
        return rc;
    MDB_envinfo info;
    rc = mdb_env_info(s->env, &info);
    if (rc)
        return rc;
    ASSERT(info.me_mapsize >= next);
    s->map_bytes = info.me_mapsize;
    s->stats.map_grows++;
    return 0;
}

/* Runs body once in a fresh write transaction and commits it. */
static int txn_once(struct shard_store *s, struct shard_txn *t, shard_txn_body_fn body,
                    void *arg)
{
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return rc;
    t->s = s;
    t->txn = txn;
    t->err = 0;
    t->writable = 1;
    body(t, arg);
    if (t->err == 0 && s->replicated_pending > s->replicated_stored)
        t->err = meta_put(txn, s, "replicated", s->replicated_pending);
    if (t->err) {
        rc = t->err;
        mdb_txn_abort(txn);
    } else {
        rc = mdb_txn_commit(txn); /* durable: data fsync, then the meta page */
    }
    t->txn = NULL;
    if (rc == 0 && s->replicated_pending > s->replicated_stored)
        s->replicated_stored = s->replicated_pending;
    return rc;
}

__attribute__((unused)) static int txn_run(struct shard_store *s, struct shard_txn *t, shard_txn_body_fn body,
                        void *arg)
{
    ASSERT(s != NULL && s->env != NULL && t != NULL && body != NULL);
    int rc = txn_once(s, t, body, arg);
    if (rc != MDB_MAP_FULL)
        goto out;
    /* The transaction is gone; nothing of the batch is on disk. Grow, retry once. */
    s->stats.map_full++;
    rc = map_grow(s);
    if (rc == 0)
        rc = txn_once(s, t, body, arg);
out:
    if (rc == 0)
        s->stats.commits++;
    else
        s->stats.failed_commits++;
    return rc;
}

/* Records an LMDB result in the transaction; the first error sticks. */
static int txn_fail(struct shard_txn *t, int mdb_rc)
{
    if (mdb_rc && t->err == 0)
        t->err = mdb_rc;
    return mdb_rc;
}

/* mdb_put with the test-only fault injection and sticky errors. */
static int txn_put(struct shard_txn *t, int dbi, MDB_val *key, MDB_val *val, unsigned flags)
{
    ASSERT(t->writable && dbi >= 0 && dbi < SHARD_DBI_COUNT);
    if (t->err)
        return t->err;
    struct shard_store *s = t->s;
    if (s->fault_errno) {
        if (s->fault_after_puts > 0) {
            s->fault_after_puts--;
        } else {
            int e = s->fault_errno;
            if (!s->fault_persistent)
                s->fault_errno = 0;
            return txn_fail(t, e);
        }
    }
    return txn_fail(t, mdb_put(t->txn, s->dbi[dbi], key, val, flags));
}

void shard_store_stats(const struct shard_store *s, struct shard_store_stats *out)
{
    ASSERT(s != NULL && out != NULL);
    *out = s->stats;
    out->map_bytes = s->map_bytes;
}

void shard_store_set_replicated(struct shard_store *s, uint64_t event_seq)
{
    ASSERT(s != NULL);
    if (event_seq > s->replicated_pending)
        s->replicated_pending = event_seq;
}

/* ---- sequences, balances, ledger, outbox ------------------------------------------ */

/* Returns the next value (1, 2, ...) of the counter meta[name] and stores it. */
static int seq_next(struct shard_txn *t, const char *name, uint64_t *out)
{
    if (t->err)
        return t->err;
    uint64_t v = 0;
    int rc = meta_get(t->txn, t->s, name, &v);
    if (rc && rc != MDB_NOTFOUND)
        return txn_fail(t, rc);
    ASSERT(v < UINT64_MAX);
    v++;
    uint8_t buf[RECORD_I64_BYTES];
    record_i64_encode(buf, (int64_t)v);
    MDB_val key = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val val = {.mv_size = sizeof(buf), .mv_data = buf};
    rc = txn_put(t, SHARD_DBI_META, &key, &val, 0);
    if (rc)
        return rc;
    *out = v;
    return 0;
}

/* Reads a balance; an account never posted to is 0. */
static int balance_read(struct shard_txn *t, const char *m, size_t mlen, const char cur[3],
                        uint8_t account, int64_t *v)
{
    if (t->err)
        return t->err;
    uint8_t kbuf[RECORD_KEY_MAX];
    MDB_val key = {.mv_data = kbuf};
    key.mv_size = record_key_balance(kbuf, m, mlen, cur, account);
    MDB_val val;
    int rc = mdb_get(t->txn, t->s->dbi[SHARD_DBI_BALANCES], &key, &val);
    if (rc == MDB_NOTFOUND) {
        *v = 0;
        return 0;
    }
    if (rc)
        return txn_fail(t, rc);
    if (record_i64_decode(val.mv_data, val.mv_size, v))
        return txn_fail(t, MDB_CORRUPTED);
    return 0;
}

static int balance_add(struct shard_txn *t, const char *m, size_t mlen, const char cur[3],
                       uint8_t account, int64_t delta)
{
    int64_t v = 0;
    int rc = balance_read(t, m, mlen, cur, account, &v);
    if (rc)
        return rc;
    /* Every amount is <= 10^15 and a shard holds far fewer than 9000 of them per
     * account and currency... unless it lives long: overflow is checked, not hoped. */
    int64_t next;
    if (__builtin_add_overflow(v, delta, &next))
        return txn_fail(t, -EOVERFLOW);
    uint8_t kbuf[RECORD_KEY_MAX], vbuf[RECORD_I64_BYTES];
    MDB_val key = {.mv_data = kbuf};
    key.mv_size = record_key_balance(kbuf, m, mlen, cur, account);
    record_i64_encode(vbuf, next);
    MDB_val val = {.mv_size = sizeof(vbuf), .mv_data = vbuf};
    return txn_put(t, SHARD_DBI_BALANCES, &key, &val, 0);
}

/* The merchant's last ledger sequence number, 0 when its ledger is empty. */
static int ledger_last_seq(struct shard_txn *t, const char *m, size_t mlen, uint64_t *seq)
{
    uint8_t kbuf[RECORD_KEY_MAX];
    MDB_val key = {.mv_data = kbuf}, val;
    key.mv_size = record_key_ledger(kbuf, m, mlen, UINT64_MAX);
    size_t prefix = key.mv_size - 8;
    MDB_cursor *c = NULL;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[SHARD_DBI_LEDGER], &c);
    if (rc)
        return txn_fail(t, rc);
    rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE);
    if (rc == 0)
        rc = mdb_cursor_get(c, &key, &val, MDB_PREV);
    else if (rc == MDB_NOTFOUND)
        rc = mdb_cursor_get(c, &key, &val, MDB_LAST);
    *seq = 0;
    if (rc == 0 && key.mv_size == prefix + 8 && memcmp(key.mv_data, kbuf, prefix) == 0)
        *seq = record_get_u64be((const uint8_t *)key.mv_data + prefix);
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND)
        return txn_fail(t, rc);
    return 0;
}

/*
 * Appends one posting to the merchant's ledger (next per-merchant sequence number)
 * and moves its amount from the debit to the credit account's balance.
 */
__attribute__((unused)) static int posting_apply(struct shard_txn *t, const char *m, size_t mlen,
                         const struct record_ledger_entry *e, uint64_t *seq_out)
{
    if (t->err)
        return t->err;
    uint64_t seq = 0;
    int rc = ledger_last_seq(t, m, mlen, &seq);
    if (rc)
        return rc;
    seq++;
    uint8_t kbuf[RECORD_KEY_MAX], vbuf[RECORD_LEDGER_MAX_BYTES];
    MDB_val key = {.mv_data = kbuf, .mv_size = record_key_ledger(kbuf, m, mlen, seq)};
    MDB_val val = {.mv_data = vbuf, .mv_size = record_ledger_encode(vbuf, e)};
    rc = txn_put(t, SHARD_DBI_LEDGER, &key, &val, MDB_NOOVERWRITE);
    if (rc == 0)
        rc = balance_add(t, m, mlen, e->currency, e->debit, -e->amount);
    if (rc == 0)
        rc = balance_add(t, m, mlen, e->currency, e->credit, e->amount);
    if (rc == 0 && seq_out)
        *seq_out = seq;
    return rc;
}

/* Appends an event to the outbox under the next shard-wide event sequence number. */
__attribute__((unused)) static int outbox_append(struct shard_txn *t, const char *m, size_t mlen, const char *json,
                         size_t json_len, uint64_t *seq_out)
{
    ASSERT(json_len >= 1 && json_len <= RECORD_EVENT_MAX_BYTES);
    uint64_t seq = 0;
    int rc = seq_next(t, "outbox_seq", &seq);
    if (rc)
        return rc;
    uint8_t kbuf[8], vbuf[2 + RECORD_MERCHANT_MAX + 4 + RECORD_EVENT_MAX_BYTES];
    record_put_u64be(kbuf, seq);
    MDB_val key = {.mv_data = kbuf, .mv_size = sizeof(kbuf)};
    MDB_val val = {.mv_data = vbuf};
    val.mv_size = record_event_encode(vbuf, m, mlen, json, json_len);
    /* Sequence numbers only grow, so the key sorts last: MDB_APPEND is valid. */
    rc = txn_put(t, SHARD_DBI_OUTBOX, &key, &val, MDB_APPEND);
    if (rc == 0 && seq_out)
        *seq_out = seq;
    return rc;
}
