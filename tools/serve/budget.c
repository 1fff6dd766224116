/*
 * Per-merchant request budgets of one shard (see budget.h).
 */
#include "tools/serve/budget.h"

#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "engine/assert.h"

/* Entries one lookup examines: the merchant's home slot and the next ones. */
#define PROBE_WINDOW 32

_Static_assert((MERCHANT_BUCKETS_PER_SHARD & (MERCHANT_BUCKETS_PER_SHARD - 1)) == 0,
               "power of two");

int budget_init(struct budget *b, const struct bucket_conf *conf)
{
    memset(b, 0, sizeof(*b));
    b->conf = *conf;
    if (conf->rate_per_s == 0)
        return 0;
    ASSERT(bucket_conf_valid(conf));
    if (getrandom(&b->seed, sizeof(b->seed), 0) != sizeof(b->seed))
        b->seed = (uint64_t)(uintptr_t)b ^ 0x9e3779b97f4a7c15ull;
    b->entries = calloc(MERCHANT_BUCKETS_PER_SHARD, sizeof(*b->entries));
    return b->entries ? 0 : -ENOMEM;
}

void budget_destroy(struct budget *b)
{
    free(b->entries);
    b->entries = NULL;
}

/* FNV-1a over the id, then a seeded mix. */
static uint32_t home_of(const struct budget *b, const char *m, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull ^ b->seed;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (uint8_t)m[i]) * 0x100000001b3ull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return (uint32_t)(h & (MERCHANT_BUCKETS_PER_SHARD - 1));
}

static struct budget_entry *lookup(struct budget *b, const char *m, size_t len, int64_t now_ms)
{
    uint32_t home = home_of(b, m, len);
    struct budget_entry *spare = NULL, *oldest = NULL;
    for (uint32_t k = 0; k < PROBE_WINDOW; k++) {
        struct budget_entry *e = &b->entries[(home + k) & (MERCHANT_BUCKETS_PER_SHARD - 1)];
        if (e->len == len && memcmp(e->merchant, m, len) == 0)
            return e;
        if (spare == NULL && (e->len == 0 || bucket_full(&e->bucket, &b->conf, now_ms)))
            spare = e;
        if (oldest == NULL || e->last_ms < oldest->last_ms)
            oldest = e;
    }
    struct budget_entry *e = spare ? spare : oldest;
    memcpy(e->merchant, m, len);
    e->len = (uint8_t)len;
    bucket_init(&e->bucket, &b->conf, now_ms);
    return e;
}

uint32_t budget_take(struct budget *b, const char *merchant, size_t len, int64_t now_ms)
{
    if (b->entries == NULL)
        return 0;
    ASSERT(len >= 1 && len <= MERCHANT_ID_MAX_BYTES);
    struct budget_entry *e = lookup(b, merchant, len, now_ms);
    e->last_ms = now_ms;
    uint32_t retry = bucket_take(&e->bucket, &b->conf, now_ms);
    if (retry)
        __atomic_store_n(&b->refused, __atomic_load_n(&b->refused, __ATOMIC_RELAXED) + 1,
                         __ATOMIC_RELAXED);
    return retry;
}
