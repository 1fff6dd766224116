/*
 * The reactor: one thread per core, one io_uring, the connections it accepted.
 *
 * A reactor owns a SO_REUSEPORT listener with a multishot accept and, for every
 * connection, an input buffer that its receives fill directly, a parser, and a window
 * of up to CONN_PIPELINE_MAX requests awaiting their answers. The application sees
 * only complete requests (on_request) and answers each exactly once with
 * reactor_reply(), now or later (an answer computed on another core comes back through
 * the application's own rings; on_wake tells it to look). Answers leave in request
 * order whatever order they are given in; one send per connection is in flight at a
 * time and carries every answer that is ready.
 *
 * Backpressure, never a cut-off (SPEC §6): a connection's requests are dispatched only
 * while its window has room and the answers it owes (written but unsent, plus the room
 * reserved for those still being computed) stay under CONN_OUT_MAX_BYTES. While it may
 * not dispatch, the reactor does not receive from it either, so a client that sends
 * faster than it reads is slowed by TCP. Memory per connection is therefore bounded:
 * its input buffer, at most CONN_OUT_MAX_BYTES + one largest answer of output, and its
 * window (engine/limits.h states the sum). The application may also refuse a request
 * for now (on_request returns -EBUSY, e.g. its job pool is empty): the request stays
 * in the input buffer, the connection stops reading, and it is offered again after
 * reactor_resume().
 *
 * Every answer also makes an access-log line (net/accesslog.h), when enabled.
 *
 * Threading: everything here runs on the reactor's thread, except reactor_stop(),
 * which any thread may call (it writes an eventfd).
 */
#ifndef RINGPAY_NET_REACTOR_H
#define RINGPAY_NET_REACTOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

#include "engine/bucket.h"
#include "net/accesslog.h"
#include "net/cidr.h"
#include "net/http.h"
#include "net/metrics.h"

struct reactor;
struct io_uring;

/* Names one request's place in its connection's answer window. Stale refs (the
 * connection closed meanwhile) are recognised and their answers dropped. */
struct reactor_ref {
    uint32_t conn;
    uint32_t gen;
    uint32_t seq;
};

/* What the application sees of a request. Valid only during on_request. */
struct reactor_request {
    struct reactor_ref ref;
    const struct http_request *http;
    const struct sockaddr_storage *client; /* the peer, or the PROXY header's source */
    const char *buf;                       /* the offsets of http are relative to this */
    const char *request_id;                /* NUL-terminated, echoed from X-Request-Id or made */
    size_t request_id_len;
    bool body_streamed; /* the body is not here: it comes through on_body */
};

struct reactor_response {
    int status;
    unsigned route;           /* metrics label index */
    const char *content_type; /* NULL: no body type */
    const char *headers;      /* extra header lines, each ending in CRLF, or NULL */
    const char *body;
    size_t body_len;
};

struct reactor_handler {
    /* 0: the request is taken (answered now or later with reactor_reply). -EBUSY: not
     * now, and nothing was answered; the reactor keeps the request and offers it
     * again after reactor_resume(). */
    int (*on_request)(void *ctx, struct reactor *r, const struct reactor_request *req);
    /* A wake-up CQE with user_data == REACTOR_WAKE_TAG arrived (cross-core work). */
    void (*on_wake)(void *ctx, struct reactor *r, int res);
    /* Once per turn, before the reactor submits and sleeps: flush cross-core work. */
    void (*on_turn)(void *ctx, struct reactor *r);
    /*
     * Streamed bodies (optional; both or neither). stream_body is asked about a request
     * whose head is complete and whose body (Content-Length >= 1 byte, or chunked) has
     * not been read (req->ref is not valid yet): true takes the body as a stream. The
     * request then goes to on_request at once with body_streamed set (on_request must
     * take it: -EBUSY is not allowed), and its bytes go to on_body as they arrive, in
     * order, in pieces of any size (end 0; a chunked body decoded, net/http.h
     * http_chunks_feed), then on_body(NULL, 0, end 1) once content_length bytes came or
     * the last chunk and trailers ended. end < 0: the body will not complete
     * (-ECONNRESET: the client closed, reset or sent nothing for the idle timeout;
     * -ESHUTDOWN: the reactor is stopping; -EPROTO: malformed chunked framing, and the
     * connection closes after the answer); no call follows. The request is answered with
     * reactor_reply as usual, exactly once, also after end < 0 (the answer may find the connection
     * gone). Answered before its body ended, the body is not read further (no more on_body calls)
     * and the connection closes after the answer. A body is never buffered whole: input stays the
     * connection's buffer, and the reactor reads more only after on_body returns, so a slow
     * application slows the client through TCP. false (or no handler): the body is read as usual,
     * with its limit (413).
     */
    bool (*stream_body)(void *ctx, const struct reactor_request *req);
    void (*on_body)(void *ctx, struct reactor *r, struct reactor_ref ref, const char *data,
                    size_t len, int end);
};

