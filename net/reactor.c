/*
 * The reactor (see reactor.h): io_uring event loop, listener, connections, timers.
 *
 * Invariants:
 *   - Only this reactor's thread touches its ring, connections and metrics writes.
 *   - A connection is reused only after every operation it had in flight completed
 *     (recv_armed and send_inflight both false); its generation changes on reuse, so
 *     late answers and CQEs for the old connection are recognised and dropped.
 *   - At most one send is in flight per connection. Answers are appended to out_fill
 *     strictly in request order (window slots hold answers that came early); a send
 *     takes the whole of out_fill by swapping it with the empty out_send.
 *   - The input buffer always starts at the first byte of the request being parsed.
 *   - Memory per core is bounded: connections and their small buffers are one pool
 *     sized at start, large buffers another; output and overflow are capped.
 */
#define _GNU_SOURCE
#include "net/reactor.h"

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
#include <sys/mman.h>
#include <sys/random.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "engine/assert.h"
#include "engine/limits.h"
#include "net/log.h"

enum op {
    OP_ACCEPT = 1,
    OP_RECV,
    OP_SEND,
    OP_TICK,
    OP_STOP,
    OP_IGNORE, /* cancels: their own completions carry nothing we need */
};

#define UD(op, gen, idx) (((uint64_t)(op) << 56) | ((uint64_t)((gen)&0xffffffu) << 32) | (idx))
#define UD_OP(ud)        ((unsigned)((ud) >> 56))
#define UD_GEN(ud)       ((uint32_t)(((ud) >> 32) & 0xffffffu))
#define UD_IDX(ud)       ((uint32_t)(ud))

#define BUF_GROUP          0
#define RING_ENTRIES       4096
#define OVERFLOW_MAX_BYTES (64 * 1024)

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
    uint64_t start_ns;
    char *resp; /* SLOT_READY: the whole answer, waiting for earlier ones */
    size_t resp_len;
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
    bool recv_paused; /* backpressure: recv cancelled until the window drains */
    bool send_inflight;
    bool read_closed; /* peer sent EOF */
    bool continue_owed;
    bool in_large;
    char *in;
    uint32_t in_len, in_cap;
    char *small;
    struct http_parser parser;
    struct http_request req;   /* the request being parsed: the parser accumulates it */
    uint64_t request_start_ms; /* first byte of the request being read; 0: none */
    uint64_t last_active_ms;
    uint64_t last_probe_ms;
    uint64_t linger_deadline_ms;
    uint32_t win_head, win_tail; /* oldest unanswered seq, next seq */
    size_t send_off;
    struct buf out_fill, out_send, overflow;
    uint32_t next_free;
    struct slot slots[CONN_PIPELINE_MAX];
};

struct reactor {
    struct io_uring ring;
    struct reactor_config cfg;
    struct metrics metrics;
    int listen_fd;
    int stop_fd;
    int port;
    uint64_t stop_val;
    volatile int stop_requested;
    bool stopping;
    bool accept_armed;
    uint64_t stop_deadline_ms;

    struct io_uring_buf_ring *br;
    char *br_bufs;
    size_t br_ring_bytes;
    unsigned br_pending; /* recycled buffers not yet published */

