/*
 * `ringpay load`: an HTTP/1.1 load generator for the engine's API (SPEC §1).
 *
 * Threads: --threads T, each with its own epoll loop and a fixed share of the
 * --connections (thread i owns connections i, i+T, ...). Threads share nothing on the
 * hot path but the --requests budget (one atomic counter), the stop flag (SIGINT) and
 * read-only configuration (the Zipf table, the keys).
 *
 * Connections are non-blocking, TCP_NODELAY, keep-alive, and carry up to --pipeline
 * requests each (1 .. LOAD_PIPELINE_MAX). Responses come back in request order, so each
 * connection keeps a FIFO of its in-flight requests (their start times and kinds); a
 * response completes the oldest one. Per-connection memory is sized by the depth asked
 * for, not by the maximum: a FIFO and a follow-up queue of --pipeline entries, an output
 * buffer of min(--pipeline, LOAD_OUT_REQS) requests (a deeper pipeline is written in
 * several sends), and LOAD_IN_BYTES of input; ~19 KiB of address space per connection
 * at depth 1, of which only the pages used become resident. Invariant: fifo count +
 * follow-ups queued <= pipeline (a follow-up, the capture, void or refund of the
 * lifecycle scenario, replaces the response that caused it).
 *
 * Scenarios (the mix itself is tools/load/mix.h): authorize (POST /v1/payments/authorize,
 * a fresh Idempotency-Key each); lifecycle (authorize, then capture or void, partial
 * refunds, GETs of payments and balances, in the shares the --*-pct flags give;
 * `mixed` is its old name); replay (authorize, and --replay-pct of the authorizations
 * re-send an earlier answered one, same key and body: the engine answers it from its
 * idempotency record with Idempotent-Replayed: true, counted as "replayed"); healthz
 * (GET /healthz). Merchants m-0 .. m-(M-1) in turn, or Zipf-distributed (--zipf S).
 *
 * Closed loop (--rate 0): a connection sends its next request as soon as a slot frees;
 * latency runs from the moment the request was written. Open loop (--rate R): each
 * thread schedules R/T requests per second at fixed intervals and sends each on any
 * connection with a free slot; latency runs from the SCHEDULED time, so a server that
 * stalls is charged for the whole stall (no coordinated omission). Scheduled slots that
 * were never sent by the end of the run are reported as "missed".
 *
 * Bounded: every run ends by itself: at --duration-s, or after --requests (then still at
 * --duration-s when given, else after REQUESTS_CEILING_S). A request unanswered after
 * --timeout-ms counts as a timeout and its connection is reopened. After the end no new
 * request is sent and the in-flight ones are drained (each within the timeout).
 * Only loopback targets are allowed unless --allow-remote.
 *
 * Signing (SPEC §3): with --keys FILE (the JSON lines `ringpay keys add` printed, one
 * key per merchant m-i), every request is signed with its merchant's key when it is
 * formatted (tools/load/signer.h); follow-ups and GETs of a payment with the key of the
 * merchant that authorized it. With --keys-data DIR the keys are made (or reused) in
 * the engine's data directory first and a running engine is told to reload them
 * (load_keys_provision, load_keys_reload). Without either, requests go unsigned (an
 * engine started with --auth off).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/assert.h"
#include "engine/limits.h"
#include "tools/cmd.h"
#include "tools/config.h"
#include "tools/load/loadstats.h"
#include "tools/load/mix.h"
#include "tools/load/signer.h"

#define LOAD_CONNECTIONS_MAX 10000
/* Requests in flight per connection. Above the engine's own CONN_PIPELINE_MAX the
 * engine simply stops reading until it has answered (TCP backpressure, SPEC §6), so a
 * deeper client pipeline measures that path too. */
#define LOAD_PIPELINE_MAX  1024
#define LOAD_THREADS_MAX   64
#define LOAD_REQ_MAX_BYTES 2048 /* one formatted request, signer headers included */
/* Requests one output buffer holds: 64 KiB, several TCP segments' worth. A deeper
 * pipeline refills the buffer after each complete send. */
#define LOAD_OUT_REQS 32
/* Received bytes per connection; a larger response is a protocol error (API answers
 * are < 1 KiB). Pipelined answers are taken off the front as they complete. */
#define LOAD_IN_BYTES           (16 * 1024)
#define LOAD_ID_MAX             64
#define LOAD_RECENT             256 /* payments and authorizations a thread remembers */
#define LOAD_RECONNECT_DELAY_NS (100 * 1000000ull)
#define LOAD_TICK_NS            (10 * 1000000ull) /* timeout and reconnect scan */
#define LOAD_KEYS_LIVE_MS       5000 /* a reloaded engine accepts new keys within this */
#define REQUESTS_CEILING_S      300
#define STATUS_MAX              600

_Static_assert(LOAD_PIPELINE_MAX <= UINT16_MAX, "fifo indexes fit the inflight fields");
_Static_assert(LOAD_PIPELINE_MAX >= CONN_PIPELINE_MAX, "the client can fill the engine");

enum scenario { SC_AUTHORIZE, SC_LIFECYCLE, SC_REPLAY, SC_HEALTHZ, SC_MIXED };
enum req_kind {
    K_AUTHORIZE,
    K_REPLAY,
    K_CAPTURE,
    K_VOID,
    K_REFUND,
    K_GET_PAYMENT,
    K_BALANCES,
    K_HEALTHZ,
    K_COUNT
};

/* SC_MIXED is the lifecycle scenario's old name, kept for the scripts that use it. */
static const char *const scenario_names[] = {"authorize", "lifecycle", "replay", "healthz",
                                             "mixed"};
static const char *const kind_names[K_COUNT] = {"authorize", "replay",      "capture",  "void",
                                                "refund",    "get_payment", "balances", "healthz"};

struct load_config {
    struct sockaddr_storage addr;
    socklen_t addr_len;
    const char *target;
    enum scenario scenario;
    unsigned connections, pipeline, threads, merchants, timeout_ms;
    uint64_t duration_ns; /* the run's end */
    uint64_t requests;    /* 0: by duration */
    uint64_t rate;        /* requests/s over all threads; 0: closed loop */
    bool json;
    uint64_t run_id;
    uint64_t seed;               /* of the threads' random generators */
    struct mix_config mix;       /* all zero but replay_pct outside lifecycle */
    const struct mix_zipf *zipf; /* NULL: merchants in turn (uniform) */
    loadstats_signer_fn signer;  /* NULL: unsigned (see the file comment) */
    void *signer_ctx;
};

struct load_counts {
    uint64_t status[STATUS_MAX];
    uint64_t responses, errors, timeouts, connect_errors, missed;
    uint64_t replayed; /* answers with Idempotent-Replayed: true */
    uint64_t kind_sent[K_COUNT], kind_answered[K_COUNT], kind_ok[K_COUNT];
};

struct inflight {
    uint64_t t0_ns;     /* latency origin: written (closed) or scheduled (open loop) */
    uint64_t sent_ns;   /* timeout origin */
    uint64_t seq;       /* authorize, replay: the number its key and body derive from */
    uint64_t amount;    /* authorize, capture, void, refund: the payment's amount */
    long merchant;      /* m-<i> of the request, -1: none */
    uint16_t refund_no; /* refund: which one (1 .. refunds_per_payment) */
    uint8_t kind;       /* enum req_kind */
};

struct followup {
    uint8_t kind;
    uint16_t refund_no;
    long merchant;
    uint64_t amount;
    char id[LOAD_ID_MAX]; /* the payment's id */
};

