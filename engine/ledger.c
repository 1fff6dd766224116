/*
 * Ledger vocabulary and the one place balances change (engine/ledger.h).
 * Invariant: for every (merchant, currency), clearing + pending + available == 0.
 */
#include <errno.h>
#include <string.h>

#include "engine/assert.h"
#include "engine/ledger.h"

const char *ledger_account_name(enum ledger_account a)
{
    switch (a) {
    case LEDGER_CLEARING:
        return "clearing";
    case LEDGER_PENDING:
        return "pending";
    case LEDGER_AVAILABLE:
        return "available";
    }
    UNREACHABLE();
    return NULL;
}

bool ledger_account_valid(int a)
{
    return a == LEDGER_CLEARING || a == LEDGER_PENDING || a == LEDGER_AVAILABLE;
}

void ledger_posting_check(const struct posting *p)
{
    ASSERT(ledger_account_valid(p->debit) && ledger_account_valid(p->credit));
    ASSERT(p->debit != p->credit);
    ASSERT(p->amount >= AMOUNT_MIN && p->amount <= AMOUNT_MAX);
    ASSERT(strlen(p->payment_id) == ID_BYTES);
    ASSERT(p->merchant_id_len >= 1 && p->merchant_id_len <= MERCHANT_ID_MAX_BYTES);
    ASSERT(strlen(p->merchant_id) == p->merchant_id_len);
    ASSERT(strlen(p->currency) == CURRENCY_BYTES);
}

static int64_t *account(struct balance *b, enum ledger_account a)
{
    switch (a) {
    case LEDGER_CLEARING:
        return &b->clearing;
    case LEDGER_PENDING:
        return &b->pending;
    case LEDGER_AVAILABLE:
        return &b->available;
    }
    UNREACHABLE();
    return NULL;
}

static bool zero_sum(const struct balance *b)
{
    /* Each balance is within int64; the sum is computed without overflow in __int128. */
    return (__int128)b->clearing + b->pending + b->available == 0;
}

int ledger_balance_apply(struct balance *b, const struct posting *p)
{
    ledger_posting_check(p);
    ASSERT(memcmp(b->currency, p->currency, CURRENCY_BYTES + 1) == 0);
    ASSERT(zero_sum(b));
    int64_t *debit = account(b, p->debit), *credit = account(b, p->credit);
    int64_t d, c;
    if (__builtin_sub_overflow(*debit, p->amount, &d) ||
        __builtin_add_overflow(*credit, p->amount, &c))
        return -EOVERFLOW;
    *debit = d;
    *credit = c;
    ASSERT(zero_sum(b));
    return 0;
}
