/*
 * settle_event_parse (engine/settle.h): a strict recursive-descent JSON reader for the
 * engine's event values, then the checks of every member against the event's type.
 *
 * The reader validates RFC 8259 syntax itself (engine/json.c's reader accepts only flat
 * request objects): whitespace, the exact grammar of numbers and literals, strings
 * without raw control characters, valid UTF-8, escapes including surrogate pairs. Known
 * members are decoded into a table; a known member given twice is poison; unknown
 * members are checked and skipped, with nesting bounded by SETTLE_EVENT_DEPTH_MAX.
 * Nothing is allocated; the input is never trusted and never asserted on.
 */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "engine/assert.h"
#include "engine/ids.h"
#include "engine/payment.h"
#include "engine/settle.h"

/* ---- The reader -------------------------------------------------------------------- */

struct jp {
    const char *s;
    size_t n, i;
    char *reason; /* SETTLE_REASON_MAX_BYTES + 1 */
    bool failed;
};

static int jp_fail(struct jp *p, const char *fmt, ...)
{
    if (!p->failed) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(p->reason, SETTLE_REASON_MAX_BYTES + 1, fmt, ap);
        va_end(ap);
        p->failed = true;
    }
    return -EINVAL;
}

static void ws(struct jp *p)
{
    while (p->i < p->n &&
           (p->s[p->i] == ' ' || p->s[p->i] == '\t' || p->s[p->i] == '\n' || p->s[p->i] == '\r'))
        p->i++;
}

