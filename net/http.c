/*
 * HTTP/1.1 request parser: the contract and every strictness rule are in net/http.h.
 *
 * How it works. The head is read line by line: memchr finds the LF that ends the
 * current line (resuming where the previous call stopped, bounded by the line and head
 * limits), and a completed line is checked and recorded at once into *req. The body is
 * then either a Content-Length span or a chunked stream decoded in place: chunk data is
 * moved down so that the decoded body is contiguous right after the head.
 *
 * Every decision depends only on bytes at or before the position where it is taken, and
 * bytes are consumed strictly in order, so splitting the input differently never changes
 * the answer. In place decoding only ever writes below p->raw_off and only reads at or
 * above it, so even the decoded buffer is independent of the split.
 *
 * Invariants between calls:
 *   p->line_start <= p->scanned <= len   (head and chunk-line states)
 *   head_bytes + body_len <= raw_off <= len   (chunked states)
 *   raw_off - head_bytes - body_len <= CHUNK_FRAMING_MAX_BYTES
 */
#include "net/http.h"

#include <string.h>

#include "engine/assert.h"

/*
 * Chunked framing (size lines, extensions, CRLFs after data, trailers) of one request is
 * bounded as a whole, so a request never needs more buffer than a head, a decoded body
 * and this: CONN_LARGE_BUF_BYTES. Real clients spend a few bytes per chunk.
 */
#define CHUNK_FRAMING_MAX_BYTES HTTP_LINE_MAX_BYTES
_Static_assert(HTTP_HEAD_MAX_BYTES + HTTP_BODY_MAX_BYTES + CHUNK_FRAMING_MAX_BYTES <=
                   CONN_LARGE_BUF_BYTES,
               "one request fits a large connection buffer");

/* Chunk sizes of at most 15 hex digits cannot overflow 64 bits. */
#define CHUNK_SIZE_DIGITS_MAX 15

enum parser_state {
    S_INIT = 0, /* http_parser_init() state: req not reset yet */
    S_REQUEST_LINE,
    S_HEADERS,
    S_BODY_LENGTH,
    S_CHUNK_SIZE,
    S_CHUNK_DATA,
    S_CHUNK_CRLF,
    S_TRAILERS,
    S_DONE,
    S_ERROR,
};

/* Facts about header fields gathered while reading the head (p->flags). */
enum {
    F_HOST = 1u << 0,
    F_TE = 1u << 1,
    F_TE_CHUNKED = 1u << 2,
    F_CL_TOO_BIG = 1u << 3,
    F_CONN_CLOSE = 1u << 4,
    F_CONN_KEEP_ALIVE = 1u << 5,
    F_EXPECT_CONTINUE = 1u << 6,
    F_REPORT_HEADS = 1u << 7,  /* http_parser_report_heads: kept across the request */
    F_HEAD_REPORTED = 1u << 8, /* HTTP_PARSE_HEAD was returned; the body checks follow */
};

/* Internal answer of parse_head(): the blank line ending the head was read. */
#define HEAD_COMPLETE 3

/* Results of find_lf() and framing_line() besides an index. */
#define LINE_MORE   (-1)
#define LINE_LONG   (-2)
#define LINE_FAILED (-3) /* fail() was called */

/* Result of chunk_crlf() when its bytes have not all arrived. */
#define CRLF_MORE 4

/* ---- Character classes ------------------------------------------------------------ */

enum {
    C_TOKEN = 1u << 0,  /* tchar (RFC 9110 §5.6.2) */
    C_VALUE = 1u << 1,  /* field-vchar, SP, HTAB (obs-text included) */
    C_TARGET = 1u << 2, /* request-target byte: VCHAR except '#' */
    C_HEX = 1u << 3,
    C_HOST = 1u << 4,   /* reg-name, IP-literal and port bytes */
    C_QDTEXT = 1u << 5, /* quoted-string text: qdtext (RFC 9110 §5.6.4) */
};

#define IS_DIGIT(c) ((c) >= '0' && (c) <= '9')
#define IS_ALPHA(c) (((c) >= 'a' && (c) <= 'z') || ((c) >= 'A' && (c) <= 'Z'))
#define IS_TCHAR_PUNCT(c)                                                                          \
    ((c) == '!' || (c) == '#' || (c) == '$' || (c) == '%' || (c) == '&' || (c) == '\'' ||          \
     (c) == '*' || (c) == '+' || (c) == '-' || (c) == '.' || (c) == '^' || (c) == '_' ||           \
     (c) == '`' || (c) == '|' || (c) == '~')
