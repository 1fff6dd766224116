/*
 * Reactor <-> shard wiring of the payment API (see payments.h).
 *
 * Ownership: a job is malloc'd by the reactor that decoded the request, lent to the
 * shard, and freed by the same reactor after it wrote the answer, so every allocation
 * is freed by the thread that made it. A job whose connection closed meanwhile is
 * still freed: reactor_reply() ignores the stale reference.
 *
 * Backpressure: a full ring to a shard keeps the job in the reactor's hold queue
 * (retried every turn); a full hold queue answers 503 overloaded at once.
 */
#define _GNU_SOURCE
#include "tools/payments.h"

#include <errno.h>
#include <liburing.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/api.h"
#include "engine/assert.h"
#include "engine/limits.h"
#include "net/xcore.h"
#include "store/manifest.h"
#include "store/shard.h"
#include "store/shard_store.h"
#include "tools/app.h"

#define HOLD_MAX 4096

struct hold {
    struct shard_job *jobs[HOLD_MAX];
    unsigned head, count;
};

struct shard_port {
    struct payments *p;
    unsigned endpoint;
    struct io_uring ring;
    struct shard shard;
    pthread_t tid;
    int running;
};

struct payments {
    unsigned cores;
    struct xcore mesh;
    struct shard_port ports[CORES_MAX];
    struct hold holds[CORES_MAX]; /* per reactor, touched only by it */
    struct shard_store *stores[CORES_MAX];
};

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- shard side: the transport over the mesh ----------------------------------- */

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
    struct shard_port *sp = ctx;
    struct recv_ctx rc = {.jobs = jobs};
    while (rc.n < max) {
        unsigned want = (unsigned)(max - rc.n);
        unsigned got = xcore_drain(&sp->p->mesh, sp->endpoint, collect, &rc, want);
        if (got < want)
            break;
    }
    return rc.n;
}

static int port_reply(void *ctx, struct shard_job *job)
{
    struct shard_port *sp = ctx;
    return xcore_send(&sp->p->mesh, sp->endpoint, job->origin, &job);
}

static void port_flush(void *ctx)
{
    struct shard_port *sp = ctx;
    while (xcore_flush(&sp->p->mesh, sp->endpoint, &sp->ring, REACTOR_WAKE_TAG) == -EBUSY)
        io_uring_submit(&sp->ring);
    io_uring_submit(&sp->ring);
}

static void port_reap(struct shard_port *sp)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&sp->ring, head, cqe)
    {
        if (cqe->user_data == REACTOR_WAKE_TAG && cqe->res < 0)
            xcore_wake_failed(&sp->p->mesh, sp->endpoint);
        seen++;
    }
    io_uring_cq_advance(&sp->ring, seen);
}

static void port_wait(void *ctx, int timeout_ms)
{
    struct shard_port *sp = ctx;
    struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                   .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
    struct io_uring_cqe *cqe;
    io_uring_submit_and_wait_timeout(&sp->ring, &cqe, 1, &ts, NULL);
    port_reap(sp);
}

static const struct shard_transport port_transport = {
    .recv = port_recv,
    .reply = port_reply,
    .flush = port_flush,
    .wait = port_wait,
};

static void *shard_main(void *arg)
{
    struct shard_port *sp = arg;
    unsigned core = sp->endpoint - sp->p->cores;
    long online = sysconf(_SC_NPROCESSORS_ONLN);
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET((int)(core % (unsigned)(online > 0 ? online : 1)), &set);
    pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    char name[16];
    snprintf(name, sizeof(name), "rp-shard-%u", core);
    pthread_setname_np(pthread_self(), name);
    shard_run(&sp->shard);
    return NULL;
}

/* ---- reactor side ------------------------------------------------------------------ */

static unsigned route_of(enum op_kind kind)
{
    switch (kind) {
    case OP_AUTHORIZE:
        return ROUTE_AUTHORIZE;
    case OP_CAPTURE:
        return ROUTE_CAPTURE;
    case OP_VOID:
        return ROUTE_VOID;
    case OP_REFUND:
        return ROUTE_REFUND;
    case OP_GET_PAYMENT:
        return ROUTE_GET_PAYMENT;
    case OP_BALANCES:
        return ROUTE_BALANCES;
    case OP_LEDGER:
        return ROUTE_LEDGER;
    }
    return ROUTE_OTHER;
}

static struct engine_span span_of(const struct reactor_request *rq, struct http_slice s)
{
    return (struct engine_span){.ptr = rq->buf + s.off, .len = s.len};
}

static struct engine_span header_span(const struct reactor_request *rq, const char *name)
{
    const struct http_header *h = http_header_find(rq->http, rq->buf, name);
    if (h == NULL)
        return (struct engine_span){0};
    return span_of(rq, h->value);
}

