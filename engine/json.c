/*
 * Strict JSON reader for flat request objects, and the answer writer (engine/json.h).
 *
 * The reader lets jsmn (strict mode) find the tokens, then checks what jsmn does not:
 * the bytes between tokens (exactly one ':' after a key, exactly one ',' between
 * members, nothing else but whitespace), the grammar of every primitive (RFC 8259
 * numbers and the three literals), raw control characters and NUL bytes, and that
 * nothing but whitespace surrounds the object. Only then are members matched against
 * the caller's fields, so a syntax error anywhere wins over a bad member.
 *
 * This is the one translation unit that includes jsmn's implementation.
 */
#define JSMN_STATIC
#define JSMN_STRICT
#include <jsmn.h>

#include <errno.h>
#include <string.h>

#include "engine/assert.h"
#include "engine/json.h"

/* ---- Reader: syntax ---------------------------------------------------------------- */

static bool is_ws(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}

/* Whether s[from..to) is whitespace around exactly `sep` (or only whitespace when sep
 * is 0). */
static bool gap_ok(const char *s, int from, int to, char sep)
{
    bool seen = false;
    for (int i = from; i < to; i++) {
        if (is_ws(s[i]))
            continue;
        if (sep == 0 || seen || s[i] != sep)
            return false;
        seen = true;
    }
    return sep == 0 || seen;
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

/* RFC 8259 number, or true/false/null, spanning exactly s[0..n). */
static bool primitive_ok(const char *s, size_t n)
{
    if ((n == 4 && memcmp(s, "true", 4) == 0) || (n == 5 && memcmp(s, "false", 5) == 0) ||
        (n == 4 && memcmp(s, "null", 4) == 0))
        return true;
    size_t i = 0;
    if (i < n && s[i] == '-')
        i++;
    if (i >= n || !is_digit(s[i]))
        return false;
    if (s[i] == '0')
        i++;
    else
        while (i < n && is_digit(s[i]))
            i++;
    if (i < n && s[i] == '.') {
        i++;
        if (i >= n || !is_digit(s[i]))
            return false;
        while (i < n && is_digit(s[i]))
            i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= n || !is_digit(s[i]))
            return false;
        while (i < n && is_digit(s[i]))
            i++;
    }
    return i == n;
}

/* A string token's text has no raw control characters (jsmn checked the escapes). */
static bool string_ok(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if ((unsigned char)s[i] < 0x20)
            return false;
    return true;
}

/* First and one-past-last byte of a token in the body (strings include their quotes). */
static int tok_begin(const jsmntok_t *t)
{
    return t->type == JSMN_STRING ? t->start - 1 : t->start;
}

static int tok_end(const jsmntok_t *t)
{
    return t->type == JSMN_STRING ? t->end + 1 : t->end;
}

/* Index of the first token after the value at toks[i] (skips a nested value's
 * tokens), or ntok when the value is cut off (truncated token array). */
static int skip_value(const jsmntok_t *toks, int ntok, int i)
{
    if (toks[i].type != JSMN_OBJECT && toks[i].type != JSMN_ARRAY)
        return i + 1;
    if (toks[i].end < 0)
        return ntok;
    int j = i + 1;
    while (j < ntok && toks[j].start >= 0 && toks[j].start < toks[i].end)
        j++;
    return j;
}

/* Checks one key/value pair at toks[k], toks[k + 1], whose key must start after
 * `prev_end` with a comma unless it is the first. Returns the next token index, ntok
 * when the tokens ran out, or -1 on a syntax error. */
static int member_syntax(const char *s, const jsmntok_t *toks, int ntok, int k, int *prev_end,
                         bool first)
{
    const jsmntok_t *key = &toks[k];
    if (key->type != JSMN_STRING || !gap_ok(s, *prev_end, tok_begin(key), first ? 0 : ','))
        return -1;
    if (!string_ok(s + key->start, (size_t)(key->end - key->start)))
        return -1;
    if (k + 1 >= ntok)
        return ntok;
    const jsmntok_t *val = &toks[k + 1];
    if (key->size != 1 || !gap_ok(s, tok_end(key), tok_begin(val), ':'))
        return -1;
    if (val->type == JSMN_PRIMITIVE &&
        !primitive_ok(s + val->start, (size_t)(val->end - val->start)))
        return -1;
    if (val->type == JSMN_STRING && !string_ok(s + val->start, (size_t)(val->end - val->start)))
        return -1;
    int next = skip_value(toks, ntok, k + 1);
    if (next < ntok || val->end >= 0)
        *prev_end = tok_end(val);
    return next;
}

