/*
 * Tests net/spsc.c: argument checks, FIFO order, full and empty rings (-EAGAIN with
 * nothing written or read), wrap-around of slots and of the 32-bit counters, the
 * zero-copy peek, and a two-thread run of millions of sequence-numbered messages
 * through a 64-slot ring (strict order, no loss, no duplicate, producer backpressure).
 * The two-thread test prints its throughput.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "net/spsc.h"

struct msg {
    uint64_t seq;
    uint64_t check; /* seq * CHECK_MUL: catches torn or stale slots */
};

#define CHECK_MUL UINT64_C(0x9e3779b97f4a7c15)

static struct msg msg_of(uint64_t seq)
{
    struct msg m = {.seq = seq, .check = seq * CHECK_MUL};
    return m;
}

static void test_init_rejects_bad_arguments(void **state)
{
    struct spsc q;
    assert_int_equal(spsc_init(&q, 0, 8), -EINVAL);
    assert_int_equal(spsc_init(&q, 3, 8), -EINVAL);
    assert_int_equal(spsc_init(&q, 96, 8), -EINVAL);
    assert_int_equal(spsc_init(&q, SPSC_SLOTS_MAX * 2u, 8), -EINVAL);
    assert_int_equal(spsc_init(&q, 8, 0), -EINVAL);
    assert_int_equal(spsc_init(&q, 8, SPSC_MSG_MAX_BYTES + 1), -EINVAL);
    spsc_destroy(&q); /* a failed init leaves nothing to free */

    assert_int_equal(spsc_init(&q, 1, 1), 0);
    assert_int_equal(spsc_slots(&q), 1);
    spsc_destroy(&q);
    assert_int_equal(spsc_init(&q, 8, sizeof(struct msg)), 0);
    assert_int_equal(spsc_slots(&q), 8);
    assert_int_equal(spsc_count(&q), 0);
    spsc_destroy(&q);
    spsc_destroy(&q); /* twice is safe */
}

static void test_indices_on_separate_cache_lines(void **state)
{
    size_t tail_line = offsetof(struct spsc, tail) / SPSC_CACHE_LINE;
    size_t head_line = offsetof(struct spsc, head) / SPSC_CACHE_LINE;
    size_t ro_line = offsetof(struct spsc, slot_mem) / SPSC_CACHE_LINE;
    assert_int_not_equal(tail_line, head_line);
    assert_int_not_equal(tail_line, ro_line);
    assert_int_not_equal(head_line, ro_line);
    /* Each side's cached copy sits on that side's own line. */
    assert_int_equal(offsetof(struct spsc, head_cache) / SPSC_CACHE_LINE, tail_line);
    assert_int_equal(offsetof(struct spsc, tail_cache) / SPSC_CACHE_LINE, head_line);
    assert_int_equal(_Alignof(struct spsc), SPSC_CACHE_LINE);
}

static void test_fifo_order_single_thread(void **state)
{
    struct spsc q;
    assert_int_equal(spsc_init(&q, 16, sizeof(struct msg)), 0);
    for (uint64_t i = 0; i < 10; i++) {
        struct msg m = msg_of(100 + i);
        assert_int_equal(spsc_push(&q, &m), 0);
        assert_int_equal(spsc_count(&q), i + 1);
    }
    for (uint64_t i = 0; i < 10; i++) {
        struct msg m;
        assert_int_equal(spsc_pop(&q, &m), 0);
        assert_int_equal(m.seq, 100 + i);
        assert_int_equal(m.check, (100 + i) * CHECK_MUL);
    }
    assert_int_equal(spsc_count(&q), 0);
    spsc_destroy(&q);
}

static void test_empty_pop_returns_eagain_and_leaves_buffer(void **state)
{
    struct spsc q;
    assert_int_equal(spsc_init(&q, 4, sizeof(struct msg)), 0);
    struct msg m = {.seq = 77, .check = 88};
    assert_int_equal(spsc_pop(&q, &m), -EAGAIN);
    assert_int_equal(m.seq, 77);
    assert_int_equal(m.check, 88);
    assert_null(spsc_peek(&q));

    /* Empty again after one push and pop. */
    struct msg one = msg_of(1);
    assert_int_equal(spsc_push(&q, &one), 0);
    assert_int_equal(spsc_pop(&q, &m), 0);
    assert_int_equal(m.seq, 1);
    assert_int_equal(spsc_pop(&q, &m), -EAGAIN);
    assert_int_equal(m.seq, 1);
    spsc_destroy(&q);
}