struct conn {
    int fd; /* -1: closed, reopened at reconnect_ns */
    bool connected;
    uint64_t reconnect_ns;
    char *out;
    size_t out_len, out_off, out_cap;
    char *in;
    size_t in_len;
    struct inflight *fifo; /* [pipeline] */
    unsigned head, count;
    struct followup *fq; /* [pipeline] */
    unsigned fq_head, fq_count;
};

struct recent_payment {
    long merchant;
    char id[LOAD_ID_MAX];
};

struct recent_auth {
    uint64_t seq;
    long merchant;
};

struct load_thread {
    const struct load_config *cfg;
    unsigned index;
    pthread_t tid;
    int epfd;
    struct conn *conns;
    unsigned nconns;
    uint64_t seq, turn;
    uint64_t start_ns, deadline_ns, stop_ns, end_ns, next_tick_ns;
    uint64_t next_sched_ns, interval_ns; /* open loop: slot k is at sched0 + k / rate */
    uint64_t sched0_ns, slot, per_thread_rate;
    unsigned rr;
    bool stopping;
    unsigned inflight;
    int result;
    struct mix_rng rng;
    /* Rings of what this thread's answered authorizations created: payments to GET,
     * requests to replay (their key is this thread's, so no other thread re-sends it). */
    struct recent_payment paid[LOAD_RECENT];
    struct recent_auth auths[LOAD_RECENT];
    unsigned paid_n, paid_next, auths_n, auths_next;
    struct load_counts counts;
    struct loadstats_hist hist;
};

static int64_t request_budget; /* --requests left to issue, shared by the threads */
static volatile sig_atomic_t stop_requested;
static unsigned threads_ready, threads_go; /* start line (atomics) */

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

/* ---- requests ---- */

/* Whether one more request may be issued; on the last one the thread starts stopping. */
static bool take_budget(struct load_thread *t)
{
    if (t->stopping)
        return false;
    if (t->cfg->requests == 0)
        return true;
    if (__atomic_sub_fetch(&request_budget, 1, __ATOMIC_RELAXED) >= 0)
        return true;
    return false;
}

/* The merchant of a new request: Zipf-distributed, or each in turn. */
static long pick_merchant(struct load_thread *t)
{
    const struct load_config *cfg = t->cfg;
    if (cfg->zipf)
        return (long)mix_zipf_sample(cfg->zipf, mix_rng_unit(&t->rng));
    return (long)((t->turn++ * cfg->threads + t->index) % cfg->merchants);
}

static void format_key(char *key, size_t cap, const struct load_thread *t, uint64_t seq)
{
    snprintf(key, cap, "ld%016llx-%u-%llu", (unsigned long long)t->cfg->run_id, t->index,
             (unsigned long long)seq);
}

/* An authorization's amount and reference derive from (thread, seq) alone, so a replay
 * rebuilds the very same body. */
static uint64_t authorize_amount(const struct load_thread *t, uint64_t seq)
{
    uint64_t global = seq * t->cfg->threads + t->index;
    return 1000 + (global * 7919) % 99000;
}

