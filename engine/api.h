/*
 * The API codec (SPEC §2): an HTTP request's parts -> one operation, and domain objects
 * -> JSON answers. No I/O; the caller (net/) hands in slices of its request buffer.
 *
 * Routes (`{id}` a payment id, `{m}` a merchant id):
 *     POST /v1/payments/authorize        OP_AUTHORIZE    shard of merchant_id (body)
 *     POST /v1/payments/{id}/capture     OP_CAPTURE      shard of the id
 *     POST /v1/payments/{id}/void        OP_VOID         shard of the id
 *     POST /v1/payments/{id}/refund      OP_REFUND       shard of the id
 *     GET  /v1/payments/{id}             OP_GET_PAYMENT  shard of the id
 *     GET  /v1/merchants/{m}/balances    OP_BALANCES     shard of m
 *     GET  /v1/merchants/{m}/ledger      OP_LEDGER       shard of m; ?after=&limit=
 * Checks, in this order (the first failure is the answer):
 *  1. path shape: no route of that shape (trailing slash, empty segment, unknown word,
 *     anything outside /v1/...) -> 404 not_found. /v1/payments/authorize is a route of
 *     its own, so GET on it is 405, not a payment lookup.
 *  2. method: a known shape with another method -> 405 method_not_allowed, `allow` set.
 *     Only "GET" and "POST" (exact, case-sensitive); net/ may map HEAD to GET.
 *  3. POST: a query string (anything after '?') -> 400 invalid_param "query"; no
 *     Idempotency-Key -> 400 missing_idempotency_key; more than one, or one that is
 *     empty, longer than 255 bytes or not printable ASCII (0x20..0x7e) -> 400
 *     invalid_param "Idempotency-Key". GET ignores the header.
 *  4. ids in the path: malformed, or a shard >= nshards -> 404 not_found. A merchant id
 *     in the path that is not 1-64 of [A-Za-z0-9_-] -> 400 invalid_param "merchant_id".
 *  5. body (POST only; a 0-byte body is "{}"): engine/json.h rules -> 400 invalid_json
 *     or invalid_param. Fields: authorize {merchant_id, amount, currency, reference?};
 *     capture and refund {amount?}; void {}. merchant_id 1-64 of [A-Za-z0-9_-]; currency
 *     three letters A-Z; reference <= 128 code points of UTF-8 with no control characters
 *     (C0 or DEL). null = absent for optional fields.
 *     GET ledger query: only `after` (0..2^63-1, default 0) and `limit` (1..1000, default
 *     100), each at most once, decimal digits without leading zeros; an empty value
 *     ("after=", or the bare name) means the default; anything else -> 400
 *     invalid_param naming the parameter. Other GET routes ignore the query.
 *  6. authentication: with an authenticated merchant, a body or path merchant_id of
 *     another merchant -> 403 forbidden. (For payment ids the owner is known only in the
 *     store: engine_apply answers 404 there.)
 *
 * The op keeps borrowed slices of method, path, query and body (the idempotency
 * fingerprint): the request bytes must stay unchanged until engine_apply() returns.
 * Everything else is copied into the op.
 */
#ifndef RINGPAY_ENGINE_API_H
#define RINGPAY_ENGINE_API_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/json.h"
#include "engine/ledger.h"
#include "engine/limits.h"
#include "engine/payment.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A borrowed byte slice; ptr == NULL means "absent" (distinct from empty). */
struct engine_span {
    const char *ptr;
    size_t len;
};

/* The parts of one HTTP request, as net/ parsed them. */
struct api_request {
    struct engine_span method;        /* "GET", "POST", ... */
    struct engine_span path;          /* up to '?', as sent */
    struct engine_span query;         /* after '?', empty or absent when none */
    struct engine_span body;          /* decoded body; absent = empty */
    struct engine_span idem_key;      /* Idempotency-Key value; absent when no header */
    unsigned idem_key_count;          /* Idempotency-Key headers sent (two: 400) */
    struct engine_span auth_merchant; /* authenticated merchant; absent with --auth off */
                                      /* (a valid merchant id: asserted) */
    struct engine_span request_id;    /* X-Request-Id of this request (for error bodies) */
};

enum op_kind {
    OP_AUTHORIZE = 1,
    OP_CAPTURE,
    OP_VOID,
    OP_REFUND,
    OP_GET_PAYMENT,
    OP_BALANCES,
    OP_LEDGER,
};

