/*
 * Replication to Kafka for real (SPEC §4, §6; docs/events.md): the real engine
 * (`ringpay serve --cores 2`) replicates to a Kafka-protocol cluster in a process of its
 * own that the test controls (rp_mock_kafka: librdkafka's mock cluster, brokers down and
 * up, injected request errors), and Debian's kcat is the consumer. Every event is
 * checked against the answers the test recorded:
 *
 *   - after removing duplicates by event_id, the events are the answered changes one to
 *     one: each 2xx answer of a state change is one event of its type, whose "payment"
 *     (or "refund", for payment.refunded) is the answer's body byte for byte;
 *   - a duplicate carries the same bytes in the same topic and partition;
 *   - the message key is the payment's merchant_id, the topic is the event's type;
 *   - per shard the event sequences in the event_ids are 1..N without a gap;
 *   - within each topic and partition, a merchant's events come in commit order (their
 *     sequences increase with the offset).
 *
 * Tests: the whole payment lifecycle over many merchants on both shards; every broker
 * down in the middle of load (RINGPAY_KAFKA_OUTAGE_S, default 5 s; 30 s in the `long`
 * run), every request still answered; kill -9 of the engine while events are in flight,
 * then a restart that resends from the stored mark (duplicates, no gaps); the backlog
 * bound (events, then bytes) turning state changes into 503 with Retry-After and
 * /readyz into 503, both recovering by themselves; Produce errors injected by the
 * cluster (retriable ones, and one that fails a message for good, which recreates the
 * producer); and the embedded default cluster, whose address is read from the log.
 *
 * Everything runs on loopback; every wait is bounded. RINGPAY_KAFKA_TESTS selects tests
 * by cmocka's name filter (e.g. "test_outage").
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"
#include "kafka_client.h"
#include "pay_client.h"

#define NSHARDS     2
#define CHANGES_MAX 20000
#define EVENTS_MAX  40000
#define DRAIN_MS    60000 /* a drained backlog within this after the brokers return */
#define KCAT_MS     60000

static struct rp_server srv;

static struct kc_mock mk;

static void mock_cmd(struct kc_mock *m, const char *cmd)
{
    int rc = kc_mock_cmd(m, cmd);
    if (rc)
        fail_msg("rp_mock_kafka: %s: %d", cmd, rc);
}

/* ---- what the test expects: the answered changes -------------------------------------- */

struct change {
    char type[24]; /* "payment.authorized", ... */
    char merchant[72];
    char *object; /* the answer body: the payment, or the refund */
};

static struct change *changes;
static size_t nchanges;

static void changes_reset(void)
{
    for (size_t i = 0; i < nchanges; i++)
        free(changes[i].object);
    nchanges = 0;
}

struct client {
    struct pc_conn pc;
    int key;
    int refused;        /* 503 answers */
    int retry_after_ok; /* of which with a Retry-After header */
};

/*
 * POSTs body to path with a fresh key. A 2xx answer is recorded as an expected event of
 * `type` (payment.* from the path). Returns the status (or a negative transport error)
 * and, when id is not NULL, the answer's "id".
 */
static int post(struct client *c, const char *path, const char *body, const char *type,
                const char *merchant, char *id, size_t id_cap)
{
    char key[48];
    snprintf(key, sizeof(key), "k-%d-%d", getpid(), c->key++);
    struct rp_response r;
    int rc = pc_call(&c->pc, "POST", path, key, body, &r);
    if (rc)
        return rc;
    int status = r.status;
    if (status >= 200 && status < 300) {
        assert_true(nchanges < CHANGES_MAX);
        struct change *ch = &changes[nchanges++];
        snprintf(ch->type, sizeof(ch->type), "%s", type);
        snprintf(ch->merchant, sizeof(ch->merchant), "%s", merchant);
        ch->object = strdup(r.body);
        if (id)
            assert_true(pc_body_str(r.body, "id", id, id_cap));
    } else if (status == 503) {
        c->refused++;
        if (rp_header(&r, "Retry-After") != NULL)
            c->retry_after_ok++;
        char code[32], param[32];
        assert_true(pc_error_parts(r.body, code, sizeof(code), param, sizeof(param)));
        assert_string_equal(code, "overloaded");
    }
    rp_response_free(&r);
    return status;
}

