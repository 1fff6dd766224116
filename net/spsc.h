/*
 * Lock-free single-producer single-consumer ring of fixed-size messages.
 *
 * One thread (the producer) pushes, one other thread (the consumer) pops; both may
 * read spsc_count(). Messages are copied in and out by value (msg_bytes each). A
 * message may carry a pointer to memory the producer filled before the push: the
 * push's release and the pop's acquire make those writes visible to the consumer, so
 * handing over ownership of a buffer by pointer needs no further synchronisation.
 *
 * Indices are free-running uint32_t counters: `tail` counts pushes, `head` counts
 * pops, the slot of index i is i & (slots - 1), and the ring holds tail - head
 * messages (wrapping arithmetic, so the counters may overflow freely). Invariants:
 *     0 <= tail - head <= slots,  slots is a power of two <= SPSC_SLOTS_MAX.
 * Only the producer writes tail (store-release after the slot is written) and only the
 * consumer writes head (store-release after the slot is read); each side reads the
 * other's index with load-acquire. So a popped slot was completely written, and a
 * slot is overwritten only after its previous message was completely read.
 *
 * Cache lines: the producer's fields (tail and its cached copy of head) and the
 * consumer's fields (head and its cached copy of tail) live on separate 64-byte lines,
 * and the read-only geometry on a third. A side reloads the other's index only when
 * its cached copy says the ring looks full (producer) or empty (consumer), so in steady
 * state a push or pop touches the shared lines once per lap, not once per message.
 *
 * No locks, no syscalls, no allocation after spsc_init. A full ring is backpressure:
 * spsc_push returns -EAGAIN and writes nothing; the caller keeps the message.
 */
#ifndef RINGPAY_NET_SPSC_H
#define RINGPAY_NET_SPSC_H

#include <stdint.h>

#define SPSC_CACHE_LINE 64

/* Bounds the counters' distance well inside uint32_t wrap-around. */
#define SPSC_SLOTS_MAX (1u << 30)

/* One message; larger payloads belong in memory the message points into. */
#define SPSC_MSG_MAX_BYTES (64u * 1024)

/*
 * The caller embeds this (for example one per ring of a mesh); treat the fields as
 * private. Aligned to a cache line so that embedding never shares a line with a
 * neighbour's hot field.
 */
struct spsc {
    /* Read-only after spsc_init. */
    _Alignas(SPSC_CACHE_LINE) unsigned char *slot_mem;
    uint32_t mask;        /* slots - 1 */
    uint32_t msg_bytes;   /* bytes copied per message */
    uint32_t slot_stride; /* msg_bytes rounded up to 8 */

    /* Producer line: written only by the producer. */
    _Alignas(SPSC_CACHE_LINE) uint32_t tail;
    uint32_t head_cache; /* last head the producer loaded */

    /* Consumer line: written only by the consumer. */
    _Alignas(SPSC_CACHE_LINE) uint32_t head;
    uint32_t tail_cache; /* last tail the consumer loaded */
};

/*
 * Sets up an empty ring of `slots` messages of `msg_bytes` each and allocates the
 * slot memory (cache-line aligned). Returns 0; -EINVAL if slots is not a power of two
 * in [1, SPSC_SLOTS_MAX] or msg_bytes not in [1, SPSC_MSG_MAX_BYTES]; -ENOMEM.
 * On error nothing is allocated and spsc_destroy is a no-op on q.
 */
int spsc_init(struct spsc *q, uint32_t slots, uint32_t msg_bytes);

/* Frees the slot memory. Both sides must have stopped. Safe to call twice. */
void spsc_destroy(struct spsc *q);

/* Producer only. Copies msg_bytes from msg into the ring: 0, or -EAGAIN when full
 * (nothing written). */
int spsc_push(struct spsc *q, const void *msg);

/* Consumer only. Copies the oldest message into msg and removes it: 0, or -EAGAIN
 * when empty (msg untouched). */
int spsc_pop(struct spsc *q, void *msg);

/*
 * Consumer only, zero-copy pop in two steps: spsc_peek returns the oldest message in
 * place (valid until spsc_consume) or NULL when empty; spsc_consume removes it and
 * must follow a non-NULL spsc_peek.
 */
const void *spsc_peek(struct spsc *q);
void spsc_consume(struct spsc *q);

/* Messages in the ring, in [0, slots]. Exact for the calling side's own view only
 * at the moment of the call: the other side may change it at once. Either side. */
uint32_t spsc_count(const struct spsc *q);

/* Capacity in messages. */
uint32_t spsc_slots(const struct spsc *q);

#endif
