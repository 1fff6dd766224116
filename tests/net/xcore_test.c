/*
 * Tests net/xcore.c: argument checks, backpressure, one MSG_RING wake-up per
 * destination per flush (CQE user_data = tag, res = sender; no CQE on the sender),
 * SQ-full flushes that keep the rest pending, failed wake-ups re-armed, round-robin
 * fair draining, and two threaded runs where 4 endpoints, each a thread with its own
 * SINGLE_ISSUER | DEFER_TASKRUN | COOP_TASKRUN ring, send sequence-numbered messages
 * to every other and sleep in io_uring_submit_and_wait (no timeout) when idle:
 *   - stream: one-way bulk through 64-slot rings, senders hit backpressure;
 *   - rpc: every message is answered, with a small window of outstanding requests,
 *     so endpoints fall asleep and are woken thousands of times.
 * A lost wake-up leaves an endpoint asleep forever: a watchdog in the main thread
 * then stops every endpoint with its own MSG_RING and fails the test instead of
 * hanging.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "net/xcore.h"

#define WAKE_TAG  UINT64_C(0x57414b45) /* "WAKE" */
#define STOP_TAG  UINT64_C(0x53544f50) /* "STOP": watchdog */
#define CHECK_MUL UINT64_C(0x9e3779b97f4a7c15)

enum { KIND_REQ = 1, KIND_REP = 2 };

struct msg {
    uint32_t kind;
    uint32_t from;
    uint64_t seq;
    uint64_t check; /* (seq * CHECK_MUL) ^ kind */
};

static struct msg msg_make(uint32_t kind, unsigned from, uint64_t seq)
{
    struct msg m = {.kind = kind, .from = from, .seq = seq, .check = (seq * CHECK_MUL) ^ kind};
    return m;
}

/* Waits up to timeout_ms for one CQE; returns it copied, or res = -ETIME. */
static struct io_uring_cqe wait_one(struct io_uring *ring, unsigned timeout_ms)
{
    struct __kernel_timespec ts = {.tv_sec = timeout_ms / 1000,
                                   .tv_nsec = (long long)(timeout_ms % 1000) * 1000000};
    struct io_uring_cqe *cqe = NULL;
    struct io_uring_cqe copy = {.user_data = 0, .res = -ETIME};
    if (io_uring_wait_cqe_timeout(ring, &cqe, &ts) == 0 && cqe != NULL) {
        copy = *cqe;
        io_uring_cqe_seen(ring, cqe);
    }
    return copy;
}

/* ---- Single-thread behaviour -------------------------------------------------------- */

static void test_init_rejects_bad_arguments(void **state)
{
    struct xcore x;
    assert_int_equal(xcore_init(&x, 1, 8, 8), -EINVAL);
    assert_int_equal(xcore_init(&x, XCORE_ENDPOINTS_MAX + 1, 8, 8), -EINVAL);
    assert_int_equal(xcore_init(&x, 3, 6, 8), -EINVAL);
    assert_null(x.rings); /* failed init leaves nothing allocated */
    assert_int_equal(xcore_init(&x, 3, 8, 0), -EINVAL);
    xcore_destroy(&x);
    assert_int_equal(xcore_init(&x, 3, 8, sizeof(struct msg)), 0);
    assert_int_equal(x.endpoints, 3);
    assert_int_equal(x.ring_fd[0], -1);
    xcore_destroy(&x);
    xcore_destroy(&x); /* twice is safe */
}

static void collect(void *ctx, unsigned from, void *msg)
{
    struct msg *log = ctx; /* log[0].seq counts entries */
    const struct msg *m = msg;
    uint64_t i = ++log[0].seq;
    log[i] = *m;
    log[i].from = from; /* what the mesh says, checked against m->from by callers */
    log[i].kind = m->from;
}

static void test_send_full_ring_is_backpressure(void **state)
{
    struct xcore x;
    assert_int_equal(xcore_init(&x, 2, 4, sizeof(struct msg)), 0);
    for (uint64_t i = 0; i < 4; i++) {
        struct msg m = msg_make(KIND_REQ, 0, i);
        assert_int_equal(xcore_send(&x, 0, 1, &m), 0);
    }
    struct msg extra = msg_make(KIND_REQ, 0, 99);
    assert_int_equal(xcore_send(&x, 0, 1, &extra), -EAGAIN);
    assert_int_equal(xcore_backlog(&x, 1), 4);
    assert_int_equal(xcore_backlog(&x, 0), 0);

    struct msg log[16] = {{0}};
    assert_int_equal(xcore_drain(&x, 1, collect, log, 100), 4);
    assert_int_equal(log[0].seq, 4);
    for (uint64_t i = 0; i < 4; i++) {
        assert_int_equal(log[i + 1].seq, i);
        assert_int_equal(log[i + 1].from, 0);
    }
    assert_int_equal(xcore_drain(&x, 1, collect, log, 100), 0);
    assert_int_equal(xcore_send(&x, 0, 1, &extra), 0); /* room again */
    xcore_destroy(&x);
}

