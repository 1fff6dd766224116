/*
 * The shard thread's loop (see shard.h).
 *
 * Invariant: a job is returned to its reactor only after the transaction holding its
 * writes committed (LMDB's durable commit: data fsync, then the meta page), or with a
 * 503 if the store failed. Reads of a turn run after that turn's commit, so a GET
 * pipelined behind a POST on one connection sees the POST.
 */
#define _GNU_SOURCE
#include "store/shard.h"

#include <errno.h>
#include <sched.h>
#include <time.h>

#include "engine/assert.h"
#include "engine/limits.h"

/* How long an idle shard sleeps before it looks at its stop flag again. */
#define SHARD_IDLE_WAIT_MS 100

static int64_t wall_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static bool is_read(const struct op *op)
{
    return op->kind == OP_GET_PAYMENT || op->kind == OP_BALANCES || op->kind == OP_LEDGER;
}

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void stat_add(uint64_t *field, uint64_t delta)
{
    __atomic_store_n(field, __atomic_load_n(field, __ATOMIC_RELAXED) + delta, __ATOMIC_RELAXED);
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

/* Applies one turn's jobs: the writes in one transaction, then the reads. Returns
 * true when a commit ran and succeeded: its data fdatasync then also made the meta
 * page of every earlier commit durable. */
static bool run_batch(struct shard *sh, struct shard_job **jobs, size_t n, struct batch_item *items)
{
    bool synced = false;
    if (__atomic_load_n(&sh->failed, __ATOMIC_RELAXED)) {
        for (size_t i = 0; i < n; i++) {
            jobs[i]->rc = -EIO;
            jobs[i]->answer.status = 0;
            jobs[i]->answer.len = 0;
        }
        return false;
    }
    int64_t now = wall_ms();
    size_t w = 0, r = n;
    /* Writes fill items from the front, reads from the back, both in arrival order
     * among themselves (reads are reversed twice: filled backwards, read backwards). */
    for (size_t i = 0; i < n; i++) {
        struct batch_item *it = is_read(&jobs[i]->op) ? &items[--r] : &items[w++];
        it->op = &jobs[i]->op;
        it->answer = jobs[i]->answer;
        it->rc = 0;
    }
    if (w > 0) {
        uint64_t t0 = mono_ns();
        int rc = shard_store_apply_batch(sh->store, items, w, now);
        stat_add(&sh->stats.commit_ns, mono_ns() - t0);
        stat_add(&sh->stats.batch_jobs, w);
        if (rc == -EIO)
            __atomic_store_n(&sh->failed, 1, __ATOMIC_RELEASE);
        synced = rc == 0;
        stat_add(&sh->stats.batches, 1);
        if (w > __atomic_load_n(&sh->stats.batch_max, __ATOMIC_RELAXED))
            __atomic_store_n(&sh->stats.batch_max, w, __ATOMIC_RELAXED);
    }
    if (r < n)
        shard_store_read(sh->store, items + r, n - r, now);
    for (size_t i = 0, wi = 0, ri = n; i < n; i++) {
        struct batch_item *it = is_read(&jobs[i]->op) ? &items[--ri] : &items[wi++];
        ASSERT(it->op == &jobs[i]->op);
        jobs[i]->answer = it->answer;
        jobs[i]->rc = it->rc;
    }
    stat_add(&sh->stats.jobs, n);
    return synced;
}

/* Makes the held batch durable with an explicit fdatasync when no later commit did;
 * a failed sync turns its answers into 503s (their durability is unknown). */
static void sync_held(struct shard *sh, struct shard_job **held, size_t n)
{
    /* After a failed commit the next fsync may report success for pages the kernel
     * already dropped: once failed, nothing held is trusted. */
    int rc = -EIO;
    if (!__atomic_load_n(&sh->failed, __ATOMIC_ACQUIRE)) {
        uint64_t t0 = mono_ns();
        rc = shard_store_sync(sh->store);
        stat_add(&sh->stats.sync_ns, mono_ns() - t0);
        stat_add(&sh->stats.syncs, 1);
    }
    if (rc == 0)
        return;
    if (rc == -EIO)
        __atomic_store_n(&sh->failed, 1, __ATOMIC_RELEASE);
    for (size_t i = 0; i < n; i++) {
        held[i]->rc = rc;
        held[i]->answer.status = 0;
        held[i]->answer.len = 0;
    }
}

/*
 * The loop. With a store opened with defer_meta_sync, the answers of batch N are held
 * until an fdatasync that ran after N's meta page was written: batch N + 1's commit
 * when more work is queued (so a busy shard pays one fsync per commit), or an explicit
 * shard_store_sync() when the queue is empty (so an idle shard still answers after two
 * fsyncs, like LMDB's default commit). Without defer_meta_sync every commit is durable
 * when it returns and nothing is held. Two job arrays alternate: one holds the batch
 * waiting for its sync, the other takes the next batch.
 */
int shard_run(struct shard *sh)
{
    static __thread struct shard_job *bufs[2][SHARD_BATCH_MAX];
    static __thread struct batch_item items[SHARD_BATCH_MAX];
    const struct shard_transport *t = sh->transport;
    const bool defer = sh->defer_release;
    struct shard_job **held = bufs[0], **jobs = bufs[1];
    size_t held_n = 0;
    for (;;) {
        size_t n = t->recv(sh->transport_ctx, jobs, SHARD_BATCH_MAX);
        if (n == 0) {
            if (held_n > 0) {
                sync_held(sh, held, held_n);
                reply_all(sh, held, held_n);
                held_n = 0;
                continue;
            }
            if (__atomic_load_n(&sh->stop, __ATOMIC_ACQUIRE))
                return 0;
            t->wait(sh->transport_ctx, SHARD_IDLE_WAIT_MS);
            continue;
        }
        bool synced = run_batch(sh, jobs, n, items);
        if (!defer) {
            reply_all(sh, jobs, n);
            continue;
        }
        if (held_n > 0) {
            if (!synced)
                sync_held(sh, held, held_n);
            reply_all(sh, held, held_n);
        }
        struct shard_job **tmp = held;
        held = jobs;
        jobs = tmp;
        held_n = n;
    }
}

void shard_stop(struct shard *sh)
{
    __atomic_store_n(&sh->stop, 1, __ATOMIC_RELEASE);
}