#define IS_HOST_PUNCT(c)                                                                           \
    ((c) == '-' || (c) == '.' || (c) == '_' || (c) == '~' || (c) == '!' || (c) == '$' ||           \
     (c) == '&' || (c) == '\'' || (c) == '(' || (c) == ')' || (c) == '*' || (c) == '+' ||          \
     (c) == ',' || (c) == ';' || (c) == '=' || (c) == ':' || (c) == '[' || (c) == ']' ||           \
     (c) == '%')
#define IS_VCHAR(c) ((c) >= 0x21 && (c) <= 0x7e)

#define CLS(c)                                                                                     \
    ((IS_DIGIT(c) || IS_ALPHA(c) || IS_TCHAR_PUNCT(c) ? C_TOKEN : 0) |                             \
     (IS_VCHAR(c) || (c) >= 0x80 || (c) == ' ' || (c) == '\t' ? C_VALUE : 0) |                     \
     (IS_VCHAR(c) && (c) != '#' ? C_TARGET : 0) |                                                  \
     (IS_DIGIT(c) || ((c) >= 'a' && (c) <= 'f') || ((c) >= 'A' && (c) <= 'F') ? C_HEX : 0) |       \
     (IS_DIGIT(c) || IS_ALPHA(c) || IS_HOST_PUNCT(c) ? C_HOST : 0) |                               \
     ((IS_VCHAR(c) && (c) != '"' && (c) != '\\') || (c) >= 0x80 || (c) == ' ' || (c) == '\t'       \
          ? C_QDTEXT                                                                               \
          : 0))
#define CLS4(c)  CLS(c), CLS((c) + 1), CLS((c) + 2), CLS((c) + 3)
#define CLS16(c) CLS4(c), CLS4((c) + 4), CLS4((c) + 8), CLS4((c) + 12)
#define CLS64(c) CLS16(c), CLS16((c) + 16), CLS16((c) + 32), CLS16((c) + 48)

static const uint8_t cls[256] = {CLS64(0), CLS64(64), CLS64(128), CLS64(192)};

#define TOLOWER(c) ((c) >= 'A' && (c) <= 'Z' ? (c) + ('a' - 'A') : (c))

/* a[0..n) equals the lower-case ASCII text lower[0..n), ignoring case. */
static inline bool eq_nocase(const char *a, const char *lower, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)a[i];
        if (TOLOWER(c) != (unsigned char)lower[i])
            return false;
    }
    return true;
}

static inline uint32_t skip_ows(const unsigned char *s, uint32_t i, uint32_t end)
{
    while (i < end && (s[i] == ' ' || s[i] == '\t'))
        i++;
    return i;
}

/* ---- Small helpers ------------------------------------------------------------------ */

static int fail(struct http_parser *p, struct http_request *req, uint16_t status,
                const char *reason)
{
    p->state = S_ERROR;
    req->error_status = status;
    req->error_reason = reason;
    return HTTP_PARSE_ERROR;
}

static void req_reset(struct http_request *req)
{
    /* Field by field: the 1.6 KiB header array is written as headers arrive. */
    req->method = HTTP_METHOD_OTHER;
    req->method_token = (struct http_slice){0, 0};
    req->target = (struct http_slice){0, 0};
    req->path = (struct http_slice){0, 0};
    req->query = (struct http_slice){0, 0};
    req->version_minor = 0;
    req->header_count = 0;
    req->keep_alive = false;
    req->expect_continue = false;
    req->chunked = false;
    req->has_content_length = false;
    req->content_length = 0;
    req->body = (struct http_slice){0, 0};
    req->head_bytes = 0;
    req->wire_bytes = 0;
    req->error_status = 0;
    req->error_reason = NULL;
}

/*
 * Looks for the LF ending the line that is being read, from p->scanned on and only at
 * indexes below `bound`. Returns its index, LINE_MORE when the line has not ended in
 * the bytes that arrived, LINE_LONG when `bound` was reached without one.
 */
static inline long find_lf(struct http_parser *p, const char *buf, size_t len, size_t bound)
{
    size_t to = len < bound ? len : bound;
    size_t from = p->scanned;
    if (from < to) {
        const char *lf = memchr(buf + from, '\n', to - from);
        if (lf != NULL)
            return lf - buf;
        p->scanned = (uint32_t)to;
    }
    return to == bound ? LINE_LONG : LINE_MORE;
}

static enum http_method method_of(const char *m, uint32_t n)
{
    switch (n) {
    case 3:
        if (memcmp(m, "GET", 3) == 0)
            return HTTP_GET;
        if (memcmp(m, "PUT", 3) == 0)
            return HTTP_PUT;
        break;
    case 4:
        if (memcmp(m, "POST", 4) == 0)
            return HTTP_POST;
        if (memcmp(m, "HEAD", 4) == 0)
            return HTTP_HEAD;
        break;
    case 5:
        if (memcmp(m, "PATCH", 5) == 0)
            return HTTP_PATCH;
        break;
    case 6:
        if (memcmp(m, "DELETE", 6) == 0)
            return HTTP_DELETE;
        break;
    case 7:
        if (memcmp(m, "OPTIONS", 7) == 0)
            return HTTP_OPTIONS;
        break;
    }
    return HTTP_METHOD_OTHER;
}

