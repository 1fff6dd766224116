/*
 * The LMDB shard store: one LMDB environment per shard, written by one thread (the
 * shard thread) in group-commit batches. See shard_store.h for the contract and
 * record.h for the byte layouts.
 *
 * Invariants:
 * - The environment never runs with MDB_NOSYNC, MDB_MAPASYNC or MDB_WRITEMAP (asserted
 *   at open): a commit that wrote ran its data fdatasync before its meta page. With
 *   defer_meta_sync it is opened with MDB_NOMETASYNC (the meta page is written without
 *   a sync; a later sync covers it), else the meta page is synced inside the commit.
 * - Durability is positions (shard_store.h): txn_written is the last transaction id
 *   whose meta page was written, txn_durable the highest one a completed fdatasync
 *   covered, txn_durable <= txn_written. They move only in txn_commit() (from the id
 *   LMDB reports after the commit, never from its return code alone), in
 *   shard_store_sync() and at open. event_durable, the last event of transaction
 *   txn_durable, moves with txn_durable (the Kafka replicator sends nothing above it).
 * - Every write of a batch happens inside one write transaction. Any store error
 *   aborts the whole transaction, so a batch is all-or-nothing on disk.
 * - Once a commit or sync failed for another reason than MDB_MAP_FULL/MDB_TXN_FULL
 *   (found before any write), `failed` holds that error and the environment is never
 *   written or synced again by this store.
 * - Only the shard thread touches the environment, so no read transaction can be
 *   open while the map is grown (mdb_env_set_mapsize requires that in-process).
 */
#include "store/shard_store.h"

#include <errno.h>
#include <lmdb.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "engine/api.h"
#include "engine/apply.h"
#include "engine/assert.h"
#include "engine/json.h"
#include "engine/ledger.h"
#include "engine/limits.h"
#include "store/manifest.h"
#include "store/record.h"
#include "store/shard_store_int.h"
#include "store/shard_wal.h"

static const char *const dbi_names[SHARD_DBI_COUNT] = {
    [SHARD_DBI_PAYMENTS] = RECORD_DB_PAYMENTS, [SHARD_DBI_REFUNDS] = RECORD_DB_REFUNDS,
    [SHARD_DBI_IDEM] = RECORD_DB_IDEM,         [SHARD_DBI_LEDGER] = RECORD_DB_LEDGER,
    [SHARD_DBI_BALANCES] = RECORD_DB_BALANCES, [SHARD_DBI_OUTBOX] = RECORD_DB_OUTBOX,
    [SHARD_DBI_META] = RECORD_DB_META,         [SHARD_DBI_IDEM_EXP] = RECORD_DB_IDEM_EXP,
};

typedef void (*shard_txn_body_fn)(struct shard_txn *t, void *arg);

/* ---- environment ------------------------------------------------------------------ */

int ss_errno_of(int mdb_rc)
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
            return -mdb_rc;                    /* a system errno from LMDB */
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
    rc = ss_meta_get(txn, s, "format", &format);
    if (rc == MDB_NOTFOUND)
        rc = ss_meta_put(txn, s, "format", STORE_FORMAT_VERSION);
    else if (rc == 0 && format != STORE_FORMAT_VERSION)
        rc = MDB_VERSION_MISMATCH;
    if (rc)
        goto out_abort;
    rc = ss_meta_get(txn, s, "replicated", &s->replicated_stored);
    if (rc == 0 || rc == MDB_NOTFOUND)
        rc = ss_meta_get(txn, s, "seq:event", &s->event_seq);
    if (rc && rc != MDB_NOTFOUND)
        goto out_abort;
    s->replicated_pending = s->replicated_stored;
    s->trim_pending = true; /* a trim may have been cut short before a restart */
    return mdb_txn_commit(txn);

out_abort:
    mdb_txn_abort(txn);
    return rc;
}

/* The id of the last transaction whose meta page was written (LMDB's view). */
uint64_t ss_env_last_txn(const struct shard_store *s)
{
    MDB_envinfo info;
    int rc = mdb_env_info(s->env, &info);
    ASSERT(rc == 0); /* it only reads the meta pages of the map */
    return (uint64_t)info.me_last_txnid;
}

/* At open: the last meta page may have been written by a process that was killed
 * before a sync covered it (it is in the page cache, not necessarily on disk). Sync
 * once, so that everything the store shows from now on starts durable. */
static int positions_init(struct shard_store *s)
{
    s->txn_written = ss_env_last_txn(s);
    int rc = mdb_env_sync(s->env, 1);
    if (rc)
        return rc;
    s->txn_durable = s->txn_written;
    s->event_durable = s->event_seq;
    return 0;
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
    /* MDB_NOTLS: transactions are tied to the store, not to a thread's slot. Without
     * defer_meta_sync no sync flag is relaxed: every commit that writes is durable
     * before it returns; with it, see shard_store.h. Never MDB_NOSYNC or MDB_MAPASYNC. */
    unsigned flags = MDB_NOTLS | MDB_NORDAHEAD | (s->defer_meta_sync ? MDB_NOMETASYNC : 0);
    rc = mdb_env_open(s->env, path, flags, 0600);
    if (rc)
        goto out_close_env;
    unsigned got = 0;
    rc = mdb_env_get_flags(s->env, &got);
    if (rc)
        goto out_close_env;
    /* The positions rest on this: a commit that wrote ran its data fdatasync, and
     * every write goes through write(2), never through the map. */
    ASSERT((got & (MDB_NOSYNC | MDB_MAPASYNC | MDB_WRITEMAP)) == 0);
    ASSERT(!(got & MDB_NOMETASYNC) == !s->defer_meta_sync);
    MDB_envinfo info;
    rc = mdb_env_info(s->env, &info);
    if (rc)
        goto out_close_env;
    s->map_bytes = info.me_mapsize; /* an existing file may be larger than asked */
    rc = open_dbis(s);
    if (rc)
        goto out_close_env;
    rc = positions_init(s);
    if (rc)
        goto out_close_env;
    return 0;

out_close_env:
    mdb_env_close(s->env);
    s->env = NULL;
    return rc;
}

