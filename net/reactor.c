/*
 * The reactor (see reactor.h): io_uring event loop, listener, connections, timers.
 *
 * Invariants:
 *   - Only this reactor's thread touches its ring, connections and metrics writes.
 *   - A connection is reused only after every operation it had in flight completed
 *     (recv_armed and send_inflight both false); its generation changes on reuse, so
 *     late answers and CQEs for the old connection are recognised and dropped.
 *   - Receives are single-shot and land in the connection's own input buffer, after
 *     the bytes it already holds. One is armed only while the buffer holds nothing but
 *     an incomplete request (want_input): then nothing else reads past in_len, moves
 *     or frees the buffer until it completes. A connection that may not dispatch
 *     (window full, answer budget spent, the application busy) is not read from, so
 *     the kernel's socket buffer and TCP hold the rest: input costs the input buffer
 *     and nothing more.
 *   - At most one send is in flight per connection. Answers are appended to out_fill
 *     strictly in request order (window slots hold answers that came early); a send
 *     takes the whole of out_fill by swapping it with the empty out_send.
 *   - out_bytes counts answer bytes written and not yet sent (ready slots, out_fill,
 *     out_send past send_off); reserved counts the budget held by requests in flight.
 *     A request is dispatched only while out_bytes + reserved < CONN_OUT_MAX_BYTES.
 *   - The input buffer always starts at the first byte of the request being parsed.
 *   - Memory per core is bounded: connections and their small buffers are one pool
 *     sized at start, large buffers another; output per connection by the budget.
 */
#define _GNU_SOURCE
#include "net/reactor.h"

#include <arpa/inet.h>
#include <errno.h>
#include <liburing.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "engine/assert.h"
#include "engine/clock.h"
#include "engine/limits.h"
#include "net/clients.h"
#include "net/log.h"
#include "net/proxy.h"

/* What an SQE of ours is for (the top byte of its user_data). */
enum uop {
    UOP_ACCEPT = 1,
    UOP_RECV,
    UOP_SEND,
    UOP_TICK,
    UOP_STOP,
    UOP_LOG,    /* an access-log write */
    UOP_IGNORE, /* cancels: their own completions carry nothing we need */
};

#define UD(op, gen, idx) (((uint64_t)(op) << 56) | ((uint64_t)((gen)&0xffffffu) << 32) | (idx))
#define UD_OP(ud)        ((unsigned)((ud) >> 56))
#define UD_GEN(ud)       ((uint32_t)(((ud) >> 32) & 0xffffffu))
#define UD_IDX(ud)       ((uint32_t)(ud))

/* The budget a request reserves until its answer is written: a payment answer. */
#define RESERVE_DEFAULT (CONN_ANSWER_HEAD_MAX_BYTES + ENGINE_ANSWER_MAX_BYTES)

enum conn_state {
    CONN_FREE = 0,
    CONN_OPEN,    /* reading and answering requests */
    CONN_CLOSING, /* no more requests: answer what is pending, then half-close */
    CONN_LINGER,  /* half-closed after the last answer; discarding input until EOF */
    CONN_DEAD,    /* waiting for in-flight operations before the fd is closed */
};

enum slot_state { SLOT_FREE = 0, SLOT_PENDING, SLOT_READY };

struct slot {
    uint32_t seq;
    uint8_t state;
    bool head_only;   /* HEAD: send the head of the answer only */
    bool close_after; /* the request asked to close, or was unparseable */
    uint8_t version_minor;
    uint8_t request_id_len;
    uint8_t method_len; /* 0: unparseable request */
    uint32_t reserved;  /* SLOT_PENDING: budget held for the answer */
    uint64_t start_ns;
    char *resp; /* SLOT_READY: the whole answer, waiting for earlier ones */
    size_t resp_len;
    char method[ACCESS_LOG_METHOD_MAX_BYTES];
    char request_id[REQUEST_ID_MAX_BYTES + 1];
};

struct buf {
    char *p;
    size_t len, cap;
};

struct conn {
    int fd;
    uint32_t gen;
    uint32_t idx;
    uint8_t state;
    bool recv_armed;
    bool send_inflight;
    bool read_closed; /* peer sent EOF */
    bool want_input;  /* the input holds only an incomplete request: receive more */
    bool drained;     /* the last receive got less than it asked: the socket was empty */
    bool continue_owed;
    bool in_large;
    bool await_proxy; /* a balancer's connection: its PROXY header comes first */
    bool counted;     /* counted in the clients table (clients_connect) */
    bool budget_paid; /* the request being dispatched was charged to its address */
    bool overloaded;  /* the application made no progress for REACTOR_BUSY_WAIT_MAX_MS */
    bool streaming;   /* the input is the body of request stream_seq (on_body) */
    bool stream_chunked;
    uint32_t stream_seq;
    uint64_t stream_left;      /* Content-Length: body bytes still to come */
    struct http_chunks chunks; /* chunked: the framing decoder */
    char *in;
    uint32_t in_len, in_cap;
    uint32_t recv_len; /* bytes the receive in flight asked for */
    char *small;
    struct http_parser parser;
    struct http_request req;   /* the request being parsed: the parser accumulates it */
    uint64_t request_start_ms; /* first byte of the request being read; 0: none */
    uint64_t last_active_ms;
    uint64_t send_wait_ms; /* the send in flight has made no progress since */
    uint64_t linger_deadline_ms;
    uint32_t win_head, win_tail; /* oldest unanswered seq, next seq */
    size_t send_off;
    size_t out_bytes; /* answers written, not yet sent */
    size_t reserved;  /* budget held by requests in flight */
    struct buf out_fill, out_send;
    uint32_t next_free;
    uint8_t cont_rid_len; /* > 0: the id the 100 Continue carried, for its request */
    uint8_t peer_len;
    uint8_t peer_key[16];              /* the client address as the clients table keys it */
    struct sockaddr_storage peer_addr; /* the socket's peer, or the PROXY source */
    char cont_rid[REQUEST_ID_MAX_BYTES + 1];
    char peer[ACCESS_LOG_CLIENT_MAX_BYTES];
    struct slot slots[CONN_PIPELINE_MAX];
};

struct reactor {
    struct io_uring ring;
    struct reactor_config cfg;
    struct metrics metrics;
    struct accesslog alog;
    struct clients clients;
    bool clients_on; /* a budget or a connection cap is configured */
    int listen_fd;
    int stop_fd;
    int port;
    uint64_t stop_val;
    volatile int stop_requested;
    bool stopping;
    bool accept_armed;
    bool resume_wanted;     /* reactor_resume() since the last turn */
    uint64_t progress_ms;   /* the last reactor_resume(): the application had room */
    uint64_t wait_start_ms; /* a first connection had to wait for the application */
    bool resuming;          /* inside resume_busy */
    uint64_t stop_deadline_ms;

    struct conn *conns;
    char *small_bufs;
    uint32_t free_head;  /* UINT32_MAX: empty */
    uint32_t conns_high; /* slots ever used: the tick scans [0, conns_high) */
    uint32_t conns_open;

    /* Connections whose request the application refused with -EBUSY, one bit each. */
    uint64_t *busy_bits;
    uint32_t busy_count;
    uint32_t busy_next_word; /* where the next resume starts, for fairness */

    char *large_bufs;
    uint32_t large_free[CONN_LARGE_BUFS_PER_CORE];
    uint32_t large_free_count;

    struct __kernel_timespec tick_ts;
    uint64_t now_ms;
    time_t date_sec;
    char date_hdr[64];
    size_t date_len;

    char rid_prefix[9];
    uint64_t rid_counter;
};

#define NO_CONN UINT32_MAX

/* ---- time --------------------------------------------------------------------- */

static void refresh_clock(struct reactor *r)
{
    r->now_ms = clock_mono_ns() / 1000000ull;
    time_t now = time(NULL);
    if (now == r->date_sec)
        return;
    struct tm tm;
    gmtime_r(&now, &tm);
    r->date_len =
        strftime(r->date_hdr, sizeof(r->date_hdr), "Date: %a, %d %b %Y %H:%M:%S GMT\r\n", &tm);
    r->date_sec = now;
}

/* ---- small helpers ---------------------------------------------------------------- */

static struct io_uring_sqe *get_sqe(struct reactor *r)
{
    struct io_uring_sqe *sqe = io_uring_get_sqe(&r->ring);
    if (sqe == NULL) {
        io_uring_submit(&r->ring);
        sqe = io_uring_get_sqe(&r->ring);
    }
    ASSERT(sqe != NULL);
    return sqe;
}

