/*
 * Deterministic recovery of the write-ahead log mode at every step of a checkpoint
 * (store/shard_wal.c, shard_store.h `ckpt_hook`).
 *
 * A forked child runs a seeded plan of operations (authorize, capture, void, refund,
 * idempotent replays, reused keys, refusals; wal_harness.h) on a store with small
 * segments and frequent checkpoints, the way the shard loop does (most batches wait for
 * their log write, some are pipelined behind it), and reports through a pipe each batch
 * whose log position shard_store_durable() covers: those are acknowledged. The store's
 * checkpoint hook ends the process (_exit, on the checkpointer thread) at the n-th time
 * a step comes:
 *   SHARD_CKPT_BEFORE_COMMIT  the layer is in LMDB's transaction, not committed;
 *   SHARD_CKPT_COMMITTED      committed durably, the log not recycled yet;
 *   SHARD_CKPT_RECYCLED       a segment below the checkpoint was renamed, its directory
 *                             not yet synced;
 *   SHARD_CKPT_DONE           the checkpoint is complete, not yet taken back.
 * Then the parent checks what a restart finds:
 *   - the data directory passes store_check (the audit of `ringpay check`) before the
 *     recovery (LMDB alone: the last checkpoint is a consistent state) and after it;
 *   - the recovered state equals the state of the reference (an LMDB-mode store that
 *     applied the same plan one operation at a time) after some prefix of i operations
 *     with acked <= i <= planned: no acknowledged change is lost, and nothing appears
 *     that is not a prefix of the log;
 *   - every request of the plan sent again with its key gets the reference's first
 *     answer byte for byte (replayed when it was stored and within the prefix), and the
 *     state then equals the reference's final state.
 * Two configurations: checkpoints started by their operation count (every 8) and by the
 * layer's room (small layers, no count). One case crashes again inside the recovery's
 * own checkpoint (a replay larger than a layer checkpoints in between).
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/clock.h"
#include "store/check.h"
#include "store/shard_store.h"
#include "wal_harness.h"

#define SEG_BYTES ((size_t)256 << 10)

struct config {
    const char *name;
    struct shard_store_options opt;
    unsigned seed;
    size_t nops, batch_max, pad_max;
};

static const struct config configs[] = {
    {"ops-driven",
     {.wal = 1,
      .wal_segment_bytes = SEG_BYTES,
      .overlay_bytes = 2 << 20,
      .checkpoint_ops = 8,
      .checkpoint_ms = 3600000},
     1001,
     400,
     4,
     20000},
    /* Checkpoints by room only (large requests fill a layer in ~75 operations): a batch
     * (<= 2 operations of <= 57 KiB bounds) fits an eighth of a layer, so
     * shard_store_ready makes room before every batch and no operation is refused. */
    {"room-driven",
     {.wal = 1,
      .wal_segment_bytes = SEG_BYTES,
      .overlay_bytes = 960 << 10,
      .checkpoint_ops = 1000000000,
      .checkpoint_ms = 3600000},
     2002,
     480,
     2,
     40000},
};

/* One plan per configuration, made once: its reference answers and per-op hashes. */
static struct wh_plan plans[2];
static char *ref_dirs[2];

static const char *step_name(int step)
{
    static const char *const names[] = {"?", "BEFORE_COMMIT", "COMMITTED", "RECYCLED", "DONE"};
    return step >= 1 && step <= 4 ? names[step] : "?";
}

/* ---- the child ------------------------------------------------------------------------ */

struct killer {
    int step;
    unsigned nth;
    unsigned seen[8];
    int fd;
};

static void kill_hook(void *arg, int step)
{
    struct killer *k = arg;
    if (step != k->step || ++k->seen[step] != k->nth) /* steps come from one thread */
        return;
    char line[64];
    int n = snprintf(line, sizeof(line), "kill %d %u\n", step, k->nth);
    if (write(k->fd, line, (size_t)n) != n)
        _exit(2);
    _exit(0);
}

