/*
 * libFuzzer target for settle_event_parse (engine/settle_event.c).
 *
 * The input is an event value, parsed from a malloc'd copy of exactly its length (so
 * AddressSanitizer catches a read past it), with and without the topic. Checked, with
 * abort() on a violation:
 *   - a refusal has a reason; it never crashes or asserts, whatever the bytes;
 *   - an accepted event is what settle may count: a known type equal to the topic when
 *     one was given, its event id the engine's rendering of its shard and sequence, a
 *     payment id of that shard, an amount 1..10^15 consistent with the payment after the
 *     change, a valid merchant id and currency, an occurred_at within range;
 *   - no proper prefix of an accepted value ending before its last '}' is accepted.
 */
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/ids.h"
#include "engine/settle.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond))                                                                               \
            abort();                                                                               \
    } while (0)

static int parse_copy(const uint8_t *data, size_t len, const char *topic, struct settle_event *ev)
{
    char reason[SETTLE_REASON_MAX_BYTES + 1];
    char *copy = malloc(len ? len : 1);
    CHECK(copy != NULL);
    memcpy(copy, data, len);
    int rc = settle_event_parse(topic, topic ? strlen(topic) : 0, copy, len, ev, reason);
    free(copy);
    CHECK(rc == 0 || (rc < 0 && reason[0] != '\0'));
    return rc;
}

/* The engine's event id of (shard, seq), as engine/apply.c renders it. */
static void event_id(char out[EVENT_ID_BYTES + 1], uint32_t shard, uint64_t seq)
{
    static const char hex[] = "0123456789abcdef";
    CHECK(shard < SHARDS_MAX);
    memcpy(out, "evt_", 4);
    out[4] = hex[shard >> 4 & 15];
    out[5] = hex[shard & 15];
    out[6] = '_';
    for (int i = 0; i < 16; i++)
        out[7 + i] = hex[seq >> (60 - 4 * i) & 15];
    out[EVENT_ID_BYTES] = '\0';
}

static void check_event(const struct settle_event *ev)
{
    char id[EVENT_ID_BYTES + 1];
    uint32_t shard;
    CHECK(ev->type >= SETTLE_EVENT_AUTHORIZED && ev->type <= SETTLE_EVENT_REFUNDED);
    event_id(id, ev->event_shard, ev->event_seq);
    CHECK(strcmp(id, ev->event_id) == 0 && ev->event_seq >= 1);
    CHECK(ids_parse(ev->payment_id, ID_BYTES, IDS_PAYMENT, &shard, NULL) == 0);
    CHECK(shard == ev->event_shard);
    CHECK(ev->amount >= AMOUNT_MIN && ev->amount <= AMOUNT_MAX);
    CHECK(ev->occurred_at_ms >= 0 && ev->occurred_at_ms <= TIME_MS_MAX);
    CHECK(ev->merchant_id_len >= 1 && ev->merchant_id_len <= MERCHANT_ID_MAX_BYTES);
    CHECK(strlen(ev->merchant_id) == ev->merchant_id_len && strlen(ev->currency) == 3);
    CHECK(ev->captured_amount <= ev->payment_amount && ev->refunded_amount <= ev->captured_amount);
    if (ev->type == SETTLE_EVENT_CAPTURED)
        CHECK(ev->amount == ev->captured_amount);
    if (ev->type == SETTLE_EVENT_REFUNDED)
        CHECK(ev->amount <= ev->refunded_amount &&
              ids_parse(ev->refund_id, ID_BYTES, IDS_REFUND, NULL, NULL) == 0);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    struct settle_event ev, ev2;
    if (parse_copy(data, size, NULL, &ev) != 0)
        return 0;
    check_event(&ev);
    CHECK(parse_copy(data, size, settle_event_type_name(ev.type), &ev2) == 0);
    CHECK(memcmp(&ev, &ev2, sizeof(ev)) == 0);
    CHECK(parse_copy(data, size, "payment.elsewhere", &ev2) != 0);
    size_t last = size;
    while (last > 0 && data[last - 1] != '}')
        last--;
    for (size_t k = 0; k + 1 < last; k += 1 + k / 8)
        CHECK(parse_copy(data, k, NULL, &ev2) != 0);
    return 0;
}