/* Syntax of the whole body. truncated: jsmn ran out of tokens (ntok were filled). */
static bool body_syntax(const char *s, size_t len, const jsmntok_t *toks, int ntok, bool truncated)
{
    if (ntok < 1 || toks[0].type != JSMN_OBJECT || !gap_ok(s, 0, toks[0].start, 0))
        return false;
    int prev_end = toks[0].start + 1;
    int i = 1;
    for (int m = 0; i < ntok; m++) {
        if (!truncated && m >= toks[0].size)
            return false; /* a token outside the root: a second value */
        i = member_syntax(s, toks, ntok, i, &prev_end, m == 0);
        if (i < 0)
            return false;
    }
    if (truncated)
        return true;
    return gap_ok(s, prev_end, toks[0].end - 1, 0) && gap_ok(s, toks[0].end, (int)len, 0);
}

/* ---- Reader: members --------------------------------------------------------------- */

static int hex4(const char *s)
{
    int v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c - 'A' + 10;
        v = v * 16 + d;
    }
    return v;
}

static size_t put_utf8(char *o, uint32_t cp)
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

/* Decodes an escape at s[i] == '\\' into o; returns bytes of input consumed, or 0 for a
 * lone surrogate. */
static size_t decode_escape(const char *s, size_t n, size_t i, char *o, size_t *olen)
{
    char c = s[i + 1];
    static const char from[] = "\"\\/bfnrt", to[] = "\"\\/\b\f\n\r\t";
    const char *p = c != 'u' ? strchr(from, c) : NULL;
    if (p != NULL) {
        *o = to[p - from];
        *olen = 1;
        return 2;
    }
    ASSERT(c == 'u' && i + 6 <= n);
    uint32_t cp = (uint32_t)hex4(s + i + 2);
    size_t used = 6;
    if (cp >= 0xdc00 && cp <= 0xdfff)
        return 0;
    if (cp >= 0xd800 && cp <= 0xdbff) {
        if (i + 12 > n || s[i + 6] != '\\' || s[i + 7] != 'u')
            return 0;
        uint32_t lo = (uint32_t)hex4(s + i + 8);
        if (lo < 0xdc00 || lo > 0xdfff)
            return 0;
        cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
        used = 12;
    }
    *olen = put_utf8(o, cp);
    return used;
}

/* Decodes the JSON string text s[0..n) (without quotes) into out (cap bytes, NUL
 * written when cap > 0). *total gets the full decoded length, which may exceed cap - 1.
 * Returns false when the text is not valid UTF-8 after decoding. */
static bool decode_string(const char *s, size_t n, char *out, size_t cap, size_t *total)
{
    if (!json_utf8_valid(s, n, NULL))
        return false;
    size_t w = 0;
    for (size_t i = 0; i < n;) {
        char tmp[4];
        size_t tlen = 1, used = 1;
        tmp[0] = s[i];
        if (s[i] == '\\') {
            used = decode_escape(s, n, i, tmp, &tlen);
            if (used == 0)
                return false;
        }
        for (size_t j = 0; j < tlen; j++, w++)
            if (w + 1 < cap)
                out[w] = tmp[j];
        i += used;
    }
    if (cap > 0)
        out[w + 1 < cap ? w : cap - 1] = '\0';
    *total = w;
    return true;
}

static int param_error(struct json_error *err, const char *param, size_t len, const char *message)
{
    err->kind = JSON_ERR_PARAM;
    err->message = message;
    /* Cut at a UTF-8 boundary: back off over continuation bytes. */
    if (len > API_PARAM_MAX_BYTES) {
        len = API_PARAM_MAX_BYTES;
        while (len > 0 && ((unsigned char)param[len] & 0xc0) == 0x80)
            len--;
    }
    memcpy(err->param, param, len);
    err->param[len] = '\0';
    return -EINVAL;
}

