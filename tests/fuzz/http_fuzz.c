/*
 * libFuzzer target for net/http.c.
 *
 * Input: byte 0 chooses how the rest is split into reads; bytes 1.. are a stream of
 * pipelined requests. The stream is parsed twice, as one buffer and as a connection
 * would see it (pieces appended to a buffer, each answer acted upon: DONE drops
 * wire_bytes and starts the next request, CONTINUE calls again), until AGAIN with
 * nothing left or ERROR. Both runs must give the same sequence of answers, the same
 * requests and the same request bytes. Every answer is checked for its invariants.
 * Any violation calls abort(), which libFuzzer reports with the input.
 *
 * Every chunked body the whole run accepts is also decoded by the streaming decoder
 * (http_chunks_feed) in pieces: the same bytes, ending at the same place.
 *
 * When byte 0's high bit is set, the split run's parsers also report heads
 * (http_parser_report_heads) and answer HTTP_PARSE_HEAD by reading the body as usual:
 * the answers must still be those of the whole run, which never reports heads.
 *
 * In the split run the bytes past `len` are poisoned for AddressSanitizer, so a parser
 * that peeks at bytes it was not given crashes here.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <sanitizer/asan_interface.h>

#include "net/http.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

/* What one http_parse() answer of the stream looked like. */
struct step {
    int result;
    struct http_request req;
    uint64_t bytes_hash; /* of [0, wire_bytes) after a DONE */
};

static uint64_t fnv1a(const char *p, size_t n)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)p[i]) * 0x100000001b3ull;
    return h;
}

static int slice_in(struct http_slice s, uint32_t end)
{
    return (uint64_t)s.off + s.len <= end;
}

static void check_invariants(int rc, const struct http_request *q, size_t len)
{
    CHECK(rc == HTTP_PARSE_DONE || rc == HTTP_PARSE_AGAIN || rc == HTTP_PARSE_ERROR);
    if (rc == HTTP_PARSE_ERROR) {
        int s = q->error_status;
        CHECK(s == 400 || s == 413 || s == 414 || s == 431 || s == 501 || s == 505);
        CHECK(q->error_reason != NULL);
        return;
    }
    if (rc != HTTP_PARSE_DONE)
        return;
    CHECK(q->wire_bytes > 0 && q->wire_bytes <= len);
    CHECK(q->wire_bytes <= CONN_LARGE_BUF_BYTES);
    CHECK(q->head_bytes <= q->wire_bytes && q->head_bytes <= HTTP_HEAD_MAX_BYTES);
    CHECK(q->body.off == q->head_bytes && slice_in(q->body, q->wire_bytes));
    CHECK(q->body.len <= HTTP_BODY_MAX_BYTES);
    CHECK(!(q->chunked && q->has_content_length));
    CHECK(q->chunked || q->body.len == q->content_length);
    CHECK(q->version_minor <= 1);
    CHECK(q->header_count <= HTTP_HEADERS_MAX);
    CHECK(q->method_token.len > 0 && slice_in(q->method_token, q->head_bytes));
    CHECK(q->target.len > 0 && slice_in(q->target, q->head_bytes));
    CHECK(slice_in(q->path, q->head_bytes) && slice_in(q->query, q->head_bytes));
    CHECK(q->error_status == 0);
    for (uint16_t i = 0; i < q->header_count; i++) {
        CHECK(q->headers[i].name.len > 0 && slice_in(q->headers[i].name, q->head_bytes));
        CHECK(slice_in(q->headers[i].value, q->head_bytes));
    }
}

static int slice_eq(struct http_slice a, struct http_slice b)
{
    return a.off == b.off && a.len == b.len;
}

static void check_same(const struct step *a, int result, const struct http_request *y,
                       uint64_t bytes_hash)
{
    const struct http_request *x = &a->req;
    CHECK(a->result == result);
    if (result == HTTP_PARSE_ERROR) {
        CHECK(x->error_status == y->error_status);
        CHECK(strcmp(x->error_reason, y->error_reason) == 0);
    }
    if (result != HTTP_PARSE_DONE)
        return;
    CHECK(x->method == y->method && slice_eq(x->method_token, y->method_token));
    CHECK(slice_eq(x->target, y->target) && slice_eq(x->path, y->path));
    CHECK(slice_eq(x->query, y->query) && x->version_minor == y->version_minor);
    CHECK(x->keep_alive == y->keep_alive && x->expect_continue == y->expect_continue);
    CHECK(x->chunked == y->chunked && x->has_content_length == y->has_content_length);
    CHECK(x->content_length == y->content_length && slice_eq(x->body, y->body));
    CHECK(x->head_bytes == y->head_bytes && x->wire_bytes == y->wire_bytes);
    CHECK(x->header_count == y->header_count);
    for (uint16_t i = 0; i < x->header_count; i++) {
        CHECK(slice_eq(x->headers[i].name, y->headers[i].name));
        CHECK(slice_eq(x->headers[i].value, y->headers[i].value));
    }
    CHECK(a->bytes_hash == bytes_hash);
}

/* The split run's parsers report heads (byte 0's high bit). */
static int report_heads;

static void parser_init(struct http_parser *p, int heads)
{
    http_parser_init(p);
    if (heads)
        http_parser_report_heads(p);
}

/* Calls http_parse and answers HEAD and CONTINUE the way a connection that does not
 * stream does. */
