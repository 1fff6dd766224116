/*
 * Key builders and value codecs of the shard store (layouts in record.h).
 *
 * Builders assert their arguments (a caller passing an invalid merchant id is a
 * programmer error: ids are validated by the engine's codec long before). Decoders
 * treat their input as untrusted bytes from disk and return -EBADMSG on anything
 * unexpected.
 */
#include "store/record.h"

#include <errno.h>

#include "engine/apply.h"
#include "engine/assert.h"
#include "engine/ids.h"
#include "engine/limits.h"
#include "engine/payment.h"

int record_merchant_valid(const char *m, size_t len)
{
    if (m == NULL || len == 0 || len > RECORD_MERCHANT_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = m[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '-';
        if (!ok)
            return 0;
    }
    return 1;
}

size_t record_key_merchant(uint8_t *key, const char *m, size_t mlen)
{
    ASSERT(record_merchant_valid(m, mlen));
    key[0] = (uint8_t)mlen;
    memcpy(key + 1, m, mlen);
    return 1 + mlen;
}

size_t record_key_ledger(uint8_t *key, const char *m, size_t mlen, uint64_t seq)
{
    size_t n = record_key_merchant(key, m, mlen);
    record_put_u64be(key + n, seq);
    return n + 8;
}

size_t record_key_balance(uint8_t *key, const char *m, size_t mlen, const char currency[3])
{
    ASSERT(record_currency_valid(currency));
    size_t n = record_key_merchant(key, m, mlen);
    memcpy(key + n, currency, 3);
    return n + 3;
}

size_t record_key_idem(uint8_t *key, const char *m, size_t mlen, const char *idem, size_t idem_len)
{
    ASSERT(idem != NULL && idem_len >= 1 && idem_len <= RECORD_IDEM_KEY_MAX);
    size_t n = record_key_merchant(key, m, mlen);
    memcpy(key + n, idem, idem_len);
    ASSERT(n + idem_len <= RECORD_KEY_MAX);
    return n + idem_len;
}

size_t record_key_idem_exp(uint8_t *key, int64_t created_at_ms, const uint8_t *idem_key,
                           size_t idem_key_len)
{
    ASSERT(created_at_ms >= 0 && idem_key_len <= RECORD_KEY_MAX);
    record_put_u64be(key, (uint64_t)created_at_ms);
    memcpy(key + 8, idem_key, idem_key_len);
    return 8 + idem_key_len;
}

size_t record_key_split(const uint8_t *key, size_t len, const char **m, size_t *mlen)
{
    if (len < 1 || key[0] == 0 || (size_t)key[0] + 1 > len)
        return 0;
    if (!record_merchant_valid((const char *)key + 1, key[0]))
        return 0;
    *m = (const char *)key + 1;
    *mlen = key[0];
    return 1 + (size_t)key[0];
}

void record_i64_encode(uint8_t out[RECORD_I64_BYTES], int64_t v)
{
    memset(out, 0, RECORD_I64_BYTES);
    out[0] = RECORD_VERSION;
    record_put_u64le(out + 8, (uint64_t)v);
}

int record_i64_decode(const void *data, size_t len, int64_t *v)
{
    const uint8_t *p = data;
    if (len != RECORD_I64_BYTES || p[0] != RECORD_VERSION)
        return -EBADMSG;
    for (int i = 1; i < 8; i++)
        if (p[i] != 0)
            return -EBADMSG;
    *v = (int64_t)record_get_u64le(p + 8);
    return 0;
}

int record_currency_valid(const char c[3])
{
    for (int i = 0; i < 3; i++)
        if (c[i] < 'A' || c[i] > 'Z')
            return 0;
    return 1;
}

static int ledger_valid(const struct record_ledger_entry *e)
{
    return RECORD_ACCOUNT_VALID(e->debit) && RECORD_ACCOUNT_VALID(e->credit) &&
           e->debit != e->credit && record_currency_valid(e->currency) && e->amount >= 1 &&
           e->amount <= RECORD_AMOUNT_MAX && e->payment_id_len >= 1 &&
           e->payment_id_len <= RECORD_ID_MAX;
}

size_t record_ledger_encode(uint8_t out[RECORD_LEDGER_MAX_BYTES],
                            const struct record_ledger_entry *e)
{
    ASSERT(ledger_valid(e));
    out[0] = RECORD_VERSION;
    out[1] = e->debit;
    out[2] = e->credit;
    memcpy(out + 3, e->currency, 3);
    out[6] = e->payment_id_len;
    out[7] = 0;
    record_put_u64le(out + 8, (uint64_t)e->amount);
    record_put_u64le(out + 16, (uint64_t)e->created_at_ms);
    memcpy(out + RECORD_LEDGER_FIXED_BYTES, e->payment_id, e->payment_id_len);
    return RECORD_LEDGER_FIXED_BYTES + e->payment_id_len;
}

int record_ledger_decode(const void *data, size_t len, struct record_ledger_entry *e)
{
    const uint8_t *p = data;
    if (len < RECORD_LEDGER_FIXED_BYTES || len > RECORD_LEDGER_MAX_BYTES)
        return -EBADMSG;
    if (p[0] != RECORD_VERSION || p[7] != 0 || (size_t)RECORD_LEDGER_FIXED_BYTES + p[6] != len)
        return -EBADMSG;
    memset(e, 0, sizeof(*e));
    e->debit = p[1];
    e->credit = p[2];
    memcpy(e->currency, p + 3, 3);
    e->payment_id_len = p[6];
    e->amount = (int64_t)record_get_u64le(p + 8);
    e->created_at_ms = (int64_t)record_get_u64le(p + 16);
    memcpy(e->payment_id, p + RECORD_LEDGER_FIXED_BYTES, e->payment_id_len);
    return ledger_valid(e) ? 0 : -EBADMSG;
}

size_t record_event_size(const struct record_event *ev)
{
    return 8 + ev->merchant_len + ev->topic_len + ev->json_len;
}

static int topic_valid(const char *t, size_t len)
{
    if (len == 0 || len > RECORD_TOPIC_MAX)
        return 0;
    for (size_t i = 0; i < len; i++)
        if (!((t[i] >= 'a' && t[i] <= 'z') || t[i] == '.' || t[i] == '_'))
            return 0;
    return 1;
}

size_t record_event_encode(uint8_t *out, const struct record_event *ev)
{
    ASSERT(record_merchant_valid(ev->merchant, ev->merchant_len));
    ASSERT(topic_valid(ev->topic, ev->topic_len));
    ASSERT(ev->json != NULL && ev->json_len >= 1 && ev->json_len <= RECORD_EVENT_MAX_BYTES);
    out[0] = RECORD_VERSION;
    out[1] = (uint8_t)ev->merchant_len;
    out[2] = (uint8_t)ev->topic_len;
    out[3] = 0;
    record_put_u32le(out + 4, (uint32_t)ev->json_len);
    uint8_t *p = out + 8;
    memcpy(p, ev->merchant, ev->merchant_len);
    p += ev->merchant_len;
    memcpy(p, ev->topic, ev->topic_len);
    p += ev->topic_len;
    memcpy(p, ev->json, ev->json_len);
    return record_event_size(ev);
}

int record_event_decode(const void *data, size_t len, struct record_event *ev)
{
    const uint8_t *p = data;
    if (len < 8 || p[0] != RECORD_VERSION || p[3] != 0)
        return -EBADMSG;
    ev->merchant_len = p[1];
    ev->topic_len = p[2];
    ev->json_len = record_get_u32le(p + 4);
    if (ev->json_len == 0 || ev->json_len > RECORD_EVENT_MAX_BYTES || record_event_size(ev) != len)
        return -EBADMSG;
    ev->merchant = (const char *)p + 8;
    ev->topic = ev->merchant + ev->merchant_len;
    ev->json = ev->topic + ev->topic_len;
    if (!record_merchant_valid(ev->merchant, ev->merchant_len) ||
        !topic_valid(ev->topic, ev->topic_len))
        return -EBADMSG;
    return 0;
}

void record_balance_encode(uint8_t out[RECORD_BALANCE_BYTES], const struct record_balance *b)
{
    ASSERT((uint64_t)b->clearing + (uint64_t)b->pending + (uint64_t)b->available == 0);
    memset(out, 0, 8);
    out[0] = RECORD_VERSION;
    record_put_u64le(out + 8, (uint64_t)b->clearing);
    record_put_u64le(out + 16, (uint64_t)b->pending);
    record_put_u64le(out + 24, (uint64_t)b->available);
}

/* Decodes without judging the values: check.c must see a corrupt balance to report it. */
int record_balance_decode(const void *data, size_t len, struct record_balance *b)
{
    const uint8_t *p = data;
    if (len != RECORD_BALANCE_BYTES || p[0] != RECORD_VERSION)
        return -EBADMSG;
    for (int i = 1; i < 8; i++)
        if (p[i] != 0)
            return -EBADMSG;
    b->clearing = (int64_t)record_get_u64le(p + 8);
    b->pending = (int64_t)record_get_u64le(p + 16);
    b->available = (int64_t)record_get_u64le(p + 24);
    return 0;
}

/* ---- payments, refunds, idempotency records ---------------------------------------- */

_Static_assert(RECORD_PAYMENT_ID_BYTES == ID_BYTES, "ids are fixed width");
_Static_assert(RECORD_MERCHANT_MAX == MERCHANT_ID_MAX_BYTES, "same merchant bound");
_Static_assert(RECORD_REFERENCE_MAX == REFERENCE_MAX_BYTES, "same reference bound");
_Static_assert(RECORD_ID_MAX >= ID_BYTES, "ledger entries hold a payment id");
_Static_assert(RECORD_AMOUNT_MAX == AMOUNT_MAX, "same amount bound");
_Static_assert(RECORD_EVENT_MAX_BYTES == ENGINE_EVENT_MAX_BYTES, "same event bound");
_Static_assert(RECORD_IDEM_KEY_MAX == IDEMPOTENCY_KEY_MAX_BYTES, "same key bound");
_Static_assert((int)RECORD_ACCOUNT_CLEARING == (int)LEDGER_CLEARING &&
                   (int)RECORD_ACCOUNT_PENDING == (int)LEDGER_PENDING &&
                   (int)RECORD_ACCOUNT_AVAILABLE == (int)LEDGER_AVAILABLE,
               "ledger entries store the engine's account values");

static int amount_ok(int64_t a)
{
    return a >= 1 && a <= AMOUNT_MAX;
}

/* The invariants of engine/payment.h, as a predicate (payment_check asserts them). */
static int payment_state_ok(const struct payment *p)
{
    int64_t a = p->amount, c = p->captured_amount, r = p->refunded_amount;
    if (!amount_ok(a) || r < 0 || c < r || c > a)
        return 0;
    switch (p->status) {
    case PAYMENT_AUTHORIZED:
    case PAYMENT_VOIDED:
        return c == 0 && r == 0;
    case PAYMENT_CAPTURED:
        return c >= 1 && r == 0;
    case PAYMENT_PARTIALLY_REFUNDED:
        return r > 0 && r < c;
    case PAYMENT_REFUNDED:
        return c >= 1 && r == c;
    }
    return 0;
}

size_t record_payment_encode(uint8_t *out, const struct payment *p)
{
    ASSERT(payment_state_ok(p));
    ASSERT(record_merchant_valid(p->merchant_id, p->merchant_id_len));
    ASSERT(record_currency_valid(p->currency) && strlen(p->id) == ID_BYTES);
    ASSERT(p->reference_len <= REFERENCE_MAX_BYTES && (p->has_reference || !p->reference_len));
    memset(out, 0, RECORD_PAYMENT_FIXED_BYTES);
    out[0] = RECORD_VERSION;
    out[1] = (uint8_t)p->status;
    out[2] = p->merchant_id_len;
    out[3] = p->has_reference ? 1 : 0;
    out[4] = (uint8_t)p->reference_len;
    out[5] = (uint8_t)(p->reference_len >> 8);
    memcpy(out + 6, p->currency, 3);
    memcpy(out + 10, p->id, ID_BYTES);
    record_put_u64le(out + 32, (uint64_t)p->amount);
    record_put_u64le(out + 40, (uint64_t)p->captured_amount);
    record_put_u64le(out + 48, (uint64_t)p->refunded_amount);
    record_put_u64le(out + 56, (uint64_t)p->created_at_ms);
    record_put_u64le(out + 64, (uint64_t)p->updated_at_ms);
    memcpy(out + RECORD_PAYMENT_FIXED_BYTES, p->merchant_id, p->merchant_id_len);
    memcpy(out + RECORD_PAYMENT_FIXED_BYTES + p->merchant_id_len, p->reference, p->reference_len);
    return RECORD_PAYMENT_FIXED_BYTES + p->merchant_id_len + p->reference_len;
}

int record_payment_decode(const void *data, size_t len, struct payment *p)
{
    const uint8_t *b = data;
    if (len < RECORD_PAYMENT_FIXED_BYTES || b[0] != RECORD_VERSION || b[9] != 0 || b[3] > 1)
        return -EBADMSG;
    memset(p, 0, sizeof(*p));
    p->status = (enum payment_status)b[1];
    p->merchant_id_len = b[2];
    p->has_reference = b[3];
    p->reference_len = (uint16_t)(b[4] | b[5] << 8);
    if (p->merchant_id_len > MERCHANT_ID_MAX_BYTES || p->reference_len > REFERENCE_MAX_BYTES ||
        (!p->has_reference && p->reference_len) ||
        len != (size_t)RECORD_PAYMENT_FIXED_BYTES + p->merchant_id_len + p->reference_len)
        return -EBADMSG;
    memcpy(p->currency, b + 6, 3);
    memcpy(p->id, b + 10, ID_BYTES);
    p->amount = (int64_t)record_get_u64le(b + 32);
    p->captured_amount = (int64_t)record_get_u64le(b + 40);
    p->refunded_amount = (int64_t)record_get_u64le(b + 48);
    p->created_at_ms = (int64_t)record_get_u64le(b + 56);
    p->updated_at_ms = (int64_t)record_get_u64le(b + 64);
    memcpy(p->merchant_id, b + RECORD_PAYMENT_FIXED_BYTES, p->merchant_id_len);
    memcpy(p->reference, b + RECORD_PAYMENT_FIXED_BYTES + p->merchant_id_len, p->reference_len);
    if (!record_merchant_valid(p->merchant_id, p->merchant_id_len) ||
        !record_currency_valid(p->currency) ||
        ids_parse(p->id, ID_BYTES, IDS_PAYMENT, NULL, NULL) != 0 || !payment_state_ok(p) ||
        p->created_at_ms < 0 || p->updated_at_ms < p->created_at_ms ||
        p->updated_at_ms > TIME_MS_MAX || memchr(p->reference, 0, p->reference_len))
        return -EBADMSG;
    return 0;
}

size_t record_refund_encode(uint8_t *out, const struct refund *r)
{
    ASSERT(amount_ok(r->amount) && record_currency_valid(r->currency));
    ASSERT(record_merchant_valid(r->merchant_id, r->merchant_id_len));
    ASSERT(strlen(r->id) == ID_BYTES && strlen(r->payment_id) == ID_BYTES);
    ASSERT(r->payment_status == PAYMENT_PARTIALLY_REFUNDED ||
           r->payment_status == PAYMENT_REFUNDED);
    memset(out, 0, RECORD_REFUND_FIXED_BYTES);
    out[0] = RECORD_VERSION;
    out[1] = (uint8_t)r->payment_status;
    out[2] = r->merchant_id_len;
    memcpy(out + 3, r->currency, 3);
    memcpy(out + 8, r->id, ID_BYTES);
    memcpy(out + 30, r->payment_id, ID_BYTES);
    record_put_u64le(out + 56, (uint64_t)r->amount);
    record_put_u64le(out + 64, (uint64_t)r->created_at_ms);
    memcpy(out + RECORD_REFUND_FIXED_BYTES, r->merchant_id, r->merchant_id_len);
    return RECORD_REFUND_FIXED_BYTES + r->merchant_id_len;
}

int record_refund_decode(const void *data, size_t len, struct refund *r)
{
    const uint8_t *b = data;
    if (len < RECORD_REFUND_FIXED_BYTES || b[0] != RECORD_VERSION || b[6] || b[7] ||
        len != (size_t)RECORD_REFUND_FIXED_BYTES + b[2])
        return -EBADMSG;
    memset(r, 0, sizeof(*r));
    r->payment_status = (enum payment_status)b[1];
    r->merchant_id_len = b[2];
    memcpy(r->currency, b + 3, 3);
    memcpy(r->id, b + 8, ID_BYTES);
    memcpy(r->payment_id, b + 30, ID_BYTES);
    r->amount = (int64_t)record_get_u64le(b + 56);
    r->created_at_ms = (int64_t)record_get_u64le(b + 64);
    if (r->created_at_ms < 0 || r->created_at_ms > TIME_MS_MAX)
        return -EBADMSG;
    memcpy(r->merchant_id, b + RECORD_REFUND_FIXED_BYTES, r->merchant_id_len);
    if (!record_merchant_valid(r->merchant_id, r->merchant_id_len) ||
        !record_currency_valid(r->currency) || !amount_ok(r->amount) ||
        ids_parse(r->id, ID_BYTES, IDS_REFUND, NULL, NULL) != 0 ||
        ids_parse(r->payment_id, ID_BYTES, IDS_PAYMENT, NULL, NULL) != 0 ||
        (r->payment_status != PAYMENT_PARTIALLY_REFUNDED && r->payment_status != PAYMENT_REFUNDED))
        return -EBADMSG;
    return 0;
}

/* The five byte strings of an idempotency record, in stored order. */
static void idem_parts(const struct idem_record *rec, const struct engine_span *parts[5])
{
    for (int i = 0; i < IDEM_FP_PARTS; i++)
        parts[i] = &rec->fp[i];
    parts[4] = &rec->body;
}

size_t record_idem_size(const struct idem_record *rec)
{
    const struct engine_span *parts[5];
    idem_parts(rec, parts);
    size_t n = RECORD_IDEM_FIXED_BYTES;
    for (int i = 0; i < 5; i++)
        n += parts[i]->ptr ? parts[i]->len : 0;
    return n;
}

size_t record_idem_encode(uint8_t *out, const struct idem_record *rec)
{
    ASSERT(rec->status >= 100 && rec->status <= 599);
    ASSERT(rec->body.len <= ENGINE_ANSWER_MAX_BYTES);
    const struct engine_span *parts[5];
    idem_parts(rec, parts);
    memset(out, 0, RECORD_IDEM_FIXED_BYTES);
    out[0] = RECORD_VERSION;
    out[2] = (uint8_t)rec->status;
    out[3] = (uint8_t)(rec->status >> 8);
    record_put_u64le(out + 8, (uint64_t)rec->created_at_ms);
    size_t off = RECORD_IDEM_FIXED_BYTES;
    for (int i = 0; i < 5; i++) {
        size_t len = parts[i]->ptr ? parts[i]->len : 0;
        ASSERT(len <= UINT32_MAX);
        if (parts[i]->ptr)
            out[1] |= (uint8_t)(1u << i);
        record_put_u32le(out + 16 + 4 * i, (uint32_t)len);
        if (len)
            memcpy(out + off, parts[i]->ptr, len);
        off += len;
    }
    return off;
}

int record_idem_decode(const void *data, size_t len, struct idem_record *rec)
{
    const uint8_t *b = data;
    if (len < RECORD_IDEM_FIXED_BYTES || b[0] != RECORD_VERSION || (b[1] & 0xe0))
        return -EBADMSG;
    memset(rec, 0, sizeof(*rec));
    rec->status = (uint16_t)(b[2] | b[3] << 8);
    rec->created_at_ms = (int64_t)record_get_u64le(b + 8);
    struct engine_span *parts[5] = {&rec->fp[0], &rec->fp[1], &rec->fp[2], &rec->fp[3], &rec->body};
    size_t off = RECORD_IDEM_FIXED_BYTES;
    for (int i = 0; i < 5; i++) {
        size_t plen = record_get_u32le(b + 16 + 4 * i);
        if (plen > len - off || (!(b[1] & (1u << i)) && plen))
            return -EBADMSG;
        parts[i]->ptr = (b[1] & (1u << i)) ? (const char *)b + off : NULL;
        parts[i]->len = plen;
        off += plen;
    }
    if (off != len || rec->status < 100 || rec->status > 599 || !rec->body.ptr ||
        rec->body.len > ENGINE_ANSWER_MAX_BYTES)
        return -EBADMSG;
    return 0;
}