static int buf_reserve(struct buf *b, size_t more)
{
    if (b->len + more <= b->cap)
        return 0;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL)
        return -ENOMEM;
    b->p = p;
    b->cap = cap;
    return 0;
}

static void buf_free(struct buf *b)
{
    free(b->p);
    b->p = NULL;
    b->len = b->cap = 0;
}

static char *put_mem(char *dst, const void *src, size_t n)
{
    memcpy(dst, src, n);
    return dst + n;
}

static char *put_str(char *dst, const char *s)
{
    return put_mem(dst, s, strlen(s));
}

static char *put_uint(char *dst, uint64_t v)
{
    char tmp[24];
    int n = 0;
    do {
        tmp[n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v);
    while (n)
        *dst++ = tmp[--n];
    return dst;
}

/* ---- connection pool ---------------------------------------------------------- */

static struct conn *conn_get(struct reactor *r, uint32_t idx, uint32_t gen)
{
    if (idx >= r->cfg.max_connections)
        return NULL;
    struct conn *c = &r->conns[idx];
    if (c->state == CONN_FREE || (c->gen & 0xffffffu) != (gen & 0xffffffu))
        return NULL;
    return c;
}

/* Takes ss as the connection's client: the key of the clients table and the text of
 * the access log, "ip:port" ("[ip]:port" for IPv6). */
static void set_client(struct conn *c, const struct sockaddr_storage *ss)
{
    c->peer_addr = *ss;
    clients_key(ss, c->peer_key);
    char ip[INET6_ADDRSTRLEN] = "?";
    unsigned port = 0;
    bool v6 = false;
    if (ss->ss_family == AF_INET) {
        const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
        inet_ntop(AF_INET, &a->sin_addr, ip, sizeof(ip));
        port = ntohs(a->sin_port);
    } else if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
        inet_ntop(AF_INET6, &a->sin6_addr, ip, sizeof(ip));
        port = ntohs(a->sin6_port);
        v6 = true;
    }
    int n = snprintf(c->peer, sizeof(c->peer), v6 ? "[%s]:%u" : "%s:%u", ip, port);
    c->peer_len = (uint8_t)(n > 0 && (size_t)n < sizeof(c->peer) ? n : 0);
}

static void parser_reset(struct reactor *r, struct conn *c);

static struct conn *conn_alloc(struct reactor *r, int fd, const struct sockaddr_storage *peer)
{
    if (r->free_head == NO_CONN)
        return NULL;
    struct conn *c = &r->conns[r->free_head];
    r->free_head = c->next_free;
    if (c->idx + 1 > r->conns_high)
        r->conns_high = c->idx + 1;
    uint32_t gen = c->gen, idx = c->idx;
    char *small = c->small;
    memset(c, 0, offsetof(struct conn, slots));
    c->gen = gen;
    c->idx = idx;
    c->small = small;
    c->fd = fd;
    c->state = CONN_OPEN;
    c->in = c->small;
    c->in_cap = CONN_SMALL_BUF_BYTES;
    c->want_input = true;
    c->last_active_ms = r->now_ms;
    parser_reset(r, c);
    set_client(c, peer);
    r->conns_open++;
    metrics_add(&r->metrics.connections_open, 1);
    metrics_add(&r->metrics.connections_accepted, 1);
    return c;
}

static void large_release(struct reactor *r, struct conn *c)
{
    if (!c->in_large)
        return;
    uint32_t i = (uint32_t)((c->in - r->large_bufs) / CONN_LARGE_BUF_BYTES);
    ASSERT(i < CONN_LARGE_BUFS_PER_CORE);
    r->large_free[r->large_free_count++] = i;
    c->in_large = false;
    c->in = c->small;
    c->in_cap = CONN_SMALL_BUF_BYTES;
}

static bool busy_is(const struct reactor *r, const struct conn *c)
{
    return (r->busy_bits[c->idx / 64] >> (c->idx % 64)) & 1;
}

static void busy_set(struct reactor *r, struct conn *c, bool on)
{
    if (busy_is(r, c) == on)
        return;
    r->busy_bits[c->idx / 64] ^= 1ull << (c->idx % 64);
    r->busy_count += on ? 1 : (uint32_t)-1;
}

/* Frees the connection once nothing of it is in flight any more. */
static void conn_maybe_free(struct reactor *r, struct conn *c)
{
    if (c->state != CONN_DEAD || c->recv_armed || c->send_inflight)
        return;
    close(c->fd);
    for (uint32_t s = c->win_head; s != c->win_tail; s++) {
        struct slot *sl = &c->slots[s % CONN_PIPELINE_MAX];
        free(sl->resp);
        sl->resp = NULL;
        sl->state = SLOT_FREE;
    }
    large_release(r, c);
    buf_free(&c->out_fill);
    buf_free(&c->out_send);
    if (c->counted)
        clients_disconnect(&r->clients, c->peer_key);
    c->state = CONN_FREE;
    c->gen = (c->gen + 1) & 0xffffffu;
    c->next_free = r->free_head;
    r->free_head = c->idx;
    r->conns_open--;
    metrics_add(&r->metrics.connections_open, -1);
}

static void stream_end(struct reactor *r, struct conn *c, int end);

static void conn_kill(struct reactor *r, struct conn *c)
{
    if (c->state == CONN_DEAD || c->state == CONN_FREE)
        return;
    c->state = CONN_DEAD;
    if (c->streaming) /* after DEAD: an answer the application gives now is dropped */
        stream_end(r, c, -ECONNRESET);
    busy_set(r, c, false);
    /* shutdown ends a pending recv with EOF and fails a pending send. */
    shutdown(c->fd, SHUT_RDWR);
    if (c->recv_armed) {
        struct io_uring_sqe *sqe = get_sqe(r);
        io_uring_prep_cancel64(sqe, UD(UOP_RECV, c->gen, c->idx), 0);
        io_uring_sqe_set_data64(sqe, UD(UOP_IGNORE, 0, 0));
        io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
    }
    conn_maybe_free(r, c);
}

/* Arms one receive into the free end of the input buffer, when the connection wants
 * input (or, lingering, to discard it). */
static void arm_recv(struct reactor *r, struct conn *c)
{
    if (c->recv_armed || c->read_closed)
        return;
    if (c->state == CONN_LINGER) {
        c->in_len = 0; /* discarding: the whole buffer is scratch */
    } else if (c->state != CONN_OPEN || !c->want_input) {
        return;
    }
    ASSERT(c->in_len < c->in_cap);
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_recv(sqe, c->fd, c->in + c->in_len, c->in_cap - c->in_len, 0);
    /* When the last receive emptied the socket, the next bytes are not there yet (a
     * keep-alive client waits for its answer): wait for them instead of trying first. */
    if (c->drained)
        sqe->ioprio |= IORING_RECVSEND_POLL_FIRST;
    io_uring_sqe_set_data64(sqe, UD(UOP_RECV, c->gen, c->idx));
    c->recv_armed = true;
    c->recv_len = c->in_cap - c->in_len;
}

/* ---- answers ---------------------------------------------------------------------- */

static size_t answer_bound(const struct slot *s, const struct reactor_response *resp)
{
    return 256 + s->request_id_len + (resp->headers ? strlen(resp->headers) : 0) +
           (resp->content_type ? strlen(resp->content_type) : 0) + resp->body_len;
}

/* Writes the whole answer at dst (answer_bound bytes available); returns its length. */
static size_t answer_write(struct reactor *r, char *dst, const struct slot *s,
                           const struct reactor_response *resp, bool close)
{
    char *p = dst;
    p = put_str(p, "HTTP/1.1 ");
    p = put_uint(p, (uint64_t)resp->status);
    *p++ = ' ';
    p = put_str(p, http_status_reason(resp->status));
    p = put_str(p, "\r\nServer: ringpay\r\n");
    p = put_mem(p, r->date_hdr, r->date_len);
    if (resp->content_type) {
        p = put_str(p, "Content-Type: ");
        p = put_str(p, resp->content_type);
        p = put_str(p, "\r\n");
    }
    p = put_str(p, "Content-Length: ");
    p = put_uint(p, resp->body_len);
    p = put_str(p, "\r\nX-Request-Id: ");
    p = put_mem(p, s->request_id, s->request_id_len);
    p = put_str(p, "\r\n");
    if (resp->headers)
        p = put_str(p, resp->headers);
    if (close)
        p = put_str(p, "Connection: close\r\n");
    else if (s->version_minor == 0)
        p = put_str(p, "Connection: keep-alive\r\n");
    p = put_str(p, "\r\n");
    if (!s->head_only && resp->body_len)
        p = put_mem(p, resp->body, resp->body_len);
    return (size_t)(p - dst);
}

