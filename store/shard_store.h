/*
 * The LMDB shard store: the durable state of one shard (payments, refunds,
 * idempotency records, the merchants' ledgers and balances, the outbox of events)
 * in one LMDB environment at DATA/shard-NNN/, and the group commit that applies a
 * batch of operations in one write transaction.
 *
 * Threading: a store is owned by ONE thread (the shard thread). Every function here
 * must be called from that thread. This is also what makes growing the map safe:
 * LMDB requires that no transaction of the process is open during
 * mdb_env_set_mapsize, and only the owner ever opens one. Exception: when the store
 * is opened with map_max_bytes == map_bytes (growth off; the map is address space,
 * so e.g. 64 GiB costs no disk), shard_store_read may also be called from other
 * threads (the environment uses MDB_NOTLS), e.g. reactors serving GETs.
 *
 * Durability (SPEC §6) is tracked by POSITIONS, LMDB transaction ids, never by flags
 * or return codes (docs/durability.md):
 * - written: the id of the last transaction whose meta page was written. A commit
 *   that changed nothing writes nothing (LMDB skips its data write, its fdatasync and
 *   its meta page, and returns 0): written does not move, and that commit proves no
 *   sync. A commit that wrote moves written by exactly one.
 * - durable: the highest id whose meta page a COMPLETED fdatasync covered. A sync
 *   covers what was written before it started: the data fdatasync inside the commit
 *   of T covers meta T-1 (and T itself when the meta page is synced too, i.e. without
 *   defer_meta_sync, where LMDB writes it through an O_DSYNC descriptor); an explicit
 *   shard_store_sync() started when written was W covers W.
 * - durable <= written always. Everything a transaction <= durable wrote survives a
 *   power cut; an answer computed from the state of transaction P (P = written right
 *   after the batch or read that computed it) may be sent only once durable >= P.
 *   The store never sends anything; the caller (store/shard.c) holds answers.
 * - The environment never runs with MDB_NOSYNC, MDB_MAPASYNC or MDB_WRITEMAP (asserted
 *   at open): every commit that wrote ran its data fdatasync, which is what lets the
 *   positions above be derived from the id advancing.
 * - Opening syncs once (so state left in the page cache by a killed process is on
 *   disk before anything is answered from it), and fsyncs DATA after creating the
 *   shard directory and the shard directory after LMDB created its files.
 *
 * Failure: a commit or sync error other than "the transaction does not fit"
 * (MDB_MAP_FULL after growing, MDB_TXN_FULL: detected while building the transaction,
 * before any write) fails the store for good: after a failed fsync Linux may drop the
 * dirty pages and report the next fsync clean, so no later sync can be trusted.
 * From then on every write and sync returns the first error without touching the
 * environment (shard_store_failed); reopening the environment starts afresh from the
 * last meta page on disk.
 */
#ifndef RINGPAY_STORE_SHARD_STORE_H
#define RINGPAY_STORE_SHARD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/apply.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Default initial map size of a shard: 1 GiB of address space (not of disk; the
 * file grows with the data). */
#define SHARD_MAP_DEFAULT_BYTES ((size_t)1 << 30)

/* Default ceiling of map growth on MDB_MAP_FULL: 64 GiB per shard. Past it a batch is
 * answered 503 overloaded; an operator must make room. */
#define SHARD_MAP_MAX_BYTES ((size_t)64 << 30)

/* Operations of one batch that may fail on their own (and be dropped, answered 503)
 * before the whole batch is given up. Such failures are rare (a balance that would
 * leave int64); the bound keeps one poisoned batch from being retried without end. */
#define SHARD_BATCH_DROP_MAX 8

struct shard_store;

/* One operation of a batch. The caller fills op and answer.body/cap (at least
 * ENGINE_ANSWER_MAX_BYTES; ENGINE_READ_ANSWER_MAX_BYTES for BALANCES and LEDGER); the
 * store fills answer.status/replayed/len and rc. op and the request bytes it borrows
 * must stay valid until the call returns. */
struct batch_item {
    const struct op *op;
    struct answer answer;
    int rc; /* 0: the engine's answer; -errno: the store failed, answer is 503 */
};

