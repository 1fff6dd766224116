/*
 * The shard thread: the only writer of one shard's LMDB environment, and its group
 * commit (DESIGN.md "Group commit").
 *
 * Reactors hand it jobs (one decoded operation each, with room for the answer) and it
 * hands them back answered. Its loop: take every job queued since the last commit (at
 * most SHARD_BATCH_MAX), apply the state-changing ones in ONE write transaction and
 * commit it durably (shard_store_apply_batch), then answer the reads of the same turn
 * from a read transaction (so they see the batch), and only then return the jobs.
 * While a batch syncs, reactors keep queueing the next one, so the batch size follows
 * the load: one job per commit when idle, hundreds under load.
 *
 * The transport (rings and wake-ups) is the caller's, given as callbacks, so this
 * module depends on the store and the engine only.
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
    struct answer answer; /* answer.body/cap: the job's own buffer */
    int rc;               /* 0, or the store's -errno (the answer is then a 503) */
    unsigned origin;      /* transport endpoint to return the job to */
    uint64_t owner[2];    /* the reactor's reference to the request, opaque here */
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
    uint64_t syncs;      /* explicit fdatasyncs of an idle shard (defer_release) */
    uint64_t batch_jobs; /* write jobs committed in batches (mean batch = / batches) */
    uint64_t commit_ns;  /* time in apply + commit, summed over batches */
    uint64_t sync_ns;    /* time in explicit fdatasyncs */
};

struct shard {
    struct shard_store *store;
    const struct shard_transport *transport;
    void *transport_ctx;
    volatile int stop; /* set by shard_stop() */
    /* The store was opened with defer_meta_sync: hold each batch's answers until a
     * later fdatasync (see shard_run). */
    bool defer_release;
    /* Set when a commit failed with an I/O error. Linux may drop the dirty pages of a
     * failed fsync and report success on the next one, so a shard that saw one can no
     * longer promise durability: from then on it answers every job 503 without
     * touching the store, and /readyz says not ready, until an operator restarts it
     * (LMDB reopens from the last good meta page). */
    int failed;
    struct shard_stats stats; /* written by the shard thread, relaxed atomics */
};

/* Runs the shard loop on the calling thread until shard_stop(); returns 0. Jobs still
 * queued when it stops are answered first. */
int shard_run(struct shard *sh);

/* Asks the loop to return (any thread). It notices within one wait timeout. */
void shard_stop(struct shard *sh);

#endif
