/*
 * The shard threads and their transport over the mesh (see shards.h).
 *
 * The transport a shard loop is given (struct shard_transport): recv drains the rings
 * from every reactor into the batch, reply pushes a finished job back to the reactor
 * that sent it, flush turns the turn's replies into one MSG_RING wake-up per reactor,
 * and wait sleeps in io_uring_submit_and_wait on the shard's own ring until a reactor
 * wakes it (or a timeout, so the loop sees its stop flag).
 */
#define _GNU_SOURCE
#include "tools/serve/shards.h"

#include <errno.h>
#include <liburing.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/api.h"
#include "engine/assert.h"
#include "engine/clock.h"
#include "engine/json.h"
#include "engine/limits.h"
#include "net/log.h"
#include "net/reactor.h"
#include "store/manifest.h"
#include "store/shard.h"
#include "store/shard_store.h"
#include "tools/serve/budget.h"
#include "tools/serve/kafka.h"

struct port {
    struct shards *owner;
    unsigned core;
    unsigned endpoint; /* N + core */
    struct io_uring ring;
    bool ring_ok;
    struct shard shard;
    struct shard_store *store;
    struct budget budget;    /* the merchants' request budgets: this shard thread only */
    struct kafka_port kafka; /* the shard's replicator and its wake-up */
    pthread_t tid;
    int running; /* read with __atomic_load_n */
};

struct shards {
    unsigned cores;
    struct xcore *mesh;
    struct bucket_conf merchant_budget;
    const struct kafka *kafka;
    struct port ports[CORES_MAX];
};

/* ---- the transport over the mesh --------------------------------------------------- */

struct recv_ctx {
    struct shard_job **jobs;
    size_t n;
};

static void collect(void *ctx, unsigned from, void *msg)
{
    struct recv_ctx *rc = ctx;
    memcpy(&rc->jobs[rc->n++], msg, sizeof(struct shard_job *));
}

static int port_reply(void *ctx, struct shard_job *job)
{
    struct port *p = ctx;
    return xcore_send(p->owner->mesh, p->endpoint, job->origin, &job);
}

static void port_flush(void *ctx)
{
    struct port *p = ctx;
    while (xcore_flush(p->owner->mesh, p->endpoint, &p->ring, REACTOR_WAKE_TAG) == -EBUSY)
        io_uring_submit(&p->ring);
    io_uring_submit(&p->ring);
}

/* Answers job 429 rate_limited with Retry-After: its merchant is over its budget. */
static void answer_rate_limited(struct shard_job *job, uint32_t retry_after_s)
{
    struct api_error e;
    api_error_set(&e, 429, "rate_limited", "the merchant is over its request budget", NULL);
    struct jw w;
    jw_init(&w, job->answer.body, job->answer.cap);
    api_render_error(&w, &e, job->op.request_id, job->op.request_id_len);
    ASSERT(jw_finish(&w) == 0); /* API_ERROR_BODY_MAX_BYTES <= ENGINE_ANSWER_MAX_BYTES */
    job->answer.status = 429;
    job->answer.replayed = false;
    job->answer.len = w.len;
    job->rc = 0;
    job->retry_after_s = retry_after_s;
}

/*
 * Takes every job queued for this shard; the ones whose merchant is over its budget are
 * answered 429 right here and never reach the shard loop (no commit, no fsync, no
 * state read: a refusal depends on nothing stored, so it needs no durable position).
 * Jobs without a merchant (a payment id with auth off, an admin key) have no budget.
 */
