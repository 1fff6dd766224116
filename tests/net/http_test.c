/*
 * Tests of net/http.c: realistic requests split at every byte and dribbled, pipelining,
 * every limit at N-1, N and N+1, request smuggling defences, versions, Host, keep-alive,
 * garbage input, header lookup.
 *
 * The central property: whatever the split of the input across calls, the parser ends
 * with the same answer, the same *req and the same bytes [0, wire_bytes).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "net/http.h"

/* ---- A growable string for building requests ------------------------------------ */

struct sb {
    char *p;
    size_t n, cap;
};

static void sb_put(struct sb *s, const void *data, size_t n)
{
    if (s->n + n + 1 > s->cap) {
        s->cap = (s->n + n + 1) * 2;
        s->p = realloc(s->p, s->cap);
        assert_non_null(s->p);
    }
    memcpy(s->p + s->n, data, n);
    s->n += n;
    s->p[s->n] = '\0';
}

static void sb_str(struct sb *s, const char *str)
{
    sb_put(s, str, strlen(str));
}

static void sb_fill(struct sb *s, char c, size_t n)
{
    for (size_t i = 0; i < n; i++)
        sb_put(s, &c, 1);
}

static void sb_fmt(struct sb *s, const char *fmt, ...)
{
    char tmp[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(tmp));
    sb_put(s, tmp, (size_t)n);
}

/* A chunk: size in hex, optional extension text, data, CRLF. */
static void sb_chunk(struct sb *s, const char *data, size_t n, const char *ext)
{
    sb_fmt(s, "%zx%s\r\n", n, ext != NULL ? ext : "");
    sb_put(s, data, n);
    sb_str(s, "\r\n");
}

/* ---- Running the parser ------------------------------------------------------------ */

struct run {
    int result;    /* the last answer: DONE, ERROR or AGAIN */
    int continues; /* HTTP_PARSE_CONTINUE answers seen */
    size_t len;    /* bytes fed */
    struct http_request req;
    char *buf;
};

static void run_free(struct run *r)
{
    free(r->buf);
    r->buf = NULL;
}

/*
 * Feeds raw[0..n) to a fresh parser: the bytes up to cuts[0], then up to cuts[1], ...,
 * then up to n, one http_parse() call per piece (plus one per CONTINUE). Bytes not yet
 * fed hold 0xAA in the buffer, so a parser that peeks past len gets caught.
 */
static void feed(struct run *r, const char *raw, size_t n, const size_t *cuts, size_t ncuts)
{
    struct http_parser p;
    memset(r, 0, sizeof(*r));
    r->buf = malloc(n + 1);
    assert_non_null(r->buf);
    memset(r->buf, 0xAA, n + 1);
    http_parser_init(&p);
    int rc = HTTP_PARSE_AGAIN;
    size_t len = 0;
    for (size_t k = 0; k <= ncuts; k++) {
        size_t to = k < ncuts ? cuts[k] : n;
        memcpy(r->buf + len, raw + len, to - len);
        len = to;
        rc = http_parse(&p, r->buf, len, &r->req);
        while (rc == HTTP_PARSE_CONTINUE) {
            r->continues++;
            assert_true(r->req.expect_continue);
            assert_int_equal(r->continues, 1);
            rc = http_parse(&p, r->buf, len, &r->req);
        }
        if (rc != HTTP_PARSE_AGAIN)
            break;
    }
    r->result = rc;
    r->len = len;
}

static void feed_whole(struct run *r, const char *raw, size_t n)
{
    feed(r, raw, n, NULL, 0);
}

static void feed_dribble(struct run *r, const char *raw, size_t n)
{
    size_t *cuts = malloc((n + 1) * sizeof(*cuts));
    assert_non_null(cuts);
    for (size_t i = 0; i < n; i++)
        cuts[i] = i + 1;
    feed(r, raw, n, cuts, n);
    free(cuts);
}

static bool slice_eq(struct http_slice a, struct http_slice b)
{
    return a.off == b.off && a.len == b.len;
}

/* Same answer, same request, same bytes: the result of a parse, whatever its split. */
static bool same_parse(const struct run *a, const struct run *b)
{
    if (a->result != b->result)
        return false;
    if (a->result == HTTP_PARSE_ERROR)
        return a->req.error_status == b->req.error_status &&
               strcmp(a->req.error_reason, b->req.error_reason) == 0;
    if (a->result != HTTP_PARSE_DONE)
        return true;
    const struct http_request *x = &a->req, *y = &b->req;
    if (x->method != y->method || !slice_eq(x->method_token, y->method_token) ||
        !slice_eq(x->target, y->target) || !slice_eq(x->path, y->path) ||
        !slice_eq(x->query, y->query) || x->version_minor != y->version_minor ||
        x->header_count != y->header_count || x->keep_alive != y->keep_alive ||
        x->expect_continue != y->expect_continue || x->chunked != y->chunked ||
        x->has_content_length != y->has_content_length || x->content_length != y->content_length ||
        !slice_eq(x->body, y->body) || x->head_bytes != y->head_bytes ||
        x->wire_bytes != y->wire_bytes)
        return false;
    for (uint16_t i = 0; i < x->header_count; i++) {
        if (!slice_eq(x->headers[i].name, y->headers[i].name) ||
            !slice_eq(x->headers[i].value, y->headers[i].value))
            return false;
    }
    return memcmp(a->buf, b->buf, x->wire_bytes) == 0;
}

/* Whatever the answer, what the parser reports lies inside what it was given. */
static void check_invariants(const struct run *r)
{
    const struct http_request *q = &r->req;
    if (r->result == HTTP_PARSE_ERROR) {
        int s = q->error_status;
        assert_true(s == 400 || s == 413 || s == 414 || s == 431 || s == 501 || s == 505);
        assert_non_null(q->error_reason);
        return;
    }
    if (r->result != HTTP_PARSE_DONE)
        return;
    assert_true(q->wire_bytes > 0 && q->wire_bytes <= r->len);
    assert_true(q->head_bytes <= q->wire_bytes && q->head_bytes <= HTTP_HEAD_MAX_BYTES);
    assert_int_equal(q->body.off, q->head_bytes);
    assert_true(q->body.off + q->body.len <= q->wire_bytes);
    assert_true(q->body.len <= HTTP_BODY_MAX_BYTES);
    assert_true(q->header_count <= HTTP_HEADERS_MAX);
    assert_true(q->target.off + q->target.len <= q->head_bytes);
    for (uint16_t i = 0; i < q->header_count; i++) {
        assert_true(q->headers[i].name.off + q->headers[i].name.len <= q->head_bytes);
        assert_true(q->headers[i].value.off + q->headers[i].value.len <= q->head_bytes);
    }
}

/* Parses raw whole, then split at every byte into two reads, then dribbled: all agree. */
static void check_every_split(const char *raw, size_t n, struct run *whole)
{
    feed_whole(whole, raw, n);
    check_invariants(whole);
    for (size_t cut = 1; cut < n; cut++) {
        struct run r;
        feed(&r, raw, n, &cut, 1);
        if (!same_parse(whole, &r))
            fail_msg("split at byte %zu of %zu changes the parse", cut, n);
        /* CONTINUE only when the head is complete and no body byte has arrived. */
        if (r.continues != 0)
            assert_int_equal(cut, whole->req.head_bytes);
        run_free(&r);
    }
    struct run d;
    feed_dribble(&d, raw, n);
    if (!same_parse(whole, &d))
        fail_msg("dribbling one byte at a time changes the parse");
    bool body_pending = whole->req.chunked || whole->req.content_length > 0;
    assert_int_equal(d.continues, whole->req.expect_continue && body_pending ? 1 : 0);
    assert_int_equal(whole->continues, 0);
    run_free(&d);
}