/* One payment through a lifecycle chosen by i: captured, partly captured and refunded
 * twice, voided, captured and refunded in full, or left authorized. Every request must
 * be answered 2xx (require_2xx) or the status is returned at the first other answer. */
static int lifecycle(struct client *c, int i, int merchants, bool require_2xx)
{
    char m[32], body[160], path[96], id[40];
    snprintf(m, sizeof(m), "kt-m%d", i % merchants);
    snprintf(body, sizeof(body), "{\"merchant_id\":\"%s\",\"amount\":%d,\"currency\":\"KRW\"}", m,
             1000 + i);
    int st = post(c, "/v1/payments/authorize", body, "payment.authorized", m, id, sizeof(id));
    if (require_2xx)
        assert_int_equal(st, 201);
    if (st != 201)
        return st;
    struct {
        const char *op, *body, *type;
    } steps[3];
    int n = 0;
    switch (i % 5) {
    case 0:
        steps[n++] = (typeof(steps[0])){"capture", NULL, "payment.captured"};
        break;
    case 1:
        steps[n++] = (typeof(steps[0])){"capture", "{\"amount\":600}", "payment.captured"};
        steps[n++] = (typeof(steps[0])){"refund", "{\"amount\":100}", "payment.refunded"};
        steps[n++] = (typeof(steps[0])){"refund", "{\"amount\":200}", "payment.refunded"};
        break;
    case 2:
        steps[n++] = (typeof(steps[0])){"void", NULL, "payment.voided"};
        break;
    case 3:
        steps[n++] = (typeof(steps[0])){"capture", NULL, "payment.captured"};
        steps[n++] = (typeof(steps[0])){"refund", NULL, "payment.refunded"};
        break;
    default:
        break;
    }
    for (int k = 0; k < n; k++) {
        snprintf(path, sizeof(path), "/v1/payments/%s/%s", id, steps[k].op);
        st = post(c, path, steps[k].body ? steps[k].body : "{}", steps[k].type, m, NULL, 0);
        if (require_2xx)
            assert_true(st == 200 || st == 201);
        if (st != 200 && st != 201)
            return st;
    }
    return 200;
}

/* ---- what Kafka holds: kcat ------------------------------------------------------------ */

struct event {
    struct kc_msg m;
    char *object; /* inside the payload: the payment or the refund (a copy) */
};

static struct event *events;
static struct kc_msg *msgs;
static size_t nevents;

static void events_reset(void)
{
    for (size_t i = 0; i < nevents; i++) {
        free(events[i].m.payload);
        free(events[i].object);
    }
    nevents = 0;
}

/* The raw text of the refund (payment.refunded) or of the payment: flat objects of our
 * own rendering, the payment last. */
static char *object_of(const char *payload, const char *type)
{
    bool refund = strcmp(type, "payment.refunded") == 0;
    const char *key = refund ? "\"refund\":{" : "\"payment\":{";
    const char *p = strstr(payload, key);
    if (p == NULL)
        return NULL;
    p += strlen(key) - 1;
    const char *end = refund ? strchr(p, '}') + 1 : payload + strlen(payload) - 1;
    return strndup(p, (size_t)(end - p));
}

/* Appends every message of topic to events (kcat -C -e: from the beginning to the end). */
static void consume(const char *bootstrap, const char *topic)
{
    size_t n = 0;
    int rc = kc_consume(bootstrap, topic, KCAT_MS, msgs, EVENTS_MAX - nevents, &n);
    if (rc)
        fail_msg("kcat on %s: %d (is kcat installed? ./dev.sh installs it)", topic, rc);
    for (size_t i = 0; i < n; i++) {
        struct event *e = &events[nevents++];
        e->m = msgs[i];
        char type[32];
        assert_true(pc_body_str(e->m.payload, "type", type, sizeof(type)));
        assert_string_equal(type, e->m.topic);
        e->object = object_of(e->m.payload, type);
        assert_non_null(e->object);
    }
}

static void consume_all(const char *bootstrap)
{
    events_reset();
    static const char *const topics[] = {"payment.authorized", "payment.captured", "payment.voided",
                                         "payment.refunded"};
    for (size_t i = 0; i < 4; i++)
        consume(bootstrap, topics[i]);
}

