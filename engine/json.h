/*
 * Strict JSON for the API: a reader for flat request objects and a writer for answers.
 *
 * Reader (json_parse_object): the body must be exactly one JSON object (surrounding
 * whitespace allowed; a 0-byte body counts as "{}"). Each member's value is a string, an
 * integer or null; the caller lists the members it accepts, each with its type. Checks:
 *   - syntax (RFC 8259, no extensions: no trailing commas, no single quotes, no raw
 *     control characters in strings, no NUL bytes, no second top-level value):
 *     JSON_ERR_SYNTAX (the API answers 400 invalid_json);
 *   - a key not in the list, a key given twice, a value of the wrong type (including a
 *     nested object or array), a string that is not valid UTF-8 after escape decoding
 *     (lone surrogates included) or longer than its field's buffer, an amount that is
 *     not a plain integer 1..AMOUNT_MAX (no fraction, exponent, sign, leading zero or
 *     quotes), a required field missing or null: JSON_ERR_PARAM with `param` naming the
 *     field (the API answers 400 invalid_param).
 *   - `null` for an optional field means "absent".
 * The first offending member in body order is reported. Keys are compared after escape
 * decoding, so "\u0061mount" is "amount" (and a duplicate of it).
 * Decision: a body that is valid up to a bad member but malformed after it still gets
 * JSON_ERR_SYNTAX, because jsmn tokenizes the whole body first; only a body with more
 * than JSON_TOKENS_MAX tokens is judged on its first tokens (it always holds a bad
 * member there, since a valid body has at most a handful of members).
 *
 * Writer (struct jw): appends to a caller buffer, never past its capacity. A write that
 * does not fit sets a sticky overflow flag and returns -ENOBUFS; later writes are no-ops,
 * and jw_finish() reports the failure. Strings are escaped per RFC 8259: '"' and '\\'
 * get a backslash, control characters below 0x20 become \b \f \n \r \t or \u00XX, DEL
 * (0x7f) becomes \u007f; other bytes (UTF-8) are written as they are. The writer puts
 * commas itself: jw_key() inside objects, values inside arrays.
 *
 * No allocation anywhere; the reader uses a stack array of JSON_TOKENS_MAX jsmn tokens.
 */
#ifndef RINGPAY_ENGINE_JSON_H
#define RINGPAY_ENGINE_JSON_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/limits.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Reader ---------------------------------------------------------------------- */

enum json_field_type {
    JSON_FIELD_STRING = 1, /* decoded into buf (cap bytes, NUL-terminated after len) */
    JSON_FIELD_AMOUNT,     /* an integer AMOUNT_MIN..AMOUNT_MAX into amount */
};

struct json_field {
    /* In: */
    const char *name; /* member key, NUL-terminated ASCII */
    enum json_field_type type;
    bool required;
    char *buf;  /* STRING: destination of the decoded bytes */
    size_t cap; /* STRING: bytes available in buf, NUL included */
    /* Out: */
    bool present;   /* given and not null */
    size_t len;     /* STRING: decoded length in bytes */
    int64_t amount; /* AMOUNT: the value */
};

enum json_err_kind {
    JSON_OK = 0,
    JSON_ERR_SYNTAX, /* invalid_json */
    JSON_ERR_PARAM,  /* invalid_param, see param */
};

struct json_error {
    enum json_err_kind kind;
    const char *message;                 /* static text, e.g. "unknown field" */
    char param[API_PARAM_MAX_BYTES + 1]; /* the field, NUL-terminated; "" with SYNTAX */
};

/* Parses body[0..len) against fields[0..nfields). Returns 0 with every field's `present`,
 * `len` and `amount` set, or -EINVAL with *err filled (fields are then unspecified).
 * body need not be NUL-terminated and may contain any bytes. */
int json_parse_object(const char *body, size_t len, struct json_field *fields, size_t nfields,
                      struct json_error *err);

/* Whether s[0..len) is valid UTF-8 (RFC 3629: no overlongs, no surrogates, <= U+10FFFF).
 * *chars receives the number of code points when non-NULL. */
bool json_utf8_valid(const char *s, size_t len, size_t *chars);

/* ---- Writer ---------------------------------------------------------------------- */

struct jw {
    char *buf;
    size_t cap;
    size_t len;
    bool overflow;
    uint8_t depth;
    bool need_comma[JSON_WRITER_DEPTH_MAX + 1];
};

/* Starts writing at buf[0]; buf holds cap bytes. No NUL terminator is written. */
void jw_init(struct jw *w, char *buf, size_t cap);

/* Each returns 0, or -ENOBUFS once the buffer is full (sticky). */
int jw_obj_begin(struct jw *w);
int jw_obj_end(struct jw *w);
int jw_arr_begin(struct jw *w);
int jw_arr_end(struct jw *w);
int jw_key(struct jw *w, const char *key);           /* "key": (key is trusted ASCII) */
int jw_str(struct jw *w, const char *s, size_t len); /* a quoted, escaped string value */
int jw_cstr(struct jw *w, const char *s);            /* same, NUL-terminated */
int jw_int(struct jw *w, int64_t v);
int jw_uint(struct jw *w, uint64_t v);
int jw_null(struct jw *w);
int jw_bool(struct jw *w, bool v);
int jw_time(struct jw *w, int64_t ms); /* RFC 3339 string, see below */

/* 0 when everything fit (w->len bytes written), else -ENOBUFS. Asserts every object and
 * array was closed. */
int jw_finish(const struct jw *w);

/* ---- Time ------------------------------------------------------------------------ */

/* "2026-11-25T10:00:00.123Z": RFC 3339, UTC, milliseconds, always 24 bytes. */
#define JSON_TIME_BYTES 24

/* Writes the 24 bytes and a NUL into out. ms is milliseconds since the Unix epoch,
 * 0 <= ms <= TIME_MS_MAX (asserted). Proleptic Gregorian calendar, computed with the
 * days-to-civil algorithm (no gmtime, no locale, no time zone). */
void json_format_time(char out[JSON_TIME_BYTES + 1], int64_t ms);

#ifdef __cplusplus
}
#endif

#endif
