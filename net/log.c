/*
 * JSON-lines logger (see log.h). Each line is assembled in a fixed stack buffer and
 * written with a single write(2) to fd 2; a line that would not fit is truncated at a
 * field boundary and marked "truncated":true, never split.
 */
#include "net/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/limits.h"

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

void log_mask_pan(char *dst, size_t dst_bytes, const char *src)
{
    size_t o = 0;
    if (dst_bytes == 0)
        return;
    for (size_t i = 0; src[i] && o + 1 < dst_bytes;) {
        size_t run = 0;
        while (src[i + run] >= '0' && src[i + run] <= '9')
            run++;
        if (run < 13 || run > 19) {
            size_t n = run ? run : 1;
            for (size_t k = 0; k < n && o + 1 < dst_bytes; k++)
                dst[o++] = src[i + k];
            i += n;
            continue;
        }
        for (size_t k = 0; k < run && o + 1 < dst_bytes; k++)
            dst[o++] = (k < 6 || k >= run - 4) ? src[i + k] : '*';
        i += run;
    }
    dst[o] = '\0';
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
        if (escape) {
            char masked[1024];
            log_mask_pan(masked, sizeof(masked), val ? val : "");
            len = put_json_string(line, len, cap, masked);
        } else {
            len = put_raw(line, len, cap, val ? val : "null");
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