struct three_rings {
    struct xcore x;
    struct io_uring ring[3];
};

/* The flags the reactors use; one thread may own several such rings. */
#define ENDPOINT_RING_FLAGS                                                                        \
    (IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN | IORING_SETUP_COOP_TASKRUN)

static void three_setup(struct three_rings *t, unsigned sender_entries, unsigned flags)
{
    assert_int_equal(xcore_init(&t->x, 3, 8, sizeof(struct msg)), 0);
    for (unsigned i = 0; i < 3; i++) {
        unsigned entries = i == 0 ? sender_entries : 8;
        assert_int_equal(io_uring_queue_init(entries, &t->ring[i], flags), 0);
        xcore_set_ring_fd(&t->x, i, t->ring[i].ring_fd);
    }
}

static void three_teardown(struct three_rings *t)
{
    for (unsigned i = 0; i < 3; i++)
        io_uring_queue_exit(&t->ring[i]);
    xcore_destroy(&t->x);
}

static void send_req(struct xcore *x, unsigned from, unsigned to, uint64_t seq)
{
    struct msg m = msg_make(KIND_REQ, from, seq);
    assert_int_equal(xcore_send(x, from, to, &m), 0);
}

static void flush_one_wake_per_destination(unsigned flags)
{
    static struct three_rings t;
    three_setup(&t, 8, flags);
    struct io_uring_cqe cqe;

    assert_int_equal(xcore_flush(&t.x, 0, &t.ring[0], WAKE_TAG), 0); /* nothing sent */
    for (uint64_t i = 0; i < 3; i++)
        send_req(&t.x, 0, 1, i);
    send_req(&t.x, 0, 2, 0);
    assert_int_equal(xcore_flush(&t.x, 0, &t.ring[0], WAKE_TAG), 2);
    assert_int_equal(xcore_flush(&t.x, 0, &t.ring[0], WAKE_TAG), 0); /* already flushed */
    assert_int_equal(io_uring_submit(&t.ring[0]), 2);

    for (unsigned to = 1; to <= 2; to++) {
        cqe = wait_one(&t.ring[to], 2000);
        assert_int_equal(cqe.user_data, WAKE_TAG);
        assert_int_equal(cqe.res, 0); /* res = sender */
        cqe = wait_one(&t.ring[to], 50);
        assert_int_equal(cqe.res, -ETIME); /* exactly one wake for three messages */
    }
    cqe = wait_one(&t.ring[0], 50);
    assert_int_equal(cqe.res, -ETIME); /* success CQE on the sender is skipped */

    /* The reverse direction names its own sender. */
    send_req(&t.x, 2, 0, 0);
    assert_int_equal(xcore_flush(&t.x, 2, &t.ring[2], WAKE_TAG + 1), 1);
    assert_int_equal(io_uring_submit(&t.ring[2]), 1);
    cqe = wait_one(&t.ring[0], 2000);
    assert_int_equal(cqe.user_data, WAKE_TAG + 1);
    assert_int_equal(cqe.res, 2);

    struct msg log[16] = {{0}};
    assert_int_equal(xcore_drain(&t.x, 1, collect, log, 100), 3);
    assert_int_equal(xcore_drain(&t.x, 2, collect, log, 100), 1);
    assert_int_equal(xcore_drain(&t.x, 0, collect, log, 100), 1);
    three_teardown(&t);
}

static void test_flush_one_wake_per_destination(void **state)
{
    flush_one_wake_per_destination(0);
}

/* Same with DEFER_TASKRUN rings, where the kernel posts the wake CQE as task work of
 * the target's owner: still one CQE per destination, none on the sender. */
static void test_flush_one_wake_per_destination_defer_taskrun(void **state)
{
    flush_one_wake_per_destination(ENDPOINT_RING_FLAGS);
}

