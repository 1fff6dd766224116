/*
 * Tests of the shard store's write-ahead log mode (store/shard_wal.c) through the public
 * shard_store API (.wal = 1, small segments, layers and checkpoints):
 *   - reads see the state split across LMDB, the frozen layer (a checkpoint held at its
 *     commit by the test's hook) and the active layer: payments changed in a later
 *     layer, balance lists merging currencies from all three, ledger pages crossing
 *     both boundaries (with `more` / next_after), idempotent replays and reused keys of
 *     records in each place; every answer and the whole visible state equal those of
 *     an LMDB-mode store that ran the same batches;
 *   - an unclean end (a forked child runs a random plan and _exits without closing: no
 *     final checkpoint) and a reopen: the state equals that of the LMDB-mode reference,
 *     and every request sent again with its key gets its first answer byte for byte;
 *   - segments are recycled below checkpoints and the log directory stays bounded;
 *   - a tiny overlay: shard_store_ready goes false while a checkpoint runs, operations
 *     beyond room are answered 503 (rc -EBUSY), never a crash, and everything answered
 *     is there after the checkpoints and after a reopen;
 *   - shard_store_outbox_scan sees the events of LMDB and both layers in order, without
 *     gaps or duplicates, in any window, and the replicated mark trims at a checkpoint;
 *   - an idempotency record older than the TTL is absent wherever it lives (controlled
 *     `now`), and a recovery with expiries in its log rebuilds the same state as a run
 *     that never crashed;
 *   - a failing log write fails the store for good and loses nothing that was durable;
 *   - the shard loop over the log (store/shard.c) releases answers in order, each only
 *     once the log's durable position covers it.
 * Forked children end with _exit (no close, no final checkpoint); cmocka runs only in
 * the parent. The crash at each step of a checkpoint is shard_wal_crash_test.c.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "engine/clock.h"
#include "store/check.h"
#include "store/shard.h"
#include "store/shard_store.h"
#include "wal_harness.h"

#define SEG_BYTES ((size_t)256 << 10) /* a few times WALREC_OP_MAX_BYTES */

/* ---- a hook that holds a checkpoint at one of its steps --------------------------------- */

struct gate {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int hold_step;     /* SHARD_CKPT_*; 0: never hold */
    unsigned hold_nth; /* hold the nth time that step comes (1-based) */
    unsigned seen[8];  /* times each step came */
    bool held, open;
};

static void gate_init(struct gate *g, int step, unsigned nth)
{
    memset(g, 0, sizeof(*g));
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cv, NULL);
    g->hold_step = step;
    g->hold_nth = nth;
}

static void gate_hook(void *arg, int step)
{
    struct gate *g = arg;
    pthread_mutex_lock(&g->mu);
    g->seen[step]++;
    if (step == g->hold_step && g->seen[step] == g->hold_nth && !g->open) {
        g->held = true;
        pthread_cond_broadcast(&g->cv);
        while (!g->open)
            pthread_cond_wait(&g->cv, &g->mu);
        g->held = false;
    }
    pthread_mutex_unlock(&g->mu);
}

/* Waits (bounded) until the checkpointer is held; the log must be durable for it. */
static void gate_wait_held(struct gate *g)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += 30;
    pthread_mutex_lock(&g->mu);
    while (!g->held) {
        if (pthread_cond_timedwait(&g->cv, &g->mu, &ts) != 0) {
            pthread_mutex_unlock(&g->mu);
            fail_msg("the checkpoint did not reach step %d within 30 s", g->hold_step);
        }
    }
    pthread_mutex_unlock(&g->mu);
}

static void gate_open(struct gate *g)
{
    pthread_mutex_lock(&g->mu);
    g->open = true;
    pthread_cond_broadcast(&g->cv);
    pthread_mutex_unlock(&g->mu);
}

static void gate_fini(struct gate *g)
{
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cv);
}

static struct shard_store_stats stats_of(struct shard_store *s)
{
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    return st;
}

/* Polls until the store has taken back `n` checkpoints in all (bounded). */
static void wait_checkpoints(struct shard_store *s, uint64_t n)
{
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    while (stats_of(s).checkpoints < n || !shard_store_ready(s)) {
        if (clock_mono_ns() > deadline)
            fail_msg("%" PRIu64 " checkpoints not reached within 30 s (%" PRIu64 ")", n,
                     stats_of(s).checkpoints);
        assert_int_equal(wh_poll(s, 5), 0);
    }
    /* The one that completed last is taken back by a poll after it finished. */
    for (int i = 0; i < 20; i++)
        assert_int_equal(wh_poll(s, 1), 0);
}

static void check_dir(const char *dir)
{
    FILE *rep = tmpfile();
    assert_non_null(rep);
    int rc = store_check(dir, rep);
    if (rc != 0) {
        rewind(rep);
        char line[512];
        while (fgets(line, sizeof(line), rep))
            fprintf(stderr, "check: %s", line);
    }
    fclose(rep);
    assert_int_equal(rc, 0);
}

/* Fails with the first line where two dumps differ. */
static void assert_same_dump(const char *what, const char *got, const char *want)
{
    if (strcmp(got, want) == 0)
        return;
    size_t i = 0, line = 1, start = 0;
    for (; got[i] && got[i] == want[i]; i++)
        if (got[i] == '\n')
            line++, start = i + 1;
    fail_msg("%s: the state differs at line %zu:\n got: %.300s\nwant: %.300s", what, line,
             got + start, want + start);
}

/* ---- two stores driven with the same batches --------------------------------------------- */

struct pair {
    struct shard_store *w; /* the write-ahead log mode */
    struct shard_store *r; /* the LMDB mode: the reference */
    int64_t now;
};

static const char *pid(int n)
{
    static char ids[8][ID_BYTES + 1];
    static int next;
    char *id = ids[next++ % 8];
    snprintf(id, ID_BYTES + 1, "pay_00%016x", n);
    return id;
}

static void req_auth(struct wh_req *r, const char *key, const char *m, int64_t amount,
                     const char *cur, const char *reference)
{
    char body[256];
    snprintf(body, sizeof(body),
             "{\"merchant_id\":\"%s\",\"amount\":%" PRId64 ",\"currency\":\"%s\"%s%s%s}", m, amount,
             cur, reference ? ",\"reference\":\"" : "", reference ? reference : "",
             reference ? "\"" : "");
    wh_req_set(r, "POST", "/v1/payments/authorize", body, key);
}

static void req_follow(struct wh_req *r, const char *key, int pay, const char *verb, int64_t amount)
{
    char path[128], body[64] = "{}";
    snprintf(path, sizeof(path), "/v1/payments/%s/%s", pid(pay), verb);
    if (amount)
        snprintf(body, sizeof(body), "{\"amount\":%" PRId64 "}", amount);
    wh_req_set(r, "POST", path, body, key);
}

/* Applies reqs as one batch to both stores, settles both, and checks that every answer
 * is the same; the write-ahead log mode's answers are returned in out (may be NULL). */
