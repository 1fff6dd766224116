/*
 * The shard thread's loop (see shard.h for the durability-by-position rule).
 *
 * Invariants:
 * - A job is returned to its reactor only by release(), and only when
 *   job->pos <= shard_store_durable(), i.e. a completed fdatasync covered the state its
 *   answer was computed from; or, once the shard failed, with a 503 (rc != 0).
 * - Positions never decrease: jobs are held in turn order, and every turn either
 *   commits a write (covering every position before it) or syncs explicitly when it
 *   holds anything uncovered; so after each turn at most that turn's jobs are held.
 * - Reads of a turn run after that turn's commit, so a GET pipelined behind a POST on
 *   one connection sees the POST (and waits for the same position).
 */
#define _GNU_SOURCE
#include "store/shard.h"

#include <errno.h>
#include <sched.h>

#include "engine/api.h"
#include "engine/assert.h"
#include "engine/clock.h"
#include "engine/json.h"
#include "engine/limits.h"
#include "store/replicator.h"

/* How long an idle shard sleeps before it looks at its stop flag again. */
#define SHARD_IDLE_WAIT_MS 100

static bool is_read(const struct op *op)
{
    return op->kind == OP_GET_PAYMENT || op->kind == OP_BALANCES || op->kind == OP_LEDGER;
}

static void stat_add(uint64_t *field, uint64_t delta)
{
    __atomic_store_n(field, __atomic_load_n(field, __ATOMIC_RELAXED) + delta, __ATOMIC_RELAXED);
}

/* Every field of struct shard_store_stats is 64 bits wide: copied as an array. */
_Static_assert(sizeof(struct shard_store_stats) % sizeof(uint64_t) == 0, "u64 fields");

static void publish_stats(struct shard *sh)
{
    struct shard_store_stats now;
    shard_store_get_stats(sh->store, &now);
    const uint64_t *from = (const uint64_t *)&now;
    uint64_t *to = (uint64_t *)&sh->store_stats;
    for (size_t i = 0; i < sizeof(now) / sizeof(uint64_t); i++)
        __atomic_store_n(&to[i], from[i], __ATOMIC_RELAXED);
}

void shard_store_stats_load(const struct shard *sh, struct shard_store_stats *out)
{
    const uint64_t *from = (const uint64_t *)&sh->store_stats;
    uint64_t *to = (uint64_t *)out;
    for (size_t i = 0; i < sizeof(*out) / sizeof(uint64_t); i++)
        to[i] = __atomic_load_n(&from[i], __ATOMIC_RELAXED);
}

/* Returns every job to its reactor; a full ring is waited out (the reactor drains
 * it every turn), flushing wake-ups so the reactor is awake to make room. */
static void reply_all(struct shard *sh, struct shard_job **jobs, size_t n)
{
    const struct shard_transport *t = sh->transport;
    for (size_t i = 0; i < n; i++) {
        while (t->reply(sh->transport_ctx, jobs[i]) == -EAGAIN) {
            /* At shutdown the reactor may be gone and its ring never drain again;
             * the job is abandoned to the exiting process. */
            if (__atomic_load_n(&sh->stop, __ATOMIC_ACQUIRE))
                break;
            t->flush(sh->transport_ctx);
            sched_yield();
        }
    }
    t->flush(sh->transport_ctx);
}

/* Renders 503 overloaded (the store's wording) into a job whose answer, if any, may
 * not leave: its durability is unknown. */
static void job_fail(struct shard_job *job, int err)
{
    ASSERT(err < 0);
    struct api_error e;
    api_error_set(&e, 503, "overloaded", "the shard store could not commit; retry later", NULL);
    struct jw w;
    jw_init(&w, job->answer.body, job->answer.cap);
    api_render_error(&w, &e, job->op.request_id, job->op.request_id_len);
    ASSERT(jw_finish(&w) == 0); /* every job has at least ENGINE_ANSWER_MAX_BYTES */
    job->answer.status = 503;
    job->answer.replayed = false;
    job->answer.len = w.len;
    job->rc = err;
}

