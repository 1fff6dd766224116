/*
 * Tests of engine/payment.c and engine/ledger.c: the state machine table, amounts at
 * the edges, the postings of every operation and the zero-sum invariant.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine/ids.h"
#include "engine/payment.h"

#define T0 1795600800123LL

static const char *const RID = "rfd_00000000000000000a";

/* A payment of 1000 driven into status s. */
static void make(struct payment *p, enum payment_status s)
{
    struct ledger_postings lp;
    struct payment tmp;
    struct refund r;
    char id[ID_BYTES + 1];
    ids_format(id, IDS_PAYMENT, 0, 1);
    payment_authorize(p, id, "m-1", 3, 1000, "KRW", NULL, 0, T0, &lp);
    switch (s) {
    case PAYMENT_AUTHORIZED:
        return;
    case PAYMENT_VOIDED:
        assert_int_equal(payment_void(p, T0 + 1, &tmp, &lp), PAYMENT_OK);
        break;
    case PAYMENT_CAPTURED:
        assert_int_equal(payment_capture(p, 0, T0 + 1, &tmp, &lp), PAYMENT_OK);
        break;
    case PAYMENT_PARTIALLY_REFUNDED:
    case PAYMENT_REFUNDED:
        assert_int_equal(payment_capture(p, 0, T0 + 1, &tmp, &lp), PAYMENT_OK);
        *p = tmp;
        assert_int_equal(
            payment_refund(p, s == PAYMENT_REFUNDED ? 0 : 400, RID, T0 + 2, &tmp, &r, &lp),
            PAYMENT_OK);
        break;
    }
    *p = tmp;
    assert_int_equal(p->status, s);
}

enum opk { CAPTURE, VOID, REFUND };

static enum payment_err run(const struct payment *p, enum opk k, int64_t amount,
                            struct payment *after, struct ledger_postings *lp)
{
    struct refund r;
    switch (k) {
    case CAPTURE:
        return payment_capture(p, amount, T0 + 9, after, lp);
    case VOID:
        return payment_void(p, T0 + 9, after, lp);
    case REFUND:
        return payment_refund(p, amount, RID, T0 + 9, after, &r, lp);
    }
    return PAYMENT_ERR_STATE;
}

static void test_state_table(void **state)
{
    (void)state;
    static const struct {
        enum payment_status from;
        enum opk op;
        enum payment_err want;
        enum payment_status to;
    } table[] = {
        {PAYMENT_AUTHORIZED, CAPTURE, PAYMENT_OK, PAYMENT_CAPTURED},
        {PAYMENT_AUTHORIZED, VOID, PAYMENT_OK, PAYMENT_VOIDED},
        {PAYMENT_AUTHORIZED, REFUND, PAYMENT_ERR_STATE, 0},
        {PAYMENT_CAPTURED, CAPTURE, PAYMENT_ERR_STATE, 0},
        {PAYMENT_CAPTURED, VOID, PAYMENT_ERR_STATE, 0},
        {PAYMENT_CAPTURED, REFUND, PAYMENT_OK, PAYMENT_REFUNDED},
        {PAYMENT_PARTIALLY_REFUNDED, CAPTURE, PAYMENT_ERR_STATE, 0},
        {PAYMENT_PARTIALLY_REFUNDED, VOID, PAYMENT_ERR_STATE, 0},
        {PAYMENT_PARTIALLY_REFUNDED, REFUND, PAYMENT_OK, PAYMENT_REFUNDED},
        {PAYMENT_REFUNDED, CAPTURE, PAYMENT_ERR_STATE, 0},
        {PAYMENT_REFUNDED, VOID, PAYMENT_ERR_STATE, 0},
        {PAYMENT_REFUNDED, REFUND, PAYMENT_ERR_STATE, 0},
        {PAYMENT_VOIDED, CAPTURE, PAYMENT_ERR_STATE, 0},
        {PAYMENT_VOIDED, VOID, PAYMENT_ERR_STATE, 0},
        {PAYMENT_VOIDED, REFUND, PAYMENT_ERR_STATE, 0},
    };
    for (size_t i = 0; i < sizeof(table) / sizeof(table[0]); i++) {
        struct payment p, after, untouched;
        struct ledger_postings lp;
        make(&p, table[i].from);
        memset(&after, 0x5a, sizeof(after));
        untouched = after;
        enum payment_err e = run(&p, table[i].op, 0, &after, &lp);
        if (e != table[i].want)
            fail_msg("row %zu: got %d", i, e);
        if (e == PAYMENT_OK) {
            assert_int_equal(after.status, table[i].to);
            assert_true(after.updated_at_ms == T0 + 9);
            assert_true(after.created_at_ms == T0);
            payment_check(&after);
        } else {
            assert_memory_equal(&after, &untouched, sizeof(after)); /* wrote nothing */
        }
    }
    assert_string_equal(payment_state_message(PAYMENT_VOIDED), "payment is voided");
    assert_string_equal(payment_status_name(PAYMENT_PARTIALLY_REFUNDED), "partially_refunded");
    assert_string_equal(payment_status_name(PAYMENT_AUTHORIZED), "authorized");
    assert_string_equal(payment_status_name(PAYMENT_CAPTURED), "captured");
    assert_string_equal(payment_status_name(PAYMENT_REFUNDED), "refunded");
    assert_string_equal(payment_status_name(PAYMENT_VOIDED), "voided");
}