static void both(struct pair *p, struct wh_req *reqs, size_t n, struct wh_ans *out)
{
    struct wh_ans aw[16], ar[16];
    assert_true(n <= 16);
    p->now += 10;
    assert_int_equal(wh_apply(p->w, reqs, n, p->now, aw), 0);
    assert_int_equal(wh_apply(p->r, reqs, n, p->now, ar), 0);
    assert_int_equal(wh_settle(p->w), 0);
    assert_int_equal(wh_settle(p->r), 0);
    for (size_t i = 0; i < n; i++) {
        if (!wh_ans_same(&aw[i], &ar[i]) || aw[i].replayed != ar[i].replayed)
            fail_msg("%s %s (key %s): wal %d%s %s; lmdb %d%s %s", reqs[i].method, reqs[i].path,
                     reqs[i].key, aw[i].status, aw[i].replayed ? " replayed" : "", aw[i].body,
                     ar[i].status, ar[i].replayed ? " replayed" : "", ar[i].body);
        if (out)
            out[i] = aw[i];
        else
            wh_ans_free(&aw[i]);
        wh_ans_free(&ar[i]);
        wh_req_free(&reqs[i]);
    }
}

static void assert_same_state(struct pair *p, const char *what, uint64_t npays)
{
    static const uint32_t pages[] = {1, 2, 3, 5, 1000};
    for (size_t i = 0; i < sizeof(pages) / sizeof(pages[0]); i++) {
        char *a = wh_dump(p->w, npays, pages[i], 0, p->now);
        char *b = wh_dump(p->r, npays, pages[i], 0, p->now);
        char label[128];
        snprintf(label, sizeof(label), "%s (ledger pages of %u)", what, pages[i]);
        assert_same_dump(label, a, b);
        free(a);
        free(b);
    }
}

static bool has(const char *body, const char *needle)
{
    return strstr(body, needle) != NULL;
}

/*
 * Builds the split state: LMDB holds session 1 (closed cleanly: its final checkpoint),
 * the frozen layer four operations held at their checkpoint's commit by g, the active
 * layer three more. Payments: 1 (m-a KRW, captured in LMDB, refunded in both layers),
 * 2 (m-a KRW, voided in the frozen layer), 3 (m-b USD), 4 (m-a USD, frozen, captured in
 * the active layer), 5 (m-c EUR, frozen), 6 (m-a EUR, active).
 */
static void split_state(struct pair *p, const char *dir, struct gate *g, unsigned ckpt_ops)
{
    struct shard_store_options wo = {.wal = 1,
                                     .wal_segment_bytes = SEG_BYTES,
                                     .overlay_bytes = 4 << 20,
                                     .checkpoint_ops = 1000000,
                                     .checkpoint_ms = 3600000};
    p->w = wh_open(dir, &wo);
    struct wh_req q[16];
    req_auth(&q[0], "k1", "m-a", 1000, "KRW", "order-1");
    req_auth(&q[1], "k2", "m-a", 2000, "KRW", NULL);
    req_auth(&q[2], "k3", "m-b", 300, "USD", NULL);
    req_follow(&q[3], "k4", 1, "capture", 600);
    both(p, q, 4, NULL);
    shard_store_close(p->w); /* a clean close: everything is in LMDB */
    wo.checkpoint_ops = ckpt_ops;
    wo.ckpt_hook = gate_hook;
    wo.ckpt_hook_arg = g;
    p->w = wh_open(dir, &wo);
    assert_int_equal(stats_of(p->w).replayed_records, 0);

    req_follow(&q[0], "f1", 1, "refund", 100);
    req_auth(&q[1], "f2", "m-a", 50, "USD", NULL);
    req_follow(&q[2], "f3", 2, "void", 0);
    req_auth(&q[3], "f4", "m-c", 10, "EUR", NULL);
    both(p, q, 4, NULL);
    /* Four operations: the layer froze; its checkpoint waits at the commit. */
    gate_wait_held(g);
    assert_true(shard_store_ready(p->w));
    assert_int_equal(stats_of(p->w).overlay_ops, 0);
    assert_true(stats_of(p->w).overlay_bytes > 0);

    req_follow(&q[0], "x1", 1, "refund", 200);
    req_auth(&q[1], "x2", "m-a", 70, "EUR", "order-6");
    req_follow(&q[2], "x3", 4, "capture", 0);
    both(p, q, 3, NULL);
    assert_int_equal(stats_of(p->w).overlay_ops, 3);
    assert_int_equal(stats_of(p->w).checkpoints, 0);
}

static struct shard_store_options lmdb_opts(void)
{
    return (struct shard_store_options){.defer_meta_sync = 1};
}

static void test_reads_across_layers(void **state)
{
    (void)state;
    char *dir = wh_tmpdir(), *rdir = wh_tmpdir();
    struct gate g;
    gate_init(&g, SHARD_CKPT_BEFORE_COMMIT, 1);
    struct shard_store_options ro = lmdb_opts();
    struct pair p = {.r = wh_open(rdir, &ro), .now = WH_NOW0};
    split_state(&p, dir, &g, 4);
    assert_same_state(&p, "LMDB + frozen + active", 8);

    const char *body;
    char path[96];
    /* A payment of LMDB changed in both layers shows the newest version. */
    snprintf(path, sizeof(path), "/v1/payments/%s", pid(1));
    assert_int_equal(wh_get(p.w, path, NULL, p.now, &body), 200);
    assert_true(has(body, "\"refunded_amount\":300") && has(body, "\"captured_amount\":600"));
    snprintf(path, sizeof(path), "/v1/payments/%s", pid(2));
    assert_int_equal(wh_get(p.w, path, NULL, p.now, &body), 200);
    assert_true(has(body, "\"status\":\"voided\""));
    /* m-a's currencies: KRW from LMDB, USD from the frozen layer, EUR from the active
     * one, in currency order, each with its newest balances. */
    assert_int_equal(wh_get(p.w, "/v1/merchants/m-a/balances", NULL, p.now, &body), 200);
    const char *eur = strstr(body, "\"EUR\""), *krw = strstr(body, "\"KRW\""),
               *usd = strstr(body, "\"USD\"");
    assert_true(eur && krw && usd && eur < krw && krw < usd);
    assert_true(has(body, "\"currency\":\"USD\",\"pending\":0,\"available\":50"));
    assert_true(has(body, "\"currency\":\"EUR\",\"pending\":70,\"available\":0"));
    /* m-a's ledger: 1-4 in LMDB, 5-7 frozen, 8-10 active; pages across both seams. */
    assert_int_equal(wh_get(p.w, "/v1/merchants/m-a/ledger", "after=3&limit=2", p.now, &body), 200);
    assert_true(has(body, "\"seq\":4,") && has(body, "\"seq\":5,") && !has(body, "\"seq\":6,"));
    assert_true(has(body, "\"next_after\":5"));
    assert_int_equal(wh_get(p.w, "/v1/merchants/m-a/ledger", "after=6&limit=2", p.now, &body), 200);
    assert_true(has(body, "\"seq\":7,") && has(body, "\"seq\":8,") &&
                has(body, "\"next_after\":8"));
    assert_int_equal(wh_get(p.w, "/v1/merchants/m-a/ledger", "after=4&limit=1000", p.now, &body),
                     200);
    assert_true(has(body, "\"seq\":5,") && has(body, "\"next_after\":null"));
    assert_int_equal(wh_get(p.w, "/v1/merchants/m-a/ledger", "after=9&limit=1", p.now, &body), 200);
    assert_true(has(body, "\"seq\":10,") && has(body, "\"next_after\":null"));

    /* Replays of records in LMDB, the frozen and the active layer; keys reused with
     * another body; a capture refused by a state in the frozen layer (stored), then
     * replayed from the active layer. */
    struct wh_req q[8];
    struct wh_ans a[8];
    req_auth(&q[0], "k1", "m-a", 1000, "KRW", "order-1");
    req_auth(&q[1], "f2", "m-a", 50, "USD", NULL);
    req_auth(&q[2], "x2", "m-a", 70, "EUR", "order-6");
    req_auth(&q[3], "k3", "m-b", 301, "USD", NULL);
    req_follow(&q[4], "f3", 2, "void", 0);
    req_follow(&q[5], "f2", 1, "capture", 5);
    req_follow(&q[6], "z1", 2, "capture", 0);
    req_follow(&q[7], "z1", 2, "capture", 0);
    both(&p, q, 8, a);
    for (int i = 0; i < 3; i++)
        assert_true(a[i].status == 201 && a[i].replayed);
    assert_true(a[3].status == 409 && has(a[3].body, "idempotency_key_reused"));
    assert_true(a[4].status == 200 && a[4].replayed);
    assert_true(a[5].status == 409 && has(a[5].body, "idempotency_key_reused"));
    assert_true(a[6].status == 409 && has(a[6].body, "invalid_state") && !a[6].replayed);
    assert_true(a[7].status == 409 && a[7].replayed);
    for (int i = 0; i < 8; i++)
        wh_ans_free(&a[i]);
    assert_same_state(&p, "after the replays", 8);

    /* The checkpoint completes: LMDB takes the frozen layer, the reads follow. */
    gate_open(&g);
    wait_checkpoints(p.w, 1);
    assert_same_state(&p, "LMDB + active", 8);
    shard_store_close(p.w);
    p.w = wh_open(dir, &(struct shard_store_options){.wal = 1, .overlay_bytes = 1 << 20});
    assert_int_equal(stats_of(p.w).replayed_records, 0); /* the clean close left nothing */
    assert_same_state(&p, "reopened", 8);
    shard_store_close(p.w);
    shard_store_close(p.r);
    check_dir(dir);
    gate_fini(&g);
    wh_rm_rf(dir);
    wh_rm_rf(rdir);
    free(dir);
    free(rdir);
}