static void send_kick(struct reactor *r, struct conn *c)
{
    if (c->send_inflight || c->state == CONN_DEAD || c->state == CONN_FREE)
        return;
    if (c->out_send.len == 0) {
        if (c->out_fill.len == 0)
            return;
        struct buf t = c->out_send;
        c->out_send = c->out_fill;
        c->out_fill = t;
        c->send_off = 0;
    }
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_send(sqe, c->fd, c->out_send.p + c->send_off, c->out_send.len - c->send_off,
                       MSG_NOSIGNAL);
    io_uring_sqe_set_data64(sqe, UD(UOP_SEND, c->gen, c->idx));
    c->send_inflight = true;
    c->send_wait_ms = r->now_ms;
}

/* Appends n bytes to out_fill; false when memory ran out (the caller kills). */
static bool out_append(struct conn *c, const char *p, size_t n)
{
    if (buf_reserve(&c->out_fill, n) != 0)
        return false;
    memcpy(c->out_fill.p + c->out_fill.len, p, n);
    c->out_fill.len += n;
    return true;
}

/* "HTTP/1.1 100 Continue" with the X-Request-Id its request's answer will carry. */
static bool write_continue(struct conn *c)
{
    char msg[64 + REQUEST_ID_MAX_BYTES];
    char *p = put_str(msg, "HTTP/1.1 100 Continue\r\nX-Request-Id: ");
    p = put_mem(p, c->cont_rid, c->cont_rid_len);
    p = put_str(p, "\r\n\r\n");
    size_t n = (size_t)(p - msg);
    if (!out_append(c, msg, n))
        return false;
    c->out_bytes += n;
    return true;
}

/* Moves every answer that is next in order into out_fill. False: out of memory. */
static bool window_flush(struct conn *c)
{
    while (c->win_head != c->win_tail) {
        struct slot *s = &c->slots[c->win_head % CONN_PIPELINE_MAX];
        if (s->state != SLOT_READY)
            break;
        bool ok = out_append(c, s->resp, s->resp_len);
        free(s->resp);
        s->resp = NULL;
        s->state = SLOT_FREE;
        c->win_head++;
        if (!ok)
            return false;
    }
    if (c->continue_owed && c->win_head == c->win_tail) {
        c->continue_owed = false;
        return write_continue(c);
    }
    return true;
}

static void access_line(struct reactor *r, const struct conn *c, const struct slot *s,
                        const struct reactor_response *resp, uint64_t now_ns)
{
    if (!accesslog_wants(&r->alog))
        return;
    struct accesslog_entry e = {
        .method = s->method,
        .method_len = s->method_len,
        .route = r->cfg.route_names[resp->route],
        .status = resp->status,
        .duration_us = (now_ns - s->start_ns) / 1000,
        .request_id = s->request_id,
        .request_id_len = s->request_id_len,
        .client = c->peer_len ? c->peer : "-",
    };
    accesslog_add(&r->alog, &e);
}

void reactor_reply(struct reactor *r, struct reactor_ref ref, const struct reactor_response *resp)
{
    struct conn *c = conn_get(r, ref.conn, ref.gen);
    if (c == NULL || c->state == CONN_DEAD)
        return;
    if ((uint32_t)(ref.seq - c->win_head) >= (uint32_t)(c->win_tail - c->win_head))
        return;
    struct slot *s = &c->slots[ref.seq % CONN_PIPELINE_MAX];
    if (s->state != SLOT_PENDING || s->seq != ref.seq)
        return;
    uint64_t now_ns = clock_mono_ns();
    metrics_request(&r->metrics, resp->route, resp->status, now_ns - s->start_ns);
    access_line(r, c, s, resp, now_ns);
    /* Answered before its streamed body ended: the rest is not read; close after. */
    bool stream_cut = c->streaming && ref.seq == c->stream_seq;
    if (stream_cut)
        c->streaming = false;
    bool close = s->close_after || r->stopping || stream_cut;
    size_t bound = answer_bound(s, resp);
    ASSERT(c->reserved >= s->reserved);
    c->reserved -= s->reserved;
    s->reserved = 0;
    size_t len;
    if (ref.seq == c->win_head) {
        if (buf_reserve(&c->out_fill, bound) != 0) {
            conn_kill(r, c);
            return;
        }
        len = answer_write(r, c->out_fill.p + c->out_fill.len, s, resp, close);
        c->out_fill.len += len;
        s->state = SLOT_FREE;
        c->win_head++;
        c->out_bytes += len;
        if (!window_flush(c)) {
            conn_kill(r, c);
            return;
        }
    } else {
        s->resp = malloc(bound);
        if (s->resp == NULL) {
            conn_kill(r, c);
            return;
        }
        len = answer_write(r, s->resp, s, resp, close);
        s->resp_len = len;
        s->state = SLOT_READY;
        c->out_bytes += len;
    }
    if (close && c->state == CONN_OPEN)
        c->state = CONN_CLOSING;
    send_kick(r, c);
}

void reactor_expect(struct reactor *r, struct reactor_ref ref, size_t body_bytes)
{
    struct conn *c = conn_get(r, ref.conn, ref.gen);
    if (c == NULL || c->state == CONN_DEAD)
        return;
    struct slot *s = &c->slots[ref.seq % CONN_PIPELINE_MAX];
    if (s->state != SLOT_PENDING || s->seq != ref.seq)
        return;
    size_t want = CONN_ANSWER_HEAD_MAX_BYTES + body_bytes;
    ASSERT(want <= CONN_ANSWER_MAX_BYTES);
    if (want <= s->reserved)
        return;
    c->reserved += want - s->reserved;
    s->reserved = (uint32_t)want;
}

void reactor_resume(struct reactor *r)
{
    r->resume_wanted = true;
    r->progress_ms = r->now_ms;
}

size_t reactor_error_body(char *buf, const char *code, const char *message, const char *request_id)
{
    ASSERT(strlen(code) <= API_ERROR_CODE_MAX_BYTES);
    ASSERT(strlen(message) <= API_MESSAGE_MAX_BYTES);
    ASSERT(strlen(request_id) <= REQUEST_ID_MAX_BYTES);
    /* The request id is printable ASCII without '"' or '\' (request_id_ok, or made
     * here), and code and message are our own texts: nothing needs escaping. */
    int n = snprintf(buf, API_ERROR_BODY_MAX_BYTES,
                     "{\"error\":{\"code\":\"%s\",\"message\":\"%s\",\"param\":null,"
                     "\"request_id\":\"%s\"}}",
                     code, message, request_id);
    ASSERT(n > 0 && n < API_ERROR_BODY_MAX_BYTES);
    return (size_t)n;
}

void reactor_reply_error(struct reactor *r, const struct reactor_request *req, int status,
                         unsigned route, const char *code, const char *message,
                         const char *extra_headers)
{
    char body[API_ERROR_BODY_MAX_BYTES];
    size_t len = reactor_error_body(body, code, message, req->request_id);
    struct reactor_response resp = {
        .status = status,
        .route = route,
        .content_type = "application/json",
        .headers = extra_headers,
        .body = body,
        .body_len = len,
    };
    reactor_reply(r, req->ref, &resp);
}

/* ---- requests --------------------------------------------------------------------- */

/* Printable ASCII that needs no JSON escaping: safe to echo in headers and bodies. */
static bool request_id_ok(const char *p, size_t n)
{
    if (n == 0 || n > REQUEST_ID_MAX_BYTES)
        return false;
    for (size_t i = 0; i < n; i++)
        if (p[i] < 0x21 || p[i] > 0x7e || p[i] == '"' || p[i] == '\\')
            return false;
    return true;
}

/* The request's id: its X-Request-Id when acceptable, else a new one. Returns the
 * length written into out (REQUEST_ID_MAX_BYTES + 1 bytes, NUL-terminated). */