static size_t authorize_body(char *body, size_t cap, const struct load_thread *t, uint64_t seq,
                             long merchant)
{
    uint64_t global = seq * t->cfg->threads + t->index;
    int n = snprintf(body, cap,
                     "{\"merchant_id\":\"m-%ld\",\"amount\":%llu,\"currency\":\"KRW\","
                     "\"reference\":\"load-%llu\"}",
                     merchant, (unsigned long long)authorize_amount(t, seq),
                     (unsigned long long)global);
    ASSERT(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static const char *followup_verb(enum req_kind k)
{
    return k == K_CAPTURE ? "capture" : k == K_VOID ? "void" : "refund";
}

/* Fills req (and f's kind, merchant, seq, amount) for the connection's queued
 * follow-up. */
static void build_followup(struct load_thread *t, struct conn *c, struct loadstats_req *req,
                           struct inflight *f)
{
    const struct load_config *cfg = t->cfg;
    struct followup *q = &c->fq[c->fq_head];
    c->fq_head = (c->fq_head + 1) % cfg->pipeline;
    c->fq_count--;
    f->kind = q->kind;
    f->merchant = req->merchant = q->merchant;
    f->amount = q->amount;
    f->refund_no = q->refund_no;
    char *target = (char *)req->target, *body = (char *)req->body;
    snprintf(target, 128, "/v1/payments/%s/%s", q->id, followup_verb(q->kind));
    uint64_t amount =
        q->kind == K_REFUND ? mix_refund_amount(&cfg->mix, q->amount, q->refund_no) : 0;
    int n = amount ? snprintf(body, 256, "{\"amount\":%llu}", (unsigned long long)amount)
                   : snprintf(body, 256, "{}");
    req->body_len = (size_t)n;
}

/* Fills req and f for a new request of the scenario's mix. */
static void build_root(struct load_thread *t, struct loadstats_req *req, struct inflight *f,
                       uint64_t seq)
{
    const struct load_config *cfg = t->cfg;
    char *target = (char *)req->target, *body = (char *)req->body;
    if (cfg->scenario == SC_HEALTHZ) {
        f->kind = K_HEALTHZ;
        *req = (struct loadstats_req){
            .method = "GET", .target = "/healthz", .host = cfg->target, .merchant = -1};
        return;
    }
    enum mix_root root = mix_next_root(&cfg->mix, &t->rng, t->paid_n > 0, t->auths_n > 0);
    if (root == MIX_ROOT_GET_PAYMENT || root == MIX_ROOT_BALANCES) {
        req->method = "GET";
        req->idempotency_key = NULL;
        req->body = NULL;
        req->body_len = 0;
        if (root == MIX_ROOT_GET_PAYMENT) {
            const struct recent_payment *p = &t->paid[mix_rng_below(&t->rng, t->paid_n)];
            f->kind = K_GET_PAYMENT;
            f->merchant = p->merchant;
            snprintf(target, 128, "/v1/payments/%s", p->id);
        } else {
            f->kind = K_BALANCES;
            f->merchant = pick_merchant(t);
            snprintf(target, 128, "/v1/merchants/m-%ld/balances", f->merchant);
        }
        req->merchant = f->merchant;
        return;
    }
    if (root == MIX_ROOT_REPLAY) {
        const struct recent_auth *a = &t->auths[mix_rng_below(&t->rng, t->auths_n)];
        f->kind = K_REPLAY;
        f->seq = a->seq;
        f->merchant = a->merchant;
        format_key((char *)req->idempotency_key, 80, t, a->seq);
    } else {
        f->kind = K_AUTHORIZE;
        f->seq = seq;
        f->merchant = pick_merchant(t);
    }
    f->amount = authorize_amount(t, f->seq);
    req->merchant = f->merchant;
    snprintf(target, 128, "/v1/payments/authorize");
    req->body_len = authorize_body(body, 256, t, f->seq, f->merchant);
}

/* Formats the connection's next request (a follow-up first) into its output buffer and
 * describes it in *f. 0, or -1 when the signer refused it. */
static int build_request(struct load_thread *t, struct conn *c, struct inflight *f)
{
    const struct load_config *cfg = t->cfg;
    char target[128], body[256], key[80];
    struct loadstats_req req = {.method = "POST",
                                .target = target,
                                .host = cfg->target,
                                .idempotency_key = key,
                                .body = body,
                                .merchant = -1};
    uint64_t seq = t->seq++;
    format_key(key, sizeof(key), t, seq);
    f->merchant = -1;
    f->seq = f->amount = 0;
    f->refund_no = 0;
    if (c->fq_count > 0)
        build_followup(t, c, &req, f);
    else
        build_root(t, &req, f, seq);
    ASSERT(c->out_cap - c->out_len >= LOAD_REQ_MAX_BYTES);
    int n = loadstats_req_format(c->out + c->out_len, LOAD_REQ_MAX_BYTES, &req, cfg->signer,
                                 cfg->signer_ctx);
    if (n < 0)
        return -1;
    c->out_len += (size_t)n;
    return 0;
}

/* Whether c can take one more request now: a free slot and room to format it. */
static bool conn_has_room(const struct load_thread *t, const struct conn *c)
{
    return c->connected && c->count < t->cfg->pipeline &&
           c->out_cap - c->out_len >= LOAD_REQ_MAX_BYTES;
}

/* Appends one request to c with latency origin t0; the caller flushes. false: the
 * signer refused it (counted as an error, never sent). */
static bool queue_request(struct load_thread *t, struct conn *c, uint64_t t0, uint64_t now)
{
    ASSERT(conn_has_room(t, c));
    struct inflight *f = &c->fifo[(c->head + c->count) % t->cfg->pipeline];
    if (build_request(t, c, f) != 0) {
        t->counts.errors++;
        return false;
    }
    f->t0_ns = t0;
    f->sent_ns = now;
    t->counts.kind_sent[f->kind]++;
    c->count++;
    t->inflight++;
    ASSERT(c->count + c->fq_count <= t->cfg->pipeline);
    return true;
}

/* ---- connections ---- */

static void conn_close(struct load_thread *t, struct conn *c, uint64_t *lost, uint64_t delay_ns,
                       uint64_t now)
{
    if (c->fd >= 0)
        close(c->fd); /* also removes it from the epoll set */
    *lost += c->count;
    t->inflight -= c->count;
    c->fd = -1;
    c->connected = false;
    c->head = c->count = 0;
    c->out_len = c->out_off = c->in_len = 0;
    c->reconnect_ns = now + delay_ns;
}

static int conn_open(struct load_thread *t, struct conn *c)
{
    const struct load_config *cfg = t->cfg;
    int fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    if (connect(fd, (const struct sockaddr *)&cfg->addr, cfg->addr_len) != 0 &&
        errno != EINPROGRESS) {
        int err = -errno;
        close(fd);
        return err;
    }
    struct epoll_event ev = {.events = EPOLLIN | EPOLLOUT | EPOLLRDHUP | EPOLLET, .data.ptr = c};
    if (epoll_ctl(t->epfd, EPOLL_CTL_ADD, fd, &ev) != 0) {
        int err = -errno;
        close(fd);
        return err;
    }
    c->fd = fd;
    c->connected = false;
    return 0;
}

/* Writes what is buffered; 0, or -1 when the connection failed. */
static int conn_flush(struct conn *c)
{
    while (c->out_off < c->out_len) {
        ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno == EAGAIN ? 0 : -1;
        }
        c->out_off += (size_t)n;
    }
    c->out_len = c->out_off = 0;
    return 0;
}

/* Closed loop: fill every free slot of c, writing whenever the output buffer is full,
 * until the slots, the budget or the socket's room run out. */
static int conn_fill(struct load_thread *t, struct conn *c, uint64_t now)
{
    if (t->cfg->rate != 0)
        return conn_flush(c);
    for (;;) {
        unsigned queued = 0;
        while (conn_has_room(t, c) && take_budget(t) && queue_request(t, c, now, now))
            queued++;
        if (conn_flush(c) != 0)
            return -1;
        /* Everything written and still a free slot (a pipeline deeper than the buffer):
         * go on; otherwise the next answer or EPOLLOUT brings us back. */
        if (queued == 0 || c->out_len != 0 || !conn_has_room(t, c))
            return 0;
    }
}

/* Remembers what a fresh authorization created, for GETs and replays. */
static void remember(struct load_thread *t, const struct inflight *f, const char *id)
{
    t->auths[t->auths_next] = (struct recent_auth){.seq = f->seq, .merchant = f->merchant};
    t->auths_next = (t->auths_next + 1) % LOAD_RECENT;
    if (t->auths_n < LOAD_RECENT)
        t->auths_n++;
    if (id == NULL || t->cfg->mix.get_pct == 0)
        return;
    struct recent_payment *p = &t->paid[t->paid_next];
    p->merchant = f->merchant;
    snprintf(p->id, sizeof(p->id), "%s", id);
    t->paid_next = (t->paid_next + 1) % LOAD_RECENT;
    if (t->paid_n < LOAD_RECENT)
        t->paid_n++;
}

static void queue_followup(struct load_thread *t, struct conn *c, enum req_kind kind,
                           const struct inflight *answered, unsigned refund_no, const char *id)
{
    ASSERT(c->count + c->fq_count < t->cfg->pipeline); /* it replaces `answered` */
    struct followup *q = &c->fq[(c->fq_head + c->fq_count) % t->cfg->pipeline];
    *q = (struct followup){.kind = (uint8_t)kind,
                           .refund_no = (uint16_t)refund_no,
                           .merchant = answered->merchant,
                           .amount = answered->amount};
    snprintf(q->id, sizeof(q->id), "%s", id);
    c->fq_count++;
}

/* What an answer calls for: counts, the rings, and the lifecycle's follow-up. */
static void on_answer(struct load_thread *t, struct conn *c, const struct inflight *f,
                      const struct loadstats_resp *r, const char *buf)
{
    const struct load_config *cfg = t->cfg;
    bool ok = r->status >= 200 && r->status < 300;
    t->counts.kind_answered[f->kind]++;
    t->counts.kind_ok[f->kind] += ok;
    t->counts.replayed += r->replayed;
    if (!ok || r->replayed)
        return;
    bool lifecycle = cfg->scenario == SC_LIFECYCLE || cfg->scenario == SC_MIXED;
    char id[LOAD_ID_MAX];
    const char *body = buf + r->body_off;
    if (f->kind == K_AUTHORIZE) {
        bool need_id = lifecycle;
        bool have_id =
            need_id && loadstats_json_string(body, r->body_len, "id", id, sizeof(id)) > 0;
        remember(t, f, have_id ? id : NULL);
        if (!have_id)
            return;
        enum mix_next next = mix_after_authorize(&cfg->mix, &t->rng);
        if (next != MIX_NEXT_NONE)
            queue_followup(t, c, next == MIX_NEXT_CAPTURE ? K_CAPTURE : K_VOID, f, 0, id);
    } else if (f->kind == K_CAPTURE && lifecycle) {
        if (mix_after_capture(&cfg->mix, &t->rng) == MIX_NEXT_REFUND &&
            loadstats_json_string(body, r->body_len, "id", id, sizeof(id)) > 0)
            queue_followup(t, c, K_REFUND, f, 1, id);
    } else if (f->kind == K_REFUND && f->refund_no < cfg->mix.refunds_per_payment) {
        if (loadstats_json_string(body, r->body_len, "payment_id", id, sizeof(id)) > 0)
            queue_followup(t, c, K_REFUND, f, f->refund_no + 1u, id);
    }
}

/* Takes every complete response off the front of c->in. -1: protocol error, 1: the
 * server asked to close, 0: fine. */
static int conn_consume(struct load_thread *t, struct conn *c, uint64_t now)
{
    size_t off = 0;
    int rc = 0;
    while (rc == 0 && off < c->in_len) {
        struct loadstats_resp r;
        int p = loadstats_resp_parse(c->in + off, c->in_len - off, &r);
        if (p == 0)
            break;
        if (p < 0 || c->count == 0) { /* garbage, or an answer nobody asked for */
            rc = -1;
            break;
        }
        struct inflight f = c->fifo[c->head];
        c->head = (c->head + 1) % t->cfg->pipeline;
        c->count--;
        t->inflight--;
        t->counts.responses++;
        t->counts.status[r.status]++;
        loadstats_hist_record(&t->hist, now > f.t0_ns ? (now - f.t0_ns) / 1000 : 0);
        on_answer(t, c, &f, &r, c->in + off);
        off += r.total_len;
        if (r.close)
            rc = 1;
    }
    memmove(c->in, c->in + off, c->in_len - off);
    c->in_len -= off;
    if (rc == 0 && c->in_len == LOAD_IN_BYTES)
        rc = -1; /* a response larger than the buffer */
    return rc;
}

/* Reads until EAGAIN. Returns 0, or -1 (error: in-flight lost), 1 (clean close). */
static int conn_read(struct load_thread *t, struct conn *c, uint64_t now)
{
    for (;;) {
        ssize_t n = recv(c->fd, c->in + c->in_len, LOAD_IN_BYTES - c->in_len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return errno == EAGAIN ? 0 : -1;
        if (n == 0)
            return c->count == 0 ? 1 : -1;
        c->in_len += (size_t)n;
        int rc = conn_consume(t, c, now);
        if (rc != 0)
            return rc;
    }
}

static void conn_event(struct load_thread *t, struct conn *c, uint32_t events, uint64_t now)
{
    if (!c->connected) {
        int err = 0;
        socklen_t len = sizeof(err);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0 || err != 0 ||
            (events & (EPOLLERR | EPOLLHUP))) {
            t->counts.connect_errors++;
            conn_close(t, c, &t->counts.errors, LOAD_RECONNECT_DELAY_NS, now);
            return;
        }
        if (!(events & EPOLLOUT))
            return;
        c->connected = true;
    }
    int rc = 0;
    if (events & (EPOLLIN | EPOLLRDHUP | EPOLLERR | EPOLLHUP))
        rc = conn_read(t, c, now);
    if (rc == 0 && conn_fill(t, c, now) != 0)
        rc = -1;
    if (rc < 0)
        conn_close(t, c, &t->counts.errors, LOAD_RECONNECT_DELAY_NS, now);
    else if (rc > 0)
        conn_close(t, c, &t->counts.errors, 0, now);
}

/* ---- the loop ---- */

/* Open loop: send every slot due by `due` on a connection with room. */
static void open_issue(struct load_thread *t, uint64_t due, uint64_t now)
{
    while (!t->stopping && t->next_sched_ns <= due) {
        struct conn *c = NULL;
        for (unsigned i = 0; i < t->nconns && c == NULL; i++) {
            struct conn *x = &t->conns[(t->rr + i) % t->nconns];
            if (conn_has_room(t, x))
                c = x;
        }
        if (c == NULL)
            return; /* all busy: the slot waits, and its wait counts as latency */
        t->rr = (unsigned)(c - t->conns + 1) % t->nconns;
        if (!take_budget(t))
            return;
        queue_request(t, c, t->next_sched_ns, now);
        t->slot++; /* exact, not a sum of rounded intervals */
        t->next_sched_ns = t->sched0_ns + t->slot * 1000000000ull / t->per_thread_rate;
        if (conn_flush(c) != 0)
            conn_close(t, c, &t->counts.errors, LOAD_RECONNECT_DELAY_NS, now);
    }
}

/* Every LOAD_TICK_NS: time out stuck connections, reopen closed ones. */
static void tick(struct load_thread *t, uint64_t now)
{
    uint64_t timeout_ns = (uint64_t)t->cfg->timeout_ms * 1000000ull;
    for (unsigned i = 0; i < t->nconns; i++) {
        struct conn *c = &t->conns[i];
        if (c->fd >= 0 && c->count > 0 && now - c->fifo[c->head].sent_ns > timeout_ns)
            conn_close(t, c, &t->counts.timeouts, 0, now);
        else if (c->fd >= 0 && !c->connected && now - c->reconnect_ns > timeout_ns) {
            t->counts.connect_errors++;
            conn_close(t, c, &t->counts.errors, LOAD_RECONNECT_DELAY_NS, now);
        }
        if (c->fd < 0 && !t->stopping && now >= c->reconnect_ns) {
            c->reconnect_ns = now; /* connect start, for the connect timeout */
            if (conn_open(t, c) != 0) {
                t->counts.connect_errors++;
                c->reconnect_ns = now + LOAD_RECONNECT_DELAY_NS;
            }
        }
    }
    t->next_tick_ns = now + LOAD_TICK_NS;
}

/* Slots scheduled before the deadline are still sent if a connection has room; the
 * rest are "missed": the server was too slow to take them. */
static void begin_stop(struct load_thread *t, uint64_t now)
{
    if (t->cfg->rate && now >= t->deadline_ns && !stop_requested) {
        uint64_t last = t->deadline_ns - 1;
        open_issue(t, last, now);
        /* Slots k with sched0 + floor(k * 1e9 / rate) <= last: ceil((d + 1) * rate / 1e9). */
        unsigned __int128 due = (unsigned __int128)(last - t->sched0_ns + 1) * t->per_thread_rate;
        uint64_t slots = (uint64_t)((due + 999999999u) / 1000000000u);
        if (slots > t->slot)
            t->counts.missed += slots - t->slot;
    }
    t->stopping = true;
    t->stop_ns = now;
}

static uint64_t wait_ns(const struct load_thread *t, uint64_t now)
{
    uint64_t until = t->next_tick_ns;
    if (!t->stopping && t->deadline_ns < until)
        until = t->deadline_ns;
    if (!t->stopping && t->cfg->rate && t->next_sched_ns < until)
        until = t->next_sched_ns;
    return until > now ? until - now : 0;
}

static void run_loop(struct load_thread *t)
{
    struct epoll_event events[256];
    for (;;) {
        uint64_t now = now_ns();
        if (!t->stopping &&
            (now >= t->deadline_ns || stop_requested ||
             (t->cfg->requests && __atomic_load_n(&request_budget, __ATOMIC_RELAXED) <= 0)))
            begin_stop(t, now);
        if (t->stopping && t->inflight == 0)
            break;
        if (now >= t->next_tick_ns)
            tick(t, now);
        if (t->cfg->rate)
            open_issue(t, now, now);
        uint64_t w = wait_ns(t, now);
        struct timespec ts = {.tv_sec = (time_t)(w / 1000000000ull),
                              .tv_nsec = (long)(w % 1000000000ull)};
        int n = epoll_pwait2(t->epfd, events, ARRAY_LEN(events), &ts, NULL);
        if (n < 0 && errno != EINTR) {
            t->result = -errno;
            break;
        }
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->fd >= 0) /* a fresh clock per event: latency excludes the batch */
                conn_event(t, c, events[i].events, now_ns());
        }
    }
    t->end_ns = now_ns();
}