struct shard_store_options {
    size_t map_bytes;     /* initial map size; 0: SHARD_MAP_DEFAULT_BYTES */
    size_t map_max_bytes; /* growth ceiling; 0: SHARD_MAP_MAX_BYTES */
    /* Fault injection, for tests only: after fault_after_puts successful mdb_put
     * calls, the next one fails with the LMDB code fault_errno (once, or every time
     * when fault_persistent). 0 turns it off. A plain -errno value (-1..-4095) is
     * returned without marking the transaction failed: it simulates an operation that
     * fails on its own, which apply_batch drops. */
    unsigned fault_after_puts;
    int fault_errno;
    int fault_persistent;
    /* Fault injection of the durability path, for tests only (fault_persistent applies
     * too): after fault_after_commits commits that reached mdb_txn_commit, the next
     * one is aborted instead and reported as the system error fault_commit_errno
     * (EIO, ENOSPC, ...), as if its fdatasync had failed; after fault_after_syncs
     * explicit syncs, the next shard_store_sync() fails with fault_sync_errno without
     * syncing. 0 turns each off. */
    unsigned fault_after_commits;
    int fault_commit_errno;
    unsigned fault_after_syncs;
    int fault_sync_errno;
    /* Idempotency records older than this are swept; 0: IDEM_TTL_DEFAULT_MS. */
    int64_t idem_ttl_ms;
    /* Opens the environment with MDB_NOMETASYNC: a commit fdatasyncs its data pages
     * but writes its meta page without a sync. Commit T is then durable only once a
     * LATER fdatasync completed: that of the next commit that WRITES (it flushes the
     * whole file before its own meta page is written; a commit that changed nothing
     * runs no sync at all) or shard_store_sync(). shard_store_durable() says when; the
     * caller holds every answer until then (store/shard.c does). One fsync per commit
     * instead of two; LMDB keeps integrity in this mode (a page freed by commit N is
     * reused only from N + 2 on, after N + 1's sync made meta N durable). Without it
     * every commit that wrote is durable when it returns. */
    int defer_meta_sync;
    /* The write-ahead log mode (docs/architecture.md "The write-ahead log"): batches are
     * applied to an in-memory overlay and appended to the shard's log (store/wal.h); a
     * checkpointer thread writes the overlay into LMDB in large durable transactions.
     * Positions are then byte positions of the log, and they become durable by
     * themselves (shard_store_async): the caller kicks the log's writer and waits on
     * shard_store_event_fd. The map is fixed at map_max_bytes (address space). 0: the
     * LMDB mode above, where every group commit is an LMDB commit. */
    int wal;
    size_t wal_segment_bytes; /* 0: WAL_SEGMENT_BYTES */
    size_t overlay_bytes;     /* per layer; 0: OVERLAY_ARENA_DEFAULT_BYTES */
    uint64_t checkpoint_ops;  /* 0: CHECKPOINT_OPS_DEFAULT */
    uint32_t checkpoint_ms;   /* 0: CHECKPOINT_MS_DEFAULT */
    /* Tests only: the log's n-th write or sync fails with wal_fault_errno (0: none). */
    unsigned wal_fault_after_syncs;
    int wal_fault_errno;
    /* Tests only: called by the checkpointer at each step of a checkpoint (enum
     * shard_ckpt_step), e.g. to end the process there. NULL: none. */
    void (*ckpt_hook)(void *arg, int step);
    void *ckpt_hook_arg;
};

/* The steps of a checkpoint a test hook sees, in order. */
enum shard_ckpt_step {
    SHARD_CKPT_BEFORE_COMMIT = 1, /* the layer is in the LMDB transaction, not committed */
    SHARD_CKPT_COMMITTED = 2,     /* committed durably; the log not recycled yet */
    SHARD_CKPT_RECYCLED = 3,      /* a segment below the checkpoint was renamed */
    SHARD_CKPT_DONE = 4,          /* the shard may drop the layer */
};

