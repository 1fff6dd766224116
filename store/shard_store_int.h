/*
 * Internal to the shard store: shared by store/shard_store.c (the LMDB environment, the
 * engine's store over one LMDB transaction, the LMDB-only group commit) and
 * store/shard_wal.c (the write-ahead log mode: overlay, log, checkpoints, recovery).
 * Nothing outside these two files includes it.
 */
#ifndef RINGPAY_STORE_SHARD_STORE_INT_H
#define RINGPAY_STORE_SHARD_STORE_INT_H

#include <lmdb.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/apply.h"
#include "store/manifest.h"
#include "store/shard_store.h"

enum shard_dbi {
    SHARD_DBI_PAYMENTS,
    SHARD_DBI_REFUNDS,
    SHARD_DBI_IDEM,
    SHARD_DBI_LEDGER,
    SHARD_DBI_BALANCES,
    SHARD_DBI_OUTBOX,
    SHARD_DBI_META,
    SHARD_DBI_IDEM_EXP,
    SHARD_DBI_COUNT
};

struct shard_wal;

struct shard_store {
    MDB_env *env;
    MDB_dbi dbi[SHARD_DBI_COUNT];
    unsigned shard;
    size_t map_bytes;            /* current map size */
    size_t map_max_bytes;        /* ceiling of growth on MDB_MAP_FULL */
    uint64_t replicated_pending; /* mark to store with the next commit */
    uint64_t replicated_stored;  /* mark on disk */
    uint64_t event_seq;          /* last event sequence number committed (at txn_written) */
    uint64_t event_durable;      /* last event of transaction txn_durable (LMDB mode) */
    struct shard_store_stats stats;
    bool trim_pending;            /* the outbox may hold events at or below the mark */
    uint64_t txn_written;         /* last transaction id whose meta page was written */
    uint64_t txn_durable;         /* highest id a completed fdatasync covered */
    int failed;                   /* 0, or the -errno that failed the store for good */
    unsigned fault_after_puts;    /* tests: puts that succeed before the fault */
    int fault_errno;              /* tests: LMDB code the injected fault returns; 0 = off */
    int fault_persistent;         /* tests: keep failing after the first fault */
    unsigned fault_after_commits; /* tests: commits that run before the commit fault */
    int fault_commit_errno;       /* tests: errno of the injected commit failure; 0 = off */
    unsigned fault_after_syncs;   /* tests: syncs that run before the sync fault */
    int fault_sync_errno;         /* tests: errno of the injected sync failure; 0 = off */
    int64_t idem_ttl_ms;          /* idempotency records older than this are swept */
    int defer_meta_sync;          /* MDB_NOMETASYNC: see shard_store.h */
    struct shard_wal *wal;        /* the write-ahead log mode's state; NULL: LMDB mode */
    char path[STORE_PATH_MAX];
};

/* One write (or read) transaction of a batch. The first LMDB error sticks in err and
 * makes every later store call of the batch fail fast; the batch is then aborted. */
struct shard_txn {
    struct shard_store *s;
    MDB_txn *txn;
    int err;        /* first LMDB error, 0 while all went well */
    int writable;   /* 0 in a read-only transaction */
    size_t swept;   /* idempotency records this transaction deleted */
    size_t trimmed; /* outbox events this transaction deleted */

    uint64_t event_bytes; /* key and value bytes of the events this transaction appended */
};

/* LMDB result -> 0 or -errno (MDB_MAP_FULL/TXN_FULL: -ENOSPC; corruption: -EBADMSG). */
int ss_errno_of(int mdb_rc);

/* Records the error that fails the store for good (the first one sticks); returns it. */
int ss_fail(struct shard_store *s, int err);

/* The meta counters: LMDB results (MDB_NOTFOUND when absent). */
int ss_meta_get(MDB_txn *txn, const struct shard_store *s, const char *name, uint64_t *v);
int ss_meta_put(MDB_txn *txn, const struct shard_store *s, const char *name, uint64_t v);

/* The meta name of a sequence ("seq:payment", ...). */
const char *ss_seq_name(enum engine_seq which);

/* The id of the last transaction whose meta page was written. */
uint64_t ss_env_last_txn(const struct shard_store *s);

/* Reads of the engine's store over t (ctx = struct shard_txn *; engine/apply.h). */
int ss_payment_get(void *ctx, const char *id, size_t id_len, struct payment *out);
int ss_idem_get(void *ctx, const char *m, size_t mlen, const char *k, size_t klen,
                struct idem_record *out);
int ss_balance_get(void *ctx, const char *m, size_t mlen, const char *cur, struct balance *out);
int ss_balance_list(void *ctx, const char *m, size_t mlen, engine_balance_fn fn, void *arg);
int ss_ledger_page(void *ctx, const char *m, size_t mlen, uint64_t after, uint32_t limit,
                   engine_entry_fn fn, void *arg, bool *more);

/* The merchant's last ledger sequence number in t, 0 when none. */
int ss_ledger_last_seq(struct shard_txn *t, const char *m, size_t mlen, uint64_t *seq);

/* Maintenance inside a write transaction (see shard_store.c). */
void ss_idem_sweep(struct shard_txn *t, int64_t cutoff_ms, size_t max);
void ss_outbox_trim(struct shard_txn *t, uint64_t mark, bool *done);

/* Visits outbox events of cursor c with seq > after_seq, at most max; *last is set to
 * the last seq visited (unchanged when none). 0, fn's nonzero value, or -errno. */
int ss_scan_events(MDB_cursor *c, uint64_t after_seq, size_t max, shard_event_fn fn, void *arg,
                   uint64_t *last, size_t *seen);

/* Renders 503 overloaded into an item (rc < 0 kept in it->rc). */
void ss_answer_overloaded(struct batch_item *it, int rc);

#endif
