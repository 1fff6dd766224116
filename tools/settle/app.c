/*
 * The reactor handler of `ringpay settle` (see app.h): routing, the checks every route
 * shares (who may call, the signing gate, methods, the Idempotency-Key of POSTs, strict
 * query strings), and the answers. Storage is store/settle_store.h; the rules and the
 * JSON of settlements and reconciliation files are engine/settle.h.
 *
 * Decisions the SPEC leaves open, also in docs/backoffice.md:
 *  - query strings are strict, like the ledger's: an unknown parameter, one given
 *    twice or a bad value is 400 invalid_param naming it; an empty value is the default;
 *  - ?format=csv answers the same page as CSV (text/csv), with the next page's cursor
 *    in the X-Next-After header (absent on the last page);
 *  - POST /v1/settlements/close answers 200 {"date","status":"closed","batches_closed"};
 *  - idempotency (SPEC §2 on settle's POSTs, store/settle_store.h "Idempotency"): after
 *    the gate and the request's shape (method, query, one valid key) the key is looked
 *    up: the same fingerprint (SHA-256 of method, path and the body's SHA-256) replays
 *    the stored status and body with Idempotent-Replayed: true; another one is 409
 *    idempotency_key_reused; else the route runs and its answer is stored in the
 *    transaction that completes its change. A streamed upload is looked up at its last
 *    byte, after its signature, before it is classified. Keys are global (admin keys
 *    have no merchant). Stored, as the engine does (engine/apply.h): the answers the
 *    operation gave (2xx; 404 of a file or dead letter; 409 invalid_state of a failed
 *    upload's rematch or a dead letter replayed before). Not stored: validation errors
 *    (400, 413, 415), 401/403/405, 409 idempotency_key_reused, the transient 409 of a
 *    file still being uploaded, and 5xx: the client may retry those with the same key;
 *  - dead letters are listed and replayed through two admin routes while settle runs
 *    (GET /v1/dead-letters, POST /v1/dead-letters/{id}/replay; a value longer than an
 *    event is shown by its size only, the dlq commands print it whole).
 */
#include "tools/settle/app.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/api.h"
#include "engine/assert.h"
#include "engine/clock.h"
#include "engine/json.h"
#include "engine/limits.h"
#include "engine/sign.h"
#include "net/log.h"
#include "net/metrics.h"
#include "tools/serve/gate.h"
#include "tools/settle/consumer.h"
#include "tools/settle/dlq.h"
#include "tools/settle/upload.h"

const char *const settle_route_names[SR_COUNT] = {
    [SR_HEALTHZ] = "/healthz",
    [SR_READYZ] = "/readyz",
    [SR_METRICS] = "/metrics",
    [SR_LIST] = "/v1/settlements",
    [SR_GET] = "/v1/settlements/{id}",
    [SR_CLOSE] = "/v1/settlements/close",
    [SR_UPLOAD] = "/v1/reconciliation/files",
    [SR_FILE] = "/v1/reconciliation/files/{id}",
    [SR_REMATCH] = "/v1/reconciliation/files/{id}/rematch",
    [SR_DLQ_LIST] = "/v1/dead-letters",
    [SR_DLQ_REPLAY] = "/v1/dead-letters/{id}/replay",
    [SR_OTHER] = "other",
};

/* The largest answer body: a page of 1000 settlements or items (~400 bytes each). */
#define ANSWER_MAX_BYTES (CONN_ANSWER_MAX_BYTES - CONN_ANSWER_HEAD_MAX_BYTES)

bool settle_app_live(const struct settle_app *app)
{
    return __atomic_load_n(&app->live, __ATOMIC_ACQUIRE) != 0;
}

int64_t settle_app_now_ms(const struct settle_app *app)
{
    return clock_wall_ms() + app->clock_offset_ms;
}

/* ---- answers -------------------------------------------------------------------- */

static void reply_body(struct reactor *r, struct reactor_ref ref, int status, unsigned route,
                       const char *type, const char *headers, const char *body, size_t len)
{
    struct reactor_response resp = {
        .status = status,
        .route = route,
        .content_type = type,
        .headers = headers,
        .body = body,
        .body_len = len,
    };
    reactor_reply(r, ref, &resp);
}

/* The SPEC error body with a param (NULL: null). */
static void reply_error(struct reactor *r, struct reactor_ref ref, const char *request_id,
                        int status, unsigned route, const char *code, const char *message,
                        const char *param, const char *headers)
{
    struct api_error e;
    api_error_set(&e, (uint16_t)status, code, message, param);
    char body[API_ERROR_BODY_MAX_BYTES];
    struct jw w;
    jw_init(&w, body, sizeof(body));
    api_render_error(&w, &e, request_id, strlen(request_id));
    ASSERT(jw_finish(&w) == 0);
    reply_body(r, ref, status, route, "application/json", headers, body, w.len);
}

static void rq_error(struct reactor *r, const struct reactor_request *rq, int status,
                     unsigned route, const char *code, const char *message, const char *param)
{
    reply_error(r, rq->ref, rq->request_id, status, route, code, message, param,
                status == 503 ? "Retry-After: 1\r\n" : NULL);
}

/* A store error as an answer: 503 while it may pass, 500 when the store failed. */
static void store_error(struct settle_app *app, struct reactor *r, struct reactor_ref ref,
                        const char *request_id, unsigned route, int err)
{
    if (settle_store_failed(app->store) != 0) {
        if (!app->store_failed_logged)
            log_write_str(LOG_ERROR, "the store failed; restart settle", "error",
                          strerror(-settle_store_failed(app->store)), NULL);
        app->store_failed_logged = true;
        reply_error(r, ref, request_id, 500, route, "internal_error",
                    "the store failed; settle must be restarted", NULL, NULL);
        return;
    }
    reply_error(r, ref, request_id, 503, route, "overloaded",
                err == -ENOSPC ? "the store is full" : "the store cannot answer now", NULL,
                "Retry-After: 1\r\n");
}

/* ---- idempotency -------------------------------------------------------------------- */

/* A POST's key and fingerprint. */
struct idem_req {
    const char *key;
    size_t key_len;
    uint8_t fp[SETTLE_IDEM_FP_BYTES];
};

static const char idem_replayed[] = "Idempotent-Replayed: true\r\n";

static unsigned hex_nibble(char c)
{
    return c <= '9' ? (unsigned)(c - '0') : (unsigned)(c - 'a' + 10);
}

/* SHA-256 of METHOD "\n" path "\n" hex(SHA-256(body)): the request, byte for byte, in
 * 32 bytes (a POST has no query string). */
static void idem_fingerprint(const char *path, size_t path_len, const char body_hex[SIGN_HEX_BYTES],
                             uint8_t fp[SETTLE_IDEM_FP_BYTES])
{
    struct sign_sha256 h;
    char hex[SIGN_HEX_BYTES];
    sign_sha256_init(&h);
    sign_sha256_update(&h, "POST\n", 5);
    sign_sha256_update(&h, path, path_len);
    sign_sha256_update(&h, "\n", 1);
    sign_sha256_update(&h, body_hex, SIGN_HEX_BYTES);
    sign_sha256_final_hex(&h, hex);
    for (size_t i = 0; i < SETTLE_IDEM_FP_BYTES; i++)
        fp[i] = (uint8_t)(hex_nibble(hex[2 * i]) << 4 | hex_nibble(hex[2 * i + 1]));
}

