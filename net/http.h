/*
 * HTTP/1.1 request parser (server side), incremental and strict.
 *
 * The caller owns one contiguous input buffer per connection that starts at the first
 * byte of the current request. It appends bytes as they arrive and calls http_parse()
 * with the whole buffered span each time; the parser remembers how far it got, so a
 * head dribbled one byte per read costs O(total bytes), not O(n^2).
 *
 * Everything the parser reports is an offset into that buffer (struct http_slice), not
 * a pointer, because the caller may move the request to a larger buffer between calls.
 * Chunked bodies are decoded in place: the decoded body is contiguous at req->body.
 *
 * Strictness (request smuggling defences, RFC 9112):
 *   - lines end in CRLF; a bare LF or bare CR anywhere in the head is 400;
 *   - whitespace between a field name and its colon, obs-fold, empty or non-token
 *     field names, control characters in values: 400;
 *   - Content-Length together with Transfer-Encoding: 400;
 *   - Content-Length duplicated (even with equal values), empty, or not 1*DIGIT
 *     ("+1", "-1", "0x10", "1 0", "1,1"): 400;
 *   - Transfer-Encoding other than exactly "chunked" (case-insensitive): 501; chunked
 *     on HTTP/1.0: 400;
 *   - chunk sizes: 1*HEXDIG only (no sign, no 0x, no spaces, at most 15 digits),
 *     chunk extensions are checked against the RFC grammar and skipped, the CRLF after
 *     chunk data is required, trailer fields are checked like header fields and then
 *     ignored: otherwise 400. All chunked framing of one request (size lines with their
 *     extensions, the CRLFs after data, the trailer section) shares one budget of
 *     HTTP_LINE_MAX_BYTES: over it, 400;
 *   - HTTP version other than HTTP/1.0 or HTTP/1.1 ("HTTP/" DIGIT "." DIGIT): 505; any
 *     other version text: 400; a missing, empty, invalid or duplicated Host on 1.1: 400;
 *   - the method is a token (case-sensitive; unknown tokens are HTTP_METHOD_OTHER), the
 *     request-target is origin-form ("/" ...), or "*" for OPTIONS only: otherwise 400;
 *     single spaces separate the three parts of the request line.
 *
 * Streamed bodies: after http_parser_report_heads(), a request with a Content-Length body
 * (at least one byte) or a chunked one returns HTTP_PARSE_HEAD once its head is
 * complete, before any body limit is applied: the caller either takes the body bytes
 * itself as they arrive (they start at head_bytes; content_length is the declared
 * length, up to HTTP_STREAM_LENGTH_MAX, saturated above it; a chunked body's framing is
 * decoded with http_chunks_feed) and never calls http_parse for this request again, or
 * calls http_parse again to read the body as usual (then the 413 limit and the 100
 * Continue apply as they would have).
 *
 * Empty lines (CRLF) before the request line are skipped (RFC 9112 §2.2); they count in
 * head_bytes and in the head limit. "Expect: 100-continue" is honoured on HTTP/1.1 only.
 *
 * Limits (engine/limits.h): request line over HTTP_LINE_MAX_BYTES: 414; a header line
 * over it, a head over HTTP_HEAD_MAX_BYTES or more than HTTP_HEADERS_MAX fields: 431;
 * a body over HTTP_BODY_MAX_BYTES (declared or decoded): 413. Every limit is detected
 * as soon as the bytes that break it arrive, so the caller never needs more than
 * HTTP_HEAD_MAX_BYTES + HTTP_BODY_MAX_BYTES + HTTP_LINE_MAX_BYTES (chunked framing) of
 * buffer for one request (CONN_LARGE_BUF_BYTES).
 *
 * The result is a function of the bytes alone: however the request is split across
 * calls, the final result, *req and the bytes [0, wire_bytes) of the buffer are the same
 * (only the HTTP_PARSE_CONTINUE answer depends on the split, see below). The parser
 * allocates nothing and calls no function per byte.
 */
#ifndef RINGPAY_NET_HTTP_H
#define RINGPAY_NET_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

enum http_method {
    HTTP_METHOD_OTHER = 0, /* a valid token we do not implement: the router says 405 */
    HTTP_GET,
    HTTP_HEAD,
    HTTP_POST,
    HTTP_PUT,
    HTTP_DELETE,
    HTTP_PATCH,
    HTTP_OPTIONS,
};

/* A span of the caller's buffer, relative to the first byte of the request. */
struct http_slice {
    uint32_t off;
    uint32_t len;
};

struct http_header {
    struct http_slice name;  /* as sent; compare case-insensitively */
    struct http_slice value; /* leading and trailing spaces/tabs trimmed */
};

struct http_request {
    enum http_method method;
    struct http_slice method_token;
    struct http_slice target; /* request-target exactly as sent (path and query) */
    struct http_slice path;   /* target up to '?' */
    struct http_slice query;  /* after '?', len 0 when absent */
    uint8_t version_minor;    /* 0 or 1 */

