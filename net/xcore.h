/*
 * Cross-core mesh: one SPSC ring for every ordered pair of endpoints, with io_uring
 * IORING_OP_MSG_RING wake-ups (DESIGN.md "Shared-nothing cores", "Group commit").
 *
 * An endpoint is one thread with its own io_uring: a reactor per core, a shard per
 * core. ring[from][to] carries messages of one fixed size from `from` to `to`; only
 * thread `from` sends on it and only thread `to` drains it, so every ring is SPSC and
 * nothing on the path takes a lock.
 *
 * Sending is two steps. xcore_send() only pushes (no syscall) and remembers the
 * destination as "pending". Once per loop turn the sender calls xcore_flush(), which
 * prepares ONE MSG_RING SQE per pending destination on the sender's own ring; the
 * sender's next io_uring_submit (usually its io_uring_submit_and_wait) sends them. So
 * a turn that hands 300 requests to a shard costs that shard one wake-up.
 *
 * The wake-up arrives in the destination's CQ as a CQE with user_data = wake_tag
 * (the sender's choice; all endpoints normally use one constant) and res = the
 * sender's endpoint number (>= 0). The destination reacts by calling xcore_drain().
 *
 * The MSG_RING's own completion on the sender's ring is suppressed on success
 * (IOSQE_CQE_SKIP_SUCCESS). If the kernel fails to deliver a wake-up (target ring gone,
 * fd not a ring, target CQ overflow on older kernels) the sender DOES get a CQE: with
 * user_data = wake_tag as well and res = -errno (< 0). So one handler serves both:
 *
 *     if (cqe->user_data == WAKE_TAG) {
 *         if (cqe->res < 0)
 *             xcore_wake_failed(x, self);       // re-arm wakes, sent by next flush
 *         xcore_drain(x, self, on_msg, ctx, budget);
 *     }
 *
 * No lost wake-up. The rule for every endpoint loop is: reap CQEs, drain (repeat while
 * a drain returns its whole budget), send + flush, then io_uring_submit_and_wait. A
 * message pushed before a flush is always seen:
 *   - The sender pushes (store-release of the ring's tail) and only later, in program
 *     order, prepares and submits the MSG_RING. The kernel posts the wake CQE after
 *     that submit; the destination reads the CQ tail with load-acquire before it sees
 *     the CQE, and drains after that. So a drain that follows the wake CQE sees the
 *     push (happens-before chain: push -> submit -> CQE post -> CQE read -> drain).
 *   - Race "destination drains (finds nothing), sender pushes + flushes, destination
 *     sleeps": the wake CQE is posted after the drain. If it is posted before the
 *     destination enters io_uring_submit_and_wait, the wait returns at once because a
 *     CQE is ready; if during the wait, it wakes the waiter. With DEFER_TASKRUN the
 *     kernel queues the post as task work on the destination's task, and a wait
 *     (GETEVENTS) runs pending task work first and is woken by new task work. Either
 *     way the destination returns from the wait, reaps the wake CQE, and drains.
 *   - Pending marks belong to the sender thread alone (no atomics needed): a mark is
 *     set by every successful xcore_send and cleared only when its SQE is prepared,
 *     so a push is always followed by a prepared SQE; an SQE the kernel could not
 *     deliver comes back as a res < 0 CQE and xcore_wake_failed() re-arms it.
 *   - The only obligation on the caller: an SQE prepared by xcore_flush must be
 *     submitted before the sender sleeps, which io_uring_submit_and_wait does.
 *
 * Backpressure: a full ring returns -EAGAIN from xcore_send; the sender keeps the
 * message and retries later. No wake-up tells the sender that space appeared, so a
 * sender holding refused messages must not sleep without a timeout (the reactor's
 * tick suffices); flush first, so the destination is awake to make space.
 *
 * Setup order: xcore_init (any thread); every endpoint's ring exists and its fd is
 * recorded with xcore_set_ring_fd before any endpoint sends or flushes. A ring with
 * SINGLE_ISSUER | DEFER_TASKRUN must be used by one task only, and MSG_RING to it is
 * delivered as task work to that task: `serve` creates such a ring in the main thread
 * with IORING_SETUP_R_DISABLED and lets its reactor thread enable it (and so become its
 * issuer) first thing; the recording of every fd happens before the threads are
 * created, which orders it before all traffic (tests/net/xcore_test.c, which creates
 * rings in their threads, uses a barrier instead). Teardown: every endpoint stops
 * sending and flushing before any ring is closed, then xcore_destroy.
 *
 * Memory: endpoints * (endpoints - 1) rings of slots * msg_bytes (rounded to 8).
 */