static void reply_api_error(struct reactor *r, const struct reactor_request *rq,
                            const struct api_error *e)
{
    char body[1024];
    struct jw w;
    jw_init(&w, body, sizeof(body));
    api_render_error(&w, e, rq->request_id, rq->request_id_len);
    ASSERT(jw_finish(&w) == 0);
    char allow[64] = "";
    if (e->allow)
        snprintf(allow, sizeof(allow), "Allow: %s\r\n", e->allow);
    struct reactor_response resp = {
        .status = e->status,
        .route = ROUTE_OTHER,
        .content_type = "application/json",
        .headers = e->allow ? allow : (e->status == 503 ? "Retry-After: 1\r\n" : NULL),
        .body = body,
        .body_len = w.len,
    };
    reactor_reply(r, rq->ref, &resp);
}

/* SPEC §2 framing rules the codec cannot see: 411 and 415 for POST. */
static int check_post_framing(const struct reactor_request *rq, struct api_error *e)
{
    const struct http_request *h = rq->http;
    if (!h->has_content_length && !h->chunked) {
        api_error_set(e, 411, "length_required", "POST needs Content-Length or chunked", NULL);
        return -1;
    }
    if (h->body.len == 0)
        return 0;
    struct engine_span ct = header_span(rq, "content-type");
    static const char json[] = "application/json";
    size_t n = sizeof(json) - 1;
    if (ct.ptr == NULL || ct.len < n || strncasecmp(ct.ptr, json, n) != 0 ||
        (ct.len > n && ct.ptr[n] != ';' && ct.ptr[n] != ' ')) {
        api_error_set(e, 415, "unsupported_media_type", "the body must be application/json", NULL);
        return -1;
    }
    return 0;
}

/* Copies the fingerprint parts into the job so the request buffer may move on. */
static char *copy_span(char *dst, struct engine_span *s)
{
    if (s->ptr == NULL)
        return dst;
    memcpy(dst, s->ptr, s->len);
    s->ptr = dst;
    return dst + s->len;
}

static struct shard_job *job_make(const struct op *op, const struct reactor_request *rq,
                                  unsigned origin)
{
    size_t fp = op->fp_method.len + op->fp_path.len + op->fp_query.len + op->fp_body.len;
    bool big = op->kind == OP_BALANCES || op->kind == OP_LEDGER;
    size_t cap = big ? ENGINE_READ_ANSWER_MAX_BYTES : ENGINE_ANSWER_MAX_BYTES;
    struct shard_job *job = malloc(sizeof(*job) + fp + cap);
    if (job == NULL)
        return NULL;
    job->op = *op;
    char *p = (char *)(job + 1);
    p = copy_span(p, &job->op.fp_method);
    p = copy_span(p, &job->op.fp_path);
    p = copy_span(p, &job->op.fp_query);
    p = copy_span(p, &job->op.fp_body);
    job->answer = (struct answer){.body = p, .cap = cap};
    job->rc = 0;
    job->origin = origin;
    memcpy(job->owner, &rq->ref, sizeof(rq->ref));
    job->start_ns = mono_ns();
    return job;
}

static void job_answer(struct reactor *r, struct shard_job *job)
{
    struct reactor_ref ref;
    memcpy(&ref, job->owner, sizeof(ref));
    struct reactor_response resp = {
        .status = job->answer.status,
        .route = route_of(job->op.kind),
        .content_type = "application/json",
        .body = job->answer.body,
        .body_len = job->answer.len,
    };
    char body[512];
    if (job->rc != 0 || job->answer.status == 0 || job->answer.status == 503) {
        struct api_error e;
        api_error_set(&e, 503, "overloaded", "the shard could not commit; retry", NULL);
        struct jw w;
        jw_init(&w, body, sizeof(body));
        api_render_error(&w, &e, job->op.request_id, job->op.request_id_len);
        resp.status = 503;
        resp.body = body;
        resp.body_len = w.len;
        resp.headers = "Retry-After: 1\r\n";
    } else if (job->answer.replayed) {
        resp.headers = "Idempotent-Replayed: true\r\n";
    }
    reactor_reply(r, ref, &resp);
}

static int hold_push(struct hold *h, struct shard_job *job)
{
    if (h->count == HOLD_MAX)
        return -EAGAIN;
    h->jobs[(h->head + h->count++) % HOLD_MAX] = job;
    return 0;
}

static void send_job(struct payments *p, struct reactor *r, struct shard_job *job)
{
    unsigned self = reactor_core(r);
    struct hold *h = &p->holds[self];
    unsigned to = p->cores + job->op.shard;
    if (h->count == 0 && xcore_send(&p->mesh, self, to, &job) == 0)
        return;
    if (hold_push(h, job) == 0)
        return;
    job->rc = -EAGAIN; /* answered 503 overloaded, never sent */
    job_answer(r, job);
    free(job);
}