static uint8_t request_id_of(struct reactor *r, const struct http_request *req, const char *buf,
                             char *out)
{
    const struct http_header *h = req ? http_header_find(req, buf, "x-request-id") : NULL;
    size_t n;
    if (h && request_id_ok(buf + h->value.off, h->value.len)) {
        memcpy(out, buf + h->value.off, h->value.len);
        n = h->value.len;
    } else {
        n = (size_t)snprintf(out, REQUEST_ID_MAX_BYTES + 1, "%s-%u-%lx", r->rid_prefix, r->cfg.core,
                             (unsigned long)++r->rid_counter);
    }
    out[n] = '\0';
    return (uint8_t)n;
}

static struct slot *slot_open(struct reactor *r, struct conn *c, const struct http_request *req,
                              const char *buf)
{
    ASSERT(c->win_tail - c->win_head < CONN_PIPELINE_MAX);
    uint32_t seq = c->win_tail++;
    struct slot *s = &c->slots[seq % CONN_PIPELINE_MAX];
    ASSERT(s->state == SLOT_FREE);
    s->seq = seq;
    s->state = SLOT_PENDING;
    s->resp = NULL;
    s->head_only = req && req->method == HTTP_HEAD;
    s->close_after = req == NULL || !req->keep_alive;
    s->version_minor = req ? req->version_minor : 1;
    s->start_ns = clock_mono_ns();
    s->reserved = RESERVE_DEFAULT;
    c->reserved += s->reserved;
    s->method_len = 0;
    if (req) {
        size_t n = req->method_token.len < ACCESS_LOG_METHOD_MAX_BYTES
                       ? req->method_token.len
                       : ACCESS_LOG_METHOD_MAX_BYTES;
        memcpy(s->method, buf + req->method_token.off, n);
        s->method_len = (uint8_t)n;
    }
    if (c->cont_rid_len > 0) { /* the id its 100 Continue already carried */
        memcpy(s->request_id, c->cont_rid, (size_t)c->cont_rid_len + 1);
        s->request_id_len = c->cont_rid_len;
        c->cont_rid_len = 0;
    } else {
        s->request_id_len = request_id_of(r, req, buf, s->request_id);
    }
    return s;
}

/* Takes back the newest slot of a request the application did not take. */
static void slot_cancel(struct conn *c, struct slot *s)
{
    ASSERT(s->state == SLOT_PENDING && s->seq == c->win_tail - 1);
    ASSERT(c->reserved >= s->reserved);
    c->reserved -= s->reserved;
    s->reserved = 0;
    s->state = SLOT_FREE;
    c->win_tail--;
    /* Keep the id: the request is offered again and must carry the same one. */
    memcpy(c->cont_rid, s->request_id, (size_t)s->request_id_len + 1);
    c->cont_rid_len = s->request_id_len;
}

static const char *error_code(int status)
{
    switch (status) {
    case 408:
        return "request_timeout";
    case 429:
        return "rate_limited";
    case 413:
        return "body_too_large";
    case 414:
        return "uri_too_long";
    case 431:
        return "headers_too_large";
    case 501:
        return "not_implemented";
    case 503:
        return "overloaded";
    case 505:
        return "http_version_not_supported";
    default:
        return "bad_request";
    }
}

/* Answers a framing error (or a timeout) and stops reading: the connection closes after. */
static void reply_fatal(struct reactor *r, struct conn *c, int status, const char *message)
{
    if (c->win_tail - c->win_head >= CONN_PIPELINE_MAX) {
        conn_kill(r, c);
        return;
    }
    struct slot *s = slot_open(r, c, NULL, NULL);
    struct reactor_request rq = {
        .ref = {.conn = c->idx, .gen = c->gen, .seq = s->seq},
        .request_id = s->request_id,
        .request_id_len = s->request_id_len,
    };
    c->state = CONN_CLOSING;
    c->want_input = false;
    c->request_start_ms = 0;
    if (!c->recv_armed)
        c->in_len = 0; /* an armed receive still owns the buffer's free end */
    reactor_reply_error(r, &rq, status, r->cfg.route_other, error_code(status), message,
                        status == 503 || status == 429 ? "Retry-After: 1\r\n" : NULL);
}

/* Hands one parsed request (or the head of a streamed one) to the application: 0, or
 * -EBUSY (nothing taken). */
static int dispatch(struct reactor *r, struct conn *c, const struct http_request *req,
                    bool streamed)
{
    struct slot *s = slot_open(r, c, req, c->in);
    struct reactor_request rq = {
        .ref = {.conn = c->idx, .gen = c->gen, .seq = s->seq},
        .http = req,
        .client = &c->peer_addr,
        .buf = c->in,
        .request_id = s->request_id,
        .request_id_len = s->request_id_len,
        .body_streamed = streamed,
    };
    /* The client address's budget, charged once per request (not again when the
     * application refuses it for now and it is offered again). */
    if (r->clients_on && !c->budget_paid) {
        uint32_t retry = clients_request(&r->clients, c->peer_key, (int64_t)r->now_ms);
        if (retry > 0) {
            char hdr[40];
            snprintf(hdr, sizeof(hdr), "Retry-After: %u\r\n", retry);
            reactor_reply_error(r, &rq, 429, r->cfg.route_other, "rate_limited",
                                "this client address is over its request budget", hdr);
            return 0;
        }
        c->budget_paid = true;
    }
    int rc = r->cfg.handler->on_request(r->cfg.handler_ctx, r, &rq);
    ASSERT(rc == 0 || (rc == -EBUSY && !streamed));
    if (rc == -EBUSY) {
        slot_cancel(c, s);
        return rc;
    }
    ASSERT(rc == 0);
    c->budget_paid = false;
    /* A streamed body must still be read: its answer closes the connection instead. */
    if ((!req->keep_alive || r->stopping) && c->state == CONN_OPEN && !streamed)
        c->state = CONN_CLOSING;
    return 0;
}

/* Answers a parsed request 503 overloaded without giving it to the application: it
 * could not take it for REACTOR_BUSY_WAIT_MAX_MS (SPEC §6: over a bound, a status, never
 * a hang). The connection goes on with its next request. */
static void refuse_overloaded(struct reactor *r, struct conn *c, const struct http_request *req)
{
    struct slot *s = slot_open(r, c, req, c->in);
    struct reactor_request rq = {
        .ref = {.conn = c->idx, .gen = c->gen, .seq = s->seq},
        .http = req,
        .client = &c->peer_addr,
        .buf = c->in,
        .request_id = s->request_id,
        .request_id_len = s->request_id_len,
    };
    c->budget_paid = false;
    reactor_reply_error(r, &rq, 503, r->cfg.route_other, "overloaded",
                        "the engine is saturated; retry later", "Retry-After: 1\r\n");
}

/* Moves the request being read to a large buffer; false when the pool is empty. */
static bool grow_input(struct reactor *r, struct conn *c)
{
    ASSERT(!c->recv_armed);
    if (c->in_large || r->large_free_count == 0)
        return false;
    uint32_t i = r->large_free[--r->large_free_count];
    char *large = r->large_bufs + (size_t)i * CONN_LARGE_BUF_BYTES;
    memcpy(large, c->in, c->in_len);
    c->in = large;
    c->in_cap = CONN_LARGE_BUF_BYTES;
    c->in_large = true;
    return true;
}

/* A fresh parser for the connection's next request. */
static void parser_reset(struct reactor *r, struct conn *c)
{
    http_parser_init(&c->parser);
    if (r->cfg.handler->stream_body)
        http_parser_report_heads(&c->parser);
}

/* Drops the request just dispatched from the front of the input buffer. */
static void consume(struct reactor *r, struct conn *c, uint32_t n)
{
    ASSERT(!c->recv_armed && n <= c->in_len);
    memmove(c->in, c->in + n, c->in_len - n);
    c->in_len -= n;
    c->request_start_ms = 0;
    parser_reset(r, c);
    if (c->in_large && c->in_len <= CONN_SMALL_BUF_BYTES) {
        memcpy(c->small, c->in, c->in_len);
        large_release(r, c);
    }
}

/* True while the connection may hand another request to the application. */
static bool may_dispatch(const struct conn *c)
{
    return c->win_tail - c->win_head < CONN_PIPELINE_MAX &&
           c->out_bytes + c->reserved < CONN_OUT_MAX_BYTES;
}

/* HTTP_PARSE_CONTINUE: the 100 Continue is owed once every earlier answer went out;
 * it carries the request id its final answer will carry. */