#define AMOUNT_MESSAGE "must be an integer from 1 to 1000000000000000"

static bool amount_parse(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 16 || s[0] < '1' || s[0] > '9')
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (!is_digit(s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < AMOUNT_MIN || v > AMOUNT_MAX)
        return false;
    *out = v;
    return true;
}

/* Stores the value toks[v] into field f; -EINVAL with *err on a bad value. */
static int member_value(const char *s, const jsmntok_t *val, struct json_field *f,
                        struct json_error *err)
{
    const char *text = s + val->start;
    size_t n = (size_t)(val->end - val->start);
    if (val->type == JSMN_PRIMITIVE && n == 4 && memcmp(text, "null", 4) == 0) {
        if (f->required)
            return param_error(err, f->name, strlen(f->name), "is required");
        return 0;
    }
    if (f->type == JSON_FIELD_AMOUNT) {
        if (val->type != JSMN_PRIMITIVE || !amount_parse(text, n, &f->amount))
            return param_error(err, f->name, strlen(f->name), AMOUNT_MESSAGE);
        f->present = true;
        return 0;
    }
    ASSERT(f->type == JSON_FIELD_STRING);
    if (val->type != JSMN_STRING)
        return param_error(err, f->name, strlen(f->name), "must be a string");
    if (!decode_string(text, n, f->buf, f->cap, &f->len))
        return param_error(err, f->name, strlen(f->name), "must be valid UTF-8");
    if (f->len + 1 > f->cap)
        return param_error(err, f->name, strlen(f->name), "is too long");
    f->present = true;
    return 0;
}

/* Matches the members in body order against the fields. */
static int members(const char *s, const jsmntok_t *toks, int ntok, struct json_field *fields,
                   size_t nfields, bool *seen, struct json_error *err)
{
    for (int i = 1; i + 1 < ntok; i = skip_value(toks, ntok, i + 1)) {
        char key[API_PARAM_MAX_BYTES + 8];
        size_t klen;
        const jsmntok_t *k = &toks[i];
        if (!decode_string(s + k->start, (size_t)(k->end - k->start), key, sizeof(key), &klen))
            return param_error(err, "", 0, "field name must be valid UTF-8");
        size_t f = 0;
        while (f < nfields &&
               !(strlen(fields[f].name) == klen && memcmp(fields[f].name, key, klen) == 0))
            f++;
        if (f == nfields)
            return param_error(err, key, klen < sizeof(key) ? klen : sizeof(key) - 1,
                               "unknown field");
        if (seen[f])
            return param_error(err, key, klen, "duplicate field");
        seen[f] = true;
        int rc = member_value(s, &toks[i + 1], &fields[f], err);
        if (rc)
            return rc;
    }
    return 0;
}

int json_parse_object(const char *body, size_t len, struct json_field *fields, size_t nfields,
                      struct json_error *err)
{
    ASSERT(nfields <= 16 && (body != NULL || len == 0) && len < (size_t)1 << 30);
    bool seen[16] = {false};
    memset(err, 0, sizeof(*err));
    for (size_t f = 0; f < nfields; f++) {
        fields[f].present = false;
        fields[f].len = 0;
        fields[f].amount = 0;
        ASSERT(fields[f].type != JSON_FIELD_STRING || (fields[f].buf && fields[f].cap > 0));
    }
    if (len > 0) {
        jsmntok_t toks[JSON_TOKENS_MAX];
        jsmn_parser p;
        jsmn_init(&p);
        int r = jsmn_parse(&p, body, len, toks, JSON_TOKENS_MAX);
        bool truncated = r == JSMN_ERROR_NOMEM;
        int ntok = truncated ? (int)p.toknext : r;
        if ((r < 0 && !truncated) || memchr(body, '\0', len) != NULL ||
            !body_syntax(body, len, toks, ntok, truncated)) {
            err->kind = JSON_ERR_SYNTAX;
            err->message = "body is not valid JSON";
            return -EINVAL;
        }
        int rc = members(body, toks, ntok, fields, nfields, seen, err);
        if (rc)
            return rc;
        if (truncated) { /* cannot happen: a body this long holds a bad member */
            err->kind = JSON_ERR_SYNTAX;
            err->message = "body has too many members";
            return -EINVAL;
        }
    }
    for (size_t f = 0; f < nfields; f++)
        if (fields[f].required && !fields[f].present)
            return param_error(err, fields[f].name, strlen(fields[f].name), "is required");
    return 0;
}

