/*
 * JSON-lines logger (see log.h). Each line is assembled in a fixed stack buffer and
 * written with a single write(2) to fd 2; a line that would not fit is truncated at a
 * field boundary and marked "truncated":true, never split.
 */
#include "net/log.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/limits.h"

#define LOG_PAN_MIN_DIGITS 13
#define LOG_PAN_MAX_DIGITS 19
#define SECRET_HEX_DIGITS  (2 * KEY_SECRET_RANDOM_BYTES) /* also a signature's */
#define LOG_REDACTED       "[redacted]"

_Static_assert(SECRET_HEX_DIGITS == AUTH_SIGNATURE_BYTES - 3, "secrets and MACs are 64 hex");

static enum log_level min_level = LOG_INFO;
static const char *const level_names[] = {"debug", "info", "warn", "error"};

void log_set_level(enum log_level level)
{
    min_level = level;
}

int log_level_parse(const char *name)
{
    for (int i = 0; i < 4; i++)
        if (strcmp(name, level_names[i]) == 0)
            return i;
    return -1;
}

int log_enabled(enum log_level level)
{
    return level >= min_level;
}

/* Luhn's check over n digits: from the right, every second digit doubled. */
static bool luhn_ok(const char *d, size_t n)
{
    unsigned sum = 0;
    for (size_t i = 0; i < n; i++) {
        unsigned v = (unsigned)(d[n - 1 - i] - '0');
        if (i % 2 == 1)
            v = v * 2 > 9 ? v * 2 - 9 : v * 2;
        sum += v;
    }
    return sum % 10 == 0;
}

static size_t digit_run(const char *s, size_t n)
{
    size_t run = 0;
    while (run < n && s[run] >= '0' && s[run] <= '9')
        run++;
    return run;
}

static bool is_card(const char *s, size_t run)
{
    return run >= LOG_PAN_MIN_DIGITS && run <= LOG_PAN_MAX_DIGITS && luhn_ok(s, run);
}

static bool lower_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

/* Key material at s: a secret (KEY_SECRET_PREFIX and 64 hex digits) or a signature
 * ("v1=" and 64 hex digits). Returns its length (0: none) and in *keep the length of
 * its prefix. */
static size_t secret_at(const char *s, size_t n, size_t *keep)
{
    static const char *const prefixes[] = {KEY_SECRET_PREFIX, "v1="};
    for (size_t p = 0; p < 2; p++) {
        size_t pl = strlen(prefixes[p]);
        if (n >= pl + SECRET_HEX_DIGITS && memcmp(s, prefixes[p], pl) == 0 &&
            lower_hex(s + pl, SECRET_HEX_DIGITS)) {
            *keep = pl;
            return pl + SECRET_HEX_DIGITS;
        }
    }
    return 0;
}

static void put_byte(char *dst, size_t cap, size_t *o, char c)
{
    if (*o + 1 < cap)
        dst[(*o)++] = c;
}

/* Appends src[0..n) to dst at *o (always leaving room for a NUL): card-like digit
 * runs masked, and with secrets, key material redacted. */
static void mask_into(char *dst, size_t cap, size_t *o, const char *src, size_t n, bool secrets)
{
    for (size_t i = 0; i < n && *o + 1 < cap;) {
        size_t keep, tok = secrets ? secret_at(src + i, n - i, &keep) : 0;
        if (tok) {
            for (size_t k = 0; k < keep; k++)
                put_byte(dst, cap, o, src[i + k]);
            for (const char *r = LOG_REDACTED; *r; r++)
                put_byte(dst, cap, o, *r);
            i += tok;
            continue;
        }
        size_t run = digit_run(src + i, n - i);
        if (run == 0) {
            put_byte(dst, cap, o, src[i++]);
            continue;
        }
        bool card = is_card(src + i, run);
        for (size_t k = 0; k < run; k++)
            put_byte(dst, cap, o, card && k >= 6 && k < run - 4 ? '*' : src[i + k]);
        i += run;
    }
}

void log_mask_pan(char *dst, size_t dst_bytes, const char *src)
{
    if (dst_bytes == 0)
        return;
    size_t o = 0;
    mask_into(dst, dst_bytes, &o, src, strlen(src), false);
    dst[o] = '\0';
}

void log_mask(char *dst, size_t dst_bytes, const char *src)
{
    if (dst_bytes == 0)
        return;
    size_t o = 0;
    mask_into(dst, dst_bytes, &o, src, strlen(src), true);
    dst[o] = '\0';
}

/* Masks the contents of every string literal of a rendered JSON value; the rest (numbers,
 * punctuation) is copied as it is, so the value stays valid JSON. */