/* ---- The head ------------------------------------------------------------------------ */

/* The request-target at [t, end): origin-form, or "*" for OPTIONS. 0 or an error. */
static int parse_target(struct http_parser *p, const char *buf, uint32_t t, uint32_t end,
                        struct http_request *req)
{
    req->target = (struct http_slice){t, end - t};
    if (buf[t] == '/') {
        const char *q = memchr(buf + t, '?', end - t);
        uint32_t qi = q != NULL ? (uint32_t)(q - buf) : end;
        req->path = (struct http_slice){t, qi - t};
        req->query =
            q != NULL ? (struct http_slice){qi + 1, end - qi - 1} : (struct http_slice){end, 0};
        return 0;
    }
    if (end - t == 1 && buf[t] == '*' && req->method == HTTP_OPTIONS) {
        req->path = req->target;
        req->query = (struct http_slice){end, 0};
        return 0;
    }
    return fail(p, req, 400, "request-target not in origin-form");
}

/* method SP request-target SP HTTP-version, the line being [start, cr). */
static int parse_request_line(struct http_parser *p, const char *buf, uint32_t start, uint32_t cr,
                              struct http_request *req)
{
    const unsigned char *s = (const unsigned char *)buf;
    uint32_t i = start;
    while (i < cr && (cls[s[i]] & C_TOKEN))
        i++;
    if (i == start || i == cr || s[i] != ' ')
        return fail(p, req, 400, "malformed method");
    req->method_token = (struct http_slice){start, i - start};
    req->method = method_of(buf + start, i - start);

    uint32_t t = ++i;
    while (i < cr && (cls[s[i]] & C_TARGET))
        i++;
    if (i == t || i == cr || s[i] != ' ')
        return fail(p, req, 400, "malformed request-target");
    int rc = parse_target(p, buf, t, i, req);
    if (rc != 0)
        return rc;

    const unsigned char *v = s + i + 1;
    if (cr - (i + 1) != 8 || memcmp(v, "HTTP/", 5) != 0 || !IS_DIGIT(v[5]) || v[6] != '.' ||
        !IS_DIGIT(v[7]))
        return fail(p, req, 400, "malformed HTTP version");
    if (v[5] != '1' || (v[7] != '0' && v[7] != '1'))
        return fail(p, req, 505, "HTTP version not supported");
    req->version_minor = (uint8_t)(v[7] - '0');
    return 0;
}

/*
 * field-name ":" OWS field-value OWS, the line being [start, cr). Sets the name end and
 * the trimmed value span; returns NULL or the reason it is malformed.
 */
static const char *field_syntax(const char *buf, uint32_t start, uint32_t cr, uint32_t *name_end,
                                uint32_t *value, uint32_t *value_end)
{
    const unsigned char *s = (const unsigned char *)buf;
    uint32_t i = start;
    while (i < cr && (cls[s[i]] & C_TOKEN))
        i++;
    if (i == start)
        return s[i] == ' ' || s[i] == '\t' ? "obsolete line folding" : "empty field name";
    if (i == cr || s[i] != ':')
        return s[i] == ' ' || s[i] == '\t' ? "whitespace before colon"
                                           : "invalid character in field name";
    *name_end = i;
    uint32_t v = skip_ows(s, i + 1, cr);
    i = v;
    while (i < cr && (cls[s[i]] & C_VALUE))
        i++;
    if (i != cr)
        return "invalid character in field value";
    while (i > v && (s[i - 1] == ' ' || s[i - 1] == '\t'))
        i--;
    *value = v;
    *value_end = i;
    return NULL;
}

/* Content-Length: 1*DIGIT, once. Values over the body limit are only remembered (a
 * streamed body, HTTP_PARSE_HEAD, may be larger); the value saturates at
 * HTTP_STREAM_LENGTH_MAX + 1. */
