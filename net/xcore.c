/*
 * Cross-core mesh of SPSC rings with MSG_RING wake-ups: see xcore.h for the contract,
 * the setup order and the no-lost-wake-up argument.
 *
 * Invariants: ring[i][i] is never initialised nor used; a destination's pending bit
 * is set by every successful send and cleared only when its MSG_RING SQE is prepared;
 * ends[e] is written only by thread e; ring_fd[] is written before traffic starts.
 */
#include "net/xcore.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "engine/assert.h"

_Static_assert(sizeof(struct spsc) % SPSC_CACHE_LINE == 0, "rings tile cache lines");
_Static_assert(sizeof(struct xcore_endpoint) == SPSC_CACHE_LINE, "one line per endpoint");

static struct spsc *ring_of(const struct xcore *x, unsigned from, unsigned to)
{
    ASSERT(from < x->endpoints && to < x->endpoints && from != to);
    return &x->rings[(size_t)from * x->endpoints + to];
}

static void mask_set(uint64_t *mask, unsigned bit)
{
    mask[bit / 64] |= UINT64_C(1) << (bit % 64);
}

static void mask_clear(uint64_t *mask, unsigned bit)
{
    mask[bit / 64] &= ~(UINT64_C(1) << (bit % 64));
}

static int mask_test(const uint64_t *mask, unsigned bit)
{
    return (mask[bit / 64] >> (bit % 64)) & 1;
}

static void rings_destroy(struct xcore *x)
{
    size_t total = (size_t)x->endpoints * x->endpoints;
    for (size_t i = 0; i < total; i++)
        spsc_destroy(&x->rings[i]); /* diagonal and uninitialised: slot_mem NULL */
}

int xcore_init(struct xcore *x, unsigned endpoints, uint32_t slots, uint32_t msg_bytes)
{
    ASSERT(x != NULL);
    memset(x, 0, sizeof(*x));
    if (endpoints < 2 || endpoints > XCORE_ENDPOINTS_MAX)
        return -EINVAL;

    size_t total = (size_t)endpoints * endpoints;
    x->rings = aligned_alloc(SPSC_CACHE_LINE, total * sizeof(struct spsc));
    if (x->rings == NULL)
        return -ENOMEM;
    memset(x->rings, 0, total * sizeof(struct spsc));
    x->endpoints = endpoints;
    x->msg_bytes = msg_bytes;

    int err = -ENOMEM;
    x->ends = aligned_alloc(SPSC_CACHE_LINE, endpoints * sizeof(struct xcore_endpoint));
    if (x->ends == NULL)
        goto out_free_rings;
    memset(x->ends, 0, endpoints * sizeof(struct xcore_endpoint));
    for (unsigned i = 0; i < XCORE_ENDPOINTS_MAX; i++)
        x->ring_fd[i] = -1;

    for (unsigned from = 0; from < endpoints; from++) {
        for (unsigned to = 0; to < endpoints; to++) {
            if (from == to)
                continue;
            err = spsc_init(ring_of(x, from, to), slots, msg_bytes);
            if (err)
                goto out_destroy_rings;
        }
    }
    return 0;

out_destroy_rings:
    rings_destroy(x);
    free(x->ends);
out_free_rings:
    free(x->rings);
    memset(x, 0, sizeof(*x));
    return err;
}

void xcore_destroy(struct xcore *x)
{
    ASSERT(x != NULL);
    if (x->rings == NULL)
        return;
    rings_destroy(x);
    free(x->rings);
    free(x->ends);
    memset(x, 0, sizeof(*x));
}

void xcore_set_ring_fd(struct xcore *x, unsigned endpoint, int ring_fd)
{
    ASSERT(endpoint < x->endpoints && ring_fd >= 0);
    /* Release/acquire so a sender that sees the fd also sees it whole; the caller's
     * start barrier orders it before traffic anyway. */
    __atomic_store_n(&x->ring_fd[endpoint], ring_fd, __ATOMIC_RELEASE);
}

int xcore_send(struct xcore *x, unsigned from, unsigned to, const void *msg)
{
    int err = spsc_push(ring_of(x, from, to), msg);
    if (err)
        return err;
    mask_set(x->ends[from].pending, to);
    return 0;
}

int xcore_flush(struct xcore *x, unsigned from, struct io_uring *ring, uint64_t wake_tag)
{
    ASSERT(from < x->endpoints && ring != NULL);
    uint64_t *pending = x->ends[from].pending;
    int prepared = 0;
    for (unsigned w = 0; w < XCORE_MASK_WORDS; w++) {
        while (pending[w] != 0) {
            unsigned to = w * 64 + (unsigned)__builtin_ctzll(pending[w]);
            ASSERT(to < x->endpoints && to != from);
            struct io_uring_sqe *sqe = io_uring_get_sqe(ring);
            if (sqe == NULL)
                return -EBUSY; /* `to` and the rest stay pending */
            int fd = __atomic_load_n(&x->ring_fd[to], __ATOMIC_ACQUIRE);
            ASSERT(fd >= 0); /* set before traffic: see xcore.h Setup order */
            /* Target CQE: user_data = wake_tag, res = from. */
            io_uring_prep_msg_ring(sqe, fd, from, wake_tag, 0);
            io_uring_sqe_set_flags(sqe, IOSQE_CQE_SKIP_SUCCESS);
            io_uring_sqe_set_data64(sqe, wake_tag); /* failure CQE on our ring */
            mask_clear(pending, to);
            prepared++;
        }
    }
    return prepared;
}

unsigned xcore_wake_failed(struct xcore *x, unsigned from)
{
    ASSERT(from < x->endpoints);
    unsigned marked = 0;
    for (unsigned to = 0; to < x->endpoints; to++) {
        if (to == from || spsc_count(ring_of(x, from, to)) == 0)
            continue;
        mask_set(x->ends[from].pending, to);
        marked++;
    }
    return marked;
}

unsigned xcore_drain(struct xcore *x, unsigned to, xcore_msg_fn *fn, void *ctx, unsigned max)
{
    ASSERT(to < x->endpoints && fn != NULL);
    unsigned n = x->endpoints;
    struct xcore_endpoint *ep = &x->ends[to];
    unsigned start = ep->drain_next;
    ep->drain_next = (start + 1) % n;

    uint64_t live[XCORE_MASK_WORDS] = {0}; /* sources not yet found empty this call */
    unsigned live_count = n - 1;
    for (unsigned from = 0; from < n; from++)
        if (from != to)
            mask_set(live, from);

    unsigned delivered = 0;
    while (delivered < max && live_count > 0) {
        for (unsigned i = 0; i < n && delivered < max; i++) {
            unsigned from = (start + i) % n;
            if (!mask_test(live, from))
                continue;
            struct spsc *q = ring_of(x, from, to);
            const void *msg = spsc_peek(q);
            if (msg == NULL) {
                mask_clear(live, from);
                live_count--;
                continue;
            }
            fn(ctx, from, (void *)msg); /* the slot is ours until consume */
            spsc_consume(q);
            delivered++;
        }
    }
    return delivered;
}

uint32_t xcore_backlog(const struct xcore *x, unsigned to)
{
    ASSERT(to < x->endpoints);
    uint32_t total = 0;
    for (unsigned from = 0; from < x->endpoints; from++)
        if (from != to)
            total += spsc_count(ring_of(x, from, to));
    return total;
}