struct reactor_config {
    unsigned core;
    int cpu; /* pin the thread here; -1: don't pin */
    struct sockaddr_storage addr;
    socklen_t addr_len;
    unsigned max_connections;
    unsigned header_timeout_ms;
    unsigned idle_timeout_ms;
    const struct reactor_handler *handler;
    void *handler_ctx;
    const char *const *route_names; /* metrics labels; the last one is "other" */
    unsigned route_count;
    unsigned route_other; /* label for requests the reactor answers itself */
    unsigned access_log;  /* 0: off; N: one request in N (net/accesslog.h) */
    int access_log_fd;    /* where the access lines go (stderr) */
    /* Peers that must open with a PROXY protocol v1/v2 header (net/proxy.h): their
     * connections take the header's source as the client address. NULL: none. A PROXY
     * header from anyone else is a bad request (the HTTP parser refuses it). */
    const struct cidr_list *proxy_from;
    /* Per client address, on this core (net/clients.h): a request budget (rate_per_s
     * 0: none; over it, 429 rate_limited with Retry-After) and an open-connection cap
     * (0: none; over it, the connection gets 429 and is closed). */
    struct bucket_conf client_budget;
    unsigned client_max_conns;
};

/* The CQE user_data that marks a cross-core wake-up (see net/xcore.h). */
#define REACTOR_WAKE_TAG 0x7761000000000000ull

/*
 * Sets up the reactor on the calling thread's behalf: io_uring, buffer ring, listener,
 * connection pool. Fails with a negative errno and a one-line reason in why (cap
 * why_bytes) naming what is missing (io_uring disabled, kernel too old, address in
 * use...). Nothing is left open on failure.
 */
int reactor_create(struct reactor **out, const struct reactor_config *cfg, char *why,
                   size_t why_bytes);

/* Runs the loop on the calling thread (pinning it first) until reactor_stop() and a
 * graceful drain. Returns 0, or -errno on a fatal ring error. */
int reactor_run(struct reactor *r);

/* Asks the loop to stop accepting, finish in-flight requests and return. Any thread. */
void reactor_stop(struct reactor *r);

void reactor_destroy(struct reactor *r);

/* Queues the answer of one request. May be called from on_request or later, on the
 * reactor's thread. A stale ref is ignored. */
void reactor_reply(struct reactor *r, struct reactor_ref ref, const struct reactor_response *resp);

/* The answer of a request just taken may have a body of up to body_bytes (more than
 * the default of ENGINE_ANSWER_MAX_BYTES): reserve that much of its connection's
 * output budget. Call from on_request. */
void reactor_expect(struct reactor *r, struct reactor_ref ref, size_t body_bytes);

/* The application has room again (e.g. jobs came back): connections that got -EBUSY
 * are offered their request again at the end of this turn. Cheap when none waits. */
void reactor_resume(struct reactor *r);

/* Builds the SPEC error body {"error":{...}} into buf (API_ERROR_BODY_MAX_BYTES);
 * code and message are static texts (at most API_ERROR_CODE_MAX_BYTES and
 * API_MESSAGE_MAX_BYTES, asserted); returns its length. */
size_t reactor_error_body(char *buf, const char *code, const char *message, const char *request_id);

/* Convenience: reply with the SPEC error body. */
void reactor_reply_error(struct reactor *r, const struct reactor_request *req, int status,
                         unsigned route, const char *code, const char *message,
                         const char *extra_headers);

struct io_uring *reactor_ring(struct reactor *r);
int reactor_ring_fd(struct reactor *r);
unsigned reactor_core(const struct reactor *r);
const struct metrics *reactor_metrics(const struct reactor *r);
/* The access log's counters (lines, dropped, errors) for /metrics. */
const struct accesslog *reactor_accesslog(const struct reactor *r);
/* The actual bound port (useful with port 0). */
int reactor_port(const struct reactor *r);

#endif