static void options_apply(struct shard_store *s, const struct shard_store_options *opt)
{
    s->map_bytes = opt && opt->map_bytes ? opt->map_bytes : SHARD_MAP_DEFAULT_BYTES;
    s->map_max_bytes = opt && opt->map_max_bytes ? opt->map_max_bytes : SHARD_MAP_MAX_BYTES;
    if (s->map_max_bytes < s->map_bytes)
        s->map_max_bytes = s->map_bytes;
    s->idem_ttl_ms = opt && opt->idem_ttl_ms > 0 ? opt->idem_ttl_ms : IDEM_TTL_DEFAULT_MS;
    s->defer_meta_sync = opt && opt->defer_meta_sync;
    if (opt && opt->wal) {
        /* The checkpointer commits while the shard thread reads: the map cannot grow
         * (mdb_env_set_mapsize needs every transaction of the process closed), so it
         * is fixed at its ceiling, which is address space, not disk. Checkpoints are
         * LMDB's default durable commits. */
        s->map_bytes = s->map_max_bytes;
        s->defer_meta_sync = 0;
    }
    if (opt) {
        s->fault_after_puts = opt->fault_after_puts;
        s->fault_errno = opt->fault_errno;
        s->fault_persistent = opt->fault_persistent;
        s->fault_after_commits = opt->fault_after_commits;
        s->fault_commit_errno = opt->fault_commit_errno;
        s->fault_after_syncs = opt->fault_after_syncs;
        s->fault_sync_errno = opt->fault_sync_errno;
    }
}

/* Creates DATA/shard-NNN if needed and makes its name durable (fsync of DATA). The
 * fsync runs on every open: a crash between mkdir and the fsync leaves a directory
 * that exists in the page cache only. */
static int shard_dir_make(struct shard_store *s, const char *data_dir)
{
    int rc = store_manifest_shard_path(data_dir, s->shard, s->path, sizeof(s->path));
    if (rc)
        return rc;
    if (mkdir(s->path, 0700) && errno != EEXIST)
        return -errno;
    return store_manifest_sync_dir(data_dir);
}

/* Why the last shard_store_open of this thread failed, when it could say more than its
 * errno ("" otherwise). */
static __thread char open_why[256];

/* The LMDB mode must not open a directory whose write-ahead log may hold changes that
 * LMDB lacks: it would answer from state that misses acknowledged payments. */
static int lmdb_mode_check(struct shard_store *s)
{
    MDB_txn *txn = NULL;
    uint64_t pos = 0;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return ss_errno_of(rc);
    rc = ss_meta_get(txn, s, "wal_pos", &pos);
    mdb_txn_abort(txn);
    if (rc == MDB_NOTFOUND)
        return 0;
    if (rc == 0) {
        snprintf(open_why, sizeof(open_why),
                 "shard %u was written with the write-ahead log on: start it with --wal on",
                 s->shard);
        return -EEXIST;
    }
    return ss_errno_of(rc);
}

int shard_store_open(struct shard_store **out, const char *data_dir, unsigned shard,
                     const struct shard_store_options *opt)
{
    ASSERT(out != NULL && data_dir != NULL);
    *out = NULL;
    open_why[0] = 0;
    struct shard_store *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->shard = shard;
    options_apply(s, opt);
    int rc = shard_dir_make(s, data_dir);
    if (rc)
        goto out_free;
    rc = ss_errno_of(env_open(s, s->path));
    if (rc)
        goto out_free;
    /* LMDB created data.mdb and lock.mdb: make their names durable. */
    rc = store_manifest_sync_dir(s->path);
    if (rc)
        goto out_close_env;
    ASSERT(s->txn_durable == s->txn_written);
    rc = opt && opt->wal ? shard_wal_open(s, opt, open_why, sizeof(open_why)) : lmdb_mode_check(s);
    if (rc)
        goto out_close_wal;
    *out = s;
    return 0;

out_close_wal:
    shard_wal_close(s);
out_close_env:
    mdb_env_close(s->env);
out_free:
    free(s);
    return rc;
}

const char *shard_store_open_error(void)
{
    return open_why;
}

/* Test-only fault injection of commits and syncs: the errno this call must fail
 * with, or 0. A one-time fault turns itself off once it fired. */
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

/* Records the error that fails the store for good (the first one sticks). */
int ss_fail(struct shard_store *s, int err)
{
    ASSERT(err < 0);
    if (s->failed == 0)
        s->failed = err;
    return s->failed;
}

int shard_store_sync(struct shard_store *s)
{
    ASSERT(s != NULL && s->env != NULL);
    ASSERT(s->txn_durable <= s->txn_written);
    if (s->wal)
        return shard_wal_sync(s);
    if (s->failed)
        return s->failed;
    /* The sync covers what was written before it starts. */
    uint64_t covers = s->txn_written;
    int rc = fault_take(&s->fault_after_syncs, &s->fault_sync_errno, s->fault_persistent);
    if (rc == 0)
        rc = mdb_env_sync(s->env, 1);
    if (rc)
        return ss_fail(s, ss_errno_of(rc));
    if (covers > s->txn_durable) {
        s->txn_durable = covers;
        s->event_durable = s->event_seq; /* the events of transaction `covers` */
    }
    return 0;
}

