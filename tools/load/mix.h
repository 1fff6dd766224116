/*
 * The request mix of `ringpay load`, kept apart from its event loop so that it can be
 * tested alone: a small seeded random generator, the Zipf sampler over merchants, and
 * the lifecycle decisions (what a new request is, what follows an answer).
 *
 * Random numbers: splitmix64 (Vigna), one generator per load thread, seeded from
 * --seed and the thread's index, so a run with the same seed and one thread makes the
 * same choices. Not for cryptography: it only picks requests.
 *
 * Zipf (the hot-merchant skew, --zipf S): merchant m-k (k = 0 .. n-1) is chosen with
 * probability (k+1)^-S / H(n, S), H the normalising sum, so m-0 is the hottest. S = 0
 * is uniform. The sampler keeps the cumulative distribution (n doubles, computed once
 * at start, then read-only and shared by the threads) and inverts it by binary search:
 * exact up to double rounding, O(log n) per draw, no rejection loop.
 *
 * Lifecycle (the `lifecycle` scenario; percentages are whole numbers 0..100):
 *   - a new request is GET /v1/payments/{id} of a payment this thread created with
 *     probability get_pct, GET /v1/merchants/{m}/balances with balances_pct, else an
 *     authorization; an authorization re-sends an earlier answered one (same key, same
 *     body) with probability replay_pct (the `replay` scenario);
 *   - after a 201 authorization: capture with capture_pct, void with void_pct, else
 *     nothing (the payment stays authorized);
 *   - after a 200 capture: with refund_pct, refunds_per_payment refunds one after the
 *     other, each amount / refunds_per_payment, the last one the rest (so the payment
 *     ends `refunded`, passing through `partially_refunded` when there are two or more).
 * Rules: get_pct + balances_pct <= 100, capture_pct + void_pct <= 100 (mix_check).
 */
#ifndef RINGPAY_TOOLS_LOAD_MIX_H
#define RINGPAY_TOOLS_LOAD_MIX_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- random numbers ---- */

struct mix_rng {
    uint64_t state;
};

void mix_rng_seed(struct mix_rng *r, uint64_t seed);
uint64_t mix_rng_next(struct mix_rng *r);

/* Uniform in [0, n), n > 0 (multiply-high: bias below 2^-64 * n, negligible). */
uint64_t mix_rng_below(struct mix_rng *r, uint64_t n);

/* Uniform in [0, 1) with 53 random bits. */
double mix_rng_unit(struct mix_rng *r);

/* ---- Zipf over merchants ---- */

#define MIX_ZIPF_S_MAX 10.0 /* a larger exponent sends practically everything to m-0 */

struct mix_zipf {
    unsigned n;
    double s;
    double *cdf; /* [n], cdf[n-1] == 1.0; owned */
};

/* Prepares the sampler for n >= 1 merchants and exponent 0 <= s <= MIX_ZIPF_S_MAX.
 * Returns 0, -EINVAL for bad arguments, -ENOMEM. */
int mix_zipf_init(struct mix_zipf *z, unsigned n, double s);
void mix_zipf_free(struct mix_zipf *z);

/* The merchant index (0 .. n-1) for u uniform in [0, 1): the smallest k with
 * cdf[k] > u. */
unsigned mix_zipf_sample(const struct mix_zipf *z, double u);

/* The probability of merchant index k (for tests and reports). */
double mix_zipf_prob(const struct mix_zipf *z, unsigned k);

/* ---- lifecycle decisions ---- */

struct mix_config {
    unsigned get_pct, balances_pct, replay_pct;
    unsigned capture_pct, void_pct, refund_pct;
    unsigned refunds_per_payment; /* >= 1 */
};

enum mix_root {
    MIX_ROOT_AUTHORIZE,
    MIX_ROOT_REPLAY,
    MIX_ROOT_GET_PAYMENT,
    MIX_ROOT_BALANCES,
};

enum mix_next {
    MIX_NEXT_NONE,
    MIX_NEXT_CAPTURE,
    MIX_NEXT_VOID,
    MIX_NEXT_REFUND,
};

/* 0, or -1 with one line in why when the percentages break the rules above. */
int mix_check(const struct mix_config *c, char *why, size_t why_bytes);

/* What the next new request is. have_payment: the thread knows a payment to GET;
 * have_replay: it knows an answered authorization to re-send. Without them, the draw
 * that would have chosen one falls back to a plain authorization. */
enum mix_root mix_next_root(const struct mix_config *c, struct mix_rng *r, bool have_payment,
                            bool have_replay);

/* After a successful authorization: capture, void or none. */
enum mix_next mix_after_authorize(const struct mix_config *c, struct mix_rng *r);

/* After a successful capture: refund (the first of refunds_per_payment) or none. */
enum mix_next mix_after_capture(const struct mix_config *c, struct mix_rng *r);

/* The amount of refund number no (1 .. refunds_per_payment) of a payment of `amount`:
 * amount / refunds_per_payment, or 0 for the last one, meaning "the rest" (a body
 * without an amount). Never 0 before the last: amount >= refunds_per_payment assumed,
 * else every refund but the last is 1. */
uint64_t mix_refund_amount(const struct mix_config *c, uint64_t amount, unsigned no);

#endif
