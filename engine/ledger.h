/*
 * Double-entry ledger vocabulary (DESIGN.md "Ledger").
 *
 * Accounts exist per (merchant, currency): clearing (the network side), pending
 * (authorized, not captured) and available (captured, owed to the merchant). A posting
 * moves `amount` (1..AMOUNT_MAX) from its debit account to its credit account, within one
 * (merchant, currency). An account's balance is its credits minus its debits, so the
 * three balances of a (merchant, currency) always sum to zero; clearing is <= 0.
 *
 * Postings per operation (payment.c makes them, in this order):
 *     authorize A         clearing  -> pending    A
 *     capture C of A      pending   -> available  C
 *                         pending   -> clearing   A - C   (omitted when C == A)
 *     void                pending   -> clearing   A
 *     refund R            available -> clearing   R
 *
 * The store applies a posting with ledger_balance_apply(), which keeps the arithmetic
 * (and its overflow check) in one place.
 */
#ifndef RINGPAY_ENGINE_LEDGER_H
#define RINGPAY_ENGINE_LEDGER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

enum ledger_account {
    LEDGER_CLEARING = 1,
    LEDGER_PENDING = 2,
    LEDGER_AVAILABLE = 3,
};

/* One movement of money, as the engine hands it to the store. */
struct posting {
    char payment_id[ID_BYTES + 1];               /* NUL-terminated */
    char merchant_id[MERCHANT_ID_MAX_BYTES + 1]; /* NUL-terminated */
    uint8_t merchant_id_len;
    char currency[CURRENCY_BYTES + 1]; /* NUL-terminated */
    enum ledger_account debit;
    enum ledger_account credit; /* != debit */
    int64_t amount;             /* 1..AMOUNT_MAX */
};

/* The postings of one operation: at most two. */
struct ledger_postings {
    struct posting p[2];
    size_t n;
};

/* The balances of one (merchant, currency). */
struct balance {
    char currency[CURRENCY_BYTES + 1];
    int64_t clearing;
    int64_t pending;
    int64_t available;
};

/* A committed posting as read back from a merchant's ledger. `seq` is assigned by the
 * store, strictly increasing in commit order within the merchant's ledger, >= 1. */
struct ledger_entry {
    uint64_t seq;
    char payment_id[ID_BYTES + 1];
    char currency[CURRENCY_BYTES + 1];
    enum ledger_account debit;
    enum ledger_account credit;
    int64_t amount;
    int64_t created_at_ms;
};

/* "clearing", "pending" or "available"; asserts a valid account. */
const char *ledger_account_name(enum ledger_account a);

/* Whether a is one of the three accounts. */
bool ledger_account_valid(int a);

/* Asserts the posting is well formed: accounts valid and different, amount in range,
 * id, merchant and currency non-empty. */
void ledger_posting_check(const struct posting *p);

/* Applies p to b (b->currency must equal p->currency, asserted): the debit account loses
 * p->amount, the credit account gains it. Returns 0, or -EOVERFLOW (b unchanged) when a
 * balance would leave int64. Asserts the zero-sum invariant before and after. */
int ledger_balance_apply(struct balance *b, const struct posting *p);

#ifdef __cplusplus
}
#endif

#endif