static size_t port_recv(void *ctx, struct shard_job **jobs, size_t max)
{
    struct port *p = ctx;
    struct recv_ctx rc = {.jobs = jobs};
    while (rc.n < max) {
        unsigned want = (unsigned)(max - rc.n);
        unsigned got = xcore_drain(p->owner->mesh, p->endpoint, collect, &rc, want);
        if (got < want)
            break;
    }
    if (p->budget.entries == NULL || rc.n == 0)
        return rc.n;
    int64_t now_ms = clock_wall_ms();
    size_t kept = 0, refused = 0;
    for (size_t i = 0; i < rc.n; i++) {
        struct shard_job *job = jobs[i];
        uint32_t retry =
            job->op.merchant_id_len == 0
                ? 0
                : budget_take(&p->budget, job->op.merchant_id, job->op.merchant_id_len, now_ms);
        if (retry == 0) {
            jobs[kept++] = job;
            continue;
        }
        answer_rate_limited(job, retry);
        int err = port_reply(p, job);
        ASSERT(err == 0); /* a reactor's jobs always fit its ring (engine/limits.h) */
        refused++;
    }
    if (refused > 0)
        port_flush(p);
    return kept;
}

/* user_data of the poll on the store's event descriptor (the log's syncer). */
#define PORT_STORE_TAG 0x73746f7265000000ull

/* Watches the store's event descriptor (write-ahead log mode) with a multishot poll: its
 * completions only wake the loop, which then polls the store. */
static void port_arm_store(struct port *p)
{
    int fd = shard_store_event_fd(p->store);
    struct io_uring_sqe *sqe = fd >= 0 ? io_uring_get_sqe(&p->ring) : NULL;
    if (sqe == NULL)
        return;
    io_uring_prep_poll_multishot(sqe, fd, POLLIN);
    io_uring_sqe_set_data64(sqe, PORT_STORE_TAG);
    io_uring_submit(&p->ring);
}

/* Reaps the shard ring's completions: wake-ups from reactors, our own wake-ups that
 * could not be delivered (re-armed for the next flush), the store's poll (re-armed
 * when the kernel ended it). */
static void port_reap(struct port *p)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    bool rearm = false;
    io_uring_for_each_cqe(&p->ring, head, cqe)
    {
        if (cqe->user_data == PORT_STORE_TAG)
            rearm |= !(cqe->flags & IORING_CQE_F_MORE);
        else if (kafka_port_cqe(&p->kafka, &p->ring, cqe))
            ; /* the replicator has reports: the loop polls it next */
        else if (cqe->user_data == REACTOR_WAKE_TAG && cqe->res < 0)
            xcore_wake_failed(p->owner->mesh, p->endpoint);
        seen++;
    }
    io_uring_cq_advance(&p->ring, seen);
    if (rearm)
        port_arm_store(p);
}

static void port_wait(void *ctx, int timeout_ms)
{
    struct port *p = ctx;
    struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                   .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
    struct io_uring_cqe *cqe;
    io_uring_submit_and_wait_timeout(&p->ring, &cqe, 1, &ts, NULL);
    port_reap(p);
}

static const struct shard_transport port_transport = {
    .recv = port_recv,
    .reply = port_reply,
    .flush = port_flush,
    .wait = port_wait,
};

/* ---- threads --------------------------------------------------------------------- */

static void *shard_main(void *arg)
{
    struct port *p = arg;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)(p->core % (unsigned)(online > 0 ? online : 1)), &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    char name[16];
    snprintf(name, sizeof(name), "rp-shard-%u", p->core);
    pthread_setname_np(pthread_self(), name);
    /* The store's poll is armed (and the ring's first submit made) here, not by the
     * thread that opened the shard: io_uring completes a poll through task work on
     * the task that submitted it, so a poll armed by the main thread woke the main
     * thread at every log sync, which then woke this one (an extra hop per sync). */
    port_arm_store(p);
    shard_run(&p->shard);
    return NULL;
}

/* One log line per shard that replayed its write-ahead log at open. */
static void report_recovery(const struct shard_store *st, unsigned shard)
{
    struct shard_store_stats ss;
    shard_store_get_stats(st, &ss);
    if (!shard_store_async(st))
        return;
    char sh[16], recs[24], ops[24], ms[24], pos[24];
    snprintf(sh, sizeof(sh), "%u", shard);
    snprintf(recs, sizeof(recs), "%llu", (unsigned long long)ss.replayed_records);
    snprintf(ops, sizeof(ops), "%llu", (unsigned long long)ss.replayed_ops);
    snprintf(ms, sizeof(ms), "%.1f", (double)ss.replay_ns / 1e6);
    snprintf(pos, sizeof(pos), "%llu", (unsigned long long)ss.wal_written);
    log_write_str(LOG_INFO, "write-ahead log replayed", "shard", sh, "records", recs, "operations",
                  ops, "ms", ms, "log_end", pos, NULL);
}