bool json_utf8_valid(const char *str, size_t len, size_t *chars)
{
    const unsigned char *s = (const unsigned char *)str;
    size_t count = 0;
    for (size_t i = 0; i < len; count++) {
        unsigned c = s[i];
        size_t n;
        uint32_t min, cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xe0) == 0xc0) {
            n = 1, min = 0x80, cp = c & 0x1f;
        } else if ((c & 0xf0) == 0xe0) {
            n = 2, min = 0x800, cp = c & 0x0f;
        } else if ((c & 0xf8) == 0xf0) {
            n = 3, min = 0x10000, cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= len)
            return false;
        for (size_t j = 1; j <= n; j++) {
            if ((s[i + j] & 0xc0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + j] & 0x3f);
        }
        if (cp < min || cp > 0x10ffff || (cp >= 0xd800 && cp <= 0xdfff))
            return false;
        i += n + 1;
    }
    if (chars != NULL)
        *chars = count;
    return true;
}

/* ---- Writer ------------------------------------------------------------------------ */

void jw_init(struct jw *w, char *buf, size_t cap)
{
    ASSERT(buf != NULL || cap == 0);
    memset(w, 0, sizeof(*w));
    w->buf = buf;
    w->cap = cap;
}

static int put(struct jw *w, const char *s, size_t n)
{
    if (w->overflow || n > w->cap - w->len) {
        w->overflow = true;
        return -ENOBUFS;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    return 0;
}

/* A value is about to be written: a comma first unless it is the first in an array
 * (in objects jw_key writes the comma and the value follows it directly). */
static int value_prefix(struct jw *w)
{
    int rc = 0;
    if (w->need_comma[w->depth])
        rc = put(w, ",", 1);
    w->need_comma[w->depth] = true;
    return rc;
}

static int open_(struct jw *w, char c)
{
    int rc = value_prefix(w);
    ASSERT(w->depth < JSON_WRITER_DEPTH_MAX);
    w->depth++;
    w->need_comma[w->depth] = false;
    return rc ? rc : put(w, &c, 1);
}

static int close_(struct jw *w, char c)
{
    ASSERT(w->depth > 0);
    w->depth--;
    return put(w, &c, 1);
}

int jw_obj_begin(struct jw *w)
{
    return open_(w, '{');
}

int jw_obj_end(struct jw *w)
{
    return close_(w, '}');
}

int jw_arr_begin(struct jw *w)
{
    return open_(w, '[');
}

int jw_arr_end(struct jw *w)
{
    return close_(w, ']');
}

static int put_escaped(struct jw *w, const char *s, size_t n)
{
    static const char hex[] = "0123456789abcdef";
    int rc = put(w, "\"", 1);
    size_t run = 0; /* bytes s[i - run .. i) need no escape */
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f) {
            run++;
            continue;
        }
        rc |= put(w, s + i - run, run);
        run = 0;
        char e[6] = {'\\', 0, 0, 0, 0, 0};
        size_t elen = 2;
        const char *simple = c == '"'    ? "\""
                             : c == '\\' ? "\\"
                             : c == '\b' ? "b"
                             : c == '\f' ? "f"
                             : c == '\n' ? "n"
                             : c == '\r' ? "r"
                             : c == '\t' ? "t"
                                         : NULL;
        if (simple != NULL) {
            e[1] = simple[0];
        } else {
            e[1] = 'u', e[2] = '0', e[3] = '0', e[4] = hex[c >> 4], e[5] = hex[c & 15];
            elen = 6;
        }
        rc |= put(w, e, elen);
    }
    rc |= put(w, s + n - run, run);
    rc |= put(w, "\"", 1);
    return rc ? -ENOBUFS : 0;
}

