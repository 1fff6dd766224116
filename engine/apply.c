/*
 * engine_apply (engine/apply.h): one operation against the abstract store.
 *
 * Every state-changing path reads and decides first, then writes; the only write
 * before the decision is none at all. Answers are rendered into the caller's buffer
 * before the idempotency record is written, so the record holds exactly the bytes the
 * client receives, and a replay copies them back unchanged.
 */
#include <errno.h>
#include <string.h>

#include "engine/apply.h"
#include "engine/assert.h"
#include "engine/ids.h"
#include "engine/json.h"

/* The merchant that scopes an idempotency key; len 0 means none. */
struct scope {
    const char *merchant;
    size_t len;
};

void engine_event_id(char out[EVENT_ID_BYTES + 1], uint32_t shard, uint64_t seq)
{
    static const char hex[] = "0123456789abcdef";
    ASSERT(shard < SHARDS_MAX);
    memcpy(out, "evt_", 4);
    out[4] = hex[shard >> 4 & 15];
    out[5] = hex[shard & 15];
    out[6] = '_';
    for (int i = 0; i < 16; i++)
        out[7 + i] = hex[seq >> (60 - 4 * i) & 15];
    out[EVENT_ID_BYTES] = '\0';
}

/* ---- Answers ----------------------------------------------------------------------- */

static int answer_error_param(struct answer *out, const struct op *op, uint16_t status,
                              const char *code, const char *message, const char *param)
{
    struct api_error e;
    struct jw w;
    api_error_set(&e, status, code, message, param);
    jw_init(&w, out->body, out->cap);
    if (api_render_error(&w, &e, op->request_id, op->request_id_len))
        return -ENOBUFS;
    out->status = status;
    out->len = w.len;
    return 0;
}

static int answer_error(struct answer *out, const struct op *op, uint16_t status, const char *code,
                        const char *message)
{
    return answer_error_param(out, op, status, code, message, NULL);
}

static int answer_payment(struct answer *out, uint16_t status, const struct payment *p)
{
    struct jw w;
    jw_init(&w, out->body, out->cap);
    if (api_render_payment(&w, p))
        return -ENOBUFS;
    out->status = status;
    out->len = w.len;
    return 0;
}

/* ---- Idempotency ------------------------------------------------------------------- */

static bool span_eq(struct engine_span a, struct engine_span b)
{
    return a.len == b.len && (a.len == 0 || memcmp(a.ptr, b.ptr, a.len) == 0);
}

static void fingerprint(const struct op *op, struct engine_span fp[IDEM_FP_PARTS])
{
    fp[IDEM_FP_METHOD] = op->fp_method;
    fp[IDEM_FP_PATH] = op->fp_path;
    fp[IDEM_FP_QUERY] = op->fp_query;
    fp[IDEM_FP_BODY] = op->fp_body;
}

/* Looks the key up in scope s. Returns 1 when *out is the final answer (a replay or a
 * key reused for another request), 0 to go on, or a store's -errno. */
static int idem_check(const struct engine_store *st, void *ctx, struct scope s, const struct op *op,
                      struct answer *out)
{
    struct idem_record rec;
    struct engine_span fp[IDEM_FP_PARTS];
    int rc = st->idem_get(ctx, s.merchant, s.len, op->idem_key, op->idem_key_len, &rec);
    if (rc == -ENOENT)
        return 0;
    if (rc)
        return rc;
    fingerprint(op, fp);
    for (int i = 0; i < IDEM_FP_PARTS; i++) {
        if (!span_eq(fp[i], rec.fp[i])) {
            rc = answer_error(out, op, 409, "idempotency_key_reused",
                              "this Idempotency-Key was used with another request");
            return rc ? rc : 1;
        }
    }
    ASSERT(rec.status >= 200 && rec.status <= 599);
    if (rec.body.len > out->cap)
        return -ENOBUFS;
    memcpy(out->body, rec.body.ptr, rec.body.len);
    out->len = rec.body.len;
    out->status = rec.status;
    out->replayed = true;
    return 1;
}

