/*
 * engine_apply: runs one decoded operation (engine/api.h) against an abstract store and
 * renders its answer. The store layer implements struct engine_store over one LMDB
 * write transaction (a group-commit batch): every read sees the earlier writes of the
 * same batch. GET_PAYMENT, BALANCES and LEDGER only read, so a read transaction with
 * the write functions left NULL serves them.
 *
 * Order of one state-changing operation (AUTHORIZE skips the payment lookup):
 *  1. payment_get(op->payment_id).
 *  2. the idempotency scope is a merchant: the authenticated one; else (auth off) the
 *     payment's merchant, or for AUTHORIZE the body's merchant_id. With auth off and no
 *     such payment there is no scope: 404 not_found, nothing stored.
 *  3. idem_get(scope, key): same fingerprint (method, path, query, body, byte for byte)
 *     -> the stored status and body, replayed = true, nothing written. A different
 *     fingerprint -> 409 idempotency_key_reused (not stored).
 *  4. a missing payment, or one of another merchant than the authenticated one -> 404
 *     not_found (SPEC §2); then the state machine (engine/payment.h) decides. Everything
 *     is validated before the first write, so a refused operation writes only its
 *     idempotency record.
 *  5. writes: next_sequence for new ids, payment_put, refund_put, posting_add per
 *     posting, next_sequence(EVENT) + event_append, and last idem_put of the answer.
 * Decision (what idempotency stores): every answer the domain gave for a known scope:
 * 2xx, 404 not_found of a payment (when the scope merchant is known, i.e. with auth on
 * or for another merchant's payment), 409 invalid_state and amount_exceeds_remaining,
 * and the one domain 400: an authorize in a currency beyond MERCHANT_CURRENCIES_MAX.
 * Not stored: 400/403/405 (decode errors never reach here), 409 idempotency_key_reused,
 * and store failures (engine_apply returns -errno; the batch must be aborted). Retention
 * (SPEC: >= 24 h) is the store's: it may drop records older than its configured age.
 *
 * Events (SPEC §4), one per committed change, topic = type, key = merchant_id:
 *   {"event_id":"evt_2a_000000000000001f","type":"payment.captured",
 *    "occurred_at":"…", <amounts>, "payment":{…after the change…}}
 *   amounts: authorized {"amount":A}; captured {"amount":C,"released_amount":A-C};
 *   voided {"amount":A,"released_amount":A}; refunded {"amount":R,"refund":{…}}.
 *   event_id = "evt_" + 2 hex shard + "_" + 16 hex of the shard's event sequence
 *   (next_sequence(ENGINE_SEQ_EVENT)), so it is unique and equals the outbox key.
 *
 * Store functions return 0, -ENOENT (not found, reads only) or another -errno (fatal
 * for the operation: engine_apply returns it and the caller aborts the transaction).
 * Pointers a store read hands out stay valid until the next store call.
 */
#ifndef RINGPAY_ENGINE_APPLY_H
#define RINGPAY_ENGINE_APPLY_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/api.h"
#include "engine/ledger.h"
#include "engine/limits.h"
#include "engine/payment.h"

