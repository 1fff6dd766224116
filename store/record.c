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

#include "engine/assert.h"

int record_merchant_valid(const char *m, size_t len)
{
    if (m == NULL || len == 0 || len > RECORD_MERCHANT_MAX)
        return 0;
    for (size_t i = 0; i < len; i++) {
        char c = m[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                 (c >= '0' && c <= '9') || c == '_' || c == '-';
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

size_t record_key_balance(uint8_t *key, const char *m, size_t mlen, const char currency[3],
                          uint8_t account)
{
    size_t n = record_key_merchant(key, m, mlen);
    memcpy(key + n, currency, 3);
    key[n + 3] = account;
    return n + 4;
}

size_t record_key_idem(uint8_t *key, const char *m, size_t mlen, const char *idem,
                       size_t idem_len)
{
    ASSERT(idem != NULL && idem_len >= 1 && idem_len <= RECORD_IDEM_KEY_MAX);
    size_t n = record_key_merchant(key, m, mlen);
    memcpy(key + n, idem, idem_len);
    ASSERT(n + idem_len <= RECORD_KEY_MAX);
    return n + idem_len;
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

size_t record_event_size(size_t mlen, size_t json_len)
{
    return 2 + mlen + 4 + json_len;
}

size_t record_event_encode(uint8_t *out, const char *m, size_t mlen, const char *json,
                           size_t json_len)
{
    ASSERT(record_merchant_valid(m, mlen));
    ASSERT(json != NULL && json_len >= 1 && json_len <= RECORD_EVENT_MAX_BYTES);
    out[0] = RECORD_VERSION;
    out[1] = (uint8_t)mlen;
    memcpy(out + 2, m, mlen);
    record_put_u32le(out + 2 + mlen, (uint32_t)json_len);
    memcpy(out + 6 + mlen, json, json_len);
    return record_event_size(mlen, json_len);
}

int record_event_decode(const void *data, size_t len, const char **m, size_t *mlen,
                        const char **json, size_t *json_len)
{
    const uint8_t *p = data;
    if (len < 2 || p[0] != RECORD_VERSION || len < 6 + (size_t)p[1])
        return -EBADMSG;
    size_t ml = p[1];
    uint32_t jl = record_get_u32le(p + 2 + ml);
    if (!record_merchant_valid((const char *)p + 2, ml) || jl == 0 ||
        jl > RECORD_EVENT_MAX_BYTES || record_event_size(ml, jl) != len)
        return -EBADMSG;
    *m = (const char *)p + 2;
    *mlen = ml;
    *json = (const char *)p + 6 + ml;
    *json_len = jl;
    return 0;
}