static void say(int fd, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void say(int fd, const char *fmt, ...)
{
    char line[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(line, sizeof(line), fmt, ap);
    va_end(ap);
    if (write(fd, line, (size_t)n) != n)
        _exit(2);
}

/* Reports every batch whose position is durable now (they are a prefix: positions
 * grow). */
static void ack(struct shard_store *s, const uint64_t *pos, size_t *next, size_t applied, int fd)
{
    uint64_t durable = shard_store_durable(s);
    while (*next < applied && pos[*next] <= durable)
        say(fd, "ack %zu\n", (*next)++);
}

static void child_wait_durable(struct shard_store *s, const uint64_t *pos, size_t *next,
                               size_t applied, int fd)
{
    shard_store_kick(s);
    uint64_t deadline = clock_mono_ns() + 30ull * 1000000000ull;
    while (shard_store_durable(s) < shard_store_written(s)) {
        if (shard_store_failed(s) || clock_mono_ns() > deadline)
            wh_child_fail(fd, "the log did not become durable (failed %d)", shard_store_failed(s));
        wh_poll(s, 10);
        ack(s, pos, next, applied, fd);
    }
    ack(s, pos, next, applied, fd);
}

static void child_run(const struct wh_plan *p, const char *dir, struct shard_store_options opt,
                      struct killer *k, int fd)
{
    opt.ckpt_hook = kill_hook;
    opt.ckpt_hook_arg = k;
    struct shard_store *s = NULL;
    if (shard_store_open(&s, dir, 0, &opt) != 0)
        wh_child_fail(fd, "open: %s", shard_store_open_error());
    uint64_t *pos = calloc(p->nbatches, sizeof(*pos));
    size_t next = 0;
    for (size_t b = 0; b < p->nbatches; b++) {
        for (int i = 0; !shard_store_ready(s) && i < 30000; i++) {
            wh_poll(s, 1);
            ack(s, pos, &next, b, fd);
        }
        size_t first = wh_batch_first(p, b), n = p->batch_end[b] - first;
        struct wh_ans a[16];
        if (n > 16 || wh_apply(s, p->reqs + first, n, p->batch_now[b], a) != 0)
            wh_child_fail(fd, "batch %zu failed", b);
        for (size_t i = 0; i < n; i++) {
            const struct wh_ans *want = &p->ref[first + i];
            if (!wh_ans_same(&a[i], want) || a[i].replayed != want->replayed)
                wh_child_fail(fd, "op %zu (%s key %s): %d %s; reference %d %s", first + i,
                              p->reqs[first + i].path, p->reqs[first + i].key, a[i].status,
                              a[i].body, want->status, want->body);
            wh_ans_free(&a[i]);
        }
        pos[b] = shard_store_written(s);
        shard_store_kick(s);
        if (shard_store_poll(s) != 0)
            wh_child_fail(fd, "poll: %d", shard_store_failed(s));
        ack(s, pos, &next, b + 1, fd);
        if (b % 3 != 2)
            child_wait_durable(s, pos, &next, b + 1, fd);
    }
    child_wait_durable(s, pos, &next, p->nbatches, fd);
    /* The step may still come from a checkpoint or a recycling running now. */
    for (int i = 0; i < 2000; i++)
        wh_poll(s, 1);
    say(fd, "nokill\n");
    _exit(3);
}

/* A second crash, inside recovery: the hook ends the open's own checkpoint at step. */
static void child_recover(const char *dir, struct shard_store_options opt, struct killer *k,
                          int fd)
{
    opt.ckpt_hook = kill_hook;
    opt.ckpt_hook_arg = k;
    struct shard_store *s = NULL;
    int rc = shard_store_open(&s, dir, 0, &opt);
    say(fd, "nokill open %d %s\n", rc, shard_store_open_error());
    _exit(3);
}

/* ---- the parent --------------------------------------------------------------------------- */

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

/* Forks `fn`'s child; returns what it said, and fails unless the hook ended it. */
static char *run_child(int which, const struct wh_plan *p, const char *dir,
                       const struct shard_store_options *opt, int step, unsigned nth)
{
    int fds[2];
    assert_int_equal(pipe(fds), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        close(fds[0]);
        struct killer k = {.step = step, .nth = nth, .fd = fds[1]};
        if (which == 0)
            child_run(p, dir, *opt, &k, fds[1]);
        child_recover(dir, *opt, &k, fds[1]);
    }
    close(fds[1]);
    char *said = read_all(fds[0]);
    close(fds[0]);
    int st = 0;
    for (int i = 0; waitpid(pid, &st, WNOHANG) != pid; i++) {
        if (i > 12000) {
            kill(pid, SIGKILL);
            waitpid(pid, &st, 0);
            fail_msg("the child did not end within 120 s: %s", said);
        }
        usleep(10000);
    }
    char want[64];
    snprintf(want, sizeof(want), "kill %d %u\n", step, nth);
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0 || strstr(said, want) == NULL)
        fail_msg("the child was to end at %s #%u; status %d, it said:\n%.2000s", step_name(step),
                 nth, st, said);
    return said;
}

static void check_dir(const char *dir, const char *when)
{
    FILE *rep = tmpfile();
    assert_non_null(rep);
    int rc = store_check(dir, rep);
    if (rc != 0) {
        rewind(rep);
        char line[512];
        while (fgets(line, sizeof(line), rep))
            fprintf(stderr, "check %s: %s", when, line);
        fail_msg("store_check %s: %d", when, rc);
    }
    fclose(rep);
}

/* Operations in the acknowledged batches: the last "ack B" said. */
static size_t acked_ops(const struct wh_plan *p, const char *said)
{
    size_t ops = 0;
    for (const char *at = said; (at = strstr(at, "ack ")) != NULL; at += 4) {
        size_t b = strtoull(at + 4, NULL, 10);
        assert_true(b < p->nbatches);
        if (p->batch_end[b] > ops)
            ops = p->batch_end[b];
    }
    return ops;
}

/* The prefixes of the plan whose reference state is the store's: [lo, hi], or lo > hi
 * when none is. */
static void matching_prefix(const struct wh_plan *p, uint64_t h, size_t *lo, size_t *hi)
{
    *lo = SIZE_MAX;
    *hi = 0;
    for (size_t i = 0; i <= p->nops; i++) {
        if (p->op_hash[i] != h)
            continue;
        if (*lo == SIZE_MAX)
            *lo = i;
        *hi = i;
    }
}

/*
 * Sends the whole plan again, each batch at its own `now`: every answer is the
 * reference's, byte for byte. The dumps do not show idempotency records, so the
 * recovered prefix is known only to lie in [lo, hi] (operations that only stored a
 * refusal change no dump); the replays find it: an operation inside the prefix whose
 * answer was stored replays, the first one that does not is the cut, and from there on
 * every operation answers as it first did. Returns the cut; it is never below acked.
 */
static size_t resend(struct shard_store *s, const struct wh_plan *p, size_t lo, size_t hi,
                     size_t acked, const char *label)
{
    size_t cut = SIZE_MAX;
    for (size_t b = 0; b < p->nbatches; b++) {
        size_t first = wh_batch_first(p, b), n = p->batch_end[b] - first;
        struct wh_ans a[16];
        assert_int_equal(wh_apply(s, p->reqs + first, n, p->batch_now[b], a), 0);
        for (size_t i = 0; i < n; i++) {
            size_t op = first + i;
            const struct wh_ans *want = &p->ref[op];
            bool stored = wh_ans_stored(&p->reqs[op], want);
            if (cut == SIZE_MAX && (op >= hi || (op >= lo && stored && !a[i].replayed)))
                cut = op;
            if (cut < acked)
                fail_msg("%s: op %zu was acknowledged, its answer was not stored", label, op);
            bool replayed = op < cut ? stored : want->replayed;
            if (!wh_ans_same(&a[i], want) || a[i].replayed != replayed)
                fail_msg("%s: op %zu (%s key %s) sent again: %d%s %s; reference %d%s %s", label,
                         op, p->reqs[op].path, p->reqs[op].key, a[i].status,
                         a[i].replayed ? " replayed" : "", a[i].body, want->status,
                         replayed ? " replayed" : "", want->body);
            wh_ans_free(&a[i]);
        }
        shard_store_kick(s);
        assert_int_equal(shard_store_poll(s), 0);
    }
    assert_int_equal(wh_settle(s), 0);
    return cut == SIZE_MAX ? p->nops : cut;
}

/* Recovers dir and checks it against the plan; returns the recovered prefix. */
static size_t verify(const struct wh_plan *p, const char *dir, struct shard_store_options opt,
                     size_t acked, const char *label)
{
    check_dir(dir, "before the recovery");
    opt.ckpt_hook = NULL;
    struct shard_store *s = wh_open(dir, &opt);
    struct shard_store_stats st;
    shard_store_get_stats(s, &st);
    int64_t now = p->batch_now[0];
    char *dump = wh_dump(s, 0, p->dump_page, 0, now);
    size_t lo, hi;
    matching_prefix(p, wh_hash(dump), &lo, &hi);
    if (lo > hi)
        fail_msg("%s: the recovered state is no prefix of the plan (acked %zu ops):\n%.3000s",
                 label, acked, dump);
    if (hi < acked)
        fail_msg("%s: acknowledged operations lost: the state is that after %zu..%zu ops, %zu "
                 "were acknowledged",
                 label, lo, hi, acked);
    free(dump);
    size_t cut = resend(s, p, lo, hi, acked, label);
    print_message("%-28s acked %3zu ops, recovered %3zu (of %zu): %" PRIu64
                  " log records replayed up to %" PRIu64 "\n",
                  label, acked, cut, p->nops, st.replayed_records, st.wal_written);
    dump = wh_dump(s, 0, p->dump_page, 0, now);
    if (wh_hash(dump) != p->op_hash[p->nops])
        fail_msg("%s: after sending the plan again the state is not the reference's", label);
    free(dump);
    shard_store_close(s);
    check_dir(dir, "after the recovery");
    return cut;
}

/* The plans are twice as long as the cases need (the last step the cases wait for comes
 * around half of it on this machine), so a slower run still reaches it. */
static void make_plans(void)
{
    for (int c = 0; c < 2; c++) {
        if (plans[c].nops)
            continue;
        uint64_t t0 = clock_mono_ns();
        ref_dirs[c] = wh_tmpdir();
        struct shard_store_options ro = {.defer_meta_sync = 1};
        struct shard_store *ref = wh_open(ref_dirs[c], &ro);
        wh_plan_make(&plans[c], ref, configs[c].seed, configs[c].nops, configs[c].batch_max,
                     configs[c].pad_max, 20, true);
        shard_store_close(ref);
        print_message("%s plan: %zu operations in %zu batches, %" PRIu64
                      " payments (reference made in %.1f s)\n",
                      configs[c].name, plans[c].nops, plans[c].nbatches, plans[c].npays,
                      (double)(clock_mono_ns() - t0) / 1e9);
    }
}

static int teardown_all(void **state)
{
    (void)state;
    for (int c = 0; c < 2; c++) {
        if (ref_dirs[c]) {
            wh_rm_rf(ref_dirs[c]);
            free(ref_dirs[c]);
            ref_dirs[c] = NULL;
        }
        wh_plan_free(&plans[c]);
    }
    return 0;
}

/* One crash at (step, nth) of configuration c, then the checks. */
static void crash_case(int c, int step, unsigned nth)
{
    make_plans();
    const struct wh_plan *p = &plans[c];
    char *dir = wh_tmpdir(), label[64];
    snprintf(label, sizeof(label), "%s %s #%u", configs[c].name, step_name(step), nth);
    char *said = run_child(0, p, dir, &configs[c].opt, step, nth);
    verify(p, dir, configs[c].opt, acked_ops(p, said), label);
    free(said);
    wh_rm_rf(dir);
    free(dir);
}

static void test_ops_driven_every_step(void **state)
{
    (void)state;
    for (int step = SHARD_CKPT_BEFORE_COMMIT; step <= SHARD_CKPT_DONE; step++)
        for (unsigned nth = 1; nth <= 3; nth += 2)
            crash_case(0, step, nth);
}

static void test_room_driven_every_step(void **state)
{
    (void)state;
    for (int step = SHARD_CKPT_BEFORE_COMMIT; step <= SHARD_CKPT_DONE; step++)
        for (unsigned nth = 1; nth <= 2; nth++)
            crash_case(1, step, nth);
}

/* A crash at a checkpoint's commit leaves two layers' worth of log; a recovery with
 * smaller layers must checkpoint inside its replay, and is itself cut there (before and
 * after that commit); the next recovery still finds a prefix with everything
 * acknowledged. */
static void test_crash_inside_recovery(void **state)
{
    (void)state;
    make_plans();
    const struct wh_plan *p = &plans[1];
    for (int step = SHARD_CKPT_BEFORE_COMMIT; step <= SHARD_CKPT_COMMITTED; step++) {
        char *dir = wh_tmpdir(), label[64];
        char *said = run_child(0, p, dir, &configs[1].opt, SHARD_CKPT_BEFORE_COMMIT, 2);
        size_t acked = acked_ops(p, said);
        struct shard_store_options small = configs[1].opt;
        small.overlay_bytes = 256 << 10;
        free(run_child(1, p, dir, &small, step, 1));
        snprintf(label, sizeof(label), "recovery cut at %s", step_name(step));
        verify(p, dir, configs[1].opt, acked, label);
        free(said);
        wh_rm_rf(dir);
        free(dir);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_ops_driven_every_step),
        cmocka_unit_test(test_room_driven_every_step),
        cmocka_unit_test(test_crash_inside_recovery),
    };
    return cmocka_run_group_tests(tests, NULL, teardown_all);
}