static int content_length(struct http_parser *p, const char *buf, struct http_slice v,
                          struct http_request *req)
{
    if (req->has_content_length)
        return fail(p, req, 400, "duplicate Content-Length");
    if (v.len == 0)
        return fail(p, req, 400, "empty Content-Length");
    uint64_t n = 0;
    for (uint32_t i = v.off; i < v.off + v.len; i++) {
        unsigned char c = (unsigned char)buf[i];
        if (!IS_DIGIT(c))
            return fail(p, req, 400, "malformed Content-Length");
        if (n <= HTTP_STREAM_LENGTH_MAX)
            n = n * 10 + (uint64_t)(c - '0');
    }
    if (n > HTTP_STREAM_LENGTH_MAX)
        n = HTTP_STREAM_LENGTH_MAX + 1;
    if (n > HTTP_BODY_MAX_BYTES)
        p->flags |= F_CL_TOO_BIG;
    req->has_content_length = true;
    req->content_length = n;
    return 0;
}

/* Connection: a comma-separated list of options; "close" and "keep-alive" matter. */
static void connection_options(struct http_parser *p, const char *buf, struct http_slice v)
{
    const unsigned char *s = (const unsigned char *)buf;
    uint32_t end = v.off + v.len;
    uint32_t i = v.off;
    while (i < end) {
        uint32_t e = i;
        while (e < end && s[e] != ',')
            e++;
        uint32_t a = skip_ows(s, i, e);
        uint32_t b = e;
        while (b > a && (s[b - 1] == ' ' || s[b - 1] == '\t'))
            b--;
        if (b - a == 5 && eq_nocase(buf + a, "close", 5))
            p->flags |= F_CONN_CLOSE;
        else if (b - a == 10 && eq_nocase(buf + a, "keep-alive", 10))
            p->flags |= F_CONN_KEEP_ALIVE;
        i = e + 1;
    }
}

/* Host: once, non-empty, only authority bytes. */
static int host(struct http_parser *p, const char *buf, struct http_slice v,
                struct http_request *req)
{
    if (p->flags & F_HOST)
        return fail(p, req, 400, "duplicate Host");
    if (v.len == 0)
        return fail(p, req, 400, "empty Host");
    for (uint32_t i = v.off; i < v.off + v.len; i++) {
        if (!(cls[(unsigned char)buf[i]] & C_HOST))
            return fail(p, req, 400, "invalid Host");
    }
    p->flags |= F_HOST;
    return 0;
}

/* Records the fields that frame the request or steer the connection. */
static int header_meaning(struct http_parser *p, const char *buf, const struct http_header *h,
                          struct http_request *req)
{
    const char *name = buf + h->name.off;
    switch (h->name.len) {
    case 4:
        if (eq_nocase(name, "host", 4))
            return host(p, buf, h->value, req);
        break;
    case 6:
        if (eq_nocase(name, "expect", 6) && h->value.len == 12 &&
            eq_nocase(buf + h->value.off, "100-continue", 12))
            p->flags |= F_EXPECT_CONTINUE;
        break;
    case 10:
        if (eq_nocase(name, "connection", 10))
            connection_options(p, buf, h->value);
        break;
    case 14:
        if (eq_nocase(name, "content-length", 14))
            return content_length(p, buf, h->value, req);
        break;
    case 17:
        if (eq_nocase(name, "transfer-encoding", 17)) {
            if (p->flags & F_TE)
                return fail(p, req, 400, "duplicate Transfer-Encoding");
            p->flags |= F_TE;
            if (h->value.len == 7 && eq_nocase(buf + h->value.off, "chunked", 7))
                p->flags |= F_TE_CHUNKED;
        }
        break;
    }
    return 0;
}

/* One header line [start, cr): checked, stored, and understood. */
static int parse_header(struct http_parser *p, const char *buf, uint32_t start, uint32_t cr,
                        struct http_request *req)
{
    if (req->header_count == HTTP_HEADERS_MAX)
        return fail(p, req, 431, "too many header fields");
    uint32_t name_end, v, v_end;
    const char *bad = field_syntax(buf, start, cr, &name_end, &v, &v_end);
    if (bad != NULL)
        return fail(p, req, 400, bad);
    struct http_header *h = &req->headers[req->header_count++];
    h->name = (struct http_slice){start, name_end - start};
    h->value = (struct http_slice){v, v_end - v};
    return header_meaning(p, buf, h, req);
}

