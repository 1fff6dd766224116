/*
 * Tests of the shard thread (store/shard.c) with a fake transport: one group commit
 * for everything queued, reads of a turn seeing that turn's writes, and durability by
 * position: every reply is checked against the store's durable position at the moment
 * it left (fake_reply records it), a batch of only replays after a commit does not
 * release the batch before it until a sync ran (the bug of issue 6), an idle replay of
 * durable state needs no sync, and a commit or sync that fails (once or persistently)
 * turns the held answers into 503s and fails the shard for good, while MDB_MAP_FULL
 * does not.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
#include <lmdb.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/api.h"
#include "store/manifest.h"
#include "store/shard.h"

#define JOBS_MAX 256

/* The fake transport: jobs offered in one go, answers collected. */
struct fake {
    pthread_mutex_t mu;
    size_t recv_max;        /* 0: no limit; else jobs handed out per recv */
    const struct shard *sh; /* to read the shard's counters at each reply */
    uint64_t seen_batches[JOBS_MAX], seen_syncs[JOBS_MAX]; /* at each reply */
    uint64_t seen_durable[JOBS_MAX];                       /* store's, at each reply */
    struct shard_job *inbox[JOBS_MAX];
    size_t in_n;
    struct shard_job *done[JOBS_MAX];
    size_t done_n;
};

static size_t fake_recv(void *ctx, struct shard_job **jobs, size_t max)
{
    struct fake *f = ctx;
    pthread_mutex_lock(&f->mu);
    size_t n = f->in_n < max ? f->in_n : max;
    if (f->recv_max && n > f->recv_max)
        n = f->recv_max;
    memcpy(jobs, f->inbox, n * sizeof(*jobs));
    memmove(f->inbox, f->inbox + n, (f->in_n - n) * sizeof(*jobs));
    f->in_n -= n;
    pthread_mutex_unlock(&f->mu);
    return n;
}

static int fake_reply(void *ctx, struct shard_job *job)
{
    struct fake *f = ctx;
    pthread_mutex_lock(&f->mu);
    if (f->sh) {
        /* fake_reply runs on the shard thread: the store may be read here. */
        f->seen_batches[f->done_n] = f->sh->stats.batches;
        f->seen_syncs[f->done_n] = f->sh->stats.syncs;
        f->seen_durable[f->done_n] = shard_store_durable(f->sh->store);
    }
    f->done[f->done_n++] = job;
    pthread_mutex_unlock(&f->mu);
    return 0;
}

static void fake_flush(void *ctx)
{
    (void)ctx;
}

static void fake_wait(void *ctx, int timeout_ms)
{
    (void)ctx;
    usleep((useconds_t)(timeout_ms > 1 ? 1000 : timeout_ms * 1000));
}

static const struct shard_transport fake_transport = {fake_recv, fake_reply, fake_flush, fake_wait};

static struct shard_job *make_job(const char *method, const char *path, const char *body,
                                  const char *idem)
{
    struct shard_job *job = calloc(1, sizeof(*job) + ENGINE_READ_ANSWER_MAX_BYTES);
    assert_non_null(job);
    struct api_request q = {
        .method = {method, strlen(method)},
        .path = {path, strlen(path)},
        .body = {body, body ? strlen(body) : 0},
        .idem_key = {idem, idem ? strlen(idem) : 0},
        .request_id = {"t", 1},
    };
    struct api_error err;
    assert_int_equal(api_decode(&q, 1, &job->op, &err), 0);
    job->answer.body = (char *)(job + 1);
    job->answer.cap = ENGINE_READ_ANSWER_MAX_BYTES;
    return job;
}

static void *run(void *arg)
{
    shard_run(arg);
    return NULL;
}

/* Offers jobs, waits (bounded) until all are answered. */
static void feed_and_wait(struct fake *f, struct shard_job **jobs, size_t n)
{
    pthread_mutex_lock(&f->mu);
    size_t want = f->done_n + n;
    memcpy(f->inbox + f->in_n, jobs, n * sizeof(*jobs));
    f->in_n += n;
    pthread_mutex_unlock(&f->mu);
    for (int i = 0; i < 10000; i++) {
        pthread_mutex_lock(&f->mu);
        size_t d = f->done_n;
        pthread_mutex_unlock(&f->mu);
        if (d >= want)
            return;
        usleep(1000);
    }
    fail_msg("shard did not answer %zu jobs within 10 s", n);
}