static void test_flush_with_full_sq_keeps_the_rest_pending(void **state)
{
    static struct three_rings t;
    three_setup(&t, 1, 0); /* sender SQ of one entry */
    send_req(&t.x, 0, 1, 0);
    send_req(&t.x, 0, 2, 0);
    assert_int_equal(xcore_flush(&t.x, 0, &t.ring[0], WAKE_TAG), -EBUSY);
    assert_int_equal(io_uring_submit(&t.ring[0]), 1);
    assert_int_equal(xcore_flush(&t.x, 0, &t.ring[0], WAKE_TAG), 1);
    assert_int_equal(io_uring_submit(&t.ring[0]), 1);
    assert_int_equal(xcore_flush(&t.x, 0, &t.ring[0], WAKE_TAG), 0);
    for (unsigned to = 1; to <= 2; to++) {
        struct io_uring_cqe cqe = wait_one(&t.ring[to], 2000);
        assert_int_equal(cqe.user_data, WAKE_TAG);
        assert_int_equal(cqe.res, 0);
        assert_int_equal(wait_one(&t.ring[to], 50).res, -ETIME);
    }
    three_teardown(&t);
}

static void test_failed_wake_is_reported_and_rearmed(void **state)
{
    static struct three_rings t;
    three_setup(&t, 8, 0);
    int not_a_ring = eventfd(0, EFD_CLOEXEC);
    assert_true(not_a_ring >= 0);
    xcore_set_ring_fd(&t.x, 1, not_a_ring);

    send_req(&t.x, 0, 1, 0);
    assert_int_equal(xcore_flush(&t.x, 0, &t.ring[0], WAKE_TAG), 1);
    assert_int_equal(io_uring_submit(&t.ring[0]), 1);
    struct io_uring_cqe cqe = wait_one(&t.ring[0], 2000);
    assert_int_equal(cqe.user_data, WAKE_TAG); /* failure comes back to the sender */
    assert_true(cqe.res < 0);

    /* Re-armed: only the destination that still has messages waiting. */
    assert_int_equal(xcore_wake_failed(&t.x, 0), 1);
    xcore_set_ring_fd(&t.x, 1, t.ring[1].ring_fd);
    assert_int_equal(xcore_flush(&t.x, 0, &t.ring[0], WAKE_TAG), 1);
    assert_int_equal(io_uring_submit(&t.ring[0]), 1);
    cqe = wait_one(&t.ring[1], 2000);
    assert_int_equal(cqe.user_data, WAKE_TAG);
    assert_int_equal(cqe.res, 0);

    struct msg log[4] = {{0}};
    assert_int_equal(xcore_drain(&t.x, 1, collect, log, 10), 1);
    assert_int_equal(xcore_wake_failed(&t.x, 0), 0); /* nothing waiting, nothing armed */
    assert_int_equal(xcore_flush(&t.x, 0, &t.ring[0], WAKE_TAG), 0);
    close(not_a_ring);
    three_teardown(&t);
}

static void test_drain_is_round_robin_fair(void **state)
{
    struct xcore x;
    assert_int_equal(xcore_init(&x, 4, 16, sizeof(struct msg)), 0);
    for (unsigned from = 1; from <= 3; from++)
        for (uint64_t i = 0; i < 10; i++)
            send_req(&x, from, 0, i);

    static struct msg log[64];
    memset(log, 0, sizeof(log));
    assert_int_equal(xcore_drain(&x, 0, collect, log, 6), 6);
    unsigned per_source[4] = {0};
    for (unsigned i = 1; i <= 6; i++)
        per_source[log[i].from]++;
    assert_int_equal(per_source[1], 2);
    assert_int_equal(per_source[2], 2);
    assert_int_equal(per_source[3], 2);
    /* One message per source per pass: no source twice within three entries. */
    for (unsigned i = 1; i + 2 <= 6; i++) {
        assert_int_not_equal(log[i].from, log[i + 1].from);
        assert_int_not_equal(log[i].from, log[i + 2].from);
    }

    /* The rest comes out, each source in its own send order. */
    assert_int_equal(xcore_drain(&x, 0, collect, log, 100), 24);
    assert_int_equal(xcore_drain(&x, 0, collect, log, 100), 0);
    uint64_t next[4] = {0};
    for (unsigned i = 1; i <= 30; i++) {
        assert_int_equal(log[i].kind, log[i].from); /* payload's sender = ring's sender */
        assert_int_equal(log[i].seq, next[log[i].from]++);
    }
    assert_int_equal(next[1] + next[2] + next[3], 30);

    /* A busy source does not starve a quiet one. */
    for (uint64_t i = 0; i < 10; i++)
        send_req(&x, 1, 0, 10 + i);
    send_req(&x, 3, 0, 10);
    memset(log, 0, sizeof(log));
    assert_int_equal(xcore_drain(&x, 0, collect, log, 3), 3);
    assert_true(log[1].from == 3 || log[2].from == 3);
    xcore_destroy(&x);
}

