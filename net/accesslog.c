/*
 * The per-core access log (see accesslog.h).
 *
 * Invariants:
 *   - fill holds whole lines only, [0, fill_len); send holds whole lines, of which
 *     [send_off, send_len) are not written yet; inflight > 0 means a write of
 *     [send_off, send_off + inflight) is in the kernel and neither buffer moves.
 *   - Every field of a line is cut to its bound before formatting, so a line always
 *     fits ACCESS_LOG_LINE_MAX_BYTES (asserted, unreachable from input).
 */
#define _GNU_SOURCE
#include "net/accesslog.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/assert.h"
#include "engine/limits.h"
#include "net/log.h"
#include "net/metrics.h"

#define HALF_BYTES (ACCESS_LOG_BUF_BYTES / 2)

int accesslog_parse(const char *text)
{
    if (strcmp(text, "on") == 0)
        return 1;
    if (strcmp(text, "off") == 0)
        return 0;
    char *end;
    long n = strtol(text, &end, 10);
    if (end == text || *end != '\0' || text[0] < '1' || text[0] > '9' || n < 1 || n > 1000000)
        return -1;
    return (int)n;
}

int accesslog_init(struct accesslog *a, int fd, unsigned sample, unsigned core)
{
    memset(a, 0, sizeof(*a));
    a->fd = fd;
    a->sample = sample;
    a->core = core;
    a->ts_sec = -1;
    if (sample == 0)
        return 0;
    struct stat st;
    bool regular = fstat(fd, &st) == 0 && S_ISREG(st.st_mode);
    if (regular) {
        int fl = fcntl(fd, F_GETFL);
        if (fl >= 0 && !(fl & O_APPEND))
            fcntl(fd, F_SETFL, fl | O_APPEND);
    }
    a->write_max = regular ? HALF_BYTES : PIPE_BUF;
    a->fill = malloc(HALF_BYTES);
    a->send = malloc(HALF_BYTES);
    if (a->fill == NULL || a->send == NULL) {
        accesslog_destroy(a);
        return -ENOMEM;
    }
    return 0;
}

void accesslog_destroy(struct accesslog *a)
{
    free(a->fill);
    free(a->send);
    a->fill = a->send = NULL;
    a->sample = 0;
}

bool accesslog_wants(struct accesslog *a)
{
    if (a->sample == 0)
        return false;
    if (++a->counter < a->sample)
        return false;
    a->counter = 0;
    return true;
}

static void count(uint64_t *field)
{
    __atomic_store_n(field, __atomic_load_n(field, __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED);
}

/* "YYYY-MM-DDTHH:MM:SS.mmmZ" from the coarse real-time clock (a vDSO read); the
 * seconds part is rendered once a second. */
static size_t put_ts(struct accesslog *a, char *out)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME_COARSE, &ts);
    if (ts.tv_sec != a->ts_sec) {
        struct tm tm;
        gmtime_r(&ts.tv_sec, &tm);
        strftime(a->ts_text, sizeof(a->ts_text), "%Y-%m-%dT%H:%M:%S", &tm);
        a->ts_sec = ts.tv_sec;
    }
    return (size_t)sprintf(out, "%s.%03ldZ", a->ts_text, ts.tv_nsec / 1000000);
}

/* Appends s (n bytes) as a JSON string; control characters, '"' and '\' escaped. */
static char *put_json(char *p, const char *s, size_t n)
{
    *p++ = '"';
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            *p++ = '\\';
            *p++ = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            p += sprintf(p, "\\u%04x", c);
        } else {
            *p++ = (char)c;
        }
    }
    *p++ = '"';
    return p;
}