static int open_stores(struct shards *s, const struct shards_config *cfg, char *why,
                       size_t why_bytes)
{
    int err = store_manifest_open(cfg->data_dir, cfg->cores, why, why_bytes);
    if (err)
        return err;
    /* One fsync per commit under load; answers wait for the fsync that covers their
     * commit (store/shard.c). */
    struct shard_store_options opt = cfg->store;
    opt.idem_ttl_ms = cfg->idem_ttl_ms;
    opt.defer_meta_sync = 1; /* the LMDB mode's; the log's mode commits durably */
    for (unsigned i = 0; i < cfg->cores; i++) {
        err = shard_store_open(&s->ports[i].store, cfg->data_dir, i, &opt);
        if (err) {
            const char *more = shard_store_open_error();
            snprintf(why, why_bytes, "cannot open shard %u under %s: %s", i, cfg->data_dir,
                     more[0] ? more : strerror(-err));
            return err;
        }
        report_recovery(s->ports[i].store, i);
    }
    return 0;
}

static int port_init(struct shards *s, unsigned i, char *why, size_t why_bytes)
{
    struct port *p = &s->ports[i];
    p->owner = s;
    p->core = i;
    p->endpoint = s->cores + i;
    int err = io_uring_queue_init(SHARD_RING_ENTRIES, &p->ring, 0);
    if (err) {
        snprintf(why, why_bytes, "io_uring for shard %u: %s", i, strerror(-err));
        return err;
    }
    p->ring_ok = true;
    xcore_set_ring_fd(s->mesh, p->endpoint, p->ring.ring_fd);
    err = budget_init(&p->budget, &s->merchant_budget);
    if (err) {
        snprintf(why, why_bytes, "out of memory for shard %u's merchant budgets", i);
        return err;
    }
    if (s->kafka &&
        (err = kafka_port_open(s->kafka, &p->kafka, i, p->store, &p->ring, why, why_bytes)) != 0)
        return err;
    p->shard.replicator = p->kafka.repl;
    p->shard.store = p->store;
    p->shard.transport = &port_transport;
    p->shard.transport_ctx = p;
    return 0;
}

int shards_start(struct shards **out, const struct shards_config *cfg, char *why, size_t why_bytes)
{
    ASSERT(cfg->cores >= 1 && cfg->cores <= CORES_MAX && cfg->mesh != NULL);
    struct shards *s = calloc(1, sizeof(*s));
    if (s == NULL)
        return -ENOMEM;
    s->cores = cfg->cores;
    s->mesh = cfg->mesh;
    s->merchant_budget = cfg->merchant_budget;
    s->kafka = cfg->kafka;
    int err = open_stores(s, cfg, why, why_bytes);
    for (unsigned i = 0; err == 0 && i < s->cores; i++)
        err = port_init(s, i, why, why_bytes);
    for (unsigned i = 0; err == 0 && i < s->cores; i++) {
        struct port *p = &s->ports[i];
        if (pthread_create(&p->tid, NULL, shard_main, p) != 0) {
            snprintf(why, why_bytes, "cannot start shard thread %u", i);
            err = -EAGAIN;
            break;
        }
        __atomic_store_n(&p->running, 1, __ATOMIC_RELEASE);
    }
    if (err) {
        shards_stop(s);
        return err;
    }
    *out = s;
    return 0;
}

void shards_stop(struct shards *s)
{
    if (s == NULL)
        return;
    uint64_t flush_until = clock_mono_ns() + (uint64_t)REPL_CLOSE_FLUSH_MS * 1000000;
    for (unsigned i = 0; i < s->cores; i++) {
        struct port *p = &s->ports[i];
        if (p->running) {
            shard_stop(&p->shard);
            pthread_join(p->tid, NULL);
            p->running = 0;
        }
        kafka_port_close(&p->kafka, flush_until);
        if (p->ring_ok)
            io_uring_queue_exit(&p->ring);
        shard_store_close(p->store);
        budget_destroy(&p->budget);
    }
    free(s);
}

