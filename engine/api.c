/*
 * The API codec (engine/api.h): routing, request validation and the JSON renderers.
 * api_decode either fills the whole op or returns one error; it never reads past the
 * spans it is given and copies every field it keeps except the fingerprint slices.
 */
#include <errno.h>
#include <string.h>

#include "engine/api.h"
#include "engine/assert.h"
#include "engine/ids.h"

/* "No such route" for route_of(); every op_kind is > 0. */
#define OP_NONE 0

#define PATH_SEGMENTS_MAX 4 /* after "/v1": payments, {id}, capture */

struct segments {
    struct engine_span s[PATH_SEGMENTS_MAX];
    int n;
};

static bool span_is(struct engine_span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.ptr != NULL && s.len == n && memcmp(s.ptr, lit, n) == 0;
}

/* Copies src (len bytes) into dst (cap bytes), cut to fit, NUL-terminated. */
static void copy_cut(char *dst, size_t cap, const char *src, size_t len)
{
    ASSERT(cap > 0);
    if (len > cap - 1)
        len = cap - 1;
    if (len > 0)
        memcpy(dst, src, len);
    dst[len] = '\0';
}

void api_error_set(struct api_error *err, uint16_t status, const char *code, const char *message,
                   const char *param)
{
    memset(err, 0, sizeof(*err));
    err->status = status;
    err->code = code;
    copy_cut(err->message, sizeof(err->message), message, strlen(message));
    err->has_param = param != NULL;
    if (param != NULL)
        copy_cut(err->param, sizeof(err->param), param, strlen(param));
}

/* 400 invalid_param with message "<param>: <text>" (or just text with no param). */
static int invalid_param(struct api_error *err, const char *param, const char *text)
{
    char msg[API_MESSAGE_MAX_BYTES + 1];
    size_t pl = strlen(param), tl = strlen(text);
    size_t n = 0;
    if (pl > 0) {
        copy_cut(msg, sizeof(msg), param, pl);
        n = strlen(msg);
        copy_cut(msg + n, sizeof(msg) - n, ": ", 2);
        n = strlen(msg);
    }
    copy_cut(msg + n, sizeof(msg) - n, text, tl);
    api_error_set(err, 400, "invalid_param", msg, param);
    return -EINVAL;
}

static int fail(struct api_error *err, uint16_t status, const char *code, const char *message)
{
    api_error_set(err, status, code, message, NULL);
    return -EINVAL;
}

/* Splits "/v1/a/b/c" into a, b, c; false for anything not under /v1/ with 1..4 non-empty
 * segments. */
static bool split_path(struct engine_span path, struct segments *seg)
{
    seg->n = 0;
    if (path.ptr == NULL || path.len < 4 || memcmp(path.ptr, "/v1/", 4) != 0)
        return false;
    size_t i = 4, start = 4;
    for (;; i++) {
        if (i == path.len || path.ptr[i] == '/') {
            if (i == start || seg->n == PATH_SEGMENTS_MAX)
                return false;
            seg->s[seg->n].ptr = path.ptr + start;
            seg->s[seg->n].len = i - start;
            seg->n++;
            start = i + 1;
            if (i == path.len)
                return true;
        }
    }
}

static enum op_kind route_of(const struct segments *g)
{
    if (g->n >= 2 && span_is(g->s[0], "payments")) {
        if (g->n == 2)
            return span_is(g->s[1], "authorize") ? OP_AUTHORIZE : OP_GET_PAYMENT;
        if (g->n == 3 && span_is(g->s[2], "capture"))
            return OP_CAPTURE;
        if (g->n == 3 && span_is(g->s[2], "void"))
            return OP_VOID;
        if (g->n == 3 && span_is(g->s[2], "refund"))
            return OP_REFUND;
    }
    if (g->n == 3 && span_is(g->s[0], "merchants")) {
        if (span_is(g->s[2], "balances"))
            return OP_BALANCES;
        if (span_is(g->s[2], "ledger"))
            return OP_LEDGER;
    }
    return OP_NONE;
}