void payments_on_request(struct payments *p, struct reactor *r, const struct reactor_request *rq)
{
    const struct http_request *h = rq->http;
    bool head = h->method == HTTP_HEAD;
    struct api_request ar = {
        .method = head ? (struct engine_span){"GET", 3} : span_of(rq, h->method_token),
        .path = span_of(rq, h->path),
        .query = h->query.len ? span_of(rq, h->query) : (struct engine_span){0},
        .body = h->body.len ? span_of(rq, h->body) : (struct engine_span){0},
        .idem_key = header_span(rq, "idempotency-key"),
        .request_id = {.ptr = rq->request_id, .len = rq->request_id_len},
    };
    struct op op;
    struct api_error e;
    if (h->method == HTTP_POST && check_post_framing(rq, &e) != 0) {
        reply_api_error(r, rq, &e);
        return;
    }
    if (api_decode(&ar, p->cores, &op, &e) != 0) {
        reply_api_error(r, rq, &e);
        return;
    }
    struct shard_job *job = job_make(&op, rq, reactor_core(r));
    if (job == NULL) {
        api_error_set(&e, 503, "overloaded", "out of memory", NULL);
        reply_api_error(r, rq, &e);
        return;
    }
    send_job(p, r, job);
}

static void job_back(void *ctx, unsigned from, void *msg)
{
    struct reactor *r = ctx;
    struct shard_job *job;
    memcpy(&job, msg, sizeof(job));
    job_answer(r, job);
    free(job);
}

void payments_on_wake(struct payments *p, struct reactor *r, int res)
{
    unsigned self = reactor_core(r);
    if (res < 0)
        xcore_wake_failed(&p->mesh, self);
    while (xcore_drain(&p->mesh, self, job_back, r, 1024) == 1024)
        ;
}

void payments_on_turn(struct payments *p, struct reactor *r)
{
    unsigned self = reactor_core(r);
    struct hold *h = &p->holds[self];
    while (h->count > 0) {
        struct shard_job *job = h->jobs[h->head];
        if (xcore_send(&p->mesh, self, p->cores + job->op.shard, &job) != 0)
            break;
        h->head = (h->head + 1) % HOLD_MAX;
        h->count--;
    }
    while (xcore_flush(&p->mesh, self, reactor_ring(r), REACTOR_WAKE_TAG) == -EBUSY)
        io_uring_submit(reactor_ring(r));
}

/* ---- start and stop ---------------------------------------------------------------- */

int payments_ready(const struct payments *p)
{
    for (unsigned i = 0; i < p->cores; i++)
        if (!__atomic_load_n(&p->ports[i].running, __ATOMIC_ACQUIRE) ||
            __atomic_load_n(&p->ports[i].shard.failed, __ATOMIC_ACQUIRE))
            return 0;
    return 1;
}

static int open_stores(struct payments *p, const struct payments_config *cfg, char *why,
                       size_t why_bytes)
{
    const char *dir = cfg->data_dir;
    int err = store_manifest_open(dir, p->cores, why, why_bytes);
    if (err)
        return err;
    /* One fsync per commit under load; answers wait for the fsync that follows their
     * commit (store/shard.c). */
    struct shard_store_options opt = {.idem_ttl_ms = cfg->idem_ttl_ms, .defer_meta_sync = 1};
    for (unsigned i = 0; i < p->cores; i++) {
        err = shard_store_open(&p->stores[i], dir, i, &opt);
        if (err) {
            snprintf(why, why_bytes, "cannot open shard %u under %s: %s", i, dir, strerror(-err));
            return err;
        }
    }
    return 0;
}