static void test_full_push_returns_eagain_and_writes_nothing(void **state)
{
    struct spsc q;
    assert_int_equal(spsc_init(&q, 8, sizeof(struct msg)), 0);
    for (uint64_t i = 0; i < 8; i++) {
        struct msg m = msg_of(i);
        assert_int_equal(spsc_push(&q, &m), 0);
    }
    /* A push into a full ring would land on the oldest message's slot. */
    unsigned char before[8 * 16];
    memcpy(before, q.slot_mem, sizeof(before));
    for (int tries = 0; tries < 3; tries++) {
        struct msg m = msg_of(999);
        assert_int_equal(spsc_push(&q, &m), -EAGAIN);
        assert_int_equal(spsc_count(&q), 8);
    }
    assert_memory_equal(before, q.slot_mem, sizeof(before));

    /* One pop makes room for exactly one push. */
    struct msg m;
    assert_int_equal(spsc_pop(&q, &m), 0);
    assert_int_equal(m.seq, 0);
    struct msg late = msg_of(8);
    assert_int_equal(spsc_push(&q, &late), 0);
    assert_int_equal(spsc_push(&q, &late), -EAGAIN);
    for (uint64_t i = 1; i <= 8; i++) {
        assert_int_equal(spsc_pop(&q, &m), 0);
        assert_int_equal(m.seq, i);
        assert_int_equal(m.check, i * CHECK_MUL);
    }
    assert_int_equal(spsc_pop(&q, &m), -EAGAIN);
    spsc_destroy(&q);
}

/* Pushes and pops in uneven batches so slot positions and fill levels vary. */
static void run_laps(struct spsc *q, uint64_t messages)
{
    uint32_t slots = spsc_slots(q);
    uint64_t next_push = 0, next_pop = 0, round = 0;
    while (next_pop < messages) {
        uint32_t batch = 1 + (uint32_t)(round++ * 7 % slots);
        for (uint32_t i = 0; i < batch && next_push < messages; i++) {
            struct msg m = msg_of(next_push);
            int err = spsc_push(q, &m);
            if (err) {
                assert_int_equal(err, -EAGAIN);
                assert_int_equal(spsc_count(q), slots);
                break;
            }
            next_push++;
        }
        uint32_t take = 1 + (uint32_t)(round * 5 % slots);
        for (uint32_t i = 0; i < take; i++) {
            struct msg m;
            if (spsc_pop(q, &m) != 0) {
                assert_int_equal(next_pop, next_push);
                break;
            }
            assert_int_equal(m.seq, next_pop);
            assert_int_equal(m.check, next_pop * CHECK_MUL);
            next_pop++;
        }
        assert_int_equal(spsc_count(q), next_push - next_pop);
    }
}

static void test_wraps_around_many_times(void **state)
{
    struct spsc q;
    assert_int_equal(spsc_init(&q, 4, sizeof(struct msg)), 0);
    run_laps(&q, 100000); /* 25000 laps of a 4-slot ring */
    spsc_destroy(&q);
}

static void test_counters_wrap_past_uint32_max(void **state)
{
    struct spsc q;
    assert_int_equal(spsc_init(&q, 8, sizeof(struct msg)), 0);
    /* Start both counters just below the 32-bit wrap (as after 2^32 - 5 messages). */
    uint32_t start = UINT32_MAX - 4;
    q.head = q.tail = q.head_cache = q.tail_cache = start;
    for (uint64_t i = 0; i < 8; i++) {
        struct msg m = msg_of(i);
        assert_int_equal(spsc_push(&q, &m), 0);
    }
    struct msg extra = msg_of(8);
    assert_int_equal(spsc_push(&q, &extra), -EAGAIN); /* full across the wrap */
    assert_int_equal(spsc_count(&q), 8);
    assert_true(q.tail < q.head); /* the counter really wrapped */
    for (uint64_t i = 0; i < 8; i++) {
        struct msg m;
        assert_int_equal(spsc_pop(&q, &m), 0);
        assert_int_equal(m.seq, i);
    }
    assert_int_equal(spsc_count(&q), 0);
    run_laps(&q, 1000);
    spsc_destroy(&q);
}