static int idem_store(const struct engine_store *st, void *ctx, struct scope s, const struct op *op,
                      const struct answer *out, int64_t now_ms)
{
    struct idem_record rec;
    ASSERT(s.len > 0 && out->status != 0);
    memset(&rec, 0, sizeof(rec));
    fingerprint(op, rec.fp);
    rec.status = out->status;
    rec.body.ptr = out->body;
    rec.body.len = out->len;
    rec.created_at_ms = now_ms;
    return st->idem_put(ctx, s.merchant, s.len, op->idem_key, op->idem_key_len, &rec);
}

/* A refused operation: its error answer, stored under the key when there is a scope. */
static int refuse_param(const struct engine_store *st, void *ctx, struct scope s,
                        const struct op *op, struct answer *out, int64_t now_ms, uint16_t status,
                        const char *code, const char *message, const char *param)
{
    int rc = answer_error_param(out, op, status, code, message, param);
    if (rc == 0 && s.len > 0)
        rc = idem_store(st, ctx, s, op, out, now_ms);
    return rc;
}

static int refuse(const struct engine_store *st, void *ctx, struct scope s, const struct op *op,
                  struct answer *out, int64_t now_ms, uint16_t status, const char *code,
                  const char *message)
{
    return refuse_param(st, ctx, s, op, out, now_ms, status, code, message, NULL);
}

/* ---- Ledger and events ------------------------------------------------------------- */

/* Whether the postings fit the balances without overflow: 0, 1 (they do not), -errno. */
static int postings_overflow(const struct engine_store *st, void *ctx,
                             const struct ledger_postings *lp)
{
    struct balance b;
    for (size_t i = 0; i < lp->n; i++) {
        const struct posting *p = &lp->p[i];
        ASSERT(i == 0 || memcmp(p->currency, lp->p[0].currency, CURRENCY_BYTES) == 0);
        if (i == 0) {
            int rc = st->balance_get(ctx, p->merchant_id, p->merchant_id_len, p->currency, &b);
            if (rc == -ENOENT) {
                memset(&b, 0, sizeof(b));
                memcpy(b.currency, p->currency, CURRENCY_BYTES + 1);
            } else if (rc) {
                return rc;
            }
        }
        if (ledger_balance_apply(&b, p) == -EOVERFLOW)
            return 1;
    }
    return 0;
}

static int post_all(const struct engine_store *st, void *ctx, const struct ledger_postings *lp,
                    int64_t now_ms)
{
    for (size_t i = 0; i < lp->n; i++) {
        int rc = st->posting_add(ctx, &lp->p[i], now_ms, NULL);
        if (rc)
            return rc;
    }
    return 0;
}

/* The amounts of an event, besides the payment: amount, released, refund. */
struct event_amounts {
    const char *type;
    int64_t amount;
    int64_t released; /* < 0: absent */
    const struct refund *refund;
};

static int emit_event(const struct engine_store *st, void *ctx, const struct op *op,
                      const struct payment *p, const struct event_amounts *ea, int64_t now_ms)
{
    char buf[ENGINE_EVENT_MAX_BYTES], id[EVENT_ID_BYTES + 1];
    struct engine_event ev;
    struct jw w;
    uint64_t seq;
    int rc = st->next_sequence(ctx, ENGINE_SEQ_EVENT, &seq);
    if (rc)
        return rc;
    engine_event_id(id, op->shard, seq);
    jw_init(&w, buf, sizeof(buf));
    jw_obj_begin(&w);
    jw_key(&w, "event_id");
    jw_str(&w, id, EVENT_ID_BYTES);
    jw_key(&w, "type");
    jw_cstr(&w, ea->type);
    jw_key(&w, "occurred_at");
    jw_time(&w, now_ms);
    jw_key(&w, "amount");
    jw_int(&w, ea->amount);
    if (ea->released >= 0) {
        jw_key(&w, "released_amount");
        jw_int(&w, ea->released);
    }
    if (ea->refund != NULL) {
        jw_key(&w, "refund");
        api_render_refund(&w, ea->refund);
    }
    jw_key(&w, "payment");
    api_render_payment(&w, p);
    jw_obj_end(&w);
    ASSERT(jw_finish(&w) == 0); /* ENGINE_EVENT_MAX_BYTES bounds every event */
    ev.seq = seq;
    ev.topic = ea->type;
    ev.key.ptr = p->merchant_id;
    ev.key.len = p->merchant_id_len;
    ev.value.ptr = buf;
    ev.value.len = w.len;
    return st->event_append(ctx, &ev);
}

