/*
 * Payments and refunds, and the payment state machine (SPEC §2).
 *
 *     authorize            -> authorized
 *     capture   authorized -> captured         (one capture; 1 <= C <= A, default A;
 *                                               the rest A - C is released)
 *     void      authorized -> voided
 *     refund    captured | partially_refunded
 *                          -> partially_refunded, or refunded when the refunded sum
 *                             reaches the captured amount (R default: what is left)
 * Any other (state, operation) pair is PAYMENT_ERR_STATE, which the API answers 409
 * invalid_state with payment_state_message() ("payment is voided").
 * Decision: a capture above the authorized amount, and a refund above what is left, are
 * PAYMENT_ERR_AMOUNT, answered 409 amount_exceeds_remaining: the amount is well formed,
 * it only exceeds what the payment still allows. Amounts below 1 never reach here (the
 * codec rejects them as 400 invalid_param). The state is checked before the amount.
 *
 * The transition functions are pure: they read `before`, write `after` (a full copy with
 * the change) and the ledger postings of the change (engine/ledger.h). On an error they
 * write nothing. Invariants (payment_check asserts them):
 *     1 <= amount <= AMOUNT_MAX; 0 <= refunded_amount <= captured_amount <= amount;
 *     authorized/voided: captured = refunded = 0;  captured: captured >= 1, refunded = 0;
 *     partially_refunded: 0 < refunded < captured;  refunded: refunded = captured >= 1.
 */
#ifndef RINGPAY_ENGINE_PAYMENT_H
#define RINGPAY_ENGINE_PAYMENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/ledger.h"
#include "engine/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Values are stable (the store may persist them). */
enum payment_status {
    PAYMENT_AUTHORIZED = 1,
    PAYMENT_CAPTURED = 2,
    PAYMENT_PARTIALLY_REFUNDED = 3,
    PAYMENT_REFUNDED = 4,
    PAYMENT_VOIDED = 5,
};

struct payment {
    char id[ID_BYTES + 1];                       /* "pay_...", NUL-terminated */
    char merchant_id[MERCHANT_ID_MAX_BYTES + 1]; /* NUL-terminated */
    uint8_t merchant_id_len;
    char currency[CURRENCY_BYTES + 1]; /* NUL-terminated */
    enum payment_status status;
    int64_t amount; /* authorized */
    int64_t captured_amount;
    int64_t refunded_amount;                 /* sum of refunds */
    bool has_reference;                      /* false: rendered as null */
    uint16_t reference_len;                  /* bytes, <= REFERENCE_MAX_BYTES */
    char reference[REFERENCE_MAX_BYTES + 1]; /* UTF-8, NUL-terminated */
    int64_t created_at_ms;
    int64_t updated_at_ms;
};

struct refund {
    char id[ID_BYTES + 1]; /* "rfd_...", same shard as payment */
    char payment_id[ID_BYTES + 1];
    char merchant_id[MERCHANT_ID_MAX_BYTES + 1]; /* the payment's merchant */
    uint8_t merchant_id_len;
    char currency[CURRENCY_BYTES + 1];
    int64_t amount;
    enum payment_status payment_status; /* the payment's status after it */
    int64_t created_at_ms;
};

enum payment_err {
    PAYMENT_OK = 0,
    PAYMENT_ERR_STATE,  /* 409 invalid_state */
    PAYMENT_ERR_AMOUNT, /* 409 amount_exceeds_remaining */
};

/* "authorized", "captured", "partially_refunded", "refunded" or "voided" (SPEC names);
 * asserts a valid status. */
const char *payment_status_name(enum payment_status s);

/* Whether s is one of the five statuses. */
bool payment_status_valid(int s);

/* "payment is voided" etc.: the message of a 409 invalid_state. */
const char *payment_state_message(enum payment_status s);

/* Asserts every invariant listed above (and well-formed id, merchant, currency). */
void payment_check(const struct payment *p);

/* Fills *p as a new authorized payment and *out with its posting. Arguments are already
 * validated (asserted): id a payment id, merchant 1..64 bytes, currency three letters,
 * amount in range, reference (may be NULL: absent) <= REFERENCE_MAX_BYTES. */
void payment_authorize(struct payment *p, const char *id, const char *merchant, size_t merchant_len,
                       int64_t amount, const char *currency, const char *reference,
                       size_t reference_len, int64_t now_ms, struct ledger_postings *out);

/* Capture `amount` (0: the full authorized amount) of `before`. */
enum payment_err payment_capture(const struct payment *before, int64_t amount, int64_t now_ms,
                                 struct payment *after, struct ledger_postings *out);

/* Void `before`. */
enum payment_err payment_void(const struct payment *before, int64_t now_ms, struct payment *after,
                              struct ledger_postings *out);

/* Refund `amount` (0: all that is left) of `before` as refund `refund_id`; fills *r. */
enum payment_err payment_refund(const struct payment *before, int64_t amount, const char *refund_id,
                                int64_t now_ms, struct payment *after, struct refund *r,
                                struct ledger_postings *out);

#ifdef __cplusplus
}
#endif

#endif