    struct conn *conns;
    char *small_bufs;
    uint32_t free_head;  /* UINT32_MAX: empty */
    uint32_t conns_high; /* slots ever used: the tick scans [0, conns_high) */
    uint32_t conns_open;

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

static uint64_t mono_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void refresh_clock(struct reactor *r)
{
    r->now_ms = mono_ns() / 1000000ull;
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

/* ---- buffer ring ---------------------------------------------------------------- */

static int buf_ring_setup(struct reactor *r)
{
    r->br_ring_bytes = RECV_BUF_COUNT * sizeof(struct io_uring_buf);
    void *ring_mem =
        mmap(NULL, r->br_ring_bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (ring_mem == MAP_FAILED)
        return -errno;
    r->br = ring_mem;
    r->br_bufs = aligned_alloc(4096, (size_t)RECV_BUF_COUNT * RECV_BUF_BYTES);
    if (r->br_bufs == NULL)
        return -ENOMEM;
    io_uring_buf_ring_init(r->br);
    struct io_uring_buf_reg reg = {
        .ring_addr = (uintptr_t)r->br,
        .ring_entries = RECV_BUF_COUNT,
        .bgid = BUF_GROUP,
    };
    int err = io_uring_register_buf_ring(&r->ring, &reg, 0);
    if (err)
        return err;
    int mask = io_uring_buf_ring_mask(RECV_BUF_COUNT);
    for (unsigned i = 0; i < RECV_BUF_COUNT; i++)
        io_uring_buf_ring_add(r->br, r->br_bufs + (size_t)i * RECV_BUF_BYTES, RECV_BUF_BYTES,
                              (unsigned short)i, mask, (int)i);
    io_uring_buf_ring_advance(r->br, RECV_BUF_COUNT);
    return 0;
}

static void buf_ring_recycle(struct reactor *r, unsigned bid)
{
    io_uring_buf_ring_add(r->br, r->br_bufs + (size_t)bid * RECV_BUF_BYTES, RECV_BUF_BYTES,
                          (unsigned short)bid, io_uring_buf_ring_mask(RECV_BUF_COUNT),
                          (int)r->br_pending);
    r->br_pending++;
}

static void buf_ring_publish(struct reactor *r)
{
    if (r->br_pending) {
        io_uring_buf_ring_advance(r->br, (int)r->br_pending);
        r->br_pending = 0;
    }
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

static struct conn *conn_alloc(struct reactor *r, int fd)
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
    c->last_active_ms = r->now_ms;
    http_parser_init(&c->parser);
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
    buf_free(&c->overflow);
    c->state = CONN_FREE;
    c->gen = (c->gen + 1) & 0xffffffu;
    c->next_free = r->free_head;
    r->free_head = c->idx;
    r->conns_open--;
    metrics_add(&r->metrics.connections_open, -1);
}

static void conn_kill(struct reactor *r, struct conn *c)
{
    if (c->state == CONN_DEAD || c->state == CONN_FREE)
        return;
    c->state = CONN_DEAD;
    /* shutdown ends a pending multishot recv with EOF and fails a pending send. */
    shutdown(c->fd, SHUT_RDWR);
    if (c->recv_armed) {
        struct io_uring_sqe *sqe = get_sqe(r);
        io_uring_prep_cancel64(sqe, UD(OP_RECV, c->gen, c->idx), 0);
        io_uring_sqe_set_data64(sqe, UD(OP_IGNORE, 0, 0));
        io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
    }
    conn_maybe_free(r, c);
}

static void arm_recv(struct reactor *r, struct conn *c)
{
    if (c->recv_armed || c->recv_paused || c->read_closed || c->state == CONN_DEAD)
        return;
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_recv_multishot(sqe, c->fd, NULL, 0, 0);
    sqe->flags |= IOSQE_BUFFER_SELECT;
    sqe->buf_group = BUF_GROUP;
    io_uring_sqe_set_data64(sqe, UD(OP_RECV, c->gen, c->idx));
    c->recv_armed = true;
}

static void pause_recv(struct reactor *r, struct conn *c)
{
    if (c->recv_paused)
        return;
    c->recv_paused = true;
    if (c->recv_armed) {
        struct io_uring_sqe *sqe = get_sqe(r);
        io_uring_prep_cancel64(sqe, UD(OP_RECV, c->gen, c->idx), 0);
        io_uring_sqe_set_data64(sqe, UD(OP_IGNORE, 0, 0));
        io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
    }
}

/* ---- answers ---------------------------------------------------------------------- */

static const char *status_line(int status)
{
    return http_status_reason(status);
}

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
    p = put_str(p, status_line(resp->status));
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

static void conn_process(struct reactor *r, struct conn *c);

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
    io_uring_sqe_set_data64(sqe, UD(OP_SEND, c->gen, c->idx));
    c->send_inflight = true;
}

/* Moves every answer that is next in order into out_fill. */
static void window_flush(struct conn *c)
{
    while (c->win_head != c->win_tail) {
        struct slot *s = &c->slots[c->win_head % CONN_PIPELINE_MAX];
        if (s->state != SLOT_READY)
            break;
        if (buf_reserve(&c->out_fill, s->resp_len) == 0) {
            memcpy(c->out_fill.p + c->out_fill.len, s->resp, s->resp_len);
            c->out_fill.len += s->resp_len;
        }
        free(s->resp);
        s->resp = NULL;
        s->state = SLOT_FREE;
        c->win_head++;
    }
    if (c->continue_owed && c->win_head == c->win_tail && buf_reserve(&c->out_fill, 32) == 0) {
        static const char cont[] = "HTTP/1.1 100 Continue\r\n\r\n";
        memcpy(c->out_fill.p + c->out_fill.len, cont, sizeof(cont) - 1);
        c->out_fill.len += sizeof(cont) - 1;
        c->continue_owed = false;
    }
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
    metrics_request(&r->metrics, resp->route, resp->status, mono_ns() - s->start_ns);
    bool close = s->close_after || r->stopping;
    size_t bound = answer_bound(s, resp);
    if (ref.seq == c->win_head) {
        if (buf_reserve(&c->out_fill, bound) != 0) {
            conn_kill(r, c);
            return;
        }
        c->out_fill.len += answer_write(r, c->out_fill.p + c->out_fill.len, s, resp, close);
        s->state = SLOT_FREE;
        c->win_head++;
        window_flush(c);
    } else {
        s->resp = malloc(bound);
        if (s->resp == NULL) {
            conn_kill(r, c);
            return;
        }
        s->resp_len = answer_write(r, s->resp, s, resp, close);
        s->state = SLOT_READY;
    }
    if (close && c->state == CONN_OPEN)
        c->state = CONN_CLOSING;
    send_kick(r, c);
}

size_t reactor_error_body(char *buf, size_t cap, const char *code, const char *message,
                          const char *request_id)
{
    int n = snprintf(buf, cap,
                     "{\"error\":{\"code\":\"%s\",\"message\":\"%s\",\"param\":null,"
                     "\"request_id\":\"%s\"}}",
                     code, message, request_id);
    ASSERT(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

void reactor_reply_error(struct reactor *r, const struct reactor_request *req, int status,
                         unsigned route, const char *code, const char *message,
                         const char *extra_headers)
{
    char body[512];
    size_t len = reactor_error_body(body, sizeof(body), code, message, req->request_id);
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
    s->start_ns = mono_ns();
    const struct http_header *h = req ? http_header_find(req, buf, "x-request-id") : NULL;
    if (h && request_id_ok(buf + h->value.off, h->value.len)) {
        memcpy(s->request_id, buf + h->value.off, h->value.len);
        s->request_id_len = (uint8_t)h->value.len;
    } else {
        int n = snprintf(s->request_id, sizeof(s->request_id), "%s-%u-%lx", r->rid_prefix,
                         r->cfg.core, (unsigned long)++r->rid_counter);
        s->request_id_len = (uint8_t)n;
    }
    s->request_id[s->request_id_len] = '\0';
    return s;
}

static const char *error_code(int status)
{
    switch (status) {
    case 408:
        return "request_timeout";
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
    c->in_len = 0;
    c->request_start_ms = 0;
    reactor_reply_error(r, &rq, status, r->cfg.route_other, error_code(status), message,
                        status == 503 ? "Retry-After: 1\r\n" : NULL);
}

static void dispatch(struct reactor *r, struct conn *c, const struct http_request *req)
{
    struct slot *s = slot_open(r, c, req, c->in);
    struct reactor_request rq = {
        .ref = {.conn = c->idx, .gen = c->gen, .seq = s->seq},
        .http = req,
        .buf = c->in,
        .request_id = s->request_id,
        .request_id_len = s->request_id_len,
    };
    if (!req->keep_alive || r->stopping)
        c->state = CONN_CLOSING;
    r->cfg.handler->on_request(r->cfg.handler_ctx, r, &rq);
}

/* Moves the request being read to a large buffer; false when the pool is empty. */
static bool grow_input(struct reactor *r, struct conn *c)
{
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

static void shrink_input(struct reactor *r, struct conn *c)
{
    if (!c->in_large || c->in_len > CONN_SMALL_BUF_BYTES)
        return;
    memcpy(c->small, c->in, c->in_len);
    large_release(r, c);
}

static bool window_full(const struct conn *c)
{
    return c->win_tail - c->win_head >= CONN_PIPELINE_MAX ||
           c->out_fill.len + c->out_send.len > CONN_OUT_HIGH_BYTES;
}

/* Parses and dispatches every complete request in the input buffer. */
static void conn_process(struct reactor *r, struct conn *c)
{
    struct http_request *req = &c->req;
    while (c->state == CONN_OPEN && c->in_len > 0 && !window_full(c)) {
        if (c->request_start_ms == 0)
            c->request_start_ms = r->now_ms ? r->now_ms : 1;
        int rc = http_parse(&c->parser, c->in, c->in_len, req);
        if (rc == HTTP_PARSE_AGAIN)
            return;
        if (rc == HTTP_PARSE_CONTINUE) {
            c->continue_owed = true;
            window_flush(c);
            send_kick(r, c);
            continue;
        }
        if (rc == HTTP_PARSE_ERROR) {
            reply_fatal(r, c, req->error_status ? req->error_status : 400,
                        req->error_reason ? req->error_reason : "malformed request");
            return;
        }
        ASSERT(rc == HTTP_PARSE_DONE && req->wire_bytes <= c->in_len);
        c->continue_owed = false;
        dispatch(r, c, req);
        if (c->state == CONN_DEAD || c->state == CONN_FREE)
            return;
        memmove(c->in, c->in + req->wire_bytes, c->in_len - req->wire_bytes);
        c->in_len -= req->wire_bytes;
        c->request_start_ms = 0;
        http_parser_init(&c->parser);
        shrink_input(r, c);
    }
}

/* ---- input -------------------------------------------------------------------- */

/* Takes n received bytes into the connection; whatever cannot be taken now (the
 * window is full and the buffer too) waits in the capped overflow buffer. */
static void conn_input(struct reactor *r, struct conn *c, const char *data, size_t n)
{
    c->last_active_ms = r->now_ms;
    if (c->state == CONN_LINGER || c->state == CONN_CLOSING)
        return; /* no more requests will be read: discard */
    if (c->overflow.len) {
        if (c->overflow.len + n > OVERFLOW_MAX_BYTES || buf_reserve(&c->overflow, n)) {
            conn_kill(r, c);
            return;
        }
        memcpy(c->overflow.p + c->overflow.len, data, n);
        c->overflow.len += n;
        return;
    }
    while (n > 0 && c->state == CONN_OPEN) {
        size_t room = c->in_cap - c->in_len;
        size_t take = n < room ? n : room;
        memcpy(c->in + c->in_len, data, take);
        c->in_len += (uint32_t)take;
        data += take;
        n -= take;
        uint32_t before = c->in_len;
        conn_process(r, c);
        if (c->state != CONN_OPEN || n == 0)
            break;
        if (c->in_len < c->in_cap)
            continue;
        if (c->in_len == before && !window_full(c)) {
            /* One request needs more room than the small buffer. */
            if (!grow_input(r, c)) {
                reply_fatal(r, c, c->in_large ? 400 : 503,
                            c->in_large ? "request exceeds the buffer" : "out of request buffers");
                return;
            }
            continue;
        }
        /* Backpressure: park the rest and stop receiving until answers drain. */
        if (buf_reserve(&c->overflow, n)) {
            conn_kill(r, c);
            return;
        }
        memcpy(c->overflow.p, data, n);
        c->overflow.len = n;
        pause_recv(r, c);
        return;
    }
}

/* After answers drained: take parked input, resume parsing and receiving. */
static void conn_resume(struct reactor *r, struct conn *c)
{
    if (c->state != CONN_OPEN)
        return;
    if (c->overflow.len && !window_full(c)) {
        struct buf parked = c->overflow;
        c->overflow = (struct buf){0};
        conn_input(r, c, parked.p, parked.len);
        buf_free(&parked);
    } else if (!window_full(c)) {
        conn_process(r, c);
    }
    if (c->state == CONN_OPEN && c->overflow.len == 0 && c->recv_paused && !window_full(c)) {
        c->recv_paused = false;
        arm_recv(r, c);
    }
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
    c->recv_paused = false;
    arm_recv(r, c);
}

static bool conn_idle(const struct conn *c)
{
    return c->win_head == c->win_tail && c->out_fill.len == 0 && c->out_send.len == 0 &&
           !c->send_inflight;
}

/* Decides what a connection does once its sends are done. */
static void conn_settle(struct reactor *r, struct conn *c)
{
    if (c->state == CONN_CLOSING && conn_idle(c)) {
        conn_finish(r, c);
        return;
    }
    if (c->state == CONN_OPEN && c->read_closed && conn_idle(c) && c->in_len == 0) {
        conn_kill(r, c);
        return;
    }
    if (c->state == CONN_OPEN && r->stopping && conn_idle(c) && c->in_len == 0) {
        conn_kill(r, c);
        return;
    }
    conn_resume(r, c);
}

static void on_recv(struct reactor *r, struct conn *c, int res, unsigned flags)
{
    if (!(flags & IORING_CQE_F_MORE))
        c->recv_armed = false;
    if (flags & IORING_CQE_F_BUFFER) {
        unsigned bid = flags >> IORING_CQE_BUFFER_SHIFT;
        if (res > 0 && c->state != CONN_DEAD)
            conn_input(r, c, r->br_bufs + (size_t)bid * RECV_BUF_BYTES, (size_t)res);
        buf_ring_recycle(r, bid);
    }
    if (c->state == CONN_DEAD) {
        conn_maybe_free(r, c);
        return;
    }
    if (res == 0 || (res < 0 && res != -ENOBUFS && res != -ECANCELED)) {
        if (res == 0 && c->state != CONN_LINGER && c->in_len == 0) {
            c->read_closed = true; /* a client may half-close after its last request */
            conn_settle(r, c);
        } else {
            conn_kill(r, c);
        }
        return;
    }
    if (!c->recv_armed)
        arm_recv(r, c); /* ENOBUFS, or the kernel ended the multishot */
    if (c->state != CONN_DEAD)
        send_kick(r, c);
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
    if (c->send_off >= c->out_send.len) {
        c->out_send.len = 0;
        c->send_off = 0;
        if (c->out_send.cap > 64 * 1024)
            buf_free(&c->out_send);
    }
    send_kick(r, c);
    if (!c->send_inflight)
        conn_settle(r, c);
    else
        conn_resume(r, c);
}

/* ---- accept, timers, stop ------------------------------------------------------------ */

static void arm_accept(struct reactor *r)
{
    if (r->accept_armed || r->stopping)
        return;
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_multishot_accept(sqe, r->listen_fd, NULL, NULL, SOCK_CLOEXEC);
    io_uring_sqe_set_data64(sqe, UD(OP_ACCEPT, 0, 0));
    r->accept_armed = true;
}

/* Over the connection cap: a best-effort 503 on the raw socket, then close. */
static void reject_connection(struct reactor *r, int fd)
{
    char body[256], msg[512];
    char rid[40];
    snprintf(rid, sizeof(rid), "%s-%u-%lx", r->rid_prefix, r->cfg.core,
             (unsigned long)++r->rid_counter);
    size_t blen = reactor_error_body(body, sizeof(body), "overloaded", "too many connections", rid);
    int n = snprintf(msg, sizeof(msg),
                     "HTTP/1.1 503 Service Unavailable\r\nServer: ringpay\r\n%.*s"
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n"
                     "X-Request-Id: %s\r\nRetry-After: 1\r\nConnection: close\r\n\r\n%s",
                     (int)r->date_len, r->date_hdr, blen, rid, body);
    ssize_t w = send(fd, msg, (size_t)n, MSG_DONTWAIT | MSG_NOSIGNAL);
    (void)w; /* best effort: the client is refused either way */
    close(fd);
    metrics_add(&r->metrics.connections_rejected, 1);
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
        struct conn *c = conn_alloc(r, res);
        if (c == NULL) {
            reject_connection(r, res);
        } else {
            int one = 1;
            setsockopt(res, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
            arm_recv(r, c);
        }
    }
    arm_accept(r);
}

static void arm_tick(struct reactor *r)
{
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_timeout(sqe, &r->tick_ts, 0, 0);
    io_uring_sqe_set_data64(sqe, UD(OP_TICK, 0, 0));
}

/*
 * A connection silent for a second is asked, once a second, whether its peer is still
 * there. Seen on Linux 6.18 (tests/integration/abort_test.c, about one run in twenty):
 * when a client's data and its RST arrive together, the multishot recv delivers the
 * data and then never completes, although the socket is closed. The timeouts would
 * free such a connection after 10 or 75 s; the probe (one non-blocking MSG_PEEK) frees
 * it within about a second. It consumes nothing: data stays queued for the recv, and
 * an error or EOF means the connection is gone anyway.
 */
static void probe_peer(struct reactor *r, struct conn *c)
{
    uint64_t now = r->now_ms;
    if (!c->recv_armed || now - c->last_active_ms < 1000 || now - c->last_probe_ms < 1000)
        return;
    c->last_probe_ms = now;
    char b;
    ssize_t n = recv(c->fd, &b, 1, MSG_PEEK | MSG_DONTWAIT);
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR)
        conn_kill(r, c); /* reset: nothing can reach the peer any more */
    else if (n == 0 && conn_idle(c))
        conn_kill(r, c); /* EOF; with answers pending, they go out first */
}

static void check_timeouts(struct reactor *r, struct conn *c)
{
    uint64_t now = r->now_ms;
    if (c->state == CONN_LINGER) {
        if (now >= c->linger_deadline_ms)
            conn_kill(r, c);
        return;
    }
    if (c->state != CONN_OPEN)
        return;
    if (c->request_start_ms && c->in_len > 0 &&
        now - c->request_start_ms >= r->cfg.header_timeout_ms) {
        metrics_add(&r->metrics.timeouts, 1);
        reply_fatal(r, c, 408, "request not received in time");
        return;
    }
    if (conn_idle(c) && c->in_len == 0 && now - c->last_active_ms >= r->cfg.idle_timeout_ms) {
        metrics_add(&r->metrics.timeouts, 1);
        conn_kill(r, c);
        return;
    }
    probe_peer(r, c);
}

static void on_tick(struct reactor *r)
{
    refresh_clock(r);
    for (uint32_t i = 0; i < r->conns_high; i++) {
        struct conn *c = &r->conns[i];
        if (c->state != CONN_FREE)
            check_timeouts(r, c);
    }
    arm_tick(r);
}

static void arm_stop_read(struct reactor *r)
{
    struct io_uring_sqe *sqe = get_sqe(r);
    io_uring_prep_read(sqe, r->stop_fd, &r->stop_val, sizeof(r->stop_val), 0);
    io_uring_sqe_set_data64(sqe, UD(OP_STOP, 0, 0));
}

static void begin_stop(struct reactor *r)
{
    if (r->stopping)
        return;
    r->stopping = true;
    r->stop_deadline_ms = r->now_ms + SHUTDOWN_GRACE_MS;
    if (r->accept_armed) {
        struct io_uring_sqe *sqe = get_sqe(r);
        io_uring_prep_cancel64(sqe, UD(OP_ACCEPT, 0, 0), 0);
        io_uring_sqe_set_data64(sqe, UD(OP_IGNORE, 0, 0));
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

static void handle_cqe(struct reactor *r, const struct io_uring_cqe *cqe)
{
    uint64_t ud = cqe->user_data;
    if (ud == REACTOR_WAKE_TAG) {
        if (r->cfg.handler->on_wake)
            r->cfg.handler->on_wake(r->cfg.handler_ctx, r, cqe->res);
        return;
    }
    switch (UD_OP(ud)) {
    case OP_ACCEPT:
        on_accept(r, cqe->res, cqe->flags);
        break;
    case OP_RECV: {
        struct conn *c = &r->conns[UD_IDX(ud)];
        ASSERT(UD_IDX(ud) < r->cfg.max_connections && c->gen == UD_GEN(ud));
        on_recv(r, c, cqe->res, cqe->flags);
        break;
    }
    case OP_SEND: {
        struct conn *c = &r->conns[UD_IDX(ud)];
        ASSERT(UD_IDX(ud) < r->cfg.max_connections && c->gen == UD_GEN(ud));
        on_send(r, c, cqe->res);
        break;
    }
    case OP_TICK:
        on_tick(r);
        break;
    case OP_STOP:
        begin_stop(r);
        break;
    case OP_IGNORE:
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
        if (r->cfg.handler->on_turn)
            r->cfg.handler->on_turn(r->cfg.handler_ctx, r);
        buf_ring_publish(r);
        err = io_uring_submit_and_wait(&r->ring, 1);
        if (err < 0 && err != -EINTR && err != -ETIME && err != -EBUSY) {
            char e[16];
            snprintf(e, sizeof(e), "%d", -err);
            log_write(LOG_ERROR, "io_uring_submit_and_wait failed", "errno", e, NULL);
            return err;
        }
        r->now_ms = mono_ns() / 1000000ull;
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
        .cq_entries = RING_ENTRIES * 4,
    };
    int err = io_uring_queue_init_params(RING_ENTRIES, &r->ring, &p);
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
        {IORING_OP_MSG_RING, "MSG_RING"},
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
    err = buf_ring_setup(r);
    if (err) {
        snprintf(why, why_bytes, "io_uring provided buffer rings unavailable (%s; needs 5.19+)",
                 strerror(-err));
        io_uring_queue_exit(&r->ring);
        return err;
    }
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
    if (r->conns == NULL || r->small_bufs == NULL || r->large_bufs == NULL)
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
        rnd = (uint32_t)mono_ns();
    snprintf(r->rid_prefix, sizeof(r->rid_prefix), "%08x", rnd);

    int err = ring_setup(r, why, why_bytes);
    if (err)
        goto out_free;
    err = pools_setup(r);
    if (err) {
        snprintf(why, why_bytes, "out of memory for %u connections", cfg->max_connections);
        goto out_ring;
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
    free(r->conns);
    free(r->small_bufs);
    free(r->large_bufs);
    free(r->br_bufs);
    if (r->br)
        munmap(r->br, r->br_ring_bytes);
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
            buf_free(&c->overflow);
            for (unsigned s = 0; s < CONN_PIPELINE_MAX; s++)
                free(c->slots[s].resp);
        }
    }
    io_uring_queue_exit(&r->ring);
    if (r->listen_fd >= 0)
        close(r->listen_fd);
    close(r->stop_fd);
    free(r->conns);
    free(r->small_bufs);
    free(r->large_bufs);
    free(r->br_bufs);
    munmap(r->br, r->br_ring_bytes);
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

int reactor_port(const struct reactor *r)
{
    return r->port;
}
