/*
 * Histogram, request writer and response parser of `ringpay load` (see loadstats.h).
 */
#include "tools/load/loadstats.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

#include "engine/assert.h"

/* ---- latency histogram ---- */

void loadstats_hist_init(struct loadstats_hist *h)
{
    memset(h, 0, sizeof(*h));
    h->min_us = UINT64_MAX;
}

size_t loadstats_hist_bucket(uint64_t value_us)
{
    if (value_us > LOADSTATS_HIST_MAX_US)
        value_us = LOADSTATS_HIST_MAX_US;
    if (value_us < LOADSTATS_HIST_LINEAR_US)
        return (size_t)value_us;
    unsigned e = 63u - (unsigned)__builtin_clzll(value_us); /* 10 .. TOP_EXP - 1 */
    uint64_t sub = (value_us >> (e - LOADSTATS_HIST_SUB_BITS)) - LOADSTATS_HIST_SUB;
    ASSERT(e >= 10 && e < LOADSTATS_HIST_TOP_EXP && sub < LOADSTATS_HIST_SUB);
    size_t b = LOADSTATS_HIST_LINEAR_US + (e - 10) * LOADSTATS_HIST_SUB + (size_t)sub;
    ASSERT(b < LOADSTATS_HIST_BUCKETS);
    return b;
}

uint64_t loadstats_hist_bucket_high(size_t bucket)
{
    ASSERT(bucket < LOADSTATS_HIST_BUCKETS);
    if (bucket < LOADSTATS_HIST_LINEAR_US)
        return bucket;
    size_t k = bucket - LOADSTATS_HIST_LINEAR_US;
    unsigned shift = (unsigned)(10 + k / LOADSTATS_HIST_SUB) - LOADSTATS_HIST_SUB_BITS;
    uint64_t low = (uint64_t)(LOADSTATS_HIST_SUB + k % LOADSTATS_HIST_SUB) << shift;
    return low + (1ull << shift) - 1;
}

void loadstats_hist_record(struct loadstats_hist *h, uint64_t value_us)
{
    h->buckets[loadstats_hist_bucket(value_us)]++;
    h->count++;
    h->sum_us += value_us;
    if (value_us < h->min_us)
        h->min_us = value_us;
    if (value_us > h->max_us)
        h->max_us = value_us;
}

void loadstats_hist_merge(struct loadstats_hist *dst, const struct loadstats_hist *src)
{
    for (size_t i = 0; i < LOADSTATS_HIST_BUCKETS; i++)
        dst->buckets[i] += src->buckets[i];
    dst->count += src->count;
    dst->sum_us += src->sum_us;
    if (src->min_us < dst->min_us)
        dst->min_us = src->min_us;
    if (src->max_us > dst->max_us)
        dst->max_us = src->max_us;
}

uint64_t loadstats_hist_percentile(const struct loadstats_hist *h, double q)
{
    ASSERT(q > 0.0 && q <= 1.0);
    if (h->count == 0)
        return 0;
    double want = q * (double)h->count;
    uint64_t rank = (uint64_t)want;
    if ((double)rank < want)
        rank++; /* ceil without libm */
    if (rank == 0)
        rank = 1;
    uint64_t seen = 0;
    for (size_t i = 0; i < LOADSTATS_HIST_BUCKETS; i++) {
        seen += h->buckets[i];
        if (seen >= rank) {
            uint64_t v = loadstats_hist_bucket_high(i);
            return v < h->max_us ? v : h->max_us;
        }
    }
    UNREACHABLE(); /* count equals the sum of the buckets */
    return h->max_us;
}

/* ---- requests ---- */