int payments_start(struct payments **out, const struct payments_config *cfg,
                   struct reactor *const *reactors, char *why, size_t why_bytes)
{
    struct payments *p = calloc(1, sizeof(*p));
    if (p == NULL)
        return -ENOMEM;
    unsigned cores = cfg->cores;
    p->cores = cores;
    int err = open_stores(p, cfg, why, why_bytes);
    if (err)
        goto out_free;
    err = xcore_init(&p->mesh, 2 * cores, XCORE_RING_SLOTS, sizeof(struct shard_job *));
    if (err) {
        snprintf(why, why_bytes, "cannot set up cross-core rings: %s", strerror(-err));
        goto out_free;
    }
    for (unsigned i = 0; i < cores; i++)
        xcore_set_ring_fd(&p->mesh, i, reactor_ring_fd(reactors[i]));
    for (unsigned i = 0; i < cores; i++) {
        struct shard_port *sp = &p->ports[i];
        sp->p = p;
        sp->endpoint = cores + i;
        err = io_uring_queue_init(256, &sp->ring, 0);
        if (err) {
            snprintf(why, why_bytes, "io_uring for shard %u: %s", i, strerror(-err));
            goto out_free;
        }
        xcore_set_ring_fd(&p->mesh, sp->endpoint, sp->ring.ring_fd);
        sp->shard.store = p->stores[i];
        sp->shard.transport = &port_transport;
        sp->shard.transport_ctx = sp;
    }
    for (unsigned i = 0; i < cores; i++) {
        struct shard_port *sp = &p->ports[i];
        if (pthread_create(&sp->tid, NULL, shard_main, sp) != 0) {
            snprintf(why, why_bytes, "cannot start shard thread %u", i);
            err = -EAGAIN;
            goto out_free;
        }
        __atomic_store_n(&sp->running, 1, __ATOMIC_RELEASE);
    }
    *out = p;
    return 0;

out_free:
    payments_stop(p);
    return err;
}

void payments_stop(struct payments *p)
{
    if (p == NULL)
        return;
    for (unsigned i = 0; i < p->cores; i++) {
        struct shard_port *sp = &p->ports[i];
        if (sp->running) {
            shard_stop(&sp->shard);
            pthread_join(sp->tid, NULL);
            sp->running = 0;
        }
        if (sp->ring.ring_fd > 0)
            io_uring_queue_exit(&sp->ring);
        shard_store_close(p->stores[i]);
    }
    xcore_destroy(&p->mesh);
    free(p);
}

long payments_metrics(const struct payments *p, char *buf, size_t cap)
{
    static const struct {
        const char *name, *type, *help;
        size_t off;
    } m[] = {
        {"ringpay_shard_commits_total", "counter", "Group-commit write transactions.",
         offsetof(struct shard_stats, batches)},
        {"ringpay_shard_jobs_total", "counter", "Operations answered by the shard.",
         offsetof(struct shard_stats, jobs)},
        {"ringpay_shard_batch_max", "gauge", "Largest group-commit batch so far.",
         offsetof(struct shard_stats, batch_max)},
        {"ringpay_shard_idle_syncs_total", "counter",
         "fdatasyncs an idle shard ran to release its last batch.",
         offsetof(struct shard_stats, syncs)},
        {"ringpay_shard_batch_jobs_total", "counter",
         "State-changing jobs committed (divide by commits for the mean batch).",
         offsetof(struct shard_stats, batch_jobs)},
    };
    static const struct {
        const char *name, *help;
        size_t off;
    } secs[] = {
        {"ringpay_shard_commit_seconds_total", "Time in group commits (apply and commit).",
         offsetof(struct shard_stats, commit_ns)},
        {"ringpay_shard_idle_sync_seconds_total", "Time in idle fdatasyncs.",
         offsetof(struct shard_stats, sync_ns)},
    };
    size_t len = 0;
    for (size_t k = 0; k < ARRAY_LEN(m); k++) {
        int n = snprintf(buf + len, cap - len, "# HELP %s %s\n# TYPE %s %s\n", m[k].name, m[k].help,
                         m[k].name, m[k].type);
        if (n < 0 || (size_t)n >= cap - len)
            return -ENOSPC;
        len += (size_t)n;
        for (unsigned i = 0; i < p->cores; i++) {
            const uint64_t *v =
                (const uint64_t *)((const char *)&p->ports[i].shard.stats + m[k].off);
            n = snprintf(buf + len, cap - len, "%s{shard=\"%u\"} %lu\n", m[k].name, i,
                         (unsigned long)__atomic_load_n(v, __ATOMIC_RELAXED));
            if (n < 0 || (size_t)n >= cap - len)
                return -ENOSPC;
            len += (size_t)n;
        }
    }
    for (size_t k = 0; k < ARRAY_LEN(secs); k++) {
        int n = snprintf(buf + len, cap - len, "# HELP %s %s\n# TYPE %s counter\n", secs[k].name,
                         secs[k].help, secs[k].name);
        if (n < 0 || (size_t)n >= cap - len)
            return -ENOSPC;
        len += (size_t)n;
        for (unsigned i = 0; i < p->cores; i++) {
            const uint64_t *v =
                (const uint64_t *)((const char *)&p->ports[i].shard.stats + secs[k].off);
            n = snprintf(buf + len, cap - len, "%s{shard=\"%u\"} %.6f\n", secs[k].name, i,
                         (double)__atomic_load_n(v, __ATOMIC_RELAXED) / 1e9);
            if (n < 0 || (size_t)n >= cap - len)
                return -ENOSPC;
            len += (size_t)n;
        }
    }
    return (long)len;
}