struct fixture {
    char dir[64];
    struct shard_store *store;
    struct fake fake;
    struct shard sh;
    pthread_t tid;
};

static void start(struct fixture *fx, const struct shard_store_options *opt)
{
    memset(fx, 0, sizeof(*fx));
    strcpy(fx->dir, "/tmp/rp_shard_XXXXXX");
    assert_non_null(mkdtemp(fx->dir));
    char err[256];
    assert_int_equal(store_manifest_open(fx->dir, 1, err, sizeof(err)), 0);
    assert_int_equal(shard_store_open(&fx->store, fx->dir, 0, opt), 0);
    pthread_mutex_init(&fx->fake.mu, NULL);
    fx->sh.store = fx->store;
    fx->sh.transport = &fake_transport;
    fx->sh.transport_ctx = &fx->fake;
    fx->fake.sh = &fx->sh;
    assert_int_equal(pthread_create(&fx->tid, NULL, run, &fx->sh), 0);
}

/* Hands out at most max jobs per turn from now on (0: no limit). */
static void set_recv_max(struct fixture *fx, size_t max)
{
    pthread_mutex_lock(&fx->fake.mu);
    fx->fake.recv_max = max;
    pthread_mutex_unlock(&fx->fake.mu);
}

/* Every answer that left before an error was covered by a completed sync. */
static void assert_released_durable(const struct fixture *fx)
{
    for (size_t i = 0; i < fx->fake.done_n; i++) {
        const struct shard_job *j = fx->fake.done[i];
        if (j->rc == 0 && fx->fake.seen_durable[i] < j->pos)
            fail_msg("job %zu left at durable %llu, needing %llu", i,
                     (unsigned long long)fx->fake.seen_durable[i], (unsigned long long)j->pos);
    }
}

static void finish(struct fixture *fx)
{
    assert_released_durable(fx);
    shard_stop(&fx->sh);
    pthread_join(fx->tid, NULL);
    shard_store_close(fx->store);
    for (size_t i = 0; i < fx->fake.done_n; i++)
        free(fx->fake.done[i]);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fx->dir);
    assert_int_equal(system(cmd), 0);
}

static const char auth_body[] = "{\"merchant_id\":\"m-1\",\"amount\":700,\"currency\":\"KRW\"}";

static void test_one_commit_for_everything_queued(void **state)
{
    (void)state;
    struct fixture fx;
    start(&fx, NULL);
    struct shard_job *jobs[101];
    char key[32];
    for (int i = 0; i < 100; i++) {
        snprintf(key, sizeof(key), "k-%d", i);
        jobs[i] = make_job("POST", "/v1/payments/authorize", auth_body, key);
    }
    /* A read queued behind the writes sees all of them. */
    jobs[100] = make_job("GET", "/v1/merchants/m-1/balances", NULL, NULL);
    feed_and_wait(&fx.fake, jobs, 101);
    for (int i = 0; i < 100; i++) {
        assert_int_equal(fx.fake.done[i]->rc, 0);
        assert_int_equal(fx.fake.done[i]->answer.status, 201);
    }
    struct shard_job *bal = fx.fake.done[100];
    assert_int_equal(bal->answer.status, 200);
    bal->answer.body[bal->answer.len] = '\0';
    assert_non_null(strstr(bal->answer.body, "\"pending\":70000"));
    assert_int_equal(fx.sh.stats.batches, 1);
    assert_int_equal(fx.sh.stats.batch_max, 100);
    assert_int_equal(fx.sh.stats.jobs, 101);
    finish(&fx);
}

