/*
 * The access log (SPEC §6): one JSON line per answered request, written without ever
 * blocking a reactor.
 *
 *   {"ts":"2026-11-30T04:36:13.123Z","level":"info","msg":"access","method":"POST",
 *    "route":"/v1/payments/authorize","status":201,"duration_us":812,
 *    "request_id":"…","core":0,"client":"127.0.0.1:50412"}
 *
 * Each reactor owns one struct accesslog: two buffers of ACCESS_LOG_BUF_BYTES / 2.
 * Lines are appended to the filling one; the reactor's loop hands the other to its
 * io_uring as a write to the log's fd (stderr), at most one write in flight, and
 * swaps them when that write is done. So formatting a line is a memcpy-sized cost on
 * the request path and the write happens in the kernel (or its io-wq worker, for a
 * pipe that is full) while the reactor goes on. When the filling buffer has no room,
 * the line is dropped and counted (ringpay_access_log_dropped_total): a slow log never
 * slows requests. Lines are never split: writes to a pipe are cut at line ends within
 * PIPE_BUF bytes (so they stay atomic beside other writers of stderr), and a regular
 * file is switched to O_APPEND at start (an io_uring write at "the current position"
 * takes no file-position lock; appends are atomic).
 *
 * Sampling: --access-log on (every request), off, or N (one request in N, counted per
 * core). What is logged is fixed: no header, body or query is ever written, the
 * request id (a client's text) is escaped and its card-like digit runs masked like
 * every logged string (net/log.h).
 *
 * Threading: one reactor thread per accesslog; the counters are read by /metrics with
 * relaxed loads.
 */
#ifndef RINGPAY_NET_ACCESSLOG_H
#define RINGPAY_NET_ACCESSLOG_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

struct io_uring;

struct accesslog {
    int fd;
    unsigned sample; /* 0: off; N: one request in N */
    unsigned counter;
    unsigned core;
    size_t write_max; /* bytes per write: PIPE_BUF for pipes, a whole buffer otherwise */
    char *fill;       /* lines being appended */
    size_t fill_len;
    char *send; /* the buffer being written */
    size_t send_len, send_off;
    size_t inflight; /* bytes of the write in flight; 0: none */
    time_t ts_sec;   /* the second ts_text renders */
    char ts_text[24];
    /* Read by /metrics with relaxed loads. */
    uint64_t lines;   /* lines written to a buffer */
    uint64_t dropped; /* lines dropped because the buffer was full */
    uint64_t errors;  /* failed writes (their bytes are dropped) */
};

/* One answered request. Strings need not be NUL-terminated; method may be empty (an
 * unparseable request: logged as null). */
struct accesslog_entry {
    const char *method;
    size_t method_len;
    const char *route; /* the route template, NUL-terminated */
    int status;
    uint64_t duration_us;
    const char *request_id;
    size_t request_id_len;
    const char *client; /* "ip:port", NUL-terminated */
};

/* Parses --access-log: "on" (1), "off" (0) or a count N >= 1. Returns the sample rate,
 * or -1 for anything else. */
int accesslog_parse(const char *text);

/* Sets up the log of one core writing to fd with the given sample rate (0: off, no
 * memory). Switches a regular file to O_APPEND. 0 or -ENOMEM. */
int accesslog_init(struct accesslog *a, int fd, unsigned sample, unsigned core);

void accesslog_destroy(struct accesslog *a);

/* True when this request is to be logged (advances the sampling counter). */
bool accesslog_wants(struct accesslog *a);

/* Appends one line, or counts it dropped when the buffer is full. */
void accesslog_add(struct accesslog *a, const struct accesslog_entry *e);

/*
 * When no write is in flight and lines wait, prepares one write SQE on ring with
 * user_data (not submitted here) and returns true. A full SQ returns false and the
 * caller tries again later.
 */
bool accesslog_flush(struct accesslog *a, struct io_uring *ring, uint64_t user_data);

/* The completion of the write accesslog_flush prepared: res bytes written or -errno. */
void accesslog_done(struct accesslog *a, int res);

/* At exit: writes everything left with blocking write(2) calls. No write may be in
 * flight (the caller waited for its completion). */
void accesslog_drain(struct accesslog *a);

struct metrics_out;

/* The access-log families of /metrics for n cores' logs (any thread). */
void accesslog_metrics(const struct accesslog *const *logs, unsigned n, struct metrics_out *o);

#endif
