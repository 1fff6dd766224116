/*
 * Tests of engine/bucket.c: a full bucket's burst, refill by exact milli-tokens with no
 * drift over an hour, Retry-After as the smallest whole number of seconds that works,
 * clocks that stand still or step back, long sleeps at the largest rates, and the bounds.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "engine/bucket.h"

static void test_burst_then_refused(void **state)
{
    struct bucket_conf c = {.rate_per_s = 10, .burst = 5};
    struct bucket b;
    bucket_init(&b, &c, 1000);
    for (int i = 0; i < 5; i++)
        assert_int_equal(bucket_take(&b, &c, 1000), 0);
    assert_int_equal(bucket_take(&b, &c, 1000), 1);
    /* 10/s: a token every 100 ms exactly; 99 ms is not enough. */
    assert_int_equal(bucket_take(&b, &c, 1099), 1);
    assert_int_equal(bucket_take(&b, &c, 1100), 0);
    assert_int_equal(bucket_take(&b, &c, 1100), 1);
    /* A refused request takes nothing: the next token still comes at 1200. */
    assert_int_equal(bucket_take(&b, &c, 1199), 1);
    assert_int_equal(bucket_take(&b, &c, 1200), 0);
}

/* bucket_full: a bucket back at its burst is the same as a new one (tables reuse it). */
static void test_full(void **state)
{
    struct bucket_conf c = {.rate_per_s = 10, .burst = 2};
    struct bucket b;
    bucket_init(&b, &c, 0);
    assert_true(bucket_full(&b, &c, 0));
    assert_int_equal(bucket_take(&b, &c, 0), 0);
    assert_false(bucket_full(&b, &c, 0));
    assert_false(bucket_full(&b, &c, 99));
    assert_true(bucket_full(&b, &c, 100)); /* one token back at 10/s */
    assert_false(bucket_full(&b, &c, 50)); /* asking changed nothing */
    assert_int_equal(bucket_take(&b, &c, 0), 0);
    assert_false(bucket_full(&b, &c, 199));
    assert_true(bucket_full(&b, &c, 200));
}

/* Refill never exceeds the burst, however long the bucket sat unused. */
static void test_refill_caps_at_burst(void **state)
{
    struct bucket_conf c = {.rate_per_s = 3, .burst = 4};
    struct bucket b;
    bucket_init(&b, &c, 0);
    for (int i = 0; i < 4; i++)
        assert_int_equal(bucket_take(&b, &c, 0), 0);
    int64_t later = 10LL * 365 * 24 * 3600 * 1000; /* ten years */
    for (int i = 0; i < 4; i++)
        assert_int_equal(bucket_take(&b, &c, later), 0);
    assert_int_equal(bucket_take(&b, &c, later), 1);
    assert_int_equal(b.level_milli, 0);
}

/* Integer arithmetic, no drift: over one hour, taking every token as soon as it is
 * there (1 ms steps), a 3/s bucket of burst 2 allows exactly 2 + 3 * 3600 requests, a
 * 7/s one 2 + 7 * 3600. (Burst 2, because a full bucket rightly gains nothing: with
 * burst 1 the fraction past a whole token at the step that fills it would be capped.) */
static void test_no_drift_over_an_hour(void **state)
{
    static const uint32_t rates[] = {3, 7, 1000};
    for (size_t r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
        struct bucket_conf c = {.rate_per_s = rates[r], .burst = 2};
        struct bucket b;
        bucket_init(&b, &c, 0);
        int64_t allowed = 0;
        for (int64_t t = 0; t <= 3600 * 1000; t++)
            while (bucket_take(&b, &c, t) == 0)
                allowed++;
        assert_int_equal(allowed, 2 + (int64_t)rates[r] * 3600);
    }
}