static void test_io_error_fails_the_shard(void **state)
{
    (void)state;
    struct fixture fx;
    struct shard_store_options opt = {.fault_after_puts = 3, .fault_errno = EIO};
    start(&fx, &opt);
    struct shard_job *a = make_job("POST", "/v1/payments/authorize", auth_body, "a");
    feed_and_wait(&fx.fake, &a, 1);
    assert_int_equal(a->rc, -EIO);
    assert_int_equal(a->answer.status, 503);
    assert_int_equal(fx.sh.failed, 1);
    assert_int_equal(shard_store_failed(fx.store), -EIO);
    /* The fault was one-shot: a healthy store would now succeed, but the shard must
     * refuse, since the kernel may have dropped the pages of the failed write. */
    struct shard_job *b = make_job("POST", "/v1/payments/authorize", auth_body, "b");
    struct shard_job *c = make_job("GET", "/v1/merchants/m-1/balances", NULL, NULL);
    struct shard_job *bc[2] = {b, c};
    feed_and_wait(&fx.fake, bc, 2);
    assert_int_equal(b->rc, -EIO);
    assert_int_equal(c->rc, -EIO);
    assert_int_equal(fx.sh.stats.batches, 1);
    finish(&fx);
}

/* With deferred meta sync, a batch's answers are released only after an fdatasync
 * that followed its commit: the next batch's commit, or an idle sync. */
static void test_deferred_release_waits_for_a_sync(void **state)
{
    (void)state;
    struct fixture fx;
    struct shard_store_options opt = {.defer_meta_sync = 1};
    start(&fx, &opt);
    struct shard_job *jobs[50];
    char key[32];
    for (int i = 0; i < 50; i++) {
        snprintf(key, sizeof(key), "d-%d", i);
        jobs[i] = make_job("POST", "/v1/payments/authorize", auth_body, key);
    }
    feed_and_wait(&fx.fake, jobs, 50);
    for (int i = 0; i < 50; i++)
        assert_int_equal(fx.fake.done[i]->answer.status, 201);
    /* Nothing followed the batch, so the idle shard synced once before answering. */
    assert_int_equal(fx.sh.stats.batches, 1);
    assert_int_equal(fx.sh.stats.syncs, 1);
    struct shard_job *bal = make_job("GET", "/v1/merchants/m-1/balances", NULL, NULL);
    feed_and_wait(&fx.fake, &bal, 1);
    bal->answer.body[bal->answer.len] = '\0';
    assert_non_null(strstr(bal->answer.body, "\"pending\":35000"));
    /* A read-only turn of state that is already durable needs no sync. */
    assert_int_equal(fx.sh.stats.syncs, 1);
    finish(&fx);
}

/* Two batches back to back (the fake hands out one job per turn): the first batch's
 * answer waits for the second batch's commit, whose data fdatasync covers the first
 * one's meta page; the second waits for an idle sync. No answer ever leaves on its own
 * commit alone. */
static void test_answer_waits_for_the_next_commit(void **state)
{
    (void)state;
    struct fixture fx;
    struct shard_store_options opt = {.defer_meta_sync = 1};
    start(&fx, &opt);
    set_recv_max(&fx, 1);
    struct shard_job *jobs[2] = {
        make_job("POST", "/v1/payments/authorize", auth_body, "first"),
        make_job("POST", "/v1/payments/authorize", auth_body, "second"),
    };
    feed_and_wait(&fx.fake, jobs, 2);
    assert_ptr_equal(fx.fake.done[0], jobs[0]);
    assert_ptr_equal(fx.fake.done[1], jobs[1]);
    assert_int_equal(jobs[0]->answer.status, 201);
    assert_int_equal(jobs[1]->answer.status, 201);
    /* first: released after the second commit, without an idle sync */
    assert_int_equal(fx.fake.seen_batches[0], 2);
    assert_int_equal(fx.fake.seen_syncs[0], 0);
    /* second: released after an explicit sync */
    assert_int_equal(fx.fake.seen_batches[1], 2);
    assert_int_equal(fx.fake.seen_syncs[1], 1);
    finish(&fx);
}

static struct shard_job *auth_job(const char *key)
{
    return make_job("POST", "/v1/payments/authorize", auth_body, key);
}

/*
 * The defect of issue 6: a batch of only replays commits a transaction that changed
 * nothing, so LMDB runs no fdatasync for it. It must not release the batch before it
 * (whose meta page was written but not synced): an explicit sync must run first.
 */
