/*
 * The payment state machine and its ledger postings (engine/payment.h, engine/ledger.h).
 * Every transition checks `before` with payment_check, decides, and on success checks
 * `after`; an error leaves every output untouched.
 */
#include <string.h>

#include "engine/assert.h"
#include "engine/ids.h"
#include "engine/payment.h"

static const char *const status_names[] = {
    [PAYMENT_AUTHORIZED] = "authorized",
    [PAYMENT_CAPTURED] = "captured",
    [PAYMENT_PARTIALLY_REFUNDED] = "partially_refunded",
    [PAYMENT_REFUNDED] = "refunded",
    [PAYMENT_VOIDED] = "voided",
};

static const char *const state_messages[] = {
    [PAYMENT_AUTHORIZED] = "payment is authorized",
    [PAYMENT_CAPTURED] = "payment is captured",
    [PAYMENT_PARTIALLY_REFUNDED] = "payment is partially_refunded",
    [PAYMENT_REFUNDED] = "payment is refunded",
    [PAYMENT_VOIDED] = "payment is voided",
};

bool payment_status_valid(int s)
{
    return s >= PAYMENT_AUTHORIZED && s <= PAYMENT_VOIDED;
}

const char *payment_status_name(enum payment_status s)
{
    ASSERT(payment_status_valid(s));
    return status_names[s];
}

const char *payment_state_message(enum payment_status s)
{
    ASSERT(payment_status_valid(s));
    return state_messages[s];
}

static bool currency_ok(const char *c)
{
    for (int i = 0; i < CURRENCY_BYTES; i++)
        if (c[i] < 'A' || c[i] > 'Z')
            return false;
    return c[CURRENCY_BYTES] == '\0';
}

void payment_check(const struct payment *p)
{
    ASSERT(ids_parse(p->id, strlen(p->id), IDS_PAYMENT, NULL, NULL) == 0);
    ASSERT(p->merchant_id_len >= 1 && p->merchant_id_len <= MERCHANT_ID_MAX_BYTES);
    ASSERT(strlen(p->merchant_id) == p->merchant_id_len);
    ASSERT(currency_ok(p->currency));
    ASSERT(p->amount >= AMOUNT_MIN && p->amount <= AMOUNT_MAX);
    ASSERT(p->refunded_amount >= 0 && p->refunded_amount <= p->captured_amount);
    ASSERT(p->captured_amount <= p->amount);
    ASSERT(p->reference_len <= REFERENCE_MAX_BYTES);
    ASSERT(p->has_reference || p->reference_len == 0);
    ASSERT(p->created_at_ms >= 0 && p->created_at_ms <= p->updated_at_ms);
    ASSERT(p->updated_at_ms <= TIME_MS_MAX);
    switch (p->status) {
    case PAYMENT_AUTHORIZED:
    case PAYMENT_VOIDED:
        ASSERT(p->captured_amount == 0 && p->refunded_amount == 0);
        break;
    case PAYMENT_CAPTURED:
        ASSERT(p->captured_amount >= 1 && p->refunded_amount == 0);
        break;
    case PAYMENT_PARTIALLY_REFUNDED:
        ASSERT(p->refunded_amount > 0 && p->refunded_amount < p->captured_amount);
        break;
    case PAYMENT_REFUNDED:
        ASSERT(p->captured_amount >= 1 && p->refunded_amount == p->captured_amount);
        break;
    default:
        UNREACHABLE();
    }
}

static void post(struct ledger_postings *out, const struct payment *p, enum ledger_account debit,
                 enum ledger_account credit, int64_t amount)
{
    ASSERT(out->n < ARRAY_LEN(out->p));
    if (amount == 0)
        return; /* a zero movement is no posting (capture of the full amount) */
    struct posting *x = &out->p[out->n++];
    memset(x, 0, sizeof(*x));
    memcpy(x->payment_id, p->id, ID_BYTES + 1);
    memcpy(x->merchant_id, p->merchant_id, p->merchant_id_len + 1u);
    x->merchant_id_len = p->merchant_id_len;
    memcpy(x->currency, p->currency, CURRENCY_BYTES + 1);
    x->debit = debit;
    x->credit = credit;
    x->amount = amount;
    ledger_posting_check(x);
}