bool shards_ready(const struct shards *s)
{
    for (unsigned i = 0; i < s->cores; i++)
        if (!__atomic_load_n(&s->ports[i].running, __ATOMIC_ACQUIRE) ||
            __atomic_load_n(&s->ports[i].shard.failed, __ATOMIC_ACQUIRE) ||
            kafka_port_overloaded(&s->ports[i].kafka))
            return false;
    return true;
}

/* ---- metrics ----------------------------------------------------------------------- */

static uint64_t stat_of(const struct port *p, size_t off)
{
    return __atomic_load_n((const uint64_t *)((const char *)&p->shard.stats + off),
                           __ATOMIC_RELAXED);
}

/* The write-ahead log, the overlay and the checkpoints (zero with --wal off). */
static void store_metrics(const struct shards *s, struct metrics_out *o)
{
    static const struct {
        const char *name, *type, *help;
        size_t off;
        bool seconds;
    } m[] = {
        {"ringpay_wal_written_bytes", "gauge", "Log position: the end of everything staged.",
         offsetof(struct shard_store_stats, wal_written), false},
        {"ringpay_wal_durable_bytes", "gauge",
         "Log position: the end of everything a completed fdatasync covered.",
         offsetof(struct shard_store_stats, wal_durable), false},
        {"ringpay_wal_writes_total", "counter", "Log writes (each a group of batches).",
         offsetof(struct shard_store_stats, wal_writes), false},
        {"ringpay_wal_syncs_total", "counter", "Log fdatasyncs.",
         offsetof(struct shard_store_stats, wal_syncs), false},
        {"ringpay_wal_bytes_total", "counter", "Bytes written to the log.",
         offsetof(struct shard_store_stats, wal_bytes), false},
        {"ringpay_wal_sync_seconds_total", "counter", "Time in log writes and fdatasyncs.",
         offsetof(struct shard_store_stats, wal_sync_ns), true},
        {"ringpay_wal_segments_made_total", "counter", "Log segment files created (zero-filled).",
         offsetof(struct shard_store_stats, wal_segments_made), false},
        {"ringpay_wal_segments_recycled_total", "counter",
         "Log segment files reused from below a checkpoint.",
         offsetof(struct shard_store_stats, wal_segments_recycled), false},
        {"ringpay_checkpoints_total", "counter", "Checkpoints committed into LMDB.",
         offsetof(struct shard_store_stats, checkpoints), false},
        {"ringpay_checkpoint_seconds_total", "counter", "Time writing and committing checkpoints.",
         offsetof(struct shard_store_stats, checkpoint_ns), true},
        {"ringpay_checkpoint_operations_total", "counter", "Operations checkpoints covered.",
         offsetof(struct shard_store_stats, checkpoint_ops), false},
        {"ringpay_checkpoint_written_bytes_total", "counter",
         "Bytes the checkpointer wrote to storage (LMDB pages; divide by 4096 and by "
         "operations for pages per operation).",
         offsetof(struct shard_store_stats, checkpoint_bytes), false},
        {"ringpay_checkpoint_position_bytes", "gauge", "Log position the last checkpoint covers.",
         offsetof(struct shard_store_stats, checkpoint_pos), false},
        {"ringpay_overlay_bytes", "gauge", "Memory used by the overlay's two layers.",
         offsetof(struct shard_store_stats, overlay_bytes), false},
        {"ringpay_overlay_operations", "gauge", "Operations in the active layer.",
         offsetof(struct shard_store_stats, overlay_ops), false},
        {"ringpay_overlay_full_total", "counter",
         "Operations answered 503 because both overlay layers were full.",
         offsetof(struct shard_store_stats, overlay_full), false},
        {"ringpay_wal_replayed_operations", "gauge", "Operations replayed from the log at start.",
         offsetof(struct shard_store_stats, replayed_ops), false},
        {"ringpay_wal_replay_seconds", "gauge", "Time the replay at start took.",
         offsetof(struct shard_store_stats, replay_ns), true},
    };
    for (size_t k = 0; k < ARRAY_LEN(m); k++) {
        metrics_family(o, m[k].name, m[k].type, m[k].help);
        for (unsigned i = 0; i < s->cores; i++) {
            char labels[32];
            snprintf(labels, sizeof(labels), "shard=\"%u\"", i);
            struct shard_store_stats st;
            shard_store_stats_load(&s->ports[i].shard, &st);
            uint64_t v;
            memcpy(&v, (const char *)&st + m[k].off, sizeof(v));
            if (m[k].seconds)
                metrics_sample_seconds(o, m[k].name, labels, v);
            else
                metrics_sample_u64(o, m[k].name, labels, v);
        }
    }
}