static void owe_continue(struct reactor *r, struct conn *c)
{
    c->cont_rid_len = request_id_of(r, &c->req, c->in, c->cont_rid);
    c->continue_owed = true;
    if (!window_flush(c)) {
        conn_kill(r, c);
        return;
    }
    send_kick(r, c);
}

/*
 * A balancer's connection opens with a PROXY header (net/proxy.h): take the client's
 * address from it (a LOCAL header, the balancer's own health check, keeps the peer's),
 * drop it from the input, and count the client against its address's cap. False when
 * the connection cannot go on now: more bytes are needed (want_input), it was closed
 * (not a PROXY header: the balancer is misconfigured, nothing to answer), or the
 * client is over its cap (answered 429, then closed).
 */
static bool take_proxy_header(struct reactor *r, struct conn *c)
{
    struct proxy_header h;
    enum proxy_result pr = proxy_parse((const uint8_t *)c->in, c->in_len, &h);
    if (pr == PROXY_NEED_MORE) {
        c->want_input = true;
        return false;
    }
    if (pr == PROXY_ERROR) {
        conn_kill(r, c);
        return false;
    }
    if (h.has_addr)
        set_client(c, &h.src);
    c->await_proxy = false;
    consume(r, c, h.header_bytes);
    if (r->clients_on) {
        if (clients_connect(&r->clients, c->peer_key, (int64_t)r->now_ms) != 0) {
            reply_fatal(r, c, 429, "too many connections from this address");
            return false;
        }
        c->counted = true;
    }
    return true;
}

/* The streamed body of the connection ends (end 1) or will not complete (end < 0). */
static void stream_end(struct reactor *r, struct conn *c, int end)
{
    ASSERT(c->streaming);
    c->streaming = false;
    struct reactor_ref ref = {.conn = c->idx, .gen = c->gen, .seq = c->stream_seq};
    r->cfg.handler->on_body(r->cfg.handler_ctx, r, ref, NULL, 0, end);
}

/*
 * HTTP_PARSE_HEAD: asks the application whether it takes the body as a stream. If so,
 * sends the 100 Continue the client may wait for (only when no earlier answer is
 * pending: an interim answer may not overtake them; the client then sends after its
 * own wait), dispatches the request and drops its head from the input. True when the
 * body is now streamed (or the request was answered at once); false to read the body
 * as usual.
 */
static bool stream_start(struct reactor *r, struct conn *c, const struct http_request *req)
{
    const struct reactor_handler *h = r->cfg.handler;
    struct reactor_request probe = {.http = req, .client = &c->peer_addr, .buf = c->in};
    if (h->on_body == NULL || !h->stream_body(r->cfg.handler_ctx, &probe))
        return false;
    ASSERT(req->chunked || (req->has_content_length && req->content_length > 0));
    if (req->expect_continue && c->in_len == req->head_bytes && c->win_head == c->win_tail) {
        owe_continue(r, c);
        if (c->state != CONN_OPEN)
            return true;
    }
    c->continue_owed = false;
    c->streaming = true;
    c->stream_chunked = req->chunked;
    c->stream_seq = c->win_tail;
    c->stream_left = req->content_length;
    http_chunks_init(&c->chunks);
    uint32_t head = req->head_bytes;
    dispatch(r, c, req, true);
    if (c->state == CONN_DEAD || c->state == CONN_FREE)
        return true;
    consume(r, c, head);
    return true;
}

/* A run of decoded chunk data: to the application while it still wants the body. */
struct chunk_run {
    struct reactor *r;
    struct conn *c;
};

static void chunk_data_cb(void *arg, const char *data, size_t len)
{
    struct chunk_run *x = arg;
    struct conn *c = x->c;
    if (!c->streaming || c->state != CONN_OPEN)
        return; /* answered early: the rest is read and dropped */
    struct reactor_ref ref = {.conn = c->idx, .gen = c->gen, .seq = c->stream_seq};
    x->r->cfg.handler->on_body(x->r->cfg.handler_ctx, x->r, ref, data, len, 0);
}

/* stream_feed of a chunked body: the framing decoded as it arrives. Malformed framing
 * ends the stream with -EPROTO; its answer closes the connection. */
static bool stream_feed_chunked(struct reactor *r, struct conn *c)
{
    struct chunk_run x = {r, c};
    size_t used = 0;
    const char *why = NULL;
    int rc = http_chunks_feed(&c->chunks, c->in, c->in_len, &used, chunk_data_cb, &x, &why);
    if (c->state == CONN_DEAD || c->state == CONN_FREE)
        return false;
    if (rc == HTTP_CHUNKS_ERROR ||
        (rc == HTTP_CHUNKS_MORE && used == 0 && c->in_len == c->in_cap)) {
        if (c->streaming) {
            c->slots[c->stream_seq % CONN_PIPELINE_MAX].close_after = true;
            stream_end(r, c, -EPROTO);
        }
        if (c->state == CONN_OPEN)
            c->state = CONN_CLOSING;
        c->want_input = false;
        return false;
    }
    consume(r, c, (uint32_t)used);
    if (!c->streaming) /* answered early */
        return c->state == CONN_OPEN;
    if (rc == HTTP_CHUNKS_DONE) {
        stream_end(r, c, 1);
        return c->state == CONN_OPEN;
    }
    c->want_input = true; /* a framing line's start may wait in the buffer for its end */
    return false;
}

/* Gives the buffered bytes of a streamed body to the application. False when it needs
 * more input (want_input set) or the connection cannot go on. */
static bool stream_feed(struct reactor *r, struct conn *c)
{
    if (c->in_len == 0) {
        c->want_input = true;
        return false;
    }
    if (c->stream_chunked)
        return stream_feed_chunked(r, c);
    uint32_t n = c->stream_left < c->in_len ? (uint32_t)c->stream_left : c->in_len;
    struct reactor_ref ref = {.conn = c->idx, .gen = c->gen, .seq = c->stream_seq};
    r->cfg.handler->on_body(r->cfg.handler_ctx, r, ref, c->in, n, 0);
    if (c->state == CONN_DEAD || c->state == CONN_FREE)
        return false;
    consume(r, c, n);
    if (!c->streaming) /* answered early: the rest of the body is not read */
        return c->state == CONN_OPEN;
    c->stream_left -= n;
    if (c->stream_left == 0)
        stream_end(r, c, 1);
    return c->state == CONN_OPEN;
}

/*
 * Parses and dispatches every complete request in the input buffer while the
 * connection may go on. Leaves want_input set when it stopped for lack of bytes (then
 * the caller arms a receive). After the peer's EOF, an incomplete rest can never
 * complete: it is dropped and the connection closes once its answers are out.
 */
static void conn_process(struct reactor *r, struct conn *c)
{
    struct http_request *req = &c->req;
    c->want_input = false;
    while (c->state == CONN_OPEN) {
        if (c->streaming) {
            if (!stream_feed(r, c))
                break;
            continue;
        }
        if (c->in_len == 0) {
            c->want_input = true;
            break;
        }
        if (!may_dispatch(c))
            break;
        if (c->request_start_ms == 0)
            c->request_start_ms = r->now_ms ? r->now_ms : 1;
        if (c->await_proxy && !take_proxy_header(r, c))
            break;
        if (c->in_len == 0)
            continue;
        int rc = http_parse(&c->parser, c->in, c->in_len, req);
        if (rc == HTTP_PARSE_AGAIN) {
            if (c->in_len == c->in_cap && !grow_input(r, c)) {
                reply_fatal(r, c, c->in_large ? 400 : 503,
                            c->in_large ? "request exceeds the buffer" : "out of request buffers");
                return;
            }
            c->want_input = true;
            break;
        }
        if (rc == HTTP_PARSE_CONTINUE) {
            owe_continue(r, c);
            continue;
        }
        if (rc == HTTP_PARSE_HEAD) {
            stream_start(r, c, req);
            continue;
        }
        if (rc == HTTP_PARSE_ERROR) {
            reply_fatal(r, c, req->error_status ? req->error_status : 400,
                        req->error_reason ? req->error_reason : "malformed request");
            return;
        }
        ASSERT(rc == HTTP_PARSE_DONE && req->wire_bytes <= c->in_len);
        c->continue_owed = false; /* the body is here: no 100 Continue any more */
        if (dispatch(r, c, req, false) == -EBUSY) {
            if (!c->overloaded) {
                if (r->busy_count == 0 && !r->resuming)
                    r->wait_start_ms = r->now_ms; /* waiting starts now */
                busy_set(r, c, true);
                return;
            }
            refuse_overloaded(r, c, req); /* the application is stuck: say so, do not wait */
        } else {
            c->overloaded = false;
        }
        if (c->state == CONN_DEAD || c->state == CONN_FREE)
            return;
        consume(r, c, req->wire_bytes);
    }
    if (c->read_closed && c->want_input && c->state == CONN_OPEN) {
        if (c->streaming)
            stream_end(r, c, -ECONNRESET);
        c->want_input = false;
        c->in_len = 0;
        c->request_start_ms = 0;
        c->state = CONN_CLOSING;
    }
}