/* Opens every connection and waits (up to the timeout) until they are established, so
 * that connecting is not measured. Nothing is sent: the thread counts as stopping. */
static void connect_all(struct load_thread *t)
{
    uint64_t now = now_ns();
    uint64_t until = now + (uint64_t)t->cfg->timeout_ms * 1000000ull;
    for (unsigned i = 0; i < t->nconns; i++)
        t->conns[i].reconnect_ns = now;
    tick(t, now);
    t->stopping = true;
    struct epoll_event events[256];
    for (;;) {
        unsigned up = 0;
        for (unsigned i = 0; i < t->nconns; i++)
            up += t->conns[i].connected || t->conns[i].fd < 0;
        now = now_ns();
        if (up == t->nconns || now >= until)
            return;
        int n = epoll_wait(t->epfd, events, ARRAY_LEN(events), 10);
        now = now_ns();
        for (int i = 0; i < n; i++) {
            struct conn *c = events[i].data.ptr;
            if (c->fd >= 0)
                conn_event(t, c, events[i].events, now);
        }
    }
}

static void *thread_main(void *arg)
{
    struct load_thread *t = arg;
    const struct load_config *cfg = t->cfg;
    prctl(PR_SET_TIMERSLACK, 1000UL); /* 1 us: open-loop sends on time */
    mix_rng_seed(&t->rng, cfg->seed ^ ((uint64_t)t->index * 0xd1342543de82ef95ull));
    connect_all(t);
    __atomic_add_fetch(&threads_ready, 1, __ATOMIC_RELEASE);
    while (!__atomic_load_n(&threads_go, __ATOMIC_ACQUIRE)) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    t->start_ns = now_ns();
    t->stopping = false;
    for (unsigned i = 0; i < t->nconns; i++)
        if (t->conns[i].connected && conn_fill(t, &t->conns[i], t->start_ns) != 0)
            conn_close(t, &t->conns[i], &t->counts.errors, LOAD_RECONNECT_DELAY_NS, t->start_ns);
    t->deadline_ns = t->start_ns + cfg->duration_ns;
    if (cfg->rate) {
        t->per_thread_rate = cfg->rate / cfg->threads + (t->index < cfg->rate % cfg->threads);
        ASSERT(t->per_thread_rate > 0); /* check_config: rate >= threads */
        t->interval_ns = 1000000000ull / t->per_thread_rate;
        /* Spread the threads' schedules over one interval. */
        t->sched0_ns = t->start_ns + t->interval_ns * t->index / cfg->threads;
        t->next_sched_ns = t->sched0_ns;
    }
    run_loop(t);
    return NULL;
}