/* Refuses a state change while the replication backlog is over its bound: nothing is
 * applied, the answer is 503 overloaded (the reactor adds Retry-After). */
static void job_refuse(struct shard_job *job)
{
    struct api_error e;
    api_error_set(&e, 503, "overloaded",
                  "events wait for Kafka: this shard's replication backlog is over its bound; "
                  "retry later",
                  NULL);
    struct jw w;
    jw_init(&w, job->answer.body, job->answer.cap);
    api_render_error(&w, &e, job->op.request_id, job->op.request_id_len);
    ASSERT(jw_finish(&w) == 0); /* every job has at least ENGINE_ANSWER_MAX_BYTES */
    job->answer.status = 503;
    job->answer.replayed = false;
    job->answer.len = w.len;
    job->rc = -ENOBUFS;
}

/*
 * The one place where answers leave the shard. A job leaves only when the fdatasync
 * that covers its position has completed. The only exception: a failed shard returns
 * its jobs with a 503 (rc != 0), since no later sync can be trusted.
 */
static void release(struct shard *sh, struct shard_job **jobs, size_t n)
{
    uint64_t durable = shard_store_durable(sh->store);
    bool failed = __atomic_load_n(&sh->failed, __ATOMIC_RELAXED);
    for (size_t i = 0; i < n; i++)
        ASSERT(jobs[i]->pos <= durable || (failed && jobs[i]->rc != 0));
    reply_all(sh, jobs, n);
}

/* Applies one turn's jobs: the writes in one transaction, then the reads; each job
 * gets the position its answer needs on disk. A failed shard answers 503 without
 * touching the store. */
static void run_batch(struct shard *sh, struct shard_job **jobs, size_t n, struct batch_item *items)
{
    if (__atomic_load_n(&sh->failed, __ATOMIC_RELAXED)) {
        for (size_t i = 0; i < n; i++) {
            job_fail(jobs[i], shard_store_failed(sh->store));
            jobs[i]->pos = shard_store_written(sh->store);
        }
        return;
    }
    int64_t now = clock_wall_ms();
    size_t w = 0, r = n, refused = 0;
    bool refuse = sh->replicator && replicator_overloaded(sh->replicator);
    /* Writes fill items from the front, reads from the back, both in arrival order
     * among themselves (reads are reversed twice: filled backwards, read backwards).
     * Refused writes take no item. */
    for (size_t i = 0; i < n; i++) {
        if (refuse && !is_read(&jobs[i]->op)) {
            job_refuse(jobs[i]);
            refused++;
            continue;
        }
        struct batch_item *it = is_read(&jobs[i]->op) ? &items[--r] : &items[w++];
        it->op = &jobs[i]->op;
        it->answer = jobs[i]->answer;
        it->rc = 0;
    }
    if (w > 0) {
        uint64_t t0 = clock_mono_ns();
        shard_store_apply_batch(sh->store, items, w, now); /* errors: in items, failed */
        stat_add(&sh->stats.commit_ns, clock_mono_ns() - t0);
        stat_add(&sh->stats.batch_jobs, w);
        stat_add(&sh->stats.batches, 1);
        if (w > __atomic_load_n(&sh->stats.batch_max, __ATOMIC_RELAXED))
            __atomic_store_n(&sh->stats.batch_max, w, __ATOMIC_RELAXED);
    }
    if (r < n)
        shard_store_read(sh->store, items + r, n - r, now);
    /* Every answer of the turn was computed from the state of this transaction. */
    uint64_t pos = shard_store_written(sh->store);
    if (refused)
        replicator_refused(sh->replicator, refused);
    for (size_t i = 0, wi = 0, ri = n; i < n; i++) {
        if (refuse && !is_read(&jobs[i]->op)) {
            jobs[i]->pos = pos; /* nothing applied; the state it saw is pos's */
            continue;
        }
        struct batch_item *it = is_read(&jobs[i]->op) ? &items[--ri] : &items[wi++];
        ASSERT(it->op == &jobs[i]->op);
        jobs[i]->answer = it->answer;
        jobs[i]->rc = it->rc;
        jobs[i]->pos = pos;
    }
    stat_add(&sh->stats.jobs, n);
}