uint64_t shard_store_written(const struct shard_store *s)
{
    ASSERT(s != NULL);
    return s->wal ? shard_wal_written(s) : s->txn_written;
}

uint64_t shard_store_durable(const struct shard_store *s)
{
    ASSERT(s != NULL && s->txn_durable <= s->txn_written);
    return s->wal ? shard_wal_durable(s) : s->txn_durable;
}

bool shard_store_async(const struct shard_store *s)
{
    return s->wal != NULL;
}

void shard_store_kick(struct shard_store *s)
{
    if (s->wal)
        shard_wal_kick(s);
}

int shard_store_poll(struct shard_store *s)
{
    return s->wal ? shard_wal_poll(s) : s->failed;
}

int shard_store_event_fd(const struct shard_store *s)
{
    return s->wal ? shard_wal_event_fd(s) : -1;
}

bool shard_store_ready(const struct shard_store *s)
{
    return s->wal ? shard_wal_ready(s) : true;
}

int shard_store_failed(const struct shard_store *s)
{
    ASSERT(s != NULL);
    return s->failed;
}

void shard_store_close(struct shard_store *s)
{
    if (s == NULL)
        return;
    ASSERT(s->env != NULL);
    /* Make the last meta page durable too; a failed store promised nothing more. */
    if (s->defer_meta_sync && s->failed == 0)
        mdb_env_sync(s->env, 1);
    shard_wal_close(s);
    mdb_env_close(s->env);
    free(s);
}

/* ---- meta ------------------------------------------------------------------------- */

int ss_meta_get(MDB_txn *txn, const struct shard_store *s, const char *name, uint64_t *v)
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

int ss_meta_put(MDB_txn *txn, const struct shard_store *s, const char *name, uint64_t v)
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

/* Records an LMDB result in the transaction; the first error sticks. */
static int txn_fail(struct shard_txn *t, int mdb_rc)
{
    if (mdb_rc && t->err == 0)
        t->err = mdb_rc;
    return mdb_rc;
}

/*
 * Deletes the oldest outbox events at or below the replicated mark, at most
 * SHARD_OUTBOX_TRIM_MAX of them (DESIGN "Kafka replication": the outbox below the
 * mark is trimmed). A longer backlog (a long Kafka outage) is trimmed over the next
 * transactions, so no single one grows too large to commit. *done is set when no
 * event at or below the mark is left.
 */
void ss_outbox_trim(struct shard_txn *t, uint64_t mark, bool *done)
{
    MDB_cursor *c = NULL;
    if (txn_fail(t, mdb_cursor_open(t->txn, t->s->dbi[SHARD_DBI_OUTBOX], &c)))
        return;
    MDB_val k, v;
    int rc;
    size_t trimmed = 0;
    *done = false;
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
            break; /* rc == 0: more is left for the next transaction */
        if ((rc = mdb_cursor_del(c, 0)))
            break;
        trimmed++;
    }
    mdb_cursor_close(c);
    ASSERT(trimmed <= SHARD_OUTBOX_TRIM_MAX);
    t->trimmed = trimmed;
    if (rc == MDB_NOTFOUND)
        *done = true;
    else if (rc)
        txn_fail(t, rc);
}

/* Stores a new replicated mark and continues the outbox trim below it. */
static void outbox_mark(struct shard_txn *t, bool *trim_done)
{
    struct shard_store *s = t->s;
    *trim_done = !s->trim_pending;
    if (s->replicated_pending > s->replicated_stored &&
        txn_fail(t, ss_meta_put(t->txn, s, "replicated", s->replicated_pending)))
        return;
    if (s->trim_pending || s->replicated_pending > s->replicated_stored)
        ss_outbox_trim(t, s->replicated_pending, trim_done);
}

/*
 * Commits txn and moves the durability positions (see the top of this file). The id
 * LMDB reports afterwards tells what the commit did: moved by one, it wrote its pages,
 * ran its data fdatasync (which covered every meta page written before, the last
 * being txn_written) and wrote its meta page; unchanged, it changed nothing and did no
 * I/O at all, so it proves nothing about durability.
 */
static int txn_commit(struct shard_store *s, MDB_txn *txn, uint64_t event_seq)
{
    uint64_t id = (uint64_t)mdb_txn_id(txn);
    ASSERT(id == s->txn_written + 1);
    int rc = fault_take(&s->fault_after_commits, &s->fault_commit_errno, s->fault_persistent);
    if (rc) {
        mdb_txn_abort(txn); /* as if its fdatasync had failed: nothing of it counts */
        return rc;
    }
    rc = mdb_txn_commit(txn);
    if (rc)
        return rc;
    uint64_t last = ss_env_last_txn(s);
    ASSERT(last == id || last == s->txn_written);
    if (last == s->txn_written)
        return 0; /* nothing written, nothing synced */
    uint64_t covered = s->defer_meta_sync ? s->txn_written : id;
    /* s->event_seq is still the last event of the old txn_written. */
    uint64_t covered_event = s->defer_meta_sync ? s->event_seq : event_seq;
    s->txn_written = id;
    if (covered > s->txn_durable) {
        s->txn_durable = covered;
        s->event_durable = covered_event;
    }
    ASSERT(s->txn_durable <= s->txn_written && s->event_durable <= event_seq);
    return 0;
}