static void mask_json(char *dst, size_t cap, const char *src)
{
    size_t o = 0, n = strlen(src);
    for (size_t i = 0; i < n && o + 1 < cap;) {
        if (src[i] != '"') {
            put_byte(dst, cap, &o, src[i++]);
            continue;
        }
        size_t end = i + 1;
        while (end < n && src[end] != '"')
            end += src[end] == '\\' && end + 1 < n ? 2 : 1;
        put_byte(dst, cap, &o, '"');
        mask_into(dst, cap, &o, src + i + 1, end - i - 1, true);
        if (end < n)
            put_byte(dst, cap, &o, '"');
        i = end + 1;
    }
    dst[o] = '\0';
}

long log_find_leak(const char *text, size_t len, const char *const canaries[], size_t ncanaries,
                   const char **what)
{
    const char *why = NULL;
    size_t i = 0;
    for (; i < len && why == NULL; i++) {
        size_t keep;
        for (size_t c = 0; c < ncanaries && why == NULL; c++) {
            size_t cl = strlen(canaries[c]);
            if (cl > 0 && cl <= len - i && memcmp(text + i, canaries[c], cl) == 0)
                why = "a canary";
        }
        if (why == NULL && secret_at(text + i, len - i, &keep))
            why = keep == 3 ? "a signature" : "a secret";
        bool run_start = i == 0 || text[i - 1] < '0' || text[i - 1] > '9';
        size_t run = run_start ? digit_run(text + i, len - i) : 0;
        if (why == NULL && run && is_card(text + i, run))
            why = "a card number";
    }
    if (what)
        *what = why;
    return why ? (long)(i - 1) : -1;
}

/* Appends s JSON-escaped and quoted; returns the new length, or cap on overflow. */
static size_t put_json_string(char *buf, size_t len, size_t cap, const char *s)
{
    if (len + 1 >= cap)
        return cap;
    buf[len++] = '"';
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char esc[8];
        size_t n;
        if (*p == '"' || *p == '\\') {
            esc[0] = '\\';
            esc[1] = (char)*p;
            n = 2;
        } else if (*p < 0x20 || *p == 0x7f) {
            n = (size_t)snprintf(esc, sizeof(esc), "\\u%04x", *p);
        } else {
            esc[0] = (char)*p;
            n = 1;
        }
        if (len + n + 1 >= cap)
            return cap;
        memcpy(buf + len, esc, n);
        len += n;
    }
    buf[len++] = '"';
    return len;
}

static size_t put_raw(char *buf, size_t len, size_t cap, const char *s)
{
    size_t n = strlen(s);
    if (len + n >= cap)
        return cap;
    memcpy(buf + len, s, n);
    return len + n;
}

static size_t put_header(char *buf, size_t cap, enum log_level level, const char *msg)
{
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    int n = snprintf(buf, cap,
                     "{\"ts\":\"%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ\",\"level\":\"%s\",\"msg\":",
                     tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                     ts.tv_nsec / 1000000, level_names[level]);
    return put_json_string(buf, (size_t)n, cap, msg);
}

static void log_vwrite(enum log_level level, const char *msg, int escape, va_list ap)
{
    char line[LOG_LINE_MAX_BYTES];
    const size_t cap = sizeof(line) - 32; /* room for the truncation mark and "}\n" */
    size_t len = put_header(line, cap, level, msg);
    int truncated = len >= cap;
    for (const char *key; !truncated && (key = va_arg(ap, const char *)) != NULL;) {
        const char *val = va_arg(ap, const char *);
        size_t before = len;
        len = put_raw(line, len, cap, ",");
        len = put_json_string(line, len, cap, key);
        len = put_raw(line, len, cap, ":");
        char masked[1024];
        if (escape) {
            log_mask(masked, sizeof(masked), val ? val : "");
            len = put_json_string(line, len, cap, masked);
        } else if (val != NULL && strlen(val) >= sizeof(masked)) {
            len = cap; /* cut, it would no longer be JSON: the field is dropped */
        } else {
            mask_json(masked, sizeof(masked), val ? val : "null");
            len = put_raw(line, len, cap, masked);
        }
        if (len >= cap) {
            len = before;
            truncated = 1;
        }
    }
    if (truncated)
        len = put_raw(line, len, sizeof(line), ",\"truncated\":true");
    len = put_raw(line, len, sizeof(line), "}\n");
    ssize_t w = write(2, line, len);
    (void)w; /* a logger has nowhere to report its own failure */
}

void log_write(enum log_level level, const char *msg, ...)
{
    if (!log_enabled(level))
        return;
    va_list ap;
    va_start(ap, msg);
    log_vwrite(level, msg, 0, ap);
    va_end(ap);
}

void log_write_str(enum log_level level, const char *msg, ...)
{
    if (!log_enabled(level))
        return;
    va_list ap;
    va_start(ap, msg);
    log_vwrite(level, msg, 1, ap);
    va_end(ap);
}