static bool merchant_ok(const char *m, size_t len)
{
    if (len < 1 || len > MERCHANT_ID_MAX_BYTES)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = m[i];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool idem_key_ok(struct engine_span k)
{
    if (k.len < 1 || k.len > IDEMPOTENCY_KEY_MAX_BYTES)
        return false;
    for (size_t i = 0; i < k.len; i++)
        if (k.ptr[i] < 0x20 || k.ptr[i] > 0x7e)
            return false;
    return true;
}

static bool reference_ok(const char *r, size_t len)
{
    size_t chars;
    if (!json_utf8_valid(r, len, &chars) || chars > REFERENCE_MAX_CHARS)
        return false;
    for (size_t i = 0; i < len; i++)
        if ((unsigned char)r[i] < 0x20 || r[i] == 0x7f)
            return false;
    return true;
}

/* Maps a json_error to the API error. */
static int json_fail(const struct json_error *je, struct api_error *err)
{
    if (je->kind == JSON_ERR_SYNTAX)
        return fail(err, 400, "invalid_json", je->message);
    ASSERT(je->kind == JSON_ERR_PARAM);
    return invalid_param(err, je->param, je->message);
}

static int decode_authorize(struct engine_span body, struct op *op, struct api_error *err)
{
    char currency[CURRENCY_BYTES + 2];
    struct json_field f[] = {
        {.name = "merchant_id",
         .type = JSON_FIELD_STRING,
         .required = true,
         .buf = op->merchant_id,
         .cap = sizeof(op->merchant_id)},
        {.name = "amount", .type = JSON_FIELD_AMOUNT, .required = true},
        {.name = "currency",
         .type = JSON_FIELD_STRING,
         .required = true,
         .buf = currency,
         .cap = sizeof(currency)},
        {.name = "reference",
         .type = JSON_FIELD_STRING,
         .buf = op->reference,
         .cap = sizeof(op->reference)},
    };
    struct json_error je;
    if (json_parse_object(body.ptr, body.len, f, ARRAY_LEN(f), &je))
        return json_fail(&je, err);
    if (!merchant_ok(op->merchant_id, f[0].len))
        return invalid_param(err, "merchant_id", "must be 1-64 characters of [A-Za-z0-9_-]");
    op->merchant_id_len = (uint8_t)f[0].len;
    op->amount = f[1].amount;
    if (f[2].len != CURRENCY_BYTES || currency[0] < 'A' || currency[0] > 'Z' || currency[1] < 'A' ||
        currency[1] > 'Z' || currency[2] < 'A' || currency[2] > 'Z')
        return invalid_param(err, "currency", "must be three upper-case letters");
    memcpy(op->currency, currency, CURRENCY_BYTES + 1);
    op->has_reference = f[3].present;
    if (f[3].present && !reference_ok(op->reference, f[3].len))
        return invalid_param(err, "reference",
                             "must be at most 128 characters without control characters");
    op->reference_len = (uint16_t)f[3].len;
    return 0;
}

/* capture and refund: {"amount"?}; void: {}. */
static int decode_amount_body(struct engine_span body, bool with_amount, struct op *op,
                              struct api_error *err)
{
    struct json_field f[] = {{.name = "amount", .type = JSON_FIELD_AMOUNT}};
    struct json_error je;
    if (json_parse_object(body.ptr, body.len, f, with_amount ? 1 : 0, &je))
        return json_fail(&je, err);
    op->amount = with_amount && f[0].present ? f[0].amount : 0;
    return 0;
}

/* Parses a decimal without sign or leading zeros, at most max. */
static bool parse_uint(const char *s, size_t n, uint64_t max, uint64_t *out)
{
    if (n == 0 || n > 19 || (n > 1 && s[0] == '0'))
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (uint64_t)(s[i] - '0');
    }
    if (v > max)
        return false;
    *out = v;
    return true;
}