/* ---- input -------------------------------------------------------------------- */

static bool conn_idle(const struct conn *c)
{
    return c->win_head == c->win_tail && c->out_bytes == 0 && !c->send_inflight;
}

/* Half-closes after the last answer, then drains the peer for a bounded time. */
static void conn_finish(struct reactor *r, struct conn *c)
{
    if (c->read_closed) {
        conn_kill(r, c);
        return;
    }
    shutdown(c->fd, SHUT_WR);
    c->state = CONN_LINGER;
    c->linger_deadline_ms = r->now_ms + CONN_LINGER_MS;
    arm_recv(r, c);
}

/* After progress (answers sent, input arrived, a job freed): go as far as the
 * connection may, then close it if it is done, or receive more if it wants to. */
static void conn_advance(struct reactor *r, struct conn *c)
{
    if (c->state == CONN_OPEN && !c->recv_armed && !busy_is(r, c))
        conn_process(r, c);
    if (c->state == CONN_DEAD || c->state == CONN_FREE)
        return;
    if (c->state == CONN_CLOSING && conn_idle(c)) {
        conn_finish(r, c);
        return;
    }
    if (c->state == CONN_OPEN && r->stopping && conn_idle(c) && c->in_len == 0) {
        conn_kill(r, c);
        return;
    }
    arm_recv(r, c);
    send_kick(r, c);
}

static void on_recv(struct reactor *r, struct conn *c, int res)
{
    c->recv_armed = false;
    if (c->state == CONN_DEAD) {
        conn_maybe_free(r, c);
        return;
    }
    if (res < 0) {
        conn_kill(r, c); /* reset, or cancelled by a kill */
        return;
    }
    c->last_active_ms = r->now_ms;
    if (res == 0) {
        c->read_closed = true;
        if (c->state == CONN_LINGER) {
            conn_kill(r, c);
            return;
        }
    } else if (c->state == CONN_OPEN) {
        ASSERT((uint32_t)res <= c->in_cap - c->in_len);
        c->in_len += (uint32_t)res;
    }
    c->drained = (uint32_t)res <
                 c->recv_len; /* else: closing or lingering, no more requests are read: discard */
    conn_advance(r, c);
}

static void on_send(struct reactor *r, struct conn *c, int res)
{
    c->send_inflight = false;
    if (c->state == CONN_DEAD) {
        conn_maybe_free(r, c);
        return;
    }
    if (res < 0) {
        conn_kill(r, c);
        return;
    }
    c->send_off += (size_t)res;
    ASSERT(c->out_bytes >= (size_t)res);
    c->out_bytes -= (size_t)res;
    if (c->send_off >= c->out_send.len) {
        c->out_send.len = 0;
        c->send_off = 0;
        /* A large buffer goes back, and so does any once the connection has nothing left
         * to answer: an idle keep-alive connection holds no answer buffer (4 KiB each;
         * the next answer's malloc reuses a freed one). */
        if (c->out_send.cap > 64 * 1024 || (c->out_fill.len == 0 && c->win_head == c->win_tail))
            buf_free(&c->out_send);
    }
    send_kick(r, c);
    conn_advance(r, c);
}

/* Offers their request again to connections the application refused, starting where
 * the last round stopped so that no connection is always last. */
static void resume_busy(struct reactor *r)
{
    r->resume_wanted = false;
    r->resuming = true;
    uint32_t words = (r->conns_high + 63) / 64;
    for (uint32_t k = 0; k < words && r->busy_count > 0; k++) {
        uint32_t w = (r->busy_next_word + k) % words;
        uint64_t bits = r->busy_bits[w];
        while (bits) {
            uint32_t idx = w * 64 + (uint32_t)__builtin_ctzll(bits);
            bits &= bits - 1;
            struct conn *c = &r->conns[idx];
            busy_set(r, c, false);
            conn_advance(r, c);
            if (busy_is(r, c)) { /* still refused: the application is full again */
                r->busy_next_word = w;
                r->resuming = false;
                return;
            }
        }
    }
    r->resuming = false;
}

/* Connections waiting for the application while it has made no progress (no
 * reactor_resume) for REACTOR_BUSY_WAIT_MAX_MS: the application is stuck (a shard
 * stalled on its disk), so their requests, and their next ones until one is taken, are
 * answered 503 instead of waiting longer. While it makes progress, however slowly,
 * they wait their turn. */
static void expire_busy(struct reactor *r)
{
    uint64_t since = r->progress_ms > r->wait_start_ms ? r->progress_ms : r->wait_start_ms;
    if (r->now_ms - since < REACTOR_BUSY_WAIT_MAX_MS)
        return;
    uint32_t words = (r->conns_high + 63) / 64;
    for (uint32_t w = 0; w < words; w++)
        for (uint64_t bits = r->busy_bits[w]; bits; bits &= bits - 1)
            r->conns[w * 64 + (uint32_t)__builtin_ctzll(bits)].overloaded = true;
}

/* ---- accept, timers, stop ------------------------------------------------------------ */

static void arm_accept(struct reactor *r)
{
    if (r->accept_armed || r->stopping)
        return;
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_multishot_accept(sqe, r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, UD(UOP_ACCEPT, 0, 0));
    r->accept_armed = true;
}

/* Over a connection cap: a best-effort answer on the raw socket, then close. Over the
 * core's cap (--max-connections): 503 overloaded; over the address's cap: 429
 * rate_limited. */
static void reject_connection(struct reactor *r, int fd, int status)
{
    char body[API_ERROR_BODY_MAX_BYTES], msg[API_ERROR_BODY_MAX_BYTES + CONN_ANSWER_HEAD_MAX_BYTES];
    char rid[REQUEST_ID_MAX_BYTES + 1];
    snprintf(rid, sizeof(rid), "%s-%u-%lx", r->rid_prefix, r->cfg.core,
             (unsigned long)++r->rid_counter);
    bool mine = status == 503;
    size_t blen = reactor_error_body(
        body, mine ? "overloaded" : "rate_limited",
        mine ? "too many connections" : "too many connections from this address", rid);
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 %d %s\r\nServer: ringpay\r\n%.*s"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                     "X-Request-Id: %s\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s",
                     status, http_status_reason(status), (int)r->date_len, r->date_hdr, blen, rid,
                     body);
    ssize_t w = send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)w; /* best effort: the client is refused either way */
    close(fd);
    metrics_add(&r->metrics.connections_rejected, 1);
}

/* A new connection: a balancer's waits for its PROXY header (its client is counted
 * then), anyone else's is counted against its address's cap now. */
static void accept_one(struct reactor *r, int fd)
{
    struct sockaddr_storage peer;
    socklen_t sl = sizeof(peer);
    if (getpeername(fd, (struct sockaddr *)&peer, &sl) != 0)
        memset(&peer, 0, sizeof(peer)); /* gone already: its first receive will say so */
    bool proxied = r->cfg.proxy_from && cidr_list_match(r->cfg.proxy_from, &peer);
    bool count = r->clients_on && !proxied;
    uint8_t key[16];
    clients_key(&peer, key);
    if (count && clients_connect(&r->clients, key, (int64_t)r->now_ms) != 0) {
        reject_connection(r, fd, 429);
        return;
    }
    struct conn *c = conn_alloc(r, fd, &peer);
    if (c == NULL) {
        if (count)
            clients_disconnect(&r->clients, key);
        reject_connection(r, fd, 503);
        return;
    }
    c->await_proxy = proxied;
    c->counted = count;
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    arm_recv(r, c);
}

static void on_accept(struct reactor *r, int res, unsigned flags)
{
    if (!(flags & IORING_CQE_F_MORE))
        r->accept_armed = false;
    if (res < 0) {
        if (res != -ECANCELED && res != -EINTR && res != -ECONNABORTED) {
            char err[16];
            snprintf(err, sizeof(err), "%d", -res);
            log_write(LOG_WARN, "accept failed", "errno", err, NULL);
        }
    } else if (r->stopping) {
        close(res);
    } else {
        accept_one(r, res);
    }
    arm_accept(r);
}