/* ---- Threaded mesh ------------------------------------------------------------------ */

#define MESH_ENDPOINTS 4
#define MESH_SLOTS     64
#define DRAIN_BUDGET   256
#define WATCHDOG_MS    12000

enum mesh_mode { MODE_STREAM, MODE_RPC };

struct mesh;

struct endpoint {
    struct mesh *mesh;
    unsigned id;
    struct io_uring ring;
    int init_err;
    uint64_t sent[MESH_ENDPOINTS];     /* requests sent to each */
    uint64_t next_req[MESH_ENDPOINTS]; /* next request seq expected from each */
    uint64_t next_rep[MESH_ENDPOINTS]; /* next reply seq expected from each */
    uint64_t errors, wakes, wake_failures, sleeps, timed_sleeps, full;
    int stopped, finished;
};

struct mesh {
    struct xcore x;
    enum mesh_mode mode;
    uint64_t per_pair; /* requests from each endpoint to each other */
    uint64_t window;   /* rpc: requests outstanding per destination */
    pthread_barrier_t start;
    int done_count; /* atomic: endpoints out of their loop */
    struct endpoint ep[MESH_ENDPOINTS];
};

static void on_mesh_msg(void *ctx, unsigned from, void *raw)
{
    struct endpoint *ep = ctx;
    const struct msg *m = raw;
    if (m->from != from || m->check != ((m->seq * CHECK_MUL) ^ m->kind)) {
        ep->errors++;
        return;
    }
    if (m->kind == KIND_REP) {
        ep->errors += m->seq != ep->next_rep[from];
        ep->next_rep[from] = m->seq + 1;
        return;
    }
    ep->errors += m->kind != KIND_REQ || m->seq != ep->next_req[from];
    ep->next_req[from] = m->seq + 1;
    if (ep->mesh->mode == MODE_RPC) {
        /* Ring id->from holds at most `window` of our requests and `window` of our
         * replies, and window <= slots / 2, so an answer always fits. */
        struct msg rep = msg_make(KIND_REP, ep->id, m->seq);
        ep->errors += xcore_send(&ep->mesh->x, ep->id, from, &rep) != 0;
    }
}

static int endpoint_done(const struct endpoint *ep)
{
    const struct mesh *t = ep->mesh;
    for (unsigned o = 0; o < MESH_ENDPOINTS; o++) {
        if (o == ep->id)
            continue;
        if (ep->sent[o] < t->per_pair || ep->next_req[o] < t->per_pair)
            return 0;
        if (t->mode == MODE_RPC && ep->next_rep[o] < t->per_pair)
            return 0;
    }
    return 1;
}

static void reap(struct endpoint *ep)
{
    struct io_uring_cqe *cqe;
    unsigned head, seen = 0;
    io_uring_for_each_cqe(&ep->ring, head, cqe)
    {
        seen++;
        if (cqe->user_data == STOP_TAG) {
            ep->stopped = 1;
        } else if (cqe->user_data != WAKE_TAG) {
            ep->errors++;
        } else if (cqe->res < 0) {
            ep->wake_failures++;
            xcore_wake_failed(&ep->mesh->x, ep->id);
        } else {
            ep->wakes++;
            ep->errors += (unsigned)cqe->res >= MESH_ENDPOINTS || (unsigned)cqe->res == ep->id;
        }
    }
    io_uring_cq_advance(&ep->ring, seen);
}

/* Sends what the mode allows now. Returns 1 if a send was refused (ring full). */
static int send_some(struct endpoint *ep)
{
    struct mesh *t = ep->mesh;
    int blocked = 0;
    for (unsigned to = 0; to < MESH_ENDPOINTS; to++) {
        if (to == ep->id)
            continue;
        for (unsigned burst = 0; burst < MESH_SLOTS && ep->sent[to] < t->per_pair; burst++) {
            if (t->mode == MODE_RPC && ep->sent[to] - ep->next_rep[to] >= t->window)
                break;
            struct msg m = msg_make(KIND_REQ, ep->id, ep->sent[to]);
            int err = xcore_send(&t->x, ep->id, to, &m);
            if (err) {
                ep->errors += err != -EAGAIN || t->mode == MODE_RPC;
                ep->full++;
                blocked = 1;
                break;
            }
            ep->sent[to]++;
        }
    }
    return blocked;
}

