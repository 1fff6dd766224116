/*
 * The shard thread: the only writer of one shard's LMDB environment, and its group
 * commit (DESIGN.md "Group commit"; the durability rule in docs/durability.md).
 *
 * Reactors hand it jobs (one decoded operation each, with room for the answer) and it
 * hands them back answered. One turn: take every job queued since the last turn (at
 * most SHARD_BATCH_MAX), apply the state-changing ones in ONE write transaction
 * (shard_store_apply_batch), then answer the reads of the turn from a read transaction
 * (so they see the batch). While a batch syncs, reactors keep queueing the next one, so
 * the batch size follows the load: one job per commit when idle, hundreds under load.
 *
 * Durability by position: every job of a turn gets the position its answer needs on
 * disk, job->pos = the store's written transaction id after the turn (its own commit's
 * id when the batch changed anything, else the last committed one whose state it
 * read). A job is returned only once the store's durable position covers job->pos: an
 * ASSERT at the one place that returns jobs says so. The only exception is the 503s of
 * a failed shard. What covers a position:
 *   - the next commit that writes (its data fdatasync covers the meta page of every
 *     commit before it), so a busy shard pays one fsync per commit;
 *   - else an explicit sync, run when held jobs are not covered and no commit will
 *     cover them: the queue is empty, or the turn's commit wrote nothing (a batch of
 *     only idempotent replays, reused keys or refused requests runs no I/O at all);
 *   - nothing, when the position is already durable: a replay or a read on an idle
 *     shard whose state is on disk is answered without any fsync.
 * A commit or sync error (other than a transaction too large to fit, see
 * shard_store.h) fails the shard for good: the held answers and the turn become 503
 * overloaded, and every later job too, without touching the store.
 *
 * The transport (rings and wake-ups) is the caller's, given as callbacks, so this
 * module depends on the store and the engine only.
 *
 * Replication (store/replicator.h), when the shard has a replicator: the loop polls it
 * once per turn, between batches (delivery reports, the mark, the window's refill), and
 * lets it store a moved mark when the shard is idle; the transport's wait must return
 * when replicator_wake_fd() becomes readable. While the replicator is overloaded (its
 * backlog is over a bound) every state-changing job of a turn is answered 503
 * overloaded (rc = -ENOBUFS, nothing applied) and reads are served as usual.
 */
#ifndef RINGPAY_STORE_SHARD_H
#define RINGPAY_STORE_SHARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/apply.h"
#include "store/shard_store.h"

/* One operation travelling reactor -> shard -> reactor. Owned by the reactor that
 * made it, except while the shard holds it. */
struct shard_job {
    struct op op;
    struct answer answer;   /* answer.body/cap: the job's own buffer */
    int rc;                 /* 0, or the store's -errno (the answer is then a 503) */
    uint64_t pos;           /* set by the shard: LMDB txn id the answer needs on disk */
    unsigned origin;        /* transport endpoint to return the job to */
    uint32_t retry_after_s; /* a 429/503 answered before the store: its Retry-After */
    uint64_t owner[2];      /* the reactor's reference to the request, opaque here */
    uint64_t start_ns;
};

struct shard_transport {
    /* Moves up to max jobs queued for this shard into jobs[]; never blocks. */
    size_t (*recv)(void *ctx, struct shard_job **jobs, size_t max);
    /* Queues a finished job back to job->origin: 0, or -EAGAIN when that ring is full. */
    int (*reply)(void *ctx, struct shard_job *job);
    /* Sends the wake-ups for everything replied since the last call. */
    void (*flush)(void *ctx);
    /* Sleeps until more jobs may have arrived, at most timeout_ms. */
    void (*wait)(void *ctx, int timeout_ms);
};

struct shard_stats {
    uint64_t batches;    /* write transactions committed */
    uint64_t jobs;       /* jobs answered */
    uint64_t batch_max;  /* largest batch seen */
    uint64_t syncs;      /* explicit fdatasyncs (queue empty, or a turn wrote nothing) */
    uint64_t batch_jobs; /* write jobs committed in batches (mean batch = / batches) */
    uint64_t commit_ns;  /* time in apply + commit, summed over batches */
    uint64_t sync_ns;    /* time in explicit fdatasyncs */
};

struct replicator;

struct shard {
    struct shard_store *store;
    struct replicator *replicator; /* NULL: replication off */
    const struct shard_transport *transport;
    void *transport_ctx;
    volatile int stop; /* set by shard_stop() */
    /* Set (to 1) when a commit or sync failed (shard_store_failed). Linux may drop the
     * dirty pages of a failed fsync and report success on the next one, so a shard
     * that saw one can no longer promise durability: from then on it answers every job
     * 503 without touching the store, and /readyz says not ready, until an operator
     * restarts it (LMDB reopens from the last good meta page). Read by other threads. */
    int failed;
    struct shard_stats stats; /* written by the shard thread, relaxed atomics */
    /* The store's counters (shard_store_get_stats), copied by the shard thread after
     * each turn and when idle, field by field with relaxed atomics: other threads read
     * them with shard_store_stats_load(). */
    struct shard_store_stats store_stats;
};

/* A copy of sh->store_stats for any thread (each field as last published). */
void shard_store_stats_load(const struct shard *sh, struct shard_store_stats *out);

/* Runs the shard loop on the calling thread until shard_stop(); returns 0. Jobs still
 * queued or held when it stops are answered first (with the syncs they need). Works
 * the same whether the store defers its meta syncs or not: positions tell. */
int shard_run(struct shard *sh);

/* Asks the loop to return (any thread). It notices within one wait timeout. */
void shard_stop(struct shard *sh);

#endif