/* Reads head lines until the blank line (HEAD_COMPLETE), more bytes are needed or error. */
static int parse_head(struct http_parser *p, const char *buf, size_t len, struct http_request *req)
{
    for (;;) {
        uint32_t start = p->line_start;
        bool request_line = p->state == S_REQUEST_LINE;
        size_t line_bound = (size_t)start + HTTP_LINE_MAX_BYTES;
        size_t bound = line_bound < HTTP_HEAD_MAX_BYTES ? line_bound : HTTP_HEAD_MAX_BYTES;
        long lf = find_lf(p, buf, len, bound);
        if (lf == LINE_MORE)
            return HTTP_PARSE_AGAIN;
        if (lf == LINE_LONG) {
            if (bound == line_bound)
                return request_line ? fail(p, req, 414, "request line too long")
                                    : fail(p, req, 431, "header line too long");
            return fail(p, req, 431, "request head too large");
        }
        if ((uint32_t)lf == start || buf[lf - 1] != '\r')
            return fail(p, req, 400, "bare LF");
        uint32_t cr = (uint32_t)lf - 1;
        p->line_start = p->scanned = (uint32_t)lf + 1;
        if (cr == start) {
            if (request_line)
                continue; /* an empty line before the request line (RFC 9112 §2.2) */
            req->head_bytes = (uint32_t)lf + 1;
            return HEAD_COMPLETE;
        }
        int rc = request_line ? parse_request_line(p, buf, start, cr, req)
                              : parse_header(p, buf, start, cr, req);
        if (rc != 0)
            return rc;
        p->state = S_HEADERS;
    }
}

/* Whole-head rules, then the body framing. AGAIN to go on, CONTINUE or an error. */
static int finish_head(struct http_parser *p, size_t len, struct http_request *req)
{
    uint32_t f = p->flags;
    if (req->has_content_length && (f & F_TE))
        return fail(p, req, 400, "Content-Length with Transfer-Encoding");
    if ((f & F_TE) && !(f & F_TE_CHUNKED))
        return fail(p, req, 501, "Transfer-Encoding not implemented");
    if ((f & F_TE) && req->version_minor == 0)
        return fail(p, req, 400, "chunked on HTTP/1.0");
    if (req->version_minor == 1 && !(f & F_HOST))
        return fail(p, req, 400, "missing Host");
    bool report_head = (f & F_REPORT_HEADS) && ((f & F_TE) || req->content_length > 0);
    if ((f & F_CL_TOO_BIG) && !report_head)
        return fail(p, req, 413, "body too large");

    req->chunked = (f & F_TE) != 0;
    req->keep_alive = req->version_minor == 1 ? !(f & F_CONN_CLOSE)
                                              : (f & F_CONN_KEEP_ALIVE) && !(f & F_CONN_CLOSE);
    req->expect_continue = (f & F_EXPECT_CONTINUE) && req->version_minor == 1;
    req->body = (struct http_slice){req->head_bytes, 0};
    p->raw_off = p->scanned = p->line_start = req->head_bytes;
    p->state = req->chunked ? S_CHUNK_SIZE : S_BODY_LENGTH;

    if (report_head) {
        p->flags |= F_HEAD_REPORTED;
        return HTTP_PARSE_HEAD;
    }
    bool body_pending = req->chunked || req->content_length > 0;
    if (req->expect_continue && body_pending && len == req->head_bytes)
        return HTTP_PARSE_CONTINUE;
    return HTTP_PARSE_AGAIN;
}

/* The call after HTTP_PARSE_HEAD, when the caller reads the body as usual: the body
 * limit and the 100 Continue that finish_head deferred. */
static int after_head(struct http_parser *p, size_t len, struct http_request *req)
{
    p->flags &= ~(uint32_t)F_HEAD_REPORTED;
    if (p->flags & F_CL_TOO_BIG)
        return fail(p, req, 413, "body too large");
    if (req->expect_continue && len == req->head_bytes)
        return HTTP_PARSE_CONTINUE;
    return HTTP_PARSE_AGAIN;
}

/* ---- The body ------------------------------------------------------------------------ */

static int done(struct http_parser *p, struct http_request *req, uint32_t wire_bytes)
{
    req->wire_bytes = wire_bytes;
    p->state = S_DONE;
    return HTTP_PARSE_DONE;
}

static int parse_fixed_body(struct http_parser *p, size_t len, struct http_request *req)
{
    uint32_t end = req->head_bytes + (uint32_t)req->content_length;
    if (len < end)
        return HTTP_PARSE_AGAIN;
    req->body.len = (uint32_t)req->content_length;
    return done(p, req, end);
}

/* chunk-ext (RFC 9112 §7.1.1) at [i, cr): *( BWS ";" BWS name [ BWS "=" BWS value ] ). */
static bool chunk_ext_ok(const unsigned char *s, uint32_t i, uint32_t cr)
{
    while (i < cr) {
        i = skip_ows(s, i, cr);
        if (i == cr || s[i] != ';')
            return false;
        i = skip_ows(s, i + 1, cr);
        uint32_t n = i;
        while (i < cr && (cls[s[i]] & C_TOKEN))
            i++;
        if (i == n)
            return false;
        uint32_t j = skip_ows(s, i, cr);
        if (j == cr || s[j] != '=')
            continue;
        i = skip_ows(s, j + 1, cr);
        if (i < cr && s[i] == '"') {
            for (i++; i < cr && s[i] != '"'; i++) {
                if (s[i] == '\\' && i + 1 < cr && (cls[s[i + 1]] & C_VALUE))
                    i++;
                else if (!(cls[s[i]] & C_QDTEXT))
                    return false;
            }
            if (i == cr)
                return false;
            i++;
        } else {
            uint32_t t = i;
            while (i < cr && (cls[s[i]] & C_TOKEN))
                i++;
            if (i == t)
                return false;
        }
    }
    return true;
}

