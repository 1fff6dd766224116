/*
 * Helpers of the write-ahead log mode's tests (see wal_harness.h).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "wal_harness.h"

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/clock.h"
#include "store/manifest.h"

const char *const wh_merchants[WH_MERCHANTS] = {"m-a", "m-b", "m-c"};

/* ---- requests and answers ---------------------------------------------------------------- */

void wh_req_set(struct wh_req *r, const char *method, const char *path, const char *body,
                const char *key)
{
    memset(r, 0, sizeof(*r));
    snprintf(r->method, sizeof(r->method), "%s", method);
    snprintf(r->path, sizeof(r->path), "%s", path);
    if (body) {
        r->body = strdup(body);
        assert_non_null(r->body);
    }
    if (key)
        snprintf(r->key, sizeof(r->key), "%s", key);
    snprintf(r->request_id, sizeof(r->request_id), "req-%s", key ? key : "get");
}

void wh_req_copy(struct wh_req *dst, const struct wh_req *src)
{
    *dst = *src;
    if (src->body) {
        dst->body = strdup(src->body);
        assert_non_null(dst->body);
    }
}

void wh_req_free(struct wh_req *r)
{
    free(r->body);
    r->body = NULL;
}

void wh_ans_free(struct wh_ans *a)
{
    free(a->body);
    memset(a, 0, sizeof(*a));
}

void wh_ans_copy(struct wh_ans *dst, const struct wh_ans *src)
{
    *dst = *src;
    dst->body = malloc(src->len + 1);
    assert_non_null(dst->body);
    memcpy(dst->body, src->body, src->len + 1);
}

bool wh_ans_same(const struct wh_ans *a, const struct wh_ans *b)
{
    return a->status == b->status && a->rc == b->rc && a->len == b->len &&
           memcmp(a->body, b->body, a->len) == 0;
}

bool wh_ans_stored(const struct wh_req *r, const struct wh_ans *first)
{
    if (first->rc != 0)
        return false;
    if (first->replayed || (first->status >= 200 && first->status < 300))
        return true;
    if (first->status == 409)
        return strstr(first->body, "\"invalid_state\"") != NULL ||
               strstr(first->body, "\"amount_exceeds_remaining\"") != NULL;
    if (first->status == 404) /* stored only when the scope merchant is known */
        return r->auth[0] != '\0';
    return false;
}

/* ---- directories and stores ------------------------------------------------------------ */