/* ---- an unclean end: replay equals the first answers ------------------------------------ */

/* Reads everything from fd until EOF into a malloc'd string. */
static char *read_all(int fd)
{
    size_t cap = 4096, len = 0;
    char *buf = malloc(cap);
    assert_non_null(buf);
    for (;;) {
        if (len + 1024 > cap) {
            cap *= 2;
            buf = realloc(buf, cap);
            assert_non_null(buf);
        }
        ssize_t n = read(fd, buf + len, cap - len - 1);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        len += (size_t)n;
    }
    buf[len] = '\0';
    return buf;
}

/* Waits for a child (bounded: it is killed after timeout_s) and returns its status. */
static int reap(pid_t pid, int timeout_s)
{
    int st = 0;
    for (int i = 0; i < timeout_s * 100; i++) {
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid)
            return st;
        usleep(10000);
    }
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
    fail_msg("child %d did not end within %d s", (int)pid, timeout_s);
    return st;
}

/* A child's settle: everything written durable, or _exit with a message. */
static void child_settle(struct shard_store *s, int fd)
{
    shard_store_kick(s);
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    while (shard_store_durable(s) < shard_store_written(s)) {
        if (shard_store_failed(s) || clock_mono_ns() > deadline)
            wh_child_fail(fd, "the log did not become durable (failed %d)", shard_store_failed(s));
        wh_poll(s, 10);
    }
}

/*
 * The child's run of a plan against the write-ahead log mode: every answer must be the
 * reference's; batches go out like the shard loop sends them (no work while the overlay
 * has no room), and most wait for their log write like clients waiting for answers (the
 * others are pipelined behind the write in flight). Ends without closing.
 */
static void child_run_plan(const struct wh_plan *p, const char *dir,
                           const struct shard_store_options *opt, int fd)
{
    struct shard_store *s = NULL;
    if (shard_store_open(&s, dir, 0, opt) != 0)
        wh_child_fail(fd, "open: %s", shard_store_open_error());
    for (size_t b = 0; b < p->nbatches; b++) {
        for (int i = 0; !shard_store_ready(s) && i < 30000; i++)
            wh_poll(s, 1);
        size_t first = wh_batch_first(p, b), n = p->batch_end[b] - first;
        struct wh_ans a[64];
        if (n > 64 || wh_apply(s, p->reqs + first, n, p->batch_now[b], a) != 0)
            wh_child_fail(fd, "batch %zu failed", b);
        for (size_t i = 0; i < n; i++) {
            const struct wh_ans *want = &p->ref[first + i];
            if (!wh_ans_same(&a[i], want) || a[i].replayed != want->replayed)
                wh_child_fail(fd, "op %zu (%s key %s): %d %s; reference %d %s", first + i,
                              p->reqs[first + i].path, p->reqs[first + i].key, a[i].status,
                              a[i].body, want->status, want->body);
            wh_ans_free(&a[i]);
        }
        shard_store_kick(s);
        if (shard_store_poll(s) != 0)
            wh_child_fail(fd, "poll: %d", shard_store_failed(s));
        if (b % 3 != 2) /* mostly clients that wait for their answers; some pipelining */
            child_settle(s, fd);
    }
    child_settle(s, fd);
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    char msg[256];
    int len = snprintf(msg, sizeof(msg),
                       "OK checkpoints=%" PRIu64 " pos=%" PRIu64 " written=%" PRIu64 "\n",
                       st.checkpoints, st.checkpoint_pos, st.wal_written);
    if (write(fd, msg, (size_t)len) != len)
        _exit(2);
    _exit(0); /* no close: no final checkpoint, the log holds the rest */
}

/* Forks a child that runs plan p on dir and ends without closing; returns its report. */
static char *fork_plan(const struct wh_plan *p, const char *dir,
                       const struct shard_store_options *opt)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        child_run_plan(p, dir, opt, fds[1]);
    }
    close(fds[1]);
    char *report = read_all(fds[0]);
    close(fds[0]);
    int st = reap(pid, 120);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0)
        fail_msg("the child ended with status %d: %s", st, report);
    return report;
}

/* Sends every request of the plan again, in its batches, at `now` (never before the
 * store's): each answer is the reference's first answer, replayed when it was stored. */
static void resend_plan(struct shard_store *s, const struct wh_plan *p, int64_t now)
{
    for (size_t b = 0; b < p->nbatches; b++) {
        size_t first = wh_batch_first(p, b), n = p->batch_end[b] - first;
        struct wh_ans a[64];
        assert_true(n <= 64);
        assert_int_equal(wh_apply(s, p->reqs + first, n, now, a), 0);
        for (size_t i = 0; i < n; i++) {
            const struct wh_req *r = &p->reqs[first + i];
            const struct wh_ans *want = &p->ref[first + i];
            bool replayed = wh_ans_stored(r, want);
            if (!wh_ans_same(&a[i], want) || a[i].replayed != replayed)
                fail_msg("op %zu (%s key %s) sent again: %d%s %s; first answer %d%s %s", first + i,
                         r->path, r->key, a[i].status, a[i].replayed ? " replayed" : "", a[i].body,
                         want->status, want->replayed ? " replayed" : "", want->body);
            wh_ans_free(&a[i]);
        }
        shard_store_kick(s);
        assert_int_equal(shard_store_poll(s), 0);
    }
    assert_int_equal(wh_settle(s), 0);
}

