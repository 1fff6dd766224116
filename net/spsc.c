/*
 * Lock-free SPSC ring: see spsc.h for the contract, the index invariants and the
 * memory-ordering argument. Every cross-thread access goes through the __atomic
 * builtins below; plain accesses are to fields only one side writes and reads.
 */
#include "net/spsc.h"

#include <errno.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "engine/assert.h"

_Static_assert(offsetof(struct spsc, tail) / SPSC_CACHE_LINE !=
                   offsetof(struct spsc, head) / SPSC_CACHE_LINE,
               "producer and consumer indices on separate cache lines");
_Static_assert(offsetof(struct spsc, tail) / SPSC_CACHE_LINE !=
                   offsetof(struct spsc, slot_mem) / SPSC_CACHE_LINE,
               "hot producer line apart from the read-only line");
_Static_assert(offsetof(struct spsc, head) / SPSC_CACHE_LINE !=
                   offsetof(struct spsc, slot_mem) / SPSC_CACHE_LINE,
               "hot consumer line apart from the read-only line");
_Static_assert((SPSC_SLOTS_MAX & (SPSC_SLOTS_MAX - 1)) == 0, "power of two");

static unsigned char *slot_at(const struct spsc *q, uint32_t index)
{
    return q->slot_mem + (size_t)(index & q->mask) * q->slot_stride;
}

int spsc_init(struct spsc *q, uint32_t slots, uint32_t msg_bytes)
{
    ASSERT(q != NULL);
    memset(q, 0, sizeof(*q));
    if (slots == 0 || slots > SPSC_SLOTS_MAX || (slots & (slots - 1)) != 0)
        return -EINVAL;
    if (msg_bytes == 0 || msg_bytes > SPSC_MSG_MAX_BYTES)
        return -EINVAL;

    uint32_t stride = (msg_bytes + 7u) & ~7u; /* peeked messages are 8-byte aligned */
    size_t bytes = (size_t)slots * stride;    /* <= 2^30 * 2^16: fits size_t on 64-bit */
    bytes = (bytes + SPSC_CACHE_LINE - 1) & ~(size_t)(SPSC_CACHE_LINE - 1);
    unsigned char *mem = aligned_alloc(SPSC_CACHE_LINE, bytes);
    if (mem == NULL)
        return -ENOMEM;

    q->slot_mem = mem;
    q->mask = slots - 1;
    q->msg_bytes = msg_bytes;
    q->slot_stride = stride;
    return 0;
}

void spsc_destroy(struct spsc *q)
{
    ASSERT(q != NULL);
    free(q->slot_mem);
    q->slot_mem = NULL;
}

int spsc_push(struct spsc *q, const void *msg)
{
    ASSERT(q->slot_mem != NULL && msg != NULL);
    uint32_t tail = q->tail; /* only this side writes it */
    if (tail - q->head_cache > q->mask) {
        /* Looks full: refresh. Acquire pairs with the consumer's release of head, so
         * its reads of the slot we are about to overwrite are complete. */
        q->head_cache = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);
        if (tail - q->head_cache > q->mask)
            return -EAGAIN;
    }
    ASSERT(tail - q->head_cache <= q->mask);
    memcpy(slot_at(q, tail), msg, q->msg_bytes);
    /* Release: the slot's bytes are visible before the new tail is. */
    __atomic_store_n(&q->tail, tail + 1, __ATOMIC_RELEASE);
    return 0;
}

const void *spsc_peek(struct spsc *q)
{
    ASSERT(q->slot_mem != NULL);
    uint32_t head = q->head; /* only this side writes it */
    if (head == q->tail_cache) {
        /* Looks empty: refresh. Acquire pairs with the producer's release of tail. */
        q->tail_cache = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);
        if (head == q->tail_cache)
            return NULL;
    }
    ASSERT(q->tail_cache - head <= q->mask + 1);
    return slot_at(q, head);
}

void spsc_consume(struct spsc *q)
{
    uint32_t head = q->head;
    ASSERT(head != q->tail_cache); /* a successful spsc_peek came first */
    /* Release: our reads of the slot are done before the producer may reuse it. */
    __atomic_store_n(&q->head, head + 1, __ATOMIC_RELEASE);
}

int spsc_pop(struct spsc *q, void *msg)
{
    ASSERT(msg != NULL);
    const void *slot = spsc_peek(q);
    if (slot == NULL)
        return -EAGAIN;
    memcpy(msg, slot, q->msg_bytes);
    spsc_consume(q);
    return 0;
}

uint32_t spsc_count(const struct spsc *q)
{
    /* Head first: tail only grows, so a later tail is >= the head we saw and the
     * difference cannot go negative. It can exceed slots if the consumer popped and
     * the producer pushed in between, hence the clamp. */
    uint32_t head = __atomic_load_n(&q->head, __ATOMIC_ACQUIRE);
    uint32_t tail = __atomic_load_n(&q->tail, __ATOMIC_ACQUIRE);
    uint32_t n = tail - head;
    return n > q->mask + 1 ? q->mask + 1 : n;
}

uint32_t spsc_slots(const struct spsc *q)
{
    return q->mask + 1;
}