static void test_capture_amounts(void **state)
{
    (void)state;
    struct payment p, after;
    struct ledger_postings lp;
    make(&p, PAYMENT_AUTHORIZED);
    assert_int_equal(payment_capture(&p, 1001, T0, &after, &lp), PAYMENT_ERR_AMOUNT);
    assert_int_equal(payment_capture(&p, AMOUNT_MAX, T0, &after, &lp), PAYMENT_ERR_AMOUNT);
    assert_int_equal(payment_capture(&p, 1000, T0, &after, &lp), PAYMENT_OK);
    assert_int_equal(after.captured_amount, 1000);
    assert_int_equal(lp.n, 1); /* the zero release is omitted */
    assert_int_equal(payment_capture(&p, 1, T0, &after, &lp), PAYMENT_OK);
    assert_int_equal(after.captured_amount, 1);
    assert_int_equal(lp.n, 2);
    assert_int_equal(lp.p[0].debit, LEDGER_PENDING);
    assert_int_equal(lp.p[0].credit, LEDGER_AVAILABLE);
    assert_int_equal(lp.p[0].amount, 1);
    assert_int_equal(lp.p[1].debit, LEDGER_PENDING);
    assert_int_equal(lp.p[1].credit, LEDGER_CLEARING);
    assert_int_equal(lp.p[1].amount, 999);
    /* Time never runs backwards in updated_at. */
    assert_int_equal(payment_capture(&p, 0, T0 - 5000, &after, &lp), PAYMENT_OK);
    assert_true(after.updated_at_ms == T0);
}

static void test_refund_amounts(void **state)
{
    (void)state;
    struct payment p, after;
    struct refund r;
    struct ledger_postings lp;
    make(&p, PAYMENT_CAPTURED);
    assert_int_equal(payment_refund(&p, 1001, RID, T0, &after, &r, &lp), PAYMENT_ERR_AMOUNT);
    assert_int_equal(payment_refund(&p, 300, RID, T0 + 5, &after, &r, &lp), PAYMENT_OK);
    assert_int_equal(after.status, PAYMENT_PARTIALLY_REFUNDED);
    assert_int_equal(after.refunded_amount, 300);
    assert_string_equal(r.id, RID);
    assert_string_equal(r.payment_id, p.id);
    assert_string_equal(r.currency, "KRW");
    assert_int_equal(r.amount, 300);
    assert_int_equal(r.payment_status, PAYMENT_PARTIALLY_REFUNDED);
    assert_true(r.created_at_ms == T0 + 5);
    assert_int_equal(lp.n, 1);
    assert_int_equal(lp.p[0].debit, LEDGER_AVAILABLE);
    assert_int_equal(lp.p[0].credit, LEDGER_CLEARING);
    p = after;
    assert_int_equal(payment_refund(&p, 701, RID, T0, &after, &r, &lp), PAYMENT_ERR_AMOUNT);
    assert_int_equal(payment_refund(&p, 700, RID, T0, &after, &r, &lp), PAYMENT_OK);
    assert_int_equal(after.status, PAYMENT_REFUNDED);
    /* Default: what is left. */
    assert_int_equal(payment_refund(&p, 0, RID, T0, &after, &r, &lp), PAYMENT_OK);
    assert_int_equal(r.amount, 700);
    assert_int_equal(after.refunded_amount, 1000);
}

