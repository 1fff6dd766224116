/*
 * Token buckets (SPEC §3 request budgets), pure integer arithmetic; the time is passed in.
 *
 * A bucket holds at most `burst` tokens and gains `rate_per_s` tokens per second; a
 * request takes one token or is refused with the whole seconds after which it would
 * succeed (the Retry-After value).
 *
 * Exact, with no drift: the level is kept in milli-tokens and time in milliseconds, so
 * one millisecond adds exactly rate_per_s milli-tokens (rate tokens/s = rate
 * milli-tokens/ms) and a request costs 1000. Nothing is rounded until Retry-After,
 * which is rounded up: it is the smallest whole number of seconds after which the
 * request succeeds if nothing else takes a token meanwhile (so it is never 0). With
 * whole rates of at least one token per second that is always 1 s; the arithmetic
 * stays general so that a finer rate unit would need no new rounding rule.
 *
 * Invariants (asserted): 0 <= level <= burst * 1000; 1 <= rate_per_s <= BUCKET_RATE_MAX;
 * 1 <= burst <= BUCKET_BURST_MAX. A clock that steps back adds nothing and is not
 * followed back (the bucket keeps its later time), so a jump back never mints tokens.
 * A bucket belongs to one thread (the shard or reactor that owns the merchant or
 * address); nothing here is atomic.
 */
#ifndef RINGPAY_ENGINE_BUCKET_H
#define RINGPAY_ENGINE_BUCKET_H

#include <stdbool.h>
#include <stdint.h>

#include "engine/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

struct bucket_conf {
    uint32_t rate_per_s; /* tokens added per second, 1..BUCKET_RATE_MAX */
    uint32_t burst;      /* capacity in tokens, 1..BUCKET_BURST_MAX */
};

struct bucket {
    int64_t level_milli; /* tokens * 1000 */
    int64_t last_ms;     /* the time level_milli was brought up to */
};

/* Whether conf is within the bounds above (for configuration checks). */
int bucket_conf_valid(const struct bucket_conf *conf);

/* Starts a full bucket at now_ms. */
void bucket_init(struct bucket *b, const struct bucket_conf *conf, int64_t now_ms);

/*
 * Takes one token at now_ms. Returns 0 when the request is allowed, else the
 * Retry-After in whole seconds (>= 1) and takes nothing.
 */
uint32_t bucket_take(struct bucket *b, const struct bucket_conf *conf, int64_t now_ms);

/* True when b would be at its burst at now_ms: it is then the same as a new bucket, so
 * a table of buckets may drop or reuse it (nothing is changed). */
bool bucket_full(const struct bucket *b, const struct bucket_conf *conf, int64_t now_ms);

#ifdef __cplusplus
}
#endif

#endif
