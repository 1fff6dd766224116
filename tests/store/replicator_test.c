/*
 * Tests of the Kafka replicator (store/replicator.c) against librdkafka's mock cluster
 * in this process and a real shard store: the window bounds what the producer holds and
 * is refilled until every event is delivered; only durable events leave; the backlog's
 * events and bytes are exact (also across a restart, from the initial scan) and the
 * bounds turn the overload flag on and off; a fatal producer error recreates the
 * producer and nothing is lost; the mark rides the next commit (or an idle one) and the
 * outbox is trimmed below it.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <librdkafka/rdkafka.h>
#include <librdkafka/rdkafka_mock.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "engine/api.h"
#include "engine/clock.h"
#include "engine/limits.h"
#include "store/manifest.h"
#include "store/replicator.h"
#include "store/shard_store.h"

#define NOW_MS  1764064800123LL
#define WAIT_MS 15000

static rd_kafka_t *mock_rk;
static rd_kafka_mock_cluster_t *mc;
static char brokers[512];

/* ---- fixtures ---------------------------------------------------------------------- */

static int setup(void **state)
{
    char err[256];
    rd_kafka_conf_t *conf = rd_kafka_conf_new();
    rd_kafka_conf_set(conf, "log_level", "2", err, sizeof(err));
    mock_rk = rd_kafka_new(RD_KAFKA_PRODUCER, conf, err, sizeof(err));
    assert_non_null(mock_rk);
    mc = rd_kafka_mock_cluster_new(mock_rk, 3);
    assert_non_null(mc);
    snprintf(brokers, sizeof(brokers), "%s", rd_kafka_mock_cluster_bootstraps(mc));
    return 0;
}

static int teardown(void **state)
{
    rd_kafka_mock_cluster_destroy(mc);
    rd_kafka_destroy(mock_rk);
    return 0;
}

struct fixture {
    char dir[64];
    struct shard_store *store;
    int key; /* idempotency keys used so far */
};

static void fixture_open(struct fixture *f, int defer)
{
    snprintf(f->dir, sizeof(f->dir), "/tmp/rp_repl_XXXXXX");
    assert_non_null(mkdtemp(f->dir));
    char err[256];
    assert_int_equal(store_manifest_open(f->dir, 1, err, sizeof(err)), 0);
    struct shard_store_options opt = {.defer_meta_sync = defer};
    assert_int_equal(shard_store_open(&f->store, f->dir, 0, &opt), 0);
    f->key = 0;
}

static void fixture_close(struct fixture *f)
{
    shard_store_close(f->store);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", f->dir);
    assert_int_equal(system(cmd), 0);
}

/* Commits n authorizations (n events) in one batch; sync: make them durable too. */
static void commit_events(struct fixture *f, int n, bool sync)
{
    struct slot {
        struct op op;
        char body[ENGINE_ANSWER_MAX_BYTES];
        char req[128], key[32];
    } *sl = calloc((size_t)n, sizeof(*sl));
    struct batch_item *it = calloc((size_t)n, sizeof(*it));
    assert_non_null(sl);
    assert_non_null(it);
    for (int i = 0; i < n; i++) {
        snprintf(sl[i].req, sizeof(sl[i].req),
                 "{\"merchant_id\":\"m-%d\",\"amount\":%d,\"currency\":\"KRW\"}", i % 7, 100 + i);
        snprintf(sl[i].key, sizeof(sl[i].key), "k-%d", f->key++);
        struct api_request q = {.method = {"POST", 4},
                                .path = {"/v1/payments/authorize", 22},
                                .body = {sl[i].req, strlen(sl[i].req)},
                                .idem_key = {sl[i].key, strlen(sl[i].key)},
                                .request_id = {"t", 1}};
        struct api_error e;
        assert_int_equal(api_decode(&q, 1, &sl[i].op, &e), 0);
        it[i].op = &sl[i].op;
        it[i].answer.body = sl[i].body;
        it[i].answer.cap = sizeof(sl[i].body);
    }
    assert_int_equal(shard_store_apply_batch(f->store, it, (size_t)n, NOW_MS), 0);
    for (int i = 0; i < n; i++)
        assert_int_equal(it[i].answer.status, 201);
    if (sync)
        assert_int_equal(shard_store_sync(f->store), 0);
    free(it);
    free(sl);
}

static int add_bytes(void *arg, const struct shard_event *ev)
{
    *(uint64_t *)arg += ev->key_len + ev->value_len;
    return 0;
}

/* Key + value bytes of the outbox above `after`, read through the store. */
static uint64_t outbox_bytes(struct fixture *f, uint64_t after)
{
    uint64_t sum = 0;
    assert_int_equal(shard_store_outbox_scan(f->store, after, SIZE_MAX, add_bytes, &sum), 0);
    return sum;
}

static int count_one(void *arg, const struct shard_event *ev)
{
    (*(int *)arg)++;
    return 0;
}