/* A chunk-size line [start, cr): 1*HEXDIG [ chunk-ext ]. */
static int chunk_size_line(struct http_parser *p, const char *buf, uint32_t start, uint32_t cr,
                           struct http_request *req)
{
    const unsigned char *s = (const unsigned char *)buf;
    uint64_t size = 0;
    uint32_t i = start;
    for (; i < cr && (cls[s[i]] & C_HEX); i++) {
        if (i - start == CHUNK_SIZE_DIGITS_MAX)
            return fail(p, req, 400, "chunk size too long");
        unsigned c = s[i];
        size = size * 16 + (c <= '9' ? c - '0' : (c | 0x20) - 'a' + 10);
    }
    if (i == start)
        return fail(p, req, 400, "malformed chunk size");
    if (!chunk_ext_ok(s, i, cr))
        return fail(p, req, 400, "malformed chunk extension");
    if (size > HTTP_BODY_MAX_BYTES - p->body_len)
        return fail(p, req, 413, "body too large");
    p->chunk_left = size;
    p->state = size == 0 ? S_TRAILERS : S_CHUNK_DATA;
    return 0;
}

/*
 * Reads one line of chunked framing (a size line or a trailer line) within the framing
 * budget. Returns its LF index, LINE_MORE, or LINE_FAILED after fail().
 */
static long framing_line(struct http_parser *p, const char *buf, size_t len,
                         struct http_request *req)
{
    uint32_t used = p->raw_off - req->head_bytes - p->body_len;
    ASSERT(used <= CHUNK_FRAMING_MAX_BYTES && p->line_start == p->raw_off);
    long lf = find_lf(p, buf, len, (size_t)p->raw_off + CHUNK_FRAMING_MAX_BYTES - used);
    if (lf == LINE_MORE)
        return LINE_MORE;
    if (lf == LINE_LONG) {
        fail(p, req, 400, "chunked framing too long");
        return LINE_FAILED;
    }
    if ((uint32_t)lf == p->raw_off || buf[lf - 1] != '\r') {
        fail(p, req, 400, "bare LF in chunked framing");
        return LINE_FAILED;
    }
    return lf;
}

/* Moves what arrived of the current chunk down to the end of the decoded body. */
static void chunk_data(struct http_parser *p, char *buf, size_t len, struct http_request *req)
{
    size_t avail = len - p->raw_off;
    uint32_t n = (uint32_t)(avail < p->chunk_left ? avail : p->chunk_left);
    memmove(buf + req->head_bytes + p->body_len, buf + p->raw_off, n);
    p->body_len += n;
    p->raw_off += n;
    p->chunk_left -= n;
    if (p->chunk_left == 0)
        p->state = S_CHUNK_CRLF;
}

/* The CRLF after chunk data, checked byte by byte as it arrives. 0 once consumed. */
static int chunk_crlf(struct http_parser *p, const char *buf, size_t len, struct http_request *req)
{
    if (p->raw_off - req->head_bytes - p->body_len + 2 > CHUNK_FRAMING_MAX_BYTES)
        return fail(p, req, 400, "chunked framing too long");
    size_t avail = len - p->raw_off;
    if (avail >= 1 && buf[p->raw_off] != '\r')
        return fail(p, req, 400, "missing CRLF after chunk data");
    if (avail >= 2 && buf[p->raw_off + 1] != '\n')
        return fail(p, req, 400, "missing CRLF after chunk data");
    if (avail < 2)
        return CRLF_MORE;
    p->raw_off += 2;
    p->scanned = p->line_start = p->raw_off;
    p->state = S_CHUNK_SIZE;
    return 0;
}

/* A trailer line [start, cr), or the blank line that ends the request. */
static int trailer_line(struct http_parser *p, const char *buf, uint32_t start, uint32_t cr,
                        struct http_request *req)
{
    if (cr == start) {
        req->body.len = p->body_len;
        return done(p, req, cr + 2);
    }
    uint32_t name_end, v, v_end;
    const char *bad = field_syntax(buf, start, cr, &name_end, &v, &v_end);
    if (bad != NULL)
        return fail(p, req, 400, bad);
    return 0; /* trailer fields are checked, never merged into the head */
}