static uint64_t report_u64(const char *report, const char *name)
{
    const char *at = strstr(report, name);
    if (at == NULL)
        fail_msg("no %s in the child's report: %s", name, report);
    return strtoull(at + strlen(name), NULL, 10);
}

static void test_replay_after_unclean_exit(void **state)
{
    (void)state;
    char *dir = wh_tmpdir(), *rdir = wh_tmpdir();
    struct shard_store_options ro = lmdb_opts();
    struct shard_store *ref = wh_open(rdir, &ro);
    struct wh_plan p;
    wh_plan_make(&p, ref, 20251125u, 400, 8, 1500, 25, false);
    int64_t end = p.batch_now[p.nbatches - 1];
    char *want = wh_dump(ref, p.nops, 7, 0, end);

    struct shard_store_options wo = {.wal = 1,
                                     .wal_segment_bytes = SEG_BYTES,
                                     .overlay_bytes = 2 << 20,
                                     .checkpoint_ops = 16,
                                     .checkpoint_ms = 3600000};
    char *report = fork_plan(&p, dir, &wo);
    uint64_t ckpts = report_u64(report, "checkpoints="), pos = report_u64(report, "pos="),
             written = report_u64(report, "written=");
    print_message("child: %s", report);
    assert_true(ckpts >= 2);

    struct shard_store *s = wh_open(dir, &wo);
    struct shard_store_stats st = stats_of(s);
    /* Records after the last checkpoint (nearly always: it takes 16 operations to start
     * one) are replayed. */
    assert_true(pos == written || (st.replayed_records > 0 && st.replayed_ops > 0));
    assert_int_equal(st.wal_written, written);
    char *got = wh_dump(s, p.nops, 7, 0, end);
    assert_same_dump("recovered", got, want);
    free(got);
    resend_plan(s, &p, end);
    got = wh_dump(s, p.nops, 7, 0, end);
    assert_same_dump("after sending everything again", got, want);
    free(got);
    shard_store_close(s);
    check_dir(dir);
    s = wh_open(dir, &wo);
    assert_int_equal(stats_of(s).replayed_records, 0);
    got = wh_dump(s, p.nops, 1000, 0, end);
    free(want);
    want = wh_dump(ref, p.nops, 1000, 0, end);
    assert_same_dump("reopened after a clean close", got, want);
    free(got);
    shard_store_close(s);
    shard_store_close(ref);
    free(want);
    free(report);
    wh_plan_free(&p);
    wh_rm_rf(dir);
    wh_rm_rf(rdir);
    free(dir);
    free(rdir);
}

/* ---- segment recycling --------------------------------------------------------------- */

/* Segment files in DIR/shard-000/wal. */
static unsigned wal_files(const char *dir)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/shard-000/wal", dir);
    DIR *d = opendir(path);
    assert_non_null(d);
    unsigned n = 0;
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        n += strlen(e->d_name) == 20 && strcmp(e->d_name + 16, ".log") == 0;
    closedir(d);
    return n;
}

static void test_segments_are_recycled(void **state)
{
    (void)state;
    char *dir = wh_tmpdir();
    struct shard_store_options wo = {.wal = 1,
                                     .wal_segment_bytes = SEG_BYTES,
                                     .overlay_bytes = 1 << 20,
                                     .checkpoint_ops = 16,
                                     .checkpoint_ms = 3600000};
    struct shard_store *s = wh_open(dir, &wo);
    struct wh_gen g;
    wh_gen_init(&g, 77, 30000, 0);
    int64_t now = WH_NOW0;
    unsigned files_max = 0;
    uint64_t authorized = 0;
    /* Until the log went through 30 segments (about 160 KiB of records each). */
    for (int b = 0; stats_of(s).wal_written < 30 * SEG_BYTES; b++) {
        assert_true(b < 5000);
        struct wh_req q[8];
        struct wh_ans a[8];
        size_t n = 1 + (size_t)b % 8;
        for (size_t i = 0; i < n; i++)
            wh_gen_next(&g, &q[i]);
        assert_int_equal(wh_apply(s, q, n, now += 5, a), 0);
        assert_int_equal(wh_settle(s), 0); /* like clients waiting for their answers */
        for (size_t i = 0; i < n; i++) {
            assert_int_equal(a[i].rc, 0);
            wh_gen_learn(&g, &q[i], &a[i]);
            wh_ans_free(&a[i]);
            wh_req_free(&q[i]);
        }
        unsigned f = wal_files(dir);
        files_max = f > files_max ? f : files_max;
    }
    struct shard_store_stats st = stats_of(s);
    print_message("log end %" PRIu64 " KiB, checkpoints %" PRIu64 ", segments made %" PRIu64
                  ", recycled %" PRIu64 ", at most %u files\n",
                  st.wal_written >> 10, st.checkpoints, st.wal_segments_made,
                  st.wal_segments_recycled, files_max);
    /* The log went through 30 segments; a handful of files ever existed. */
    assert_true(st.checkpoints >= 20);
    assert_true(st.wal_segments_recycled >= 20);
    assert_true(files_max <= 8);
    assert_true(st.wal_segments_made <= 8);
    authorized = g.npays;
    shard_store_close(s);
    assert_true(wal_files(dir) <= 8);
    check_dir(dir);
    s = wh_open(dir, &wo);
    assert_int_equal(stats_of(s).replayed_records, 0);
    const char *body;
    char path[96];
    snprintf(path, sizeof(path), "/v1/payments/%s", pid((int)authorized));
    assert_int_equal(wh_get(s, path, NULL, now, &body), 200);
    snprintf(path, sizeof(path), "/v1/payments/%s", pid((int)authorized + 1));
    assert_int_equal(wh_get(s, path, NULL, now, &body), 404);
    shard_store_close(s);
    wh_gen_free(&g);
    wh_rm_rf(dir);
    free(dir);
}

/* ---- the overlay's bound ----------------------------------------------------------------- */

/* An authorization of m-b with a body of about pad bytes (its key: "ob-<n>"). */
static void req_big(struct wh_req *r, int n, size_t pad)
{
    char key[32];
    snprintf(key, sizeof(key), "ob-%d", n);
    char *body = malloc(pad + 128);
    assert_non_null(body);
    int len =
        snprintf(body, 128, "{\"merchant_id\":\"m-b\",\"amount\":%d,\"currency\":\"KRW\"", 100 + n);
    memset(body + len, ' ', pad);
    memcpy(body + len + pad, "}", 2);
    wh_req_set(r, "POST", "/v1/payments/authorize", body, key);
    free(body);
}

struct acked {
    int key;
    char id[ID_BYTES + 1];
};