/* Parses the NUL-terminated raw whole and returns the answer; run_free() after. */
static int parse_str(struct run *r, const char *raw)
{
    feed_whole(r, raw, strlen(raw));
    check_invariants(r);
    return r->result;
}

/* Asserts that raw fails with `status`, whole and dribbled. */
static void expect_error(const char *raw, size_t n, int status)
{
    struct run r, d;
    feed_whole(&r, raw, n);
    if (r.result != HTTP_PARSE_ERROR || r.req.error_status != status)
        fail_msg("expected %d, got result %d status %d for: %.*s", status, r.result,
                 r.req.error_status, (int)(n < 200 ? n : 200), raw);
    feed_dribble(&d, raw, n);
    assert_true(same_parse(&r, &d));
    run_free(&r);
    run_free(&d);
}

static void expect_error_str(const char *raw, int status)
{
    expect_error(raw, strlen(raw), status);
}

static void expect_done_str(const char *raw)
{
    struct run r;
    if (parse_str(&r, raw) != HTTP_PARSE_DONE)
        fail_msg("expected DONE, got %d (%d %s) for: %s", r.result, r.req.error_status,
                 r.req.error_reason ? r.req.error_reason : "", raw);
    assert_int_equal(r.req.wire_bytes, strlen(raw));
    run_free(&r);
}

static bool slice_is(const struct run *r, struct http_slice s, const char *text)
{
    return s.len == strlen(text) && memcmp(r->buf + s.off, text, s.len) == 0;
}

static const char *header_value(const struct run *r, const char *name, char *out, size_t cap)
{
    const struct http_header *h = http_header_find(&r->req, r->buf, name);
    if (h == NULL)
        return NULL;
    assert_true(h->value.len < cap);
    memcpy(out, r->buf + h->value.off, h->value.len);
    out[h->value.len] = '\0';
    return out;
}

/* ---- Realistic requests ------------------------------------------------------------ */

#define BODY_JSON "{\"merchant_id\":\"m_42\",\"amount\":1999,\"currency\":\"EUR\"}"

static const char REQ_GET[] = "GET /v1/payments/pay_123?expand=ledger&x=1 HTTP/1.1\r\n"
                              "Host: api.ringpay.test:8080\r\n"
                              "User-Agent: curl/7.88.1\r\n"
                              "Accept: */*\r\n"
                              "X-Request-Id:   abc-123  \r\n"
                              "\r\n";

static const char REQ_POST[] = "POST /v1/payments/authorize HTTP/1.1\r\n"
                               "Host: 127.0.0.1:8080\r\n"
                               "Content-Type: application/json\r\n"
                               "Content-Length: 53\r\n"
                               "Idempotency-Key: 5b1f0c1e-2f7a-4a53-9c7e-0d9f6c1b2a10\r\n"
                               "\r\n" BODY_JSON;

static const char REQ_CONTINUE[] = "PUT /v1/merchants/m_42 HTTP/1.1\r\n"
                                   "Host: localhost\r\n"
                                   "Content-Length: 53\r\n"
                                   "Expect: 100-Continue\r\n"
                                   "\r\n" BODY_JSON;

static const char REQ_HTTP10[] = "\r\n\r\nGET /healthz HTTP/1.0\r\n"
                                 "Connection: Keep-Alive\r\n"
                                 "\r\n";

/* POST chunked in three chunks with extensions, then trailers. */
static void build_chunked(struct sb *s, bool expect)
{
    sb_str(s, "POST /v1/payments/capture HTTP/1.1\r\n"
              "Host: api.ringpay.test\r\n"
              "Content-Type: application/json\r\n"
              "Transfer-Encoding: Chunked\r\n");
    if (expect)
        sb_str(s, "Expect: 100-continue\r\n");
    sb_str(s, "\r\n");
    const char *body = BODY_JSON;
    sb_chunk(s, body, 20, ";sig=abc");
    sb_chunk(s, body + 20, 17, " ; name=\"quoted \\\" value\";flag");
    sb_chunk(s, body + 37, 16, NULL);
    sb_str(s, "0;last\r\nX-Checksum: 77aa\r\nX-Other:\r\n\r\n");
}

static void test_get(void **state)
{
    struct run r;
    check_every_split(REQ_GET, strlen(REQ_GET), &r);
    assert_int_equal(r.result, HTTP_PARSE_DONE);
    assert_int_equal(r.req.method, HTTP_GET);
    assert_true(slice_is(&r, r.req.method_token, "GET"));
    assert_true(slice_is(&r, r.req.target, "/v1/payments/pay_123?expand=ledger&x=1"));
    assert_true(slice_is(&r, r.req.path, "/v1/payments/pay_123"));
    assert_true(slice_is(&r, r.req.query, "expand=ledger&x=1"));
    assert_int_equal(r.req.version_minor, 1);
    assert_int_equal(r.req.header_count, 4);
    assert_true(slice_is(&r, r.req.headers[0].name, "Host"));
    assert_true(slice_is(&r, r.req.headers[0].value, "api.ringpay.test:8080"));
    assert_true(slice_is(&r, r.req.headers[3].value, "abc-123")); /* trimmed */
    assert_true(r.req.keep_alive);
    assert_false(r.req.chunked || r.req.has_content_length || r.req.expect_continue);
    assert_int_equal(r.req.body.len, 0);
    assert_int_equal(r.req.head_bytes, strlen(REQ_GET));
    assert_int_equal(r.req.wire_bytes, strlen(REQ_GET));
    run_free(&r);
}

static void test_post_content_length(void **state)
{
    struct run r;
    check_every_split(REQ_POST, strlen(REQ_POST), &r);
    assert_int_equal(r.result, HTTP_PARSE_DONE);
    assert_int_equal(r.req.method, HTTP_POST);
    assert_true(slice_is(&r, r.req.path, "/v1/payments/authorize"));
    assert_int_equal(r.req.query.len, 0);
    assert_true(r.req.has_content_length);
    assert_int_equal(r.req.content_length, 53);
    assert_true(slice_is(&r, r.req.body, BODY_JSON));
    assert_int_equal(r.req.wire_bytes, strlen(REQ_POST));
    assert_int_equal(r.req.head_bytes, strlen(REQ_POST) - 53);
    assert_int_equal(http_header_count(&r.req, r.buf, "IDEMPOTENCY-KEY"), 1);
    assert_int_equal(http_header_count(&r.req, r.buf, "x-request-id"), 0);
    run_free(&r);
    /* The same header twice is counted twice (the codec answers 400 for it). */
    static const char twice[] = "POST /v1/payments/x/void HTTP/1.1\r\nHost: h\r\n"
                                "Idempotency-Key: a\r\nContent-Length: 0\r\n"
                                "idempotency-key: a\r\n\r\n";
    check_every_split(twice, strlen(twice), &r);
    assert_int_equal(r.result, HTTP_PARSE_DONE);
    assert_int_equal(http_header_count(&r.req, r.buf, "Idempotency-Key"), 2);
    run_free(&r);
}