/* Runs body once in a fresh write transaction and commits it. */
static int txn_once(struct shard_store *s, struct shard_txn *t, shard_txn_body_fn body, void *arg)
{
    MDB_txn *txn = NULL;
    int rc = mdb_txn_begin(s->env, NULL, 0, &txn);
    if (rc)
        return rc;
    t->s = s;
    t->txn = txn;
    t->err = 0;
    t->writable = 1;
    t->swept = 0;
    t->trimmed = 0;
    t->event_bytes = 0;
    body(t, arg);
    bool trim_done = !s->trim_pending;
    if (t->err == 0)
        outbox_mark(t, &trim_done);
    uint64_t event_seq = s->event_seq;
    if (t->err == 0) {
        int grc = ss_meta_get(txn, s, "seq:event", &event_seq);
        if (grc != MDB_NOTFOUND)
            txn_fail(t, grc);
    }
    if (t->err) {
        rc = t->err;
        mdb_txn_abort(txn);
    } else {
        rc = txn_commit(s, txn, event_seq);
    }
    t->txn = NULL;
    if (rc == 0) {
        s->replicated_stored = s->replicated_pending;
        s->trim_pending = !trim_done;
        s->event_seq = event_seq;
        s->stats.idem_swept += t->swept;
        s->stats.outbox_trimmed += t->trimmed;
        s->stats.event_bytes += t->event_bytes;
    }
    return rc;
}

static int txn_run(struct shard_store *s, struct shard_txn *t, shard_txn_body_fn body, void *arg)
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
            if (e < 0 && e > -4096)
                return e; /* a -errno: the operation's own failure, not the store's */
            return txn_fail(t, e);
        }
    }
    return txn_fail(t, mdb_put(t->txn, s->dbi[dbi], key, val, flags));
}

void shard_store_get_stats(const struct shard_store *s, struct shard_store_stats *out)
{
    ASSERT(s != NULL && out != NULL);
    *out = s->stats;
    out->map_bytes = s->map_bytes;
    out->event_seq = s->event_seq;
    out->replicated_seq = s->replicated_stored;
    out->event_durable = s->event_durable;
    if (s->wal)
        shard_wal_stats(s, out);
}

uint64_t shard_store_event_durable(const struct shard_store *s)
{
    ASSERT(s != NULL);
    if (s->wal)
        return shard_wal_event_durable(s);
    ASSERT(s->event_durable <= s->event_seq);
    return s->event_durable;
}

void shard_store_set_replicated(struct shard_store *s, uint64_t event_seq)
{
    ASSERT(s != NULL);
    if (event_seq > s->replicated_pending)
        s->replicated_pending = event_seq;
}

/* ---- the engine's store interface over one transaction ----------------------------- */

/*
 * Each function below implements one member of struct engine_store (engine/apply.h)
 * with ctx = struct shard_txn. LMDB failures stick in t->err (the batch is aborted);
 * -ENOENT is a normal answer of reads; -EOVERFLOW from a posting is the operation's
 * own failure (t->err stays 0, so only that operation is dropped; see apply_batch).
 */

/* Gets key from dbi: 0, -ENOENT, or the stuck LMDB error. */
static int txn_get(struct shard_txn *t, int dbi, MDB_val *key, MDB_val *val)
{
    if (t->err)
        return t->err;
    int rc = mdb_get(t->txn, t->s->dbi[dbi], key, val);
    if (rc == MDB_NOTFOUND)
        return -ENOENT;
    return txn_fail(t, rc);
}

int ss_payment_get(void *ctx, const char *id, size_t id_len, struct payment *out)
{
    struct shard_txn *t = ctx;
    if (id_len != RECORD_PAYMENT_ID_BYTES)
        return -ENOENT;
    MDB_val key = {.mv_size = id_len, .mv_data = (void *)id}, val;
    int rc = txn_get(t, SHARD_DBI_PAYMENTS, &key, &val);
    if (rc)
        return rc;
    if (record_payment_decode(val.mv_data, val.mv_size, out) || memcmp(out->id, id, id_len) != 0)
        return txn_fail(t, MDB_CORRUPTED);
    return 0;
}

static int st_payment_put(void *ctx, const struct payment *p)
{
    struct shard_txn *t = ctx;
    uint8_t buf[RECORD_PAYMENT_MAX_BYTES];
    MDB_val key = {.mv_size = RECORD_PAYMENT_ID_BYTES, .mv_data = (void *)p->id};
    MDB_val val = {.mv_data = buf, .mv_size = record_payment_encode(buf, p)};
    return txn_put(t, SHARD_DBI_PAYMENTS, &key, &val, 0);
}

static int st_refund_put(void *ctx, const struct refund *r)
{
    struct shard_txn *t = ctx;
    uint8_t buf[RECORD_REFUND_MAX_BYTES];
    MDB_val key = {.mv_size = RECORD_PAYMENT_ID_BYTES, .mv_data = (void *)r->id};
    MDB_val val = {.mv_data = buf, .mv_size = record_refund_encode(buf, r)};
    return txn_put(t, SHARD_DBI_REFUNDS, &key, &val, MDB_NOOVERWRITE);
}

const char *ss_seq_name(enum engine_seq which)
{
    switch (which) {
    case ENGINE_SEQ_PAYMENT:
        return "seq:payment";
    case ENGINE_SEQ_REFUND:
        return "seq:refund";
    case ENGINE_SEQ_EVENT:
        return "seq:event";
    }
    UNREACHABLE();
    return NULL;
}