/* An explicit fdatasync: it covers every position written before it. An error stays
 * in the store (shard_store_failed) and is handled by settle(). */
static void sync_explicit(struct shard *sh)
{
    uint64_t t0 = clock_mono_ns();
    shard_store_sync(sh->store);
    stat_add(&sh->stats.sync_ns, clock_mono_ns() - t0);
    stat_add(&sh->stats.syncs, 1);
}

/* Fails the shard for good: every job it holds or just ran becomes a 503 and leaves. */
static void fail_all(struct shard *sh, struct shard_job **held, size_t held_n,
                     struct shard_job **jobs, size_t n)
{
    int err = shard_store_failed(sh->store);
    ASSERT(err < 0);
    __atomic_store_n(&sh->failed, 1, __ATOMIC_RELEASE);
    for (size_t i = 0; i < held_n; i++)
        job_fail(held[i], err);
    for (size_t i = 0; i < n; i++)
        job_fail(jobs[i], err);
    release(sh, held, held_n);
    release(sh, jobs, n);
}

/*
 * After a turn (jobs[0..n), possibly none) or an explicit sync: returns the held jobs,
 * which the turn's commit or sync always covers, then the turn's jobs whose position
 * is covered; the others become the held set (copied into held). Returns its size.
 */
static size_t settle(struct shard *sh, struct shard_job **held, size_t held_n,
                     struct shard_job **jobs, size_t n)
{
    if (shard_store_failed(sh->store)) {
        fail_all(sh, held, held_n, jobs, n);
        return 0;
    }
    /* What was held before the turn is always covered now (see shard_run). */
    uint64_t durable = shard_store_durable(sh->store);
    ASSERT(held_n == 0 || held[held_n - 1]->pos <= durable);
    release(sh, held, held_n);
    size_t k = 0;
    while (k < n && jobs[k]->pos <= durable)
        k++;
    release(sh, jobs, k);
    for (size_t i = k; i < n; i++) {
        ASSERT(jobs[i]->pos > durable && jobs[i]->pos >= jobs[k]->pos);
        held[i - k] = jobs[i];
    }
    return n - k;
}

/*
 * The loop. Each turn's jobs are held until their position is durable. A turn whose
 * commit wrote covers every turn before it; a turn that wrote nothing (no writes, or a
 * commit that changed nothing) and holds anything uncovered syncs explicitly, as does
 * an empty queue with jobs held, so the loop always makes progress and at most one
 * turn is held at a time.
 */
/*
 * The loop of a store whose positions become durable by themselves (the write-ahead log:
 * shard_store_async). A turn applies the jobs queued since the last one and hands their
 * records to the log's writer; their answers wait in a FIFO, across turns, until the
 * log's durable position covers them, while the next turns go on (one write + fdatasync
 * in flight, the next batch being applied and staged). Positions only grow, so the FIFO
 * is released from its front. The FIFO and the overlay are bounded: when either is
 * full, no job is taken (they wait in the rings: backpressure).
 */