static void arm_tick(struct reactor *r)
{
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_timeout(sqe, &r->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(UOP_TICK, 0, 0));
}

static void check_timeouts(struct reactor *r, struct conn *c)
{
    uint64_t now = r->now_ms;
    if (c->state == CONN_LINGER) {
        if (now >= c->linger_deadline_ms)
            conn_kill(r, c);
        return;
    }
    if (c->state != CONN_OPEN && c->state != CONN_CLOSING)
        return;
    /* A client that stopped reading: its answers have not moved for the idle time. */
    if (c->send_inflight && now - c->send_wait_ms >= r->cfg.idle_timeout_ms) {
        metrics_add(&r->metrics.timeouts, 1);
        conn_kill(r, c);
        return;
    }
    if (c->state != CONN_OPEN)
        return;
    /* A streamed body that stopped arriving (it has no overall deadline: it may be long). */
    if (c->streaming && c->want_input && now - c->last_active_ms >= r->cfg.idle_timeout_ms) {
        metrics_add(&r->metrics.timeouts, 1);
        conn_kill(r, c);
        return;
    }
    /* Only while we wait for the client's bytes: requests held back by us (window,
     * budget, a busy application) are not the client's delay. */
    if (c->want_input && c->request_start_ms && c->in_len > 0 &&
        now - c->request_start_ms >= r->cfg.header_timeout_ms) {
        metrics_add(&r->metrics.timeouts, 1);
        reply_fatal(r, c, 408, "request not received in time");
        return;
    }
    if (conn_idle(c) && c->in_len == 0 && now - c->last_active_ms >= r->cfg.idle_timeout_ms) {
        metrics_add(&r->metrics.timeouts, 1);
        conn_kill(r, c);
    }
}

static void on_tick(struct reactor *r)
{
    refresh_clock(r);
    for (uint32_t i = 0; i < r->conns_high; i++) {
        struct conn *c = &r->conns[i];
        if (c->state != CONN_FREE)
            check_timeouts(r, c);
    }
    if (r->busy_count > 0) {
        r->resume_wanted = true; /* a safety net: the application may have room again */
        expire_busy(r);
    }
    arm_tick(r);
}

static void arm_stop_read(struct reactor *r)
{
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_read(sqe, r->stop_fd, &r->stop_val, sizeof(r->stop_val), 0);
    io_uring_sqe_set_data64(sqe, UD(UOP_STOP, 0, 0));
}

static void begin_stop(struct reactor *r)
{
    if (r->stopping)
        return;
    r->stopping = true;
    r->stop_deadline_ms = r->now_ms + SHUTDOWN_GRACE_MS;
    if (r->accept_armed) {
        struct io_uring_sqe *sqe = get_sqe(r);
        io_uring_prep_cancel64(sqe, UD(UOP_ACCEPT, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, UD(UOP_IGNORE, 0, 0));
        io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
    }
    /* The cancelled accept holds its own file reference; dropping ours stops the kernel
     * from queueing new handshakes once that reference is gone. */
    close(r->listen_fd);
    r->listen_fd = -1;
    /* Idle connections go now. One with answers pending closes after them; one in the
     * middle of receiving a request keeps reading it, answers it with Connection:
     * close, and goes (bounded by the request timeout and the grace period). */
    for (uint32_t i = 0; i < r->conns_high; i++) {
        struct conn *c = &r->conns[i];
        if (c->state != CONN_OPEN)
            continue;
        if (c->streaming) /* a long body cannot finish within the grace period */
            stream_end(r, c, -ESHUTDOWN);
        if (!conn_idle(c))
            c->state = CONN_CLOSING;
        else if (c->in_len == 0)
            conn_kill(r, c);
    }
}

void reactor_stop(struct reactor *r)
{
    r->stop_requested = 1;
    uint64_t one = 1;
    ssize_t w = write(r->stop_fd, &one, sizeof(one));
    (void)w; /* an eventfd write of 1 cannot fail short of overflow */
}

static struct conn *conn_of_cqe(struct reactor *r, uint64_t ud)
{
    struct conn *c = &r->conns[UD_IDX(ud)];
    ASSERT(UD_IDX(ud) < r->cfg.max_connections && c->gen == UD_GEN(ud));
    return c;
}

static void handle_cqe(struct reactor *r, const struct io_uring_cqe *cqe)
{
    uint64_t ud = cqe->user_data;
    if (ud == REACTOR_WAKE_TAG) {
        if (r->cfg.handler->on_wake)
            r->cfg.handler->on_wake(r->cfg.handler_ctx, r, cqe->res);
        return;
    }
    switch (UD_OP(ud)) {
    case UOP_ACCEPT:
        on_accept(r, cqe->res, cqe->flags);
        break;
    case UOP_RECV:
        on_recv(r, conn_of_cqe(r, ud), cqe->res);
        break;
    case UOP_SEND:
        on_send(r, conn_of_cqe(r, ud), cqe->res);
        break;
    case UOP_TICK:
        on_tick(r);
        break;
    case UOP_STOP:
        begin_stop(r);
        break;
    case UOP_LOG:
        accesslog_done(&r->alog, cqe->res);
        break;
    case UOP_IGNORE:
        break;
    default:
        UNREACHABLE();
    }
}

/* ---- the loop ---------------------------------------------------------------------- */

static void pin_thread(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    int err = pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
    if (err) {
        char c[16];
        snprintf(c, sizeof(c), "%d", cpu);
        log_write(LOG_WARN, "could not pin reactor thread", "cpu", c, NULL);
    }
}

/* At exit: the write in flight completes (its buffer must not change under it), then
 * the rest is written synchronously. */
static void finish_access_log(struct reactor *r)
{
    for (int spins = 0; r->alog.inflight > 0 && spins < 1000; spins++) {
        struct io_uring_cqe *cqe;
        struct __kernel_timespec ts = {.tv_nsec = 10 * 1000000};
        if (io_uring_submit_and_wait_timeout(&r->ring, &cqe, 1, &ts, NULL) < 0 && spins > 100)
            break;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&r->ring, head, cqe)
        {
            if (UD_OP(cqe->user_data) == UOP_LOG && cqe->user_data != REACTOR_WAKE_TAG)
                accesslog_done(&r->alog, cqe->res);
            seen++;
        }
        io_uring_cq_advance(&r->ring, seen);
    }
    if (r->alog.inflight == 0)
        accesslog_drain(&r->alog);
}

int reactor_run(struct reactor *r)
{
    pin_thread(r->cfg.cpu);
    /* liburing 2.3 declares io_uring_enable_rings() but its library does not export
     * it, so the register call is made directly. */
    int err = (int)syscall(__NR_io_uring_register, r->ring.ring_fd, IORING_REGISTER_ENABLE_RINGS,
                           NULL, 0);
    if (err) {
        log_write(LOG_ERROR, "io_uring_enable_rings failed", NULL);
        return err;
    }
    refresh_clock(r);
    arm_accept(r);
    arm_tick(r);
    arm_stop_read(r);
    for (;;) {
        if (r->resume_wanted)
            resume_busy(r);
        if (r->cfg.handler->on_turn)
            r->cfg.handler->on_turn(r->cfg.handler_ctx, r);
        accesslog_flush(&r->alog, &r->ring, UD(UOP_LOG, 0, 0));
        err = io_uring_submit_and_wait(&r->ring, 1);
        if (err < 0 && err != -EINTR && err != -ETIME && err != -EBUSY) {
            char e[16];
            snprintf(e, sizeof(e), "%d", -err);
            log_write(LOG_ERROR, "io_uring_submit_and_wait failed", "errno", e, NULL);
            return err;
        }
        r->now_ms = clock_mono_ns() / 1000000ull;
        struct io_uring_cqe *cqe;
        unsigned head, seen = 0;
        io_uring_for_each_cqe(&r->ring, head, cqe)
        {
            handle_cqe(r, cqe);
            seen++;
        }
        io_uring_cq_advance(&r->ring, seen);
        if (r->stopping && (r->conns_open == 0 || r->now_ms >= r->stop_deadline_ms))
            break;
    }
    finish_access_log(r);
    return 0;
}

/* ---- setup ----------------------------------------------------------------------- */