/* Every answered authorization is there, with its amount. */
static void assert_acked_present(struct shard_store *s, const struct acked *ok, size_t n,
                                 int64_t now)
{
    for (size_t i = 0; i < n; i++) {
        char path[96], amount[48];
        const char *body;
        snprintf(path, sizeof(path), "/v1/payments/%s", ok[i].id);
        assert_int_equal(wh_get(s, path, NULL, now, &body), 200);
        snprintf(amount, sizeof(amount), "\"amount\":%d,", 100 + ok[i].key);
        assert_true(has(body, amount));
    }
}

static void note_answer(struct acked *ok, size_t *nok, int key, const struct wh_ans *a)
{
    assert_int_equal(a->status, 201);
    assert_false(a->replayed);
    ok[*nok].key = key;
    memcpy(ok[*nok].id, a->body + 7, ID_BYTES);
    ok[*nok].id[ID_BYTES] = '\0';
    (*nok)++;
}

static void test_overlay_bound_backpressure(void **state)
{
    (void)state;
    char *dir = wh_tmpdir();
    struct gate g;
    gate_init(&g, SHARD_CKPT_BEFORE_COMMIT, 1);
    /* 256 KiB layers: an operation may take 16 KiB + its request (its bound), so a
     * layer takes a few dozen of these 4 KiB requests before it must be checkpointed,
     * and shard_store_ready (room for an eighth of a layer) promises room for one. */
    struct shard_store_options wo = {.wal = 1,
                                     .wal_segment_bytes = SEG_BYTES,
                                     .overlay_bytes = 256 << 10,
                                     .checkpoint_ops = 1000000,
                                     .checkpoint_ms = 3600000,
                                     .ckpt_hook = gate_hook,
                                     .ckpt_hook_arg = &g};
    struct shard_store *s = wh_open(dir, &wo);
    struct acked *ok = calloc(2000, sizeof(*ok));
    assert_non_null(ok);
    size_t nok = 0;
    int key = 0;
    int64_t now = WH_NOW0;
    struct wh_req q[16];
    struct wh_ans a[16];
    /* The first checkpoint is held at its commit: both layers fill up. */
    while (shard_store_ready(s)) {
        assert_true(key < 200);
        req_big(&q[0], key, 4000);
        assert_int_equal(wh_apply(s, q, 1, now += 5, a), 0);
        assert_int_equal(wh_settle(s), 0);
        if (a[0].rc == 0)
            note_answer(ok, &nok, key, &a[0]);
        else
            assert_int_equal(a[0].rc, -EBUSY);
        wh_ans_free(&a[0]);
        wh_req_free(&q[0]);
        key++;
    }
    gate_wait_held(&g);
    assert_true(nok >= 4);
    assert_false(shard_store_ready(s));
    /* Work offered anyway: what still fits is taken (ready is conservative: room for an
     * eighth of a layer), the rest is refused with 503 -EBUSY and nothing of it is kept. */
    int refused0 = -1, offered0 = key;
    for (int i = 0; i < 8; i++)
        req_big(&q[i], key++, 4000);
    assert_int_equal(wh_apply(s, q, 8, now += 5, a), 0);
    for (int i = 0; i < 8; i++) {
        if (a[i].rc == 0 && refused0 < 0) {
            note_answer(ok, &nok, offered0 + i, &a[i]);
        } else {
            if (refused0 < 0)
                refused0 = offered0 + i;
            assert_int_equal(a[i].rc, -EBUSY);
            assert_int_equal(a[i].status, 503);
            assert_true(has(a[i].body, "\"overloaded\""));
        }
        wh_ans_free(&a[i]);
        wh_req_free(&q[i]);
    }
    assert_true(refused0 >= 0 && refused0 <= offered0 + 5);
    assert_true(stats_of(s).overlay_full >= 3);
    assert_int_equal(wh_settle(s), 0);
    assert_acked_present(s, ok, nok, now); /* reads go on meanwhile */
    gate_open(&g);
    wait_checkpoints(s, 1);
    assert_true(shard_store_ready(s));
    /* The refused requests were never stored: sent again, they are new. */
    int nref = offered0 + 8 - refused0;
    for (int i = 0; i < nref; i++)
        req_big(&q[i], refused0 + i, 4000);
    assert_int_equal(wh_apply(s, q, (size_t)nref, now += 5, a), 0);
    assert_int_equal(wh_settle(s), 0);
    for (int i = 0; i < nref; i++) {
        note_answer(ok, &nok, refused0 + i, &a[i]);
        wh_ans_free(&a[i]);
        wh_req_free(&q[i]);
    }

    /* Then batches larger than a layer, offered like the shard loop does (only while
     * ready): some operations are refused, the others are kept. */
    int busy = 0;
    for (int b = 0; b < 60; b++) {
        for (int i = 0; !shard_store_ready(s) && i < 30000; i++)
            assert_int_equal(wh_poll(s, 1), 0);
        size_t n = 1 + (size_t)b % 12;
        for (size_t i = 0; i < n; i++)
            req_big(&q[i], key + (int)i, 1000 + 900 * (size_t)(b % 9));
        assert_int_equal(wh_apply(s, q, n, now += 5, a), 0);
        shard_store_kick(s);
        assert_int_equal(shard_store_poll(s), 0);
        for (size_t i = 0; i < n; i++) {
            if (a[i].rc == 0)
                note_answer(ok, &nok, key + (int)i, &a[i]);
            else {
                assert_int_equal(a[i].rc, -EBUSY);
                busy++;
            }
            wh_ans_free(&a[i]);
            wh_req_free(&q[i]);
        }
        key += (int)n;
    }
    assert_int_equal(wh_settle(s), 0);
    struct shard_store_stats st = stats_of(s);
    print_message("%zu answered, %d refused for room; checkpoints %" PRIu64
                  ", overlay full %" PRIu64 "\n",
                  nok, busy, st.checkpoints, st.overlay_full);
    assert_true(st.checkpoints >= 5);
    assert_acked_present(s, ok, nok, now);
    shard_store_close(s);
    check_dir(dir);
    wo.ckpt_hook = NULL;
    s = wh_open(dir, &wo);
    assert_acked_present(s, ok, nok, now);
    shard_store_close(s);
    free(ok);
    gate_fini(&g);
    wh_rm_rf(dir);
    free(dir);
}

/* ---- the outbox across the layers ------------------------------------------------------ */

struct scan {
    uint64_t seqs[256];
    size_t n;
    int stop_after;
};

static int scan_fn(void *arg, const struct shard_event *ev)
{
    struct scan *sc = arg;
    assert_true(sc->n < 256);
    char want[64];
    snprintf(want, sizeof(want), "\"event_id\":\"evt_00_%016" PRIx64 "\"", ev->seq);
    assert_non_null(memmem(ev->value, ev->value_len, want, strlen(want)));
    sc->seqs[sc->n++] = ev->seq;
    return sc->stop_after && (int)sc->n == sc->stop_after ? 77 : 0;
}

static struct scan scan(struct shard_store *s, uint64_t after, size_t max)
{
    struct scan sc = {0};
    assert_int_equal(shard_store_outbox_scan(s, after, max, scan_fn, &sc), 0);
    return sc;
}

