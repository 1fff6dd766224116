/*
 * Engine events for settle's tests, made by the real engine: engine_apply over the
 * in-memory store (tests/engine/mem_store.h) renders exactly what the engine publishes.
 * One generator is one engine shard; event ids carry the shard, so events of several
 * generators never collide.
 */
#ifndef RINGPAY_TESTS_STORE_SETTLE_GEN_H
#define RINGPAY_TESTS_STORE_SETTLE_GEN_H

#include <stddef.h>
#include <stdint.h>

#include "tests/engine/mem_store.h"

struct settle_gen {
    struct mem_store m;
    uint32_t shard;
    unsigned key;
};

/* cap: payments (and events) the generator can hold. Aborts on failure (tests). */
void settle_gen_init(struct settle_gen *g, uint32_t shard, size_t cap);
void settle_gen_free(struct settle_gen *g);

/* Each returns the HTTP status the engine answered (201/200, or 409 when refused). */
int settle_gen_authorize(struct settle_gen *g, const char *merchant, const char *currency,
                         int64_t amount, int64_t now_ms, char id[ID_BYTES + 1]);
int settle_gen_capture(struct settle_gen *g, const char *id, int64_t amount, int64_t now_ms);
int settle_gen_refund(struct settle_gen *g, const char *id, int64_t amount, int64_t now_ms);
int settle_gen_void(struct settle_gen *g, const char *id, int64_t now_ms);

/* Events so far, in commit order, and event i: its value (not NUL-terminated) and topic. */
size_t settle_gen_events(const struct settle_gen *g);
const char *settle_gen_event(const struct settle_gen *g, size_t i, size_t *len, const char **topic);

#endif