static int st_next_sequence(void *ctx, enum engine_seq which, uint64_t *out)
{
    struct shard_txn *t = ctx;
    if (t->err)
        return t->err;
    const char *name = ss_seq_name(which);
    uint64_t v = 0;
    int rc = ss_meta_get(t->txn, t->s, name, &v);
    if (rc && rc != MDB_NOTFOUND)
        return txn_fail(t, rc);
    ASSERT(v < UINT64_MAX);
    uint8_t buf[RECORD_I64_BYTES];
    record_i64_encode(buf, (int64_t)(v + 1));
    MDB_val key = {.mv_size = strlen(name), .mv_data = (void *)name};
    MDB_val val = {.mv_size = sizeof(buf), .mv_data = buf};
    rc = txn_put(t, SHARD_DBI_META, &key, &val, 0);
    if (rc == 0)
        *out = v + 1;
    return rc;
}

int ss_idem_get(void *ctx, const char *m, size_t mlen, const char *k, size_t klen,
                struct idem_record *out)
{
    struct shard_txn *t = ctx;
    uint8_t kbuf[RECORD_KEY_MAX];
    MDB_val key = {.mv_data = kbuf, .mv_size = record_key_idem(kbuf, m, mlen, k, klen)};
    MDB_val val;
    int rc = txn_get(t, SHARD_DBI_IDEM, &key, &val);
    if (rc)
        return rc;
    /* The spans point into the map; valid until the next store call (apply.h). */
    if (record_idem_decode(val.mv_data, val.mv_size, out))
        return txn_fail(t, MDB_CORRUPTED);
    return 0;
}

static int st_idem_put(void *ctx, const char *m, size_t mlen, const char *k, size_t klen,
                       const struct idem_record *rec)
{
    struct shard_txn *t = ctx;
    if (t->err)
        return t->err;
    uint8_t kbuf[RECORD_KEY_MAX];
    MDB_val key = {.mv_data = kbuf, .mv_size = record_key_idem(kbuf, m, mlen, k, klen)};
    MDB_val val = {.mv_size = record_idem_size(rec)};
    /* MDB_RESERVE: LMDB hands out the space and we encode straight into it. */
    int rc = txn_put(t, SHARD_DBI_IDEM, &key, &val, MDB_RESERVE);
    if (rc)
        return rc;
    size_t n = record_idem_encode(val.mv_data, rec);
    ASSERT(n == val.mv_size);
    /* The expiry index entry. It goes around the fault injection of txn_put on purpose:
     * the injection tests count the puts of the records themselves. */
    uint8_t xbuf[8 + RECORD_KEY_MAX];
    MDB_val xkey = {.mv_data = xbuf,
                    .mv_size = record_key_idem_exp(xbuf, rec->created_at_ms, kbuf, key.mv_size)};
    MDB_val empty = {.mv_data = NULL, .mv_size = 0};
    return txn_fail(t, mdb_put(t->txn, t->s->dbi[SHARD_DBI_IDEM_EXP], &xkey, &empty, 0));
}

/*
 * Deletes up to max idempotency records created before cutoff_ms, oldest first, with
 * their expiry index entries, inside the batch's transaction (no extra commit). A
 * record whose creation time differs from its index entry is not deleted (it cannot
 * happen today: records are written once; the check keeps a stale index harmless).
 */
void ss_idem_sweep(struct shard_txn *t, int64_t cutoff_ms, size_t max)
{
    MDB_cursor *c = NULL;
    if (cutoff_ms <= 0 || txn_fail(t, mdb_cursor_open(t->txn, t->s->dbi[SHARD_DBI_IDEM_EXP], &c)))
        return;
    MDB_val k, v;
    int rc;
    size_t swept = 0;
    while (swept < max && (rc = mdb_cursor_get(c, &k, &v, MDB_FIRST)) == 0) {
        if (k.mv_size <= 8) {
            rc = MDB_CORRUPTED;
            break;
        }
        int64_t created = (int64_t)record_get_u64be(k.mv_data);
        if (created >= cutoff_ms)
            break;
        MDB_val ik = {.mv_data = (uint8_t *)k.mv_data + 8, .mv_size = k.mv_size - 8};
        MDB_val iv;
        rc = mdb_get(t->txn, t->s->dbi[SHARD_DBI_IDEM], &ik, &iv);
        struct idem_record rec;
        if (rc == 0 && record_idem_decode(iv.mv_data, iv.mv_size, &rec) == 0 &&
            rec.created_at_ms == created)
            rc = mdb_del(t->txn, t->s->dbi[SHARD_DBI_IDEM], &ik, NULL);
        else if (rc == MDB_NOTFOUND || rc == 0)
            rc = 0;
        if (rc || (rc = mdb_cursor_del(c, 0)))
            break;
        swept++;
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND)
        txn_fail(t, rc);
    t->swept += swept;
}

/* Reads the balances of (merchant, currency) into *b: 0, -ENOENT, or an error. */
static int balance_read(struct shard_txn *t, const char *m, size_t mlen, const char *cur,
                        struct balance *b)
{
    uint8_t kbuf[RECORD_KEY_MAX];
    MDB_val key = {.mv_data = kbuf, .mv_size = record_key_balance(kbuf, m, mlen, cur)};
    MDB_val val;
    int rc = txn_get(t, SHARD_DBI_BALANCES, &key, &val);
    if (rc)
        return rc;
    struct record_balance rb;
    if (record_balance_decode(val.mv_data, val.mv_size, &rb) ||
        (uint64_t)rb.clearing + (uint64_t)rb.pending + (uint64_t)rb.available != 0)
        return txn_fail(t, MDB_CORRUPTED);
    memset(b, 0, sizeof(*b));
    memcpy(b->currency, cur, CURRENCY_BYTES);
    b->clearing = rb.clearing;
    b->pending = rb.pending;
    b->available = rb.available;
    return 0;
}

