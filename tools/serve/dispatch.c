/*
 * The reactor side of the payment API (see dispatch.h).
 *
 * Ownership: a job is taken from the pool of the reactor that decoded the request,
 * lent to the shard, and put back by the same reactor after it wrote the answer, so
 * each pool is touched by one thread only. A job whose connection closed meanwhile is
 * put back all the same: reactor_reply() ignores the stale reference.
 */
#define _GNU_SOURCE
#include "tools/serve/dispatch.h"

#include <errno.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/api.h"
#include "engine/assert.h"
#include "engine/clock.h"
#include "engine/limits.h"
#include "store/shard.h"
#include "tools/serve/app.h"
#include "tools/serve/job_pool.h"

/* One reactor's part, on its own cache lines. */
struct dispatch_core {
    _Alignas(64) struct job_pool pool;
};

struct dispatch {
    unsigned cores;
    struct xcore *mesh;
    struct dispatch_core core[CORES_MAX];
};

int dispatch_create(struct dispatch **out, unsigned cores, unsigned jobs_per_core,
                    struct xcore *mesh)
{
    ASSERT(cores >= 1 && cores <= CORES_MAX && mesh != NULL);
    struct dispatch *d = aligned_alloc(64, sizeof(*d));
    if (d == NULL)
        return -ENOMEM;
    memset(d, 0, sizeof(*d));
    d->cores = cores;
    d->mesh = mesh;
    for (unsigned i = 0; i < cores; i++)
        if (job_pool_init(&d->core[i].pool, jobs_per_core) != 0) {
            dispatch_destroy(d);
            return -ENOMEM;
        }
    *out = d;
    return 0;
}

void dispatch_destroy(struct dispatch *d)
{
    if (d == NULL)
        return;
    for (unsigned i = 0; i < d->cores; i++)
        job_pool_destroy(&d->core[i].pool);
    free(d);
}

/* ---- requests ------------------------------------------------------------------------- */

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
    char body[API_ERROR_BODY_MAX_BYTES];
    struct jw w;
    jw_init(&w, body, sizeof(body));
    api_render_error(&w, e, rq->request_id, rq->request_id_len);
    ASSERT(jw_finish(&w) == 0); /* every part is bounded: API_ERROR_BODY_MAX_BYTES */
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

/* Copies a fingerprint part into the job so the request buffer may move on. */
static char *copy_span(char *dst, struct engine_span *s)
{
    if (s->ptr == NULL)
        return dst;
    memcpy(dst, s->ptr, s->len);
    s->ptr = dst;
    return dst + s->len;
}

static bool is_list(enum op_kind kind)
{
    return kind == OP_BALANCES || kind == OP_LEDGER;
}

/* A job from the pool holding op and its fingerprint, or NULL when none is free. */
static struct shard_job *job_make(struct job_pool *pool, const struct op *op,
                                  const struct reactor_request *rq, unsigned origin)
{
    size_t fp = op->fp_method.len + op->fp_path.len + op->fp_query.len + op->fp_body.len;
    size_t cap = is_list(op->kind) ? ENGINE_READ_ANSWER_MAX_BYTES : ENGINE_ANSWER_MAX_BYTES;
    /* A fingerprint over the small class's share takes a large job (asserted to fit by
     * the HTTP limits, engine/limits.h). */
    size_t need = fp > JOB_FP_SMALL_MAX_BYTES ? JOB_LARGE_DATA_BYTES : fp + cap;
    struct shard_job *job = job_pool_get(pool, need);
    if (job == NULL)
        return NULL;
    job->op = *op;
    char *p = job_pool_data(job);
    p = copy_span(p, &job->op.fp_method);
    p = copy_span(p, &job->op.fp_path);
    p = copy_span(p, &job->op.fp_query);
    p = copy_span(p, &job->op.fp_body);
    job->answer = (struct answer){.body = p, .cap = cap};
    job->rc = 0;
    job->retry_after_s = 0;
    job->origin = origin;
    _Static_assert(sizeof(job->owner) >= sizeof(rq->ref), "a job holds a reactor_ref");
    memcpy(job->owner, &rq->ref, sizeof(rq->ref));
    job->start_ns = clock_mono_ns();
    return job;
}