struct shard_store_stats {
    uint64_t batches;        /* batches committed */
    uint64_t items;          /* operations in committed batches */
    uint64_t dropped_items;  /* operations that failed alone, answered 503 */
    uint64_t commits;        /* write transactions committed */
    uint64_t failed_commits; /* batches answered 503 because the store failed */
    uint64_t idem_swept;     /* expired idempotency records deleted */
    uint64_t outbox_trimmed; /* replicated outbox events deleted */
    uint64_t map_full;       /* MDB_MAP_FULL seen */
    uint64_t map_grows;      /* map size increases */
    size_t map_bytes;        /* current map size */
    uint64_t event_seq;      /* last outbox event committed */
    uint64_t event_durable;  /* last outbox event whose commit is durable */
    uint64_t event_bytes;    /* key + value bytes of the events committed since open */
    uint64_t replicated_seq; /* outbox replicated (and trimmed) up to this event: stored */
    /* event_seq - replicated_seq is the outbox backlog for /metrics. */
    /* The write-ahead log mode (zero otherwise). */
    uint64_t wal_written, wal_durable; /* log positions (bytes) */
    uint64_t wal_writes, wal_syncs, wal_bytes, wal_sync_ns;
    uint64_t wal_segments_made, wal_segments_recycled;
    uint64_t checkpoints;         /* checkpoints committed */
    uint64_t checkpoint_ns;       /* time spent writing and committing them */
    uint64_t checkpoint_ops;      /* operations they covered */
    uint64_t checkpoint_bytes;    /* bytes the checkpointer thread wrote (/proc/thread-self/io) */
    uint64_t checkpoint_pos;      /* the log position the last one covers */
    uint64_t overlay_bytes;       /* bytes held in the two layers now */
    uint64_t overlay_ops;         /* operations in the active layer */
    uint64_t overlay_full;        /* times the shard waited for a checkpoint to make room */
    uint64_t replayed_records;    /* at open: log records replayed */
    uint64_t replayed_ops;        /* at open: operations replayed */
    uint64_t replay_ns;           /* at open: time of the replay */
};

/*
 * Opens (creating on first use) the environment of shard `shard` under data_dir,
 * which store_manifest_open must have accepted. opt may be NULL for defaults.
 * Returns 0 and the store in *out, or -errno (-EBADMSG: the environment holds
 * another format version or is corrupt). On error nothing is left open.
 */
int shard_store_open(struct shard_store **out, const char *data_dir, unsigned shard,
                     const struct shard_store_options *opt);

/* Why the last shard_store_open of the calling thread failed, in one line, when it can
 * say more than its errno; "" otherwise. */
const char *shard_store_open_error(void);

/* fdatasyncs the environment: on 0 every commit written before it, data and meta
 * page, is on disk (durable = the written position at its start). Returns 0 or
 * -errno; any error fails the store for good (see the top of this file). */
int shard_store_sync(struct shard_store *s);

/* The position of the state the store shows now: the id of the last transaction
 * whose meta page was written (see the top of this file). An answer computed now
 * needs this position on disk before it may be sent. */
uint64_t shard_store_written(const struct shard_store *s);

/* The highest transaction id a completed fdatasync covered; <= shard_store_written. */
uint64_t shard_store_durable(const struct shard_store *s);

/* 0 while the store works; else the -errno of the commit or sync error that failed
 * it for good (every later apply_batch and sync returns it untouched). */
int shard_store_failed(const struct shard_store *s);

/* True in the write-ahead log mode: positions become durable by themselves (the log's
 * syncer thread); see shard_store_kick, shard_store_poll, shard_store_event_fd. */
bool shard_store_async(const struct shard_store *s);

/* WAL mode: hands what was staged since the last call to the log's writer (no-op while a
 * write is in flight: it is handed over when that completes, by shard_store_poll). */
void shard_store_kick(struct shard_store *s);

/* WAL mode: takes the completions of log syncs and checkpoints, starts a checkpoint when
 * one is due, and kicks the writer. Never blocks. Returns shard_store_failed(). */
int shard_store_poll(struct shard_store *s);

/* WAL mode: a descriptor that becomes readable when a log sync or a checkpoint
 * completed (then call shard_store_poll). -1 in the LMDB mode. */
int shard_store_event_fd(const struct shard_store *s);

/* WAL mode: false while the overlay has no room for another batch and a checkpoint is
 * still writing the other layer: take no work until shard_store_poll made room. Always
 * true in the LMDB mode. */