/* The merchant's last ledger sequence number, 0 when its ledger is empty. */
int ss_ledger_last_seq(struct shard_txn *t, const char *m, size_t mlen, uint64_t *seq)
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

static int st_posting_add(void *ctx, const struct posting *p, int64_t now_ms, uint64_t *seq)
{
    struct shard_txn *t = ctx;
    ledger_posting_check(p);
    struct balance b;
    int rc = balance_read(t, p->merchant_id, p->merchant_id_len, p->currency, &b);
    if (rc == -ENOENT) {
        memset(&b, 0, sizeof(b));
        memcpy(b.currency, p->currency, CURRENCY_BYTES);
    } else if (rc) {
        return rc;
    }
    rc = ledger_balance_apply(&b, p);
    if (rc)
        return rc; /* -EOVERFLOW: this operation's failure, nothing written yet */
    uint64_t last = 0;
    rc = ss_ledger_last_seq(t, p->merchant_id, p->merchant_id_len, &last);
    if (rc)
        return rc;
    struct record_ledger_entry e = {.debit = (uint8_t)p->debit,
                                    .credit = (uint8_t)p->credit,
                                    .amount = p->amount,
                                    .created_at_ms = now_ms,
                                    .payment_id_len = RECORD_PAYMENT_ID_BYTES};
    memcpy(e.currency, p->currency, 3);
    memcpy(e.payment_id, p->payment_id, RECORD_PAYMENT_ID_BYTES);
    uint8_t kbuf[RECORD_KEY_MAX], vbuf[RECORD_LEDGER_MAX_BYTES];
    MDB_val key = {.mv_data = kbuf};
    key.mv_size = record_key_ledger(kbuf, p->merchant_id, p->merchant_id_len, last + 1);
    MDB_val val = {.mv_data = vbuf, .mv_size = record_ledger_encode(vbuf, &e)};
    rc = txn_put(t, SHARD_DBI_LEDGER, &key, &val, MDB_NOOVERWRITE);
    if (rc)
        return rc;
    struct record_balance rb = {b.clearing, b.pending, b.available};
    uint8_t bbuf[RECORD_BALANCE_BYTES];
    record_balance_encode(bbuf, &rb);
    key.mv_size = record_key_balance(kbuf, p->merchant_id, p->merchant_id_len, p->currency);
    val = (MDB_val){.mv_data = bbuf, .mv_size = sizeof(bbuf)};
    rc = txn_put(t, SHARD_DBI_BALANCES, &key, &val, 0);
    if (rc == 0 && seq)
        *seq = last + 1;
    return rc;
}

int ss_balance_get(void *ctx, const char *m, size_t mlen, const char *cur, struct balance *out)
{
    return balance_read(ctx, m, mlen, cur, out);
}

/* Visits every balance record of merchant m, in currency order. */
int ss_balance_list(void *ctx, const char *m, size_t mlen, engine_balance_fn fn, void *arg)
{
    struct shard_txn *t = ctx;
    if (t->err)
        return t->err;
    uint8_t kbuf[RECORD_KEY_MAX];
    size_t prefix = record_key_merchant(kbuf, m, mlen);
    MDB_val key = {.mv_data = kbuf, .mv_size = prefix}, val;
    MDB_cursor *c = NULL;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[SHARD_DBI_BALANCES], &c);
    if (rc)
        return txn_fail(t, rc);
    int ret = 0;
    for (rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE); rc == 0 && ret == 0;
         rc = mdb_cursor_get(c, &key, &val, MDB_NEXT)) {
        if (key.mv_size != prefix + 3 || memcmp(key.mv_data, kbuf, prefix) != 0)
            break;
        char cur[CURRENCY_BYTES];
        memcpy(cur, (const uint8_t *)key.mv_data + prefix, CURRENCY_BYTES);
        struct balance b;
        if (!record_currency_valid(cur)) {
            ret = txn_fail(t, MDB_CORRUPTED);
            break;
        }
        ret = balance_read(t, m, mlen, cur, &b);
        if (ret == 0)
            ret = fn(arg, &b);
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND)
        return txn_fail(t, rc);
    return ret;
}

