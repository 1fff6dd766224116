/*
 * settle's dead letters as JSON, for `ringpay settle dlq` (dlq.c, offline) and the admin
 * API's GET /v1/dead-letters and POST /v1/dead-letters/{id}/replay (app.c, while settle
 * runs).
 */
#ifndef RINGPAY_TOOLS_SETTLE_DLQ_H
#define RINGPAY_TOOLS_SETTLE_DLQ_H

#include <stddef.h>

#include "engine/json.h"
#include "store/settle_store.h"

/* {"id","status","reason","topic","partition","offset","key","created_at","replayed_at",
 * "truncated","value_bytes","value"|"value_hex"}: the value as a string when it is UTF-8,
 * else as hex (hexbuf: 2 * value_len bytes), and null when longer than value_max.
 * 0 or -ENOBUFS (sticky in w). */
int dlq_render(struct jw *w, const struct settle_dead_letter *d, size_t value_max, char *hexbuf);

/* "counted", "adjusted", "duplicate", "ignored", "still_refused" or "stale". */
const char *dlq_outcome_name(enum settle_msg_result r);

#endif