int dispatch_request(struct dispatch *d, struct reactor *r, const struct reactor_request *rq,
                     const struct gate_pass *pass)
{
    const struct http_request *h = rq->http;
    bool head = h->method == HTTP_HEAD;
    struct api_request ar = {
        .method = head ? (struct engine_span){"GET", 3} : span_of(rq, h->method_token),
        .path = span_of(rq, h->path),
        .query = h->query.len ? span_of(rq, h->query) : (struct engine_span){0},
        .body = h->body.len ? span_of(rq, h->body) : (struct engine_span){0},
        .idem_key = header_span(rq, "idempotency-key"),
        .idem_key_count = http_header_count(h, rq->buf, "idempotency-key"),
        .request_id = {.ptr = rq->request_id, .len = rq->request_id_len},
        .auth_merchant = {.ptr = pass->merchant, .len = pass->merchant_len},
    };
    struct op op;
    struct api_error e;
    if (h->method == HTTP_POST && check_post_framing(rq, &e) != 0) {
        reply_api_error(r, rq, &e);
        return 0;
    }
    if (api_decode(&ar, d->cores, &op, &e) != 0) {
        reply_api_error(r, rq, &e);
        return 0;
    }
    unsigned self = reactor_core(r);
    struct shard_job *job = job_make(&d->core[self].pool, &op, rq, self);
    if (job == NULL)
        return -EBUSY;
    if (is_list(op.kind))
        reactor_expect(r, rq->ref, ENGINE_READ_ANSWER_MAX_BYTES);
    /* A pool never holds more jobs than a ring has slots (engine/limits.h). */
    int rc = xcore_send(d->mesh, self, d->cores + job->op.shard, &job);
    ASSERT(rc == 0);
    return 0;
}

/* ---- answers --------------------------------------------------------------------------- */

static void job_answer(struct reactor *r, struct shard_job *job)
{
    struct reactor_ref ref;
    memcpy(&ref, job->owner, sizeof(ref));
    struct reactor_response resp = {
        .status = job->answer.status,
        .route = app_route_of_op(job->op.kind),
        .content_type = "application/json",
        .body = job->answer.body,
        .body_len = job->answer.len,
    };
    char body[API_ERROR_BODY_MAX_BYTES], retry[40];
    if (job->retry_after_s > 0) { /* refused before the store (429), with its own wait */
        snprintf(retry, sizeof(retry), "Retry-After: %u\r\n", job->retry_after_s);
        resp.headers = retry;
    } else if (job->rc == -ENOBUFS && job->answer.status == 503) {
        /* Refused while the shard's replication backlog is over its bound: the shard's
         * own 503 body says so (store/shard.h). */
        resp.headers = "Retry-After: 1\r\n";
    } else if (job->rc != 0 || job->answer.status == 0 || job->answer.status == 503) {
        struct api_error e;
        api_error_set(&e, 503, "overloaded", "the shard could not commit; retry", NULL);
        struct jw w;
        jw_init(&w, body, sizeof(body));
        api_render_error(&w, &e, job->op.request_id, job->op.request_id_len);
        ASSERT(jw_finish(&w) == 0);
        resp.status = 503;
        resp.body = body;
        resp.body_len = w.len;
        resp.headers = "Retry-After: 1\r\n";
    } else if (job->answer.replayed) {
        resp.headers = "Idempotent-Replayed: true\r\n";
    }
    reactor_reply(r, ref, &resp);
}

struct back_ctx {
    struct reactor *r;
    struct job_pool *pool;
    unsigned n;
};

static void job_back(void *ctx, unsigned from, void *msg)
{
    struct back_ctx *b = ctx;
    struct shard_job *job;
    memcpy(&job, msg, sizeof(job));
    job_answer(b->r, job);
    job_pool_put(b->pool, job);
    b->n++;
}

void dispatch_on_wake(struct dispatch *d, struct reactor *r, int res)
{
    unsigned self = reactor_core(r);
    if (res < 0)
        xcore_wake_failed(d->mesh, self);
    struct back_ctx b = {.r = r, .pool = &d->core[self].pool};
    while (xcore_drain(d->mesh, self, job_back, &b, 1024) == 1024)
        ;
    if (b.n > 0)
        reactor_resume(r); /* jobs are free again: connections waiting for one may go on */
}

void dispatch_on_turn(struct dispatch *d, struct reactor *r)
{
    unsigned self = reactor_core(r);
    while (xcore_flush(d->mesh, self, reactor_ring(r), REACTOR_WAKE_TAG) == -EBUSY)
        io_uring_submit(reactor_ring(r));
}

void dispatch_metrics(const struct dispatch *d, struct metrics_out *o)
{
    metrics_family(o, "ringpay_jobs_in_use", "gauge",
                   "Requests of this core on their way to a shard or back.");
    for (unsigned i = 0; i < d->cores; i++) {
        char labels[32];
        snprintf(labels, sizeof(labels), "core=\"%u\"", i);
        metrics_sample_u64(o, "ringpay_jobs_in_use", labels,
                           __atomic_load_n(&d->core[i].pool.in_use, __ATOMIC_RELAXED));
    }
    metrics_family(o, "ringpay_job_pool_empty_total", "counter",
                   "Times a request found no free job of its class and waited.");
    for (unsigned i = 0; i < d->cores; i++) {
        char labels[32];
        snprintf(labels, sizeof(labels), "core=\"%u\"", i);
        metrics_sample_u64(o, "ringpay_job_pool_empty_total", labels,
                           __atomic_load_n(&d->core[i].pool.empty, __ATOMIC_RELAXED));
    }
}