    uint16_t header_count;
    struct http_header headers[HTTP_HEADERS_MAX];

    bool keep_alive;      /* 1.1 without "Connection: close", or 1.0 with keep-alive */
    bool expect_continue; /* "Expect: 100-continue" */
    bool chunked;
    bool has_content_length;
    uint64_t content_length;

    struct http_slice body; /* decoded body; len 0 when none; off == head_bytes */
    uint32_t head_bytes;    /* buf[0] through the blank line (skipped empty lines too) */
    uint32_t wire_bytes;    /* bytes of the buffer this request used, body included */

    uint16_t error_status;    /* set when http_parse returns HTTP_PARSE_ERROR */
    const char *error_reason; /* static text for logs and the error message */
};

enum http_parse_result {
    HTTP_PARSE_ERROR = -1,   /* req->error_status says which; answer it and close */
    HTTP_PARSE_AGAIN = 0,    /* need more bytes */
    HTTP_PARSE_DONE = 1,     /* req is complete; drop req->wire_bytes from the buffer */
    HTTP_PARSE_CONTINUE = 2, /* head complete, body pending, client sent Expect:
                                100-continue: send "100 Continue" once, then call
                                again as usual (returned at most once per request,
                                and only when no body byte has arrived yet: a client
                                that already sends its body is not waiting) */
    HTTP_PARSE_HEAD = 3,     /* head complete, a body follows (Content-Length or chunked),
                                and heads are reported (http_parser_report_heads): see
                                the top */
};

/* Private: the caller embeds it and only calls http_parser_init() on it. */
struct http_parser {
    uint32_t state;
    uint32_t scanned;    /* bytes of the buffer examined so far */
    uint32_t line_start; /* first byte of the line being read */
    uint32_t raw_off;    /* chunked: next undecoded byte */
    uint32_t body_len;   /* chunked: decoded bytes so far */
    uint32_t flags;      /* header facts gathered while reading the head */
    uint64_t chunk_left; /* chunked: bytes of the current chunk still to come */
};

/* Prepares a parser for the next request on a connection. */
void http_parser_init(struct http_parser *p);

/* After http_parser_init: this request may answer HTTP_PARSE_HEAD (see the top). */
void http_parser_report_heads(struct http_parser *p);

/*
 * Parses the request that starts at buf[0], of which len bytes have arrived.
 * buf may be modified (chunked decoding happens in place). On HTTP_PARSE_DONE, req
 * describes the request and the caller drops req->wire_bytes from the front of its
 * buffer and calls http_parser_init() before parsing the next one. Bytes after
 * wire_bytes (a pipelined next request) are never touched.
 *
 * Between http_parser_init() and DONE/ERROR, every call must pass the same req (it
 * accumulates the head) and a len that never shrinks; the bytes already passed must
 * stay as they are (the buffer may move). After DONE or ERROR, further calls return
 * the same answer without looking at buf.
 */
int http_parse(struct http_parser *p, char *buf, size_t len, struct http_request *req);

/*
 * A chunked body read as a stream (after HTTP_PARSE_HEAD of a chunked request), with
 * the parser's rules for chunked framing: sizes of 1..15 hex digits, extensions checked
 * against the RFC grammar and skipped, the CRLF after each chunk's data required,
 * trailer fields checked like header fields and ignored, bare LF refused. Unlike the
 * parser, there is no body limit (the caller counts) and the framing budget is per line
 * (HTTP_LINE_MAX_BYTES): a long stream has a size line per chunk.
 */
struct http_chunks {
    uint8_t state;
    uint64_t left; /* data bytes of the current chunk still to come */
};

typedef void (*http_chunk_fn)(void *arg, const char *data, size_t len);

enum { HTTP_CHUNKS_ERROR = -1, HTTP_CHUNKS_MORE = 0, HTTP_CHUNKS_DONE = 1 };

void http_chunks_init(struct http_chunks *c);

/*
 * Decodes buf[0..len), the next bytes of the body after what earlier calls consumed:
 * calls fn for every run of data bytes, in order, and sets *used to the bytes consumed.
 * HTTP_CHUNKS_MORE: more input is needed; a framing line that has not ended is not
 * consumed (*used stops at its start) and must be passed again with what follows.
 * HTTP_CHUNKS_DONE: the body ended at *used (bytes after it belong to the next request).
 * HTTP_CHUNKS_ERROR: malformed framing, *why says how; the reader is dead.
 */
int http_chunks_feed(struct http_chunks *c, const char *buf, size_t len, size_t *used,
                     http_chunk_fn fn, void *arg, const char **why);

/* The first header named `name` (case-insensitive), or NULL. */
const struct http_header *http_header_find(const struct http_request *req, const char *buf,
                                           const char *name);

/* How many header fields are named `name` (case-insensitive). */
unsigned http_header_count(const struct http_request *req, const char *buf, const char *name);

/* Reason phrase of a status code ("Not Found"); "Unknown" for codes we never send. */
const char *http_status_reason(int status);

#ifdef __cplusplus
}
#endif

#endif