int ss_ledger_page(void *ctx, const char *m, size_t mlen, uint64_t after, uint32_t limit,
                   engine_entry_fn fn, void *arg, bool *more)
{
    struct shard_txn *t = ctx;
    *more = false;
    if (t->err)
        return t->err;
    if (after == UINT64_MAX)
        return 0;
    uint8_t kbuf[RECORD_KEY_MAX];
    MDB_val key = {.mv_data = kbuf, .mv_size = record_key_ledger(kbuf, m, mlen, after + 1)};
    size_t prefix = key.mv_size - 8;
    MDB_val val;
    MDB_cursor *c = NULL;
    int rc = mdb_cursor_open(t->txn, t->s->dbi[SHARD_DBI_LEDGER], &c);
    if (rc)
        return txn_fail(t, rc);
    int ret = 0;
    uint32_t seen = 0;
    for (rc = mdb_cursor_get(c, &key, &val, MDB_SET_RANGE); rc == 0 && ret == 0;
         rc = mdb_cursor_get(c, &key, &val, MDB_NEXT)) {
        if (key.mv_size != prefix + 8 || memcmp(key.mv_data, kbuf, prefix) != 0)
            break;
        if (seen == limit) {
            *more = true;
            break;
        }
        struct record_ledger_entry re;
        if (record_ledger_decode(val.mv_data, val.mv_size, &re) ||
            re.payment_id_len != RECORD_PAYMENT_ID_BYTES) {
            ret = txn_fail(t, MDB_CORRUPTED);
            break;
        }
        struct ledger_entry e = {.seq = record_get_u64be((const uint8_t *)key.mv_data + prefix),
                                 .debit = (enum ledger_account)re.debit,
                                 .credit = (enum ledger_account)re.credit,
                                 .amount = re.amount,
                                 .created_at_ms = re.created_at_ms};
        memcpy(e.payment_id, re.payment_id, RECORD_PAYMENT_ID_BYTES);
        memcpy(e.currency, re.currency, CURRENCY_BYTES);
        seen++;
        ret = fn(arg, &e);
    }
    mdb_cursor_close(c);
    if (rc && rc != MDB_NOTFOUND)
        return txn_fail(t, rc);
    return ret;
}

static int st_event_append(void *ctx, const struct engine_event *ev)
{
    struct shard_txn *t = ctx;
    ASSERT(ev->seq >= 1 && ev->topic != NULL);
    struct record_event re = {.merchant = ev->key.ptr,
                              .merchant_len = ev->key.len,
                              .topic = ev->topic,
                              .topic_len = strlen(ev->topic),
                              .json = ev->value.ptr,
                              .json_len = ev->value.len};
    uint8_t kbuf[8];
    record_put_u64be(kbuf, ev->seq);
    MDB_val key = {.mv_data = kbuf, .mv_size = sizeof(kbuf)};
    MDB_val val = {.mv_size = record_event_size(&re)};
    /* Event sequence numbers only grow, so the key sorts last: MDB_APPEND is valid,
     * and a reused number fails (MDB_KEYEXIST) instead of overwriting an event. */
    int rc = txn_put(t, SHARD_DBI_OUTBOX, &key, &val, MDB_APPEND | MDB_RESERVE);
    if (rc)
        return rc;
    size_t n = record_event_encode(val.mv_data, &re);
    ASSERT(n == val.mv_size);
    t->event_bytes += re.merchant_len + re.json_len;
    return 0;
}

static const struct engine_store write_store = {
    .payment_get = ss_payment_get,
    .payment_put = st_payment_put,
    .refund_put = st_refund_put,
    .next_sequence = st_next_sequence,
    .idem_get = ss_idem_get,
    .idem_put = st_idem_put,
    .posting_add = st_posting_add,
    .balance_get = ss_balance_get,
    .balance_list = ss_balance_list,
    .ledger_page = ss_ledger_page,
    .event_append = st_event_append,
};

/* Reads only: the write members are NULL (engine/apply.h). */
static const struct engine_store read_store = {
    .payment_get = ss_payment_get,
    .idem_get = ss_idem_get,
    .balance_get = ss_balance_get,
    .balance_list = ss_balance_list,
    .ledger_page = ss_ledger_page,
};

/* ---- group commit ------------------------------------------------------------------ */

/* Internal: engine_apply failed on its own (t->err == 0); index in batch_run.failed. */
#define SHARD_ITEM_FAILED (-ECANCELED)

struct batch_run {
    struct batch_item *items;
    size_t n;
    int64_t now_ms;
    size_t failed; /* the item that failed alone, when the body returns ITEM_FAILED */
};

/* Renders 503 overloaded into an item's answer. */
void ss_answer_overloaded(struct batch_item *it, int rc)
{
    struct api_error e;
    api_error_set(&e, 503, "overloaded", "the shard store could not commit; retry later", NULL);
    struct jw w;
    jw_init(&w, it->answer.body, it->answer.cap);
    api_render_error(&w, &e, it->op->request_id, it->op->request_id_len);
    ASSERT(jw_finish(&w) == 0); /* callers give at least ENGINE_ANSWER_MAX_BYTES */
    it->answer.status = 503;
    it->answer.replayed = false;
    it->answer.len = w.len;
    it->rc = rc;
}

/* Answers every item not answered yet 503 overloaded with rc; returns rc. */
static int batch_refuse(struct batch_item *items, size_t n, int rc)
{
    ASSERT(rc < 0);
    for (size_t i = 0; i < n; i++)
        if (items[i].rc == 0)
            ss_answer_overloaded(&items[i], rc);
    return rc;
}

static void batch_body(struct shard_txn *t, void *varg)
{
    struct batch_run *b = varg;
    for (size_t i = 0; i < b->n; i++) {
        struct batch_item *it = &b->items[i];
        if (it->rc)
            continue; /* dropped on an earlier attempt: already answered 503 */
        int rc = engine_apply(&write_store, t, it->op, b->now_ms, &it->answer);
        if (rc == 0)
            continue;
        if (t->err == 0) {
            /* The operation failed by itself (e.g. a balance would overflow). */
            b->failed = i;
            t->err = SHARD_ITEM_FAILED;
        }
        return;
    }
    /* Sweep twice as many expired keys as the batch can have made, at least
     * IDEM_SWEEP_MIN: the sweep keeps pace with any insert rate, and its cost per
     * commit stays bounded. */
    size_t max = 2 * b->n > IDEM_SWEEP_MIN ? 2 * b->n : IDEM_SWEEP_MIN;
    ss_idem_sweep(t, b->now_ms - t->s->idem_ttl_ms, max);
}