static int ring_setup(struct reactor *r, char *why, size_t why_bytes)
{
    struct io_uring_params p = {
        /* R_DISABLED: the ring is set up here but its single issuer is the reactor
         * thread, which enables it first thing in reactor_run(). */
        .flags = IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN |
                 IORING_SETUP_COOP_TASKRUN | IORING_SETUP_CQSIZE | IORING_SETUP_R_DISABLED,
        .cq_entries = REACTOR_RING_ENTRIES * 4,
    };
    int err = io_uring_queue_init_params(REACTOR_RING_ENTRIES, &r->ring, &p);
    if (err == -ENOSYS || err == -EPERM || err == -EACCES) {
        snprintf(why, why_bytes,
                 "io_uring is unavailable (io_uring_setup: %s): the kernel lacks it, "
                 "kernel.io_uring_disabled is set, or a seccomp filter blocks it",
                 strerror(-err));
        return err;
    }
    if (err == -EINVAL) {
        snprintf(why, why_bytes,
                 "io_uring lacks IORING_SETUP_SINGLE_ISSUER/DEFER_TASKRUN (needs Linux 6.1+)");
        return err;
    }
    if (err) {
        snprintf(why, why_bytes, "io_uring_setup failed: %s", strerror(-err));
        return err;
    }
    struct io_uring_probe *probe = io_uring_get_probe_ring(&r->ring);
    static const struct {
        int op;
        const char *name;
    } need[] = {
        {IORING_OP_ACCEPT, "ACCEPT"},     {IORING_OP_RECV, "RECV"},
        {IORING_OP_SEND, "SEND"},         {IORING_OP_TIMEOUT, "TIMEOUT"},
        {IORING_OP_READ, "READ"},         {IORING_OP_ASYNC_CANCEL, "ASYNC_CANCEL"},
        {IORING_OP_MSG_RING, "MSG_RING"}, {IORING_OP_WRITE, "WRITE"},
    };
    for (size_t i = 0; probe && i < ARRAY_LEN(need); i++)
        if (!io_uring_opcode_supported(probe, need[i].op)) {
            snprintf(why, why_bytes, "io_uring lacks IORING_OP_%s", need[i].name);
            io_uring_free_probe(probe);
            io_uring_queue_exit(&r->ring);
            return -EOPNOTSUPP;
        }
    if (probe)
        io_uring_free_probe(probe);
    return 0;
}

static int listener_setup(struct reactor *r, char *why, size_t why_bytes)
{
    const struct sockaddr *sa = (const struct sockaddr *)&r->cfg.addr;
    int fd = socket(sa->sa_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (fd < 0)
        goto fail;
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) < 0)
        goto fail_close;
    if (bind(fd, sa, r->cfg.addr_len) < 0)
        goto fail_close;
    if (listen(fd, 4096) < 0)
        goto fail_close;
    struct sockaddr_storage bound;
    socklen_t len = sizeof(bound);
    getsockname(fd, (struct sockaddr *)&bound, &len);
    r->port = ntohs(bound.ss_family == AF_INET6 ? ((struct sockaddr_in6 *)&bound)->sin6_port
                                                : ((struct sockaddr_in *)&bound)->sin_port);
    r->listen_fd = fd;
    return 0;

fail_close:
    close(fd);
fail:;
    int err = -errno;
    snprintf(why, why_bytes, "cannot listen: %s", strerror(errno));
    return err;
}

static int pools_setup(struct reactor *r)
{
    size_t n = r->cfg.max_connections;
    r->conns = calloc(n, sizeof(struct conn));
    r->small_bufs = malloc(n * (size_t)CONN_SMALL_BUF_BYTES);
    r->large_bufs = malloc((size_t)CONN_LARGE_BUFS_PER_CORE * CONN_LARGE_BUF_BYTES);
    r->busy_bits = calloc((n + 63) / 64, sizeof(uint64_t));
    if (r->conns == NULL || r->small_bufs == NULL || r->large_bufs == NULL || r->busy_bits == NULL)
        return -ENOMEM;
    for (uint32_t i = 0; i < n; i++) {
        r->conns[i].idx = i;
        r->conns[i].small = r->small_bufs + (size_t)i * CONN_SMALL_BUF_BYTES;
        r->conns[i].next_free = i + 1 < n ? i + 1 : NO_CONN;
    }
    r->free_head = 0;
    for (uint32_t i = 0; i < CONN_LARGE_BUFS_PER_CORE; i++)
        r->large_free[i] = CONN_LARGE_BUFS_PER_CORE - 1 - i;
    r->large_free_count = CONN_LARGE_BUFS_PER_CORE;
    return 0;
}

int reactor_create(struct reactor **out, const struct reactor_config *cfg, char *why,
                   size_t why_bytes)
{
    ASSERT(cfg->handler && cfg->handler->on_request);
    ASSERT(cfg->max_connections >= 1 && cfg->max_connections <= CONN_PER_CORE_MAX);
    struct reactor *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return -ENOMEM;
    r->cfg = *cfg;
    r->listen_fd = -1;
    r->stop_fd = -1;
    r->tick_ts.tv_nsec = (long long)REACTOR_TICK_MS * 1000000;
    metrics_init(&r->metrics, cfg->core, cfg->route_names, cfg->route_count);
    uint32_t rnd = 0;
    if (getrandom(&rnd, sizeof(rnd), 0) != sizeof(rnd))
        rnd = (uint32_t)clock_mono_ns();
    snprintf(r->rid_prefix, sizeof(r->rid_prefix), "%08x", rnd);

    int err = ring_setup(r, why, why_bytes);
    if (err)
        goto out_free;
    err = pools_setup(r);
    if (err) {
        snprintf(why, why_bytes, "out of memory for %u connections", cfg->max_connections);
        goto out_ring;
    }
    err = accesslog_init(&r->alog, cfg->access_log_fd, cfg->access_log, cfg->core);
    if (err) {
        snprintf(why, why_bytes, "out of memory for the access log");
        goto out_ring;
    }
    r->clients_on = cfg->client_budget.rate_per_s > 0 || cfg->client_max_conns > 0;
    if (r->clients_on) {
        err = clients_init(&r->clients, &cfg->client_budget, cfg->client_max_conns);
        if (err) {
            snprintf(why, why_bytes, "out of memory for the client address table");
            goto out_ring;
        }
    }
    r->stop_fd = eventfd(0, EFD_CLOEXEC);
    if (r->stop_fd < 0) {
        err = -errno;
        snprintf(why, why_bytes, "eventfd: %s", strerror(errno));
        goto out_ring;
    }
    err = listener_setup(r, why, why_bytes);
    if (err)
        goto out_ring;
    refresh_clock(r);
    *out = r;
    return 0;

out_ring:
    io_uring_queue_exit(&r->ring);
out_free:
    if (r->stop_fd >= 0)
        close(r->stop_fd);
    accesslog_destroy(&r->alog);
    clients_destroy(&r->clients);
    free(r->conns);
    free(r->small_bufs);
    free(r->large_bufs);
    free(r->busy_bits);
    free(r);
    return err;
}

void reactor_destroy(struct reactor *r)
{
    if (r == NULL)
        return;
    for (uint32_t i = 0; i < r->conns_high; i++) {
        struct conn *c = &r->conns[i];
        if (c->state != CONN_FREE) {
            close(c->fd);
            buf_free(&c->out_fill);
            buf_free(&c->out_send);
            for (unsigned s = 0; s < CONN_PIPELINE_MAX; s++)
                free(c->slots[s].resp);
        }
    }
    io_uring_queue_exit(&r->ring);
    if (r->listen_fd >= 0)
        close(r->listen_fd);
    close(r->stop_fd);
    accesslog_destroy(&r->alog);
    clients_destroy(&r->clients);
    free(r->conns);
    free(r->small_bufs);
    free(r->large_bufs);
    free(r->busy_bits);
    free(r);
}

struct io_uring *reactor_ring(struct reactor *r)
{
    return &r->ring;
}

int reactor_ring_fd(struct reactor *r)
{
    return r->ring.ring_fd;
}

unsigned reactor_core(const struct reactor *r)
{
    return r->cfg.core;
}

const struct metrics *reactor_metrics(const struct reactor *r)
{
    return &r->metrics;
}

const struct accesslog *reactor_accesslog(const struct reactor *r)
{
    return &r->alog;
}

int reactor_port(const struct reactor *r)
{
    return r->port;
}
