/* Engine events for settle's tests (settle_gen.h). */
#include "tests/store/settle_gen.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/apply.h"
#include "engine/assert.h"

void settle_gen_init(struct settle_gen *g, uint32_t shard, size_t cap)
{
    memset(g, 0, sizeof(*g));
    g->shard = shard;
    ASSERT(mem_store_init(&g->m, 4 * cap, 4 * cap * 700) == 0);
}

void settle_gen_free(struct settle_gen *g)
{
    mem_store_free(&g->m);
}

static int run(struct settle_gen *g, enum op_kind kind, const char *payment_id,
               const char *merchant, const char *currency, int64_t amount, int64_t now,
               char id_out[ID_BYTES + 1])
{
    static char body[ENGINE_ANSWER_MAX_BYTES];
    struct op op;
    memset(&op, 0, sizeof(op));
    op.kind = kind;
    op.shard = g->shard;
    op.amount = amount;
    if (merchant) {
        op.merchant_id_len = (uint8_t)strlen(merchant);
        memcpy(op.merchant_id, merchant, op.merchant_id_len);
    }
    if (currency)
        memcpy(op.currency, currency, CURRENCY_BYTES);
    if (payment_id)
        memcpy(op.payment_id, payment_id, ID_BYTES);
    op.idem_key_len = (uint16_t)snprintf(op.idem_key, sizeof(op.idem_key), "g%u", ++g->key);
    op.fp_method = (struct engine_span){"POST", 4};
    op.fp_path = (struct engine_span){op.idem_key, op.idem_key_len};
    struct answer a = {.body = body, .cap = sizeof(body)};
    ASSERT(engine_apply(&mem_store_ops, &g->m, &op, now, &a) == 0);
    if (id_out && a.status == 201) {
        memcpy(id_out, body + 7, ID_BYTES);
        id_out[ID_BYTES] = '\0';
    }
    return a.status;
}

int settle_gen_authorize(struct settle_gen *g, const char *merchant, const char *currency,
                         int64_t amount, int64_t now_ms, char id[ID_BYTES + 1])
{
    return run(g, OP_AUTHORIZE, NULL, merchant, currency, amount, now_ms, id);
}

int settle_gen_capture(struct settle_gen *g, const char *id, int64_t amount, int64_t now_ms)
{
    return run(g, OP_CAPTURE, id, NULL, NULL, amount, now_ms, NULL);
}

int settle_gen_refund(struct settle_gen *g, const char *id, int64_t amount, int64_t now_ms)
{
    return run(g, OP_REFUND, id, NULL, NULL, amount, now_ms, NULL);
}

int settle_gen_void(struct settle_gen *g, const char *id, int64_t now_ms)
{
    return run(g, OP_VOID, id, NULL, NULL, 0, now_ms, NULL);
}

size_t settle_gen_events(const struct settle_gen *g)
{
    return g->m.nevents;
}

const char *settle_gen_event(const struct settle_gen *g, size_t i, size_t *len, const char **topic)
{
    if (topic)
        *topic = g->m.events[i].topic;
    return mem_store_event_value(&g->m, i, len);
}
