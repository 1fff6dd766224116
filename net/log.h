/*
 * Structured logs: one JSON object per line on stderr.
 *
 * Callers pass key/value pairs already formatted by log_kv_* helpers, so nothing is
 * formatted unless the level is enabled. Values are JSON-escaped, and every string,
 * whether given as a C string (log_write_str) or inside an already-rendered JSON value
 * (log_write), passes through log_mask(): card-like digit runs (13–19 digits, delimited
 * by non-digits, that pass the Luhn check) are masked to first 6 / last 4, and key
 * material, a secret ("rps_" and 64 hex digits) or a signature ("v1=" and 64 hex
 * digits), is replaced by its prefix and "[redacted]". Secrets, signatures and key
 * material are never handed to the logger in the first place; the masking is a second
 * fence. Numbers outside strings are not touched (masking them would break the JSON).
 *
 * A line is built in a stack buffer and written with one write(2), so lines from
 * different threads never interleave.
 */
#ifndef RINGPAY_NET_LOG_H
#define RINGPAY_NET_LOG_H

#include <stddef.h>

enum log_level { LOG_DEBUG = 0, LOG_INFO, LOG_WARN, LOG_ERROR };

/* Sets the lowest level written; LOG_INFO unless changed. Call before threads start. */
void log_set_level(enum log_level level);

/* Parses "debug", "info", "warn", "error"; -1 for anything else. */
int log_level_parse(const char *name);

int log_enabled(enum log_level level);

/*
 * Writes {"ts":…,"level":…,"msg":msg, key:value…}. `fields` is a NULL-terminated list
 * of alternating keys and already-rendered JSON values (use log_str/log_int to render
 * into caller buffers), e.g. log_write(LOG_INFO, "listening", "listen", q, NULL).
 * String values given through log_write_str are escaped and masked instead.
 */
void log_write(enum log_level level, const char *msg, ...) __attribute__((sentinel));

/* Like log_write, but every value is a plain C string, escaped and masked here. */
void log_write_str(enum log_level level, const char *msg, ...) __attribute__((sentinel));

/*
 * Copies src to dst (size dst_bytes, always NUL-terminated, cut when it does not fit)
 * masking card-like digit runs (13–19 consecutive digits passing Luhn) to first 6 /
 * last 4 with '*' between. Whether a run is masked is decided on the whole run in src,
 * so a cut never lets more than the first 6 digits through.
 */
void log_mask_pan(char *dst, size_t dst_bytes, const char *src);

/* log_mask_pan, and also key material redacted (see the top of this file): what the
 * logger applies to every string. */
void log_mask(char *dst, size_t dst_bytes, const char *src);

/*
 * Looks through text[0..len) (a whole log, say) for what must never appear in it: any
 * of the canaries (the secrets, signatures and card numbers a test used), an unmasked
 * card-like digit run, a secret or a signature. Returns the offset of the first leak
 * and *what (may be NULL) a static description, or -1 when there is none.
 */
long log_find_leak(const char *text, size_t len, const char *const canaries[], size_t ncanaries,
                   const char **what);

#endif