static int parse_chunked(struct http_parser *p, char *buf, size_t len, struct http_request *req)
{
    for (;;) {
        int rc;
        switch (p->state) {
        case S_CHUNK_SIZE:
        case S_TRAILERS: {
            long lf = framing_line(p, buf, len, req);
            if (lf == LINE_MORE)
                return HTTP_PARSE_AGAIN;
            if (lf == LINE_FAILED)
                return HTTP_PARSE_ERROR;
            uint32_t start = p->raw_off;
            p->raw_off = p->scanned = p->line_start = (uint32_t)lf + 1;
            rc = p->state == S_CHUNK_SIZE ? chunk_size_line(p, buf, start, (uint32_t)lf - 1, req)
                                          : trailer_line(p, buf, start, (uint32_t)lf - 1, req);
            if (rc != 0)
                return rc;
            break;
        }
        case S_CHUNK_DATA:
            if (len == p->raw_off)
                return HTTP_PARSE_AGAIN;
            chunk_data(p, buf, len, req);
            break;
        case S_CHUNK_CRLF:
            rc = chunk_crlf(p, buf, len, req);
            if (rc == CRLF_MORE)
                return HTTP_PARSE_AGAIN;
            if (rc != 0)
                return rc;
            break;
        default:
            UNREACHABLE();
        }
    }
}

/* ---- A chunked body read as a stream ---------------------------------------------- */

enum { CS_SIZE = 0, CS_DATA, CS_DATA_CR, CS_DATA_LF, CS_TRAILER, CS_DONE, CS_ERROR };

void http_chunks_init(struct http_chunks *c)
{
    memset(c, 0, sizeof(*c));
}

static int chunks_fail(struct http_chunks *c, const char **why, const char *reason)
{
    c->state = CS_ERROR;
    *why = reason;
    return HTTP_CHUNKS_ERROR;
}

/* A size line [start, cr): 1..15 hex digits, then chunk extensions. */
static int chunks_size(struct http_chunks *c, const char *buf, uint32_t start, uint32_t cr,
                       const char **why)
{
    const unsigned char *s = (const unsigned char *)buf;
    uint64_t size = 0;
    uint32_t i = start;
    for (; i < cr && (cls[s[i]] & C_HEX); i++) {
        if (i - start == CHUNK_SIZE_DIGITS_MAX)
            return chunks_fail(c, why, "chunk size too long");
        unsigned d = s[i];
        size = size * 16 + (d <= '9' ? d - '0' : (d | 0x20) - 'a' + 10);
    }
    if (i == start)
        return chunks_fail(c, why, "malformed chunk size");
    if (!chunk_ext_ok(s, i, cr))
        return chunks_fail(c, why, "malformed chunk extension");
    c->left = size;
    c->state = size == 0 ? CS_TRAILER : CS_DATA;
    return HTTP_CHUNKS_MORE;
}

/* One framing line at buf[i..): its LF index, LINE_MORE, or LINE_FAILED. */
static long chunks_line(struct http_chunks *c, const char *buf, size_t i, size_t len,
                        const char **why)
{
    const char *lf = memchr(buf + i, '\n', len - i);
    size_t end = lf ? (size_t)(lf - buf) : len;
    if (end - i + (lf != NULL) > HTTP_LINE_MAX_BYTES) {
        chunks_fail(c, why, "chunked framing line too long");
        return LINE_FAILED;
    }
    if (lf == NULL)
        return LINE_MORE;
    if (end == i || buf[end - 1] != '\r') {
        chunks_fail(c, why, "bare LF in chunked framing");
        return LINE_FAILED;
    }
    return (long)end;
}

int http_chunks_feed(struct http_chunks *c, const char *buf, size_t len, size_t *used,
                     http_chunk_fn fn, void *arg, const char **why)
{
    ASSERT(c->state != CS_DONE && c->state != CS_ERROR && len <= UINT32_MAX);
    size_t i = 0;
    while (i < len) {
        if (c->state == CS_DATA) {
            size_t n = len - i < c->left ? len - i : (size_t)c->left;
            fn(arg, buf + i, n);
            i += n;
            c->left -= n;
            if (c->left == 0)
                c->state = CS_DATA_CR;
            continue;
        }
        if (c->state == CS_DATA_CR || c->state == CS_DATA_LF) {
            if (buf[i] != (c->state == CS_DATA_CR ? '\r' : '\n'))
                return chunks_fail(c, why, "missing CRLF after chunk data");
            c->state = c->state == CS_DATA_CR ? CS_DATA_LF : CS_SIZE;
            i++;
            continue;
        }
        long lf = chunks_line(c, buf, i, len, why);
        if (lf == LINE_FAILED)
            return HTTP_CHUNKS_ERROR;
        if (lf == LINE_MORE)
            break; /* the line's start stays unconsumed until its end arrives */
        uint32_t start = (uint32_t)i, cr = (uint32_t)lf - 1;
        i = (size_t)lf + 1;
        if (c->state == CS_SIZE) {
            if (chunks_size(c, buf, start, cr, why) == HTTP_CHUNKS_ERROR)
                return HTTP_CHUNKS_ERROR;
            continue;
        }
        if (cr == start) { /* the empty line after the trailers */
            c->state = CS_DONE;
            *used = i;
            return HTTP_CHUNKS_DONE;
        }
        uint32_t name_end, v, v_end;
        const char *bad = field_syntax(buf, start, cr, &name_end, &v, &v_end);
        if (bad != NULL)
            return chunks_fail(c, why, bad);
    }
    *used = i;
    return HTTP_CHUNKS_MORE;
}