static void test_log(void *ctx, enum replicator_log_level level, unsigned shard, const char *msg,
                     const char *detail)
{
    fprintf(stderr, "  [replicator %u] %s: %s\n", shard, msg, detail ? detail : "");
}

static struct replicator *make(struct fixture *f, uint32_t window, uint64_t events_max,
                               uint64_t bytes_max)
{
    static const char *const conf[] = {"linger.ms=1", NULL};
    struct replicator_options opt = {.brokers = brokers,
                                     .window_events = window,
                                     .backlog_events_max = events_max,
                                     .backlog_bytes_max = bytes_max,
                                     .conf = conf,
                                     .log = test_log};
    struct replicator *r = NULL;
    char why[256] = "";
    assert_int_equal(replicator_create(&r, f->store, 0, &opt, why, sizeof(why)), 0);
    return r;
}

static struct replicator_stats stats_of(struct replicator *r)
{
    struct replicator_stats st;
    replicator_get_stats(r, &st);
    return st;
}

/* Polls until the mark reaches `mark` (bounded); returns the largest in_flight seen. */
static uint64_t poll_until_mark(struct replicator *r, uint64_t mark)
{
    uint64_t deadline = clock_mono_ns() + (uint64_t)WAIT_MS * 1000000, max_in_flight = 0;
    for (;;) {
        replicator_poll(r);
        struct replicator_stats st = stats_of(r);
        if (st.in_flight > max_in_flight)
            max_in_flight = st.in_flight;
        if (st.mark >= mark)
            break;
        if (clock_mono_ns() > deadline)
            fail_msg("mark %llu, want %llu", (unsigned long long)st.mark, (unsigned long long)mark);
        usleep(1000);
    }
    return max_in_flight;
}

static void poll_for_ms(struct replicator *r, int ms)
{
    for (int i = 0; i < ms; i++) {
        replicator_poll(r);
        usleep(1000);
    }
}

/* ---- tests ------------------------------------------------------------------------- */

/* A window of 4 over 60 events: never more than 4 in the producer, refilled until all
 * are delivered; the mark rides the next commit and the outbox is trimmed below it. */
static void test_small_window_delivers_everything(void **state)
{
    struct fixture f;
    fixture_open(&f, 1);
    struct replicator *r = make(&f, 4, 0, 0);
    commit_events(&f, 60, true);
    uint64_t max_in_flight = poll_until_mark(r, 60);
    assert_true(max_in_flight <= 4);
    struct replicator_stats st = stats_of(r);
    assert_int_equal(st.sent, 60);
    assert_int_equal(st.delivered, 60);
    assert_int_equal(st.recreated, 0);
    assert_int_equal(st.backlog_events, 0);
    assert_int_equal(st.backlog_bytes, 0);
    assert_int_equal(st.producer_up, 1);
    assert_true(st.lag_count == 60);
    /* The next commit stores the mark and trims: nothing is left in the outbox. */
    assert_int_equal(st.mark_stored, 0);
    assert_int_equal(shard_store_apply_batch(f.store, NULL, 0, NOW_MS), 0);
    struct shard_store_stats ss;
    shard_store_get_stats(f.store, &ss);
    assert_int_equal(ss.replicated_seq, 60);
    int left = 0;
    assert_int_equal(shard_store_outbox_scan(f.store, 0, SIZE_MAX, count_one, &left), 0);
    assert_int_equal(left, 0);
    replicator_close(r, clock_mono_ns());
    fixture_close(&f);
}

/* An event whose commit is not durable yet stays home; it leaves after the sync. */
static void test_only_durable_events_leave(void **state)
{
    struct fixture f;
    fixture_open(&f, 1);
    struct replicator *r = make(&f, 0, 0, 0);
    commit_events(&f, 3, false);
    poll_for_ms(r, 200);
    struct replicator_stats st = stats_of(r);
    assert_int_equal(st.sent, 0);
    assert_int_equal(st.backlog_events, 3);
    assert_int_equal(st.backlog_bytes, outbox_bytes(&f, 0));
    assert_int_equal(shard_store_sync(f.store), 0);
    poll_until_mark(r, 3);
    assert_int_equal(stats_of(r).sent, 3);
    replicator_close(r, clock_mono_ns());
    fixture_close(&f);
}

/* Brokers down: the backlog grows by exactly the committed events and their bytes; over
 * the events bound the replicator is overloaded; a restart finds the same backlog (the
 * initial scan); over the bytes bound it is overloaded too; brokers up: it drains to
 * zero by itself and the flag drops. */