#ifndef RINGPAY_NET_XCORE_H
#define RINGPAY_NET_XCORE_H

#include <liburing.h>
#include <stdint.h>

#include "engine/limits.h"
#include "net/spsc.h"

/* A reactor and a shard per core. */
#define XCORE_ENDPOINTS_MAX (2 * CORES_MAX)

#define XCORE_MASK_WORDS ((XCORE_ENDPOINTS_MAX + 63) / 64)

/* Per-endpoint state, written only by that endpoint's thread. One cache line each so
 * endpoints never write a shared line. */
struct xcore_endpoint {
    _Alignas(SPSC_CACHE_LINE) uint64_t pending[XCORE_MASK_WORDS]; /* as sender */
    unsigned drain_next; /* as receiver: first source of the next drain */
};

/* Treat as private; embedded by the caller so the layout is public. */
struct xcore {
    unsigned endpoints;
    uint32_t msg_bytes;
    struct spsc *rings;               /* [from * endpoints + to]; the diagonal is unused */
    struct xcore_endpoint *ends;      /* [endpoints] */
    int ring_fd[XCORE_ENDPOINTS_MAX]; /* -1 until set; read-only once traffic starts */
};

/*
 * Allocates and initialises the mesh: endpoints in [2, XCORE_ENDPOINTS_MAX], every
 * ring with `slots` (power of two) messages of msg_bytes. Returns 0, -EINVAL or
 * -ENOMEM; on error nothing is left allocated.
 */
int xcore_init(struct xcore *x, unsigned endpoints, uint32_t slots, uint32_t msg_bytes);

/* Frees everything. No endpoint may use the mesh any more. Safe to call twice. */
void xcore_destroy(struct xcore *x);

/* Records the io_uring fd of `endpoint` (ring->ring_fd). Call once per endpoint,
 * before traffic starts (see Setup). */
void xcore_set_ring_fd(struct xcore *x, unsigned endpoint, int ring_fd);

/*
 * Thread `from` only. Copies msg (msg_bytes) into ring[from][to] and marks `to`
 * pending for the next flush. No syscall. 0, or -EAGAIN when that ring is full
 * (nothing queued: backpressure, the caller keeps the message).
 */
int xcore_send(struct xcore *x, unsigned from, unsigned to, const void *msg);

/*
 * Thread `from` only. For every destination marked pending since the last flush,
 * prepares one MSG_RING SQE on `ring` (the sender's own ring, not submitted here)
 * that posts a CQE {user_data = wake_tag, res = from} on the destination's ring. The
 * SQE carries IOSQE_CQE_SKIP_SUCCESS and user_data = wake_tag, so the sender sees a
 * CQE only on failure, with res < 0 (see xcore_wake_failed).
 * Returns the number of SQEs prepared (0 if nothing was pending), or -EBUSY if the SQ
 * ran out of entries: the SQEs prepared so far stay in the SQ and the remaining
 * destinations stay pending for the next flush (submit, then flush again).
 */
int xcore_flush(struct xcore *x, unsigned from, struct io_uring *ring, uint64_t wake_tag);

/*
 * Thread `from` only, on a wake_tag CQE with res < 0 on its own ring: a wake-up was
 * not delivered and we do not know to whom, so every destination whose ring from
 * `from` is not empty is marked pending again. Spurious wake-ups are harmless.
 * Returns the number of destinations marked.
 */
unsigned xcore_wake_failed(struct xcore *x, unsigned from);

/* Called for each drained message: `msg` (msg_bytes, 8-byte aligned) is valid only
 * during the call. The callback may xcore_send (from `to` to anyone) but must not
 * drain `to` again. */
typedef void xcore_msg_fn(void *ctx, unsigned from, void *msg);

/*
 * Thread `to` only. Pops up to `max` messages in total from the rings into `to`,
 * round-robin one message per source per pass (so a busy source cannot starve the
 * others), starting each call at the source after the one the last call started at.
 * Per source, messages come in send order. Returns the number delivered; if it
 * returns `max`, more may be waiting: drain again before sleeping.
 */
unsigned xcore_drain(struct xcore *x, unsigned to, xcore_msg_fn *fn, void *ctx, unsigned max);

/* Messages waiting in all rings into `to` (approximate, any thread). */
uint32_t xcore_backlog(const struct xcore *x, unsigned to);

#endif