static bool lit(struct jp *p, const char *word)
{
    size_t k = strlen(word);
    if (p->n - p->i < k || memcmp(p->s + p->i, word, k) != 0)
        return false;
    p->i += k;
    return true;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

/* Four hex digits at s: the value, or -1. */
static long hex4(const char *s)
{
    long v = 0;
    for (int k = 0; k < 4; k++) {
        int h = hexval(s[k]);
        if (h < 0)
            return -1;
        v = v * 16 + h;
    }
    return v;
}

static size_t utf8_put(char *o, uint32_t cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* One escape after the backslash at p->i: appends its UTF-8 to tmp; -EINVAL if bad. */
static int escape(struct jp *p, char tmp[4], size_t *tlen)
{
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    if (p->i + 1 >= p->n)
        return jp_fail(p, "unterminated string");
    char c = p->s[p->i + 1];
    const char *f = c != 'u' && c != '\0' ? strchr(from, c) : NULL;
    if (f != NULL) {
        tmp[0] = to[f - from];
        *tlen = 1;
        p->i += 2;
        return 0;
    }
    if (c != 'u' || p->n - p->i < 6)
        return jp_fail(p, "bad escape in a string");
    long cp = hex4(p->s + p->i + 2);
    p->i += 6;
    if (cp < 0 || (cp >= 0xdc00 && cp <= 0xdfff))
        return jp_fail(p, "bad \\u escape in a string");
    if (cp >= 0xd800 && cp <= 0xdbff) {
        long lo = p->n - p->i >= 6 && p->s[p->i] == '\\' && p->s[p->i + 1] == 'u'
                      ? hex4(p->s + p->i + 2)
                      : -1;
        if (lo < 0xdc00 || lo > 0xdfff)
            return jp_fail(p, "lone surrogate in a string");
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        p->i += 6;
    }
    *tlen = utf8_put(tmp, (uint32_t)cp);
    return 0;
}

/* A byte a string holds as itself: printable ASCII other than '"' and '\\'. */
static bool plain_byte(unsigned char c)
{
    return c >= 0x20 && c < 0x80 && c != '"' && c != '\\';
}

/* Appends n decoded bytes to out at *w, keeping what fits in cap - 1 bytes (the rest is
 * only counted). */
static void string_put(char *out, size_t cap, size_t *w, const char *src, size_t n)
{
    if (out != NULL && *w + 1 < cap) {
        size_t room = cap - 1 - *w;
        memcpy(out + *w, src, n < room ? n : room);
    }
    *w += n;
}

/* A string at p->i (which must be '"'): decoded into out (cap bytes with the NUL) when
 * out != NULL, its decoded length in *len. Returns 0, -EINVAL (syntax), or -E2BIG when
 * it is valid but longer than cap - 1 (the position is then past it). Runs of plain
 * ASCII are copied whole; the UTF-8 check runs only when a byte >= 0x80 was seen (ASCII
 * is valid UTF-8), so the engine's all-ASCII values cost a scan and a copy. */
static int string(struct jp *p, char *out, size_t cap, size_t *len)
{
    if (p->i >= p->n || p->s[p->i] != '"')
        return jp_fail(p, "expected a string");
    size_t begin = ++p->i, w = 0;
    bool ascii = true;
    while (p->i < p->n) {
        size_t run = p->i;
        while (run < p->n && plain_byte((unsigned char)p->s[run]))
            run++;
        string_put(out, cap, &w, p->s + p->i, run - p->i);
        p->i = run;
        if (p->i >= p->n || p->s[p->i] == '"')
            break;
        unsigned char c = (unsigned char)p->s[p->i];
        char tmp[4];
        size_t tlen = 1;
        if (c < 0x20)
            return jp_fail(p, "control character in a string");
        if (c == '\\') {
            if (escape(p, tmp, &tlen))
                return -EINVAL;
        } else {
            ascii = false;
            tmp[0] = (char)c;
            p->i++;
        }
        string_put(out, cap, &w, tmp, tlen);
    }
    if (p->i >= p->n)
        return jp_fail(p, "unterminated string");
    if (!ascii && !json_utf8_valid(p->s + begin, p->i - begin, NULL))
        return jp_fail(p, "a string is not valid UTF-8");
    p->i++;
    if (len)
        *len = w;
    if (out != NULL) {
        out[w + 1 < cap ? w : cap - 1] = '\0';
        if (w + 1 > cap)
            return -E2BIG;
    }
    return 0;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* An RFC 8259 number at p->i. *integer: a plain non-negative integer whose value
 * (<= AMOUNT_MAX, else *integer is false) is in *v. */
static int number(struct jp *p, bool *integer, int64_t *v)
{
    size_t b = p->i;
    bool neg = false, frac = false;
    if (p->i < p->n && p->s[p->i] == '-') {
        neg = true;
        p->i++;
    }
    if (p->i >= p->n || !is_digit(p->s[p->i]))
        return jp_fail(p, "bad number");
    if (p->s[p->i] == '0')
        p->i++;
    else
        while (p->i < p->n && is_digit(p->s[p->i]))
            p->i++;
    size_t int_end = p->i;
    if (p->i < p->n && p->s[p->i] == '.') {
        frac = true;
        if (++p->i >= p->n || !is_digit(p->s[p->i]))
            return jp_fail(p, "bad number");
        while (p->i < p->n && is_digit(p->s[p->i]))
            p->i++;
    }
    if (p->i < p->n && (p->s[p->i] == 'e' || p->s[p->i] == 'E')) {
        frac = true;
        p->i++;
        if (p->i < p->n && (p->s[p->i] == '+' || p->s[p->i] == '-'))
            p->i++;
        if (p->i >= p->n || !is_digit(p->s[p->i]))
            return jp_fail(p, "bad number");
        while (p->i < p->n && is_digit(p->s[p->i]))
            p->i++;
    }
    *integer = !neg && !frac && int_end - b <= 16;
    *v = 0;
    for (size_t k = b; *integer && k < int_end; k++)
        *v = *v * 10 + (p->s[k] - '0');
    if (*integer && *v > AMOUNT_MAX)
        *integer = false;
    return 0;
}

static int value_skip(struct jp *p, int depth);

/* Skips an object or array at p->i whose opener is open ('{' or '['). */
static int container_skip(struct jp *p, int depth, char open)
{
    char close = open == '{' ? '}' : ']';
    if (depth >= SETTLE_EVENT_DEPTH_MAX)
        return jp_fail(p, "nested too deep");
    p->i++;
    ws(p);
    if (p->i < p->n && p->s[p->i] == close) {
        p->i++;
        return 0;
    }
    for (;;) {
        if (open == '{') {
            if (string(p, NULL, 0, NULL))
                return -EINVAL;
            ws(p);
            if (p->i >= p->n || p->s[p->i] != ':')
                return jp_fail(p, "expected ':'");
            p->i++;
            ws(p);
        }
        if (value_skip(p, depth + 1))
            return -EINVAL;
        ws(p);
        if (p->i < p->n && p->s[p->i] == ',') {
            p->i++;
            ws(p);
            continue;
        }
        if (p->i < p->n && p->s[p->i] == close) {
            p->i++;
            return 0;
        }
        return jp_fail(p, "expected ',' or '%c'", close);
    }
}

/* Checks and skips any value at p->i. */
static int value_skip(struct jp *p, int depth)
{
    if (p->i >= p->n)
        return jp_fail(p, "truncated value");
    char c = p->s[p->i];
    if (c == '"')
        return string(p, NULL, 0, NULL);
    if (c == '{' || c == '[')
        return container_skip(p, depth, c);
    if (lit(p, "true") || lit(p, "false") || lit(p, "null"))
        return 0;
    bool integer;
    int64_t v;
    return number(p, &integer, &v);
}

/* ---- Known members ----------------------------------------------------------------- */

enum jf_kind {
    JF_STRING = 1,      /* decoded into buf */
    JF_INT,             /* a plain integer 0..AMOUNT_MAX */
    JF_NULLABLE_STRING, /* a string or null */
    JF_OBJECT,          /* an object with its own member table */
};

struct jfield {
    const char *name;
    enum jf_kind kind;
    char *buf; /* STRING: cap bytes */
    size_t cap;
    struct jfield *sub; /* OBJECT: its members */
    size_t nsub;
    const char *prefix; /* OBJECT: the member path for reasons, e.g. "payment." */
    /* out */
    bool present;
    bool is_null;
    size_t len;
    int64_t num;
};

static int object(struct jp *p, struct jfield *f, size_t nf, const char *prefix, int depth);

static int member_value(struct jp *p, struct jfield *f, const char *prefix, int depth)
{
    if (f->present)
        return jp_fail(p, "member %s%s given twice", prefix, f->name);
    f->present = true;
    char c = p->i < p->n ? p->s[p->i] : '\0';
    if (f->kind == JF_NULLABLE_STRING && lit(p, "null")) {
        f->is_null = true;
        return 0;
    }
    if ((f->kind == JF_STRING || f->kind == JF_NULLABLE_STRING) && c == '"') {
        int rc = string(p, f->buf, f->cap, &f->len);
        if (rc == -E2BIG)
            return jp_fail(p, "member %s%s is too long", prefix, f->name);
        return rc;
    }
    if (f->kind == JF_INT && (c == '-' || is_digit(c))) {
        bool integer;
        if (number(p, &integer, &f->num))
            return -EINVAL;
        if (!integer)
            return jp_fail(p, "member %s%s is not an integer 0..10^15", prefix, f->name);
        return 0;
    }
    if (f->kind == JF_OBJECT && c == '{')
        return object(p, f->sub, f->nsub, f->prefix, depth + 1);
    if (value_skip(p, depth + 1))
        return -EINVAL;
    return jp_fail(p, "member %s%s has the wrong type", prefix, f->name);
}

/* An object at p->i whose members are matched against f[0..nf). */
static int object(struct jp *p, struct jfield *f, size_t nf, const char *prefix, int depth)
{
    if (depth >= SETTLE_EVENT_DEPTH_MAX)
        return jp_fail(p, "nested too deep");
    if (p->i >= p->n || p->s[p->i] != '{')
        return jp_fail(p, "expected an object");
    p->i++;
    ws(p);
    if (p->i < p->n && p->s[p->i] == '}') {
        p->i++;
        return 0;
    }
    for (;;) {
        char key[32];
        size_t klen = 0;
        int rc = string(p, key, sizeof(key), &klen);
        if (rc == -EINVAL)
            return rc;
        bool known_len = rc == 0 && strlen(key) == klen; /* no NUL inside, not cut */
        ws(p);
        if (p->i >= p->n || p->s[p->i] != ':')
            return jp_fail(p, "expected ':'");
        p->i++;
        ws(p);
        struct jfield *m = NULL;
        for (size_t k = 0; known_len && k < nf && m == NULL; k++)
            if (f[k].name[0] == key[0] && strcmp(f[k].name, key) == 0)
                m = &f[k];
        rc = m ? member_value(p, m, prefix, depth) : value_skip(p, depth + 1);
        if (rc)
            return rc;
        ws(p);
        if (p->i < p->n && p->s[p->i] == ',') {
            p->i++;
            ws(p);
            continue;
        }
        if (p->i < p->n && p->s[p->i] == '}') {
            p->i++;
            return 0;
        }
        return jp_fail(p, "expected ',' or '}'");
    }
}

/* ---- The event ----------------------------------------------------------------------- */

/* Buffers of the decoded strings, one byte longer than any valid value so that a longer
 * one is caught as too long rather than cut. */
struct ev_bufs {
    char event_id[EVENT_ID_BYTES + 2], type[32], occurred_at[JSON_TIME_BYTES + 2];
    char p_id[ID_BYTES + 2], p_merchant[MERCHANT_ID_MAX_BYTES + 2], p_currency[8];
    char p_status[32], p_reference[REFERENCE_MAX_BYTES + 2];
    char p_created[JSON_TIME_BYTES + 2], p_updated[JSON_TIME_BYTES + 2];
    char r_id[ID_BYTES + 2], r_payment[ID_BYTES + 2], r_currency[8], r_status[32];
    char r_created[JSON_TIME_BYTES + 2];
};

enum {
    P_ID,
    P_MERCHANT,
    P_AMOUNT,
    P_CURRENCY,
    P_STATUS,
    P_CAPTURED,
    P_REFUNDED,
    P_REFERENCE,
    P_CREATED,
    P_UPDATED,
    P_COUNT
};
enum { R_ID, R_PAYMENT, R_AMOUNT, R_CURRENCY, R_STATUS, R_CREATED, R_COUNT };
enum { E_ID, E_TYPE, E_OCCURRED, E_AMOUNT, E_RELEASED, E_REFUND, E_PAYMENT, E_COUNT };

#define STR(n, b)                                                                                  \
    {                                                                                              \
        .name = (n), .kind = JF_STRING, .buf = (b), .cap = sizeof(b)                               \
    }
#define INT(n)                                                                                     \
    {                                                                                              \
        .name = (n), .kind = JF_INT                                                                \
    }

struct ev_tables {
    struct ev_bufs b;
    struct jfield pay[P_COUNT], ref[R_COUNT], top[E_COUNT];
};

static void tables_init(struct ev_tables *t)
{
    memset(t, 0, sizeof(*t));
    struct ev_bufs *b = &t->b;
    struct jfield pay[P_COUNT] = {
        [P_ID] = STR("id", b->p_id),
        [P_MERCHANT] = STR("merchant_id", b->p_merchant),
        [P_AMOUNT] = INT("amount"),
        [P_CURRENCY] = STR("currency", b->p_currency),
        [P_STATUS] = STR("status", b->p_status),
        [P_CAPTURED] = INT("captured_amount"),
        [P_REFUNDED] = INT("refunded_amount"),
        [P_REFERENCE] = {.name = "reference",
                         .kind = JF_NULLABLE_STRING,
                         .buf = b->p_reference,
                         .cap = sizeof(b->p_reference)},
        [P_CREATED] = STR("created_at", b->p_created),
        [P_UPDATED] = STR("updated_at", b->p_updated),
    };
    struct jfield ref[R_COUNT] = {
        [R_ID] = STR("id", b->r_id),
        [R_PAYMENT] = STR("payment_id", b->r_payment),
        [R_AMOUNT] = INT("amount"),
        [R_CURRENCY] = STR("currency", b->r_currency),
        [R_STATUS] = STR("payment_status", b->r_status),
        [R_CREATED] = STR("created_at", b->r_created),
    };
    memcpy(t->pay, pay, sizeof(pay));
    memcpy(t->ref, ref, sizeof(ref));
    struct jfield top[E_COUNT] = {
        [E_ID] = STR("event_id", b->event_id),
        [E_TYPE] = STR("type", b->type),
        [E_OCCURRED] = STR("occurred_at", b->occurred_at),
        [E_AMOUNT] = INT("amount"),
        [E_RELEASED] = INT("released_amount"),
        [E_REFUND] = {.name = "refund",
                      .kind = JF_OBJECT,
                      .sub = t->ref,
                      .nsub = R_COUNT,
                      .prefix = "refund."},
        [E_PAYMENT] = {.name = "payment",
                       .kind = JF_OBJECT,
                       .sub = t->pay,
                       .nsub = P_COUNT,
                       .prefix = "payment."},
    };
    memcpy(t->top, top, sizeof(top));
}

/* Which members each type has (besides event_id, type, occurred_at, amount, payment). */
static bool has_released(enum settle_event_type t)
{
    return t == SETTLE_EVENT_CAPTURED || t == SETTLE_EVENT_VOIDED;
}

static int status_parse(const struct jfield *f)
{
    static const char *const names[] = {"authorized", "captured", "partially_refunded", "refunded",
                                        "voided"};
    static const int values[] = {PAYMENT_AUTHORIZED, PAYMENT_CAPTURED, PAYMENT_PARTIALLY_REFUNDED,
                                 PAYMENT_REFUNDED, PAYMENT_VOIDED};
    for (size_t k = 0; k < ARRAY_LEN(names); k++)
        if (f->len == strlen(names[k]) && memcmp(f->buf, names[k], f->len) == 0)
            return values[k];
    return 0;
}

static int type_parse(const struct jfield *f)
{
    for (int t = SETTLE_EVENT_AUTHORIZED; t <= SETTLE_EVENT_REFUNDED; t++) {
        const char *name = settle_event_type_name((enum settle_event_type)t);
        if (f->len == strlen(name) && memcmp(f->buf, name, f->len) == 0)
            return t;
    }
    return 0;
}

/* "evt_" 2 hex "_" 16 hex, lower case, sequence >= 1. */
static int event_id_parse(const char *s, size_t len, uint32_t *shard, uint64_t *seq)
{
    if (len != EVENT_ID_BYTES || memcmp(s, "evt_", 4) != 0 || s[6] != '_')
        return -EINVAL;
    uint64_t v = 0;
    for (size_t k = 4; k < EVENT_ID_BYTES; k++) {
        if (k == 6)
            continue;
        int h = s[k] >= 'A' && s[k] <= 'F' ? -1 : hexval(s[k]);
        if (h < 0)
            return -EINVAL;
        if (k == 5)
            *shard = (uint32_t)(hexval(s[4]) * 16 + h);
        if (k >= 7)
            v = v << 4 | (uint64_t)h;
    }
    if (v == 0)
        return -EINVAL;
    *seq = v;
    return 0;
}

static bool merchant_valid(const char *m, size_t len)
{
    if (len < 1 || len > MERCHANT_ID_MAX_BYTES)
        return false;
    for (size_t k = 0; k < len; k++) {
        char c = m[k];
        if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

static bool currency_valid(const char *c, size_t len)
{
    return len == CURRENCY_BYTES && c[0] >= 'A' && c[0] <= 'Z' && c[1] >= 'A' && c[1] <= 'Z' &&
           c[2] >= 'A' && c[2] <= 'Z';
}

/* The payment invariants of engine/payment.h, as a predicate over untrusted values. */
static bool payment_state_valid(int status, int64_t a, int64_t c, int64_t r)
{
    if (a < AMOUNT_MIN || a > AMOUNT_MAX || r < 0 || c < r || c > a)
        return false;
    switch (status) {
    case PAYMENT_AUTHORIZED:
    case PAYMENT_VOIDED:
        return c == 0 && r == 0;
    case PAYMENT_CAPTURED:
        return c >= 1 && r == 0;
    case PAYMENT_PARTIALLY_REFUNDED:
        return r > 0 && r < c;
    case PAYMENT_REFUNDED:
        return c >= 1 && r == c;
    }
    return false;
}

static const char *const member_names[E_COUNT] = {
    "event_id", "type", "occurred_at", "amount", "released_amount", "refund", "payment"};

/* Presence: required members of every event and of its type; members of other types
 * absent. */
static int presence(struct jp *p, const struct ev_tables *t, enum settle_event_type type)
{
    bool need[E_COUNT] = {true, true, true, true, has_released(type), type == SETTLE_EVENT_REFUNDED,
                          true};
    for (int k = 0; k < E_COUNT; k++) {
        if (need[k] && !t->top[k].present)
            return jp_fail(p, "member %s is missing", member_names[k]);
        if (!need[k] && t->top[k].present)
            return jp_fail(p, "member %s does not belong to %s", member_names[k],
                           settle_event_type_name(type));
    }
    for (int k = 0; k < P_COUNT; k++)
        if (!t->pay[k].present)
            return jp_fail(p, "member payment.%s is missing", t->pay[k].name);
    for (int k = 0; type == SETTLE_EVENT_REFUNDED && k < R_COUNT; k++)
        if (!t->ref[k].present)
            return jp_fail(p, "member refund.%s is missing", t->ref[k].name);
    return 0;
}

/* The payment object: fills ev, checks its own invariants. */
static int payment_members(struct jp *p, const struct ev_tables *t, struct settle_event *ev,
                           int *status, int64_t *updated_ms)
{
    const struct jfield *f = t->pay;
    uint32_t shard;
    int64_t created;
    if (ids_parse(f[P_ID].buf, f[P_ID].len, IDS_PAYMENT, &shard, NULL))
        return jp_fail(p, "payment.id is not a payment id");
    if (shard != ev->event_shard)
        return jp_fail(p, "payment.id is of another shard than event_id");
    if (!merchant_valid(f[P_MERCHANT].buf, f[P_MERCHANT].len))
        return jp_fail(p, "payment.merchant_id is not a merchant id");
    if (!currency_valid(f[P_CURRENCY].buf, f[P_CURRENCY].len))
        return jp_fail(p, "payment.currency is not three upper-case letters");
    if ((*status = status_parse(&f[P_STATUS])) == 0)
        return jp_fail(p, "payment.status is unknown");
    if (!payment_state_valid(*status, f[P_AMOUNT].num, f[P_CAPTURED].num, f[P_REFUNDED].num))
        return jp_fail(p, "payment amounts are impossible for its status");
    if (settle_time_parse(f[P_CREATED].buf, f[P_CREATED].len, &created) ||
        settle_time_parse(f[P_UPDATED].buf, f[P_UPDATED].len, updated_ms) || created > *updated_ms)
        return jp_fail(p, "payment.created_at or updated_at is not a valid time");
    memcpy(ev->payment_id, f[P_ID].buf, ID_BYTES);
    memcpy(ev->merchant_id, f[P_MERCHANT].buf, f[P_MERCHANT].len);
    ev->merchant_id_len = (uint8_t)f[P_MERCHANT].len;
    memcpy(ev->currency, f[P_CURRENCY].buf, CURRENCY_BYTES);
    ev->payment_amount = f[P_AMOUNT].num;
    ev->captured_amount = f[P_CAPTURED].num;
    ev->refunded_amount = f[P_REFUNDED].num;
    return 0;
}

/* The refund object of a payment.refunded event. */
static int refund_members(struct jp *p, const struct ev_tables *t, struct settle_event *ev,
                          int status)
{
    const struct jfield *f = t->ref;
    uint32_t shard;
    int64_t created;
    if (ids_parse(f[R_ID].buf, f[R_ID].len, IDS_REFUND, &shard, NULL) || shard != ev->event_shard)
        return jp_fail(p, "refund.id is not a refund id of the event's shard");
    if (f[R_PAYMENT].len != ID_BYTES || memcmp(f[R_PAYMENT].buf, ev->payment_id, ID_BYTES) != 0)
        return jp_fail(p, "refund.payment_id is not the payment's id");
    if (f[R_AMOUNT].num != ev->amount)
        return jp_fail(p, "refund.amount differs from amount");
    if (f[R_CURRENCY].len != CURRENCY_BYTES ||
        memcmp(f[R_CURRENCY].buf, ev->currency, CURRENCY_BYTES) != 0)
        return jp_fail(p, "refund.currency differs from the payment's");
    if (status_parse(&f[R_STATUS]) != status)
        return jp_fail(p, "refund.payment_status differs from the payment's status");
    if (settle_time_parse(f[R_CREATED].buf, f[R_CREATED].len, &created) ||
        created != ev->occurred_at_ms)
        return jp_fail(p, "refund.created_at differs from occurred_at");
    memcpy(ev->refund_id, f[R_ID].buf, ID_BYTES);
    return 0;
}

/* The event's amounts against the payment after the change. */
static int amounts(struct jp *p, const struct ev_tables *t, const struct settle_event *ev,
                   int status)
{
    int64_t a = ev->payment_amount, c = ev->captured_amount, r = ev->refunded_amount;
    int64_t rel = t->top[E_RELEASED].num;
    switch (ev->type) {
    case SETTLE_EVENT_AUTHORIZED:
        if (status != PAYMENT_AUTHORIZED || ev->amount != a)
            return jp_fail(p, "an authorization's amount or status does not match its payment");
        return 0;
    case SETTLE_EVENT_CAPTURED:
        if (status != PAYMENT_CAPTURED || ev->amount != c || rel != a - c)
            return jp_fail(p, "a capture's amounts or status do not match its payment");
        return 0;
    case SETTLE_EVENT_VOIDED:
        if (status != PAYMENT_VOIDED || ev->amount != a || rel != a)
            return jp_fail(p, "a void's amounts or status do not match its payment");
        return 0;
    case SETTLE_EVENT_REFUNDED:
        if ((status != PAYMENT_PARTIALLY_REFUNDED && status != PAYMENT_REFUNDED) || ev->amount > r)
            return jp_fail(p, "a refund's amount or status does not match its payment");
        return 0;
    }
    UNREACHABLE();
    return -EINVAL;
}

static int event_check(struct jp *p, struct ev_tables *t, const char *topic, size_t topic_len,
                       struct settle_event *ev)
{
    const struct jfield *f = t->top;
    int status = 0;
    int64_t updated = -1;
    if (!f[E_ID].present ||
        event_id_parse(f[E_ID].buf, f[E_ID].len, &ev->event_shard, &ev->event_seq))
        return jp_fail(p, "event_id is missing or not an engine event id");
    memcpy(ev->event_id, f[E_ID].buf, EVENT_ID_BYTES);
    if (!f[E_TYPE].present || (ev->type = (enum settle_event_type)type_parse(&f[E_TYPE])) == 0)
        return jp_fail(p, "type is missing or unknown");
    if (topic != NULL &&
        (topic_len != f[E_TYPE].len || memcmp(topic, f[E_TYPE].buf, topic_len) != 0))
        return jp_fail(p, "type differs from the topic");
    if (presence(p, t, ev->type))
        return -EINVAL;
    if (settle_time_parse(f[E_OCCURRED].buf, f[E_OCCURRED].len, &ev->occurred_at_ms))
        return jp_fail(p, "occurred_at is not an engine timestamp");
    if (f[E_AMOUNT].num < AMOUNT_MIN)
        return jp_fail(p, "amount is not 1..10^15");
    ev->amount = f[E_AMOUNT].num;
    if (payment_members(p, t, ev, &status, &updated))
        return -EINVAL;
    if (updated != ev->occurred_at_ms)
        return jp_fail(p, "occurred_at differs from payment.updated_at");
    if (ev->type == SETTLE_EVENT_REFUNDED && refund_members(p, t, ev, status))
        return -EINVAL;
    return amounts(p, t, ev, status);
}

int settle_event_parse(const char *topic, size_t topic_len, const char *value, size_t len,
                       struct settle_event *ev, char reason[SETTLE_REASON_MAX_BYTES + 1])
{
    ASSERT(ev != NULL && reason != NULL && (value != NULL || len == 0));
    struct ev_tables t;
    struct jp p = {.s = value, .n = len, .i = 0, .reason = reason, .failed = false};
    memset(ev, 0, sizeof(*ev));
    reason[0] = '\0';
    if (len > SETTLE_EVENT_MAX_BYTES)
        return jp_fail(&p, "value longer than %d bytes", SETTLE_EVENT_MAX_BYTES);
    tables_init(&t);
    ws(&p);
    if (object(&p, t.top, E_COUNT, "", 0))
        return -EINVAL;
    ws(&p);
    if (p.i != p.n)
        return jp_fail(&p, "text after the JSON object");
    if (event_check(&p, &t, topic, topic_len, ev)) {
        memset(ev, 0, sizeof(*ev));
        return -EINVAL;
    }
    return 0;
}