int jw_key(struct jw *w, const char *key)
{
    ASSERT(w->depth > 0);
    int rc = value_prefix(w);
    rc |= put_escaped(w, key, strlen(key));
    rc |= put(w, ":", 1);
    w->need_comma[w->depth] = false; /* the value right after the key takes no comma */
    return rc ? -ENOBUFS : 0;
}

/* After a value inside an object, the next key needs a comma. value_prefix set the flag
 * for arrays; for objects jw_key cleared it, so values restore it here. */
static int value_done(struct jw *w, int rc)
{
    w->need_comma[w->depth] = true;
    return rc ? -ENOBUFS : 0;
}

int jw_str(struct jw *w, const char *s, size_t len)
{
    int rc = value_prefix(w);
    rc |= put_escaped(w, s, len);
    return value_done(w, rc);
}

int jw_cstr(struct jw *w, const char *s)
{
    return jw_str(w, s, strlen(s));
}

int jw_uint(struct jw *w, uint64_t v)
{
    char tmp[20];
    size_t n = 0;
    do {
        tmp[sizeof(tmp) - 1 - n++] = (char)('0' + v % 10);
        v /= 10;
    } while (v != 0);
    int rc = value_prefix(w);
    rc |= put(w, tmp + sizeof(tmp) - n, n);
    return value_done(w, rc);
}

int jw_int(struct jw *w, int64_t v)
{
    if (v >= 0)
        return jw_uint(w, (uint64_t)v);
    int rc = value_prefix(w);
    rc |= put(w, "-", 1);
    w->need_comma[w->depth] = false;
    rc |= jw_uint(w, (uint64_t)0 - (uint64_t)v);
    return value_done(w, rc);
}

int jw_null(struct jw *w)
{
    int rc = value_prefix(w);
    rc |= put(w, "null", 4);
    return value_done(w, rc);
}

int jw_bool(struct jw *w, bool v)
{
    int rc = value_prefix(w);
    rc |= v ? put(w, "true", 4) : put(w, "false", 5);
    return value_done(w, rc);
}

int jw_time(struct jw *w, int64_t ms)
{
    char t[JSON_TIME_BYTES + 1];
    json_format_time(t, ms);
    return jw_str(w, t, JSON_TIME_BYTES);
}

int jw_finish(const struct jw *w)
{
    ASSERT(w->depth == 0);
    return w->overflow ? -ENOBUFS : 0;
}

/* ---- Time -------------------------------------------------------------------------- */

/* Days since 1970-01-01 to (year, month 1..12, day 1..31), proleptic Gregorian
 * (H. Hinnant's days_from_civil inverse: eras of 400 years = 146097 days, years
 * starting on March 1 so the leap day is the last of the year). days >= 0 here. */
static void civil_from_days(int64_t days, int64_t *y, unsigned *m, unsigned *d)
{
    int64_t z = days + 719468; /* days since 0000-03-01 */
    int64_t era = z / 146097;
    unsigned doe = (unsigned)(z - era * 146097);                          /* 0..146096 */
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365; /* 0..399 */
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);               /* 0..365 */
    unsigned mp = (5 * doy + 2) / 153;                                    /* 0..11 from March */
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int64_t)yoe + era * 400 + (*m <= 2);
}

static void digits(char *o, unsigned v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        o[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

void json_format_time(char out[JSON_TIME_BYTES + 1], int64_t ms)
{
    ASSERT(ms >= 0 && ms <= TIME_MS_MAX);
    int64_t days = ms / 86400000;
    unsigned rem = (unsigned)(ms % 86400000);
    int64_t y;
    unsigned m, d;
    civil_from_days(days, &y, &m, &d);
    ASSERT(y >= 1970 && y <= 9999);
    memcpy(out, "0000-00-00T00:00:00.000Z", JSON_TIME_BYTES + 1);
    digits(out, (unsigned)y, 4);
    digits(out + 5, m, 2);
    digits(out + 8, d, 2);
    digits(out + 11, rem / 3600000, 2);
    digits(out + 14, rem / 60000 % 60, 2);
    digits(out + 17, rem / 1000 % 60, 2);
    digits(out + 20, rem % 1000, 3);
}