int shard_store_apply_batch(struct shard_store *s, struct batch_item *items, size_t n,
                            int64_t now_ms)
{
    ASSERT(s != NULL && (items != NULL || n == 0));
    for (size_t i = 0; i < n; i++) {
        ASSERT(items[i].op != NULL && items[i].answer.body != NULL);
        ASSERT(items[i].op->shard == s->shard); /* routed to the shard that owns it */
        ASSERT(items[i].answer.cap >= ENGINE_ANSWER_MAX_BYTES);
        items[i].rc = 0;
    }
    if (s->failed)
        return batch_refuse(items, n, s->failed);
    if (s->wal)
        return shard_wal_apply_batch(s, items, n, now_ms);
    struct batch_run b = {.items = items, .n = n, .now_ms = now_ms};
    struct shard_txn t;
    int rc;
    /* Each attempt that fails on one operation alone drops that operation (503) and
     * runs the rest again from scratch: the transaction was aborted, so nothing of
     * the first attempt exists, and the others get the same answers as before. */
    for (int attempt = 0;; attempt++) {
        rc = txn_run(s, &t, batch_body, &b);
        if (rc != SHARD_ITEM_FAILED)
            break;
        ss_answer_overloaded(&items[b.failed], -EOVERFLOW);
        s->stats.dropped_items++;
        if (attempt == SHARD_BATCH_DROP_MAX) {
            rc = -EAGAIN;
            break;
        }
    }
    if (rc == 0) {
        s->stats.batches++;
        s->stats.items += n;
        return 0;
    }
    /* Only "the transaction does not fit" and a batch of too many failing operations
     * are found before anything is written; every other error fails the store. */
    bool before_write = rc == MDB_MAP_FULL || rc == MDB_TXN_FULL || rc == -EAGAIN;
    rc = ss_errno_of(rc);
    if (!before_write)
        rc = ss_fail(s, rc);
    return batch_refuse(items, n, rc);
}

static void read_body(struct shard_txn *t, struct batch_item *items, size_t n, int64_t now_ms)
{
    for (size_t i = 0; i < n; i++) {
        struct batch_item *it = &items[i];
        ASSERT(it->op->shard == t->s->shard);
        ASSERT(it->op->kind == OP_GET_PAYMENT || it->op->kind == OP_BALANCES ||
               it->op->kind == OP_LEDGER);
        it->rc = engine_apply(&read_store, t, it->op, now_ms, &it->answer);
        if (it->rc)
            ss_answer_overloaded(it, it->rc);
    }
}

int shard_store_read(struct shard_store *s, struct batch_item *items, size_t n, int64_t now_ms)
{
    ASSERT(s != NULL && (items != NULL || n == 0));
    if (s->wal)
        return shard_wal_read(s, items, n, now_ms);
    struct shard_txn t = {.s = s};
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &t.txn);
    if (rc) {
        for (size_t i = 0; i < n; i++)
            ss_answer_overloaded(&items[i], ss_errno_of(rc));
        return ss_errno_of(rc);
    }
    read_body(&t, items, n, now_ms);
    mdb_txn_abort(t.txn);
    return 0;
}

/* ---- outbox reads ------------------------------------------------------------------ */

int ss_scan_events(MDB_cursor *c, uint64_t after_seq, size_t max, shard_event_fn fn, void *arg,
                   uint64_t *last, size_t *seen)
{
    uint8_t kbuf[8];
    *seen = 0;
    if (after_seq == UINT64_MAX)
        return 0;
    record_put_u64be(kbuf, after_seq + 1);
    MDB_val k = {.mv_size = sizeof(kbuf), .mv_data = kbuf}, v;
    int rc = mdb_cursor_get(c, &k, &v, MDB_SET_RANGE);
    while (rc == 0 && *seen < max) {
        struct record_event re;
        if (k.mv_size != 8 || record_event_decode(v.mv_data, v.mv_size, &re))
            return -EBADMSG;
        struct shard_event ev = {.seq = record_get_u64be(k.mv_data),
                                 .topic = re.topic,
                                 .topic_len = re.topic_len,
                                 .key = re.merchant,
                                 .key_len = re.merchant_len,
                                 .value = re.json,
                                 .value_len = re.json_len};
        ASSERT(ev.seq > *last); /* *last starts at after_seq */
        *last = ev.seq;
        (*seen)++;
        int ret = fn(arg, &ev);
        if (ret)
            return ret;
        rc = mdb_cursor_get(c, &k, &v, MDB_NEXT);
    }
    return rc == MDB_NOTFOUND ? 0 : ss_errno_of(rc);
}

int shard_store_outbox_scan(struct shard_store *s, uint64_t after_seq, size_t max,
                            shard_event_fn fn, void *arg)
{
    ASSERT(s != NULL && fn != NULL);
    if (s->wal)
        return shard_wal_outbox_scan(s, after_seq, max, fn, arg);
    MDB_txn *txn = NULL;
    MDB_cursor *c = NULL;
    int rc = mdb_txn_begin(s->env, NULL, MDB_RDONLY, &txn);
    if (rc)
        return ss_errno_of(rc);
    rc = mdb_cursor_open(txn, s->dbi[SHARD_DBI_OUTBOX], &c);
    if (rc == 0) {
        uint64_t last = after_seq;
        size_t seen = 0;
        rc = ss_scan_events(c, after_seq, max, fn, arg, &last, &seen);
        mdb_cursor_close(c);
    } else {
        rc = ss_errno_of(rc);
    }
    mdb_txn_abort(txn);
    return rc;
}
