/*
 * The incremental CSV line reader (engine/csv.h): a byte-at-a-time state machine that
 * copies a line's field bytes, unquoted, into the reader's own buffer.
 *
 * Invariants: len <= raw <= CSV_LINE_MAX_BYTES while the line is not skipped (a field
 * byte is copied only after raw was counted and bounded), so buf never overflows; the
 * fields of the current line are buf[field_off[i] .. + field_len[i]) for i < nfields
 * and lie one after another; once `error` is set the line is only skipped to its LF.
 */
#include <errno.h>
#include <string.h>

#include "engine/assert.h"
#include "engine/csv.h"

enum csv_state {
    CSV_FIELD_START = 0, /* at the start of the line or of a field after ',' */
    CSV_UNQUOTED,        /* inside an unquoted field */
    CSV_QUOTED,          /* inside a quoted field */
    CSV_QUOTE,           /* a '"' inside a quoted field: its end, or the first of '""' */
    CSV_CR,              /* a CR: only LF may follow */
    CSV_SKIP,            /* the line is malformed: skip to its LF */
};

/* bom: bytes of a leading byte order mark matched so far; BOM_DONE once the first
 * byte of the input was seen to start (or not start) a BOM. */
#define BOM_DONE 3
static const unsigned char bom_bytes[3] = {0xef, 0xbb, 0xbf};

void csv_init(struct csv_reader *r)
{
    ASSERT(r != NULL);
    memset(r, 0, sizeof(*r));
    r->state = CSV_FIELD_START;
    r->line = 1;
}

/* Marks the current line malformed (the first reason wins) and skips the rest of it. */
static void fail(struct csv_reader *r, const char *why)
{
    if (r->error == NULL)
        r->error = why;
    r->state = CSV_SKIP;
}

/* Starts a new (empty) field at the end of buf. */
static void field_start(struct csv_reader *r)
{
    if (r->nfields == CSV_FIELDS_MAX) {
        fail(r, "too many fields");
        return;
    }
    r->field_off[r->nfields] = (uint16_t)r->len;
    r->field_len[r->nfields] = 0;
    r->nfields++;
}

/* Appends one byte to the current field (raw was counted and bounded before). */
static void field_put(struct csv_reader *r, char c)
{
    ASSERT(r->nfields > 0 && r->len < CSV_LINE_MAX_BYTES);
    r->buf[r->len++] = c;
    r->field_len[r->nfields - 1]++;
}

/* Reports the current line and starts the next one. */
static int line_end(struct csv_reader *r, csv_line_fn fn, void *arg)
{
    struct csv_line l;
    if (r->state == CSV_QUOTED)
        fail(r, "unterminated quoted field");
    if (r->nfields == 0 && r->error == NULL)
        fail(r, "empty line");
    l.number = r->line;
    l.error = r->error;
    l.nfields = r->nfields;
    for (size_t i = 0; i < r->nfields; i++) {
        ASSERT((size_t)r->field_off[i] + r->field_len[i] <= r->len);
        l.fields[i].ptr = r->buf + r->field_off[i];
        l.fields[i].len = r->field_len[i];
    }
    r->len = 0;
    r->raw = 0;
    r->nfields = 0;
    r->error = NULL;
    r->state = CSV_FIELD_START;
    r->line++;
    r->lines++;
    return fn(arg, &l);
}

/* One byte that is neither LF nor part of a line being skipped. */
static void byte_in_line(struct csv_reader *r, char c)
{
    if (c == '\r') {
        if (r->state == CSV_QUOTED)
            fail(r, "unterminated quoted field");
        else if (r->state == CSV_CR)
            fail(r, "bare CR");
        else
            r->state = CSV_CR;
        return;
    }
    if (r->state == CSV_CR) {
        fail(r, "bare CR");
        return;
    }
    if (++r->raw > CSV_LINE_MAX_BYTES) {
        fail(r, "line too long");
        return;
    }
    if (c == '\0') {
        fail(r, "NUL byte");
        return;
    }
    switch (r->state) {
    case CSV_FIELD_START:
        if (r->nfields == 0)
            field_start(r);
        if (c == ',')
            field_start(r);
        else if (c == '"')
            r->state = CSV_QUOTED;
        else {
            field_put(r, c);
            r->state = CSV_UNQUOTED;
        }
        return;
    case CSV_UNQUOTED:
        if (c == ',') {
            field_start(r);
            if (r->state != CSV_SKIP)
                r->state = CSV_FIELD_START;
        } else if (c == '"') {
            fail(r, "quote inside an unquoted field");
        } else {
            field_put(r, c);
        }
        return;
    case CSV_QUOTED:
        if (c == '"')
            r->state = CSV_QUOTE;
        else
            field_put(r, c);
        return;
    case CSV_QUOTE:
        if (c == '"') {
            field_put(r, '"');
            r->state = CSV_QUOTED;
        } else if (c == ',') {
            field_start(r);
            if (r->state != CSV_SKIP)
                r->state = CSV_FIELD_START;
        } else {
            fail(r, "text after a closing quote");
        }
        return;
    }
    UNREACHABLE();
}

/* Feeds one byte. Returns 0 or the callback's nonzero value. */
static int byte_in(struct csv_reader *r, char c, csv_line_fn fn, void *arg)
{
    if (c == '\n')
        return line_end(r, fn, arg);
    if (r->state != CSV_SKIP)
        byte_in_line(r, c);
    return 0;
}

/* Handles a leading byte order mark. Returns true when c was consumed by it. A partial
 * mark followed by anything else is data: its bytes are fed as such first. */
static bool bom_take(struct csv_reader *r, unsigned char c, csv_line_fn fn, void *arg, int *rc)
{
    if (c == bom_bytes[r->bom]) {
        r->bom++;
        return true;
    }
    uint8_t matched = r->bom;
    r->bom = BOM_DONE;
    for (uint8_t i = 0; i < matched && *rc == 0; i++)
        *rc = byte_in(r, (char)bom_bytes[i], fn, arg);
    return false;
}

int csv_feed(struct csv_reader *r, const void *data, size_t len, csv_line_fn fn, void *arg)
{
    ASSERT(r != NULL && fn != NULL && (data != NULL || len == 0));
    ASSERT(!r->stopped);
    const unsigned char *p = data;
    int rc = 0;
    for (size_t i = 0; i < len && rc == 0; i++) {
        r->bytes++;
        if (r->bom < BOM_DONE) {
            if (bom_take(r, p[i], fn, arg, &rc))
                continue;
            if (r->bom == BOM_DONE && rc)
                break;
        }
        rc = byte_in(r, (char)p[i], fn, arg);
    }
    if (rc)
        r->stopped = true;
    return rc;
}

int csv_finish(struct csv_reader *r, csv_line_fn fn, void *arg)
{
    ASSERT(r != NULL && fn != NULL && !r->stopped);
    int rc = 0;
    if (r->bom > 0 && r->bom < BOM_DONE) {
        uint8_t matched = r->bom;
        r->bom = BOM_DONE;
        for (uint8_t i = 0; i < matched && rc == 0; i++)
            rc = byte_in(r, (char)bom_bytes[i], fn, arg);
    }
    if (r->state == CSV_CR)
        fail(r, "bare CR"); /* a CR with no LF after it: the input ended */
    if (rc == 0 && (r->nfields > 0 || r->error != NULL || r->state != CSV_FIELD_START))
        rc = line_end(r, fn, arg);
    r->stopped = true;
    return rc;
}