static void flush_all(struct endpoint *ep)
{
    int n;
    while ((n = xcore_flush(&ep->mesh->x, ep->id, &ep->ring, WAKE_TAG)) == -EBUSY)
        io_uring_submit(&ep->ring);
    ep->errors += n < 0;
}

/* Does the pending-sends part of a turn allow an untimed sleep? */
static int has_unsent(const struct endpoint *ep)
{
    for (unsigned o = 0; o < MESH_ENDPOINTS; o++)
        if (o != ep->id && ep->sent[o] < ep->mesh->per_pair)
            return 1;
    return 0;
}

static void endpoint_loop(struct endpoint *ep)
{
    struct mesh *t = ep->mesh;
    for (;;) {
        reap(ep);
        if (ep->stopped)
            return;
        unsigned got = xcore_drain(&t->x, ep->id, on_mesh_msg, ep, DRAIN_BUDGET);
        int blocked = send_some(ep);
        flush_all(ep);
        if (endpoint_done(ep)) {
            io_uring_submit(&ep->ring); /* the last wake-ups leave */
            ep->finished = 1;
            return;
        }
        int ret;
        if (got == DRAIN_BUDGET || (t->mode == MODE_STREAM && has_unsent(ep) && !blocked)) {
            ret = io_uring_submit(&ep->ring); /* more work right now */
        } else if (blocked) {
            /* Nothing signals free space: poll for it, but briefly. */
            struct __kernel_timespec ts = {.tv_sec = 0, .tv_nsec = 200 * 1000};
            struct io_uring_cqe *cqe;
            ep->timed_sleeps++;
            ret = io_uring_submit_and_wait_timeout(&ep->ring, &cqe, 1, &ts, NULL);
        } else {
            /* Idle until a wake-up: a lost one hangs here (the watchdog fails it). */
            ep->sleeps++;
            ret = io_uring_submit_and_wait(&ep->ring, 1);
        }
        ep->errors += ret < 0 && ret != -ETIME && ret != -EINTR;
    }
}