/*
 * The lookup before a POST does its work: false when answered (a replay, 409
 * idempotency_key_reused, or a store error), true when the key is new and the route
 * must run and store its answer.
 */
static bool idem_check(struct settle_app *app, struct reactor *r, struct reactor_ref ref,
                       const char *request_id, unsigned route, const struct idem_req *ir)
{
    struct settle_idem_record *rec = malloc(sizeof(*rec));
    int rc = rec ? settle_store_idem_get(app->store, ir->key, ir->key_len, rec) : -ENOMEM;
    if (rc == -ENOENT) {
        free(rec);
        return true;
    }
    if (rc != 0)
        store_error(app, r, ref, request_id, route, rc);
    else if (memcmp(rec->fp, ir->fp, SETTLE_IDEM_FP_BYTES) == 0)
        reply_body(r, ref, rec->status, route, "application/json", idem_replayed, rec->body,
                   rec->body_len);
    else
        reply_error(r, ref, request_id, 409, route, "idempotency_key_reused",
                    "this Idempotency-Key was used for another request", NULL, NULL);
    free(rec);
    return false;
}

/* The key and fingerprint of a POST whose body arrived whole. */
static void idem_of(const struct reactor_request *rq, struct idem_req *ir)
{
    const struct http_header *h = http_header_find(rq->http, rq->buf, "idempotency-key");
    ASSERT(h != NULL); /* request_shape_ok */
    ir->key = rq->buf + h->value.off;
    ir->key_len = h->value.len;
    char hex[SIGN_HEX_BYTES];
    sign_sha256_hex(rq->buf + rq->http->body.off, rq->http->body.len, hex);
    idem_fingerprint(rq->buf + rq->http->path.off, rq->http->path.len, hex, ir->fp);
}

/* An answer that changed nothing but is stored (a 404 or a final 409): stored first,
 * answered once it is on disk. */
static void reply_error_stored(struct settle_app *app, struct reactor *r,
                               const struct reactor_request *rq, const struct idem_req *ir,
                               int status, unsigned route, const char *code, const char *message)
{
    struct api_error e;
    api_error_set(&e, (uint16_t)status, code, message, NULL);
    char body[API_ERROR_BODY_MAX_BYTES];
    struct jw w;
    jw_init(&w, body, sizeof(body));
    api_render_error(&w, &e, rq->request_id, strlen(rq->request_id));
    ASSERT(jw_finish(&w) == 0);
    int rc = settle_store_idem_put(app->store, ir->key, ir->key_len, ir->fp, (uint16_t)status, body,
                                   w.len, settle_app_now_ms(app));
    if (rc != 0)
        store_error(app, r, rq->ref, rq->request_id, route, rc);
    else
        reply_body(r, rq->ref, status, route, "application/json", NULL, body, w.len);
}

/* A JSON or CSV answer built in a buffer of the largest page. */
struct out {
    char *buf;
    struct jw w;
};

static bool out_init(struct out *o)
{
    o->buf = malloc(ANSWER_MAX_BYTES);
    if (o->buf)
        jw_init(&o->w, o->buf, ANSWER_MAX_BYTES);
    return o->buf != NULL;
}

/* ---- request pieces ---------------------------------------------------------------- */

struct span {
    const char *p;
    size_t n;
};

static bool span_is(struct span s, const char *lit)
{
    size_t n = strlen(lit);
    return s.n == n && memcmp(s.p, lit, n) == 0;
}

static struct span path_of(const struct reactor_request *rq)
{
    return (struct span){rq->buf + rq->http->path.off, rq->http->path.len};
}

static struct span query_of(const struct reactor_request *rq)
{
    return (struct span){rq->buf + rq->http->query.off, rq->http->query.len};
}

/* Splits "/v1/reconciliation/files/{id}[/rematch]": the id, and whether rematch. */
static bool file_path(struct span p, struct span *id, bool *rematch)
{
    static const char pre[] = "/v1/reconciliation/files/";
    size_t n = sizeof(pre) - 1;
    if (p.n <= n || memcmp(p.p, pre, n) != 0)
        return false;
    const char *s = p.p + n, *end = p.p + p.n;
    const char *slash = memchr(s, '/', (size_t)(end - s));
    *id = (struct span){s, (size_t)((slash ? slash : end) - s)};
    *rematch = false;
    if (slash == NULL)
        return id->n > 0;
    *rematch = true;
    return id->n > 0 && span_is((struct span){slash, (size_t)(end - slash)}, "/rematch");
}

static enum settle_route route_of(const struct reactor_request *rq, struct span *id)
{
    struct span p = path_of(rq);
    bool rematch;
    if (span_is(p, "/v1/settlements"))
        return SR_LIST;
    if (span_is(p, "/v1/settlements/close"))
        return SR_CLOSE;
    if (p.n > 16 && memcmp(p.p, "/v1/settlements/", 16) == 0 &&
        memchr(p.p + 16, '/', p.n - 16) == NULL) {
        *id = (struct span){p.p + 16, p.n - 16};
        return SR_GET;
    }
    if (span_is(p, "/v1/reconciliation/files"))
        return SR_UPLOAD;
    if (span_is(p, "/v1/dead-letters"))
        return SR_DLQ_LIST;
    static const char dl[] = "/v1/dead-letters/", rp[] = "/replay";
    size_t dn = sizeof(dl) - 1, rn = sizeof(rp) - 1;
    if (p.n > dn + rn && memcmp(p.p, dl, dn) == 0 && memcmp(p.p + p.n - rn, rp, rn) == 0 &&
        memchr(p.p + dn, '/', p.n - dn - rn) == NULL) {
        *id = (struct span){p.p + dn, p.n - dn - rn};
        return SR_DLQ_REPLAY;
    }
    if (file_path(p, id, &rematch))
        return rematch ? SR_REMATCH : SR_FILE;
    return SR_OTHER;
}

static bool route_is_post(enum settle_route rt)
{
    return rt == SR_CLOSE || rt == SR_UPLOAD || rt == SR_REMATCH || rt == SR_DLQ_REPLAY;
}

static bool parse_u64(struct span v, uint64_t max, uint64_t *out)
{
    if (v.n == 0 || v.n > 20 || (v.p[0] == '0' && v.n > 1))
        return false;
    uint64_t x = 0;
    for (size_t i = 0; i < v.n; i++) {
        if (v.p[i] < '0' || v.p[i] > '9')
            return false;
        unsigned d = (unsigned)(v.p[i] - '0');
        if (x > (max - d) / 10)
            return false;
        x = x * 10 + d;
    }
    *out = x;
    return true;
}

/* One query parameter: name and value. */
typedef int (*param_fn)(void *arg, struct span name, struct span value, const char **param,
                        const char **why);

