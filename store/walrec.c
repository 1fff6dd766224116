/*
 * Write-ahead log records (see walrec.h).
 */
#include "store/walrec.h"

#include <errno.h>
#include <string.h>

#include "engine/assert.h"
#include "engine/limits.h"
#include "store/crc32c.h"

_Static_assert(WALREC_OP_MAX_BYTES + WALREC_HEADER_BYTES <= WALREC_MAX_BYTES,
               "the largest operation fits a record");

static void put16(uint8_t *p, uint16_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static uint16_t get16(const uint8_t *p)
{
    return (uint16_t)(p[0] | p[1] << 8);
}

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static bool writes(enum op_kind k)
{
    return k == OP_AUTHORIZE || k == OP_CAPTURE || k == OP_VOID || k == OP_REFUND;
}

size_t walrec_op_size(const struct op *op)
{
    return 16 + 1 + op->merchant_id_len + ID_BYTES + CURRENCY_BYTES + 2 + op->reference_len + 2 +
           op->idem_key_len + 1 + op->request_id_len + 16 + op->fp_method.len + op->fp_path.len +
           op->fp_query.len + op->fp_body.len;
}

void walrec_begin(struct walrec_writer *w, uint8_t *buf, size_t cap)
{
    ASSERT(cap >= WALREC_HEADER_BYTES);
    w->buf = buf;
    w->cap = cap < WALREC_MAX_BYTES ? cap : WALREC_MAX_BYTES;
    w->len = WALREC_HEADER_BYTES;
    w->n = 0;
}

static uint8_t *put_bytes(uint8_t *p, const void *src, size_t n)
{
    if (n)
        memcpy(p, src, n);
    return p + n;
}

static uint8_t *put_span(uint8_t *p, struct engine_span s)
{
    put32(p, (uint32_t)s.len);
    return put_bytes(p + 4, s.ptr, s.len);
}

int walrec_add(struct walrec_writer *w, const struct op *op)
{
    ASSERT(writes(op->kind));
    size_t need = walrec_op_size(op);
    ASSERT(need <= WALREC_OP_MAX_BYTES);
    if (w->len + need > w->cap)
        return -ENOSPC;
    uint8_t *p = w->buf + w->len;
    p[0] = (uint8_t)op->kind;
    p[1] = (uint8_t)((op->authenticated ? 1 : 0) | (op->has_reference ? 2 : 0));
    put16(p + 2, 0);
    put32(p + 4, op->shard);
    put64(p + 8, (uint64_t)op->amount);
    p += 16;
    *p++ = op->merchant_id_len;
    p = put_bytes(p, op->merchant_id, op->merchant_id_len);
    p = put_bytes(p, op->payment_id, ID_BYTES);
    p = put_bytes(p, op->currency, CURRENCY_BYTES);
    put16(p, op->reference_len);
    p = put_bytes(p + 2, op->reference, op->reference_len);
    put16(p, op->idem_key_len);
    p = put_bytes(p + 2, op->idem_key, op->idem_key_len);
    *p++ = op->request_id_len;
    p = put_bytes(p, op->request_id, op->request_id_len);
    p = put_span(p, op->fp_method);
    p = put_span(p, op->fp_path);
    p = put_span(p, op->fp_query);
    p = put_span(p, op->fp_body);
    ASSERT((size_t)(p - (w->buf + w->len)) == need);
    w->len += need;
    w->n++;
    return 0;
}

static void put_header(uint8_t *h, size_t len, enum walrec_type type, uint64_t pos, int64_t now_ms,
                       uint64_t mark, uint32_t n, uint32_t epoch)
{
    put32(h, WALREC_MAGIC);
    put32(h + 4, (uint32_t)len);
    put16(h + 12, WALREC_VERSION);
    put16(h + 14, (uint16_t)type);
    put64(h + 16, pos);
    put64(h + 24, (uint64_t)now_ms);
    put64(h + 32, mark);
    put32(h + 40, n);
    put32(h + 44, epoch);
}

size_t walrec_finish(struct walrec_writer *w, uint64_t pos, int64_t now_ms, uint64_t mark,
                     uint32_t epoch)
{
    put_header(w->buf, w->len, WALREC_OPS, pos, now_ms, mark, w->n, epoch);
    put32(w->buf + 8, crc32c(0, w->buf + 12, w->len - 12));
    return w->len;
}

void walrec_skip(uint8_t *buf, size_t length, uint64_t pos, uint32_t epoch)
{
    ASSERT(length >= WALREC_HEADER_BYTES && length <= UINT32_MAX);
    memset(buf, 0, WALREC_HEADER_BYTES);
    put_header(buf, length, WALREC_SKIP, pos, 0, 0, 0, epoch);
    /* Only the header is checked: the rest of a skip record is never read. */
    put32(buf + 8, crc32c(0, buf + 12, WALREC_HEADER_BYTES - 12));
}

int walrec_check(const uint8_t *buf, size_t avail, uint64_t pos, struct walrec_header *h)
{
    if (avail < WALREC_HEADER_BYTES)
        return avail >= 4 && get32(buf) != WALREC_MAGIC ? -EBADMSG : -EAGAIN;
    uint32_t length = get32(buf + 4);
    uint16_t type = get16(buf + 14);
    bool skip = type == WALREC_SKIP;
    if (get32(buf) != WALREC_MAGIC || length < WALREC_HEADER_BYTES ||
        get16(buf + 12) != WALREC_VERSION || (type != WALREC_OPS && !skip) ||
        (!skip && length > WALREC_MAX_BYTES) || get64(buf + 16) != pos)
        return -EBADMSG;
    size_t covered = skip ? WALREC_HEADER_BYTES : length;
    if (avail < covered)
        return -EAGAIN;
    if (crc32c(0, buf + 12, covered - 12) != get32(buf + 8))
        return -EBADMSG;
    int64_t now = (int64_t)get64(buf + 24);
    if (now < 0 || now > TIME_MS_MAX || (skip && get32(buf + 40) != 0))
        return -EBADMSG;
    *h = (struct walrec_header){
        .length = length,
        .type = skip ? WALREC_SKIP : WALREC_OPS,
        .pos = pos,
        .now_ms = now,
        .mark = get64(buf + 32),
        .n = get32(buf + 40),
        .epoch = get32(buf + 44),
    };
    return 0;
}

/* A bounds-checked reader over one record's operations. */
struct cursor {
    const uint8_t *p, *end;
    bool bad;
};

static const uint8_t *take(struct cursor *c, size_t n)
{
    if (c->bad || (size_t)(c->end - c->p) < n) {
        c->bad = true;
        return NULL;
    }
    const uint8_t *at = c->p;
    c->p += n;
    return at;
}

/* Copies a length-prefixed field into dst (cap includes the NUL). */
static size_t take_str(struct cursor *c, size_t len, char *dst, size_t cap)
{
    const uint8_t *s = take(c, len);
    if (s == NULL || len >= cap) {
        c->bad = true;
        return 0;
    }
    memcpy(dst, s, len);
    dst[len] = '\0';
    return len;
}

static struct engine_span take_span(struct cursor *c, uint32_t max)
{
    const uint8_t *l = take(c, 4);
    uint32_t len = l ? get32(l) : 0;
    if (len > max)
        c->bad = true;
    const uint8_t *s = take(c, len);
    return (struct engine_span){.ptr = (const char *)s, .len = s ? len : 0};
}

static int decode_op(struct cursor *c, struct op *op)
{
    memset(op, 0, sizeof(*op));
    const uint8_t *f = take(c, 16);
    if (f == NULL)
        return -EBADMSG;
    op->kind = (enum op_kind)f[0];
    op->authenticated = f[1] & 1;
    op->has_reference = (f[1] & 2) != 0;
    op->shard = get32(f + 4);
    op->amount = (int64_t)get64(f + 8);
    const uint8_t *ml = take(c, 1);
    op->merchant_id_len =
        (uint8_t)take_str(c, ml ? *ml : 0, op->merchant_id, sizeof(op->merchant_id));
    take_str(c, ID_BYTES, op->payment_id, sizeof(op->payment_id));
    take_str(c, CURRENCY_BYTES, op->currency, sizeof(op->currency));
    const uint8_t *rl = take(c, 2);
    op->reference_len =
        (uint16_t)take_str(c, rl ? get16(rl) : 0, op->reference, sizeof(op->reference));
    const uint8_t *kl = take(c, 2);
    op->idem_key_len =
        (uint16_t)take_str(c, kl ? get16(kl) : 0, op->idem_key, sizeof(op->idem_key));
    const uint8_t *il = take(c, 1);
    op->request_id_len = (uint8_t)take_str(c, il ? *il : 0, op->request_id, sizeof(op->request_id));
    op->fp_method = take_span(c, 16);
    op->fp_path = take_span(c, HTTP_LINE_MAX_BYTES);
    op->fp_query = take_span(c, HTTP_LINE_MAX_BYTES);
    op->fp_body = take_span(c, HTTP_BODY_MAX_BYTES);
    if (c->bad || !writes(op->kind) || f[2] != 0 || f[3] != 0 || op->idem_key_len == 0 ||
        op->shard >= SHARDS_MAX || (f[1] & ~3u) != 0)
        return -EBADMSG;
    /* A span of length 0 still points at something, as the codec's are. */
    if (op->fp_query.ptr == NULL)
        op->fp_query.ptr = "";
    if (op->fp_body.ptr == NULL)
        op->fp_body.ptr = "";
    return 0;
}

/* Decodes every operation, calling fn for each when fn is given. */
static int each_op(const uint8_t *buf, const struct walrec_header *h,
                   int (*fn)(void *arg, const struct op *op), void *arg)
{
    struct cursor c = {.p = buf + WALREC_HEADER_BYTES, .end = buf + h->length};
    for (uint32_t i = 0; i < h->n; i++) {
        struct op op;
        if (decode_op(&c, &op) != 0)
            return -EBADMSG;
        int rc = fn ? fn(arg, &op) : 0;
        if (rc)
            return rc;
    }
    return c.p == c.end ? 0 : -EBADMSG;
}

int walrec_ops(const uint8_t *buf, const struct walrec_header *h,
               int (*fn)(void *arg, const struct op *op), void *arg)
{
    /* The whole record decodes before the first operation is handed out, so a record
     * is redone entirely or not at all. */
    int rc = each_op(buf, h, NULL, NULL);
    return rc ? rc : each_op(buf, h, fn, arg);
}