static int ledger_param(struct engine_span name, struct engine_span val, bool *seen, struct op *op,
                        struct api_error *err)
{
    bool is_after = span_is(name, "after"), is_limit = span_is(name, "limit");
    if (!is_after && !is_limit) {
        char p[API_PARAM_MAX_BYTES + 1];
        bool printable = name.len > 0;
        for (size_t i = 0; i < name.len; i++)
            printable = printable && name.ptr[i] > 0x20 && name.ptr[i] < 0x7f;
        if (printable)
            copy_cut(p, sizeof(p), name.ptr, name.len);
        else
            copy_cut(p, sizeof(p), "query", 5);
        return invalid_param(err, p, "unknown query parameter");
    }
    const char *pn = is_after ? "after" : "limit";
    if (seen[is_after])
        return invalid_param(err, pn, "given twice");
    seen[is_after] = true;
    if (val.len == 0)
        return 0; /* "after=", "limit=" or a bare name: the default (SPEC §2) */
    uint64_t v;
    if (is_after) {
        if (!parse_uint(val.ptr, val.len, INT64_MAX, &v))
            return invalid_param(err, pn, "must be an integer from 0 to 9223372036854775807");
        op->after = v;
    } else {
        if (!parse_uint(val.ptr, val.len, LEDGER_PAGE_MAX, &v) || v < 1)
            return invalid_param(err, pn, "must be an integer from 1 to 1000");
        op->limit = (uint32_t)v;
    }
    return 0;
}

static int decode_ledger_query(struct engine_span q, struct op *op, struct api_error *err)
{
    bool seen[2] = {false, false};
    op->after = 0;
    op->limit = LEDGER_PAGE_DEFAULT;
    if (q.ptr == NULL || q.len == 0)
        return 0;
    size_t start = 0;
    for (size_t i = 0; i <= q.len; i++) {
        if (i < q.len && q.ptr[i] != '&')
            continue;
        struct engine_span name = {q.ptr + start, i - start}, val = {NULL, 0};
        const char *eq = memchr(name.ptr, '=', name.len);
        if (eq != NULL) {
            val.ptr = eq + 1;
            val.len = (size_t)(name.ptr + name.len - val.ptr);
            name.len = (size_t)(eq - name.ptr);
        }
        int rc = ledger_param(name, val, seen, op, err);
        if (rc)
            return rc;
        start = i + 1;
    }
    return 0;
}

/* Steps 1-3 of api.h: route, method, idempotency key. */
static int decode_head(const struct api_request *req, enum op_kind *r, struct segments *g,
                       struct op *op, struct api_error *err)
{
    static const char *const allow[] = {
        [OP_AUTHORIZE] = "POST",  [OP_CAPTURE] = "POST", [OP_VOID] = "POST",  [OP_REFUND] = "POST",
        [OP_GET_PAYMENT] = "GET", [OP_BALANCES] = "GET", [OP_LEDGER] = "GET",
    };
    *r = split_path(req->path, g) ? route_of(g) : OP_NONE;
    if (*r == OP_NONE)
        return fail(err, 404, "not_found", "no such resource");
    if (!span_is(req->method, allow[*r])) {
        fail(err, 405, "method_not_allowed", "method not allowed");
        err->allow = allow[*r];
        return -EINVAL;
    }
    if (allow[*r][0] != 'P')
        return 0;
    if (req->query.ptr != NULL && req->query.len > 0)
        return invalid_param(err, "query", "POST routes take no query string");
    if (req->idem_key.ptr == NULL)
        return fail(err, 400, "missing_idempotency_key",
                    "POST requests need an Idempotency-Key header");
    if (req->idem_key_count > 1)
        return invalid_param(err, "Idempotency-Key", "must be sent once");
    if (!idem_key_ok(req->idem_key))
        return invalid_param(err, "Idempotency-Key", "must be 1-255 printable ASCII characters");
    memcpy(op->idem_key, req->idem_key.ptr, req->idem_key.len);
    op->idem_key[req->idem_key.len] = '\0';
    op->idem_key_len = (uint16_t)req->idem_key.len;
    op->fp_method = req->method;
    op->fp_path = req->path;
    op->fp_query = req->query.ptr ? req->query : (struct engine_span){"", 0};
    op->fp_body = req->body.ptr ? req->body : (struct engine_span){"", 0};
    return 0;
}

