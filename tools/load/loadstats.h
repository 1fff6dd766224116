/*
 * The measuring and framing pieces of `ringpay load`, kept apart from its event loop so
 * they can be unit tested: a latency histogram, an HTTP/1.1 request writer with a signer
 * hook, and an HTTP/1.1 response parser.
 *
 * Histogram (log-linear, HDR style). Values are microseconds. Below
 * LOADSTATS_HIST_LINEAR_US every microsecond has its own bucket (exact). Above, each
 * power of two [2^e, 2^(e+1)) is split into LOADSTATS_HIST_SUB equal buckets, so a
 * bucket is at most 1/LOADSTATS_HIST_SUB (0.78 %) of its value wide. Values above
 * LOADSTATS_HIST_MAX_US (~67 s) land in the last bucket; the exact maximum is kept
 * apart. A percentile is reported as the upper edge of the bucket that holds it
 * (never below the true value, at most 0.78 % above), clipped to the exact maximum.
 * Invariant: count == sum of the buckets.
 *
 * Response parser. The caller keeps the bytes received on a connection in one buffer
 * that starts at the first byte of the oldest unanswered response and calls
 * loadstats_resp_parse() on the whole span after every read. It reports one response at
 * a time, so pipelined responses are taken off the front one after the other. The
 * parser is stateless: a head split over several reads is scanned again from its
 * start, which is cheap for the small heads a server sends. Framing: Content-Length,
 * or no body for 1xx/204/304. Transfer-Encoding (ringpay's server never sends it) and
 * a missing Content-Length otherwise are reported as protocol errors, because the
 * client could not find the next response. Besides framing it notes one header of the
 * API: Idempotent-Replayed (true: the engine replayed a stored answer).
 */
#ifndef RINGPAY_TOOLS_LOADSTATS_H
#define RINGPAY_TOOLS_LOADSTATS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- latency histogram ---- */

#define LOADSTATS_HIST_LINEAR_US 1024u /* 2^10: exact up to ~1 ms */
#define LOADSTATS_HIST_SUB_BITS  7
#define LOADSTATS_HIST_SUB       (1u << LOADSTATS_HIST_SUB_BITS) /* 128 buckets per octave */
#define LOADSTATS_HIST_TOP_EXP   26                              /* last octave [2^25, 2^26) */
#define LOADSTATS_HIST_MAX_US    ((1ull << LOADSTATS_HIST_TOP_EXP) - 1)
#define LOADSTATS_HIST_BUCKETS                                                                     \
    (LOADSTATS_HIST_LINEAR_US + (LOADSTATS_HIST_TOP_EXP - 10) * LOADSTATS_HIST_SUB)

_Static_assert(LOADSTATS_HIST_LINEAR_US == 1u << 10, "the linear range is the first 10 bits");
_Static_assert(LOADSTATS_HIST_MAX_US >= 60ull * 1000 * 1000, "the histogram covers 60 s");
_Static_assert(LOADSTATS_HIST_SUB_BITS < 10, "sub-buckets are narrower than 1 us above 1 ms");

struct loadstats_hist {
    uint64_t count;
    uint64_t sum_us;
    uint64_t min_us;
    uint64_t max_us;
    uint64_t buckets[LOADSTATS_HIST_BUCKETS];
};

void loadstats_hist_init(struct loadstats_hist *h);

/* Records one latency. Values above LOADSTATS_HIST_MAX_US count in the last bucket. */
void loadstats_hist_record(struct loadstats_hist *h, uint64_t value_us);

/* Adds src's samples to dst. */
void loadstats_hist_merge(struct loadstats_hist *dst, const struct loadstats_hist *src);

/*
 * The value at quantile q (0 < q <= 1; 0.5 = p50, 0.999 = p99.9) in microseconds: the
 * smallest bucket upper edge at or below which at least ceil(q * count) samples lie,
 * clipped to the exact maximum. 0 when the histogram is empty.
 */
uint64_t loadstats_hist_percentile(const struct loadstats_hist *h, double q);

/* Bucket index of a value and the largest value that bucket holds (for tests). */
size_t loadstats_hist_bucket(uint64_t value_us);
uint64_t loadstats_hist_bucket_high(size_t bucket);

/* ---- requests ---- */

struct loadstats_req {
    const char *method;          /* "GET", "POST" */
    const char *target;          /* path and query exactly as sent */
    const char *host;            /* Host header value */
    const char *idempotency_key; /* NULL: no header */
    const char *body;            /* NULL with body_len 0: no body */
    size_t body_len;
    long merchant; /* the request's merchant m-<i> (chooses the signing key); -1: none */
};

/*
 * A request signer (SPEC §3): writes complete header lines ("Name: value\r\n"...) that
 * authenticate req into out (at most cap bytes) and returns how many bytes it wrote, or
 * -1 when it cannot sign (the request is then not sent). NULL: requests go unsigned.
 */
typedef int (*loadstats_signer_fn)(void *ctx, const struct loadstats_req *req, char *out,
                                   size_t cap);

/*
 * Writes req as one HTTP/1.1 keep-alive request into out: request line, Host, the
 * signer's lines, Idempotency-Key, and for a body Content-Type: application/json and
 * Content-Length, then the body. Returns the bytes written, or -1 when it does not fit
 * in cap or the signer failed.
 */
int loadstats_req_format(char *out, size_t cap, const struct loadstats_req *req,
                         loadstats_signer_fn signer, void *signer_ctx);

/* ---- responses ---- */

struct loadstats_resp {
    unsigned status; /* 100..599 */
    size_t head_len; /* bytes up to and including the blank line */
    size_t body_off; /* == head_len */
    size_t body_len;
    size_t total_len; /* head_len + body_len: bytes to drop from the buffer */
    bool close;       /* "Connection: close", or HTTP/1.0 without keep-alive */
    bool replayed;    /* "Idempotent-Replayed: true": an idempotent replay (SPEC §2) */
};

#define LOADSTATS_RESP_HEAD_MAX (64 * 1024) /* a longer head is a protocol error */
#define LOADSTATS_RESP_BODY_MAX (16 * 1024 * 1024)

/*
 * Parses the response at the start of buf[0..len). Returns 1 with *out filled when a
 * whole response (head and body) is in the buffer, 0 when more bytes are needed, or
 * -EPROTO when the bytes are not a response this client can frame.
 */
int loadstats_resp_parse(const char *buf, size_t len, struct loadstats_resp *out);

/*
 * Copies the value of the first JSON string member "name" in body (e.g. a payment's
 * "id") into out with a NUL. The match is on the exact quoted name followed by a colon,
 * so "id" does not match "request_id". Returns its length, or -1 when absent, not a
 * plain string (escapes are refused) or longer than cap - 1.
 */
int loadstats_json_string(const char *body, size_t len, const char *name, char *out, size_t cap);

#endif