/* ---- set-up and report ---- */

static bool is_loopback(const struct sockaddr_storage *a)
{
    if (a->ss_family == AF_INET) {
        const struct sockaddr_in *a4 = (const struct sockaddr_in *)a;
        return (ntohl(a4->sin_addr.s_addr) >> 24) == 127;
    }
    const struct sockaddr_in6 *a6 = (const struct sockaddr_in6 *)a;
    if (IN6_IS_ADDR_LOOPBACK(&a6->sin6_addr))
        return true;
    return IN6_IS_ADDR_V4MAPPED(&a6->sin6_addr) && a6->sin6_addr.s6_addr[12] == 127;
}

/* One blocking connect, so a dead target fails at once with one clear line. */
static int probe_target(const struct load_config *cfg)
{
    int fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    int rc = connect(fd, (const struct sockaddr *)&cfg->addr, cfg->addr_len) == 0 ? 0 : -errno;
    close(fd);
    return rc;
}

static void thread_free(struct load_thread *t)
{
    for (unsigned i = 0; i < t->nconns && t->conns; i++) {
        if (t->conns[i].fd >= 0)
            close(t->conns[i].fd);
        free(t->conns[i].fifo); /* one block: fifo, fq, out, in */
    }
    free(t->conns);
    if (t->epfd >= 0)
        close(t->epfd);
}

/* One allocation per connection, sized by the pipeline depth asked for. */
static int conn_alloc(struct conn *c, unsigned pipeline)
{
    size_t out_reqs = pipeline < LOAD_OUT_REQS ? pipeline : LOAD_OUT_REQS;
    size_t fifo = (size_t)pipeline * sizeof(*c->fifo), fq = (size_t)pipeline * sizeof(*c->fq);
    c->fd = -1;
    c->out_cap = out_reqs * LOAD_REQ_MAX_BYTES;
    char *block = malloc(fifo + fq + c->out_cap + LOAD_IN_BYTES);
    if (block == NULL)
        return -ENOMEM;
    c->fifo = (struct inflight *)block;
    c->fq = (struct followup *)(block + fifo);
    c->out = block + fifo + fq;
    c->in = c->out + c->out_cap;
    _Static_assert(sizeof(struct inflight) % _Alignof(struct followup) == 0, "fq is aligned");
    return 0;
}

static int thread_init(struct load_thread *t, const struct load_config *cfg, unsigned index)
{
    memset(t, 0, sizeof(*t));
    t->cfg = cfg;
    t->index = index;
    t->nconns = cfg->connections / cfg->threads + (index < cfg->connections % cfg->threads);
    loadstats_hist_init(&t->hist);
    t->epfd = epoll_create1(EPOLL_CLOEXEC);
    t->conns = calloc(t->nconns, sizeof(*t->conns));
    if (t->epfd < 0 || t->conns == NULL)
        return -ENOMEM;
    for (unsigned i = 0; i < t->nconns; i++)
        if (conn_alloc(&t->conns[i], cfg->pipeline) != 0)
            return -ENOMEM;
    return 0;
}

struct load_result {
    struct load_counts counts;
    struct loadstats_hist hist;
    double elapsed_s;
};

static void merge_counts(struct load_counts *dst, const struct load_counts *c)
{
    for (unsigned s = 0; s < STATUS_MAX; s++)
        dst->status[s] += c->status[s];
    for (unsigned k = 0; k < K_COUNT; k++) {
        dst->kind_sent[k] += c->kind_sent[k];
        dst->kind_answered[k] += c->kind_answered[k];
        dst->kind_ok[k] += c->kind_ok[k];
    }
    dst->responses += c->responses;
    dst->errors += c->errors;
    dst->timeouts += c->timeouts;
    dst->connect_errors += c->connect_errors;
    dst->missed += c->missed;
    dst->replayed += c->replayed;
}

static void merge_results(struct load_thread *ts, unsigned n, struct load_result *r)
{
    memset(&r->counts, 0, sizeof(r->counts));
    loadstats_hist_init(&r->hist);
    uint64_t start = UINT64_MAX, end = 0;
    for (unsigned i = 0; i < n; i++) {
        merge_counts(&r->counts, &ts[i].counts);
        loadstats_hist_merge(&r->hist, &ts[i].hist);
        start = ts[i].start_ns < start ? ts[i].start_ns : start;
        end = ts[i].end_ns > end ? ts[i].end_ns : end;
    }
    r->elapsed_s = end > start ? (double)(end - start) / 1e9 : 0.0;
}

static uint64_t status_class(const struct load_counts *c, unsigned cls)
{
    uint64_t n = 0;
    for (unsigned s = cls * 100; s < cls * 100 + 100; s++)
        n += c->status[s];
    return n;
}

static const char *scenario_name(const struct load_config *cfg)
{
    return scenario_names[cfg->scenario == SC_MIXED ? SC_LIFECYCLE : cfg->scenario];
}