/* Rates that do not divide 1000 ms: 3/s refills at 333.33 ms steps, kept exact. */
static void test_fractional_intervals(void **state)
{
    struct bucket_conf c = {.rate_per_s = 3, .burst = 2};
    struct bucket b;
    bucket_init(&b, &c, 0);
    assert_int_equal(bucket_take(&b, &c, 0), 0);
    assert_int_equal(bucket_take(&b, &c, 0), 0);
    /* 334 ms give 1002 milli-tokens; 333 ms only 999. */
    assert_int_equal(bucket_take(&b, &c, 333), 1);
    assert_int_equal(bucket_take(&b, &c, 334), 0);
    /* 2 milli-tokens are kept: at 666 ms the level is 998, at 667 ms 1001. */
    assert_int_equal(bucket_take(&b, &c, 666), 1);
    assert_int_equal(bucket_take(&b, &c, 667), 0);
    assert_int_equal(bucket_take(&b, &c, 1000), 0); /* 1 + 333 * 3 = 1000 exactly */
}

/* Retry-After is the smallest whole number of seconds after which the request passes. */
static void test_retry_after_is_smallest_sufficient(void **state)
{
    static const uint32_t rates[] = {1, 2, 3, 7, 999, 1000, 1001, BUCKET_RATE_MAX};
    for (size_t r = 0; r < sizeof(rates) / sizeof(rates[0]); r++) {
        struct bucket_conf c = {.rate_per_s = rates[r], .burst = 1};
        for (int64_t offset = 0; offset < 1000; offset += 37) {
            struct bucket b;
            bucket_init(&b, &c, 0);
            assert_int_equal(bucket_take(&b, &c, 0), 0);
            uint32_t ra = bucket_take(&b, &c, offset);
            if (ra == 0)
                continue; /* already refilled */
            assert_true(ra >= 1);
            struct bucket later = b, sooner = b;
            assert_int_equal(bucket_take(&later, &c, offset + (int64_t)ra * 1000), 0);
            assert_true(bucket_take(&sooner, &c, offset + ((int64_t)ra - 1) * 1000) != 0);
        }
    }
}

/* A clock that stands still or steps back mints no tokens and is not followed back. */
static void test_clock_steps_back(void **state)
{
    struct bucket_conf c = {.rate_per_s = 1, .burst = 1};
    struct bucket b;
    bucket_init(&b, &c, 50000);
    assert_int_equal(bucket_take(&b, &c, 50000), 0);
    assert_int_equal(bucket_take(&b, &c, 10000), 1); /* 40 s back */
    assert_int_equal(b.last_ms, 50000);
    assert_int_equal(bucket_take(&b, &c, 50999), 1);
    assert_int_equal(bucket_take(&b, &c, 51000), 0);
}

/* The largest rate and burst after the longest sleep stay exact (no overflow). */
static void test_largest_bounds(void **state)
{
    struct bucket_conf c = {.rate_per_s = BUCKET_RATE_MAX, .burst = BUCKET_BURST_MAX};
    assert_true(bucket_conf_valid(&c));
    struct bucket b;
    bucket_init(&b, &c, INT64_MIN / 2);
    assert_int_equal(bucket_take(&b, &c, INT64_MAX / 2), 0);
    assert_int_equal(b.level_milli, (int64_t)BUCKET_BURST_MAX * 1000 - 1000);
    b.level_milli = 0;
    assert_int_equal(bucket_take(&b, &c, INT64_MAX / 2), 1);
    assert_int_equal(bucket_take(&b, &c, INT64_MAX / 2 + 1), 0); /* 10^9 per ms */
}

static void test_conf_bounds(void **state)
{
    struct bucket_conf ok = {1, 1}, zero_rate = {0, 1}, zero_burst = {1, 0};
    struct bucket_conf big_rate = {BUCKET_RATE_MAX + 1u, 1}, big_burst = {1, BUCKET_BURST_MAX + 1u};
    assert_true(bucket_conf_valid(&ok));
    assert_false(bucket_conf_valid(&zero_rate));
    assert_false(bucket_conf_valid(&zero_burst));
    assert_false(bucket_conf_valid(&big_rate));
    assert_false(bucket_conf_valid(&big_burst));
    assert_false(bucket_conf_valid(NULL));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_burst_then_refused),
        cmocka_unit_test(test_full),
        cmocka_unit_test(test_refill_caps_at_burst),
        cmocka_unit_test(test_no_drift_over_an_hour),
        cmocka_unit_test(test_fractional_intervals),
        cmocka_unit_test(test_retry_after_is_smallest_sufficient),
        cmocka_unit_test(test_clock_steps_back),
        cmocka_unit_test(test_largest_bounds),
        cmocka_unit_test(test_conf_bounds),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