static int parse(struct http_parser *p, char *buf, size_t len, struct http_request *req)
{
    int rc = http_parse(p, buf, len, req);
    if (rc == HTTP_PARSE_HEAD) {
        CHECK(report_heads && req->head_bytes <= len);
        CHECK(req->chunked || (req->has_content_length && req->content_length > 0));
        rc = http_parse(p, buf, len, req);
        CHECK(rc != HTTP_PARSE_HEAD);
    }
    if (rc == HTTP_PARSE_CONTINUE) {
        CHECK(req->expect_continue && len == req->head_bytes);
        rc = http_parse(p, buf, len, req);
        CHECK(rc != HTTP_PARSE_CONTINUE);
    }
    check_invariants(rc, req, len);
    return rc;
}

/* The streaming decoder (http_chunks_feed) against the parser: a chunked body the parser
 * accepted decodes to the same bytes and ends at the same place, fed in pieces of
 * `piece` bytes the way the reactor feeds it (an unfinished line kept in front). */
struct sink {
    char *out;
    size_t len, cap;
};

static void sink_add(void *arg, const char *data, size_t len)
{
    struct sink *k = arg;
    CHECK(k->len + len <= k->cap);
    memcpy(k->out + k->len, data, len);
    k->len += len;
}

static void check_chunks(const char *raw, size_t n, const char *body, size_t body_len, size_t piece)
{
    struct sink k = {malloc(body_len + 1), 0, body_len + 1};
    char *buf = malloc(n + 1);
    CHECK(k.out != NULL && buf != NULL);
    struct http_chunks c;
    http_chunks_init(&c);
    size_t have = 0, fed = 0, consumed = 0;
    int rc = HTTP_CHUNKS_MORE;
    while (rc == HTTP_CHUNKS_MORE && fed < n) {
        size_t add = n - fed < piece ? n - fed : piece;
        memcpy(buf + have, raw + fed, add);
        have += add;
        fed += add;
        size_t used = 0;
        const char *why = NULL;
        rc = http_chunks_feed(&c, buf, have, &used, sink_add, &k, &why);
        CHECK(rc != HTTP_CHUNKS_ERROR);
        memmove(buf, buf + used, have - used);
        have -= used;
        consumed += used;
    }
    CHECK(rc == HTTP_CHUNKS_DONE && consumed == n);
    CHECK(k.len == body_len && memcmp(k.out, body, body_len) == 0);
    free(k.out);
    free(buf);
}

/* The stream as one buffer. Returns the number of steps recorded. */
static size_t run_whole(const char *data, size_t n, struct step *steps, size_t max)
{
    char *buf = malloc(n ? n : 1);
    CHECK(buf != NULL);
    memcpy(buf, data, n);
    size_t off = 0, k = 0;
    for (;;) {
        CHECK(k < max);
        struct http_parser p;
        struct step *s = &steps[k++];
        http_parser_init(&p);
        s->result = parse(&p, buf + off, n - off, &s->req);
        if (s->result != HTTP_PARSE_DONE)
            break;
        uint32_t wire = s->req.wire_bytes;
        s->bytes_hash = fnv1a(buf + off, wire);
        if (s->req.chunked) /* the raw body is still in data; the decoded one in buf */
            check_chunks(data + off + s->req.head_bytes, wire - s->req.head_bytes,
                         buf + off + s->req.body.off, s->req.body.len, 1 + (k * 7) % 64);
        /* Bytes after the request (pipelined ones) are never touched. */
        CHECK(memcmp(buf + off + wire, data + off + wire, n - off - wire) == 0);
        off += wire;
    }
    free(buf);
    return k;
}

/* The stream in pieces chosen by `seed`, through a connection-like buffer. */
static void run_split(const char *data, size_t n, uint8_t seed, const struct step *steps,
                      size_t nsteps)
{
    uint32_t rng = seed * 2654435761u + 1;
    uint32_t piece_max = 1 + (seed & 31u) * 4;
    char *buf = malloc(n ? n : 1);
    CHECK(buf != NULL);
    size_t have = 0, fed = 0, k = 0;
    struct http_parser p;
    struct http_request req;
    parser_init(&p, report_heads);
    for (;;) {
        ASAN_POISON_MEMORY_REGION(buf + have, n - have);
        int rc = parse(&p, buf, have, &req);
        ASAN_UNPOISON_MEMORY_REGION(buf, n);
        if (rc == HTTP_PARSE_AGAIN && fed < n) {
            rng ^= rng << 13, rng ^= rng >> 17, rng ^= rng << 5;
            size_t piece = 1 + rng % piece_max;
            if (piece > n - fed)
                piece = n - fed;
            memcpy(buf + have, data + fed, piece);
            have += piece;
            fed += piece;
            continue;
        }
        CHECK(k < nsteps);
        uint64_t h = rc == HTTP_PARSE_DONE ? fnv1a(buf, req.wire_bytes) : 0;
        check_same(&steps[k++], rc, &req, h);
        if (rc != HTTP_PARSE_DONE)
            break;
        memmove(buf, buf + req.wire_bytes, have - req.wire_bytes);
        have -= req.wire_bytes;
        parser_init(&p, report_heads);
    }
    CHECK(k == nsteps);
    free(buf);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1)
        return 0;
    const char *stream = (const char *)data + 1;
    size_t n = size - 1;
    /* The smallest complete request, "X / HTTP/1.0\r\n\r\n", has 16 bytes. */
    size_t max = n / 16 + 2;
    struct step *steps = malloc(max * sizeof(*steps));
    CHECK(steps != NULL);
    report_heads = 0;
    size_t nsteps = run_whole(stream, n, steps, max);
    report_heads = (data[0] & 0x80) != 0;
    run_split(stream, n, data[0], steps, nsteps);
    free(steps);
    return 0;
}
