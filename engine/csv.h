/*
 * A strict, incremental CSV line reader for bank statements (SPEC §5 reconciliation).
 *
 * The caller feeds the bytes as they arrive, in chunks of any size (a streamed upload);
 * the reader calls back once per line with its fields, or with the reason the line is
 * malformed. Memory is the struct alone (about 1.2 KiB): a 1,000,000-line file is read
 * in the same space as a 1-line one, and nothing is allocated.
 *
 * The dialect (RFC 4180, narrowed; every rule is a decision recorded here):
 *  - A line ends with LF or CRLF. A CR not followed by LF is malformed ("bare CR").
 *    Line numbers count physical lines from 1 (the header is line 1), so a line number
 *    in a report is the line an editor shows.
 *  - Fields are separated by ','. Nothing is trimmed: " 100" is the field " 100".
 *  - A field may be quoted: it then starts with '"', ends with '"', and '""' inside it
 *    is one '"'. After the closing quote only ',' or the line end may follow. A '"'
 *    inside an unquoted field is malformed. Quoted fields may hold commas but not line
 *    breaks: a bank statement never needs them, and refusing them keeps one stray quote
 *    from swallowing the rest of the file and keeps line numbers physical. An open
 *    quote at the end of a line is malformed ("unterminated quoted field").
 *  - A line of more than CSV_LINE_MAX_BYTES bytes (terminator excluded), more than
 *    CSV_FIELDS_MAX fields, or a NUL byte is malformed. The rest of such a line is
 *    skipped in constant memory up to its LF, and the next line is read normally.
 *  - An empty line is reported as malformed ("empty line"), never skipped silently.
 *    The end of the input right after a line terminator is not a line; a last line
 *    without a terminator is a line (reported by csv_finish).
 *  - A UTF-8 byte order mark (EF BB BF) at the very start of the input is skipped:
 *    spreadsheets write one when they export "CSV UTF-8". Anywhere else it is data.
 *  - Bytes are not interpreted otherwise (no encoding check): the fields' own parsers
 *    (engine/settle.h, recon_line_parse) accept only what they expect.
 * The first error of a line is its reason. Reasons are static strings.
 */
#ifndef RINGPAY_ENGINE_CSV_H
#define RINGPAY_ENGINE_CSV_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

struct csv_field {
    const char *ptr; /* into the reader's buffer: valid during the callback only */
    size_t len;
};

/* One line as the callback sees it. */
struct csv_line {
    uint64_t number;   /* 1-based physical line number */
    const char *error; /* NULL, or why the line is malformed (static text) */
    size_t nfields;    /* fields split (for a malformed line: those before the error) */
    struct csv_field fields[CSV_FIELDS_MAX];
};

/* Return 0 to go on; any other value stops the feed, which returns it. */
typedef int (*csv_line_fn)(void *arg, const struct csv_line *line);

/* The reader. Caller-owned; initialise with csv_init. Fields are private. */
struct csv_reader {
    char buf[CSV_LINE_MAX_BYTES]; /* the current line's field bytes, unquoted */
    uint16_t field_off[CSV_FIELDS_MAX];
    uint16_t field_len[CSV_FIELDS_MAX];
    size_t len;        /* bytes in buf */
    size_t raw;        /* raw bytes of the current line so far, terminator excluded */
    size_t nfields;    /* fields started on the current line */
    const char *error; /* first error of the current line */
    uint8_t state;     /* enum csv_state in csv.c */
    uint8_t bom;       /* bytes of a leading BOM matched so far (first line only) */
    bool stopped;      /* a callback stopped the feed: the reader may not be fed again */
    uint64_t line;     /* number of the current line */
    uint64_t lines;    /* lines reported so far */
    uint64_t bytes;    /* bytes fed so far */
};

void csv_init(struct csv_reader *r);

/* Reads data[0..len) and calls fn for each line completed in it. Returns 0, or the
 * first nonzero value fn returned (the reader then stops for good: feeding it again
 * asserts). */
int csv_feed(struct csv_reader *r, const void *data, size_t len, csv_line_fn fn, void *arg);

/* The end of the input: reports a last line that had no terminator. Returns 0 or fn's
 * nonzero value. After it the reader is spent (csv_init makes it new). */
int csv_finish(struct csv_reader *r, csv_line_fn fn, void *arg);

#ifdef __cplusplus
}
#endif

#endif