static void test_post_chunked(void **state)
{
    struct sb s = {0};
    build_chunked(&s, false);
    struct run r;
    check_every_split(s.p, s.n, &r);
    assert_int_equal(r.result, HTTP_PARSE_DONE);
    assert_true(r.req.chunked);
    assert_false(r.req.has_content_length);
    assert_true(slice_is(&r, r.req.body, BODY_JSON));
    assert_int_equal(r.req.wire_bytes, s.n);
    assert_int_equal(r.req.header_count, 3); /* trailers are not merged into the head */
    run_free(&r);
    free(s.p);
}

/* Streamed bodies: HEAD once the head is complete, before any body limit; the caller
 * may go on reading the body as usual (limit and 100 Continue as before), and
 * requests without a Content-Length body never answer HEAD. */
static void test_report_heads(void **state)
{
    (void)state;
    struct http_parser p;
    struct http_request req;
    char buf[sizeof(REQ_CONTINUE)];
    memcpy(buf, REQ_CONTINUE, sizeof(buf));
    size_t head = strlen(REQ_CONTINUE) - 53;
    http_parser_init(&p);
    http_parser_report_heads(&p);
    assert_int_equal(http_parse(&p, buf, head - 1, &req), HTTP_PARSE_AGAIN);
    assert_int_equal(http_parse(&p, buf, head, &req), HTTP_PARSE_HEAD);
    assert_int_equal(req.content_length, 53);
    assert_int_equal(req.head_bytes, head);
    /* not taken as a stream: the deferred 100 Continue, then the body as usual */
    assert_int_equal(http_parse(&p, buf, head, &req), HTTP_PARSE_CONTINUE);
    assert_int_equal(http_parse(&p, buf, head + 53, &req), HTTP_PARSE_DONE);
    assert_int_equal(req.body.len, 53);

    /* Over the body limit: HEAD with the real length, and 413 only if read as usual. */
    static const char big[] = "POST /v1/reconciliation/files HTTP/1.1\r\nHost: a\r\n"
                              "Content-Length: 45000000000\r\n\r\n";
    char b2[sizeof(big)];
    memcpy(b2, big, sizeof(big));
    http_parser_init(&p);
    http_parser_report_heads(&p);
    assert_int_equal(http_parse(&p, b2, sizeof(big) - 1, &req), HTTP_PARSE_HEAD);
    assert_int_equal(req.content_length, 45000000000ULL);
    assert_int_equal(http_parse(&p, b2, sizeof(big) - 1, &req), HTTP_PARSE_ERROR);
    assert_int_equal(req.error_status, 413);
    /* A declared length past HTTP_STREAM_LENGTH_MAX saturates. */
    static const char huge[] = "POST / HTTP/1.1\r\nHost: a\r\n"
                               "Content-Length: 99999999999999999999999\r\n\r\n";
    char b3[sizeof(huge)];
    memcpy(b3, huge, sizeof(huge));
    http_parser_init(&p);
    http_parser_report_heads(&p);
    assert_int_equal(http_parse(&p, b3, sizeof(huge) - 1, &req), HTTP_PARSE_HEAD);
    assert_true(req.content_length == HTTP_STREAM_LENGTH_MAX + 1);

    /* No body: never HEAD. A chunked one: HEAD, then read as usual if not streamed. */
    static const char get[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    char b4[sizeof(get)];
    memcpy(b4, get, sizeof(get));
    http_parser_init(&p);
    http_parser_report_heads(&p);
    assert_int_equal(http_parse(&p, b4, sizeof(get) - 1, &req), HTTP_PARSE_DONE);
    static const char chunked[] = "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked"
                                  "\r\n\r\n1\r\nx\r\n0\r\n\r\n";
    char b5[sizeof(chunked)];
    memcpy(b5, chunked, sizeof(chunked));
    http_parser_init(&p);
    http_parser_report_heads(&p);
    assert_int_equal(http_parse(&p, b5, sizeof(chunked) - 1, &req), HTTP_PARSE_HEAD);
    assert_true(req.chunked);
    assert_int_equal(http_parse(&p, b5, sizeof(chunked) - 1, &req), HTTP_PARSE_DONE);
    assert_int_equal(req.body.len, 1);
}

struct decoded {
    char out[256];
    size_t len;
};

static void collect_chunk(void *arg, const char *data, size_t len)
{
    struct decoded *d = arg;
    assert_true(d->len + len <= sizeof(d->out));
    memcpy(d->out + d->len, data, len);
    d->len += len;
}

/* Feeds body in pieces of `piece` bytes the way the reactor does (an unconsumed line
 * start stays in front of the next bytes). Returns the last result; *end the bytes of
 * the body consumed when DONE. */
static int chunks_in_pieces(const char *body, size_t n, size_t piece, struct decoded *d,
                            size_t *end, const char **why)
{
    struct http_chunks c;
    http_chunks_init(&c);
    char buf[512];
    size_t have = 0, fed = 0, total = 0;
    memset(d, 0, sizeof(*d));
    for (;;) {
        size_t k = n - fed < piece ? n - fed : piece;
        memcpy(buf + have, body + fed, k);
        have += k;
        fed += k;
        size_t used = 0;
        int rc = http_chunks_feed(&c, buf, have, &used, collect_chunk, d, why);
        if (rc != HTTP_CHUNKS_MORE) {
            *end = total + used;
            return rc;
        }
        memmove(buf, buf + used, have - used);
        have -= used;
        total += used;
        if (fed == n)
            return rc;
    }
}

/* The streaming chunk decoder: any split gives the same data and end; the parser's
 * framing rules; bytes after the body are not consumed. */
static void test_chunks_stream(void **state)
{
    (void)state;
    static const char body[] = "4;ext=1\r\nWiki\r\n5\r\npedia\r\nE\r\n in\r\n\r\nchunks."
                               "\r\n0\r\nX-Trailer: t\r\n\r\nGET / HTTP/1.1\r\n";
    size_t body_end = sizeof(body) - 1 - strlen("GET / HTTP/1.1\r\n");
    for (size_t piece = 1; piece <= sizeof(body); piece++) {
        struct decoded d;
        size_t end = 0;
        const char *why = NULL;
        int rc = chunks_in_pieces(body, sizeof(body) - 1, piece, &d, &end, &why);
        assert_int_equal(rc, HTTP_CHUNKS_DONE);
        assert_int_equal(end, body_end);
        assert_int_equal(d.len, 23);
        assert_memory_equal(d.out, "Wikipedia in\r\n\r\nchunks.", 23);
    }
    static const struct {
        const char *body, *why;
    } bad[] = {
        {"g\r\n", "malformed chunk size"},
        {"1234567890abcdef\r\n", "chunk size too long"},
        {"1;=\r\nx\r\n", "malformed chunk extension"},
        {"1\nx\r\n", "bare LF in chunked framing"},
        {"1\r\nxy", "missing CRLF after chunk data"},
        {"0\r\nbad trailer\r\n\r\n", "whitespace before colon"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct decoded d;
        size_t end;
        const char *why = NULL;
        int rc = chunks_in_pieces(bad[i].body, strlen(bad[i].body), 1, &d, &end, &why);
        assert_int_equal(rc, HTTP_CHUNKS_ERROR);
        assert_string_equal(why, bad[i].why);
    }
    /* A framing line longer than HTTP_LINE_MAX_BYTES, even before its end arrives. */
    static char longext[HTTP_LINE_MAX_BYTES + 16];
    memset(longext, 'a', sizeof(longext) - 1);
    memcpy(longext, "1;", 2);
    struct http_chunks c;
    http_chunks_init(&c);
    size_t used;
    const char *why = NULL;
    struct decoded d = {0};
    assert_int_equal(http_chunks_feed(&c, longext, strlen(longext), &used, collect_chunk, &d, &why),
                     HTTP_CHUNKS_ERROR);
    assert_string_equal(why, "chunked framing line too long");
}

static void test_expect_continue(void **state)
{
    struct run r;
    check_every_split(REQ_CONTINUE, strlen(REQ_CONTINUE), &r);
    assert_int_equal(r.result, HTTP_PARSE_DONE);
    assert_int_equal(r.req.method, HTTP_PUT);
    assert_true(r.req.expect_continue);
    assert_true(slice_is(&r, r.req.body, BODY_JSON));
    run_free(&r);

    /* Head alone: CONTINUE once, then AGAIN, then DONE when the body arrives. */
    struct http_parser p;
    struct http_request req;
    char buf[sizeof(REQ_CONTINUE)];
    memcpy(buf, REQ_CONTINUE, sizeof(buf));
    size_t head = strlen(REQ_CONTINUE) - 53;
    http_parser_init(&p);
    assert_int_equal(http_parse(&p, buf, head - 1, &req), HTTP_PARSE_AGAIN);
    assert_int_equal(http_parse(&p, buf, head, &req), HTTP_PARSE_CONTINUE);
    assert_int_equal(http_parse(&p, buf, head, &req), HTTP_PARSE_AGAIN);
    assert_int_equal(http_parse(&p, buf, head + 10, &req), HTTP_PARSE_AGAIN);
    assert_int_equal(http_parse(&p, buf, head + 53, &req), HTTP_PARSE_DONE);

    struct sb s = {0};
    build_chunked(&s, true);
    check_every_split(s.p, s.n, &r);
    assert_int_equal(r.result, HTTP_PARSE_DONE);
    assert_true(r.req.expect_continue);
    assert_true(slice_is(&r, r.req.body, BODY_JSON));
    run_free(&r);
    free(s.p);

    /* No body to wait for, or HTTP/1.0: no CONTINUE. */
    const char *nobody = "POST /x HTTP/1.1\r\nHost: a\r\nExpect: 100-continue\r\n"
                         "Content-Length: 0\r\n\r\n";
    check_every_split(nobody, strlen(nobody), &r);
    assert_int_equal(r.result, HTTP_PARSE_DONE);
    run_free(&r);
    const char *v10 = "POST /x HTTP/1.0\r\nExpect: 100-continue\r\nContent-Length: 2\r\n\r\nab";
    check_every_split(v10, strlen(v10), &r);
    assert_int_equal(r.result, HTTP_PARSE_DONE);
    assert_false(r.req.expect_continue);
    run_free(&r);
}

static void test_http10_and_leading_empty_lines(void **state)
{
    struct run r;
    check_every_split(REQ_HTTP10, strlen(REQ_HTTP10), &r);
    assert_int_equal(r.result, HTTP_PARSE_DONE);
    assert_int_equal(r.req.version_minor, 0);
    assert_int_equal(r.req.method_token.off, 4);
    assert_true(slice_is(&r, r.req.path, "/healthz"));
    assert_true(r.req.keep_alive);
    assert_int_equal(r.req.wire_bytes, strlen(REQ_HTTP10));
    run_free(&r);
    expect_error_str("\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
    expect_error_str("\r\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n", 400);
}

/* ---- Pipelining -------------------------------------------------------------------- */

static void test_pipelined(void **state)
{
    struct sb all = {0}, chunked = {0};
    build_chunked(&chunked, false);
    const char *parts[] = {REQ_GET, REQ_POST, chunked.p, REQ_CONTINUE, REQ_HTTP10, REQ_GET};
    size_t lens[6];
    for (int i = 0; i < 6; i++) {
        lens[i] = i == 2 ? chunked.n : strlen(parts[i]);
        sb_put(&all, parts[i], lens[i]);
    }
    char *orig = malloc(all.n);
    assert_non_null(orig);
    memcpy(orig, all.p, all.n);

    /* One buffer holding all six: parse, drop wire_bytes, parse the next. */
    char *buf = all.p;
    size_t len = all.n, consumed = 0;
    for (int i = 0; i < 6; i++) {
        struct http_parser p;
        struct http_request req;
        struct run alone;
        feed_whole(&alone, parts[i], lens[i]);
        http_parser_init(&p);
        assert_int_equal(http_parse(&p, buf, len, &req), HTTP_PARSE_DONE);
        assert_int_equal(req.wire_bytes, lens[i]);
        assert_int_equal(req.body.len, alone.req.body.len);
        assert_memory_equal(buf + req.body.off, alone.buf + alone.req.body.off, req.body.len);
        assert_int_equal(req.header_count, alone.req.header_count);
        /* The next requests were not touched, even by in-place chunked decoding. */
        assert_memory_equal(buf + req.wire_bytes, orig + consumed + req.wire_bytes,
                            len - req.wire_bytes);
        memmove(buf, buf + req.wire_bytes, len - req.wire_bytes);
        len -= req.wire_bytes;
        consumed += lens[i];
        run_free(&alone);
    }
    assert_int_equal(len, 0);

    /* The same stream dribbled one byte per read through a connection-like loop. */
    memcpy(all.p, orig, all.n);
    char *cbuf = malloc(all.n);
    assert_non_null(cbuf);
    size_t have = 0, fed = 0;
    int done = 0;
    struct http_parser p;
    struct http_request req;
    http_parser_init(&p);
    while (fed < all.n) {
        cbuf[have++] = orig[fed++];
        int rc = http_parse(&p, cbuf, have, &req);
        if (rc == HTTP_PARSE_CONTINUE)
            rc = http_parse(&p, cbuf, have, &req);
        assert_true(rc == HTTP_PARSE_AGAIN || rc == HTTP_PARSE_DONE);
        if (rc == HTTP_PARSE_DONE) {
            assert_int_equal(req.wire_bytes, lens[done]);
            memmove(cbuf, cbuf + req.wire_bytes, have - req.wire_bytes);
            have -= req.wire_bytes;
            http_parser_init(&p);
            done++;
        }
    }
    assert_int_equal(done, 6);
    assert_int_equal(have, 0);
    free(cbuf);
    free(orig);
    free(all.p);
    free(chunked.p);
}

/* ---- Limits -------------------------------------------------------------------------- */

/* Feeds only the first `n` bytes of raw: the answer without the rest. */
static int parse_prefix(const char *raw, size_t n, struct http_request *req)
{
    struct http_parser p;
    char *buf = malloc(n + 1);
    assert_non_null(buf);
    memcpy(buf, raw, n);
    http_parser_init(&p);
    int rc = http_parse(&p, buf, n, req);
    free(buf);
    return rc;
}

static void request_line_of(struct sb *s, size_t line_bytes)
{
    /* "GET /" + a's + " HTTP/1.1\r\n" */
    sb_str(s, "GET /");
    sb_fill(s, 'a', line_bytes - 16);
    sb_str(s, " HTTP/1.1\r\nHost: a\r\n\r\n");
}

static void test_limit_request_line(void **state)
{
    for (size_t n = HTTP_LINE_MAX_BYTES - 1; n <= HTTP_LINE_MAX_BYTES + 1; n++) {
        struct sb s = {0};
        request_line_of(&s, n);
        struct run r;
        feed_whole(&r, s.p, s.n);
        if (n <= HTTP_LINE_MAX_BYTES) {
            assert_int_equal(r.result, HTTP_PARSE_DONE);
            assert_int_equal(r.req.target.len, n - 15);
        } else {
            assert_int_equal(r.result, HTTP_PARSE_ERROR);
            assert_int_equal(r.req.error_status, 414);
            /* Detected as soon as the limit is crossed, without the line's end. */
            struct http_request req;
            assert_int_equal(parse_prefix(s.p, HTTP_LINE_MAX_BYTES - 1, &req), HTTP_PARSE_AGAIN);
            assert_int_equal(parse_prefix(s.p, HTTP_LINE_MAX_BYTES, &req), HTTP_PARSE_ERROR);
            assert_int_equal(req.error_status, 414);
        }
        run_free(&r);
        free(s.p);
    }
}

static void test_limit_header_line(void **state)
{
    const char *rl = "GET / HTTP/1.1\r\nHost: a\r\n";
    for (size_t n = HTTP_LINE_MAX_BYTES - 1; n <= HTTP_LINE_MAX_BYTES + 1; n++) {
        struct sb s = {0};
        sb_str(&s, rl);
        sb_str(&s, "X-Fill: "); /* 8 bytes, the CRLF 2 more */
        sb_fill(&s, 'b', n - 10);
        sb_str(&s, "\r\n\r\n");
        struct run r;
        feed_whole(&r, s.p, s.n);
        if (n <= HTTP_LINE_MAX_BYTES) {
            assert_int_equal(r.result, HTTP_PARSE_DONE);
            assert_int_equal(r.req.headers[1].value.len, n - 10);
        } else {
            assert_int_equal(r.result, HTTP_PARSE_ERROR);
            assert_int_equal(r.req.error_status, 431);
            struct http_request req;
            size_t at = strlen(rl) + HTTP_LINE_MAX_BYTES;
            assert_int_equal(parse_prefix(s.p, at - 1, &req), HTTP_PARSE_AGAIN);
            assert_int_equal(parse_prefix(s.p, at, &req), HTTP_PARSE_ERROR);
            assert_int_equal(req.error_status, 431);
        }
        run_free(&r);
        free(s.p);
    }
}

/* A GET whose head (through the blank line) is exactly `head_bytes` long. */
static void head_of(struct sb *s, size_t head_bytes)
{
    sb_str(s, "GET / HTTP/1.1\r\nHost: a\r\n"); /* 25 bytes */
    size_t left = head_bytes - 25 - 2;
    for (int i = 0; left > 0; i++) {
        size_t line = left > 8000 + 20 ? 8000 : left; /* every line <= the line limit */
        sb_fmt(s, "X-%02d: ", i);                     /* 6 bytes, CRLF 2 more */
        sb_fill(s, 'v', line - 8);
        sb_str(s, "\r\n");
        left -= line;
    }
    sb_str(s, "\r\n");
    assert_int_equal(s->n, head_bytes);
}

static void test_limit_head(void **state)
{
    for (size_t n = HTTP_HEAD_MAX_BYTES - 1; n <= HTTP_HEAD_MAX_BYTES + 1; n++) {
        struct sb s = {0};
        head_of(&s, n);
        struct run r;
        feed_whole(&r, s.p, s.n);
        if (n <= HTTP_HEAD_MAX_BYTES) {
            assert_int_equal(r.result, HTTP_PARSE_DONE);
            assert_int_equal(r.req.head_bytes, n);
        } else {
            assert_int_equal(r.result, HTTP_PARSE_ERROR);
            assert_int_equal(r.req.error_status, 431);
            struct http_request req;
            assert_int_equal(parse_prefix(s.p, HTTP_HEAD_MAX_BYTES - 1, &req), HTTP_PARSE_AGAIN);
            assert_int_equal(parse_prefix(s.p, HTTP_HEAD_MAX_BYTES, &req), HTTP_PARSE_ERROR);
            assert_int_equal(req.error_status, 431);
        }
        run_free(&r);
        free(s.p);
    }
    /* Empty lines before the request line count in the head. */
    struct sb s = {0};
    for (size_t i = 0; i < HTTP_HEAD_MAX_BYTES / 2; i++)
        sb_str(&s, "\r\n");
    struct http_request req;
    assert_int_equal(parse_prefix(s.p, s.n, &req), HTTP_PARSE_ERROR);
    assert_int_equal(req.error_status, 431);
    free(s.p);
}

static void test_limit_header_count(void **state)
{
    for (int n = HTTP_HEADERS_MAX - 1; n <= HTTP_HEADERS_MAX + 1; n++) {
        struct sb s = {0};
        sb_str(&s, "GET / HTTP/1.1\r\nHost: a\r\n");
        for (int i = 1; i < n; i++)
            sb_fmt(&s, "X-H%d: %d\r\n", i, i);
        sb_str(&s, "\r\n");
        struct run r;
        feed_whole(&r, s.p, s.n);
        if (n <= HTTP_HEADERS_MAX) {
            assert_int_equal(r.result, HTTP_PARSE_DONE);
            assert_int_equal(r.req.header_count, n);
        } else {
            assert_int_equal(r.result, HTTP_PARSE_ERROR);
            assert_int_equal(r.req.error_status, 431);
        }
        run_free(&r);
        free(s.p);
    }
}

static void test_limit_body_content_length(void **state)
{
    for (size_t n = HTTP_BODY_MAX_BYTES - 1; n <= HTTP_BODY_MAX_BYTES + 1; n++) {
        struct sb s = {0};
        sb_fmt(&s, "POST /b HTTP/1.1\r\nHost: a\r\nContent-Length: %zu\r\n\r\n", n);
        size_t head = s.n;
        sb_fill(&s, 'x', n);
        struct run r;
        feed_whole(&r, s.p, s.n);
        if (n <= HTTP_BODY_MAX_BYTES) {
            assert_int_equal(r.result, HTTP_PARSE_DONE);
            assert_int_equal(r.req.body.len, n);
            assert_int_equal(r.req.wire_bytes, s.n);
        } else {
            assert_int_equal(r.result, HTTP_PARSE_ERROR);
            assert_int_equal(r.req.error_status, 413);
            /* Known from the head alone: no body byte needs to be buffered. */
            struct http_request req;
            assert_int_equal(parse_prefix(s.p, head, &req), HTTP_PARSE_ERROR);
            assert_int_equal(req.error_status, 413);
        }
        run_free(&r);
        free(s.p);
    }
    expect_error_str("POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 99999999999999999999999\r\n"
                     "\r\n",
                     413);
}

static void test_limit_body_chunked(void **state)
{
    char *data = malloc(HTTP_BODY_MAX_BYTES);
    assert_non_null(data);
    for (size_t i = 0; i < HTTP_BODY_MAX_BYTES; i++)
        data[i] = (char)('a' + i % 26);
    for (size_t n = HTTP_BODY_MAX_BYTES - 1; n <= HTTP_BODY_MAX_BYTES + 1; n++) {
        struct sb s = {0};
        sb_str(&s, "POST /b HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        sb_chunk(&s, data, 0x8000, NULL);
        sb_chunk(&s, data + 0x8000, n - 0x8000 > 0x8000 ? 0x8000 : n - 0x8000, NULL);
        size_t before_last = s.n;
        if (n > 0x10000)
            sb_chunk(&s, "z", 1, NULL);
        sb_str(&s, "0\r\n\r\n");
        struct run r;
        feed_whole(&r, s.p, s.n);
        if (n <= HTTP_BODY_MAX_BYTES) {
            assert_int_equal(r.result, HTTP_PARSE_DONE);
            assert_int_equal(r.req.body.len, n);
            assert_memory_equal(r.buf + r.req.body.off, data, n);
        } else {
            assert_int_equal(r.result, HTTP_PARSE_ERROR);
            assert_int_equal(r.req.error_status, 413);
            /* Refused at the size line, before that chunk's data arrives. */
            struct http_request req;
            assert_int_equal(parse_prefix(s.p, before_last + 3, &req), HTTP_PARSE_ERROR);
            assert_int_equal(req.error_status, 413);
        }
        run_free(&r);
        free(s.p);
    }
    free(data);
}

/* One chunk whose size line is `line` bytes long: framing is line + 2 + 3 + 2 bytes. */
static void test_limit_chunk_framing(void **state)
{
    for (size_t framing = HTTP_LINE_MAX_BYTES - 1; framing <= HTTP_LINE_MAX_BYTES + 1; framing++) {
        struct sb s = {0};
        sb_str(&s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
        size_t line = framing - 7;
        sb_str(&s, "1;e="); /* "1;e=" + token + CRLF */
        sb_fill(&s, 'e', line - 6);
        sb_str(&s, "\r\nx\r\n0\r\n\r\n");
        struct run r;
        feed_whole(&r, s.p, s.n);
        if (framing <= HTTP_LINE_MAX_BYTES) {
            assert_int_equal(r.result, HTTP_PARSE_DONE);
            assert_true(slice_is(&r, r.req.body, "x"));
        } else {
            assert_int_equal(r.result, HTTP_PARSE_ERROR);
            assert_int_equal(r.req.error_status, 400);
        }
        run_free(&r);
        free(s.p);
    }
    /* Many small chunks with extensions exhaust the budget too, as do long trailers. */
    struct sb s = {0};
    sb_str(&s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n");
    for (int i = 0; i < 500; i++) /* 20 bytes of framing each */
        sb_chunk(&s, "y", 1, ";ext=0123456789");
    sb_str(&s, "0\r\n\r\n");
    expect_error(s.p, s.n, 400);
    free(s.p);
    s = (struct sb){0};
    sb_str(&s, "POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n");
    for (int i = 0; i < 400; i++)
        sb_str(&s, "X-Trailer: 01234567890123\r\n");
    sb_str(&s, "\r\n");
    expect_error(s.p, s.n, 400);
    free(s.p);
}

/* ---- Smuggling ------------------------------------------------------------------------- */

#define H "Host: a\r\n"

static void test_smuggling_framing(void **state)
{
    static const struct {
        const char *raw;
        int status;
    } cases[] = {
        {"POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nContent-Length: 5\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 5\r\n\r\nhello", 400},
        {"POST / HTTP/1.1\r\n" H "Content-Length: 5\r\nContent-Length: 6\r\n\r\nhello", 400},
        {"POST / HTTP/1.1\r\n" H "Content-Length: +5\r\n\r\nhello", 400},
        {"POST / HTTP/1.1\r\n" H "Content-Length: -5\r\n\r\nhello", 400},
        {"POST / HTTP/1.1\r\n" H "Content-Length: 0x5\r\n\r\nhello", 400},
        {"POST / HTTP/1.1\r\n" H "Content-Length: 1 5\r\n\r\nhello", 400},
        {"POST / HTTP/1.1\r\n" H "Content-Length: 5,5\r\n\r\nhello", 400},
        {"POST / HTTP/1.1\r\n" H "Content-Length: \r\n\r\nhello", 400},
        {"POST / HTTP/1.1\r\n" H "Content-Length:\r\n\r\nhello", 400},
        {"POST / HTTP/1.1\r\n" H "Content-Length: 5a\r\n\r\nhello", 400},
        {"POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked, gzip\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\n" H "Transfer-Encoding: gzip, chunked\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\n" H "Transfer-Encoding: identity\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\n" H "Transfer-Encoding: xchunked\r\n\r\n", 501},
        {"POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n"
         "\r\n",
         400},
        {"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", 400},
        {"GET / HTTP/1.1\n" H "\r\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\n\r\n", 400},
        {"GET / HTTP/1.1\r\n" H "\n", 400},
        {"GET / HTTP/1.1\r\nHost: a\rX-A: b\r\n\r\n", 400},
        {"GET / HTTP/1.1\r" H "\r\n", 400},
        {"GET / HTTP/1.1\r\n" H "X-A: b\r\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost : a\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\nHost\t: a\r\n\r\n", 400},
        {"POST / HTTP/1.1\r\n" H "Content-Length : 5\r\n\r\nhello", 400},
        {"GET / HTTP/1.1\r\n" H "X-A: b\r\n c\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\n" H "X-A: b\r\n\tc\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\n" H ": b\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\n" H "X(A): b\r\n\r\n", 400},
        {"GET / HTTP/1.1\r\n" H "X-A b\r\n\r\n", 400},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        expect_error_str(cases[i].raw, cases[i].status);
    /* Case-insensitive chunked with spaces around it is fine. */
    expect_done_str("POST / HTTP/1.1\r\n" H "Transfer-Encoding:  ChUnKeD \r\n\r\n0\r\n\r\n");
    expect_done_str("POST / HTTP/1.1\r\n" H "Content-Length: 005\r\n\r\nhello");
    expect_done_str("POST / HTTP/1.1\r\n" H "Content-Length:5\r\n\r\nhello");
}

#define TE "POST / HTTP/1.1\r\n" H "Transfer-Encoding: chunked\r\n\r\n"

static void test_smuggling_chunks(void **state)
{
#define SIZED(lit)                                                                                 \
    {                                                                                              \
        lit, sizeof(lit) - 1                                                                       \
    }
    static const struct {
        const char *raw;
        size_t n;
    } bad[] = {
        SIZED(TE "0x5\r\nhello\r\n0\r\n\r\n"),
        SIZED(TE "-1\r\nh\r\n0\r\n\r\n"),
        SIZED(TE "+5\r\nhello\r\n0\r\n\r\n"),
        SIZED(TE " 5\r\nhello\r\n0\r\n\r\n"),
        SIZED(TE "5 \r\nhello\r\n0\r\n\r\n"),
        SIZED(TE "g\r\nhello\r\n0\r\n\r\n"),
        SIZED(TE "\r\nhello\r\n0\r\n\r\n"),
        SIZED(TE "0000000000000005\r\nhello\r\n0\r\n\r\n"), /* 16 hex digits */
        SIZED(TE "ffffffffffffffffff\r\nhello\r\n0\r\n\r\n"),
        SIZED(TE "5\r\nhelloX\r\n0\r\n\r\n"), /* missing CRLF after data */
        SIZED(TE "5\r\nhello\n0\r\n\r\n"),
        SIZED(TE "5\r\nhello\rX0\r\n\r\n"),
        SIZED(TE "5\r\nhello0\r\n\r\n"),
        SIZED(TE "5\nhello\r\n0\r\n\r\n"),
        SIZED(TE "5\rhello\r\n0\r\n\r\n"),
        SIZED(TE "5;\r\nhello\r\n0\r\n\r\n"),
        SIZED(TE "5;a=\r\nhello\r\n0\r\n\r\n"),
        SIZED(TE "5;a=\"open\r\nhello\r\n0\r\n\r\n"),
        SIZED(TE "5;a b\r\nhello\r\n0\r\n\r\n"),
        SIZED(TE "5;a\0\r\nhello\r\n0\r\n\r\n"),
        SIZED(TE "5,6\r\nhello\r\n0\r\n\r\n"),
        SIZED(TE "5\r\nhello\r\n0\r\nX Y: z\r\n\r\n"), /* malformed trailer */
        SIZED(TE "5\r\nhello\r\n0\r\nX: y\n\r\n"),
        SIZED(TE "5\r\nhello\r\n0\r\n\n"),
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        expect_error(bad[i].raw, bad[i].n, 400);
    expect_done_str(TE "000000000000005\r\nhello\r\n0\r\n\r\n"); /* 15 digits */
    expect_done_str(TE "5 ;a = b\t;c=\"q\\\"\"\r\nhello\r\n0\r\n\r\n");
    expect_done_str(TE "A\r\n0123456789\r\n0\r\n\r\n");
}

/* ---- Versions, Host, request line -------------------------------------------------- */

static void test_versions(void **state)
{
    expect_error_str("GET / HTTP/2.0\r\n" H "\r\n", 505);
    expect_error_str("GET / HTTP/1.2\r\n" H "\r\n", 505);
    expect_error_str("GET / HTTP/0.9\r\n" H "\r\n", 505);
    expect_error_str("GET / HTTP/3.1\r\n" H "\r\n", 505);
    expect_error_str("GET / http/1.1\r\n" H "\r\n", 400);
    expect_error_str("GET / HTTP/1\r\n" H "\r\n", 400);
    expect_error_str("GET / HTTP/11.1\r\n" H "\r\n", 400);
    expect_error_str("GET / HTTP/1.1 \r\n" H "\r\n", 400);
    expect_error_str("GET /\r\n" H "\r\n", 400);
    expect_done_str("GET / HTTP/1.0\r\n\r\n");
}

static void test_host(void **state)
{
    expect_error_str("GET / HTTP/1.1\r\n\r\n", 400);
    expect_error_str("GET / HTTP/1.1\r\nX-Host: a\r\n\r\n", 400);
    expect_error_str("GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n", 400);
    expect_error_str("GET / HTTP/1.1\r\nHost:\r\n\r\n", 400);
    expect_error_str("GET / HTTP/1.1\r\nHost: a b\r\n\r\n", 400);
    expect_error_str("GET / HTTP/1.1\r\nHost: a/b\r\n\r\n", 400);
    expect_done_str("GET / HTTP/1.1\r\nhOsT: [::1]:8080\r\n\r\n");
    expect_done_str("GET / HTTP/1.0\r\n\r\n");
}

static void test_request_line(void **state)
{
    static const struct {
        const char *method;
        enum http_method m;
    } methods[] = {
        {"GET", HTTP_GET},
        {"HEAD", HTTP_HEAD},
        {"POST", HTTP_POST},
        {"PUT", HTTP_PUT},
        {"DELETE", HTTP_DELETE},
        {"PATCH", HTTP_PATCH},
        {"OPTIONS", HTTP_OPTIONS},
        {"PROPFIND", HTTP_METHOD_OTHER},
        {"get", HTTP_METHOD_OTHER},
        {"GETS", HTTP_METHOD_OTHER},
        {"X-Y.Z~", HTTP_METHOD_OTHER},
    };
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        char raw[128];
        snprintf(raw, sizeof(raw), "%s /p HTTP/1.1\r\nHost: a\r\n\r\n", methods[i].method);
        struct run r;
        assert_int_equal(parse_str(&r, raw), HTTP_PARSE_DONE);
        assert_int_equal(r.req.method, methods[i].m);
        assert_true(slice_is(&r, r.req.method_token, methods[i].method));
        run_free(&r);
    }
    struct run r;
    assert_int_equal(parse_str(&r, "OPTIONS * HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_PARSE_DONE);
    assert_true(slice_is(&r, r.req.target, "*"));
    run_free(&r);
    assert_int_equal(parse_str(&r, "GET /a?b?c=%20 HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_PARSE_DONE);
    assert_true(slice_is(&r, r.req.path, "/a"));
    assert_true(slice_is(&r, r.req.query, "b?c=%20"));
    run_free(&r);
    assert_int_equal(parse_str(&r, "GET /a? HTTP/1.1\r\nHost: a\r\n\r\n"), HTTP_PARSE_DONE);
    assert_int_equal(r.req.query.len, 0);
    run_free(&r);

    expect_error_str("GET * HTTP/1.1\r\n" H "\r\n", 400);
    expect_error_str("GET http://a/ HTTP/1.1\r\n" H "\r\n", 400);
    expect_error_str("CONNECT a:443 HTTP/1.1\r\n" H "\r\n", 400);
    expect_error_str("GET  / HTTP/1.1\r\n" H "\r\n", 400);
    expect_error_str("GET /  HTTP/1.1\r\n" H "\r\n", 400);
    expect_error_str("GET\t/ HTTP/1.1\r\n" H "\r\n", 400);
    expect_error_str(" GET / HTTP/1.1\r\n" H "\r\n", 400);
    expect_error_str("G(T / HTTP/1.1\r\n" H "\r\n", 400);
    expect_error_str("GET /a#frag HTTP/1.1\r\n" H "\r\n", 400);
    expect_error_str("GET /\x7f HTTP/1.1\r\n" H "\r\n", 400);
    expect_error_str("GET /\xc3\xa9 HTTP/1.1\r\n" H "\r\n", 400);
    expect_error_str("GET / HTTP/1.1\r\n" H "X-A: \x7f\r\n\r\n", 400);
    expect_error_str("GET / HTTP/1.1\r\n" H "X-A: \x01\r\n\r\n", 400);
    expect_done_str("GET / HTTP/1.1\r\n" H "X-A: caf\xc3\xa9 \"q\"\t(x)\r\n\r\n");

    static const char nul_target[] = "GET /\0 HTTP/1.1\r\nHost: a\r\n\r\n";
    expect_error(nul_target, sizeof(nul_target) - 1, 400);
    static const char nul_value[] = "GET / HTTP/1.1\r\nHost: a\r\nX-A: b\0c\r\n\r\n";
    expect_error(nul_value, sizeof(nul_value) - 1, 400);
    static const char nul_method[] = "G\0T / HTTP/1.1\r\nHost: a\r\n\r\n";
    expect_error(nul_method, sizeof(nul_method) - 1, 400);
}

static void test_keep_alive(void **state)
{
    static const struct {
        const char *raw;
        bool keep_alive;
    } cases[] = {
        {"GET / HTTP/1.1\r\nHost: a\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: CLOSE\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, Close \r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\nConnection: close\r\n\r\n", false},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: closed\r\n\r\n", true},
        {"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: Upgrade,Keep-Alive\r\n\r\n", true},
        {"GET / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n", false},
        {"GET / HTTP/1.0\r\nX-Connection: keep-alive\r\n\r\n", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        struct run r;
        assert_int_equal(parse_str(&r, cases[i].raw), HTTP_PARSE_DONE);
        if (r.req.keep_alive != cases[i].keep_alive)
            fail_msg("keep_alive %d for: %s", r.req.keep_alive, cases[i].raw);
        run_free(&r);
    }
}

/* ---- Garbage --------------------------------------------------------------------------- */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;

static uint64_t rng(void)
{
    rng_state ^= rng_state << 13;
    rng_state ^= rng_state >> 7;
    rng_state ^= rng_state << 17;
    return rng_state;
}

static void test_garbage(void **state)
{
    char raw[1024];
    for (int round = 0; round < 3000; round++) {
        size_t n = 1 + rng() % sizeof(raw);
        for (size_t i = 0; i < n; i++)
            raw[i] = (char)rng();
        struct run r, d;
        feed_whole(&r, raw, n);
        check_invariants(&r);
        assert_int_not_equal(r.result, HTTP_PARSE_DONE);
        if (round % 10 == 0) {
            feed_dribble(&d, raw, n);
            assert_true(same_parse(&r, &d));
            run_free(&d);
        }
        run_free(&r);
    }
    /* NULs, alone and after a valid start. */
    memset(raw, 0, sizeof(raw));
    struct run r;
    feed_whole(&r, raw, sizeof(raw));
    assert_int_equal(r.result, HTTP_PARSE_AGAIN); /* no line end yet: nothing decided */
    run_free(&r);
    raw[100] = '\r';
    raw[101] = '\n';
    feed_whole(&r, raw, sizeof(raw));
    assert_int_equal(r.result, HTTP_PARSE_ERROR);
    assert_int_equal(r.req.error_status, 400);
    run_free(&r);
    /* A valid prefix then binary: whatever the answer, never out of bounds. */
    for (int round = 0; round < 2000; round++) {
        size_t n = strlen(REQ_POST);
        memcpy(raw, REQ_POST, n);
        size_t at = rng() % n, k = 1 + rng() % 8;
        for (size_t i = at; i < at + k && i < n; i++)
            raw[i] = (char)rng();
        struct run d;
        feed_whole(&r, raw, n);
        check_invariants(&r);
        feed_dribble(&d, raw, n);
        assert_true(same_parse(&r, &d));
        run_free(&r);
        run_free(&d);
    }
}

/* Every byte of each realistic request replaced by each troublesome byte. */
static void test_mutations(void **state)
{
    struct sb chunked = {0};
    build_chunked(&chunked, true);
    const char *reqs[] = {REQ_GET, REQ_POST, chunked.p};
    size_t lens[] = {strlen(REQ_GET), strlen(REQ_POST), chunked.n};
    static const char subst[] = {'\0', '\r', '\n', ' ', '\t', ':', ';', '0', 'x', '\x80'};
    char raw[1024];
    for (int q = 0; q < 3; q++) {
        for (size_t at = 0; at < lens[q]; at++) {
            for (size_t k = 0; k < sizeof(subst); k++) {
                memcpy(raw, reqs[q], lens[q]);
                raw[at] = subst[k];
                struct run r, d;
                feed_whole(&r, raw, lens[q]);
                check_invariants(&r);
                size_t cut = (at * 7 + k) % lens[q];
                if (cut == 0)
                    cut = 1;
                feed(&d, raw, lens[q], &cut, 1);
                assert_true(same_parse(&r, &d));
                run_free(&r);
                run_free(&d);
            }
        }
    }
    free(chunked.p);
}

/* ---- Lookup, reasons, sticky answers ----------------------------------------------- */

static void test_header_find(void **state)
{
    const char *raw = "GET / HTTP/1.1\r\nHost: a\r\nContent-Type: text/plain\r\n"
                      "X-Dup: first\r\nx-dup: second\r\n\r\n";
    struct run r;
    char v[64];
    assert_int_equal(parse_str(&r, raw), HTTP_PARSE_DONE);
    assert_string_equal(header_value(&r, "content-type", v, sizeof(v)), "text/plain");
    assert_string_equal(header_value(&r, "CONTENT-TYPE", v, sizeof(v)), "text/plain");
    assert_string_equal(header_value(&r, "Content-Type", v, sizeof(v)), "text/plain");
    assert_string_equal(header_value(&r, "X-DUP", v, sizeof(v)), "first");
    assert_string_equal(header_value(&r, "host", v, sizeof(v)), "a");
    assert_null(header_value(&r, "Content-Typ", v, sizeof(v)));
    assert_null(header_value(&r, "Content-Types", v, sizeof(v)));
    assert_null(header_value(&r, "Accept", v, sizeof(v)));
    assert_null(header_value(&r, "", v, sizeof(v)));
    run_free(&r);
}

static void test_status_reason(void **state)
{
    assert_string_equal(http_status_reason(200), "OK");
    assert_string_equal(http_status_reason(404), "Not Found");
    assert_string_equal(http_status_reason(405), "Method Not Allowed");
    assert_string_equal(http_status_reason(413), "Content Too Large");
    assert_string_equal(http_status_reason(414), "URI Too Long");
    assert_string_equal(http_status_reason(431), "Request Header Fields Too Large");
    assert_string_equal(http_status_reason(501), "Not Implemented");
    assert_string_equal(http_status_reason(505), "HTTP Version Not Supported");
    assert_string_equal(http_status_reason(299), "Unknown");
}

static void test_sticky_answers(void **state)
{
    char buf[] = "GET / HTTP/1.1\r\nHost : a\r\n\r\nGET / HTTP/1.1\r\nHost: a\r\n\r\n";
    struct http_parser p;
    struct http_request req;
    http_parser_init(&p);
    assert_int_equal(http_parse(&p, buf, strlen(buf), &req), HTTP_PARSE_ERROR);
    assert_int_equal(req.error_status, 400);
    assert_int_equal(http_parse(&p, buf, strlen(buf), &req), HTTP_PARSE_ERROR);
    assert_int_equal(req.error_status, 400);

    char ok[] = "GET / HTTP/1.1\r\nHost: a\r\n\r\n";
    http_parser_init(&p);
    assert_int_equal(http_parse(&p, ok, strlen(ok), &req), HTTP_PARSE_DONE);
    assert_int_equal(http_parse(&p, ok, strlen(ok), &req), HTTP_PARSE_DONE);
    assert_int_equal(req.wire_bytes, strlen(ok));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_get),
        cmocka_unit_test(test_post_content_length),
        cmocka_unit_test(test_post_chunked),
        cmocka_unit_test(test_expect_continue),
        cmocka_unit_test(test_report_heads),
        cmocka_unit_test(test_chunks_stream),
        cmocka_unit_test(test_http10_and_leading_empty_lines),
        cmocka_unit_test(test_pipelined),
        cmocka_unit_test(test_limit_request_line),
        cmocka_unit_test(test_limit_header_line),
        cmocka_unit_test(test_limit_head),
        cmocka_unit_test(test_limit_header_count),
        cmocka_unit_test(test_limit_body_content_length),
        cmocka_unit_test(test_limit_body_chunked),
        cmocka_unit_test(test_limit_chunk_framing),
        cmocka_unit_test(test_smuggling_framing),
        cmocka_unit_test(test_smuggling_chunks),
        cmocka_unit_test(test_versions),
        cmocka_unit_test(test_host),
        cmocka_unit_test(test_request_line),
        cmocka_unit_test(test_keep_alive),
        cmocka_unit_test(test_garbage),
        cmocka_unit_test(test_mutations),
        cmocka_unit_test(test_header_find),
        cmocka_unit_test(test_status_reason),
        cmocka_unit_test(test_sticky_answers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
