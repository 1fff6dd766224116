/*
 * Payment and refund ids with their shard, and the merchant hash (engine/ids.h).
 * Invariant: ids_parse(ids_format(k, s, q)) == (s, q) for every s < SHARDS_MAX, q >= 1.
 */
#include <errno.h>
#include <string.h>

#include "engine/assert.h"
#include "engine/ids.h"

#define IDS_PREFIX_BYTES 4
#define IDS_SHARD_DIGITS 2
#define IDS_SEQ_DIGITS   16

_Static_assert(IDS_PREFIX_BYTES + IDS_SHARD_DIGITS + IDS_SEQ_DIGITS == ID_BYTES, "id width");
_Static_assert(SHARDS_MAX == 1 << (4 * IDS_SHARD_DIGITS), "two hex digits of shard");

static const char *prefix_of(enum ids_kind kind)
{
    switch (kind) {
    case IDS_PAYMENT:
        return "pay_";
    case IDS_REFUND:
        return "rfd_";
    }
    UNREACHABLE();
    return NULL;
}

static void put_hex(char *o, uint64_t v, int digits)
{
    static const char hex[] = "0123456789abcdef";
    for (int i = digits - 1; i >= 0; i--) {
        o[i] = hex[v & 15];
        v >>= 4;
    }
}

/* Lower-case hex only: "A" is not a digit of an id. */
static int get_hex(const char *s, int digits, uint64_t *out)
{
    uint64_t v = 0;
    for (int i = 0; i < digits; i++) {
        char c = s[i];
        int d;
        if (c >= '0' && c <= '9')
            d = c - '0';
        else if (c >= 'a' && c <= 'f')
            d = c - 'a' + 10;
        else
            return -EINVAL;
        v = v << 4 | (uint64_t)d;
    }
    *out = v;
    return 0;
}

void ids_format(char out[ID_BYTES + 1], enum ids_kind kind, uint32_t shard, uint64_t seq)
{
    ASSERT(shard < SHARDS_MAX);
    ASSERT(seq >= 1);
    memcpy(out, prefix_of(kind), IDS_PREFIX_BYTES);
    put_hex(out + IDS_PREFIX_BYTES, shard, IDS_SHARD_DIGITS);
    put_hex(out + IDS_PREFIX_BYTES + IDS_SHARD_DIGITS, seq, IDS_SEQ_DIGITS);
    out[ID_BYTES] = '\0';
}

int ids_parse(const char *id, size_t len, enum ids_kind kind, uint32_t *shard, uint64_t *seq)
{
    uint64_t sh, sq;
    if (id == NULL || len != ID_BYTES || memcmp(id, prefix_of(kind), IDS_PREFIX_BYTES) != 0)
        return -EINVAL;
    if (get_hex(id + IDS_PREFIX_BYTES, IDS_SHARD_DIGITS, &sh) ||
        get_hex(id + IDS_PREFIX_BYTES + IDS_SHARD_DIGITS, IDS_SEQ_DIGITS, &sq) || sq == 0)
        return -EINVAL;
    ASSERT(sh < SHARDS_MAX);
    if (shard != NULL)
        *shard = (uint32_t)sh;
    if (seq != NULL)
        *seq = sq;
    return 0;
}

int ids_shard_of(const char *id, size_t len)
{
    uint32_t shard;
    if (ids_parse(id, len, IDS_PAYMENT, &shard, NULL) == 0 ||
        ids_parse(id, len, IDS_REFUND, &shard, NULL) == 0)
        return (int)shard;
    return -EINVAL;
}

uint64_t engine_merchant_hash(const char *merchant, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ULL;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)merchant[i];
        h *= 0x100000001b3ULL;
    }
    return h;
}

uint32_t engine_shard_of_merchant(const char *merchant, size_t len, uint32_t nshards)
{
    ASSERT(nshards >= 1 && nshards <= SHARDS_MAX);
    return (uint32_t)(engine_merchant_hash(merchant, len) % nshards);
}