/* Routes on a payment id: the id's shard, and the authenticated merchant if any. */
static int decode_payment_route(const struct api_request *req, struct engine_span id,
                                uint32_t nshards, struct op *op, struct api_error *err)
{
    uint32_t shard;
    if (ids_parse(id.ptr, id.len, IDS_PAYMENT, &shard, NULL) != 0 || shard >= nshards)
        return fail(err, 404, "not_found", "no such payment");
    memcpy(op->payment_id, id.ptr, ID_BYTES);
    op->payment_id[ID_BYTES] = '\0';
    op->shard = shard;
    if (req->auth_merchant.ptr != NULL) {
        memcpy(op->merchant_id, req->auth_merchant.ptr, req->auth_merchant.len);
        op->merchant_id[req->auth_merchant.len] = '\0';
        op->merchant_id_len = (uint8_t)req->auth_merchant.len;
        op->authenticated = true;
    }
    return 0;
}

/* The merchant of a body or path must be the authenticated one. */
static int check_owner(const struct api_request *req, struct op *op, uint32_t nshards,
                       struct api_error *err)
{
    struct engine_span a = req->auth_merchant;
    if (a.ptr != NULL) {
        if (a.len != op->merchant_id_len || memcmp(a.ptr, op->merchant_id, a.len) != 0)
            return fail(err, 403, "forbidden", "the key may act only for its own merchant");
        op->authenticated = true;
    }
    op->shard = engine_shard_of_merchant(op->merchant_id, op->merchant_id_len, nshards);
    return 0;
}

static int decode_merchant_path(struct engine_span m, struct op *op, struct api_error *err)
{
    if (!merchant_ok(m.ptr, m.len))
        return invalid_param(err, "merchant_id", "must be 1-64 characters of [A-Za-z0-9_-]");
    memcpy(op->merchant_id, m.ptr, m.len);
    op->merchant_id[m.len] = '\0';
    op->merchant_id_len = (uint8_t)m.len;
    return 0;
}

static int decode_body(const struct api_request *req, enum op_kind r, struct op *op,
                       struct api_error *err)
{
    struct engine_span body = req->body.ptr ? req->body : (struct engine_span){"", 0};
    switch (r) {
    case OP_AUTHORIZE:
        return decode_authorize(body, op, err);
    case OP_CAPTURE:
    case OP_REFUND:
        return decode_amount_body(body, true, op, err);
    case OP_VOID:
        return decode_amount_body(body, false, op, err);
    case OP_LEDGER:
        return decode_ledger_query(req->query, op, err);
    default:
        return 0;
    }
}

int api_decode(const struct api_request *req, uint32_t nshards, struct op *op,
               struct api_error *err)
{
    ASSERT(nshards >= 1 && nshards <= SHARDS_MAX);
    ASSERT(req->auth_merchant.ptr == NULL ||
           merchant_ok(req->auth_merchant.ptr, req->auth_merchant.len));
    memset(op, 0, sizeof(*op));
    memset(err, 0, sizeof(*err));
    if (req->request_id.ptr != NULL) {
        copy_cut(op->request_id, sizeof(op->request_id), req->request_id.ptr, req->request_id.len);
        op->request_id_len = (uint8_t)strlen(op->request_id);
    }
    enum op_kind r;
    struct segments g;
    int rc = decode_head(req, &r, &g, op, err);
    if (rc)
        return rc;
    op->kind = r;
    if (r == OP_BALANCES || r == OP_LEDGER)
        rc = decode_merchant_path(g.s[1], op, err);
    else if (r != OP_AUTHORIZE)
        rc = decode_payment_route(req, g.s[1], nshards, op, err);
    if (rc)
        return rc;
    rc = decode_body(req, r, op, err);
    if (rc)
        return rc;
    if (r == OP_AUTHORIZE || r == OP_BALANCES || r == OP_LEDGER)
        return check_owner(req, op, nshards, err);
    return 0;
}

/* ---- Renderers --------------------------------------------------------------------- */

static int done(struct jw *w)
{
    return w->overflow ? -ENOBUFS : 0;
}

