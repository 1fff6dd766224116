/*
 * Tests of the replication window (store/repl_window.c): the contiguous mark under
 * delivery reports in any order, gaps, stale and repeated reports, the window's room
 * as reports come back, the bytes it holds, and the rewind after a producer is replaced.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <stdlib.h>

#include "store/repl_window.h"

static void push_n(struct repl_window *w, uint64_t from, uint64_t to, uint32_t bytes)
{
    for (uint64_t s = from; s <= to; s++)
        repl_window_push(w, s, bytes, (int64_t)s * 10);
}

/* Reports in order move the mark one by one; the mark starts where the store's was. */
static void test_in_order(void **state)
{
    struct repl_window w;
    assert_int_equal(repl_window_init(&w, 8, 100), 0);
    assert_int_equal(repl_window_room(&w), 8);
    push_n(&w, 101, 104, 10);
    assert_int_equal(repl_window_room(&w), 4);
    assert_int_equal(repl_window_outstanding(&w), 4);
    assert_int_equal(w.bytes_in, 40);
    int64_t occurred = 0;
    assert_int_equal(repl_window_ack(&w, 101, &occurred), 0);
    assert_int_equal(occurred, 1010);
    uint64_t bytes = 0;
    assert_int_equal(repl_window_advance(&w, &bytes), 1);
    assert_int_equal(bytes, 10);
    assert_int_equal(w.mark, 101);
    assert_int_equal(repl_window_room(&w), 5);
    assert_int_equal(repl_window_outstanding(&w), 3);
    repl_window_free(&w);
}

/* Reports out of order: the mark never passes a gap, then jumps over everything
 * reported once the gap is filled. */
static void test_out_of_order_and_gaps(void **state)
{
    struct repl_window w;
    assert_int_equal(repl_window_init(&w, 16, 0), 0);
    push_n(&w, 1, 10, 100);
    /* 3, 5, 2, 10 reported; 1 missing: no move. */
    assert_int_equal(repl_window_ack(&w, 3, NULL), 0);
    assert_int_equal(repl_window_ack(&w, 5, NULL), 0);
    assert_int_equal(repl_window_ack(&w, 2, NULL), 0);
    assert_int_equal(repl_window_ack(&w, 10, NULL), 0);
    assert_int_equal(repl_window_advance(&w, NULL), 0);
    assert_int_equal(w.mark, 0);
    assert_int_equal(repl_window_outstanding(&w), 6);
    assert_int_equal(repl_window_room(&w), 6); /* reported events still take room */
    /* 1 arrives: the mark passes 1, 2, 3 and stops at the gap at 4. */
    assert_int_equal(repl_window_ack(&w, 1, NULL), 0);
    uint64_t bytes = 0;
    assert_int_equal(repl_window_advance(&w, &bytes), 3);
    assert_int_equal(bytes, 300);
    assert_int_equal(w.mark, 3);
    /* 4 arrives: passes 4, 5; stops at 6. */
    assert_int_equal(repl_window_ack(&w, 4, NULL), 0);
    assert_int_equal(repl_window_advance(&w, NULL), 2);
    assert_int_equal(w.mark, 5);
    /* 9, 8, 7, 6 in reverse: one jump to 10. */
    for (uint64_t s = 9; s >= 6; s--)
        assert_int_equal(repl_window_ack(&w, s, NULL), 0);
    assert_int_equal(repl_window_advance(&w, &bytes), 5);
    assert_int_equal(w.mark, 10);
    assert_int_equal(bytes, 500);
    assert_int_equal(w.bytes_in, 0);
    assert_int_equal(repl_window_room(&w), 16);
    repl_window_free(&w);
}

/* A report can never move the mark over an event that was not delivered: reports
 * below the mark, above what was sent, or twice are refused and change nothing. */
static void test_stale_and_repeated_reports(void **state)
{
    struct repl_window w;
    assert_int_equal(repl_window_init(&w, 4, 50), 0);
    push_n(&w, 51, 52, 1);
    assert_int_equal(repl_window_ack(&w, 50, NULL), -ESTALE);
    assert_int_equal(repl_window_ack(&w, 53, NULL), -ESTALE);
    assert_int_equal(repl_window_ack(&w, 52, NULL), 0);
    assert_int_equal(repl_window_ack(&w, 52, NULL), -EALREADY);
    assert_int_equal(repl_window_advance(&w, NULL), 0);
    assert_int_equal(w.mark, 50);
    assert_int_equal(repl_window_ack(&w, 51, NULL), 0);
    assert_int_equal(repl_window_advance(&w, NULL), 2);
    assert_int_equal(repl_window_ack(&w, 51, NULL), -ESTALE); /* now below the mark */
    assert_int_equal(w.mark, 52);
    repl_window_free(&w);
}

/* The window wraps around its slots many times; its room follows the reports. */
static void test_refill_wraps(void **state)
{
    struct repl_window w;
    assert_int_equal(repl_window_init(&w, 5, 0), 0);
    uint64_t next = 1;
    for (int round = 0; round < 100; round++) {
        while (repl_window_room(&w) > 0)
            repl_window_push(&w, next++, 7, -1);
        assert_int_equal(w.sent - w.mark, 5);
        /* Report the newest first, the oldest last. */
        for (uint64_t s = w.sent; s > w.mark + 2; s--)
            assert_int_equal(repl_window_ack(&w, s, NULL), 0);
        assert_int_equal(repl_window_advance(&w, NULL), 0);
        assert_int_equal(repl_window_ack(&w, w.mark + 2, NULL), 0);
        assert_int_equal(repl_window_ack(&w, w.mark + 1, NULL), 0);
        assert_int_equal(repl_window_advance(&w, NULL), 5);
        assert_int_equal(w.mark, next - 1);
    }
    assert_int_equal(w.mark, 500);
    repl_window_free(&w);
}

/* A replaced producer: the reports above the mark are forgotten and everything above
 * it is sent again (duplicates, never a gap); reports of the new sends work. */
static void test_reset_resends_from_the_mark(void **state)
{
    struct repl_window w;
    assert_int_equal(repl_window_init(&w, 8, 0), 0);
    push_n(&w, 1, 6, 3);
    assert_int_equal(repl_window_ack(&w, 1, NULL), 0);
    assert_int_equal(repl_window_ack(&w, 3, NULL), 0);
    assert_int_equal(repl_window_ack(&w, 4, NULL), 0);
    assert_int_equal(repl_window_advance(&w, NULL), 1);
    repl_window_reset(&w);
    assert_int_equal(w.mark, 1);
    assert_int_equal(w.sent, 1);
    assert_int_equal(repl_window_outstanding(&w), 0);
    assert_int_equal(w.bytes_in, 0);
    /* 3 was reported by the old producer: forgotten, so 2 alone moves the mark by one. */
    push_n(&w, 2, 6, 3);
    assert_int_equal(repl_window_ack(&w, 2, NULL), 0);
    assert_int_equal(repl_window_advance(&w, NULL), 1);
    assert_int_equal(w.mark, 2);
    assert_int_equal(repl_window_outstanding(&w), 4);
    repl_window_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_in_order),
        cmocka_unit_test(test_out_of_order_and_gaps),
        cmocka_unit_test(test_stale_and_repeated_reports),
        cmocka_unit_test(test_refill_wraps),
        cmocka_unit_test(test_reset_resends_from_the_mark),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