static void test_replay_only_batch_does_not_release_without_a_sync(void **state)
{
    (void)state;
    struct fixture fx;
    struct shard_store_options opt = {.defer_meta_sync = 1};
    start(&fx, &opt);
    struct shard_job *first = auth_job("r-1");
    feed_and_wait(&fx.fake, &first, 1);
    assert_int_equal(first->answer.status, 201);
    uint64_t syncs = fx.sh.stats.syncs;
    uint64_t before = shard_store_written(fx.store);
    set_recv_max(&fx, 1); /* one job per turn: a new authorization, then a replay */
    struct shard_job *jobs[2] = {auth_job("r-2"), auth_job("r-1")};
    feed_and_wait(&fx.fake, jobs, 2);
    assert_int_equal(jobs[0]->answer.status, 201);
    assert_int_equal(jobs[1]->answer.status, 201);
    assert_true(jobs[1]->answer.replayed);
    /* The replay changed nothing: both jobs need r-2's commit on disk. */
    assert_int_equal(jobs[0]->pos, before + 1);
    assert_int_equal(jobs[1]->pos, before + 1);
    assert_int_equal(shard_store_written(fx.store), before + 1);
    /* r-2 left only after an explicit sync (the replay's commit ran none), and the
     * replay with it: one sync for both. */
    assert_ptr_equal(fx.fake.done[1], jobs[0]);
    assert_int_equal(fx.fake.seen_syncs[1], syncs + 1);
    assert_true(fx.fake.seen_durable[1] >= jobs[0]->pos);
    assert_int_equal(fx.fake.seen_syncs[2], syncs + 1);
    assert_int_equal(fx.sh.stats.syncs, syncs + 1);
    finish(&fx);
}

/* A replay, and a read, on an idle shard whose state is already durable leave at once:
 * no commit writes and no sync runs. */
static void test_idle_replay_of_durable_state_needs_no_sync(void **state)
{
    (void)state;
    struct fixture fx;
    struct shard_store_options opt = {.defer_meta_sync = 1};
    start(&fx, &opt);
    struct shard_job *first = auth_job("i-1");
    feed_and_wait(&fx.fake, &first, 1);
    assert_int_equal(fx.sh.stats.syncs, 1);
    uint64_t written = shard_store_written(fx.store);
    assert_int_equal(shard_store_durable(fx.store), written);
    struct shard_job *again[2] = {auth_job("i-1"),
                                  make_job("GET", "/v1/merchants/m-1/balances", NULL, NULL)};
    feed_and_wait(&fx.fake, again, 2);
    assert_int_equal(again[0]->answer.status, 201);
    assert_true(again[0]->answer.replayed);
    assert_int_equal(first->answer.len, again[0]->answer.len);
    assert_memory_equal(first->answer.body, again[0]->answer.body, first->answer.len);
    assert_int_equal(again[1]->answer.status, 200);
    assert_int_equal(again[0]->pos, written);
    assert_int_equal(shard_store_written(fx.store), written);
    assert_int_equal(fx.sh.stats.syncs, 1);
    finish(&fx);
}

/* A commit that fails while a batch is held: the held answers (committed, but their
 * meta page never synced) and the failing batch become 503, and the shard refuses
 * everything after, even when the store's fault was one-shot. */
static void commit_failure(int err, int persistent)
{
    struct fixture fx;
    struct shard_store_options opt = {.defer_meta_sync = 1,
                                      .fault_after_commits = 1,
                                      .fault_commit_errno = err,
                                      .fault_persistent = persistent};
    start(&fx, &opt);
    set_recv_max(&fx, 1);
    struct shard_job *jobs[3] = {auth_job("f-1"), auth_job("f-2"),
                                 make_job("GET", "/v1/merchants/m-1/balances", NULL, NULL)};
    feed_and_wait(&fx.fake, jobs, 3);
    for (int i = 0; i < 3; i++) {
        assert_int_equal(jobs[i]->answer.status, 503);
        assert_int_equal(jobs[i]->rc, -err);
        jobs[i]->answer.body[jobs[i]->answer.len] = '\0';
        assert_non_null(strstr(jobs[i]->answer.body, "\"code\":\"overloaded\""));
    }
    assert_int_equal(fx.sh.failed, 1);
    assert_int_equal(shard_store_failed(fx.store), -err);
    uint64_t batches = fx.sh.stats.batches, syncs = fx.sh.stats.syncs;
    struct shard_job *later = auth_job("f-3");
    feed_and_wait(&fx.fake, &later, 1);
    assert_int_equal(later->answer.status, 503);
    assert_int_equal(later->rc, -err);
    assert_int_equal(fx.sh.stats.batches, batches); /* the store was not touched */
    assert_int_equal(fx.sh.stats.syncs, syncs);
    finish(&fx);
}