/* Walks "a=1&b=2": 0, or -EINVAL with the parameter and why. */
static int query_walk(struct span q, param_fn fn, void *arg, const char **param, const char **why)
{
    size_t start = 0;
    for (size_t i = 0; q.n > 0 && i <= q.n; i++) {
        if (i < q.n && q.p[i] != '&')
            continue;
        struct span name = {q.p + start, i - start}, val = {NULL, 0};
        const char *eq = memchr(name.p, '=', name.n);
        if (eq) {
            val = (struct span){eq + 1, (size_t)(name.p + name.n - eq - 1)};
            name.n = (size_t)(eq - name.p);
        }
        int rc = fn(arg, name, val, param, why);
        if (rc)
            return rc;
        start = i + 1;
    }
    return 0;
}

/* Paging and the listing's filters. */
struct list_query {
    uint64_t after;
    uint32_t limit;
    bool csv;
    bool listing; /* the settlements listing: filters allowed */
    struct settle_filter f;
    unsigned seen;
};

enum { Q_AFTER = 1, Q_LIMIT = 2, Q_MERCHANT = 4, Q_DATE = 8, Q_STATUS = 16, Q_FORMAT = 32 };

static bool merchant_ok(struct span v)
{
    if (v.n < 1 || v.n > MERCHANT_ID_MAX_BYTES)
        return false;
    for (size_t i = 0; i < v.n; i++) {
        char c = v.p[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

static int filter_param(struct list_query *q, unsigned bit, struct span v, const char **why)
{
    switch (bit) {
    case Q_MERCHANT:
        if (!merchant_ok(v))
            return (*why = "must be 1-64 of [A-Za-z0-9_-]"), -EINVAL;
        q->f.has_merchant = true;
        memcpy(q->f.merchant_id, v.p, v.n);
        q->f.merchant_id[v.n] = '\0';
        q->f.merchant_id_len = (uint8_t)v.n;
        return 0;
    case Q_DATE:
        if (settle_date_parse(v.p, v.n, &q->f.date) != 0)
            return (*why = "must be a date YYYY-MM-DD"), -EINVAL;
        q->f.has_date = true;
        return 0;
    case Q_STATUS:
        if (span_is(v, "open"))
            q->f.status = SETTLE_OPEN;
        else if (span_is(v, "closed"))
            q->f.status = SETTLE_CLOSED;
        else
            return (*why = "must be open or closed"), -EINVAL;
        return 0;
    default:
        if (span_is(v, "csv"))
            q->csv = true;
        else if (!span_is(v, "json"))
            return (*why = "must be json or csv"), -EINVAL;
        return 0;
    }
}

static int list_param(void *arg, struct span name, struct span v, const char **param,
                      const char **why)
{
    struct list_query *q = arg;
    static const struct {
        const char *name;
        unsigned bit;
        bool listing_only;
    } known[] = {{"after", Q_AFTER, false},         {"limit", Q_LIMIT, false},
                 {"merchant_id", Q_MERCHANT, true}, {"date", Q_DATE, true},
                 {"status", Q_STATUS, true},        {"format", Q_FORMAT, true}};
    for (size_t i = 0; i < sizeof(known) / sizeof(known[0]); i++) {
        if (!span_is(name, known[i].name) || (known[i].listing_only && !q->listing))
            continue;
        *param = known[i].name;
        if (q->seen & known[i].bit)
            return (*why = "given twice"), -EINVAL;
        q->seen |= known[i].bit;
        if (v.n == 0)
            return 0; /* an empty value is the default (SPEC §2) */
        uint64_t x;
        if (known[i].bit == Q_AFTER) {
            if (!parse_u64(v, INT64_MAX, &x))
                return (*why = "must be an integer from 0 to 9223372036854775807"), -EINVAL;
            q->after = x;
            return 0;
        }
        if (known[i].bit == Q_LIMIT) {
            if (!parse_u64(v, SETTLE_PAGE_MAX, &x) || x < 1)
                return (*why = "must be an integer from 1 to 1000"), -EINVAL;
            q->limit = (uint32_t)x;
            return 0;
        }
        return filter_param(q, known[i].bit, v, why);
    }
    *param = "query";
    *why = "unknown query parameter";
    return -EINVAL;
}

static bool list_query_parse(const struct reactor_request *rq, bool listing, struct list_query *q,
                             const char **param, const char **why)
{
    memset(q, 0, sizeof(*q));
    q->limit = SETTLE_PAGE_DEFAULT;
    q->listing = listing;
    return query_walk(query_of(rq), list_param, q, param, why) == 0;
}

/* ---- settlements ------------------------------------------------------------------ */

struct list_run {
    struct out o;
    bool csv;
    size_t csv_len;
    bool overflow;
};

static int visit_batch(void *arg, const struct settle_batch *b)
{
    struct list_run *l = arg;
    if (!l->csv)
        return settle_render_batch(&l->o.w, b) == 0 ? 0 : -ENOBUFS;
    size_t n = settle_render_batch_csv(l->o.buf + l->csv_len, ANSWER_MAX_BYTES - l->csv_len, b);
    if (n == 0)
        return -ENOBUFS;
    l->csv_len += n;
    return 0;
}

static void serve_list(struct settle_app *app, struct reactor *r, const struct reactor_request *rq)
{
    struct list_query q;
    const char *param = NULL, *why = NULL;
    if (!list_query_parse(rq, true, &q, &param, &why)) {
        rq_error(r, rq, 400, SR_LIST, "invalid_param", why, param);
        return;
    }
    struct list_run l = {.csv = q.csv};
    if (!out_init(&l.o)) {
        rq_error(r, rq, 503, SR_LIST, "overloaded", "out of memory", NULL);
        return;
    }
    if (l.csv) {
        memcpy(l.o.buf, SETTLE_CSV_HEADER, sizeof(SETTLE_CSV_HEADER) - 1);
        l.csv_len = sizeof(SETTLE_CSV_HEADER) - 1;
    } else {
        jw_obj_begin(&l.o.w);
        jw_key(&l.o.w, "settlements");
        jw_arr_begin(&l.o.w);
    }
    uint64_t next = 0;
    int rc = settle_store_batch_list(app->store, &q.f, q.after, q.limit, visit_batch, &l, &next);
    ASSERT(rc != -ENOBUFS); /* a full page fits ANSWER_MAX_BYTES */
    if (rc != 0) {
        store_error(app, r, rq->ref, rq->request_id, SR_LIST, rc);
        free(l.o.buf);
        return;
    }
    if (l.csv) {
        char hdr[64] = "";
        if (next)
            snprintf(hdr, sizeof(hdr), "X-Next-After: %llu\r\n", (unsigned long long)next);
        reply_body(r, rq->ref, 200, SR_LIST, "text/csv; charset=utf-8", next ? hdr : NULL, l.o.buf,
                   l.csv_len);
    } else {
        jw_arr_end(&l.o.w);
        jw_key(&l.o.w, "next_after");
        if (next)
            jw_uint(&l.o.w, next);
        else
            jw_null(&l.o.w);
        jw_obj_end(&l.o.w);
        ASSERT(jw_finish(&l.o.w) == 0);
        reply_body(r, rq->ref, 200, SR_LIST, "application/json", NULL, l.o.buf, l.o.w.len);
    }
    free(l.o.buf);
}

static void serve_get(struct settle_app *app, struct reactor *r, const struct reactor_request *rq,
                      struct span id)
{
    struct settle_key k;
    struct settle_batch b;
    int rc = settle_batch_id_parse(id.p, id.n, &k) == 0 ? settle_store_batch_get(app->store, &k, &b)
                                                        : -ENOENT;
    if (rc == -ENOENT) {
        rq_error(r, rq, 404, SR_GET, "not_found", "no such settlement", NULL);
        return;
    }
    if (rc != 0) {
        store_error(app, r, rq->ref, rq->request_id, SR_GET, rc);
        return;
    }
    char body[1024];
    struct jw w;
    jw_init(&w, body, sizeof(body));
    settle_render_batch(&w, &b);
    ASSERT(jw_finish(&w) == 0);
    reply_body(r, rq->ref, 200, SR_GET, "application/json", NULL, body, w.len);
}

static bool json_body_ok(struct reactor *r, const struct reactor_request *rq, unsigned route)
{
    const struct http_header *ct = http_header_find(rq->http, rq->buf, "content-type");
    if (rq->http->body.len == 0 || ct == NULL)
        return true; /* the JSON parser says what is missing */
    const char *v = rq->buf + ct->value.off;
    size_t n = ct->value.len;
    if (n >= 16 && strncasecmp(v, "application/json", 16) == 0 && (n == 16 || v[16] == ';'))
        return true;
    rq_error(r, rq, 415, route, "unsupported_media_type", "the body must be application/json",
             NULL);
    return false;
}

/* The answer of a close (also the body its idempotency record stores). */
static size_t close_answer(char *buf, size_t cap, int32_t date, uint64_t closed)
{
    char ds[SETTLE_DATE_BYTES + 1];
    settle_date_format(ds, date);
    int n = snprintf(buf, cap, "{\"date\":\"%s\",\"status\":\"closed\",\"batches_closed\":%llu}",
                     ds, (unsigned long long)closed);
    ASSERT(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static size_t render_close(void *arg, const struct settle_idem_result *res, char *buf, size_t cap)
{
    return close_answer(buf, cap, *(const int32_t *)arg, res->closed);
}

static void serve_close(struct settle_app *app, struct reactor *r, const struct reactor_request *rq,
                        const struct idem_req *ir)
{
    if (!json_body_ok(r, rq, SR_CLOSE))
        return;
    char date_s[SETTLE_DATE_BYTES + 2];
    struct json_field f = {.name = "date",
                           .type = JSON_FIELD_STRING,
                           .required = true,
                           .buf = date_s,
                           .cap = sizeof(date_s)};
    struct json_error je;
    const char *body = rq->buf + rq->http->body.off;
    if (json_parse_object(body, rq->http->body.len, &f, 1, &je) != 0) {
        bool syntax = je.kind == JSON_ERR_SYNTAX;
        rq_error(r, rq, 400, SR_CLOSE, syntax ? "invalid_json" : "invalid_param", je.message,
                 syntax ? NULL : je.param);
        return;
    }
    int32_t date;
    if (settle_date_parse(date_s, f.len, &date) != 0) {
        rq_error(r, rq, 400, SR_CLOSE, "invalid_param", "must be a date YYYY-MM-DD", "date");
        return;
    }
    uint64_t closed = 0;
    struct settle_idem_put put = {.key = ir->key,
                                  .key_len = ir->key_len,
                                  .status = 200,
                                  .render = render_close,
                                  .arg = &date};
    memcpy(put.fp, ir->fp, sizeof(put.fp));
    int rc = settle_store_close_date_idem(app->store, &app->cal, date, settle_app_now_ms(app),
                                          &closed, &put);
    if (rc == -EINVAL) {
        rq_error(r, rq, 400, SR_CLOSE, "invalid_param",
                 "a date after today's business date cannot be closed", "date");
        return;
    }
    if (rc != 0) {
        store_error(app, r, rq->ref, rq->request_id, SR_CLOSE, rc);
        return;
    }
    char out[160], ds[SETTLE_DATE_BYTES + 1];
    settle_date_format(ds, date);
    size_t n = close_answer(out, sizeof(out), date, closed);
    char cl[24];
    snprintf(cl, sizeof(cl), "%llu", (unsigned long long)closed);
    log_write_str(LOG_INFO, "date closed on request", "date", ds, "batches_closed", cl,
                  "request_id", rq->request_id, NULL);
    reply_body(r, rq->ref, 200, SR_CLOSE, "application/json", NULL, out, n);
}

/* ---- reconciliation --------------------------------------------------------------- */

static void summary_fields(struct jw *w, const struct recon_summary *s)
{
    recon_summary_fields(w, s);
    jw_key(w, "created_at");
    jw_time(w, s->created_at_ms);
    jw_key(w, "rematches");
    jw_uint(w, s->rematches);
}

/* A file's summary as an answer body (also what its idempotency record stores). */
#define SUMMARY_MAX_BYTES 1024
_Static_assert(SUMMARY_MAX_BYTES <= SETTLE_IDEM_BODY_MAX_BYTES, "a summary answer is stored");

static size_t summary_answer(char *buf, size_t cap, const struct recon_summary *s)
{
    struct jw w;
    jw_init(&w, buf, cap);
    jw_obj_begin(&w);
    summary_fields(&w, s);
    jw_obj_end(&w);
    ASSERT(jw_finish(&w) == 0);
    return w.len;
}

static size_t render_summary(void *arg, const struct settle_idem_result *res, char *buf, size_t cap)
{
    (void)arg;
    return summary_answer(buf, cap < SUMMARY_MAX_BYTES ? cap : SUMMARY_MAX_BYTES, res->sum);
}

static void reply_summary(struct reactor *r, struct reactor_ref ref, int status, unsigned route,
                          const struct recon_summary *s)
{
    char body[SUMMARY_MAX_BYTES];
    size_t len = summary_answer(body, sizeof(body), s);
    reply_body(r, ref, status, route, "application/json", NULL, body, len);
}

/* The record of a new file (201 summary), written with its last transaction. */
static void upload_put(struct settle_idem_put *put, const struct idem_req *ir)
{
    *put = (struct settle_idem_put){
        .key = ir->key, .key_len = ir->key_len, .status = 201, .render = render_summary};
    memcpy(put->fp, ir->fp, sizeof(put->fp));
}

/* The answer of a classification (upload_classify*). */
static void upload_answer(struct settle_app *app, struct reactor *r, struct reactor_ref ref,
                          const char *request_id, int rc, const struct recon_summary *sum,
                          const char *why, uint64_t t0_ns)
{
    if (rc == -EPROTO) {
        reply_error(r, ref, request_id, 400, SR_UPLOAD, "invalid_param", why, "header", NULL);
        return;
    }
    if (rc != 0) {
        store_error(app, r, ref, request_id, SR_UPLOAD, rc);
        return;
    }
    app->recon_last_lines = sum->lines;
    app->recon_last_ns = clock_mono_ns() - t0_ns;
    char id[RECON_FILE_ID_BYTES + 1], lines[24], ms[24];
    recon_file_id(id, sum->seq);
    snprintf(lines, sizeof(lines), "%llu", (unsigned long long)sum->lines);
    snprintf(ms, sizeof(ms), "%llu", (unsigned long long)(app->recon_last_ns / 1000000));
    log_write_str(LOG_INFO, "reconciliation file done", "file", id, "lines", lines, "elapsed_ms",
                  ms, "request_id", request_id, NULL);
    reply_summary(r, ref, 201, SR_UPLOAD, sum);
}

/* Content-Type text/csv (parameters allowed). */
static bool csv_type(const struct reactor_request *rq)
{
    const struct http_header *ct = http_header_find(rq->http, rq->buf, "content-type");
    if (ct == NULL)
        return false;
    const char *v = rq->buf + ct->value.off;
    size_t n = ct->value.len;
    return n >= 8 && strncasecmp(v, "text/csv", 8) == 0 && (n == 8 || v[8] == ';' || v[8] == ' ');
}

/* An upload that arrived whole (a chunked body within the HTTP body limit). */
static void serve_upload_whole(struct settle_app *app, struct reactor *r,
                               const struct reactor_request *rq, const struct idem_req *ir)
{
    if (!csv_type(rq)) {
        rq_error(r, rq, 415, SR_UPLOAD, "unsupported_media_type", "the body must be text/csv",
                 NULL);
        return;
    }
    struct recon_summary sum;
    const char *why = NULL;
    uint64_t t0 = clock_mono_ns();
    struct settle_idem_put put;
    upload_put(&put, ir);
    int rc =
        upload_classify_memory_idem(app->store, rq->buf + rq->http->body.off, rq->http->body.len,
                                    settle_app_now_ms(app), rq->request_id, &put, &sum, &why);
    upload_answer(app, r, rq->ref, rq->request_id, rc, &sum, why, t0);
}

/* The head of a streamed upload: every check that needs no body, then the spool. */
static void serve_upload_head(struct settle_app *app, struct reactor *r,
                              const struct reactor_request *rq, const struct gate_parts *gp)
{
    if (!csv_type(rq)) {
        rq_error(r, rq, 415, SR_UPLOAD, "unsupported_media_type", "the body must be text/csv",
                 NULL);
        return;
    }
    if (rq->http->has_content_length && rq->http->content_length > app->recon_max_bytes) {
        rq_error(r, rq, 413, SR_UPLOAD, "body_too_large",
                 "the statement is larger than --recon-max-bytes", NULL);
        return;
    }
    struct upload *up;
    /* a chunked body's length is known at its end: it is held to the bound as it comes */
    uint64_t limit = rq->http->chunked ? app->recon_max_bytes : rq->http->content_length;
    int rc = upload_begin(app->uploads, rq->ref, rq->request_id, gp, limit, &up);
    if (rc == -EBUSY) {
        rq_error(r, rq, 503, SR_UPLOAD, "overloaded", "too many uploads at once", NULL);
        return;
    }
    if (rc == -ENAMETOOLONG) {
        rq_error(r, rq, 401, SR_UPLOAD, "authentication_failed",
                 "the request is not signed by a valid key", NULL);
        return;
    }
    if (rc != 0) {
        log_write_str(LOG_ERROR, "cannot spool an upload", "error", strerror(-rc), NULL);
        rq_error(r, rq, 503, SR_UPLOAD, "overloaded", "cannot store the upload now", NULL);
        return;
    }
    /* looked up at the last byte: the fingerprint needs the whole body's hash */
    const struct http_header *h = http_header_find(rq->http, rq->buf, "idempotency-key");
    upload_set_idempotency_key(up, rq->buf + h->value.off, h->value.len);
}

static int visit_item(void *arg, const struct recon_item *it)
{
    return recon_render_item(arg, it) == 0 ? 0 : -ENOBUFS;
}

static void serve_file(struct settle_app *app, struct reactor *r, const struct reactor_request *rq,
                       struct span id)
{
    struct list_query q;
    const char *param = NULL, *why = NULL;
    if (!list_query_parse(rq, false, &q, &param, &why)) {
        rq_error(r, rq, 400, SR_FILE, "invalid_param", why, param);
        return;
    }
    uint64_t seq;
    struct recon_summary sum;
    int rc = recon_file_id_parse(id.p, id.n, &seq) == 0
                 ? settle_store_recon_get(app->store, seq, &sum)
                 : -ENOENT;
    if (rc == -ENOENT) {
        rq_error(r, rq, 404, SR_FILE, "not_found", "no such reconciliation file", NULL);
        return;
    }
    struct out o;
    if (rc == 0 && !out_init(&o))
        rc = -ENOMEM;
    if (rc != 0) {
        store_error(app, r, rq->ref, rq->request_id, SR_FILE, rc);
        return;
    }
    jw_obj_begin(&o.w);
    summary_fields(&o.w, &sum);
    jw_key(&o.w, "items");
    jw_arr_begin(&o.w);
    uint64_t next = 0;
    rc = settle_store_recon_items(app->store, seq, q.after, q.limit, visit_item, &o.w, &next);
    if (rc != 0) {
        free(o.buf);
        store_error(app, r, rq->ref, rq->request_id, SR_FILE, rc);
        return;
    }
    jw_arr_end(&o.w);
    jw_key(&o.w, "next_after");
    if (next)
        jw_uint(&o.w, next);
    else
        jw_null(&o.w);
    jw_obj_end(&o.w);
    ASSERT(jw_finish(&o.w) == 0);
    reply_body(r, rq->ref, 200, SR_FILE, "application/json", NULL, o.buf, o.w.len);
    free(o.buf);
}

static void serve_rematch(struct settle_app *app, struct reactor *r,
                          const struct reactor_request *rq, struct span id,
                          const struct idem_req *ir)
{
    uint64_t seq;
    struct recon_summary sum;
    struct settle_idem_put put = {
        .key = ir->key, .key_len = ir->key_len, .status = 200, .render = render_summary};
    memcpy(put.fp, ir->fp, sizeof(put.fp));
    int rc =
        recon_file_id_parse(id.p, id.n, &seq) == 0
            ? settle_store_recon_rematch_idem(app->store, seq, settle_app_now_ms(app), &sum, &put)
            : -ENOENT;
    if (rc == -ENOENT)
        reply_error_stored(app, r, rq, ir, 404, SR_REMATCH, "not_found",
                           "no such reconciliation file");
    else if (rc == -EBUSY) /* passes: not stored */
        rq_error(r, rq, 409, SR_REMATCH, "invalid_state", "the file is still being uploaded", NULL);
    else if (rc == -EINVAL)
        reply_error_stored(app, r, rq, ir, 409, SR_REMATCH, "invalid_state",
                           "the upload of this file failed; upload it again");
    else if (rc != 0)
        store_error(app, r, rq->ref, rq->request_id, SR_REMATCH, rc);
    else
        reply_summary(r, rq->ref, 200, SR_REMATCH, &sum);
}

/* ---- dead letters -------------------------------------------------------------------- */

struct dlq_query {
    uint64_t after;
    uint32_t limit;
    bool all;
    unsigned seen;
};

static int dlq_param(void *arg, struct span name, struct span v, const char **param,
                     const char **why)
{
    struct dlq_query *q = arg;
    static const char *const names[] = {"after", "limit", "status"};
    for (unsigned i = 0; i < 3; i++) {
        if (!span_is(name, names[i]))
            continue;
        *param = names[i];
        if (q->seen & (1u << i))
            return (*why = "given twice"), -EINVAL;
        q->seen |= 1u << i;
        uint64_t x;
        if (v.n == 0)
            return 0;
        if (i == 0 && !parse_u64(v, INT64_MAX, &x))
            return (*why = "must be an integer from 0 to 9223372036854775807"), -EINVAL;
        if (i == 1 && (!parse_u64(v, SETTLE_PAGE_MAX, &x) || x < 1))
            return (*why = "must be an integer from 1 to 1000"), -EINVAL;
        if (i == 2 && !span_is(v, "pending") && !span_is(v, "all"))
            return (*why = "must be pending or all"), -EINVAL;
        if (i == 0)
            q->after = x;
        else if (i == 1)
            q->limit = (uint32_t)x;
        else
            q->all = span_is(v, "all");
        return 0;
    }
    *param = "query";
    *why = "unknown query parameter";
    return -EINVAL;
}

/* A page of dead letters; one whose JSON would not fit the answer ends the page early. */
struct dlq_page {
    struct out o;
    char scratch[6 * SETTLE_EVENT_MAX_BYTES + 6 * (SETTLE_REASON_MAX_BYTES + SETTLE_KEY_MAX_BYTES) +
                 1024];
    char hexbuf[2 * SETTLE_EVENT_MAX_BYTES];
    uint64_t last;
    bool cut;
};

static int visit_letter(void *arg, const struct settle_dead_letter *d)
{
    struct dlq_page *pg = arg;
    struct jw one;
    jw_init(&one, pg->scratch, sizeof(pg->scratch));
    dlq_render(&one, d, SETTLE_EVENT_MAX_BYTES, pg->hexbuf);
    ASSERT(jw_finish(&one) == 0);
    if (pg->o.w.len + one.len + 64 > pg->o.w.cap) {
        pg->cut = true;
        return 1;
    }
    /* the array's elements are placed by hand: each was rendered apart */
    if (pg->last != 0)
        pg->o.buf[pg->o.w.len++] = ',';
    memcpy(pg->o.buf + pg->o.w.len, one.buf, one.len);
    pg->o.w.len += one.len;
    pg->last = d->id;
    return 0;
}

static void serve_dlq_list(struct settle_app *app, struct reactor *r,
                           const struct reactor_request *rq)
{
    struct dlq_query q = {.limit = SETTLE_PAGE_DEFAULT};
    const char *param = NULL, *why = NULL;
    if (query_walk(query_of(rq), dlq_param, &q, &param, &why) != 0) {
        rq_error(r, rq, 400, SR_DLQ_LIST, "invalid_param", why, param);
        return;
    }
    struct dlq_page *pg = calloc(1, sizeof(*pg));
    if (pg == NULL || !out_init(&pg->o)) {
        free(pg);
        rq_error(r, rq, 503, SR_DLQ_LIST, "overloaded", "out of memory", NULL);
        return;
    }
    static const char open_[] = "{\"dead_letters\":[";
    memcpy(pg->o.buf, open_, sizeof(open_) - 1);
    pg->o.w.len = sizeof(open_) - 1;
    uint64_t next = 0;
    int rc = settle_store_dlq_list(app->store, q.after, q.limit, !q.all, visit_letter, pg, &next);
    if (rc < 0) {
        store_error(app, r, rq->ref, rq->request_id, SR_DLQ_LIST, rc);
    } else {
        if (pg->cut)
            next = pg->last ? pg->last : q.after;
        int n = next ? snprintf(pg->o.buf + pg->o.w.len, 64, "],\"next_after\":%llu}",
                                (unsigned long long)next)
                     : snprintf(pg->o.buf + pg->o.w.len, 64, "],\"next_after\":null}");
        pg->o.w.len += (size_t)n;
        reply_body(r, rq->ref, 200, SR_DLQ_LIST, "application/json", NULL, pg->o.buf, pg->o.w.len);
    }
    free(pg->o.buf);
    free(pg);
}

/* The answer of a dead letter's replay (also what its idempotency record stores). */
static size_t dlq_answer(char *buf, size_t cap, uint64_t id, enum settle_msg_result res)
{
    int n = snprintf(buf, cap, "{\"id\":%llu,\"outcome\":\"%s\"}", (unsigned long long)id,
                     dlq_outcome_name(res));
    ASSERT(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static size_t render_dlq(void *arg, const struct settle_idem_result *res, char *buf, size_t cap)
{
    return dlq_answer(buf, cap, *(const uint64_t *)arg, res->outcome);
}

static void serve_dlq_replay(struct settle_app *app, struct reactor *r,
                             const struct reactor_request *rq, struct span id,
                             const struct idem_req *ir)
{
    uint64_t n = 0;
    enum settle_msg_result res = SETTLE_MSG_DEAD_LETTER;
    struct settle_idem_put put = {
        .key = ir->key, .key_len = ir->key_len, .status = 200, .render = render_dlq, .arg = &n};
    memcpy(put.fp, ir->fp, sizeof(put.fp));
    int rc = parse_u64(id, UINT32_MAX, &n) && n >= 1
                 ? settle_store_dlq_replay_idem(app->store, &app->cal, n, settle_app_now_ms(app),
                                                &res, &put)
                 : -ENOENT;
    if (rc == -ENOENT) {
        reply_error_stored(app, r, rq, ir, 404, SR_DLQ_REPLAY, "not_found", "no such dead letter");
        return;
    }
    if (rc == -EALREADY) {
        reply_error_stored(app, r, rq, ir, 409, SR_DLQ_REPLAY, "invalid_state",
                           "this dead letter was replayed");
        return;
    }
    if (rc != 0) {
        store_error(app, r, rq->ref, rq->request_id, SR_DLQ_REPLAY, rc);
        return;
    }
    char body[96];
    size_t len = dlq_answer(body, sizeof(body), n, res);
    reply_body(r, rq->ref, 200, SR_DLQ_REPLAY, "application/json", NULL, body, len);
}

/* ---- operations endpoints --------------------------------------------------------- */

static void metric_u64(struct metrics_out *o, const char *name, const char *type, const char *help,
                       uint64_t v)
{
    metrics_family(o, name, type, help);
    metrics_sample_u64(o, name, NULL, v);
}

static void store_metrics(const struct settle_app *app, struct metrics_out *o)
{
    struct settle_store_stats st;
    settle_store_get_stats(app->store, &st);
    metrics_family(o, "ringpay_settle_events_total", "counter",
                   "Consumed messages by outcome (committed with their offsets).");
    static const char *const names[] = {"counted", "adjusted", "duplicate",
                                        "ignored", "stale",    "poison"};
    const uint64_t v[] = {st.counted, st.adjusted, st.duplicates,
                          st.ignored, st.stale,    st.dead_letters};
    for (size_t i = 0; i < 6; i++) {
        char l[48];
        snprintf(l, sizeof(l), "outcome=\"%s\"", names[i]);
        metrics_sample_u64(o, "ringpay_settle_events_total", l, v[i]);
    }
    metric_u64(o, "ringpay_settle_open_batches", "gauge", "Settlement batches open now.",
               st.open_batches);
    metric_u64(o, "ringpay_settle_batches_closed_total", "counter", "Settlement batches closed.",
               st.batches_closed);
    metric_u64(o, "ringpay_settle_recon_lines_total", "counter", "Bank statement lines classified.",
               st.recon_lines);
    metric_u64(o, "ringpay_settle_commits_total", "counter", "Store transactions committed.",
               st.commits);
    metric_u64(o, "ringpay_settle_outbox_pending", "gauge",
               "settle's outbox messages not yet delivered to Kafka.",
               st.outbox_seq - st.replicated_seq);
    metric_u64(o, "ringpay_settle_map_bytes", "gauge", "Size of the store's LMDB map.",
               st.map_bytes);
    metric_u64(o, "ringpay_settle_store_failed", "gauge", "1 when the store failed for good.",
               settle_store_failed(app->store) != 0);
    uint64_t rate =
        app->recon_last_ns ? app->recon_last_lines * 1000000000ull / app->recon_last_ns : 0;
    metric_u64(o, "ringpay_settle_recon_lines_per_second", "gauge",
               "Classification rate of the last bank statement upload.", rate);
    metric_u64(o, "ringpay_settle_uploads_active", "gauge", "Uploads being received.",
               uploads_active(app->uploads));
}

static void serve_metrics(struct settle_app *app, struct reactor *r,
                          const struct reactor_request *rq)
{
    char *body = malloc(METRICS_BODY_MAX_BYTES);
    if (body == NULL) {
        rq_error(r, rq, 503, SR_METRICS, "overloaded", "metrics unavailable", NULL);
        return;
    }
    struct metrics_out o;
    metrics_out_init(&o, body, METRICS_BODY_MAX_BYTES);
    const struct metrics *m = reactor_metrics(r);
    const struct accesslog *al = reactor_accesslog(r);
    metrics_render(&o, &m, 1);
    accesslog_metrics(&al, 1, &o);
    if (settle_app_live(app)) {
        store_metrics(app, &o);
        if (app->kafka)
            skafka_metrics(app->kafka, &o);
    }
    long len = metrics_out_len(&o);
    if (len < 0)
        rq_error(r, rq, 503, SR_METRICS, "overloaded", "metrics unavailable", NULL);
    else
        reply_body(r, rq->ref, 200, SR_METRICS, "text/plain; version=0.0.4; charset=utf-8", NULL,
                   body, (size_t)len);
    free(body);
}

static void serve_ops(struct settle_app *app, struct reactor *r, const struct reactor_request *rq,
                      enum settle_route route)
{
    if (route != SR_HEALTHZ && !cidr_list_match(app->ops_allow, rq->client)) {
        rq_error(r, rq, 403, route, "forbidden",
                 "this address may not call the operations endpoints", NULL);
        return;
    }
    enum http_method m = rq->http->method;
    if (m != HTTP_GET && m != HTTP_HEAD) {
        reply_error(r, rq->ref, rq->request_id, 405, route, "method_not_allowed",
                    "method not allowed on this route", NULL, "Allow: GET, HEAD\r\n");
        return;
    }
    if (route == SR_METRICS) {
        serve_metrics(app, r, rq);
        return;
    }
    if (route == SR_READYZ && !settle_app_live(app)) {
        rq_error(r, rq, 503, route, "not_ready", "standby: another settle holds the data directory",
                 NULL);
        return;
    }
    if (route == SR_READYZ && settle_store_failed(app->store) != 0) {
        rq_error(r, rq, 503, route, "not_ready", "the store failed", NULL);
        return;
    }
    if (route == SR_READYZ && app->kafka && skafka_foreign_partitions(app->kafka) > 0) {
        rq_error(r, rq, 503, route, "not_ready",
                 "partitions counted by another settle store are not consumed (see the log)", NULL);
        return;
    }
    static const char ok[] = "{\"status\":\"ok\"}";
    static const char ready[] = "{\"status\":\"ready\"}";
    const char *b = route == SR_HEALTHZ ? ok : ready;
    reply_body(r, rq->ref, 200, route, "application/json", NULL, b, strlen(b));
}

/* ---- the handler ---------------------------------------------------------------- */

static bool is_ops(const struct reactor_request *rq, enum settle_route *route)
{
    struct span p = path_of(rq);
    if (span_is(p, "/healthz"))
        *route = SR_HEALTHZ;
    else if (span_is(p, "/readyz"))
        *route = SR_READYZ;
    else if (span_is(p, "/metrics"))
        *route = SR_METRICS;
    else
        return false;
    return true;
}

/* Method, query and Idempotency-Key of a /v1 route: false when answered. */
static bool request_shape_ok(struct reactor *r, const struct reactor_request *rq,
                             enum settle_route rt)
{
    bool post = route_is_post(rt);
    enum http_method m = rq->http->method;
    if (post ? m != HTTP_POST : (m != HTTP_GET && m != HTTP_HEAD)) {
        reply_error(r, rq->ref, rq->request_id, 405, rt, "method_not_allowed",
                    "method not allowed on this route", NULL,
                    post ? "Allow: POST\r\n" : "Allow: GET, HEAD\r\n");
        return false;
    }
    if (!post)
        return true;
    if (rq->http->query.len > 0) {
        rq_error(r, rq, 400, rt, "invalid_param", "POST routes take no query string", "query");
        return false;
    }
    unsigned n = http_header_count(rq->http, rq->buf, "idempotency-key");
    if (n == 0) {
        rq_error(r, rq, 400, rt, "missing_idempotency_key",
                 "POST requests need an Idempotency-Key header", NULL);
        return false;
    }
    const struct http_header *h = http_header_find(rq->http, rq->buf, "idempotency-key");
    bool printable = h->value.len >= 1 && h->value.len <= IDEMPOTENCY_KEY_MAX_BYTES;
    for (uint32_t i = 0; printable && i < h->value.len; i++)
        printable = rq->buf[h->value.off + i] >= 0x20 && rq->buf[h->value.off + i] < 0x7f;
    if (n > 1 || !printable) {
        rq_error(r, rq, 400, rt, "invalid_param",
                 n > 1 ? "must be sent once" : "must be 1-255 printable ASCII characters",
                 "Idempotency-Key");
        return false;
    }
    return true;
}

static void serve_v1(struct settle_app *app, struct reactor *r, const struct reactor_request *rq)
{
    struct span id = {NULL, 0};
    enum settle_route rt = route_of(rq, &id);
    if (!settle_app_live(app)) {
        rq_error(r, rq, 503, rt, "not_ready", "standby: another settle holds the data directory",
                 NULL);
        return;
    }
    struct gate_parts gp;
    bool have_parts = false;
    if (rq->body_streamed) {
        /* the signature covers the body: checked when it is complete (upload.h) */
        have_parts = gate_enabled(app->gate) && gate_parts_of(rq, &gp);
        if (gate_enabled(app->gate) && !have_parts) {
            rq_error(r, rq, 401, rt, "authentication_failed",
                     "the request is not signed by a valid key", NULL);
            return;
        }
    } else {
        struct gate_pass pass;
        const char *why;
        int status = gate_check(app->gate, rq, clock_wall_ms() / 1000, &pass, &why);
        if (status != 0) {
            rq_error(r, rq, status, rt, status == 401 ? "authentication_failed" : "forbidden", why,
                     NULL);
            return;
        }
    }
    if (rt == SR_OTHER) {
        rq_error(r, rq, 404, rt, "not_found", "no such resource", NULL);
        return;
    }
    if (!request_shape_ok(r, rq, rt))
        return;
    struct idem_req ir = {0};
    if (route_is_post(rt) && !rq->body_streamed) {
        idem_of(rq, &ir);
        if (!idem_check(app, r, rq->ref, rq->request_id, rt, &ir))
            return;
    }
    switch (rt) {
    case SR_LIST:
        serve_list(app, r, rq);
        break;
    case SR_GET:
        serve_get(app, r, rq, id);
        break;
    case SR_CLOSE:
        serve_close(app, r, rq, &ir);
        break;
    case SR_UPLOAD:
        if (rq->body_streamed)
            serve_upload_head(app, r, rq, have_parts ? &gp : NULL);
        else
            serve_upload_whole(app, r, rq, &ir);
        break;
    case SR_FILE:
        serve_file(app, r, rq, id);
        break;
    case SR_DLQ_LIST:
        serve_dlq_list(app, r, rq);
        break;
    case SR_DLQ_REPLAY:
        serve_dlq_replay(app, r, rq, id, &ir);
        break;
    default:
        serve_rematch(app, r, rq, id, &ir);
        break;
    }
}

static int on_request(void *ctx, struct reactor *r, const struct reactor_request *rq)
{
    struct settle_app *app = ctx;
    enum settle_route ops;
    if (app->allow && !cidr_list_match(app->allow, rq->client))
        rq_error(r, rq, 403, SR_OTHER, "forbidden", "this address may not call settle", NULL);
    else if (is_ops(rq, &ops))
        serve_ops(app, r, rq, ops);
    else if (rq->http->path.len >= 4 && memcmp(rq->buf + rq->http->path.off, "/v1/", 4) == 0)
        serve_v1(app, r, rq);
    else
        rq_error(r, rq, 404, SR_OTHER, "not_found", "no such route", NULL);
    return 0;
}

/* Statement uploads stream (Content-Length or chunked); everything else is read whole. */
static bool stream_body(void *ctx, const struct reactor_request *rq)
{
    (void)ctx;
    return rq->http->method == HTTP_POST && span_is(path_of(rq), "/v1/reconciliation/files");
}

static void on_body(void *ctx, struct reactor *r, struct reactor_ref ref, const char *data,
                    size_t len, int end)
{
    struct settle_app *app = ctx;
    struct upload *up = upload_find(app->uploads, ref);
    if (up == NULL)
        return; /* refused at its head: already answered */
    const char *rid = upload_request_id(up);
    if (end == 0) {
        int rc = upload_body(up, data, len);
        if (rc == -EFBIG) {
            reply_error(r, ref, rid, 413, SR_UPLOAD, "body_too_large",
                        "the statement is larger than --recon-max-bytes", NULL, NULL);
            upload_end(up);
            return;
        }
        if (rc != 0) {
            log_write_str(LOG_ERROR, "cannot spool an upload", "error", strerror(-rc), NULL);
            reply_error(r, ref, rid, 503, SR_UPLOAD, "overloaded", "cannot store the upload now",
                        NULL, "Retry-After: 1\r\n");
            upload_end(up);
        }
        return;
    }
    if (end < 0) {
        reply_error(r, ref, rid, end == -ESHUTDOWN ? 503 : 400, SR_UPLOAD,
                    end == -ESHUTDOWN ? "overloaded" : "bad_request",
                    end == -ESHUTDOWN ? "settle is stopping"
                    : end == -EPROTO  ? "malformed chunked framing"
                                      : "the upload was cut off",
                    NULL, end == -ESHUTDOWN ? "Retry-After: 1\r\n" : NULL);
        upload_end(up);
        return;
    }
    struct gate_pass pass;
    const char *why = NULL;
    int status = upload_verify(up, app->gate, clock_wall_ms() / 1000, &pass, &why);
    if (status != 0) {
        reply_error(r, ref, rid, status, SR_UPLOAD,
                    status == 401 ? "authentication_failed" : "forbidden", why, NULL, NULL);
        upload_end(up);
        return;
    }
    /* the key at the last byte, before any line is classified (no second file) */
    struct idem_req ir;
    ir.key = upload_idempotency_key(up, &ir.key_len);
    ASSERT(ir.key != NULL);
    const char *path = settle_route_names[SR_UPLOAD]; /* the route is this exact path */
    idem_fingerprint(path, strlen(path), upload_body_hex(up), ir.fp);
    if (!idem_check(app, r, ref, rid, SR_UPLOAD, &ir)) {
        upload_end(up);
        return;
    }
    struct settle_idem_put put;
    upload_put(&put, &ir);
    struct recon_summary sum;
    uint64_t t0 = clock_mono_ns();
    int rc = upload_classify_idem(up, app->store, settle_app_now_ms(app), &put, &sum, &why);
    upload_answer(app, r, ref, rid, rc, &sum, why, t0);
    upload_end(up);
}

/* The close timer: dates whose end plus grace passed close, once the consumer caught
 * up (so a backlog after an outage counts on its own days, not as adjustments). */
static void close_timer(struct settle_app *app, int64_t now_ms)
{
    if (now_ms < app->next_close_check_ms)
        return;
    app->next_close_check_ms = now_ms + (int64_t)app->close_poll_ms;
    if (app->kafka && !skafka_caught_up(app->kafka))
        return;
    uint64_t closed = 0;
    int rc = settle_store_close_due(app->store, &app->cal, now_ms, &closed);
    if (rc != 0) {
        char e[64];
        snprintf(e, sizeof(e), "%s", strerror(-rc));
        log_write_str(LOG_ERROR, "automatic close failed; retried", "error", e, NULL);
        return;
    }
    if (closed > 0) {
        char n[24];
        snprintf(n, sizeof(n), "%llu", (unsigned long long)closed);
        log_write(LOG_INFO, "batches closed by the timer", "batches_closed", n, NULL);
    }
}

static void on_turn(void *ctx, struct reactor *r)
{
    struct settle_app *app = ctx;
    gate_quiesce(app->gate, 0);
    if (!settle_app_live(app) || settle_store_failed(app->store) != 0)
        return;
    int64_t now = settle_app_now_ms(app);
    if (app->kafka) {
        skafka_arm(app->kafka, reactor_ring(r));
        if (skafka_turn(app->kafka, reactor_ring(r), now))
            skafka_kick(app->kafka); /* more waiting: do not sleep */
    }
    close_timer(app, now);
}

static void on_wake(void *ctx, struct reactor *r, int res)
{
    struct settle_app *app = ctx;
    if (settle_app_live(app) && app->kafka)
        skafka_on_wake(app->kafka, reactor_ring(r), res);
}

const struct reactor_handler settle_app_handler = {
    .on_request = on_request,
    .on_wake = on_wake,
    .on_turn = on_turn,
    .stream_body = stream_body,
    .on_body = on_body,
};