/* The scan after `after` of at most max gives exactly after+1 .. min(after+max, last). */
static void assert_window(struct shard_store *s, uint64_t after, size_t max, uint64_t last)
{
    struct scan sc = scan(s, after, max);
    uint64_t want = last > after ? last - after : 0;
    if (want > max)
        want = max;
    if (sc.n != want)
        fail_msg("scan after %" PRIu64 " max %zu: %zu events, want %" PRIu64, after, max, sc.n,
                 want);
    for (size_t i = 0; i < sc.n; i++)
        assert_int_equal(sc.seqs[i], after + 1 + i);
}

static void test_outbox_scan_across_layers(void **state)
{
    (void)state;
    char *dir = wh_tmpdir(), *rdir = wh_tmpdir();
    struct gate g;
    gate_init(&g, SHARD_CKPT_BEFORE_COMMIT, 1);
    struct shard_store_options ro = lmdb_opts();
    struct pair p = {.r = wh_open(rdir, &ro), .now = WH_NOW0};
    split_state(&p, dir, &g, 4);
    /* Events 1-4 in LMDB, 5-8 frozen, 9-11 active (x3 captures: one event). */
    uint64_t last = stats_of(p.w).event_seq;
    assert_int_equal(last, 11);
    assert_int_equal(stats_of(p.r).event_seq, last);
    char *a = wh_dump(p.w, 0, 1000, 0, p.now), *b = wh_dump(p.r, 0, 1000, 0, p.now);
    assert_same_dump("events", a, b); /* byte for byte the LMDB mode's events */
    free(a);
    free(b);
    for (uint64_t after = 0; after <= last + 1; after++)
        for (size_t max = 1; max <= 4; max++)
            assert_window(p.w, after, max, last);
    assert_window(p.w, 0, SIZE_MAX, last);
    struct scan sc = {.stop_after = 6};
    assert_int_equal(shard_store_outbox_scan(p.w, 2, 100, scan_fn, &sc), 77);
    assert_int_equal(sc.n, 6);

    /* The mark: stored and trimmed by the next checkpoint (the held one was frozen
     * before it), so until then everything is still there. */
    shard_store_set_replicated(p.w, 6);
    assert_window(p.w, 0, 100, last);
    gate_open(&g);
    wait_checkpoints(p.w, 1);
    assert_window(p.w, 0, 100, last);
    struct wh_req q[4];
    req_auth(&q[0], "y1", "m-c", 1, "KRW", NULL);
    req_auth(&q[1], "y2", "m-c", 2, "KRW", NULL);
    req_auth(&q[2], "y3", "m-c", 3, "KRW", NULL);
    req_follow(&q[3], "y4", 5, "void", 0);
    both(&p, q, 4, NULL); /* the fourth operation of the layer: a checkpoint */
    wait_checkpoints(p.w, 2);
    last += 4;
    assert_int_equal(stats_of(p.w).event_seq, last);
    assert_int_equal(stats_of(p.w).replicated_seq, 6);
    sc = scan(p.w, 0, 100);
    assert_true(sc.n == last - 6 && sc.seqs[0] == 7); /* 1-6 trimmed */
    assert_window(p.w, 6, 100, last);
    shard_store_close(p.w);
    p.w = wh_open(dir, &(struct shard_store_options){.wal = 1, .overlay_bytes = 1 << 20});
    assert_int_equal(stats_of(p.w).replicated_seq, 6);
    assert_int_equal(stats_of(p.w).event_seq, last);
    assert_window(p.w, 6, 100, last);
    shard_store_close(p.w);
    shard_store_close(p.r);
    check_dir(dir);
    gate_fini(&g);
    wh_rm_rf(dir);
    wh_rm_rf(rdir);
    free(dir);
    free(rdir);
}

/* ---- the idempotency TTL ------------------------------------------------------------------ */

#define TTL_MS 1000

/* Sends authorizations of the given keys (fixed bodies per key) at now as one batch and
 * checks each answer: replayed (of want_id) or new. */
struct ttl_case {
    const char *key;
    bool replay;
    const char *id; /* the replayed answer's id, or the new payment's */
};

static void ttl_batch(struct shard_store *s, int64_t now, const struct ttl_case *c, size_t n)
{
    struct wh_req q[8];
    struct wh_ans a[8];
    for (size_t i = 0; i < n; i++) {
        int amount = 100 + c[i].key[0];
        req_auth(&q[i], c[i].key, "m-a", amount, "KRW", NULL);
    }
    assert_int_equal(wh_apply(s, q, n, now, a), 0);
    assert_int_equal(wh_settle(s), 0);
    for (size_t i = 0; i < n; i++) {
        if (a[i].status != 201 || a[i].replayed != c[i].replay ||
            memcmp(a[i].body + 7, c[i].id, ID_BYTES) != 0)
            fail_msg("key %s at now %+" PRId64 ": %d%s %s; want %s of %s", c[i].key, now - WH_NOW0,
                     a[i].status, a[i].replayed ? " replayed" : "", a[i].body,
                     c[i].replay ? "a replay" : "a new payment", c[i].id);
        wh_ans_free(&a[i]);
        wh_req_free(&q[i]);
    }
}

static void test_idem_ttl_in_every_layer(void **state)
{
    (void)state;
    char *dir = wh_tmpdir();
    struct gate g;
    gate_init(&g, SHARD_CKPT_BEFORE_COMMIT, 1);
    struct shard_store_options wo = {.wal = 1,
                                     .wal_segment_bytes = SEG_BYTES,
                                     .overlay_bytes = 1 << 20,
                                     .idem_ttl_ms = TTL_MS,
                                     .checkpoint_ms = 3600000,
                                     .checkpoint_ops = 1000000};
    const int64_t t0 = WH_NOW0;
    /* "a" (payment 1) in LMDB; "b", "c" (2, 3) in the frozen layer; "d" (4) active. */
    struct shard_store *s = wh_open(dir, &wo);
    ttl_batch(s, t0, (struct ttl_case[]){{"a", false, pid(1)}}, 1);
    shard_store_close(s);
    wo.checkpoint_ops = 2;
    wo.ckpt_hook = gate_hook;
    wo.ckpt_hook_arg = &g;
    s = wh_open(dir, &wo);
    ttl_batch(s, t0 + 100, (struct ttl_case[]){{"b", false, pid(2)}}, 1);
    ttl_batch(s, t0 + 200, (struct ttl_case[]){{"c", false, pid(3)}}, 1);
    gate_wait_held(&g);
    ttl_batch(s, t0 + 300, (struct ttl_case[]){{"d", false, pid(4)}}, 1);
    /* At exactly created + TTL a record still counts; one ms later it is absent,
     * wherever it lives. */
    ttl_batch(s, t0 + TTL_MS,
              (struct ttl_case[]){{"a", true, pid(1)}, {"b", true, pid(2)}, {"d", true, pid(4)}},
              3);
    ttl_batch(s, t0 + TTL_MS + 101,
              (struct ttl_case[]){{"a", false, pid(5)}, /* LMDB's record expired */
                                  {"b", false, pid(6)}, /* the frozen layer's */
                                  {"c", true, pid(3)},
                                  {"d", true, pid(4)},
                                  {"a", true, pid(5)}}, /* the new record, same batch */
              5);
    ttl_batch(s, t0 + TTL_MS + 301,
              (struct ttl_case[]){{"c", false, pid(7)}, {"d", false, pid(8)}, {"b", true, pid(6)}},
              3);
    /* The checkpoints (with their sweeps) change no answer. */
    gate_open(&g);
    wait_checkpoints(s, 1);
    ttl_batch(s, t0 + TTL_MS + 400, (struct ttl_case[]){{"e", false, pid(9)}, {"a", true, pid(5)}},
              2);
    wait_checkpoints(s, 2);
    ttl_batch(s, t0 + TTL_MS + 500, (struct ttl_case[]){{"c", true, pid(7)}, {"d", true, pid(8)}},
              2);
    shard_store_close(s);
    wo.ckpt_hook = NULL;
    s = wh_open(dir, &wo);
    /* After a reopen (LMDB holds everything, partly swept): "a" and "b" were written
     * at +1101, "c" and "d" at +1301, "e" at +1400. */
    ttl_batch(s, t0 + 2 * TTL_MS + 101,
              (struct ttl_case[]){{"a", true, pid(5)}, {"b", true, pid(6)}, {"c", true, pid(7)}},
              3);
    ttl_batch(
        s, t0 + 2 * TTL_MS + 302,
        (struct ttl_case[]){{"c", false, pid(10)}, {"d", false, pid(11)}, {"e", true, pid(9)}}, 3);
    shard_store_close(s);
    check_dir(dir);
    gate_fini(&g);
    wh_rm_rf(dir);
    free(dir);
}