void payment_authorize(struct payment *p, const char *id, const char *merchant, size_t merchant_len,
                       int64_t amount, const char *currency, const char *reference,
                       size_t reference_len, int64_t now_ms, struct ledger_postings *out)
{
    ASSERT(merchant_len >= 1 && merchant_len <= MERCHANT_ID_MAX_BYTES);
    ASSERT(reference_len <= REFERENCE_MAX_BYTES);
    memset(p, 0, sizeof(*p));
    memcpy(p->id, id, ID_BYTES);
    memcpy(p->merchant_id, merchant, merchant_len);
    p->merchant_id_len = (uint8_t)merchant_len;
    memcpy(p->currency, currency, CURRENCY_BYTES);
    p->status = PAYMENT_AUTHORIZED;
    p->amount = amount;
    p->has_reference = reference != NULL;
    if (reference != NULL) {
        memcpy(p->reference, reference, reference_len);
        p->reference_len = (uint16_t)reference_len;
    }
    p->created_at_ms = p->updated_at_ms = now_ms;
    payment_check(p);
    out->n = 0;
    post(out, p, LEDGER_CLEARING, LEDGER_PENDING, amount);
}

enum payment_err payment_capture(const struct payment *before, int64_t amount, int64_t now_ms,
                                 struct payment *after, struct ledger_postings *out)
{
    payment_check(before);
    ASSERT(amount >= 0 && amount <= AMOUNT_MAX);
    if (before->status != PAYMENT_AUTHORIZED)
        return PAYMENT_ERR_STATE;
    int64_t c = amount == 0 ? before->amount : amount;
    if (c > before->amount)
        return PAYMENT_ERR_AMOUNT;
    *after = *before;
    after->status = PAYMENT_CAPTURED;
    after->captured_amount = c;
    after->updated_at_ms = now_ms > before->updated_at_ms ? now_ms : before->updated_at_ms;
    payment_check(after);
    out->n = 0;
    post(out, after, LEDGER_PENDING, LEDGER_AVAILABLE, c);
    post(out, after, LEDGER_PENDING, LEDGER_CLEARING, before->amount - c);
    return PAYMENT_OK;
}

enum payment_err payment_void(const struct payment *before, int64_t now_ms, struct payment *after,
                              struct ledger_postings *out)
{
    payment_check(before);
    if (before->status != PAYMENT_AUTHORIZED)
        return PAYMENT_ERR_STATE;
    *after = *before;
    after->status = PAYMENT_VOIDED;
    after->updated_at_ms = now_ms > before->updated_at_ms ? now_ms : before->updated_at_ms;
    payment_check(after);
    out->n = 0;
    post(out, after, LEDGER_PENDING, LEDGER_CLEARING, before->amount);
    return PAYMENT_OK;
}

enum payment_err payment_refund(const struct payment *before, int64_t amount, const char *refund_id,
                                int64_t now_ms, struct payment *after, struct refund *r,
                                struct ledger_postings *out)
{
    payment_check(before);
    ASSERT(amount >= 0 && amount <= AMOUNT_MAX);
    ASSERT(ids_parse(refund_id, strlen(refund_id), IDS_REFUND, NULL, NULL) == 0);
    if (before->status != PAYMENT_CAPTURED && before->status != PAYMENT_PARTIALLY_REFUNDED)
        return PAYMENT_ERR_STATE;
    int64_t left = before->captured_amount - before->refunded_amount;
    ASSERT(left >= 1);
    int64_t x = amount == 0 ? left : amount;
    if (x > left)
        return PAYMENT_ERR_AMOUNT;
    *after = *before;
    after->refunded_amount += x;
    after->status = after->refunded_amount == after->captured_amount ? PAYMENT_REFUNDED
                                                                     : PAYMENT_PARTIALLY_REFUNDED;
    after->updated_at_ms = now_ms > before->updated_at_ms ? now_ms : before->updated_at_ms;
    payment_check(after);

    memset(r, 0, sizeof(*r));
    memcpy(r->id, refund_id, ID_BYTES + 1);
    memcpy(r->payment_id, after->id, ID_BYTES + 1);
    memcpy(r->merchant_id, after->merchant_id, after->merchant_id_len + 1u);
    r->merchant_id_len = after->merchant_id_len;
    memcpy(r->currency, after->currency, CURRENCY_BYTES + 1);
    r->amount = x;
    r->payment_status = after->status;
    r->created_at_ms = after->updated_at_ms;
    out->n = 0;
    post(out, after, LEDGER_AVAILABLE, LEDGER_CLEARING, x);
    return PAYMENT_OK;
}