/* Applies postings to the (single) balance and checks it. */
static void book(struct balance *b, const struct ledger_postings *lp)
{
    for (size_t i = 0; i < lp->n; i++)
        assert_int_equal(ledger_balance_apply(b, &lp->p[i]), 0);
    assert_true(b->clearing + b->pending + b->available == 0);
}

static void test_postings_and_balances(void **state)
{
    (void)state;
    struct balance b = {.currency = "KRW"};
    struct payment a, c, v, after;
    struct ledger_postings lp;
    struct refund r;
    char id[ID_BYTES + 1];

    ids_format(id, IDS_PAYMENT, 0, 1);
    payment_authorize(&a, id, "m-1", 3, 5000, "KRW", "o-1", 3, T0, &lp);
    assert_int_equal(lp.n, 1);
    assert_int_equal(lp.p[0].debit, LEDGER_CLEARING);
    assert_int_equal(lp.p[0].credit, LEDGER_PENDING);
    assert_int_equal(lp.p[0].amount, 5000);
    assert_string_equal(lp.p[0].payment_id, id);
    assert_string_equal(lp.p[0].merchant_id, "m-1");
    book(&b, &lp);
    assert_int_equal(b.pending, 5000);
    assert_int_equal(b.clearing, -5000);

    ids_format(id, IDS_PAYMENT, 0, 2);
    payment_authorize(&v, id, "m-1", 3, 700, "KRW", NULL, 0, T0, &lp);
    book(&b, &lp);
    assert_int_equal(b.pending, 5700);

    assert_int_equal(payment_capture(&a, 3000, T0, &c, &lp), PAYMENT_OK);
    book(&b, &lp);
    assert_int_equal(b.pending, 700);
    assert_int_equal(b.available, 3000);

    assert_int_equal(payment_void(&v, T0, &after, &lp), PAYMENT_OK);
    assert_int_equal(lp.n, 1);
    assert_int_equal(lp.p[0].debit, LEDGER_PENDING);
    assert_int_equal(lp.p[0].credit, LEDGER_CLEARING);
    assert_int_equal(lp.p[0].amount, 700);
    book(&b, &lp);
    assert_int_equal(b.pending, 0);

    assert_int_equal(payment_refund(&c, 1000, RID, T0, &after, &r, &lp), PAYMENT_OK);
    book(&b, &lp);
    assert_int_equal(b.available, 2000);
    assert_int_equal(b.clearing, -2000);
}

static void test_balance_overflow(void **state)
{
    (void)state;
    struct balance b = {
        .currency = "EUR", .clearing = INT64_MIN + 5, .pending = INT64_MAX, .available = 0};
    b.available = -(b.clearing + b.pending); /* = -4 ... keeps the zero sum */
    struct posting p = {.payment_id = "pay_000000000000000001",
                        .merchant_id = "m",
                        .merchant_id_len = 1,
                        .currency = "EUR",
                        .debit = LEDGER_CLEARING,
                        .credit = LEDGER_PENDING,
                        .amount = 10};
    struct balance before = b;
    assert_int_equal(ledger_balance_apply(&b, &p), -EOVERFLOW);
    assert_memory_equal(&b, &before, sizeof(b));
    assert_string_equal(ledger_account_name(LEDGER_AVAILABLE), "available");
    assert_string_equal(ledger_account_name(LEDGER_PENDING), "pending");
    assert_string_equal(ledger_account_name(LEDGER_CLEARING), "clearing");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_state_table),      cmocka_unit_test(test_capture_amounts),
        cmocka_unit_test(test_refund_amounts),   cmocka_unit_test(test_postings_and_balances),
        cmocka_unit_test(test_balance_overflow),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
