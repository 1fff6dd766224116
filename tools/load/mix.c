/*
 * Random numbers, the Zipf sampler and the lifecycle decisions of `ringpay load`
 * (see mix.h).
 */
#include "tools/load/mix.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include "engine/assert.h"

/* ---- random numbers ---- */

void mix_rng_seed(struct mix_rng *r, uint64_t seed)
{
    r->state = seed;
}

uint64_t mix_rng_next(struct mix_rng *r)
{
    uint64_t z = (r->state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

uint64_t mix_rng_below(struct mix_rng *r, uint64_t n)
{
    ASSERT(n > 0);
    return (uint64_t)(((unsigned __int128)mix_rng_next(r) * n) >> 64);
}

double mix_rng_unit(struct mix_rng *r)
{
    return (double)(mix_rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- Zipf ---- */

int mix_zipf_init(struct mix_zipf *z, unsigned n, double s)
{
    z->cdf = NULL;
    if (n == 0 || !(s >= 0.0 && s <= MIX_ZIPF_S_MAX))
        return -EINVAL;
    z->cdf = malloc((size_t)n * sizeof(*z->cdf));
    if (z->cdf == NULL)
        return -ENOMEM;
    z->n = n;
    z->s = s;
    /* Sum the weights from the smallest up (fewer rounding losses), then normalise. */
    double sum = 0.0;
    for (unsigned k = n; k-- > 0;)
        sum += pow((double)k + 1.0, -s);
    double acc = 0.0;
    for (unsigned k = 0; k < n; k++) {
        acc += pow((double)k + 1.0, -s) / sum;
        z->cdf[k] = acc;
    }
    z->cdf[n - 1] = 1.0; /* rounding must not leave a gap at the top */
    for (unsigned k = 1; k < n; k++)
        ASSERT(z->cdf[k] >= z->cdf[k - 1]);
    return 0;
}

void mix_zipf_free(struct mix_zipf *z)
{
    free(z->cdf);
    z->cdf = NULL;
}

unsigned mix_zipf_sample(const struct mix_zipf *z, double u)
{
    ASSERT(u >= 0.0 && u < 1.0);
    unsigned lo = 0, hi = z->n - 1; /* the answer is in [lo, hi]; cdf[n-1] = 1 > u */
    while (lo < hi) {
        unsigned mid = lo + (hi - lo) / 2;
        if (z->cdf[mid] > u)
            hi = mid;
        else
            lo = mid + 1;
    }
    ASSERT(z->cdf[lo] > u && (lo == 0 || z->cdf[lo - 1] <= u));
    return lo;
}

double mix_zipf_prob(const struct mix_zipf *z, unsigned k)
{
    ASSERT(k < z->n);
    return k == 0 ? z->cdf[0] : z->cdf[k] - z->cdf[k - 1];
}

/* ---- lifecycle ---- */

int mix_check(const struct mix_config *c, char *why, size_t why_bytes)
{
    if (c->get_pct + c->balances_pct > 100) {
        snprintf(why, why_bytes, "--get-pct %u and --balances-pct %u add up to more than 100",
                 c->get_pct, c->balances_pct);
        return -1;
    }
    if (c->capture_pct + c->void_pct > 100) {
        snprintf(why, why_bytes, "--capture-pct %u and --void-pct %u add up to more than 100",
                 c->capture_pct, c->void_pct);
        return -1;
    }
    if (c->refunds_per_payment == 0 || c->replay_pct > 100 || c->refund_pct > 100) {
        snprintf(why, why_bytes, "a lifecycle percentage is over 100 or no refund per payment");
        return -1;
    }
    return 0;
}

enum mix_root mix_next_root(const struct mix_config *c, struct mix_rng *r, bool have_payment,
                            bool have_replay)
{
    uint64_t u = mix_rng_below(r, 100);
    if (u < c->get_pct)
        return have_payment ? MIX_ROOT_GET_PAYMENT : MIX_ROOT_AUTHORIZE;
    if (u < c->get_pct + c->balances_pct)
        return MIX_ROOT_BALANCES;
    if (c->replay_pct && mix_rng_below(r, 100) < c->replay_pct && have_replay)
        return MIX_ROOT_REPLAY;
    return MIX_ROOT_AUTHORIZE;
}

enum mix_next mix_after_authorize(const struct mix_config *c, struct mix_rng *r)
{
    uint64_t u = mix_rng_below(r, 100);
    if (u < c->capture_pct)
        return MIX_NEXT_CAPTURE;
    if (u < c->capture_pct + c->void_pct)
        return MIX_NEXT_VOID;
    return MIX_NEXT_NONE;
}

enum mix_next mix_after_capture(const struct mix_config *c, struct mix_rng *r)
{
    return mix_rng_below(r, 100) < c->refund_pct ? MIX_NEXT_REFUND : MIX_NEXT_NONE;
}

uint64_t mix_refund_amount(const struct mix_config *c, uint64_t amount, unsigned no)
{
    ASSERT(no >= 1 && no <= c->refunds_per_payment);
    if (no == c->refunds_per_payment)
        return 0;
    uint64_t each = amount / c->refunds_per_payment;
    return each ? each : 1;
}