static void print_json(const struct load_config *cfg, const struct load_result *r)
{
    const struct load_counts *c = &r->counts;
    printf("{\"scenario\":\"%s\",\"target\":\"%s\",\"connections\":%u,\"pipeline\":%u,"
           "\"threads\":%u,\"rate\":%llu,\"merchants\":%u,\"zipf\":%g,\"seed\":%llu,"
           "\"duration_s\":%.3f,\"requests\":%llu,\"ok\":%llu,"
           "\"errors\":%llu,\"timeouts\":%llu,\"connect_errors\":%llu,\"missed\":%llu,"
           "\"replayed\":%llu,\"signed\":%s,\"status\":{",
           scenario_name(cfg), cfg->target, cfg->connections, cfg->pipeline, cfg->threads,
           (unsigned long long)cfg->rate, cfg->merchants, cfg->zipf ? cfg->zipf->s : 0.0,
           (unsigned long long)cfg->seed, r->elapsed_s,
           (unsigned long long)(c->responses + c->errors + c->timeouts),
           (unsigned long long)status_class(c, 2), (unsigned long long)(c->errors + c->timeouts),
           (unsigned long long)c->timeouts, (unsigned long long)c->connect_errors,
           (unsigned long long)c->missed, (unsigned long long)c->replayed,
           cfg->signer ? "true" : "false");
    const char *sep = "";
    for (unsigned s = 0; s < STATUS_MAX; s++)
        if (c->status[s]) {
            printf("%s\"%u\":%llu", sep, s, (unsigned long long)c->status[s]);
            sep = ",";
        }
    printf("},\"kinds\":{");
    sep = "";
    for (unsigned k = 0; k < K_COUNT; k++)
        if (c->kind_sent[k]) {
            printf("%s\"%s\":{\"sent\":%llu,\"answered\":%llu,\"ok\":%llu}", sep, kind_names[k],
                   (unsigned long long)c->kind_sent[k], (unsigned long long)c->kind_answered[k],
                   (unsigned long long)c->kind_ok[k]);
            sep = ",";
        }
    const struct loadstats_hist *h = &r->hist;
    printf("},\"rps\":%.1f,\"latency_us\":{\"p50\":%llu,\"p90\":%llu,\"p99\":%llu,"
           "\"p999\":%llu,\"max\":%llu,\"mean\":%llu}}\n",
           r->elapsed_s > 0 ? (double)c->responses / r->elapsed_s : 0.0,
           (unsigned long long)loadstats_hist_percentile(h, 0.50),
           (unsigned long long)loadstats_hist_percentile(h, 0.90),
           (unsigned long long)loadstats_hist_percentile(h, 0.99),
           (unsigned long long)loadstats_hist_percentile(h, 0.999), (unsigned long long)h->max_us,
           (unsigned long long)(h->count ? h->sum_us / h->count : 0));
}

static void print_human(const struct load_config *cfg, const struct load_result *r)
{
    const struct load_counts *c = &r->counts;
    const struct loadstats_hist *h = &r->hist;
    char loop[48] = "closed loop";
    if (cfg->rate)
        snprintf(loop, sizeof(loop), "open loop at %llu req/s", (unsigned long long)cfg->rate);
    printf("ringpay load: %s against %s (%s requests)\n", scenario_name(cfg), cfg->target,
           cfg->signer ? "signed" : "unsigned");
    printf("  %u connections, pipeline %u, %u thread%s, %s, %.2f s\n", cfg->connections,
           cfg->pipeline, cfg->threads, cfg->threads == 1 ? "" : "s", loop, r->elapsed_s);
    printf("  responses  %llu  (%.1f req/s)\n", (unsigned long long)c->responses,
           r->elapsed_s > 0 ? (double)c->responses / r->elapsed_s : 0.0);
    printf("  2xx %llu   4xx %llu   5xx %llu   other %llu   replayed %llu\n",
           (unsigned long long)status_class(c, 2), (unsigned long long)status_class(c, 4),
           (unsigned long long)status_class(c, 5),
           (unsigned long long)(status_class(c, 1) + status_class(c, 3)),
           (unsigned long long)c->replayed);
    for (unsigned k = 0; k < K_COUNT; k++)
        if (c->kind_sent[k])
            printf("  %-12s sent %llu   answered %llu   2xx %llu\n", kind_names[k],
                   (unsigned long long)c->kind_sent[k], (unsigned long long)c->kind_answered[k],
                   (unsigned long long)c->kind_ok[k]);
    printf("  errors %llu   timeouts %llu   connect errors %llu   missed (open loop) %llu\n",
           (unsigned long long)c->errors, (unsigned long long)c->timeouts,
           (unsigned long long)c->connect_errors, (unsigned long long)c->missed);
    printf("  latency us   p50 %llu   p90 %llu   p99 %llu   p99.9 %llu   max %llu   mean %llu"
           "   (each percentile at most %.2f%% above the true value)\n",
           (unsigned long long)loadstats_hist_percentile(h, 0.50),
           (unsigned long long)loadstats_hist_percentile(h, 0.90),
           (unsigned long long)loadstats_hist_percentile(h, 0.99),
           (unsigned long long)loadstats_hist_percentile(h, 0.999), (unsigned long long)h->max_us,
           (unsigned long long)(h->count ? h->sum_us / h->count : 0), 100.0 / LOADSTATS_HIST_SUB);
}

static void on_sigint(int sig)
{
    (void)sig;
    stop_requested = 1;
}

/* Runs the threads and merges their results into *out; 0, or -1 after one line. */
static int run(const struct load_config *cfg, struct load_result *out)
{
    static struct load_thread threads[LOAD_THREADS_MAX];
    int code = 0;
    unsigned started = 0, inited = 0;
    request_budget = (int64_t)cfg->requests;
    __atomic_store_n(&threads_ready, 0, __ATOMIC_RELAXED);
    __atomic_store_n(&threads_go, 0, __ATOMIC_RELAXED);
    for (; inited < cfg->threads; inited++)
        if (thread_init(&threads[inited], cfg, inited) != 0) {
            fprintf(stderr, "ringpay: out of memory for %u connections\n", cfg->connections);
            inited++;
            code = -1;
            goto out_free;
        }
    for (; started < cfg->threads; started++)
        if (pthread_create(&threads[started].tid, NULL, thread_main, &threads[started]) != 0) {
            fprintf(stderr, "ringpay: cannot start load thread %u\n", started);
            stop_requested = 1; /* the started ones end at once */
            code = -1;
            break;
        }
    /* Start together once every thread has opened its connections. */
    while (code == 0 && __atomic_load_n(&threads_ready, __ATOMIC_ACQUIRE) < cfg->threads) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    __atomic_store_n(&threads_go, 1, __ATOMIC_RELEASE);
    for (unsigned i = 0; i < started; i++) {
        pthread_join(threads[i].tid, NULL);
        if (threads[i].result != 0) {
            fprintf(stderr, "ringpay: load thread %u: %s\n", i, strerror(-threads[i].result));
            code = -1;
        }
    }
    if (code == 0)
        merge_results(threads, cfg->threads, out);
out_free:
    for (unsigned i = 0; i < inited; i++)
        thread_free(&threads[i]);
    return code;
}

/* ---- keys ---- */

/* One signed GET /v1/merchants/m-<merchant>/balances on a fresh blocking connection:
 * its status, or -errno. */