static int shard_run_async(struct shard *sh)
{
    static __thread struct shard_job *fifo[SHARD_HELD_MAX];
    static __thread struct shard_job *jobs[SHARD_BATCH_MAX];
    static __thread struct shard_job *out[SHARD_BATCH_MAX];
    static __thread struct batch_item items[SHARD_BATCH_MAX];
    const struct shard_transport *t = sh->transport;
    size_t head = 0, len = 0;
    for (;;) {
        int err = shard_store_poll(sh->store);
        if (sh->replicator)
            replicator_poll(sh->replicator); /* after the poll: event_durable is fresh */
        if (err && !__atomic_load_n(&sh->failed, __ATOMIC_RELAXED)) {
            __atomic_store_n(&sh->failed, 1, __ATOMIC_RELEASE);
            for (size_t i = 0; i < len; i++)
                job_fail(fifo[(head + i) % SHARD_HELD_MAX], err);
        }
        /* Release the front of the FIFO that is durable (or failed), in batches. */
        uint64_t durable = shard_store_durable(sh->store);
        while (len > 0) {
            size_t k = 0;
            while (k < len && k < SHARD_BATCH_MAX &&
                   (fifo[(head + k) % SHARD_HELD_MAX]->pos <= durable ||
                    fifo[(head + k) % SHARD_HELD_MAX]->rc != 0)) {
                out[k] = fifo[(head + k) % SHARD_HELD_MAX];
                k++;
            }
            if (k == 0)
                break;
            release(sh, out, k);
            head = (head + k) % SHARD_HELD_MAX;
            len -= k;
        }
        size_t room = SHARD_HELD_MAX - len;
        if (room > SHARD_BATCH_MAX)
            room = SHARD_BATCH_MAX;
        bool ready = shard_store_ready(sh->store);
        size_t n = room > 0 && ready ? t->recv(sh->transport_ctx, jobs, room) : 0;
        if (n == 0) {
            if (len == 0 && __atomic_load_n(&sh->stop, __ATOMIC_ACQUIRE))
                return 0;
            if (len == 0 && sh->replicator)
                replicator_idle(sh->replicator); /* may hand a moved mark to the store */
            /* Wakes on a job, on the log's syncer (the transport watches
             * shard_store_event_fd), on the replicator's wake fd, or after the timeout:
             * a full overlay is polled. */
            publish_stats(sh);
            t->wait(sh->transport_ctx, !ready ? 1 : len > 0 ? 10 : SHARD_IDLE_WAIT_MS);
            continue;
        }
        run_batch(sh, jobs, n, items);
        shard_store_kick(sh->store);
        publish_stats(sh);
        for (size_t i = 0; i < n; i++)
            fifo[(head + len++) % SHARD_HELD_MAX] = jobs[i];
    }
}

int shard_run(struct shard *sh)
{
    publish_stats(sh);
    if (shard_store_async(sh->store))
        return shard_run_async(sh);
    static __thread struct shard_job *held[SHARD_BATCH_MAX];
    static __thread struct shard_job *jobs[SHARD_BATCH_MAX];
    static __thread struct batch_item items[SHARD_BATCH_MAX];
    const struct shard_transport *t = sh->transport;
    size_t held_n = 0;
    for (;;) {
        if (sh->replicator)
            replicator_poll(sh->replicator); /* between batches: never blocks */
        size_t n = t->recv(sh->transport_ctx, jobs, SHARD_BATCH_MAX);
        if (n == 0 && held_n == 0) {
            if (__atomic_load_n(&sh->stop, __ATOMIC_ACQUIRE))
                return 0;
            if (sh->replicator)
                replicator_idle(sh->replicator); /* may store a moved mark */
            publish_stats(sh);
            t->wait(sh->transport_ctx, SHARD_IDLE_WAIT_MS);
            continue;
        }
        uint64_t before = shard_store_written(sh->store);
        if (n > 0)
            run_batch(sh, jobs, n, items);
        /* The commit's own fdatasync ran only if the written position moved. */
        bool wrote = shard_store_written(sh->store) > before;
        uint64_t need = n > 0 ? jobs[n - 1]->pos : held[held_n - 1]->pos;
        if (!wrote && need > shard_store_durable(sh->store) && !shard_store_failed(sh->store))
            sync_explicit(sh);
        held_n = settle(sh, held, held_n, jobs, n);
        publish_stats(sh);
    }
}

void shard_stop(struct shard *sh)
{
    __atomic_store_n(&sh->stop, 1, __ATOMIC_RELEASE);
}