static void test_commit_failure_once_fails_for_good(void **state)
{
    (void)state;
    commit_failure(EIO, 0);
}

static void test_commit_failure_persistent_fails_for_good(void **state)
{
    (void)state;
    commit_failure(ENOSPC, 1);
}

/* The explicit sync of an idle shard fails: the held answers become 503 and the shard
 * is failed for good (a later fsync could report clean pages the kernel dropped). */
static void sync_failure(int err, int persistent)
{
    struct fixture fx;
    struct shard_store_options opt = {
        .defer_meta_sync = 1, .fault_sync_errno = err, .fault_persistent = persistent};
    start(&fx, &opt);
    struct shard_job *jobs[2] = {auth_job("s-1"), auth_job("s-2")};
    feed_and_wait(&fx.fake, jobs, 2);
    for (int i = 0; i < 2; i++) {
        assert_int_equal(jobs[i]->answer.status, 503);
        assert_int_equal(jobs[i]->rc, -err);
    }
    assert_int_equal(fx.sh.failed, 1);
    assert_int_equal(fx.sh.stats.syncs, 1);
    assert_int_equal(shard_store_failed(fx.store), -err);
    /* Even a replay of nothing durable, or a read, is refused now. */
    struct shard_job *later[2] = {auth_job("s-1"),
                                  make_job("GET", "/v1/merchants/m-1/balances", NULL, NULL)};
    feed_and_wait(&fx.fake, later, 2);
    assert_int_equal(later[0]->answer.status, 503);
    assert_int_equal(later[1]->answer.status, 503);
    assert_int_equal(fx.sh.stats.batches, 1);
    assert_int_equal(fx.sh.stats.syncs, 1);
    finish(&fx);
}

static void test_sync_failure_once_fails_for_good(void **state)
{
    (void)state;
    sync_failure(EIO, 0);
}

static void test_sync_failure_persistent_fails_for_good(void **state)
{
    (void)state;
    sync_failure(EDQUOT, 1);
}

/* MDB_MAP_FULL is found before anything is written: the batch is 503, the held batch
 * before it still leaves with its answers (after a sync), and the shard goes on. */
static void test_map_full_does_not_fail_the_shard(void **state)
{
    (void)state;
    struct fixture fx;
    /* An authorization makes 7 counted puts: the second one fails on its first put. */
    struct shard_store_options opt = {.defer_meta_sync = 1,
                                      .fault_after_puts = 7,
                                      .fault_errno = MDB_MAP_FULL,
                                      .fault_persistent = 1};
    start(&fx, &opt);
    set_recv_max(&fx, 1);
    struct shard_job *jobs[2] = {auth_job("m-1"), auth_job("m-2")};
    feed_and_wait(&fx.fake, jobs, 2);
    assert_int_equal(jobs[0]->answer.status, 201);
    assert_int_equal(jobs[0]->rc, 0);
    assert_int_equal(jobs[1]->answer.status, 503);
    assert_int_equal(jobs[1]->rc, -ENOSPC);
    assert_int_equal(fx.sh.failed, 0);
    assert_int_equal(shard_store_failed(fx.store), 0);
    assert_int_equal(fx.sh.stats.syncs, 1);
    finish(&fx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_commit_for_everything_queued),
        cmocka_unit_test(test_io_error_fails_the_shard),
        cmocka_unit_test(test_deferred_release_waits_for_a_sync),
        cmocka_unit_test(test_answer_waits_for_the_next_commit),
        cmocka_unit_test(test_replay_only_batch_does_not_release_without_a_sync),
        cmocka_unit_test(test_idle_replay_of_durable_state_needs_no_sync),
        cmocka_unit_test(test_commit_failure_once_fails_for_good),
        cmocka_unit_test(test_commit_failure_persistent_fails_for_good),
        cmocka_unit_test(test_sync_failure_once_fails_for_good),
        cmocka_unit_test(test_sync_failure_persistent_fails_for_good),
        cmocka_unit_test(test_map_full_does_not_fail_the_shard),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
