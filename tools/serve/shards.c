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
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/assert.h"
#include "engine/clock.h"
#include "engine/limits.h"
#include "net/reactor.h"
#include "store/manifest.h"
#include "store/shard.h"
#include "store/shard_store.h"
#include "tools/serve/kafka.h"

struct port {
    struct shards *owner;
    unsigned core;
    unsigned endpoint; /* N + core */
    struct io_uring ring;
    bool ring_ok;
    struct shard shard;
    struct shard_store *store;
    struct kafka_port kafka; /* the shard's replicator and its wake-up */
    pthread_t tid;
    int running; /* read with __atomic_load_n */
};

struct shards {
    unsigned cores;
    struct xcore *mesh;
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
    return rc.n;
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

/* Reaps the shard ring's completions: wake-ups from reactors, and our own wake-ups
 * that could not be delivered (re-armed for the next flush). */
static void port_reap(struct port *p)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&p->ring, head, cqe)
    {
        if (kafka_port_cqe(&p->kafka, &p->ring, cqe))
            ; /* the replicator has reports: the loop polls it next */
        else if (cqe->user_data == REACTOR_WAKE_TAG && cqe->res < 0)
            xcore_wake_failed(p->owner->mesh, p->endpoint);
        seen++;
    }
    io_uring_cq_advance(&p->ring, seen);
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
    shard_run(&p->shard);
    return NULL;
}

static int open_stores(struct shards *s, const struct shards_config *cfg, char *why,
                       size_t why_bytes)
{
    int err = store_manifest_open(cfg->data_dir, cfg->cores, why, why_bytes);
    if (err)
        return err;
    /* One fsync per commit under load; answers wait for the fsync that covers their
     * commit (store/shard.c). */
    struct shard_store_options opt = {.idem_ttl_ms = cfg->idem_ttl_ms, .defer_meta_sync = 1};
    for (unsigned i = 0; i < cfg->cores; i++) {
        err = shard_store_open(&s->ports[i].store, cfg->data_dir, i, &opt);
        if (err) {
            snprintf(why, why_bytes, "cannot open shard %u under %s: %s", i, cfg->data_dir,
                     strerror(-err));
            return err;
        }
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
    metrics_family(o, "ringpay_shard_failed", "gauge",
                   "1 when the shard saw a failed commit or sync and refuses all work.");
    for (unsigned i = 0; i < s->cores; i++) {
        char labels[32];
        snprintf(labels, sizeof(labels), "shard=\"%u\"", i);
        metrics_sample_u64(o, "ringpay_shard_failed", labels,
                           __atomic_load_n(&s->ports[i].shard.failed, __ATOMIC_ACQUIRE) != 0);
    }
    const struct kafka_port *kp[CORES_MAX];
    for (unsigned i = 0; i < s->cores; i++)
        kp[i] = &s->ports[i].kafka;
    kafka_metrics(o, kp, s->cores);
}