/* ---- Authorize --------------------------------------------------------------------- */

static int count_balance(void *arg, const struct balance *b)
{
    (void)b;
    (*(size_t *)arg)++;
    return 0;
}

/* 1 when the merchant may not open one more currency, 0 when it may, or -errno. */
static int currency_full(const struct engine_store *st, void *ctx, const struct op *op)
{
    struct balance b;
    size_t n = 0;
    int rc = st->balance_get(ctx, op->merchant_id, op->merchant_id_len, op->currency, &b);
    if (rc != -ENOENT)
        return rc;
    rc = st->balance_list(ctx, op->merchant_id, op->merchant_id_len, count_balance, &n);
    if (rc)
        return rc;
    return n >= MERCHANT_CURRENCIES_MAX;
}

static int apply_authorize(const struct engine_store *st, void *ctx, const struct op *op,
                           int64_t now_ms, struct answer *out)
{
    struct scope s = {op->merchant_id, op->merchant_id_len};
    struct payment p;
    struct ledger_postings lp;
    char id[ID_BYTES + 1];
    uint64_t seq;
    int rc = idem_check(st, ctx, s, op, out);
    if (rc)
        return rc < 0 ? rc : 0;
    rc = currency_full(st, ctx, op);
    if (rc < 0)
        return rc;
    if (rc)
        return refuse_param(st, ctx, s, op, out, now_ms, 400, "invalid_param",
                            "currency: the merchant uses too many currencies", "currency");
    /* Decide on a provisional id; the real one is drawn only once nothing can fail. */
    ids_format(id, IDS_PAYMENT, op->shard, 1);
    payment_authorize(&p, id, op->merchant_id, op->merchant_id_len, op->amount, op->currency,
                      op->has_reference ? op->reference : NULL, op->reference_len, now_ms, &lp);
    rc = postings_overflow(st, ctx, &lp);
    if (rc < 0)
        return rc;
    if (rc)
        return refuse(st, ctx, s, op, out, now_ms, 409, "amount_exceeds_remaining",
                      "the merchant's balance cannot hold this amount");
    if ((rc = st->next_sequence(ctx, ENGINE_SEQ_PAYMENT, &seq)))
        return rc;
    ids_format(id, IDS_PAYMENT, op->shard, seq);
    memcpy(p.id, id, ID_BYTES + 1);
    memcpy(lp.p[0].payment_id, id, ID_BYTES + 1);
    struct event_amounts ea = {"payment.authorized", p.amount, -1, NULL};
    if ((rc = answer_payment(out, 201, &p)) || (rc = st->payment_put(ctx, &p)) ||
        (rc = post_all(st, ctx, &lp, now_ms)) || (rc = emit_event(st, ctx, op, &p, &ea, now_ms)))
        return rc;
    return idem_store(st, ctx, s, op, out, now_ms);
}

/* ---- Capture, void, refund --------------------------------------------------------- */

static bool owned_by(const struct payment *p, const struct op *op)
{
    return !op->authenticated || (p->merchant_id_len == op->merchant_id_len &&
                                  memcmp(p->merchant_id, op->merchant_id, p->merchant_id_len) == 0);
}