/* One decoded operation, ready for engine_apply() on shard `shard`. */
struct op {
    enum op_kind kind;
    uint32_t shard; /* < nshards given to api_decode */

    /* AUTHORIZE, BALANCES, LEDGER: the merchant of the body or path. CAPTURE, VOID,
     * REFUND, GET_PAYMENT: the authenticated merchant, or empty with auth off. */
    char merchant_id[MERCHANT_ID_MAX_BYTES + 1];
    uint8_t merchant_id_len;
    bool authenticated; /* an authenticated merchant was given (== merchant_id) */

    char payment_id[ID_BYTES + 1]; /* CAPTURE, VOID, REFUND, GET_PAYMENT */

    int64_t amount;                    /* AUTHORIZE: 1..AMOUNT_MAX; CAPTURE, REFUND:
                                          0 = absent (default amount) */
    char currency[CURRENCY_BYTES + 1]; /* AUTHORIZE */
    bool has_reference;                /* AUTHORIZE */
    uint16_t reference_len;
    char reference[REFERENCE_MAX_BYTES + 1];

    uint64_t after; /* LEDGER: entries with seq > after */
    uint32_t limit; /* LEDGER: 1..LEDGER_PAGE_MAX */

    /* POST only: the Idempotency-Key, 1..255 printable ASCII, NUL-terminated. */
    uint16_t idem_key_len;
    char idem_key[IDEMPOTENCY_KEY_MAX_BYTES + 1];

    /* POST only: the fingerprint, borrowed from the request (see top of file). */
    struct engine_span fp_method, fp_path, fp_query, fp_body;

    /* X-Request-Id, copied (cut to REQUEST_ID_MAX_BYTES), for error bodies. */
    uint8_t request_id_len;
    char request_id[REQUEST_ID_MAX_BYTES + 1];
};

/* An error answer before or inside the domain. `code` and `message` are what the body
 * says; `allow` is the Allow header value for 405 (else NULL). */
struct api_error {
    uint16_t status;
    const char *code; /* static, e.g. "invalid_param" */
    char message[API_MESSAGE_MAX_BYTES + 1];
    bool has_param; /* false: "param":null */
    char param[API_PARAM_MAX_BYTES + 1];
    const char *allow;
};

/* Decodes req for a process of nshards shards (1..SHARDS_MAX). Returns 0 with *op
 * filled, or -EINVAL with *err filled (render it with api_render_error()). */
int api_decode(const struct api_request *req, uint32_t nshards, struct op *op,
               struct api_error *err);

/* Sets *err to status/code/message (printf-free: message is copied, cut to fit) and
 * param (NULL: none). */
void api_error_set(struct api_error *err, uint16_t status, const char *code, const char *message,
                   const char *param);

/* ---- Renderers: each appends one complete JSON value to w, 0 or -ENOBUFS ---------- */

/* {"id",...,"updated_at"} exactly as SPEC §2's payment object. */
int api_render_payment(struct jw *w, const struct payment *p);

/* {"id","payment_id","amount","currency","payment_status","created_at"} */
int api_render_refund(struct jw *w, const struct refund *r);

/* {"error":{"code","message","param","request_id"}}; request_id may be empty. */
int api_render_error(struct jw *w, const struct api_error *e, const char *request_id,
                     size_t request_id_len);

/* Balances, written in three steps: begin, one entry per currency, end.
 * {"merchant_id":"m-1","balances":[{"currency":"KRW","pending":3000,"available":12000}]} */
int api_render_balances_begin(struct jw *w, const char *merchant, size_t merchant_len);
int api_render_balance(struct jw *w, const struct balance *b);
int api_render_balances_end(struct jw *w);

/* Ledger page the same way; has_next_after false renders "next_after":null.
 * {"merchant_id":"m-1","entries":[{"seq":41,"payment_id":"pay_…","debit":"pending",
 *  "credit":"available","amount":12000,"currency":"KRW","created_at":"…"}],"next_after":41} */
int api_render_ledger_begin(struct jw *w, const char *merchant, size_t merchant_len);
int api_render_ledger_entry(struct jw *w, const struct ledger_entry *e);
int api_render_ledger_end(struct jw *w, bool has_next_after, uint64_t next_after);

#ifdef __cplusplus
}
#endif

#endif
