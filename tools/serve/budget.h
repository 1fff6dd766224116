/*
 * Per-merchant request budgets (SPEC §3), kept by the shard that owns the merchant: the
 * shard thread is the only one that touches its table, so there are no locks and no
 * cross-core traffic, and a refused request (429) is answered as soon as the shard takes
 * it from the mesh — it never waits for a group commit or an fsync.
 *
 * A fixed table of MERCHANT_BUCKETS_PER_SHARD entries (sized at start), open
 * addressing with linear probing over a seeded hash of the merchant id. An entry whose
 * bucket has refilled to its burst is the same as no entry and is taken over first;
 * when a probe window holds none, the least recently used entry starts over (full):
 * lenient, never wrong in the refusing direction.
 */
#ifndef RINGPAY_TOOLS_SERVE_BUDGET_H
#define RINGPAY_TOOLS_SERVE_BUDGET_H

#include <stddef.h>
#include <stdint.h>

#include "engine/bucket.h"
#include "engine/limits.h"

struct budget_entry {
    char merchant[MERCHANT_ID_MAX_BYTES];
    uint8_t len; /* 0: free */
    int64_t last_ms;
    struct bucket bucket;
};

struct budget {
    struct budget_entry *entries; /* [MERCHANT_BUCKETS_PER_SHARD]; NULL when off */
    struct bucket_conf conf;
    uint64_t seed;
    uint64_t refused; /* requests answered 429 (read by /metrics, relaxed) */
};

/* Sets up one shard's table; conf->rate_per_s == 0 turns budgets off (no memory). 0 or
 * -ENOMEM. */
int budget_init(struct budget *b, const struct bucket_conf *conf);

void budget_destroy(struct budget *b);

/* One request of merchant (1..MERCHANT_ID_MAX_BYTES bytes) at now_ms: 0 when within its
 * budget, else the Retry-After seconds (>= 1). */
uint32_t budget_take(struct budget *b, const char *merchant, size_t len, int64_t now_ms);

#endif