static void *endpoint_main(void *arg)
{
    struct endpoint *ep = arg;
    struct mesh *t = ep->mesh;
    struct io_uring_params p = {0};
    p.flags = ENDPOINT_RING_FLAGS | IORING_SETUP_CQSIZE;
    p.cq_entries = 4096;
    ep->init_err = io_uring_queue_init_params(64, &ep->ring, &p);
    if (ep->init_err == 0)
        xcore_set_ring_fd(&t->x, ep->id, ep->ring.ring_fd);
    pthread_barrier_wait(&t->start); /* every ring fd is set before any flush */
    int all_ok = 1;
    for (unsigned i = 0; i < MESH_ENDPOINTS; i++)
        all_ok &= t->ep[i].init_err == 0;
    if (all_ok)
        endpoint_loop(ep);

    /* No ring closes while another endpoint may still flush to it. */
    __atomic_add_fetch(&t->done_count, 1, __ATOMIC_ACQ_REL);
    while (__atomic_load_n(&t->done_count, __ATOMIC_ACQUIRE) < MESH_ENDPOINTS) {
        struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    if (ep->init_err == 0)
        io_uring_queue_exit(&ep->ring);
    return NULL;
}

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Waits for the endpoints; past the deadline wakes each with STOP and returns -1. */
static int watchdog(struct mesh *t)
{
    double deadline = now_s() + WATCHDOG_MS / 1000.0;
    while (now_s() < deadline) {
        /* Every endpoint counts itself out of its loop, finished or not. */
        if (__atomic_load_n(&t->done_count, __ATOMIC_ACQUIRE) == MESH_ENDPOINTS)
            return 0;
        struct timespec ms = {0, 2000000};
        nanosleep(&ms, NULL);
    }
    struct io_uring ring;
    assert_int_equal(io_uring_queue_init(8, &ring, 0), 0);
    for (unsigned i = 0; i < MESH_ENDPOINTS; i++) {
        struct io_uring_sqe *sqe = io_uring_get_sqe(&ring);
        io_uring_prep_msg_ring(sqe, t->ep[i].ring.ring_fd, 0, STOP_TAG, 0);
        io_uring_sqe_set_data64(sqe, i);
    }
    assert_int_equal(io_uring_submit(&ring), MESH_ENDPOINTS);
    for (unsigned i = 0; i < MESH_ENDPOINTS; i++) {
        struct io_uring_cqe cqe = wait_one(&ring, 1000);
        print_message("watchdog: STOP to endpoint %llu: %d\n", (unsigned long long)cqe.user_data,
                      cqe.res);
    }
    io_uring_queue_exit(&ring);
    return -1;
}

static void run_mesh(enum mesh_mode mode, uint64_t per_pair, uint64_t window)
{
    static struct mesh t;
    memset(&t, 0, sizeof(t));
    t.mode = mode;
    t.per_pair = per_pair;
    t.window = window;
    assert_true(window <= MESH_SLOTS / 2);
    assert_int_equal(xcore_init(&t.x, MESH_ENDPOINTS, MESH_SLOTS, sizeof(struct msg)), 0);
    assert_int_equal(pthread_barrier_init(&t.start, NULL, MESH_ENDPOINTS), 0);

    double start = now_s();
    pthread_t th[MESH_ENDPOINTS];
    for (unsigned i = 0; i < MESH_ENDPOINTS; i++) {
        t.ep[i].mesh = &t;
        t.ep[i].id = i;
        assert_int_equal(pthread_create(&th[i], NULL, endpoint_main, &t.ep[i]), 0);
    }
    int timed_out = watchdog(&t);
    for (unsigned i = 0; i < MESH_ENDPOINTS; i++)
        assert_int_equal(pthread_join(th[i], NULL), 0);
    double elapsed = now_s() - start;

    uint64_t wakes = 0, sleeps = 0, timed = 0, full = 0, msgs = 0;
    for (unsigned i = 0; i < MESH_ENDPOINTS; i++) {
        struct endpoint *ep = &t.ep[i];
        print_message("endpoint %u: finished %d errors %llu wakes %llu sleeps %llu "
                      "timed %llu full %llu wake_failures %llu\n",
                      i, ep->finished, (unsigned long long)ep->errors,
                      (unsigned long long)ep->wakes, (unsigned long long)ep->sleeps,
                      (unsigned long long)ep->timed_sleeps, (unsigned long long)ep->full,
                      (unsigned long long)ep->wake_failures);
        assert_int_equal(ep->init_err, 0);
        assert_false(timed_out); /* a lost wake-up left an endpoint asleep */
        assert_true(ep->finished);
        assert_int_equal(ep->errors, 0);
        assert_int_equal(ep->wake_failures, 0);
        for (unsigned o = 0; o < MESH_ENDPOINTS; o++) {
            if (o == i)
                continue;
            assert_int_equal(ep->sent[o], per_pair);
            assert_int_equal(ep->next_req[o], per_pair);
            assert_int_equal(ep->next_rep[o], mode == MODE_RPC ? per_pair : 0);
            msgs += ep->next_req[o] + ep->next_rep[o];
        }
        assert_int_equal(xcore_backlog(&t.x, i), 0); /* nothing left or duplicated */
        wakes += ep->wakes;
        sleeps += ep->sleeps;
        timed += ep->timed_sleeps;
        full += ep->full;
    }
    assert_true(wakes > 0);
    assert_true(sleeps > 0);
    print_message("mesh %s: %llu messages in %.3f s = %.2f M msg/s; %llu wakes, %llu idle "
                  "sleeps, %llu backpressure waits, %llu full rings\n",
                  mode == MODE_RPC ? "rpc" : "stream", (unsigned long long)msgs, elapsed,
                  msgs / elapsed / 1e6, (unsigned long long)wakes, (unsigned long long)sleeps,
                  (unsigned long long)timed, (unsigned long long)full);
    pthread_barrier_destroy(&t.start);
    xcore_destroy(&t.x);
}

static void test_mesh_stream_with_backpressure(void **state)
{
    run_mesh(MODE_STREAM, 300000, 0);
}

static void test_mesh_rpc_sleeps_and_wakes(void **state)
{
    run_mesh(MODE_RPC, 20000, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_init_rejects_bad_arguments),
        cmocka_unit_test(test_send_full_ring_is_backpressure),
        cmocka_unit_test(test_flush_one_wake_per_destination),
        cmocka_unit_test(test_flush_one_wake_per_destination_defer_taskrun),
        cmocka_unit_test(test_flush_with_full_sq_keeps_the_rest_pending),
        cmocka_unit_test(test_failed_wake_is_reported_and_rearmed),
        cmocka_unit_test(test_drain_is_round_robin_fair),
        cmocka_unit_test(test_mesh_stream_with_backpressure),
        cmocka_unit_test(test_mesh_rpc_sleeps_and_wakes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