/* Runs the transition of op on *before. Returns PAYMENT_OK with after/refund/postings
 * and the event amounts filled, or the refusal. */
static enum payment_err transition(const struct op *op, const struct payment *before,
                                   int64_t now_ms, struct payment *after, struct refund *r,
                                   struct ledger_postings *lp, struct event_amounts *ea)
{
    char rid[ID_BYTES + 1];
    enum payment_err e;
    switch (op->kind) {
    case OP_CAPTURE:
        e = payment_capture(before, op->amount, now_ms, after, lp);
        if (e == PAYMENT_OK)
            *ea = (struct event_amounts){"payment.captured", after->captured_amount,
                                         before->amount - after->captured_amount, NULL};
        return e;
    case OP_VOID:
        e = payment_void(before, now_ms, after, lp);
        if (e == PAYMENT_OK)
            *ea = (struct event_amounts){"payment.voided", before->amount, before->amount, NULL};
        return e;
    case OP_REFUND:
        ids_format(rid, IDS_REFUND, op->shard, 1); /* provisional, see commit_change */
        e = payment_refund(before, op->amount, rid, now_ms, after, r, lp);
        if (e == PAYMENT_OK)
            *ea = (struct event_amounts){"payment.refunded", r->amount, -1, r};
        return e;
    default:
        UNREACHABLE();
        return PAYMENT_ERR_STATE;
    }
}

static int commit_change(const struct engine_store *st, void *ctx, const struct op *op,
                         const struct payment *after, struct refund *r,
                         const struct ledger_postings *lp, const struct event_amounts *ea,
                         int64_t now_ms, struct answer *out)
{
    int rc;
    struct jw w;
    if (op->kind == OP_REFUND) {
        uint64_t seq;
        if ((rc = st->next_sequence(ctx, ENGINE_SEQ_REFUND, &seq)))
            return rc;
        ids_format(r->id, IDS_REFUND, op->shard, seq);
        jw_init(&w, out->body, out->cap);
        if (api_render_refund(&w, r))
            return -ENOBUFS;
        out->status = 201;
        out->len = w.len;
        if ((rc = st->refund_put(ctx, r)))
            return rc;
    } else if ((rc = answer_payment(out, 200, after))) {
        return rc;
    }
    if ((rc = st->payment_put(ctx, after)) || (rc = post_all(st, ctx, lp, now_ms)))
        return rc;
    return emit_event(st, ctx, op, after, ea, now_ms);
}

static int apply_change(const struct engine_store *st, void *ctx, const struct op *op,
                        int64_t now_ms, struct answer *out)
{
    struct payment before, after;
    struct refund r;
    struct ledger_postings lp;
    struct event_amounts ea;
    struct scope s = {op->merchant_id, op->merchant_id_len};
    int rc = st->payment_get(ctx, op->payment_id, ID_BYTES, &before);
    if (rc && rc != -ENOENT)
        return rc;
    bool found = rc == 0;
    if (found)
        payment_check(&before);
    if (!op->authenticated)
        s = found ? (struct scope){before.merchant_id, before.merchant_id_len}
                  : (struct scope){NULL, 0};
    if (s.len > 0 && (rc = idem_check(st, ctx, s, op, out)))
        return rc < 0 ? rc : 0;
    if (!found || !owned_by(&before, op))
        return refuse(st, ctx, s, op, out, now_ms, 404, "not_found", "no such payment");
    enum payment_err e = transition(op, &before, now_ms, &after, &r, &lp, &ea);
    if (e == PAYMENT_ERR_STATE)
        return refuse(st, ctx, s, op, out, now_ms, 409, "invalid_state",
                      payment_state_message(before.status));
    if (e == PAYMENT_ERR_AMOUNT)
        return refuse(st, ctx, s, op, out, now_ms, 409, "amount_exceeds_remaining",
                      op->kind == OP_CAPTURE ? "amount exceeds the authorized amount"
                                             : "amount exceeds what is left to refund");
    rc = postings_overflow(st, ctx, &lp);
    if (rc < 0)
        return rc;
    if (rc)
        return refuse(st, ctx, s, op, out, now_ms, 409, "amount_exceeds_remaining",
                      "the merchant's balance cannot hold this amount");
    if ((rc = commit_change(st, ctx, op, &after, &r, &lp, &ea, now_ms, out)))
        return rc;
    return idem_store(st, ctx, s, op, out, now_ms);
}

