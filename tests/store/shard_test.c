/*
 * Tests of the shard thread (store/shard.c) with a fake transport: one group commit
 * for everything queued, reads of a turn seeing that turn's writes, answers released
 * only with their commit, and a shard that saw an I/O error refusing all later work.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <errno.h>
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
        f->seen_batches[f->done_n] = f->sh->stats.batches;
        f->seen_syncs[f->done_n] = f->sh->stats.syncs;
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
    bool defer = opt && opt->defer_meta_sync;
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
    fx->sh.defer_release = defer;
    fx->fake.sh = &fx->sh;
    assert_int_equal(pthread_create(&fx->tid, NULL, run, &fx->sh), 0);
}

static void finish(struct fixture *fx)
{
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
    /* A read-only turn has no commit to ride on: it is synced too. */
    assert_int_equal(fx.sh.stats.syncs, 2);
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
    pthread_mutex_lock(&fx.fake.mu);
    fx.fake.recv_max = 1;
    pthread_mutex_unlock(&fx.fake.mu);
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_one_commit_for_everything_queued),
        cmocka_unit_test(test_io_error_fails_the_shard),
        cmocka_unit_test(test_deferred_release_waits_for_a_sync),
        cmocka_unit_test(test_answer_waits_for_the_next_commit),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