int loadstats_req_format(char *out, size_t cap, const struct loadstats_req *req,
                         loadstats_signer_fn signer, void *signer_ctx)
{
    ASSERT(req->method && req->target && req->host);
    ASSERT(req->body != NULL || req->body_len == 0);
    int n =
        snprintf(out, cap, "%s %s HTTP/1.1\r\nHost: %s\r\n", req->method, req->target, req->host);
    if (n < 0 || (size_t)n >= cap)
        return -1;
    size_t off = (size_t)n;
    if (signer) {
        int s = signer(signer_ctx, req, out + off, cap - off);
        if (s < 0 || (size_t)s >= cap - off)
            return -1;
        off += (size_t)s;
    }
    if (req->idempotency_key) {
        n = snprintf(out + off, cap - off, "Idempotency-Key: %s\r\n", req->idempotency_key);
        if (n < 0 || (size_t)n >= cap - off)
            return -1;
        off += (size_t)n;
    }
    if (req->body)
        n = snprintf(out + off, cap - off,
                     "Content-Type: application/json\r\nContent-Length: %zu\r\n\r\n",
                     req->body_len);
    else
        n = snprintf(out + off, cap - off, "\r\n");
    if (n < 0 || (size_t)n >= cap - off || req->body_len > cap - off - (size_t)n)
        return -1;
    off += (size_t)n;
    if (req->body_len)
        memcpy(out + off, req->body, req->body_len);
    off += req->body_len;
    return (int)off;
}

/* ---- responses ---- */

static const char *find_crlfcrlf(const char *buf, size_t len)
{
    for (size_t i = 0; i + 3 < len; i++)
        if (buf[i] == '\r' && buf[i + 1] == '\n' && buf[i + 2] == '\r' && buf[i + 3] == '\n')
            return buf + i;
    return NULL;
}