/* A plan whose keys expire while it runs (TTL of 150 ms, batches 1-20 ms apart) on a
 * store with frequent checkpoints and sweeps, ended without a close: the recovered state
 * equals that of the same plan on a store that never crashed (same mode, same TTL). */
static void test_idem_ttl_recovery(void **state)
{
    (void)state;
    char *dir = wh_tmpdir(), *rdir = wh_tmpdir();
    struct shard_store_options ro = {.wal = 1,
                                     .idem_ttl_ms = 150,
                                     .wal_segment_bytes = SEG_BYTES,
                                     .overlay_bytes = 8 << 20,
                                     .checkpoint_ms = 3600000,
                                     .checkpoint_ops = 1000000};
    struct shard_store *ref = wh_open(rdir, &ro);
    struct wh_plan p;
    wh_plan_make(&p, ref, 4242u, 300, 6, 200, 20, false);
    int64_t end = p.batch_now[p.nbatches - 1];
    char *want = wh_dump(ref, p.nops, 1000, 0, end);
    shard_store_close(ref);

    struct shard_store_options wo = {.wal = 1,
                                     .idem_ttl_ms = 150,
                                     .wal_segment_bytes = SEG_BYTES,
                                     .overlay_bytes = 1 << 20,
                                     .checkpoint_ops = 10,
                                     .checkpoint_ms = 3600000};
    char *report = fork_plan(&p, dir, &wo);
    assert_true(report_u64(report, "checkpoints=") >= 2);
    struct shard_store *s = wh_open(dir, &wo);
    char *got = wh_dump(s, p.nops, 1000, 0, end);
    assert_same_dump("recovered with expiries", got, want);
    free(got);
    shard_store_close(s);
    check_dir(dir);
    free(report);
    free(want);
    wh_plan_free(&p);
    wh_rm_rf(dir);
    wh_rm_rf(rdir);
    free(dir);
    free(rdir);
}

/* ---- a failing log ----------------------------------------------------------------------- */

/*
 * The log's sixth write fails (EIO, as if its fdatasync had): the store fails for good,
 * the durable position stops below that batch (its answers may never leave), every later
 * batch and poll answers the error without touching anything, a close does not wait for
 * a checkpoint that cannot come; the reopened store has every batch that was durable.
 */
static void test_failing_log_write(void **state)
{
    (void)state;
    char *dir = wh_tmpdir();
    struct shard_store_options wo = {.wal = 1,
                                     .wal_segment_bytes = SEG_BYTES,
                                     .overlay_bytes = 1 << 20,
                                     .checkpoint_ops = 3,
                                     .checkpoint_ms = 3600000,
                                     .wal_fault_after_syncs = 5,
                                     .wal_fault_errno = EIO};
    struct shard_store *s = wh_open(dir, &wo);
    struct acked ok[16];
    size_t nok = 0;
    int64_t now = WH_NOW0;
    int failed_at = -1;
    for (int b = 0; b < 12 && failed_at < 0; b++) {
        struct wh_req q;
        struct wh_ans a;
        req_big(&q, b, 10);
        assert_int_equal(wh_apply(s, &q, 1, now += 5, &a), 0);
        uint64_t pos = shard_store_written(s);
        int rc = wh_settle(s);
        if (rc == 0) {
            assert_true(shard_store_durable(s) >= pos);
            note_answer(ok, &nok, b, &a);
        } else {
            assert_int_equal(rc, -EIO);
            assert_true(shard_store_durable(s) < pos); /* this answer may never leave */
            failed_at = b;
        }
        wh_ans_free(&a);
        wh_req_free(&q);
    }
    assert_int_equal(failed_at, 5);
    assert_int_equal(shard_store_failed(s), -EIO);
    assert_int_equal(shard_store_poll(s), -EIO);
    assert_int_equal(shard_store_sync(s), -EIO);
    struct wh_req q[2];
    struct wh_ans a[2];
    req_big(&q[0], 100, 10);
    req_big(&q[1], 101, 10);
    uint64_t written = shard_store_written(s);
    assert_int_equal(wh_apply(s, q, 2, now += 5, a), -EIO);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(a[i].rc, -EIO);
        assert_int_equal(a[i].status, 503);
        wh_ans_free(&a[i]);
        wh_req_free(&q[i]);
    }
    assert_int_equal(shard_store_written(s), written);
    shard_store_close(s);
    wo.wal_fault_errno = 0;
    s = wh_open(dir, &wo);
    assert_acked_present(s, ok, nok, now);
    /* The failed batch's write may have reached the file before its sync failed: it is
     * there or not; either way the store goes on from it. */
    req_big(&q[0], 102, 10);
    assert_int_equal(wh_apply(s, q, 1, now += 5, a), 0);
    assert_int_equal(wh_settle(s), 0);
    assert_int_equal(a[0].status, 201);
    wh_ans_free(&a[0]);
    wh_req_free(&q[0]);
    shard_store_close(s);
    check_dir(dir);
    wh_rm_rf(dir);
    free(dir);
}

/* ---- the shard loop over the log (store/shard.c, shard_run_async) ------------------------- */

#define LOOP_JOBS     400
#define LOOP_TURN_MAX 6 /* jobs a turn takes: requests trickle in, as from clients */

/* A transport that hands out queued jobs (LOOP_TURN_MAX a turn) and records, for each
 * reply, the store's durable position at that moment (the reply runs on the shard
 * thread). */
struct loop_fake {
    pthread_mutex_t mu;
    struct shard *sh;
    struct shard_job *inbox[LOOP_JOBS];
    size_t in_n;
    struct shard_job *done[LOOP_JOBS];
    uint64_t durable_at[LOOP_JOBS];
    size_t done_n;
};