/* Waits until every shard's backlog is empty (the mark reached the last event). */
static void wait_drained(int port, int timeout_ms)
{
    int64_t deadline = rp_now_ms() + timeout_ms;
    for (;;) {
        double backlog = rp_scrape(port, "ringpay_replication_backlog_events", NULL);
        if (backlog == 0)
            return;
        if (rp_now_ms() > deadline)
            fail_msg("backlog still %.0f events after %d ms", backlog, timeout_ms);
        rp_sleep_ms(50);
    }
}

/* ---- the checks --------------------------------------------------------------------------- */

static int by_id_then_offset(const void *a, const void *b)
{
    const struct event *x = *(struct event *const *)a, *y = *(struct event *const *)b;
    int c = strcmp(x->m.event_id, y->m.event_id);
    if (c)
        return c;
    return x->m.offset < y->m.offset ? -1 : x->m.offset > y->m.offset;
}

static int by_place(const void *a, const void *b)
{
    const struct event *x = a, *y = b;
    int c = strcmp(x->m.topic, y->m.topic);
    if (c)
        return c;
    if (x->m.partition != y->m.partition)
        return x->m.partition - y->m.partition;
    return x->m.offset < y->m.offset ? -1 : x->m.offset > y->m.offset;
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static char *line_of(const char *type, const char *object)
{
    char *s = NULL;
    assert_true(asprintf(&s, "%s|%s", type, object) > 0);
    return s;
}

/* Marks duplicates (same event_id: same bytes, same place); returns how many. */
static size_t mark_duplicates(void)
{
    struct event **idx = calloc(nevents + 1, sizeof(*idx));
    assert_non_null(idx);
    for (size_t i = 0; i < nevents; i++)
        idx[i] = &events[i];
    qsort(idx, nevents, sizeof(*idx), by_id_then_offset);
    size_t dups = 0;
    for (size_t i = 1; i < nevents; i++) {
        if (strcmp(idx[i]->m.event_id, idx[i - 1]->m.event_id) != 0)
            continue;
        const struct event *first = idx[i - 1]; /* same bytes as the first, by induction */
        assert_string_equal(idx[i]->m.payload, first->m.payload);
        assert_string_equal(idx[i]->m.topic, first->m.topic);
        assert_int_equal(idx[i]->m.partition, first->m.partition);
        idx[i]->m.dup = true;
        dups++;
    }
    free(idx);
    return dups;
}

/*
 * The events (duplicates removed) equal the answered changes one to one; keys are the
 * merchants; per shard the sequences are 1..N; per topic and partition each merchant's
 * sequences increase. Returns the number of duplicates.
 */
static size_t verify(void)
{
    qsort(events, nevents, sizeof(*events), by_place);
    size_t dups = mark_duplicates();
    /* Keys, and the gapless sequence per shard. */
    unsigned long long max_seq[NSHARDS] = {0}, count[NSHARDS] = {0};
    char **got = calloc(nevents + 1, sizeof(char *));
    char **want = calloc(nchanges + 1, sizeof(char *));
    size_t ngot = 0;
    for (size_t i = 0; i < nevents; i++) {
        struct event *e = &events[i];
        if (e->m.dup)
            continue;
        char merchant[72];
        const char *pay = strstr(e->m.payload, "\"payment\":{");
        assert_non_null(pay);
        char *payment = strndup(pay + 10, strlen(pay + 10) - 1); /* without the event's } */
        assert_true(pc_body_str(payment, "merchant_id", merchant, sizeof(merchant)));
        free(payment);
        assert_string_equal(e->m.key, merchant);
        assert_true(e->m.shard < NSHARDS);
        count[e->m.shard]++;
        if (e->m.seq > max_seq[e->m.shard])
            max_seq[e->m.shard] = e->m.seq;
        got[ngot++] = line_of(e->m.topic, e->object);
    }
    for (unsigned s = 0; s < NSHARDS; s++)
        if (count[s] != max_seq[s]) {
            char *seen = calloc(max_seq[s] + 1, 1);
            for (size_t i = 0; i < nevents; i++)
                if (!events[i].m.dup && events[i].m.shard == s)
                    seen[events[i].m.seq] = 1;
            for (unsigned long long q = 1; q <= max_seq[s]; q++)
                if (!seen[q])
                    print_error("shard %u: event %llu is missing\n", s, q);
            free(seen);
            /* Did the consumer miss offsets, or did the cluster never store the event? */
            for (size_t i = 0; i < nevents;) {
                size_t j = i;
                long long expect = events[i].m.offset;
                int holes = 0;
                while (j < nevents && strcmp(events[j].m.topic, events[i].m.topic) == 0 &&
                       events[j].m.partition == events[i].m.partition) {
                    holes += events[j].m.offset != expect;
                    expect = events[j].m.offset + 1;
                    j++;
                }
                print_error("  %s[%d]: %zu messages, offsets %lld..%lld, %d holes\n",
                            events[i].m.topic, events[i].m.partition, j - i, events[i].m.offset,
                            expect - 1, holes);
                i = j;
            }
            rp_server_dump_log(&srv, 16384);
            fail_msg("shard %u: %llu events but the last sequence is %llu (a gap)", s, count[s],
                     max_seq[s]);
        }
    /* Commit order within each topic and partition, per merchant. */
    for (size_t i = 0; i < nevents; i++) {
        const struct kc_msg *a = &events[i].m;
        if (a->dup)
            continue;
        for (size_t j = i + 1; j < nevents && strcmp(events[j].m.topic, a->topic) == 0 &&
                               events[j].m.partition == a->partition;
             j++) {
            const struct kc_msg *b = &events[j].m;
            if (b->dup || strcmp(b->key, a->key) != 0)
                continue;
            if (b->seq <= a->seq)
                fail_msg("%s[%d]: %s at offset %lld after %s at %lld", a->topic, a->partition,
                         b->event_id, b->offset, a->event_id, a->offset);
            break; /* the next one of this merchant is checked from j on */
        }
    }
    /* One to one with the answers. */
    for (size_t i = 0; i < nchanges; i++)
        want[i] = line_of(changes[i].type, changes[i].object);
    qsort(got, ngot, sizeof(char *), cmp_str);
    qsort(want, nchanges, sizeof(char *), cmp_str);
    if (ngot != nchanges)
        fail_msg("%zu distinct events for %zu answered changes", ngot, nchanges);
    for (size_t i = 0; i < ngot; i++)
        if (strcmp(got[i], want[i]) != 0)
            fail_msg("event and answer differ:\n  event:  %s\n  answer: %s", got[i], want[i]);
    for (size_t i = 0; i < ngot; i++)
        free(got[i]);
    for (size_t i = 0; i < nchanges; i++)
        free(want[i]);
    free(got);
    free(want);
    print_message("  %zu events (%zu duplicates removed), %zu answered changes: one to one\n",
                  nevents, dups, nchanges);
    return dups;
}

/* ---- fixtures ------------------------------------------------------------------------------ */

static int setup(void **state)
{
    changes = calloc(CHANGES_MAX, sizeof(*changes));
    events = calloc(EVENTS_MAX, sizeof(*events));
    msgs = calloc(EVENTS_MAX, sizeof(*msgs));
    return changes && events && msgs ? 0 : -1;
}

static int teardown(void **state)
{
    pc_teardown(state);
    kc_mock_stop(&mk);
    changes_reset();
    events_reset();
    return 0;
}

/* Starts the mock cluster and the engine replicating to it (extra args appended). */
static void start_both(struct client *c, const char *const extra[])
{
    changes_reset();
    events_reset();
    assert_int_equal(kc_mock_start(&mk, RP_MOCK_KAFKA), 0);
    const char *args[24] = {"--cores", "2", "--access-log", "off", "--kafka-brokers", mk.bootstrap};
    int n = 6;
    for (int i = 0; extra && extra[i]; i++)
        args[n++] = extra[i];
    args[n] = NULL;
    rp_must_start(&srv, args);
    memset(c, 0, sizeof(*c));
    pc_init(&c->pc, srv.port);
}

/* ---- tests --------------------------------------------------------------------------------- */

/* The whole lifecycle over 40 merchants on both shards: every event, once, in order. */
static void test_end_to_end(void **state)
{
    struct client c;
    start_both(&c, NULL);
    for (int i = 0; i < 150; i++)
        lifecycle(&c, i, 40, true);
    wait_drained(srv.port, DRAIN_MS);
    consume_all(mk.bootstrap);
    size_t dups = verify();
    assert_int_equal(dups, 0); /* idempotent producer, no failures: exactly once */
    assert_true(rp_scrape(srv.port, "ringpay_replication_delivered_total", NULL) == nchanges);
    pc_close(&c.pc);
}

static int outage_s(void)
{
    const char *e = getenv("RINGPAY_KAFKA_OUTAGE_S");
    int s = e ? atoi(e) : 5;
    return s > 0 ? s : 5;
}

/* Every broker down in the middle of load: every request is still answered, the backlog
 * grows and /metrics says so; once the brokers return every event arrives. */
static void test_outage(void **state)
{
    struct client c;
    start_both(&c, NULL);
    int i = 0;
    for (; i < 40; i++)
        lifecycle(&c, i, 16, true);
    mock_cmd(&mk, "down");
    int64_t until = rp_now_ms() + outage_s() * 1000;
    while (rp_now_ms() < until)
        lifecycle(&c, i++, 16, true);
    double backlog = rp_scrape(srv.port, "ringpay_replication_backlog_events", NULL);
    double bytes = rp_scrape(srv.port, "ringpay_replication_backlog_bytes", NULL);
    double up = rp_scrape(srv.port, "ringpay_replication_producer_up", NULL);
    print_message("  outage of %d s: %zu changes answered, backlog %.0f events, %.0f bytes, "
                  "producers up %.0f\n",
                  outage_s(), nchanges, backlog, bytes, up);
    assert_true(backlog > 0 && bytes > backlog * 100);
    assert_true(up == 0);
    assert_true(rp_scrape(srv.port, "ringpay_replication_errors_total",
                          (const char *const[]){"kind=\"transport\"", NULL}) > 0);
    mock_cmd(&mk, "up");
    int64_t t0 = rp_now_ms();
    for (int k = 0; k < 20; k++)
        lifecycle(&c, i++, 16, true);
    wait_drained(srv.port, DRAIN_MS);
    print_message("  drained %.0f events in %lld ms after the brokers returned\n", backlog,
                  (long long)(rp_now_ms() - t0));
    consume_all(mk.bootstrap);
    verify();
    pc_close(&c.pc);
}

/* kill -9 while events are in flight; the restart resends from the stored mark:
 * duplicates only, no gaps, nothing lost. */
static void test_kill9_resumes_from_the_mark(void **state)
{
    struct client c;
    start_both(&c, NULL);
    int i = 0;
    for (; i < 30; i++)
        lifecycle(&c, i, 12, true);
    wait_drained(srv.port, DRAIN_MS);
    double stored_before = rp_scrape(srv.port, "ringpay_replication_mark_stored", NULL);
    mock_cmd(&mk, "rtt 400"); /* deliveries slow down: events are in flight at the kill */
    for (int k = 0; k < 30; k++)
        lifecycle(&c, i++, 12, true);
    double backlog = rp_scrape(srv.port, "ringpay_replication_backlog_events", NULL);
    double sent = rp_scrape(srv.port, "ringpay_replication_sent_total", NULL);
    double delivered = rp_scrape(srv.port, "ringpay_replication_delivered_total", NULL);
    double committed = rp_scrape(srv.port, "ringpay_replication_event_seq", NULL);
    double stored = rp_scrape(srv.port, "ringpay_replication_mark_stored", NULL);
    assert_int_equal(rp_server_signal(&srv, SIGKILL), 0);
    assert_int_equal(rp_server_wait(&srv, RP_STOP_TIMEOUT_MS), 128 + SIGKILL);
    print_message("  killed with a backlog of %.0f events (%.0f sent, %.0f delivered; "
                  "%.0f stored as replicated before the load)\n",
                  backlog, sent, delivered, stored_before);
    assert_true(backlog > 0);
    mock_cmd(&mk, "rtt 0");
    const char *args[] = {"--cores",    "2", "--access-log", "off", "--kafka-brokers",
                          mk.bootstrap, NULL};
    assert_int_equal(pc_server_restart(&srv, args), 0);
    pc_close(&c.pc);
    pc_init(&c.pc, srv.port);
    for (int k = 0; k < 10; k++)
        lifecycle(&c, i++, 12, true);
    wait_drained(srv.port, DRAIN_MS);
    consume_all(mk.bootstrap);
    size_t dups = verify();
    print_message("  after the restart: %zu duplicates, no gap\n", dups);
    /* Only events above the stored mark can be sent twice (the mark stored at the kill
     * is at least the one scraped before it). */
    assert_true((double)dups <= committed - stored);
    pc_close(&c.pc);
}

/* Authorizes for merchant m until an answer is not 201 (at most max tries). */
static int authorize_until_refused(struct client *c, const char *m, int max)
{
    char body[128];
    snprintf(body, sizeof(body), "{\"merchant_id\":\"%s\",\"amount\":500,\"currency\":\"KRW\"}", m);
    for (int k = 0; k < max; k++) {
        int st = post(c, "/v1/payments/authorize", body, "payment.authorized", m, NULL, 0);
        if (st != 201)
            return st;
    }
    return 201;
}

static int status_of(int port, const char *path)
{
    struct rp_response r;
    if (rp_request(port, "GET", path, NULL, NULL, &r) != 0)
        return -1;
    int st = r.status;
    if (st == 503)
        assert_non_null(rp_header(&r, "Retry-After"));
    rp_response_free(&r);
    return st;
}

/* Both shards' merchants: the first merchant of each shard among kt-b0, kt-b1, ... */
static void merchants_per_shard(char m[NSHARDS][32])
{
    bool found[NSHARDS] = {false};
    for (int k = 0, left = NSHARDS; left > 0; k++) {
        char name[32];
        snprintf(name, sizeof(name), "kt-b%d", k);
        unsigned s = pc_shard_of(name, NSHARDS);
        if (!found[s]) {
            found[s] = true;
            snprintf(m[s], 32, "%s", name);
            left--;
        }
    }
}

/* Past the backlog bound: 503 overloaded with Retry-After for state changes on that
 * shard, /readyz 503, reads still served, the other shard still takes changes; both
 * recover by themselves when Kafka returns and the backlog drains. */
static void backlog_bound(const char *const extra[], int max_tries)
{
    struct client c;
    start_both(&c, extra);
    char m[NSHARDS][32];
    merchants_per_shard(m);
    char pay_id[40];
    char body[128];
    snprintf(body, sizeof(body), "{\"merchant_id\":\"%s\",\"amount\":700,\"currency\":\"KRW\"}",
             m[0]);
    assert_int_equal(post(&c, "/v1/payments/authorize", body, "payment.authorized", m[0], pay_id,
                          sizeof(pay_id)),
                     201);
    wait_drained(srv.port, DRAIN_MS);
    assert_int_equal(status_of(srv.port, "/readyz"), 200);
    mock_cmd(&mk, "down");
    assert_int_equal(authorize_until_refused(&c, m[0], max_tries), 503);
    assert_int_equal(c.refused, 1);
    assert_int_equal(c.retry_after_ok, 1);
    assert_int_equal(status_of(srv.port, "/readyz"), 503);
    char path[96];
    snprintf(path, sizeof(path), "/v1/payments/%s", pay_id);
    assert_int_equal(status_of(srv.port, path), 200);
    snprintf(path, sizeof(path), "/v1/payments/%s/capture", pay_id);
    assert_int_equal(post(&c, path, "{}", "payment.captured", m[0], NULL, 0), 503);
    assert_int_equal(c.retry_after_ok, 2);
    /* The other shard's backlog is within its bound. */
    assert_int_equal(authorize_until_refused(&c, m[1], 1), 201);
    assert_true(rp_scrape(srv.port, "ringpay_replication_overloaded", NULL) == 1);
    assert_true(rp_scrape(srv.port, "ringpay_replication_refused_total", NULL) == 2);
    mock_cmd(&mk, "up");
    int64_t deadline = rp_now_ms() + DRAIN_MS;
    while (status_of(srv.port, "/readyz") != 200) {
        assert_true(rp_now_ms() < deadline);
        rp_sleep_ms(50);
    }
    assert_int_equal(post(&c, path, "{}", "payment.captured", m[0], NULL, 0), 200);
    wait_drained(srv.port, DRAIN_MS);
    consume_all(mk.bootstrap);
    verify();
    pc_close(&c.pc);
}

static void test_backlog_bound_events(void **state)
{
    static const char *const extra[] = {"--replication-backlog-events", "12", NULL};
    backlog_bound(extra, 40);
}

static void test_backlog_bound_bytes(void **state)
{
    /* An authorization's event is ~450 bytes: the bound is passed at the 5th. */
    static const char *const extra[] = {"--replication-backlog-bytes", "2000", NULL};
    backlog_bound(extra, 40);
}

/*
 * Produce requests failing: retriable errors (librdkafka retries, in order) and one that
 * fails a batch for good (the gapless guarantee makes it fatal: the producer is
 * recreated and resends from the mark). Nothing is lost.
 *
 * One produce request in flight per broker connection: librdkafka's idempotent producer
 * takes a later request's success as proof that an earlier failed one of the same
 * partition was persisted too ("implicit ack"), which holds against a real broker (it
 * refuses a sequence gap with OUT_OF_ORDER_SEQUENCE_NUMBER), but librdkafka's mock
 * cluster checks sequences only for transactional producers: with requests pipelined,
 * an injected error on the first and a success on the second lose the first's messages
 * in the mock alone (seen here: 1 or 2 events in 120). Production keeps librdkafka's 5.
 */
static void test_produce_errors(void **state)
{
    struct client c;
    static const char *const one_in_flight[] = {"--kafka-conf",
                                                "max.in.flight.requests.per.connection=1", NULL};
    start_both(&c, one_in_flight);
    int i = 0;
    for (; i < 10; i++)
        lifecycle(&c, i, 10, true);
    mock_cmd(&mk, "errors 0 19 6"); /* NOT_ENOUGH_REPLICAS */
    mock_cmd(&mk, "errors 0 7 3");  /* REQUEST_TIMED_OUT */
    mock_cmd(&mk, "errors 0 6 3");  /* NOT_LEADER_FOR_PARTITION */
    for (int k = 0; k < 30; k++)
        lifecycle(&c, i++, 10, true);
    wait_drained(srv.port, DRAIN_MS);
    assert_true(rp_scrape(srv.port, "ringpay_replication_producer_recreated_total", NULL) == 0);
    mock_cmd(&mk, "errors 0 29 1"); /* TOPIC_AUTHORIZATION_FAILED: for good */
    for (int k = 0; k < 30; k++)
        lifecycle(&c, i++, 10, true);
    wait_drained(srv.port, DRAIN_MS);
    double recreated = rp_scrape(srv.port, "ringpay_replication_producer_recreated_total", NULL);
    print_message("  producers recreated: %.0f\n", recreated);
    assert_true(recreated >= 1);
    consume_all(mk.bootstrap);
    verify();
    pc_close(&c.pc);
}

/* Without --kafka-brokers: the embedded cluster; its address is in the start-up line. */
static void test_embedded_default(void **state)
{
    changes_reset();
    events_reset();
    const char *args[] = {"--cores", "2", "--access-log", "off", NULL};
    rp_must_start(&srv, args);
    /* /healthz may answer before the start-up line is written: wait for it. */
    static char log[65536];
    const char *line = NULL;
    for (int64_t deadline = rp_now_ms() + 10000; line == NULL; rp_sleep_ms(20)) {
        assert_true(rp_now_ms() < deadline);
        int fd = open(srv.log_path, O_RDONLY);
        assert_true(fd >= 0);
        ssize_t n = read(fd, log, sizeof(log) - 1);
        close(fd);
        log[n > 0 ? n : 0] = '\0';
        line = strstr(log, "in memory only") ? strstr(log, "\"msg\":\"listening\"") : NULL;
    }
    const char *k = strstr(line, "\"kafka\":\"");
    assert_non_null(k);
    char addr[512];
    snprintf(addr, sizeof(addr), "%.*s", (int)strcspn(k + 9, "\""), k + 9);
    assert_true(strlen(addr) > 10);
    struct client c = {0};
    pc_init(&c.pc, srv.port);
    for (int i = 0; i < 25; i++)
        lifecycle(&c, i, 5, true);
    wait_drained(srv.port, DRAIN_MS);
    consume_all(addr);
    assert_int_equal(verify(), 0);
    pc_close(&c.pc);
}

int main(void)
{
    const char *filter = getenv("RINGPAY_KAFKA_TESTS");
    if (filter)
        cmocka_set_test_filter(filter);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_end_to_end, teardown),
        cmocka_unit_test_teardown(test_outage, teardown),
        cmocka_unit_test_teardown(test_kill9_resumes_from_the_mark, teardown),
        cmocka_unit_test_teardown(test_backlog_bound_events, teardown),
        cmocka_unit_test_teardown(test_backlog_bound_bytes, teardown),
        cmocka_unit_test_teardown(test_produce_errors, teardown),
        cmocka_unit_test_teardown(test_embedded_default, teardown),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
