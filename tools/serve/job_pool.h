/*
 * Fixed pools of shard jobs, one per reactor: the memory of every request that travels
 * to a shard and back is sized at start (engine/limits.h, JOB_*), never malloc'd per
 * request.
 *
 * A job is a struct shard_job followed by its data area, which holds the request's
 * idempotency fingerprint (copied, so the connection's input buffer can move on) and
 * the room the shard renders the answer into. Two classes:
 *   - small: JOB_SMALL_DATA_BYTES, for a payment answer (ENGINE_ANSWER_MAX_BYTES) and a
 *     fingerprint of ordinary size — nearly every request;
 *   - large: JOB_LARGE_DATA_BYTES, for the GETs whose answers are lists (balances,
 *     ledger: ENGINE_READ_ANSWER_MAX_BYTES) and for a POST whose body is large.
 * A request takes the smallest class that fits; when that class is empty it does not
 * take a larger one (a burst of small requests must not starve the ledger pages) and
 * job_pool_get returns NULL: the caller waits for a job to come back (backpressure).
 *
 * Threading: a pool belongs to one reactor thread, which gets and puts every job of
 * it; a shard only borrows a job between the two. Free lists are LIFO, so a lightly
 * loaded core keeps touching the same few jobs (and pages).
 */
#ifndef RINGPAY_TOOLS_SERVE_JOB_POOL_H
#define RINGPAY_TOOLS_SERVE_JOB_POOL_H

#include <stddef.h>
#include <stdint.h>

#include "store/shard.h"

struct job_pool {
    char *mem; /* every job of both classes, one allocation */
    size_t small_stride, large_stride;
    struct shard_job **free_small; /* [JOB_SMALL_PER_CORE] */
    struct shard_job **free_large; /* [JOB_LARGE_PER_CORE] */
    unsigned small_count;          /* small jobs of this pool (JOB_SMALL_PER_CORE at most) */
    unsigned free_small_n, free_large_n;
    /* For /metrics, read by any thread: written with relaxed atomic stores. */
    uint64_t in_use; /* jobs out of the pool */
    uint64_t empty;  /* job_pool_get found its class empty */
};

/* Allocates both classes: small_count small jobs (1..JOB_SMALL_PER_CORE; fewer only
 * to bound memory, or for tests) and JOB_LARGE_PER_CORE large ones. 0 or -ENOMEM
 * (nothing left allocated). */
int job_pool_init(struct job_pool *p, unsigned small_count);

/* Frees the pool; every job must have been put back. NULL-safe on a zeroed pool. */
void job_pool_destroy(struct job_pool *p);

/*
 * A job whose data area holds data_bytes (fingerprint + answer room), or NULL when the
 * class that fits is empty. data_bytes above JOB_LARGE_DATA_BYTES is a programmer
 * error (the HTTP limits make it impossible; asserted). The job's data area starts at
 * job_pool_data(job).
 */
struct shard_job *job_pool_get(struct job_pool *p, size_t data_bytes);

/* The data area of a job of this pool. */
char *job_pool_data(struct shard_job *job);

/* Returns a job to the pool it came from (asserted). */
void job_pool_put(struct job_pool *p, struct shard_job *job);

#endif