#ifdef __cplusplus
extern "C" {
#endif

enum engine_seq {
    ENGINE_SEQ_PAYMENT = 1, /* payment ids */
    ENGINE_SEQ_REFUND = 2,  /* refund ids */
    ENGINE_SEQ_EVENT = 3,   /* event ids = outbox keys */
};

/* The fingerprint of an idempotent request, in 4 parts compared one by one. */
enum { IDEM_FP_METHOD = 0, IDEM_FP_PATH, IDEM_FP_QUERY, IDEM_FP_BODY, IDEM_FP_PARTS };

/* An idempotency record. On idem_put the engine's spans point at the request and the
 * answer; the store copies them (and must keep the four parts apart, e.g. with length
 * prefixes). On idem_get the store points the spans at its copy. */
struct idem_record {
    struct engine_span fp[IDEM_FP_PARTS];
    uint16_t status;
    struct engine_span body; /* the answer body, <= ENGINE_ANSWER_MAX_BYTES */
    int64_t created_at_ms;
};

/* One outbox event. The store appends it under key `seq` (the value next_sequence
 * (ENGINE_SEQ_EVENT) returned just before) and copies the bytes. */
struct engine_event {
    uint64_t seq;
    const char *topic;        /* "payment.authorized", ... NUL-terminated */
    struct engine_span key;   /* merchant_id */
    struct engine_span value; /* JSON, <= ENGINE_EVENT_MAX_BYTES */
};

/* Visitors for listings: return 0 to continue, nonzero to stop (the store then returns
 * that value). */
typedef int (*engine_balance_fn)(void *arg, const struct balance *b);
typedef int (*engine_entry_fn)(void *arg, const struct ledger_entry *e);

struct engine_store {
    /* 0 and *out, or -ENOENT. */
    int (*payment_get)(void *ctx, const char *id, size_t id_len, struct payment *out);
    /* Insert or replace by p->id. */
    int (*payment_put)(void *ctx, const struct payment *p);
    /* Insert r (by r->id); the store may also index it by payment. */
    int (*refund_put)(void *ctx, const struct refund *r);
    /* The shard's next value of counter `which`: 1, 2, 3, ... never reused. */
    int (*next_sequence)(void *ctx, enum engine_seq which, uint64_t *out);
    /* Record of (merchant, key): 0 and *out (spans into store memory), or -ENOENT. */
    int (*idem_get)(void *ctx, const char *merchant, size_t merchant_len, const char *key,
                    size_t key_len, struct idem_record *out);
    int (*idem_put)(void *ctx, const char *merchant, size_t merchant_len, const char *key,
                    size_t key_len, const struct idem_record *rec);
    /* Appends p to its merchant's ledger with the next ledger seq (returned in *seq,
     * may be NULL) and created_at now_ms, and applies it to the (merchant, currency)
     * balances with ledger_balance_apply() (creating them at zero). */
    int (*posting_add)(void *ctx, const struct posting *p, int64_t now_ms, uint64_t *seq);
    /* 0 and *out, or -ENOENT when the merchant never used that currency. */
    int (*balance_get)(void *ctx, const char *merchant, size_t merchant_len, const char *currency,
                       struct balance *out);
    /* Visits the merchant's balances in currency order. */
    int (*balance_list)(void *ctx, const char *merchant, size_t merchant_len, engine_balance_fn fn,
                        void *arg);
    /* Visits up to `limit` entries with seq > after in seq order; *more is set to
     * whether an entry beyond them exists. */
    int (*ledger_page)(void *ctx, const char *merchant, size_t merchant_len, uint64_t after,
                       uint32_t limit, engine_entry_fn fn, void *arg, bool *more);
    /* Appends ev to the outbox. */
    int (*event_append)(void *ctx, const struct engine_event *ev);
};

/* The result of one operation. The caller provides body/cap: at least
 * ENGINE_ANSWER_MAX_BYTES, and ENGINE_READ_ANSWER_MAX_BYTES for BALANCES and LEDGER. */
struct answer {
    uint16_t status; /* HTTP status */
    bool replayed;   /* an idempotent replay: add "Idempotent-Replayed: true" */
    char *body;      /* in: caller buffer */
    size_t cap;      /* in: its size */
    size_t len;      /* out: JSON bytes written */
};

/* Runs op at time now_ms (ms since the epoch, 0..TIME_MS_MAX) against store st with
 * context ctx. Returns 0 with *out filled (any HTTP status), or a store's -errno
 * (-ENOBUFS: out->cap too small), after which the transaction must be aborted. */
int engine_apply(const struct engine_store *st, void *ctx, const struct op *op, int64_t now_ms,
                 struct answer *out);

/* "evt_" + 2 hex digits of shard + "_" + 16 hex digits of seq, and a NUL. */
void engine_event_id(char out[EVENT_ID_BYTES + 1], uint32_t shard, uint64_t seq);

#ifdef __cplusplus
}
#endif

#endif