void accesslog_add(struct accesslog *a, const struct accesslog_entry *e)
{
    if (a->sample == 0)
        return;
    char line[ACCESS_LOG_LINE_MAX_BYTES];
    char rid[REQUEST_ID_MAX_BYTES + 1], masked[REQUEST_ID_MAX_BYTES + 1];
    size_t rlen =
        e->request_id_len < REQUEST_ID_MAX_BYTES ? e->request_id_len : REQUEST_ID_MAX_BYTES;
    memcpy(rid, e->request_id, rlen);
    rid[rlen] = '\0';
    log_mask_pan(masked, sizeof(masked), rid);
    char *p = line;
    p += sprintf(p, "{\"ts\":\"");
    p += put_ts(a, p);
    p += sprintf(p, "\",\"level\":\"info\",\"msg\":\"access\",\"method\":");
    if (e->method_len == 0) {
        memcpy(p, "null", 4);
        p += 4;
    } else {
        p = put_json(p, e->method,
                     e->method_len < ACCESS_LOG_METHOD_MAX_BYTES ? e->method_len
                                                                 : ACCESS_LOG_METHOD_MAX_BYTES);
    }
    p += sprintf(p,
                 ",\"route\":\"%.40s\",\"status\":%d,\"duration_us\":%lu,\"request_id\":", e->route,
                 e->status, (unsigned long)e->duration_us);
    p = put_json(p, masked, strlen(masked));
    p += sprintf(p, ",\"core\":%u,\"client\":\"%.*s\"}\n", a->core, ACCESS_LOG_CLIENT_MAX_BYTES,
                 e->client);
    size_t n = (size_t)(p - line);
    ASSERT(n <= sizeof(line));
    if (a->fill_len + n > HALF_BYTES) {
        count(&a->dropped);
        return;
    }
    memcpy(a->fill + a->fill_len, line, n);
    a->fill_len += n;
    count(&a->lines);
}

bool accesslog_flush(struct accesslog *a, struct io_uring *ring, uint64_t user_data)
{
    if (a->sample == 0 || a->inflight > 0)
        return false;
    if (a->send_off == a->send_len) {
        if (a->fill_len == 0)
            return false;
        char *t = a->send;
        a->send = a->fill;
        a->send_len = a->fill_len;
        a->send_off = 0;
        a->fill = t;
        a->fill_len = 0;
    }
    size_t n = a->send_len - a->send_off;
    if (n > a->write_max) {
        /* Cut at the last line end that fits, so a write never splits a line. */
        const char *nl = memrchr(a->send + a->send_off, '\n', a->write_max);
        ASSERT(nl != NULL); /* a line is far shorter than PIPE_BUF */
        n = (size_t)(nl - (a->send + a->send_off)) + 1;
    }
    struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
    if (sqe == NULL)
        return false;
    io_uring_prep_write(sqe, a->fd, a->send + a->send_off, (unsigned)n, (uint64_t)-1);
    io_uring_sqe_set_data64(sqe, user_data);
    a->inflight = n;
    return true;
}

void accesslog_done(struct accesslog *a, int res)
{
    ASSERT(a->inflight > 0);
    if (res <= 0) {
        count(&a->errors); /* the chunk is dropped: a log must not retry forever */
        res = (int)a->inflight;
    }
    a->send_off += (size_t)res;
    a->inflight = 0;
    if (a->send_off == a->send_len)
        a->send_off = a->send_len = 0;
}

static void write_all(struct accesslog *a, const char *p, size_t n)
{
    while (n > 0) {
        ssize_t w = write(a->fd, p, n);
        if (w <= 0) {
            if (w < 0 && errno == EINTR)
                continue;
            count(&a->errors);
            return;
        }
        p += w;
        n -= (size_t)w;
    }
}

void accesslog_metrics(const struct accesslog *const *logs, unsigned n, struct metrics_out *o)
{
    static const struct {
        const char *name, *help;
        size_t off;
    } m[] = {
        {"ringpay_access_log_lines_total", "Access-log lines buffered for writing.",
         offsetof(struct accesslog, lines)},
        {"ringpay_access_log_dropped_total",
         "Access-log lines dropped because the log could not keep up.",
         offsetof(struct accesslog, dropped)},
        {"ringpay_access_log_write_errors_total", "Access-log writes that failed.",
         offsetof(struct accesslog, errors)},
    };
    for (size_t k = 0; k < ARRAY_LEN(m); k++) {
        metrics_family(o, m[k].name, "counter", m[k].help);
        for (unsigned i = 0; i < n; i++) {
            char labels[32];
            snprintf(labels, sizeof(labels), "core=\"%u\"", logs[i]->core);
            const uint64_t *v = (const uint64_t *)((const char *)logs[i] + m[k].off);
            metrics_sample_u64(o, m[k].name, labels, __atomic_load_n(v, __ATOMIC_RELAXED));
        }
    }
}

void accesslog_drain(struct accesslog *a)
{
    if (a->sample == 0)
        return;
    ASSERT(a->inflight == 0);
    write_all(a, a->send + a->send_off, a->send_len - a->send_off);
    write_all(a, a->fill, a->fill_len);
    a->send_off = a->send_len = a->fill_len = 0;
}