static void test_peek_is_zero_copy_and_aligned(void **state)
{
    struct spsc q;
    const uint32_t bytes = 13; /* odd size: slots are padded to 8-byte strides */
    assert_int_equal(spsc_init(&q, 4, bytes), 0);
    unsigned char a[13], b[13];
    memset(a, 0xA1, sizeof(a));
    memset(b, 0xB2, sizeof(b));
    assert_int_equal(spsc_push(&q, a), 0);
    assert_int_equal(spsc_push(&q, b), 0);

    const unsigned char *p = spsc_peek(&q);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 8, 0);
    assert_memory_equal(p, a, bytes);
    assert_ptr_equal(spsc_peek(&q), p); /* peek does not consume */
    spsc_consume(&q);
    p = spsc_peek(&q);
    assert_non_null(p);
    assert_int_equal((uintptr_t)p % 8, 0);
    assert_memory_equal(p, b, bytes); /* the 13-byte neighbour was not clobbered */
    spsc_consume(&q);
    assert_null(spsc_peek(&q));
    spsc_destroy(&q);
}

/* ---- Two threads ------------------------------------------------------------------ */

#define THREAD_MESSAGES (4u * 1000 * 1000)
#define THREAD_SLOTS    64

struct two_thread {
    struct spsc q;
    uint64_t producer_full; /* pushes refused with -EAGAIN */
};

static void relax(unsigned *spins)
{
    /* Spin briefly, then yield: on 2 shared cores the peer may need our CPU. */
    if (++*spins % 64 == 0)
        sched_yield();
    else
        __builtin_ia32_pause();
}

static void *producer_main(void *arg)
{
    struct two_thread *t = arg;
    unsigned spins = 0;
    for (uint64_t seq = 0; seq < THREAD_MESSAGES; seq++) {
        struct msg m = msg_of(seq);
        while (spsc_push(&t->q, &m) == -EAGAIN) {
            t->producer_full++;
            relax(&spins);
        }
    }
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void test_two_threads_strict_order_no_loss(void **state)
{
    static struct two_thread t;
    assert_int_equal(spsc_init(&t.q, THREAD_SLOTS, sizeof(struct msg)), 0);
    t.producer_full = 0;

    double start = now_s();
    pthread_t producer;
    assert_int_equal(pthread_create(&producer, NULL, producer_main, &t), 0);

    /* Consume here. Checking every message rather than asserting inside the loop
     * keeps the hot path cheap; the counts are asserted after the join. */
    uint64_t expected = 0, bad_order = 0, bad_check = 0, count_over = 0;
    unsigned spins = 0;
    while (expected < THREAD_MESSAGES) {
        struct msg m;
        if (spsc_pop(&t.q, &m) != 0) {
            relax(&spins);
            continue;
        }
        bad_order += m.seq != expected;
        bad_check += m.check != m.seq * CHECK_MUL;
        if ((expected & 1023) == 0)
            count_over += spsc_count(&t.q) > THREAD_SLOTS;
        expected = m.seq + 1;
    }
    assert_int_equal(pthread_join(producer, NULL), 0);
    double elapsed = now_s() - start;

    assert_int_equal(bad_order, 0);
    assert_int_equal(bad_check, 0);
    assert_int_equal(count_over, 0);
    assert_int_equal(expected, THREAD_MESSAGES);
    struct msg m;
    assert_int_equal(spsc_pop(&t.q, &m), -EAGAIN); /* nothing duplicated at the end */
    print_message("spsc two threads: %u messages of %zu bytes through %u slots in %.3f s "
                  "= %.1f M msg/s (producer saw full %llu times)\n",
                  THREAD_MESSAGES, sizeof(struct msg), THREAD_SLOTS, elapsed,
                  THREAD_MESSAGES / elapsed / 1e6, (unsigned long long)t.producer_full);
    spsc_destroy(&t.q);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_rejects_bad_arguments),
        cmocka_unit_test(test_indices_on_separate_cache_lines),
        cmocka_unit_test(test_fifo_order_single_thread),
        cmocka_unit_test(test_empty_pop_returns_eagain_and_leaves_buffer),
        cmocka_unit_test(test_full_push_returns_eagain_and_writes_nothing),
        cmocka_unit_test(test_wraps_around_many_times),
        cmocka_unit_test(test_counters_wrap_past_uint32_max),
        cmocka_unit_test(test_peek_is_zero_copy_and_aligned),
        cmocka_unit_test(test_two_threads_strict_order_no_loss),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