static int probe_signed(const struct load_config *cfg, long merchant)
{
    int fd = socket(cfg->addr.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct timeval tv = {.tv_sec = 1};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
    char target[64], buf[LOAD_IN_BYTES];
    snprintf(target, sizeof(target), "/v1/merchants/m-%ld/balances", merchant);
    struct loadstats_req req = {
        .method = "GET", .target = target, .host = cfg->target, .merchant = merchant};
    int n = loadstats_req_format(buf, sizeof(buf), &req, cfg->signer, cfg->signer_ctx);
    int rc = -EIO;
    if (n < 0 || connect(fd, (const struct sockaddr *)&cfg->addr, cfg->addr_len) != 0 ||
        send(fd, buf, (size_t)n, MSG_NOSIGNAL) != n)
        goto out_close;
    size_t len = 0;
    struct loadstats_resp r;
    while (len < sizeof(buf)) {
        ssize_t got = recv(fd, buf + len, sizeof(buf) - len, 0);
        if (got <= 0)
            break;
        len += (size_t)got;
        int p = loadstats_resp_parse(buf, len, &r);
        if (p != 0) {
            rc = p > 0 ? (int)r.status : p;
            break;
        }
    }
out_close:
    close(fd);
    return rc;
}

/* After a reload: waits until the engine accepts merchant's new key (a signed GET is
 * not 401), at most LOAD_KEYS_LIVE_MS. 0, or -1 after one line. */
static int wait_keys_live(const struct load_config *cfg, long merchant)
{
    uint64_t until = now_ns() + LOAD_KEYS_LIVE_MS * 1000000ull;
    for (;;) {
        int status = probe_signed(cfg, merchant);
        if (status > 0 && status != 401)
            return 0;
        if (now_ns() >= until) {
            fprintf(stderr,
                    "ringpay: the engine at %s did not accept the new keys within %d ms "
                    "(last answer %d)\n",
                    cfg->target, LOAD_KEYS_LIVE_MS, status);
            return -1;
        }
        struct timespec ms = {0, 50 * 1000000};
        nanosleep(&ms, NULL);
    }
}

/* --keys-data DIR [--keys FILE]: makes or reuses the keys, tells a running engine to
 * reload, and reads them. --keys alone: reads them. 0, or an exit code after one line. */
static int setup_keys(struct load_config *cfg, const char *data_dir, const char *file,
                      struct load_keys **keys)
{
    char why[512], path[4096];
    unsigned created = 0;
    long probe = -1;
    if (data_dir != NULL) {
        if (file == NULL) {
            snprintf(path, sizeof(path), "%s/%s", data_dir, LOAD_KEYS_FILE);
            file = path;
        }
        if (load_keys_provision(data_dir, file, cfg->merchants, &created, &probe, why,
                                sizeof(why)) != 0) {
            fprintf(stderr, "ringpay: %s\n", why);
            return 1;
        }
    }
    if (load_keys_read(file, cfg->merchants, keys, why, sizeof(why)) != 0) {
        fprintf(stderr, "ringpay: %s\n", why);
        return 2;
    }
    cfg->signer = load_keys_sign;
    cfg->signer_ctx = *keys;
    if (created == 0)
        return 0;
    long pid = 0;
    int rc = load_keys_reload(data_dir, &pid, why, sizeof(why));
    if (rc < 0) {
        fprintf(stderr, "ringpay: %s\n", why);
        return 1;
    }
    if (rc == 0)
        return 0; /* no engine runs there yet: it reads the keys when it starts */
    return wait_keys_live(cfg, probe) == 0 ? 0 : 1; /* a merchant whose key is new */
}

/* ---- flags ---- */

static const char load_usage[] =
    "usage: ringpay load [options]\n\n"
    "Sends API requests to a ringpay engine over keep-alive connections and prints\n"
    "throughput, status counts and latency percentiles (p50/p90/p99/p99.9/max, each at\n"
    "most 0.78% above the true value), then a JSON summary line (--json: only that line).\n\n"
    "Scenarios:\n"
    "  authorize  POST /v1/payments/authorize, a fresh Idempotency-Key each, KRW,\n"
    "             varying amounts\n"
    "  lifecycle  new requests: --get-pct GETs of a payment this run created,\n"
    "             --balances-pct GETs of a merchant's balances, the rest authorizations;\n"
    "             after each authorization: capture (--capture-pct), void (--void-pct) or\n"
    "             nothing; after a capture, with --refund-pct, --refunds-per-payment\n"
    "             refunds one after the other (each amount/N, the last one the rest).\n"
    "             `mixed` is an old name of it\n"
    "  replay     authorize, and --replay-pct of the authorizations (default 50) re-send\n"
    "             an earlier answered one, same key and body: the engine replays its\n"
    "             answer with Idempotent-Replayed: true (counted as \"replayed\")\n"
    "  healthz    GET /healthz\n"
    "Merchants m-0..m-(M-1) in turn, or with --zipf S Zipf-distributed (m-k with weight\n"
    "(k+1)^-S: m-0 the hottest; 0 = uniform).\n"
    "Closed loop by default; --rate R is an open loop: R requests/s at fixed intervals,\n"
    "latency measured from each request's scheduled time (no coordinated omission).\n\n"
    "Signing (SPEC 3): with --keys FILE, the JSON lines `ringpay keys add` printed with\n"
    "one merchant key for each of m-0..m-(M-1), every request is signed with its\n"
    "merchant's key. With --keys-data DIR (the engine's data directory) the load makes\n"
    "the keys itself: it keeps their secrets in DIR/load.keys (or --keys FILE; mode 0600)\n"
    "and reuses those still active in DIR/keys, adds a key to DIR/keys (as `ringpay keys\n"
    "add` does) for each merchant without one, and when it added any and an engine runs\n"
    "on DIR (the pid in DIR/LOCK), sends it SIGHUP and waits until it accepts them.\n"
    "Without either, requests are unsigned (for an engine with --auth off).\n"
    "Only loopback targets are allowed unless --allow-remote.";

enum {
    O_TARGET,
    O_CONNS,
    O_DURATION,
    O_REQUESTS,
    O_RATE,
    O_PIPELINE,
    O_THREADS,
    O_SCENARIO,
    O_MERCHANTS,
    O_TIMEOUT,
    O_JSON,
    O_REMOTE,
    O_KEYS,
    O_KEYS_DATA,
    O_ZIPF,
    O_SEED,
    O_REPLAY,
    O_GET,
    O_BALANCES,
    O_CAPTURE,
    O_VOID,
    O_REFUND,
    O_REFUNDS,
    O_COUNT
};

static int parse_scenario(const char *s, enum scenario *out)
{
    for (unsigned i = 0; i < ARRAY_LEN(scenario_names); i++)
        if (strcmp(s, scenario_names[i]) == 0) {
            *out = (enum scenario)i;
            return 0;
        }
    fprintf(stderr,
            "ringpay: --scenario: expected authorize, lifecycle, replay or healthz, got \"%s\"\n",
            s);
    return -1;
}

/* --zipf S: a decimal 0 .. MIX_ZIPF_S_MAX. */
static int parse_zipf(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || end == s || *end != '\0' || !(v >= 0.0 && v <= MIX_ZIPF_S_MAX)) {
        fprintf(stderr, "ringpay: --zipf: expected an exponent from 0 to %g, got \"%s\"\n",
                MIX_ZIPF_S_MAX, s);
        return -1;
    }
    *out = v;
    return 0;
}

/* The mix from the flags; lifecycle flags belong to that scenario only. */
static int mix_from_flags(const struct opt *o, struct load_config *cfg)
{
    bool lifecycle = cfg->scenario == SC_LIFECYCLE || cfg->scenario == SC_MIXED;
    for (int i = O_GET; i <= O_REFUNDS; i++)
        if (o[i].set && !lifecycle) {
            fprintf(stderr, "ringpay: --%s belongs to the lifecycle scenario\n", o[i].name);
            return -1;
        }
    if (o[O_REPLAY].set && cfg->scenario == SC_HEALTHZ) {
        fprintf(stderr, "ringpay: --replay-pct needs authorizations (not --scenario healthz)\n");
        return -1;
    }
    cfg->mix.replay_pct = o[O_REPLAY].set              ? (unsigned)o[O_REPLAY].num
                          : cfg->scenario == SC_REPLAY ? 50
                                                       : 0;
    if (lifecycle) {
        cfg->mix.get_pct = (unsigned)o[O_GET].num;
        cfg->mix.balances_pct = (unsigned)o[O_BALANCES].num;
        cfg->mix.capture_pct = (unsigned)o[O_CAPTURE].num;
        cfg->mix.void_pct = (unsigned)o[O_VOID].num;
        cfg->mix.refund_pct = (unsigned)o[O_REFUND].num;
    }
    cfg->mix.refunds_per_payment = (unsigned)o[O_REFUNDS].num;
    char why[256];
    if (mix_check(&cfg->mix, why, sizeof(why)) != 0) {
        fprintf(stderr, "ringpay: %s\n", why);
        return -1;
    }
    return 0;
}