static void test_backlog_accounting_and_bounds(void **state)
{
    struct fixture f;
    fixture_open(&f, 1);
    commit_events(&f, 2, true);
    struct replicator *r = make(&f, 4, 5, 0);
    poll_until_mark(r, 2);
    assert_int_equal(rd_kafka_mock_broker_set_down(mc, -1), 0);
    commit_events(&f, 5, true);
    poll_for_ms(r, 100);
    struct replicator_stats st = stats_of(r);
    assert_int_equal(st.backlog_events, 5);
    assert_int_equal(st.backlog_bytes, outbox_bytes(&f, 2));
    assert_false(replicator_overloaded(r)); /* 5 is not over 5 */
    commit_events(&f, 3, true);
    poll_for_ms(r, 100);
    st = stats_of(r);
    assert_int_equal(st.backlog_events, 8);
    assert_int_equal(st.backlog_bytes, outbox_bytes(&f, 2));
    assert_true(st.in_flight <= 4);
    assert_true(replicator_overloaded(r));
    assert_int_equal(st.overloaded, 1);
    /* A restart (the mark stored at close is still 2): the same backlog, from the scan. */
    replicator_close(r, clock_mono_ns() + 100 * 1000000);
    uint64_t bytes = outbox_bytes(&f, 2);
    r = make(&f, 4, 0, bytes - 1);
    st = stats_of(r);
    assert_int_equal(st.mark, 2);
    assert_int_equal(st.backlog_events, 8);
    assert_int_equal(st.backlog_bytes, bytes);
    assert_true(replicator_overloaded(r)); /* over the bytes bound */
    /* Up again: drains by itself. */
    assert_int_equal(rd_kafka_mock_broker_set_up(mc, -1), 0);
    poll_until_mark(r, 10);
    st = stats_of(r);
    assert_int_equal(st.backlog_events, 0);
    assert_int_equal(st.backlog_bytes, 0);
    assert_false(replicator_overloaded(r));
    assert_int_equal(st.recreated, 0);
    replicator_close(r, clock_mono_ns());
    fixture_close(&f);
}

/* A fatal producer error (a fenced idempotent producer): the producer is destroyed and
 * a new one resends from the mark; every event is delivered. */
static void test_fatal_error_recreates_the_producer(void **state)
{
    struct fixture f;
    fixture_open(&f, 1);
    struct replicator *r = make(&f, 8, 0, 0);
    commit_events(&f, 10, true);
    poll_until_mark(r, 10);
    assert_int_equal(rd_kafka_mock_broker_set_rtt(mc, -1, 300), 0);
    commit_events(&f, 10, true);
    poll_for_ms(r, 20); /* some in flight, slowly */
    replicator_test_fatal(r);
    poll_for_ms(r, 50);
    struct replicator_stats st = stats_of(r);
    assert_int_equal(st.recreated, 1);
    assert_int_equal(st.errors[REPL_ERR_FATAL], 1);
    assert_int_equal(rd_kafka_mock_broker_set_rtt(mc, -1, 0), 0);
    poll_until_mark(r, 20);
    st = stats_of(r);
    assert_int_equal(st.backlog_events, 0);
    assert_true(st.sent >= 20);
    replicator_close(r, clock_mono_ns());
    fixture_close(&f);
}

/* An idle shard stores a moved mark by itself after REPL_MARK_IDLE_MS; close stores
 * what was delivered last. */
static void test_idle_and_close_store_the_mark(void **state)
{
    struct fixture f;
    fixture_open(&f, 1);
    struct replicator *r = make(&f, 0, 0, 0);
    commit_events(&f, 4, true);
    poll_until_mark(r, 4);
    replicator_idle(r);
    assert_int_equal(stats_of(r).mark_stored, 0); /* a commit was just seen */
    uint64_t until = clock_mono_ns() + (uint64_t)(REPL_MARK_IDLE_MS + 500) * 1000000;
    while (stats_of(r).mark_stored < 4 && clock_mono_ns() < until) {
        replicator_poll(r);
        replicator_idle(r);
        usleep(10000);
    }
    assert_int_equal(stats_of(r).mark_stored, 4);
    commit_events(&f, 3, true);
    replicator_poll(r);
    replicator_close(r, clock_mono_ns() + 5000ull * 1000000);
    struct shard_store_stats ss;
    shard_store_get_stats(f.store, &ss);
    assert_int_equal(ss.replicated_seq, 7);
    fixture_close(&f);
}

/* A bad librdkafka setting fails create with one line. */
static void test_bad_setting_fails_create(void **state)
{
    struct fixture f;
    fixture_open(&f, 1);
    static const char *const conf[] = {"no.such.setting=1", NULL};
    struct replicator_options opt = {.brokers = brokers, .conf = conf};
    struct replicator *r = NULL;
    char why[256] = "";
    assert_int_equal(replicator_create(&r, f.store, 0, &opt, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "no.such.setting"));
    opt.conf = NULL;
    opt.brokers = "";
    assert_int_equal(replicator_create(&r, f.store, 0, &opt, why, sizeof(why)), -EINVAL);
    fixture_close(&f);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_small_window_delivers_everything),
        cmocka_unit_test(test_only_durable_events_leave),
        cmocka_unit_test(test_backlog_accounting_and_bounds),
        cmocka_unit_test(test_fatal_error_recreates_the_producer),
        cmocka_unit_test(test_idle_and_close_store_the_mark),
        cmocka_unit_test(test_bad_setting_fails_create),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