char *wh_tmpdir(void)
{
    char *dir = strdup("/tmp/rp_shard_wal_XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    char err[256];
    int rc = store_manifest_open(dir, 1, err, sizeof(err));
    if (rc)
        fail_msg("store_manifest_open %s: %s", dir, err);
    return dir;
}

void wh_rm_rf(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

struct shard_store *wh_open(const char *dir, const struct shard_store_options *opt)
{
    struct shard_store *s = NULL;
    int rc = shard_store_open(&s, dir, 0, opt);
    if (rc)
        fail_msg("shard_store_open %s: %d (%s)", dir, rc, shard_store_open_error());
    return s;
}

static struct engine_span span_or_absent(const char *s)
{
    return (struct engine_span){s && s[0] ? s : NULL, s ? strlen(s) : 0};
}

int wh_decode(const struct wh_req *r, struct op *op)
{
    struct api_request q = {.method = span_or_absent(r->method),
                            .path = span_or_absent(r->path),
                            .query = span_or_absent(r->query),
                            .body = {r->body, r->body ? strlen(r->body) : 0},
                            .idem_key = span_or_absent(r->key),
                            .idem_key_count = r->key[0] ? 1 : 0,
                            .auth_merchant = span_or_absent(r->auth),
                            .request_id = span_or_absent(r->request_id)};
    struct api_error err;
    memset(op, 0, sizeof(*op));
    int rc = api_decode(&q, 1, op, &err);
    if (rc)
        fprintf(stderr, "api_decode %s %s: %d %s %s\n", r->method, r->path, err.status, err.code,
                err.message);
    return rc;
}

struct slot {
    struct op op;
    char answer[ENGINE_ANSWER_MAX_BYTES];
};

int wh_apply(struct shard_store *s, const struct wh_req *reqs, size_t n, int64_t now_ms,
             struct wh_ans *out)
{
    struct slot *sl = calloc(n ? n : 1, sizeof(*sl));
    struct batch_item *it = calloc(n ? n : 1, sizeof(*it));
    assert_true(sl != NULL && it != NULL);
    for (size_t i = 0; i < n; i++) {
        if (wh_decode(&reqs[i], &sl[i].op) != 0)
            fail_msg("request %s %s (key %s) does not decode", reqs[i].method, reqs[i].path,
                     reqs[i].key);
        it[i].op = &sl[i].op;
        it[i].answer.body = sl[i].answer;
        it[i].answer.cap = sizeof(sl[i].answer);
    }
    int rc = shard_store_apply_batch(s, it, n, now_ms);
    for (size_t i = 0; i < n; i++) {
        struct wh_ans *a = &out[i];
        a->status = it[i].answer.status;
        a->replayed = it[i].answer.replayed;
        a->rc = it[i].rc;
        a->len = it[i].answer.len;
        a->body = malloc(a->len + 1);
        assert_non_null(a->body);
        memcpy(a->body, it[i].answer.body, a->len);
        a->body[a->len] = '\0';
    }
    free(sl);
    free(it);
    return rc;
}

int wh_poll(struct shard_store *s, int timeout_ms)
{
    struct pollfd p = {.fd = shard_store_event_fd(s), .events = POLLIN};
    if (p.fd >= 0)
        poll(&p, 1, timeout_ms);
    return shard_store_poll(s);
}

int wh_settle(struct shard_store *s)
{
    if (!shard_store_async(s))
        return shard_store_durable(s) < shard_store_written(s) ? shard_store_sync(s) : 0;
    shard_store_kick(s);
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    while (shard_store_durable(s) < shard_store_written(s) && shard_store_failed(s) == 0) {
        if (clock_mono_ns() > deadline)
            fail_msg("the log did not become durable within 30 s");
        wh_poll(s, 10);
    }
    return shard_store_failed(s);
}

int wh_get(struct shard_store *s, const char *path, const char *query, int64_t now_ms,
           const char **body)
{
    static char buf[ENGINE_READ_ANSWER_MAX_BYTES + 1];
    struct wh_req r;
    memset(&r, 0, sizeof(r));
    snprintf(r.method, sizeof(r.method), "GET");
    snprintf(r.path, sizeof(r.path), "%s", path);
    if (query)
        snprintf(r.query, sizeof(r.query), "%s", query);
    snprintf(r.request_id, sizeof(r.request_id), "get");
    struct op op;
    if (wh_decode(&r, &op) != 0)
        fail_msg("GET %s?%s does not decode", path, query ? query : "");
    struct batch_item it = {.op = &op};
    it.answer.body = buf;
    it.answer.cap = ENGINE_READ_ANSWER_MAX_BYTES;
    shard_store_read(s, &it, 1, now_ms);
    buf[it.answer.len] = '\0';
    *body = buf;
    return it.rc ? 0 : it.answer.status;
}

/* ---- the state as text ------------------------------------------------------------------ */

struct text {
    char *buf;
    size_t len, cap;
};

static void text_add(struct text *t, const char *data, size_t n)
{
    if (t->len + n + 1 > t->cap) {
        size_t cap = t->cap ? t->cap : 4096;
        while (cap < t->len + n + 1)
            cap *= 2;
        t->buf = realloc(t->buf, cap);
        assert_non_null(t->buf);
        t->cap = cap;
    }
    memcpy(t->buf + t->len, data, n);
    t->len += n;
    t->buf[t->len] = '\0';
}

static void text_printf(struct text *t, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void text_printf(struct text *t, const char *fmt, ...)
{
    char line[512];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    assert_true(n >= 0 && (size_t)n < sizeof(line));
    text_add(t, line, (size_t)n);
}

static int dump_event(void *arg, const struct shard_event *ev)
{
    struct text *t = arg;
    text_printf(t, "event %" PRIu64 " %.*s %.*s ", ev->seq, (int)ev->topic_len, ev->topic,
                (int)ev->key_len, ev->key);
    text_add(t, ev->value, ev->value_len);
    text_add(t, "\n", 1);
    return 0;
}

char *wh_dump(struct shard_store *s, uint64_t npays, uint32_t page_limit, uint64_t after_seq,
              int64_t now_ms)
{
    struct text t = {0};
    const char *body;
    char path[128], query[64];
    for (uint64_t i = 1;; i++) {
        snprintf(path, sizeof(path), "/v1/payments/pay_00%016" PRIx64, i);
        int st = wh_get(s, path, NULL, now_ms, &body);
        text_printf(&t, "payment %" PRIu64 " %d ", i, st);
        text_add(&t, body, strlen(body));
        text_add(&t, "\n", 1);
        if (st != 200 && i > npays)
            break;
    }
    for (int m = 0; m < WH_MERCHANTS; m++) {
        snprintf(path, sizeof(path), "/v1/merchants/%s/balances", wh_merchants[m]);
        int st = wh_get(s, path, NULL, now_ms, &body);
        text_printf(&t, "balances %s %d ", wh_merchants[m], st);
        text_add(&t, body, strlen(body));
        text_add(&t, "\n", 1);
        snprintf(path, sizeof(path), "/v1/merchants/%s/ledger", wh_merchants[m]);
        for (uint64_t after = 0, pages = 0;; pages++) {
            assert_true(pages < 100000);
            snprintf(query, sizeof(query), "after=%" PRIu64 "&limit=%u", after, page_limit);
            st = wh_get(s, path, query, now_ms, &body);
            text_printf(&t, "ledger %s %s %d ", wh_merchants[m], query, st);
            text_add(&t, body, strlen(body));
            text_add(&t, "\n", 1);
            const char *next = strstr(body, "\"next_after\":");
            if (st != 200 || next == NULL || strncmp(next + 13, "null", 4) == 0)
                break;
            after = strtoull(next + 13, NULL, 10);
        }
    }
    int rc = shard_store_outbox_scan(s, after_seq, SIZE_MAX, dump_event, &t);
    text_printf(&t, "outbox scan %d\n", rc);
    return t.buf;
}

uint64_t wh_hash(const char *text)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)text; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return h;
}

/* ---- the generator ---------------------------------------------------------------------- */

void wh_gen_init(struct wh_gen *g, unsigned seed, size_t pad_max, int auth_pct)
{
    memset(g, 0, sizeof(*g));
    g->seed = seed;
    g->pad_max = pad_max;
    g->auth_pct = auth_pct;
}

void wh_gen_free(struct wh_gen *g)
{
    for (size_t i = 0; i < g->nsent; i++)
        wh_req_free(&g->sent[i]);
    free(g->sent);
    free(g->pays);
    memset(g, 0, sizeof(*g));
}

static int rnd(struct wh_gen *g, int n)
{
    return (int)(rand_r(&g->seed) % (unsigned)n);
}

static void new_key(struct wh_gen *g, struct wh_req *r, const char *what)
{
    snprintf(r->key, sizeof(r->key), "k-%s-%lu", what, ++g->keyseq);
    snprintf(r->request_id, sizeof(r->request_id), "rq-%lu", g->keyseq);
}

static void gen_authorize(struct wh_gen *g, struct wh_req *r)
{
    static const char *const currencies[] = {"KRW", "KRW", "KRW", "USD", "USD", "EUR"};
    char head[256];
    int m = rnd(g, WH_MERCHANTS);
    int64_t amount = 1 + rnd(g, 50000);
    int n = snprintf(head, sizeof(head), "{\"merchant_id\":\"%s\",\"amount\":%" PRId64
                     ",\"currency\":\"%s\"", wh_merchants[m], amount, currencies[rnd(g, 6)]);
    if (rnd(g, 3) == 0)
        n += snprintf(head + n, sizeof(head) - (size_t)n, ",\"reference\":\"ref-%d\"",
                      rnd(g, 1000));
    size_t pad = g->pad_max ? (size_t)rnd(g, (int)g->pad_max + 1) : 0;
    r->body = malloc((size_t)n + pad + 2);
    assert_non_null(r->body);
    memcpy(r->body, head, (size_t)n);
    memset(r->body + n, ' ', pad);
    memcpy(r->body + (size_t)n + pad, "}", 2);
    snprintf(r->method, sizeof(r->method), "POST");
    snprintf(r->path, sizeof(r->path), "/v1/payments/authorize");
    new_key(g, r, "a");
}

/* A capture, void or refund of a recent payment (or of one that does not exist). */
static void gen_follow_up(struct wh_gen *g, struct wh_req *r, int what)
{
    static const char *const verbs[] = {"capture", "void", "refund"};
    char id[ID_BYTES + 1], body[64] = "{}";
    int merchant = rnd(g, WH_MERCHANTS);
    if (g->npays == 0 || rnd(g, 16) == 0) {
        snprintf(id, sizeof(id), "pay_00%016x", 0x7fff0000u + (unsigned)rnd(g, 1000));
    } else {
        size_t window = g->npays < 48 ? g->npays : 48;
        const struct wh_pay *p = &g->pays[g->npays - 1 - (size_t)rnd(g, (int)window)];
        memcpy(id, p->id, sizeof(id));
        merchant = rnd(g, 10) ? p->merchant : (p->merchant + 1) % WH_MERCHANTS;
        int64_t a = p->amount;
        int k = rnd(g, 4);
        if (what != 1 && k > 0) /* capture/refund: absent, all, half, or too much */
            snprintf(body, sizeof(body), "{\"amount\":%" PRId64 "}",
                     k == 1 ? a : k == 2 ? a / 2 + 1 : a + 1);
    }
    snprintf(r->method, sizeof(r->method), "POST");
    snprintf(r->path, sizeof(r->path), "/v1/payments/%s/%s", id, verbs[what]);
    r->body = strdup(body);
    assert_non_null(r->body);
    if (rnd(g, 100) < g->auth_pct)
        snprintf(r->auth, sizeof(r->auth), "%s", wh_merchants[merchant]);
    new_key(g, r, verbs[what]);
}

void wh_gen_next(struct wh_gen *g, struct wh_req *out)
{
    memset(out, 0, sizeof(*out));
    int r = rnd(g, 100);
    if (r < 12 && g->nsent > 0) { /* the same request again: an idempotent replay */
        size_t window = g->nsent < 64 ? g->nsent : 64;
        wh_req_copy(out, &g->sent[rnd(g, 2) ? g->nsent - 1 - (size_t)rnd(g, (int)window)
                                             : (size_t)rnd(g, (int)g->nsent)]);
    } else if (r < 17 && g->nsent > 0) { /* its key with another body: reused */
        wh_req_copy(out, &g->sent[(size_t)rnd(g, (int)g->nsent)]);
        free(out->body);
        size_t plen = strlen(out->path);
        out->body = strdup(strcmp(out->path, "/v1/payments/authorize") == 0
                               ? "{\"merchant_id\":\"m-a\",\"amount\":7,\"currency\":\"KRW\"}"
                           : plen > 5 && strcmp(out->path + plen - 5, "/void") == 0
                               ? "{ }"
                               : "{\"amount\":7}");
        assert_non_null(out->body);
    } else if (r < 45) {
        gen_authorize(g, out);
    } else if (r < 65) {
        gen_follow_up(g, out, 0);
    } else if (r < 75) {
        gen_follow_up(g, out, 1);
    } else if (r < 90) {
        gen_follow_up(g, out, 2);
    } else {
        gen_authorize(g, out);
    }
    if (g->nsent == g->sent_cap) {
        g->sent_cap = g->sent_cap ? 2 * g->sent_cap : 256;
        g->sent = realloc(g->sent, g->sent_cap * sizeof(*g->sent));
        assert_non_null(g->sent);
    }
    wh_req_copy(&g->sent[g->nsent++], out);
}

void wh_gen_learn(struct wh_gen *g, const struct wh_req *r, const struct wh_ans *a)
{
    if (strcmp(r->path, "/v1/payments/authorize") != 0 || a->status != 201 || a->replayed)
        return;
    if (g->npays == g->pays_cap) {
        g->pays_cap = g->pays_cap ? 2 * g->pays_cap : 256;
        g->pays = realloc(g->pays, g->pays_cap * sizeof(*g->pays));
        assert_non_null(g->pays);
    }
    struct wh_pay *p = &g->pays[g->npays++];
    assert_true(a->len > 7 + ID_BYTES && memcmp(a->body, "{\"id\":\"", 7) == 0);
    memcpy(p->id, a->body + 7, ID_BYTES);
    p->id[ID_BYTES] = '\0';
    const char *m = strstr(r->body, "\"merchant_id\":\"");
    assert_non_null(m);
    p->merchant = 0;
    for (int i = 0; i < WH_MERCHANTS; i++)
        if (strncmp(m + 15, wh_merchants[i], strlen(wh_merchants[i])) == 0 &&
            m[15 + strlen(wh_merchants[i])] == '"')
            p->merchant = i;
    const char *am = strstr(r->body, "\"amount\":");
    assert_non_null(am);
    p->amount = strtoll(am + 9, NULL, 10);
}

/* ---- plans ------------------------------------------------------------------------------ */

size_t wh_batch_first(const struct wh_plan *p, size_t b)
{
    return b ? p->batch_end[b - 1] : 0;
}

static void plan_apply(struct wh_plan *p, struct shard_store *ref, struct wh_gen *g,
                       size_t first, size_t n, int64_t now, bool per_op_hash)
{
    if (!per_op_hash) {
        int rc = wh_apply(ref, p->reqs + first, n, now, p->ref + first);
        assert_int_equal(rc, 0);
        assert_int_equal(wh_settle(ref), 0);
    }
    for (size_t i = first; i < first + n; i++) {
        if (per_op_hash) {
            assert_int_equal(wh_apply(ref, p->reqs + i, 1, now, p->ref + i), 0);
        }
        if (p->ref[i].rc != 0)
            fail_msg("the reference store answered op %zu with 503 (rc %d)", i, p->ref[i].rc);
        wh_gen_learn(g, &p->reqs[i], &p->ref[i]);
        if (per_op_hash) {
            char *d = wh_dump(ref, 0, p->dump_page, 0, now);
            p->op_hash[i + 1] = wh_hash(d);
            free(d);
        }
    }
    if (per_op_hash)
        assert_int_equal(wh_settle(ref), 0);
}

void wh_plan_make(struct wh_plan *p, struct shard_store *ref, unsigned seed, size_t nops,
                  size_t batch_max, size_t pad_max, int auth_pct, bool per_op_hash)
{
    memset(p, 0, sizeof(*p));
    p->nops = nops;
    p->reqs = calloc(nops, sizeof(*p->reqs));
    p->ref = calloc(nops, sizeof(*p->ref));
    p->batch_end = calloc(nops, sizeof(*p->batch_end));
    p->batch_now = calloc(nops, sizeof(*p->batch_now));
    p->dump_page = 1000;
    assert_true(p->reqs && p->ref && p->batch_end && p->batch_now);
    if (per_op_hash) {
        p->op_hash = calloc(nops + 1, sizeof(*p->op_hash));
        assert_non_null(p->op_hash);
        char *d = wh_dump(ref, 0, p->dump_page, 0, WH_NOW0);
        p->op_hash[0] = wh_hash(d);
        free(d);
    }
    struct wh_gen g;
    wh_gen_init(&g, seed, pad_max, auth_pct);
    unsigned bseed = seed * 7919u + 1;
    int64_t now = WH_NOW0;
    for (size_t first = 0; first < nops; p->nbatches++) {
        size_t n = 1 + (size_t)(rand_r(&bseed) % (unsigned)batch_max);
        if (n > nops - first)
            n = nops - first;
        now += 1 + rand_r(&bseed) % 20;
        for (size_t i = first; i < first + n; i++)
            wh_gen_next(&g, &p->reqs[i]);
        plan_apply(p, ref, &g, first, n, now, per_op_hash);
        first += n;
        p->batch_end[p->nbatches] = first;
        p->batch_now[p->nbatches] = now;
    }
    p->npays = g.npays;
    wh_gen_free(&g);
}

void wh_plan_free(struct wh_plan *p)
{
    for (size_t i = 0; i < p->nops; i++) {
        wh_req_free(&p->reqs[i]);
        wh_ans_free(&p->ref[i]);
    }
    free(p->reqs);
    free(p->ref);
    free(p->batch_end);
    free(p->batch_now);
    free(p->op_hash);
    memset(p, 0, sizeof(*p));
}

/* ---- forked children ------------------------------------------------------------------ */

void wh_child_fail(int fd, const char *fmt, ...)
{
    char msg[1024];
    int n = snprintf(msg, sizeof(msg), "FAIL ");
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg + n, sizeof(msg) - (size_t)n, fmt, ap);
    va_end(ap);
    size_t len = strlen(msg);
    if (write(fd, msg, len) != (ssize_t)len)
        _exit(2);
    _exit(1);
}
