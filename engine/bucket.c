/*
 * Token buckets in milli-tokens and milliseconds (see bucket.h for the arithmetic and
 * its invariants).
 */
#include "engine/bucket.h"

#include "engine/assert.h"

#define MILLI 1000

int bucket_conf_valid(const struct bucket_conf *conf)
{
    return conf != NULL && conf->rate_per_s >= 1 && conf->rate_per_s <= BUCKET_RATE_MAX &&
           conf->burst >= 1 && conf->burst <= BUCKET_BURST_MAX;
}

static void check(const struct bucket *b, const struct bucket_conf *conf)
{
    ASSERT(b != NULL && bucket_conf_valid(conf));
    ASSERT(b->level_milli >= 0 && b->level_milli <= (int64_t)conf->burst * MILLI);
}

void bucket_init(struct bucket *b, const struct bucket_conf *conf, int64_t now_ms)
{
    ASSERT(b != NULL && bucket_conf_valid(conf));
    b->level_milli = (int64_t)conf->burst * MILLI;
    b->last_ms = now_ms;
    check(b, conf);
}

/* Brings the level up to now_ms. */
static void refill(struct bucket *b, const struct bucket_conf *conf, int64_t now_ms)
{
    if (now_ms <= b->last_ms)
        return; /* the same millisecond, or a clock that stepped back */
    int64_t cap = (int64_t)conf->burst * MILLI;
    int64_t missing = cap - b->level_milli;
    /* Clamp the elapsed time to what fills the bucket, so the product cannot overflow
     * however long the bucket slept. */
    int64_t fill_ms = missing / conf->rate_per_s + 1;
    int64_t elapsed = now_ms - b->last_ms;
    if (elapsed > fill_ms)
        elapsed = fill_ms;
    int64_t level = b->level_milli + elapsed * conf->rate_per_s;
    b->level_milli = level < cap ? level : cap;
    b->last_ms = now_ms;
}

uint32_t bucket_take(struct bucket *b, const struct bucket_conf *conf, int64_t now_ms)
{
    check(b, conf);
    refill(b, conf, now_ms);
    if (b->level_milli >= MILLI) {
        b->level_milli -= MILLI;
        check(b, conf);
        return 0;
    }
    /* ceil(deficit / rate) ms is when the token is there; Retry-After is that in whole
     * seconds, rounded up: ceil(ceil(d / r) / 1000) == ceil(d / (r * 1000)). */
    int64_t deficit = MILLI - b->level_milli;
    int64_t per_s = (int64_t)conf->rate_per_s * MILLI;
    int64_t seconds = (deficit + per_s - 1) / per_s;
    ASSERT(seconds >= 1 && seconds <= MILLI);
    check(b, conf);
    return (uint32_t)seconds;
}

bool bucket_full(const struct bucket *b, const struct bucket_conf *conf, int64_t now_ms)
{
    check(b, conf);
    struct bucket t = *b;
    refill(&t, conf, now_ms);
    return t.level_milli == (int64_t)conf->burst * MILLI;
}