static size_t loop_recv(void *ctx, struct shard_job **jobs, size_t max)
{
    struct loop_fake *f = ctx;
    pthread_mutex_lock(&f->mu);
    size_t n = f->in_n < max ? f->in_n : max;
    if (n > LOOP_TURN_MAX)
        n = LOOP_TURN_MAX;
    memcpy(jobs, f->inbox, n * sizeof(*jobs));
    memmove(f->inbox, f->inbox + n, (f->in_n - n) * sizeof(*jobs));
    f->in_n -= n;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static int loop_reply(void *ctx, struct shard_job *job)
{
    struct loop_fake *f = ctx;
    pthread_mutex_lock(&f->mu);
    f->durable_at[f->done_n] = shard_store_durable(f->sh->store);
    f->done[f->done_n++] = job;
    pthread_mutex_unlock(&f->mu);
    return 0;
}

static void loop_flush(void *ctx)
{
    (void)ctx;
}

/* Waits like a reactor-side transport would: on the log's event fd, bounded. */
static void loop_wait(void *ctx, int timeout_ms)
{
    struct loop_fake *f = ctx;
    struct pollfd p = {.fd = shard_store_event_fd(f->sh->store), .events = POLLIN};
    poll(&p, 1, timeout_ms < 2 ? timeout_ms : 2);
}

static const struct shard_transport loop_transport = {loop_recv, loop_reply, loop_flush, loop_wait};

static void *loop_run(void *arg)
{
    shard_run(arg);
    return NULL;
}

static struct shard_job *loop_job(const struct wh_req *r)
{
    struct shard_job *job = calloc(1, sizeof(*job) + ENGINE_READ_ANSWER_MAX_BYTES);
    assert_non_null(job);
    assert_int_equal(wh_decode(r, &job->op), 0);
    job->answer.body = (char *)(job + 1);
    job->answer.cap = ENGINE_READ_ANSWER_MAX_BYTES;
    return job;
}

/* Queues jobs and waits (bounded) until the shard answered all of them. */
static void loop_feed(struct loop_fake *f, struct shard_job **jobs, size_t n)
{
    pthread_mutex_lock(&f->mu);
    size_t want = f->done_n + n;
    assert_true(want <= LOOP_JOBS);
    memcpy(f->inbox + f->in_n, jobs, n * sizeof(*jobs));
    f->in_n += n;
    pthread_mutex_unlock(&f->mu);
    for (int i = 0; i < 30000; i++) {
        pthread_mutex_lock(&f->mu);
        size_t d = f->done_n;
        pthread_mutex_unlock(&f->mu);
        if (d >= want)
            return;
        usleep(1000);
    }
    fail_msg("the shard did not answer %zu jobs within 30 s", n);
}

/*
 * The shard loop of the write-ahead log mode: answers leave in arrival order and only
 * once the log's durable position covers them; with a small overlay and large requests
 * it takes no work while shard_store_ready is false, an operation beyond room is
 * answered 503 (-EBUSY) and nothing else is; everything answered 2xx is there after a
 * stop and a reopen.
 */
static void test_async_shard_loop(void **state)
{
    (void)state;
    char *dir = wh_tmpdir();
    struct shard_store_options wo = {.wal = 1,
                                     .wal_segment_bytes = SEG_BYTES,
                                     .overlay_bytes = 256 << 10,
                                     .checkpoint_ops = 16,
                                     .checkpoint_ms = 3600000};
    static struct loop_fake f;
    memset(&f, 0, sizeof(f));
    pthread_mutex_init(&f.mu, NULL);
    struct shard sh = {
        .store = wh_open(dir, &wo), .transport = &loop_transport, .transport_ctx = &f};
    f.sh = &sh;
    pthread_t tid;
    assert_int_equal(pthread_create(&tid, NULL, loop_run, &sh), 0);
    assert_true(shard_store_async(sh.store));

    /* Small authorizations with reads between them, then large ones (6 KiB bodies: an
     * eighth of a layer is two of them). */
    struct shard_job *jobs[LOOP_JOBS];
    /* A decoded operation points into its request (the body): each request lives until
     * its job was answered. */
    static struct wh_req reqs[LOOP_JOBS];
    size_t n = 0;
    for (int wave = 0; wave < 2; wave++) {
        size_t first = n;
        for (int i = 0; i < 150; i++) {
            char key[32];
            struct wh_req *r = &reqs[n];
            snprintf(key, sizeof(key), "loop-%d-%d", wave, i);
            if (i % 10 == 9) {
                wh_req_set(r, "GET", "/v1/merchants/m-b/balances", NULL, NULL);
            } else {
                req_big(r, i, wave ? 6000 : 0);
                snprintf(r->key, sizeof(r->key), "%s", key);
            }
            jobs[n++] = loop_job(r);
        }
        loop_feed(&f, jobs + first, n - first);
    }
    int64_t sum = 0;
    int ok = 0, busy = 0;
    for (size_t i = 0; i < n; i++) {
        struct shard_job *j = f.done[i];
        assert_ptr_equal(j, jobs[i]); /* in arrival order */
        if (j->rc == 0) {
            if (j->pos > f.durable_at[i])
                fail_msg("job %zu left at durable %" PRIu64 " before its position %" PRIu64, i,
                         f.durable_at[i], j->pos);
        }
        if (j->op.kind == OP_GET_PAYMENT || j->op.kind == OP_BALANCES) {
            assert_int_equal(j->answer.status, 200);
        } else if (j->rc == 0) {
            assert_int_equal(j->answer.status, 201);
            sum += j->op.amount;
            ok++;
        } else {
            assert_int_equal(j->rc, -EBUSY);
            assert_int_equal(j->answer.status, 503);
            busy++;
        }
    }
    shard_stop(&sh);
    pthread_join(tid, NULL);
    struct shard_store_stats st = stats_of(sh.store);
    print_message("%d authorized, %d refused for room; %" PRIu64 " checkpoints\n", ok, busy,
                  st.checkpoints);
    assert_true(ok >= 150 && st.checkpoints >= 3);
    shard_store_close(sh.store);
    struct shard_store *s = wh_open(dir, &wo);
    const char *body;
    char want[64];
    snprintf(want, sizeof(want), "\"pending\":%" PRId64 ",", sum);
    assert_int_equal(wh_get(s, "/v1/merchants/m-b/balances", NULL, WH_NOW0, &body), 200);
    if (!has(body, want))
        fail_msg("balances %s, want pending %" PRId64, body, sum);
    shard_store_close(s);
    check_dir(dir);
    for (size_t i = 0; i < n; i++) {
        free(jobs[i]);
        wh_req_free(&reqs[i]);
    }
    pthread_mutex_destroy(&f.mu);
    wh_rm_rf(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_reads_across_layers),
        cmocka_unit_test(test_replay_after_unclean_exit),
        cmocka_unit_test(test_segments_are_recycled),
        cmocka_unit_test(test_overlay_bound_backpressure),
        cmocka_unit_test(test_outbox_scan_across_layers),
        cmocka_unit_test(test_idem_ttl_in_every_layer),
        cmocka_unit_test(test_idem_ttl_recovery),
        cmocka_unit_test(test_failing_log_write),
        cmocka_unit_test(test_async_shard_loop),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