/* Checks what the flags cannot check alone; 0 or -1 after one line on stderr. */
static int check_config(const struct opt *o, struct load_config *cfg)
{
    if (!is_loopback(&cfg->addr) && !o[O_REMOTE].set) {
        fprintf(stderr, "ringpay: --target %s is not a loopback address (add --allow-remote)\n",
                cfg->target);
        return -1;
    }
    if (cfg->threads > cfg->connections) {
        fprintf(stderr, "ringpay: --threads %u exceeds --connections %u\n", cfg->threads,
                cfg->connections);
        return -1;
    }
    if (cfg->rate && cfg->rate < cfg->threads) {
        fprintf(stderr, "ringpay: --rate %llu is below --threads %u (each thread needs a share)\n",
                (unsigned long long)cfg->rate, cfg->threads);
        return -1;
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < cfg->connections + 64ull) {
        fprintf(stderr, "ringpay: --connections %u exceeds the open-file limit %llu\n",
                cfg->connections, (unsigned long long)rl.rlim_cur);
        return -1;
    }
    return 0;
}

int cmd_load(int argc, char **argv)
{
    struct opt o[O_COUNT] = {
        [O_TARGET] = {"target", OPT_ADDR, "127.0.0.1:8080", "engine address HOST:PORT"},
        [O_CONNS] = {"connections", OPT_UINT, "64", "keep-alive connections", 1,
                     LOAD_CONNECTIONS_MAX},
        [O_DURATION] = {"duration-s", OPT_UINT, "10", "run time in seconds", 1, 86400},
        [O_REQUESTS] = {"requests", OPT_UINT, "0",
                        "stop after this many requests (0: by --duration-s)", 0, 1000000000000ul},
        [O_RATE] = {"rate", OPT_UINT, "0",
                    "open loop: requests/s over all connections (0: closed loop)", 0, 100000000},
        [O_PIPELINE] = {"pipeline", OPT_UINT, "1", "requests in flight per connection", 1,
                        LOAD_PIPELINE_MAX},
        [O_THREADS] = {"threads", OPT_UINT, "1", "threads, each with its own event loop", 1,
                       LOAD_THREADS_MAX},
        [O_SCENARIO] = {"scenario", OPT_STRING, "authorize",
                        "authorize, lifecycle, replay or healthz"},
        [O_MERCHANTS] = {"merchants", OPT_UINT, "64", "merchants m-0..m-(M-1)", 1, 1000000},
        [O_TIMEOUT] = {"timeout-ms", OPT_UINT, "5000",
                       "a request unanswered this long is a timeout", 1, 600000},
        [O_JSON] = {"json", OPT_FLAG, NULL, "print only the JSON summary"},
        [O_REMOTE] = {"allow-remote", OPT_FLAG, NULL, "allow a non-loopback --target"},
        [O_KEYS] = {"keys", OPT_STRING, NULL,
                    "sign with these keys (JSON lines of `ringpay keys add`, one per "
                    "merchant); with --keys-data: where their secrets are kept"},
        [O_KEYS_DATA] = {"keys-data", OPT_STRING, NULL,
                         "make or reuse the keys in this engine data directory (see "
                         "above)"},
        [O_ZIPF] = {"zipf", OPT_STRING, "0", "Zipf exponent over merchants (0: uniform, in turn)"},
        [O_SEED] = {"seed", OPT_UINT, "0", "seed of the request mix (0: a new one each run)", 0,
                    UINT64_MAX},
        [O_REPLAY] = {"replay-pct", OPT_UINT, NULL,
                      "percent of authorizations that replay an earlier one (default "
                      "50 in the replay scenario, else 0)",
                      0, 100},
        [O_GET] = {"get-pct", OPT_UINT, "10",
                   "lifecycle: percent of new requests that GET a payment", 0, 100},
        [O_BALANCES] = {"balances-pct", OPT_UINT, "5",
                        "lifecycle: percent of new requests that GET balances", 0, 100},
        [O_CAPTURE] = {"capture-pct", OPT_UINT, "80",
                       "lifecycle: percent of authorized payments captured", 0, 100},
        [O_VOID] = {"void-pct", OPT_UINT, "10", "lifecycle: percent of authorized payments voided",
                    0, 100},
        [O_REFUND] = {"refund-pct", OPT_UINT, "20",
                      "lifecycle: percent of captured payments refunded", 0, 100},
        [O_REFUNDS] = {"refunds-per-payment", OPT_UINT, "2",
                       "lifecycle: refunds of a refunded payment", 1, 100},
    };
    int rc = config_parse(o, O_COUNT, argc, argv, load_usage);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    static struct load_config cfg;
    cfg = (struct load_config){
        .addr = o[O_TARGET].addr,
        .addr_len = o[O_TARGET].addr_len,
        .target = o[O_TARGET].str,
        .connections = (unsigned)o[O_CONNS].num,
        .pipeline = (unsigned)o[O_PIPELINE].num,
        .threads = (unsigned)o[O_THREADS].num,
        .merchants = (unsigned)o[O_MERCHANTS].num,
        .timeout_ms = (unsigned)o[O_TIMEOUT].num,
        .requests = o[O_REQUESTS].num,
        .rate = o[O_RATE].num,
        .json = o[O_JSON].set,
        .run_id = ((uint64_t)time(NULL) << 20) ^ (uint64_t)getpid(),
    };
    cfg.seed = o[O_SEED].num ? o[O_SEED].num : cfg.run_id;
    /* --requests alone still ends by itself, at a ceiling well above any sane run. */
    uint64_t seconds = cfg.requests && !o[O_DURATION].set ? REQUESTS_CEILING_S : o[O_DURATION].num;
    cfg.duration_ns = seconds * 1000000000ull;
    double zipf_s = 0.0;
    if (parse_scenario(o[O_SCENARIO].str, &cfg.scenario) != 0 || mix_from_flags(o, &cfg) != 0 ||
        parse_zipf(o[O_ZIPF].str, &zipf_s) != 0 || check_config(o, &cfg) != 0)
        return 2;
    static struct mix_zipf zipf;
    if (zipf_s > 0.0) {
        if (mix_zipf_init(&zipf, cfg.merchants, zipf_s) != 0) {
            fprintf(stderr, "ringpay: out of memory for --zipf over %u merchants\n", cfg.merchants);
            return 1;
        }
        cfg.zipf = &zipf;
    }
    struct load_keys *keys = NULL;
    struct load_result *r = NULL;
    int code = probe_target(&cfg);
    if (code != 0) {
        fprintf(stderr, "ringpay: cannot connect to %s: %s\n", cfg.target, strerror(-code));
        code = 1;
        goto out;
    }
    if ((o[O_KEYS].str || o[O_KEYS_DATA].str) &&
        (code = setup_keys(&cfg, o[O_KEYS_DATA].str, o[O_KEYS].str, &keys)) != 0)
        goto out;
    struct sigaction sa = {.sa_handler = on_sigint};
    sigemptyset(&sa.sa_mask);
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);
    r = malloc(sizeof(*r)); /* the histogram is ~25 KiB */
    if (r == NULL || run(&cfg, r) != 0) {
        code = 1;
        goto out;
    }
    if (!cfg.json)
        print_human(&cfg, r);
    print_json(&cfg, r);
out:
    free(r);
    load_keys_free(keys);
    if (cfg.zipf)
        mix_zipf_free(&zipf);
    return code;
}