int api_render_payment(struct jw *w, const struct payment *p)
{
    jw_obj_begin(w);
    jw_key(w, "id");
    jw_str(w, p->id, ID_BYTES);
    jw_key(w, "merchant_id");
    jw_str(w, p->merchant_id, p->merchant_id_len);
    jw_key(w, "amount");
    jw_int(w, p->amount);
    jw_key(w, "currency");
    jw_str(w, p->currency, CURRENCY_BYTES);
    jw_key(w, "status");
    jw_cstr(w, payment_status_name(p->status));
    jw_key(w, "captured_amount");
    jw_int(w, p->captured_amount);
    jw_key(w, "refunded_amount");
    jw_int(w, p->refunded_amount);
    jw_key(w, "reference");
    if (p->has_reference)
        jw_str(w, p->reference, p->reference_len);
    else
        jw_null(w);
    jw_key(w, "created_at");
    jw_time(w, p->created_at_ms);
    jw_key(w, "updated_at");
    jw_time(w, p->updated_at_ms);
    jw_obj_end(w);
    return done(w);
}

int api_render_refund(struct jw *w, const struct refund *r)
{
    jw_obj_begin(w);
    jw_key(w, "id");
    jw_str(w, r->id, ID_BYTES);
    jw_key(w, "payment_id");
    jw_str(w, r->payment_id, ID_BYTES);
    jw_key(w, "amount");
    jw_int(w, r->amount);
    jw_key(w, "currency");
    jw_str(w, r->currency, CURRENCY_BYTES);
    jw_key(w, "payment_status");
    jw_cstr(w, payment_status_name(r->payment_status));
    jw_key(w, "created_at");
    jw_time(w, r->created_at_ms);
    jw_obj_end(w);
    return done(w);
}

int api_render_error(struct jw *w, const struct api_error *e, const char *request_id,
                     size_t request_id_len)
{
    ASSERT(e->code != NULL && e->status >= 400 && e->status <= 599);
    jw_obj_begin(w);
    jw_key(w, "error");
    jw_obj_begin(w);
    jw_key(w, "code");
    jw_cstr(w, e->code);
    jw_key(w, "message");
    jw_cstr(w, e->message);
    jw_key(w, "param");
    if (e->has_param)
        jw_cstr(w, e->param);
    else
        jw_null(w);
    jw_key(w, "request_id");
    jw_str(w, request_id ? request_id : "", request_id ? request_id_len : 0);
    jw_obj_end(w);
    jw_obj_end(w);
    return done(w);
}

int api_render_balances_begin(struct jw *w, const char *merchant, size_t merchant_len)
{
    jw_obj_begin(w);
    jw_key(w, "merchant_id");
    jw_str(w, merchant, merchant_len);
    jw_key(w, "balances");
    jw_arr_begin(w);
    return done(w);
}

int api_render_balance(struct jw *w, const struct balance *b)
{
    jw_obj_begin(w);
    jw_key(w, "currency");
    jw_str(w, b->currency, CURRENCY_BYTES);
    jw_key(w, "pending");
    jw_int(w, b->pending);
    jw_key(w, "available");
    jw_int(w, b->available);
    jw_obj_end(w);
    return done(w);
}

int api_render_balances_end(struct jw *w)
{
    jw_arr_end(w);
    jw_obj_end(w);
    return done(w);
}

int api_render_ledger_begin(struct jw *w, const char *merchant, size_t merchant_len)
{
    jw_obj_begin(w);
    jw_key(w, "merchant_id");
    jw_str(w, merchant, merchant_len);
    jw_key(w, "entries");
    jw_arr_begin(w);
    return done(w);
}

int api_render_ledger_entry(struct jw *w, const struct ledger_entry *e)
{
    jw_obj_begin(w);
    jw_key(w, "seq");
    jw_uint(w, e->seq);
    jw_key(w, "payment_id");
    jw_str(w, e->payment_id, strlen(e->payment_id));
    jw_key(w, "debit");
    jw_cstr(w, ledger_account_name(e->debit));
    jw_key(w, "credit");
    jw_cstr(w, ledger_account_name(e->credit));
    jw_key(w, "amount");
    jw_int(w, e->amount);
    jw_key(w, "currency");
    jw_str(w, e->currency, strlen(e->currency));
    jw_key(w, "created_at");
    jw_time(w, e->created_at_ms);
    jw_obj_end(w);
    return done(w);
}

int api_render_ledger_end(struct jw *w, bool has_next_after, uint64_t next_after)
{
    jw_arr_end(w);
    jw_key(w, "next_after");
    if (has_next_after)
        jw_uint(w, next_after);
    else
        jw_null(w);
    jw_obj_end(w);
    return done(w);
}