/* ---- Reads ------------------------------------------------------------------------- */

static int apply_get(const struct engine_store *st, void *ctx, const struct op *op,
                     struct answer *out)
{
    struct payment p;
    int rc = st->payment_get(ctx, op->payment_id, ID_BYTES, &p);
    if (rc && rc != -ENOENT)
        return rc;
    if (rc == -ENOENT || !owned_by(&p, op))
        return answer_error(out, op, 404, "not_found", "no such payment");
    payment_check(&p);
    return answer_payment(out, 200, &p);
}

static int render_balance(void *arg, const struct balance *b)
{
    return api_render_balance(arg, b) ? -ENOBUFS : 0;
}

struct page_state {
    struct jw *w;
    uint64_t last_seq;
    uint32_t count;
};

static int render_entry(void *arg, const struct ledger_entry *e)
{
    struct page_state *ps = arg;
    ASSERT(e->seq > ps->last_seq);
    ps->last_seq = e->seq;
    ps->count++;
    return api_render_ledger_entry(ps->w, e) ? -ENOBUFS : 0;
}

static int apply_read_list(const struct engine_store *st, void *ctx, const struct op *op,
                           struct answer *out)
{
    struct jw w;
    int rc;
    jw_init(&w, out->body, out->cap);
    if (op->kind == OP_BALANCES) {
        api_render_balances_begin(&w, op->merchant_id, op->merchant_id_len);
        rc = st->balance_list(ctx, op->merchant_id, op->merchant_id_len, render_balance, &w);
        if (rc)
            return rc;
        api_render_balances_end(&w);
    } else {
        struct page_state ps = {&w, op->after, 0};
        bool more = false;
        api_render_ledger_begin(&w, op->merchant_id, op->merchant_id_len);
        rc = st->ledger_page(ctx, op->merchant_id, op->merchant_id_len, op->after, op->limit,
                             render_entry, &ps, &more);
        if (rc)
            return rc;
        ASSERT(ps.count <= op->limit && (!more || ps.count == op->limit));
        api_render_ledger_end(&w, more, ps.last_seq);
    }
    if (jw_finish(&w))
        return -ENOBUFS;
    out->status = 200;
    out->len = w.len;
    return 0;
}

int engine_apply(const struct engine_store *st, void *ctx, const struct op *op, int64_t now_ms,
                 struct answer *out)
{
    ASSERT(st != NULL && op != NULL && out != NULL && out->body != NULL);
    ASSERT(now_ms >= 0 && now_ms <= TIME_MS_MAX);
    ASSERT(op->shard < SHARDS_MAX);
    out->status = 0;
    out->replayed = false;
    out->len = 0;
    if (out->cap < ENGINE_ANSWER_MAX_BYTES)
        return -ENOBUFS;
    switch (op->kind) {
    case OP_AUTHORIZE:
        return apply_authorize(st, ctx, op, now_ms, out);
    case OP_CAPTURE:
    case OP_VOID:
    case OP_REFUND:
        return apply_change(st, ctx, op, now_ms, out);
    case OP_GET_PAYMENT:
        return apply_get(st, ctx, op, out);
    case OP_BALANCES:
    case OP_LEDGER:
        return apply_read_list(st, ctx, op, out);
    }
    UNREACHABLE();
    return -EINVAL;
}