bool shard_store_ready(const struct shard_store *s);

/* Closes the environment and frees the store. NULL is a no-op. */
void shard_store_close(struct shard_store *s);

/* Counters for /metrics. */
void shard_store_get_stats(const struct shard_store *s, struct shard_store_stats *out);

/*
 * Records that the outbox up to event_seq (inclusive) is replicated to Kafka. The
 * mark is written by the next batch's transaction, so it costs no extra fsync; it
 * never goes backwards. The events at or below the mark are deleted by the following
 * transactions, at most SHARD_OUTBOX_TRIM_MAX per transaction (engine/limits.h), so a
 * long backlog never makes one transaction too large to commit.
 */
void shard_store_set_replicated(struct shard_store *s, uint64_t event_seq);

/*
 * The last outbox event whose transaction a completed fdatasync covered (it moves with
 * shard_store_durable()). Only events up to it may leave the process: an event above it
 * may still be lost to a power cut, and its sequence number then be given to another
 * event after the restart. Shard thread only.
 */
uint64_t shard_store_event_durable(const struct shard_store *s);

/* One outbox event, as shard_store_outbox_scan hands it out: pointers into the map,
 * valid only during the callback. */
struct shard_event {
    uint64_t seq; /* the event_id's sequence number; the outbox key */
    const char *topic;
    size_t topic_len;
    const char *key; /* merchant_id: the Kafka message key */
    size_t key_len;
    const char *value; /* the event JSON */
    size_t value_len;
};

/* Return 0 to continue, nonzero to stop (the scan returns that value). */
typedef int (*shard_event_fn)(void *arg, const struct shard_event *ev);

/*
 * Visits committed outbox events with seq > after_seq in order, at most max of them,
 * from a read transaction (for the Kafka replicator's bounded window). Returns 0, the
 * callback's nonzero value, or -errno (-EBADMSG: a corrupt event). Shard thread only.
 */
int shard_store_outbox_scan(struct shard_store *s, uint64_t after_seq, size_t max,
                            shard_event_fn fn, void *arg);

/*
 * The group commit: applies items[0..n) in order in ONE write transaction (each
 * operation's reads see the earlier operations' writes: state checks, idempotency
 * keys, balances), then commits it. Every item gets an answer either way.
 *
 * Returns 0: committed. The answers are the engine's, computed from the state of
 * transaction shard_store_written() (the batch's own id when it changed anything,
 * else the last committed one whose state it read); they may be sent once
 * shard_store_durable() reaches that position, not before.
 * Returns -errno: nothing of the batch is committed and every item is answered 503
 * overloaded (rc = that -errno). -ENOSPC when MDB_MAP_FULL persisted after growing the
 * map once up to map_max_bytes and retrying once (the store goes on); -EAGAIN when
 * more than SHARD_BATCH_DROP_MAX operations failed alone (the store goes on); any
 * other error (an I/O error, corrupt data read back, a failed commit) also fails the
 * store for good (shard_store_failed). An operation that fails on its own without a
 * store error (engine_apply returns -EOVERFLOW for a balance leaving int64) is dropped
 * with a 503 and the rest of the batch is run again in a fresh transaction; its item
 * has rc != 0 even when the call returns 0.
 * n may be 0 (then only a pending replicated mark or outbox trim is written). now_ms:
 * ms since the epoch, the time of every change of the batch.
 */
int shard_store_apply_batch(struct shard_store *s, struct batch_item *items, size_t n,
                            int64_t now_ms);

/*
 * Answers read-only operations (GET_PAYMENT, BALANCES, LEDGER; asserted) from one
 * read transaction: committed data only, i.e. the state of shard_store_written() at
 * the call, so the answers may leave only once that is durable. Returns 0, or -errno
 * when no read transaction could start (every item answered 503). An item whose read
 * fails gets rc != 0 and a 503. Must be called by the thread that owns the store (the
 * map may be resized between batches), unless growth is off (see the top of this
 * file).
 */
int shard_store_read(struct shard_store *s, struct batch_item *items, size_t n, int64_t now_ms);

#ifdef __cplusplus
}
#endif

#endif