/* ---- Exported ------------------------------------------------------------------------ */

void http_parser_init(struct http_parser *p)
{
    memset(p, 0, sizeof(*p));
}

void http_parser_report_heads(struct http_parser *p)
{
    ASSERT(p->state == S_INIT);
    p->flags |= F_REPORT_HEADS;
}

int http_parse(struct http_parser *p, char *buf, size_t len, struct http_request *req)
{
    ASSERT(p != NULL && req != NULL && (buf != NULL || len == 0));
    ASSERT(len >= p->scanned && len >= p->raw_off);
    int rc;
    switch (p->state) {
    case S_INIT:
        req_reset(req);
        p->state = S_REQUEST_LINE;
        /* fall through */
    case S_REQUEST_LINE:
    case S_HEADERS:
        rc = parse_head(p, buf, len, req);
        if (rc != HEAD_COMPLETE)
            return rc;
        rc = finish_head(p, len, req);
        if (rc != HTTP_PARSE_AGAIN)
            return rc;
        break;
    case S_DONE:
        return HTTP_PARSE_DONE;
    case S_ERROR:
        return HTTP_PARSE_ERROR;
    default:
        break;
    }
    if (p->flags & F_HEAD_REPORTED) {
        rc = after_head(p, len, req);
        if (rc != HTTP_PARSE_AGAIN)
            return rc;
    }
    if (p->state == S_BODY_LENGTH)
        return parse_fixed_body(p, len, req);
    return parse_chunked(p, buf, len, req);
}

static bool header_is(const struct http_header *h, const char *buf, const char *name, size_t n)
{
    if (h->name.len != n)
        return false;
    const unsigned char *a = (const unsigned char *)buf + h->name.off;
    const unsigned char *b = (const unsigned char *)name;
    size_t k = 0;
    while (k < n && TOLOWER(a[k]) == TOLOWER(b[k]))
        k++;
    return k == n;
}

const struct http_header *http_header_find(const struct http_request *req, const char *buf,
                                           const char *name)
{
    size_t n = strlen(name);
    for (uint16_t i = 0; i < req->header_count; i++)
        if (header_is(&req->headers[i], buf, name, n))
            return &req->headers[i];
    return NULL;
}

unsigned http_header_count(const struct http_request *req, const char *buf, const char *name)
{
    size_t n = strlen(name);
    unsigned count = 0;
    for (uint16_t i = 0; i < req->header_count; i++)
        count += header_is(&req->headers[i], buf, name, n);
    return count;
}

const char *http_status_reason(int status)
{
    switch (status) {
    case 100:
        return "Continue";
    case 200:
        return "OK";
    case 201:
        return "Created";
    case 202:
        return "Accepted";
    case 204:
        return "No Content";
    case 304:
        return "Not Modified";
    case 400:
        return "Bad Request";
    case 401:
        return "Unauthorized";
    case 403:
        return "Forbidden";
    case 404:
        return "Not Found";
    case 405:
        return "Method Not Allowed";
    case 408:
        return "Request Timeout";
    case 409:
        return "Conflict";
    case 411:
        return "Length Required";
    case 413:
        return "Content Too Large";
    case 414:
        return "URI Too Long";
    case 415:
        return "Unsupported Media Type";
    case 417:
        return "Expectation Failed";
    case 422:
        return "Unprocessable Content";
    case 429:
        return "Too Many Requests";
    case 431:
        return "Request Header Fields Too Large";
    case 500:
        return "Internal Server Error";
    case 501:
        return "Not Implemented";
    case 502:
        return "Bad Gateway";
    case 503:
        return "Service Unavailable";
    case 504:
        return "Gateway Timeout";
    case 505:
        return "HTTP Version Not Supported";
    default:
        return "Unknown";
    }
}
