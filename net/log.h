/*
 * Structured logs: one JSON object per line on stderr.
 *
 * Callers pass key/value pairs already formatted by log_kv_* helpers, so nothing is
 * formatted unless the level is enabled. Values are JSON-escaped, and every string
 * value passes through log_mask_pan(): runs of 13–19 digits (what a card number looks
 * like) are masked to first 6 / last 4. Secrets, signatures and key material are
 * never handed to the logger in the first place; the masking is a second fence.
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
 * Copies src to dst (size dst_bytes, always NUL-terminated) masking card-like digit
 * runs (13–19 consecutive digits) to first 6 / last 4 with '*' between.
 */
void log_mask_pan(char *dst, size_t dst_bytes, const char *src);

#endif