/* "HTTP/1.x NNN[ reason]": fills status and whether the version is 1.0. */
static int parse_status_line(const char *p, size_t len, unsigned *status, bool *v10)
{
    if (len < 12 || memcmp(p, "HTTP/1.", 7) != 0 || (p[7] != '0' && p[7] != '1') || p[8] != ' ')
        return -EPROTO;
    for (int i = 9; i < 12; i++)
        if (p[i] < '0' || p[i] > '9')
            return -EPROTO;
    if (len > 12 && p[12] != ' ')
        return -EPROTO;
    *status = (unsigned)((p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0'));
    *v10 = p[7] == '0';
    return *status >= 100 && *status <= 599 ? 0 : -EPROTO;
}

static bool name_is(const char *p, size_t len, const char *name)
{
    return strlen(name) == len && strncasecmp(p, name, len) == 0;
}

/* Whether the comma-separated token list v contains token (case-insensitive). */
static bool has_token(const char *v, size_t len, const char *token)
{
    size_t tl = strlen(token);
    size_t i = 0;
    while (i < len) {
        while (i < len && (v[i] == ' ' || v[i] == '\t' || v[i] == ','))
            i++;
        size_t start = i;
        while (i < len && v[i] != ',' && v[i] != ' ' && v[i] != '\t')
            i++;
        if (i - start == tl && strncasecmp(v + start, token, tl) == 0)
            return true;
    }
    return false;
}

static int parse_length(const char *v, size_t len, uint64_t *out)
{
    if (len == 0 || len > 9)
        return -EPROTO; /* 9 digits already exceed LOADSTATS_RESP_BODY_MAX */
    uint64_t n = 0;
    for (size_t i = 0; i < len; i++) {
        if (v[i] < '0' || v[i] > '9')
            return -EPROTO;
        n = n * 10 + (uint64_t)(v[i] - '0');
    }
    *out = n;
    return 0;
}

struct head_fields {
    bool has_length, close, keep_alive, replayed;
    uint64_t length;
};

/* One "Name: value" line (without CRLF) into f. */
static int parse_field(const char *line, size_t len, struct head_fields *f)
{
    const char *colon = memchr(line, ':', len);
    if (colon == NULL || colon == line)
        return -EPROTO;
    size_t nl = (size_t)(colon - line);
    const char *v = colon + 1;
    size_t vl = len - nl - 1;
    while (vl && (*v == ' ' || *v == '\t'))
        v++, vl--;
    while (vl && (v[vl - 1] == ' ' || v[vl - 1] == '\t'))
        vl--;
    if (name_is(line, nl, "content-length")) {
        uint64_t n;
        if (parse_length(v, vl, &n) != 0 || (f->has_length && n != f->length))
            return -EPROTO;
        f->has_length = true;
        f->length = n;
    } else if (name_is(line, nl, "transfer-encoding")) {
        return -EPROTO; /* see the header comment: never sent by ringpay */
    } else if (name_is(line, nl, "idempotent-replayed")) {
        f->replayed = vl == 4 && strncasecmp(v, "true", 4) == 0;
    } else if (name_is(line, nl, "connection")) {
        f->close |= has_token(v, vl, "close");
        f->keep_alive |= has_token(v, vl, "keep-alive");
    }
    return 0;
}

int loadstats_resp_parse(const char *buf, size_t len, struct loadstats_resp *out)
{
    /* Refuse garbage as soon as its first bytes are in, not after 64 KiB. */
    size_t check = len < 5 ? len : 5;
    if (memcmp(buf, "HTTP/", check) != 0)
        return -EPROTO;
    const char *end = find_crlfcrlf(buf, len);
    if (end == NULL)
        return len > LOADSTATS_RESP_HEAD_MAX ? -EPROTO : 0;
    size_t head_len = (size_t)(end - buf) + 4;
    if (head_len > LOADSTATS_RESP_HEAD_MAX)
        return -EPROTO;

    const char *line = buf;
    const char *eol = memchr(line, '\r', (size_t)(end + 2 - line));
    ASSERT(eol != NULL);
    unsigned status;
    bool v10;
    if (parse_status_line(line, (size_t)(eol - line), &status, &v10) != 0 || eol[1] != '\n')
        return -EPROTO;
    struct head_fields f = {0};
    for (line = eol + 2; line < end + 2; line = eol + 2) {
        eol = memchr(line, '\r', (size_t)(end + 2 - line));
        ASSERT(eol != NULL);
        if (eol[1] != '\n' || parse_field(line, (size_t)(eol - line), &f) != 0)
            return -EPROTO;
    }
    bool no_body = status < 200 || status == 204 || status == 304;
    if (!no_body && !f.has_length)
        return -EPROTO;
    uint64_t body = no_body ? 0 : f.length;
    if (body > LOADSTATS_RESP_BODY_MAX)
        return -EPROTO;
    if (len - head_len < body)
        return 0;
    *out = (struct loadstats_resp){
        .status = status,
        .head_len = head_len,
        .body_off = head_len,
        .body_len = (size_t)body,
        .total_len = head_len + (size_t)body,
        .close = f.close || (v10 && !f.keep_alive),
        .replayed = f.replayed,
    };
    return 1;
}

int loadstats_json_string(const char *body, size_t len, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    ASSERT(cap > 0 && nl > 0);
    for (size_t i = 0; i + nl + 2 <= len; i++) {
        if (body[i] != '"' || memcmp(body + i + 1, name, nl) != 0 || body[i + 1 + nl] != '"')
            continue;
        size_t p = i + nl + 2;
        while (p < len && (body[p] == ' ' || body[p] == '\t' || body[p] == '\n'))
            p++;
        if (p >= len || body[p] != ':')
            continue; /* the name was a string value, not a member name */
        p++;
        while (p < len && (body[p] == ' ' || body[p] == '\t' || body[p] == '\n'))
            p++;
        if (p >= len || body[p] != '"')
            return -1;
        size_t start = ++p;
        while (p < len && body[p] != '"' && body[p] != '\\')
            p++;
        if (p >= len || body[p] != '"' || p - start >= cap)
            return -1;
        memcpy(out, body + start, p - start);
        out[p - start] = '\0';
        return (int)(p - start);
    }
    return -1;
}