void shards_metrics(const struct shards *s, struct metrics_out *o)
{
    static const struct {
        const char *name, *type, *help;
        size_t off;
        bool seconds; /* the field counts nanoseconds; exported in seconds */
    } m[] = {
        {"ringpay_shard_commits_total", "counter", "Group-commit write transactions.",
         offsetof(struct shard_stats, batches), false},
        {"ringpay_shard_jobs_total", "counter", "Operations answered by the shard.",
         offsetof(struct shard_stats, jobs), false},
        {"ringpay_shard_batch_max", "gauge", "Largest group-commit batch so far.",
         offsetof(struct shard_stats, batch_max), false},
        {"ringpay_shard_idle_syncs_total", "counter",
         "Explicit fdatasyncs to release held answers (the queue was empty, or a turn "
         "wrote nothing).",
         offsetof(struct shard_stats, syncs), false},
        {"ringpay_shard_batch_jobs_total", "counter",
         "State-changing jobs committed (divide by commits for the mean batch).",
         offsetof(struct shard_stats, batch_jobs), false},
        {"ringpay_shard_commit_seconds_total", "counter",
         "Time in group commits (apply and commit).", offsetof(struct shard_stats, commit_ns),
         true},
        {"ringpay_shard_idle_sync_seconds_total", "counter", "Time in explicit fdatasyncs.",
         offsetof(struct shard_stats, sync_ns), true},
    };
    for (size_t k = 0; k < ARRAY_LEN(m); k++) {
        metrics_family(o, m[k].name, m[k].type, m[k].help);
        for (unsigned i = 0; i < s->cores; i++) {
            char labels[32];
            snprintf(labels, sizeof(labels), "shard=\"%u\"", i);
            uint64_t v = stat_of(&s->ports[i], m[k].off);
            if (m[k].seconds)
                metrics_sample_seconds(o, m[k].name, labels, v);
            else
                metrics_sample_u64(o, m[k].name, labels, v);
        }
    }
    store_metrics(s, o);
    metrics_family(o, "ringpay_shard_failed", "gauge",
                   "1 when the shard saw a failed commit or sync and refuses all work.");
    for (unsigned i = 0; i < s->cores; i++) {
        char labels[32];
        snprintf(labels, sizeof(labels), "shard=\"%u\"", i);
        metrics_sample_u64(o, "ringpay_shard_failed", labels,
                           __atomic_load_n(&s->ports[i].shard.failed, __ATOMIC_ACQUIRE) != 0);
    }
    metrics_family(o, "ringpay_merchant_rate_limited_total", "counter",
                   "Requests answered 429 because their merchant was over its budget.");
    for (unsigned i = 0; i < s->cores; i++) {
        char labels[32];
        snprintf(labels, sizeof(labels), "shard=\"%u\"", i);
        metrics_sample_u64(o, "ringpay_merchant_rate_limited_total", labels,
                           __atomic_load_n(&s->ports[i].budget.refused, __ATOMIC_RELAXED));
    }
    const struct kafka_port *kp[CORES_MAX];
    for (unsigned i = 0; i < s->cores; i++)
        kp[i] = &s->ports[i].kafka;
    kafka_metrics(o, kp, s->cores);
}
