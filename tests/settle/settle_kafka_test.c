/*
 * The back office end to end (SPEC §5, issue 9): the real engine (`ringpay serve --cores
 * 2`) replicates to a Kafka-protocol cluster in its own process (rp_mock_kafka,
 * tests/kafka), and the real `ringpay settle` consumes it in its consumer group.
 *
 * One run, in steps, every wait bounded:
 *  1. traffic over 8 merchants and two currencies: authorizations, full and partial
 *     captures, voids, one or two partial refunds; then every batch settle shows must
 *     equal the sums computed independently from the engine's ledger
 *     (GET /v1/merchants/{id}/ledger: pending->available postings are captures,
 *     available->clearing postings refunds), counts included;
 *  2. more traffic, and settle killed with SIGKILL while it consumes it, then
 *     restarted on the same data: the totals equal the ledger again (nothing counted
 *     twice, nothing lost: offsets and totals are committed together);
 *  3. a slice of payment.captured produced again (duplicates at new offsets): the
 *     totals do not move and settle reports the duplicates;
 *  4. a poison message in payment.captured, then more traffic in the same partition:
 *     the poison is in payment.dlq with its reason, and the events after it count;
 *  5. POST /v1/settlements/close for today: settlement.closed holds one event per batch
 *     after removing duplicates by event_id, each with the batch's final totals;
 *  6. a bank statement naming a payment whose capture settle has not seen yet: the
 *     unmatched lines on recon.unmatched, then the capture, and a rematch matches it.
 *
 * kcat does the producing and raw consuming (tests/settle/kcat.h), rp_mock_kafka is
 * driven by tests/kafka's kafka_client.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "kafka_client.h"
#include "kcat.h"
#include "pay_client.h"

#define MERCHANTS 8
#define WAIT_MS   30000

static struct kc_mock mk;
static struct rp_server eng, st, sb;
static struct rp_server *settle_srv = &st; /* the settle the checks ask */
static struct pc_conn pc;
static const char *const currencies[2] = {"EUR", "KRW"};

/* ---- traffic ---------------------------------------------------------------------- */

static void merchant_name(int i, char out[16])
{
    snprintf(out, 16, "m-%d", i);
}

static void post_ok(const char *path, const char *key, const char *body, char *id_out)
{
    struct rp_response r;
    assert_int_equal(pc_call(&pc, "POST", path, key, body, &r), 0);
    if (r.status != 200 && r.status != 201)
        fail_msg("%s: %d %s", path, r.status, r.body);
    if (id_out)
        assert_true(pc_body_str(r.body, "id", id_out, 32));
    rp_response_free(&r);
}

/* One payment's life, chosen by n: captured fully or partially, or voided; refunds. */
static void payment(int merchant, int cur, int n, const char *tag)
{
    char m[16], key[64], body[256], id[32], path[96];
    merchant_name(merchant, m);
    long amount = 1000 + 37 * n + 11 * merchant;
    snprintf(key, sizeof(key), "%s-a-%d-%d-%d", tag, merchant, cur, n);
    snprintf(body, sizeof(body), "{\"merchant_id\":\"%s\",\"amount\":%ld,\"currency\":\"%s\"}", m,
             amount, currencies[cur]);
    post_ok("/v1/payments/authorize", key, body, id);
    snprintf(key, sizeof(key), "%s-c-%d-%d-%d", tag, merchant, cur, n);
    if (n % 4 == 1) {
        snprintf(path, sizeof(path), "/v1/payments/%s/void", id);
        post_ok(path, key, NULL, NULL);
        return;
    }
    snprintf(path, sizeof(path), "/v1/payments/%s/capture", id);
    long captured = n % 3 == 0 ? amount - 100 : amount;
    snprintf(body, sizeof(body), "{\"amount\":%ld}", captured);
    post_ok(path, key, body, NULL);
    snprintf(path, sizeof(path), "/v1/payments/%s/refund", id);
    for (int k = 0; k < (n % 2 == 0) + (n % 5 == 0); k++) {
        snprintf(key, sizeof(key), "%s-r%d-%d-%d-%d", tag, k, merchant, cur, n);
        snprintf(body, sizeof(body), "{\"amount\":%d}", 50 + 30 * k);
        post_ok(path, key, body, NULL);
    }
}

static void traffic(const char *tag, int per_pair)
{
    for (int n = 0; n < per_pair; n++)
        for (int mi = 0; mi < MERCHANTS; mi++)
            for (int c = 0; c < 2; c++)
                payment(mi, c, n, tag);
}

/* ---- what the engine's ledger says, and what settle says ---------------------------- */

struct sums {
    long long gross, refunds, captures, refund_count;
};

/* Today's sums of every (merchant, currency) from the engine's ledger. */
static void ledger_sums(struct sums out[MERCHANTS][2])
{
    static struct pc_entry e[20000];
    memset(out, 0, sizeof(struct sums) * MERCHANTS * 2);
    for (int mi = 0; mi < MERCHANTS; mi++) {
        char m[16];
        merchant_name(mi, m);
        int n = 0;
        assert_int_equal(pc_ledger_all(&pc, m, 1000, e, 20000, &n), 0);
        for (int i = 0; i < n; i++) {
            int c = strcmp(e[i].currency, "EUR") == 0 ? 0 : 1;
            if (strcmp(e[i].debit, "pending") == 0 && strcmp(e[i].credit, "available") == 0) {
                out[mi][c].gross += e[i].amount;
                out[mi][c].captures++;
            } else if (strcmp(e[i].debit, "available") == 0 &&
                       strcmp(e[i].credit, "clearing") == 0) {
                out[mi][c].refunds += e[i].amount;
                out[mi][c].refund_count++;
            }
        }
    }
}

static void today(char out[11])
{
    time_t t = time(NULL);
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

/* settle's batch of (merchant, currency, today): false when it has none yet. */
static bool settle_batch(int mi, int c, struct sums *s, bool *closed)
{
    char d[11], path[128], m[16];
    today(d);
    merchant_name(mi, m);
    snprintf(path, sizeof(path), "/v1/settlements/stl_%.4s%.2s%.2s_%s_%s", d, d + 5, d + 8,
             currencies[c], m);
    struct rp_response r;
    assert_int_equal(rp_request(settle_srv->port, "GET", path, NULL, NULL, &r), 0);
    bool ok = r.status == 200;
    if (ok) {
        long long adj;
        assert_true(pc_body_int(r.body, "gross", &s->gross));
        assert_true(pc_body_int(r.body, "refunds", &s->refunds));
        assert_true(pc_body_int(r.body, "capture_count", &s->captures));
        assert_true(pc_body_int(r.body, "refund_count", &s->refund_count));
        assert_true(pc_body_int(r.body, "adjustments", &adj));
        assert_int_equal(adj, 0);
        if (closed)
            *closed = strstr(r.body, "\"status\":\"closed\"") != NULL;
    }
    rp_response_free(&r);
    return ok;
}

/* Waits until every batch equals the ledger; fails with the first difference. */
static void expect_settle_equals_ledger(void)
{
    struct sums want[MERCHANTS][2];
    ledger_sums(want);
    char diff[256] = "";
    for (int64_t deadline = rp_now_ms() + WAIT_MS;; rp_sleep_ms(100)) {
        diff[0] = '\0';
        for (int mi = 0; mi < MERCHANTS && !diff[0]; mi++)
            for (int c = 0; c < 2 && !diff[0]; c++) {
                struct sums got = {0};
                const struct sums *w = &want[mi][c];
                bool have = settle_batch(mi, c, &got, NULL);
                if (!have || got.gross != w->gross || got.refunds != w->refunds ||
                    got.captures != w->captures || got.refund_count != w->refund_count)
                    snprintf(diff, sizeof(diff),
                             "m-%d %s: settle gross %lld refunds %lld counts %lld/%lld, ledger "
                             "%lld %lld %lld/%lld",
                             mi, currencies[c], got.gross, got.refunds, got.captures,
                             got.refund_count, w->gross, w->refunds, w->captures, w->refund_count);
            }
        if (!diff[0])
            return;
        if (rp_now_ms() > deadline) {
            rp_server_dump_log(settle_srv, 4096);
            fail_msg("settle does not match the ledger: %s", diff);
        }
    }
}

/* rp_mock_kafka, then the engine (--cores cores) replicating to it, and pc on it. */
static void start_kafka_and_engine(const char *cores)
{
    assert_int_equal(kc_mock_start(&mk, RP_MOCK_KAFKA), 0);
    const char *eargs[] = {"--cores",    cores, "--access-log", "off", "--kafka-brokers",
                           mk.bootstrap, NULL};
    rp_must_start(&eng, eargs);
    pc_init(&pc, eng.port);
}

/* ---- settle ----------------------------------------------------------------------- */

static void settle_start(void)
{
    /* A killed member holds its partitions until its session times out: keep it short. */
    const char *args[] = {"--kafka-brokers",
                          mk.bootstrap,
                          "--access-log",
                          "off",
                          "--close-poll-ms",
                          "200",
                          "--kafka-conf",
                          "session.timeout.ms=3000;heartbeat.interval.ms=300",
                          NULL};
    if (rp_server_respawn(&st, "settle", args, NULL) != 0)
        fail_msg("settle did not start");
}

static double settle_metric(const char *name, const char *label)
{
    const char *labels[] = {label, NULL};
    return rp_scrape(st.port, name, label ? labels : NULL);
}

/* ---- the test ---------------------------------------------------------------------- */

static void test_end_to_end(void **state)
{
    (void)state;
    start_kafka_and_engine("2");
    assert_int_equal(rp_server_prepare(&st), 0);
    settle_start();

    /* 1. A day of traffic: settle equals the ledger. */
    traffic("w1", 3);
    expect_settle_equals_ledger();

    /* 2. kill -9 while consuming, restart on the same data. */
    traffic("w2a", 2); /* settle is still consuming the last of these when it dies */
    assert_int_equal(rp_server_signal(&st, SIGKILL), 0);
    assert_int_equal(rp_server_wait(&st, RP_STOP_TIMEOUT_MS), 128 + SIGKILL);
    traffic("w2b", 2); /* and these arrive while it is down */
    settle_start();
    expect_settle_equals_ledger();

    /* 3. A slice of payment.captured again, at new offsets. */
    struct kcat_msg *msgs = NULL;
    size_t n = 0;
    assert_int_equal(kcat_consume(mk.bootstrap, "payment.captured", 20000, &msgs, &n), 0);
    assert_true(n >= 20);
    for (size_t i = 0; i < 20; i++)
        assert_int_equal(kcat_produce(mk.bootstrap, "payment.captured", msgs[i].key, msgs[i].value),
                         0);
    kcat_free(msgs, n);
    for (int64_t d = rp_now_ms() + WAIT_MS;; rp_sleep_ms(100)) {
        if (settle_metric("ringpay_settle_events_total", "outcome=\"duplicate\"") >= 20)
            break;
        if (rp_now_ms() > d)
            fail_msg("settle did not see the 20 duplicates");
    }
    expect_settle_equals_ledger();

    /* 4. Poison, then more events in every partition. */
    assert_int_equal(kcat_produce(mk.bootstrap, "payment.captured", "m-0", "this is not json"), 0);
    traffic("w3", 1);
    expect_settle_equals_ledger();
    for (int64_t d = rp_now_ms() + WAIT_MS;; rp_sleep_ms(200)) {
        msgs = NULL;
        n = 0;
        assert_int_equal(kcat_consume(mk.bootstrap, "payment.dlq", 20000, &msgs, &n), 0);
        bool found = n == 1 && strcmp(msgs[0].value, "this is not json") == 0 &&
                     strcmp(msgs[0].key, "m-0") == 0;
        kcat_free(msgs, n);
        if (found)
            break;
        if (rp_now_ms() > d)
            fail_msg("the poison message is not in payment.dlq (%zu messages)", n);
    }
    struct rp_response dr;
    assert_int_equal(rp_request(st.port, "GET", "/v1/dead-letters", NULL, NULL, &dr), 0);
    assert_int_equal(dr.status, 200);
    assert_non_null(strstr(dr.body, "\"topic\":\"payment.captured\""));
    assert_non_null(strstr(dr.body, "\"key\":\"m-0\""));
    assert_non_null(strstr(dr.body, "\"value\":\"this is not json\"}],\"next_after\":null}"));
    rp_response_free(&dr);

    /* 5. Close today: one settlement.closed per batch, with its final totals. */
    char d[11], body[64];
    today(d);
    snprintf(body, sizeof(body), "{\"date\":\"%s\"}", d);
    const char *h[] = {"Idempotency-Key: close-1", "Content-Type: application/json", NULL};
    struct rp_response r;
    assert_int_equal(rp_request(st.port, "POST", "/v1/settlements/close", h, body, &r), 0);
    assert_int_equal(r.status, 200);
    assert_non_null(strstr(r.body, "\"batches_closed\":16"));
    rp_response_free(&r);
    for (int64_t dl = rp_now_ms() + WAIT_MS;; rp_sleep_ms(200)) {
        msgs = NULL;
        n = 0;
        assert_int_equal(kcat_consume(mk.bootstrap, "settlement.closed", 20000, &msgs, &n), 0);
        size_t distinct = kcat_distinct_event_ids(msgs, n);
        bool keyed = true;
        for (size_t i = 0; i < n; i++)
            keyed = keyed && strncmp(msgs[i].key, "m-", 2) == 0 &&
                    strstr(msgs[i].value, "\"status\":\"closed\"") != NULL;
        kcat_free(msgs, n);
        assert_true(keyed);
        if (distinct == 2 * MERCHANTS)
            break;
        if (rp_now_ms() > dl)
            fail_msg("settlement.closed has %zu distinct batches, want %d", distinct,
                     2 * MERCHANTS);
    }
    for (int mi = 0; mi < MERCHANTS; mi++)
        for (int c = 0; c < 2; c++) {
            struct sums s;
            bool closed = false;
            assert_true(settle_batch(mi, c, &s, &closed));
            assert_true(closed);
        }

    /* Closed batches keep the totals that matched the ledger. */
    expect_settle_equals_ledger();

    /* 6. A statement names a payment whose capture settle has not seen: unknown, and on
     * recon.unmatched with the other unmatched lines; after the capture arrives, a
     * rematch matches it. */
    char pay[32], csv[512];
    post_ok("/v1/payments/authorize", "bank-auth",
            "{\"merchant_id\":\"m-0\",\"amount\":4242,\"currency\":\"EUR\"}", pay);
    snprintf(csv, sizeof(csv),
             "transaction_id,amount,currency,value_date\n%s,4242,EUR,%s\n"
             "pay_0000000000000fffff,100,EUR,%s\npay_x,1.5,EUR,%s\n",
             pay, d, d, d);
    const char *hc[] = {"Idempotency-Key: bank-1", "Content-Type: text/csv", NULL};
    assert_int_equal(rp_request(st.port, "POST", "/v1/reconciliation/files", hc, csv, &r), 0);
    assert_int_equal(r.status, 201);
    assert_non_null(strstr(r.body, "\"unknown_transaction\":2,"));
    char file[32];
    assert_true(pc_body_str(r.body, "id", file, sizeof(file)));
    /* every other payment captured today is missing_in_bank: one item each */
    const char *mp = strstr(r.body, "\"missing_in_bank\":");
    assert_non_null(mp);
    size_t missing = (size_t)atol(mp + strlen("\"missing_in_bank\":"));
    assert_true(missing > 0);
    rp_response_free(&r);
    for (int64_t dl = rp_now_ms() + WAIT_MS;; rp_sleep_ms(200)) {
        msgs = NULL;
        n = 0;
        assert_int_equal(kcat_consume(mk.bootstrap, "recon.unmatched", 20000, &msgs, &n), 0);
        size_t unknown = 0, malformed = 0, gone = 0;
        for (size_t i = 0; i < n; i++) {
            unknown += strstr(msgs[i].value, "\"category\":\"unknown_transaction\"") != NULL;
            malformed += strstr(msgs[i].value, "\"category\":\"malformed\"") != NULL;
            gone += strstr(msgs[i].value, "\"category\":\"missing_in_bank\"") != NULL;
        }
        kcat_free(msgs, n);
        if (n == 3 + missing && unknown == 2 && malformed == 1 && gone == missing)
            break;
        if (rp_now_ms() > dl)
            fail_msg("recon.unmatched has %zu messages, want 3 lines and %zu missing", n, missing);
    }
    char path[96];
    snprintf(path, sizeof(path), "/v1/payments/%s/capture", pay);
    post_ok(path, "bank-cap", NULL, NULL);
    snprintf(path, sizeof(path), "/v1/reconciliation/files/%s/rematch", file);
    /* each attempt is a new request: the same key would replay the first answer */
    char hk[48];
    const char *hr[] = {hk, NULL};
    for (int64_t dl = rp_now_ms() + WAIT_MS, i = 0;; rp_sleep_ms(100)) {
        snprintf(hk, sizeof(hk), "Idempotency-Key: rematch-%lld", (long long)++i);
        assert_int_equal(rp_request(st.port, "POST", path, hr, "", &r), 0);
        assert_int_equal(r.status, 200);
        bool matched = strstr(r.body, "\"matched\":1,") != NULL &&
                       strstr(r.body, "\"unknown_transaction\":1,") != NULL;
        rp_response_free(&r);
        if (matched)
            break;
        if (rp_now_ms() > dl)
            fail_msg("the rematch never matched the late capture");
    }
    pc_close(&pc);
    assert_int_equal(rp_server_stop(&st), 0);
    assert_int_equal(rp_server_stop(&eng), 0);
    kc_mock_stop(&mk);
}

/* "YYYY-MM-DD" of today + days (UTC), and the batch id of (merchant, EUR) on it. */
static void date_plus(int days, char out[11])
{
    time_t t = time(NULL) + (time_t)days * 86400;
    struct tm tm;
    gmtime_r(&t, &tm);
    strftime(out, 11, "%Y-%m-%d", &tm);
}

static void batch_path(const char *d, const char *merchant, char *out, size_t cap)
{
    snprintf(out, cap, "/v1/settlements/stl_%.4s%.2s%.2s_EUR_%s", d, d + 5, d + 8, merchant);
}

/* GET path until its body holds `want` (bounded); returns the body (malloc'd). */
static char *wait_body(const char *path, const char *want)
{
    for (int64_t dl = rp_now_ms() + WAIT_MS;; rp_sleep_ms(100)) {
        struct rp_response r;
        assert_int_equal(rp_request(st.port, "GET", path, NULL, NULL, &r), 0);
        if (r.status == 200 && strstr(r.body, want)) {
            char *b = strdup(r.body);
            rp_response_free(&r);
            return b;
        }
        if (rp_now_ms() > dl)
            fail_msg("%s never held %s: %d %s", path, want, r.status, r.body);
        rp_response_free(&r);
    }
}

/*
 * Cutoff, grace and late events with settle's clock a day ahead
 * (RINGPAY_SETTLE_TEST_CLOCK: tomorrow 00:20 UTC, past today's end plus 10 minutes of
 * grace). The first capture is counted in today's batch, then the timer closes today
 * (once consumption caught up); every later event of today is late: one adjustment of
 * the merchant's next open batch, tomorrow's, which it creates. Today's batch stays
 * final.
 */
static void test_late_events_adjust(void **state)
{
    (void)state;
    start_kafka_and_engine("1");
    char id[32], td[11], tm[11], path[128], env[64];
    post_ok("/v1/payments/authorize", "l-a0",
            "{\"merchant_id\":\"late-0\",\"amount\":1000,\"currency\":\"EUR\"}", id);
    snprintf(path, sizeof(path), "/v1/payments/%s/capture", id);
    post_ok(path, "l-c0", NULL, NULL);

    date_plus(0, td);
    date_plus(1, tm);
    snprintf(env, sizeof(env), "RINGPAY_SETTLE_TEST_CLOCK=%sT00:20:00.000Z", tm);
    const char *senv[] = {env, NULL};
    const char *args[] = {
        "--kafka-brokers", mk.bootstrap, "--access-log", "off", "--close-poll-ms", "200", NULL};
    assert_int_equal(rp_server_prepare(&st), 0);
    assert_int_equal(rp_server_respawn(&st, "settle", args, senv), 0);
    batch_path(td, "late-0", path, sizeof(path));
    free(wait_body(path, "\"status\":\"closed\""));

    /* Late: 2500 + 700 captured, 200 refunded, on a closed date. */
    static const struct {
        const char *m;
        int amount, refund;
    } late[] = {{"late-0", 2500, 200}, {"late-1", 700, 0}};
    for (size_t i = 0; i < 2; i++) {
        char key[32], body[128], p2[96];
        snprintf(key, sizeof(key), "l-a%zu", i + 1);
        snprintf(body, sizeof(body), "{\"merchant_id\":\"%s\",\"amount\":%d,\"currency\":\"EUR\"}",
                 late[i].m, late[i].amount);
        post_ok("/v1/payments/authorize", key, body, id);
        snprintf(key, sizeof(key), "l-c%zu", i + 1);
        snprintf(p2, sizeof(p2), "/v1/payments/%s/capture", id);
        post_ok(p2, key, NULL, NULL);
        if (late[i].refund) {
            snprintf(key, sizeof(key), "l-r%zu", i + 1);
            snprintf(body, sizeof(body), "{\"amount\":%d}", late[i].refund);
            snprintf(p2, sizeof(p2), "/v1/payments/%s/refund", id);
            post_ok(p2, key, body, NULL);
        }
    }
    char tomorrow0[128], tomorrow1[128];
    batch_path(tm, "late-0", tomorrow0, sizeof(tomorrow0));
    batch_path(tm, "late-1", tomorrow1, sizeof(tomorrow1));
    char *b = wait_body(tomorrow0, "\"adjustments\":2300,");
    assert_non_null(strstr(b, "\"gross\":0,\"refunds\":0,"));
    assert_non_null(strstr(b, "\"net\":2300,"));
    assert_non_null(strstr(b, "\"status\":\"open\""));
    free(b);
    free(wait_body(tomorrow1, "\"adjustments\":700,"));
    /* Today's batch stayed final. */
    b = wait_body(path, "\"status\":\"closed\"");
    assert_non_null(strstr(b, "\"gross\":1000,\"refunds\":0,\"adjustments\":0,\"net\":1000"));
    free(b);
    pc_close(&pc);
    assert_int_equal(rp_server_stop(&st), 0);
    assert_int_equal(rp_server_stop(&eng), 0);
    kc_mock_stop(&mk);
}

/* The "event_id" of a message's JSON value into out ("" when it has none). */
static void event_id_of(const char *v, char out[96])
{
    out[0] = '\0';
    const char *p = strstr(v, "\"event_id\":\"");
    if (p == NULL)
        return;
    p += strlen("\"event_id\":\"");
    size_t n = strcspn(p, "\"");
    snprintf(out, 96, "%.*s", (int)(n < 95 ? n : 95), p);
}

/* Waits until settlement.closed holds `want` distinct batches, and checks that the
 * copies of one batch (at least once: a publisher that died may have sent some twice)
 * are the same message. */
static void expect_closed_once(int want)
{
    for (int64_t dl = rp_now_ms() + WAIT_MS;; rp_sleep_ms(200)) {
        struct kcat_msg *msgs = NULL;
        size_t n = 0;
        assert_int_equal(kcat_consume(mk.bootstrap, "settlement.closed", 20000, &msgs, &n), 0);
        size_t distinct = kcat_distinct_event_ids(msgs, n);
        for (size_t i = 0; i < n; i++)
            for (size_t j = 0; j < i; j++) {
                char a[96], b[96];
                event_id_of(msgs[i].value, a);
                event_id_of(msgs[j].value, b);
                assert_true(a[0] != '\0');
                if (strcmp(a, b) == 0 && strcmp(msgs[i].value, msgs[j].value) != 0)
                    fail_msg("batch %s published twice with different content", a);
            }
        kcat_free(msgs, n);
        if (distinct == (size_t)want)
            return;
        if (rp_now_ms() > dl)
            fail_msg("settlement.closed has %zu distinct batches, want %d", distinct, want);
    }
}

/* POST /v1/settlements/close for today to the settle on port, with key. */
static void close_today(int port, const char *key)
{
    char d[11], body[64], kh[96];
    today(d);
    snprintf(body, sizeof(body), "{\"date\":\"%s\"}", d);
    snprintf(kh, sizeof(kh), "Idempotency-Key: %s", key);
    const char *h[] = {kh, "Content-Type: application/json", NULL};
    struct rp_response r;
    assert_int_equal(rp_request(port, "POST", "/v1/settlements/close", h, body, &r), 0);
    assert_int_equal(r.status, 200);
    rp_response_free(&r);
}

/*
 * Two settle processes in one group: B runs with --standby on A's data directory (it
 * serves /healthz, /readyz answers 503). A is killed with SIGKILL in the middle of the
 * traffic; B takes the directory over, joins the group (a rebalance once A's session
 * expires) and resumes from the offsets A committed with its totals: every batch
 * equals the ledger, and closing publishes one settlement.closed per batch.
 */
static void test_standby_takes_over(void **state)
{
    (void)state;
    settle_srv = &st;
    start_kafka_and_engine("2");
    assert_int_equal(rp_server_prepare(&st), 0);
    settle_start();
    assert_int_equal(rp_server_prepare(&sb), 0);
    const char *bargs[] = {"--kafka-brokers", mk.bootstrap,
                           "--access-log",    "off",
                           "--kafka-conf",    "session.timeout.ms=3000;heartbeat.interval.ms=300",
                           "--standby",       "--data",
                           st.data_dir,       NULL};
    assert_int_equal(rp_server_respawn(&sb, "settle", bargs, NULL), 0);
    struct rp_response r;
    assert_int_equal(rp_request(sb.port, "GET", "/readyz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 503);
    rp_response_free(&r);
    assert_int_equal(rp_request(sb.port, "GET", "/v1/settlements", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 503);
    rp_response_free(&r);

    traffic("s1", 2);
    expect_settle_equals_ledger();
    traffic("s2a", 1);
    assert_int_equal(rp_server_signal(&st, SIGKILL), 0);
    assert_int_equal(rp_server_wait(&st, RP_STOP_TIMEOUT_MS), 128 + SIGKILL);
    traffic("s2b", 1);
    settle_srv = &sb;
    for (int64_t dl = rp_now_ms() + WAIT_MS;; rp_sleep_ms(50)) {
        assert_int_equal(rp_request(sb.port, "GET", "/readyz", NULL, NULL, &r), 0);
        int status = r.status;
        rp_response_free(&r);
        if (status == 200)
            break;
        if (rp_now_ms() > dl)
            fail_msg("the standby did not take over");
    }
    expect_settle_equals_ledger();

    close_today(sb.port, "close-1");
    expect_closed_once(2 * MERCHANTS);
    pc_close(&pc);
    assert_int_equal(rp_server_stop(&sb), 0);
    assert_int_equal(rp_server_stop(&st), 128 + SIGKILL); /* its SIGKILL, above */
    assert_int_equal(rp_server_stop(&eng), 0);
    kc_mock_stop(&mk);
}

static double metric_of(const struct rp_server *srv, const char *name)
{
    return rp_scrape(srv->port, name, NULL);
}

/*
 * Two active members of one group on one host sharing a data directory (`--shared`):
 * the group splits the partitions between them and both consume into the one store;
 * exactly one publishes the outbox. The publisher is killed with SIGKILL in the middle
 * of the traffic: the group gives its partitions to the other member once its session
 * expires, which resumes them from what the dead one committed, and takes over
 * publishing. Every batch equals the ledger, through either member before the kill and
 * the survivor after, and closing publishes each batch once (after removing duplicates
 * by id, all copies identical).
 */
static void test_shared_members(void **state)
{
    (void)state;
    settle_srv = &st;
    start_kafka_and_engine("2");
    traffic("g0", 1); /* the topics exist, with their partitions, before the group forms */
    assert_int_equal(rp_server_prepare(&st), 0);
    assert_int_equal(rp_server_prepare(&sb), 0);
    const char *margs[] = {"--kafka-brokers", mk.bootstrap,
                           "--access-log",    "off",
                           "--close-poll-ms", "200",
                           "--kafka-conf",    "session.timeout.ms=3000;heartbeat.interval.ms=300",
                           "--shared",        "--data",
                           st.data_dir,       NULL};
    assert_int_equal(rp_server_respawn(&st, "settle", margs, NULL), 0);
    assert_int_equal(rp_server_respawn(&sb, "settle", margs, NULL), 0);

    /* A settle without --shared refuses the directory the members hold. */
    struct rp_server lone;
    assert_int_equal(rp_server_prepare(&lone), 0);
    const char *largs[] = {"--kafka-brokers", mk.bootstrap, "--data", st.data_dir, NULL};
    assert_int_not_equal(rp_server_respawn(&lone, "settle", largs, NULL), 0);
    rp_server_stop(&lone);

    /* Both members hold partitions; one publishes. */
    double pa = 0, pb = 0;
    for (int64_t dl = rp_now_ms() + WAIT_MS;; rp_sleep_ms(100)) {
        pa = metric_of(&st, "ringpay_settle_consumer_partitions");
        pb = metric_of(&sb, "ringpay_settle_consumer_partitions");
        if (pa > 0 && pb > 0 && pa + pb == 8)
            break;
        if (rp_now_ms() > dl)
            fail_msg("the group did not split the partitions: %g and %g", pa, pb);
    }
    double pub_a = 0, pub_b = 0;
    for (int64_t dl = rp_now_ms() + WAIT_MS;; rp_sleep_ms(100)) {
        pub_a = metric_of(&st, "ringpay_settle_publisher");
        pub_b = metric_of(&sb, "ringpay_settle_publisher");
        if (pub_a + pub_b == 1)
            break;
        if (rp_now_ms() > dl)
            fail_msg("publishers: %g and %g, want exactly one", pub_a, pub_b);
    }

    traffic("g1", 2);
    settle_srv = &st;
    expect_settle_equals_ledger();
    settle_srv = &sb;
    expect_settle_equals_ledger();

    /* Kill the publisher in the middle of the traffic. */
    struct rp_server *dead = pub_a == 1 ? &st : &sb, *live = pub_a == 1 ? &sb : &st;
    traffic("g2a", 1);
    assert_int_equal(rp_server_signal(dead, SIGKILL), 0);
    assert_int_equal(rp_server_wait(dead, RP_STOP_TIMEOUT_MS), 128 + SIGKILL);
    traffic("g2b", 1);
    for (int64_t dl = rp_now_ms() + WAIT_MS;; rp_sleep_ms(100)) {
        if (metric_of(live, "ringpay_settle_consumer_partitions") == 8 &&
            metric_of(live, "ringpay_settle_publisher") == 1)
            break;
        if (rp_now_ms() > dl)
            fail_msg("the survivor did not take the partitions and the outbox over");
    }
    settle_srv = live;
    expect_settle_equals_ledger();

    close_today(live->port, "close-g");
    expect_closed_once(2 * MERCHANTS);
    pc_close(&pc);
    assert_int_equal(rp_server_stop(live), 0);
    assert_int_equal(rp_server_stop(dead), 128 + SIGKILL);
    assert_int_equal(rp_server_stop(&eng), 0);
    kc_mock_stop(&mk);
}

/*
 * Two settles in one group with their own data directories (not --shared): A counts
 * every partition alone; B joins with an empty store and is given half the partitions,
 * whose committed group offsets (A's) are ahead of B's store: B must not count them
 * again (they would be counted in two stores), says so (/readyz 503, the metric), and
 * counts nothing. When B leaves, A gets them back and resumes from its own store: every
 * batch equals the ledger.
 */
static void test_foreign_store_refused(void **state)
{
    (void)state;
    settle_srv = &st;
    start_kafka_and_engine("2");
    assert_int_equal(rp_server_prepare(&st), 0);
    settle_start();
    traffic("f1", 2);
    expect_settle_equals_ledger();
    assert_int_equal(rp_server_prepare(&sb), 0);
    const char *bargs[] = {"--kafka-brokers",
                           mk.bootstrap,
                           "--access-log",
                           "off",
                           "--kafka-conf",
                           "session.timeout.ms=3000;heartbeat.interval.ms=300",
                           NULL};
    assert_int_equal(rp_server_respawn(&sb, "settle", bargs, NULL), 0);
    for (int64_t dl = rp_now_ms() + WAIT_MS;; rp_sleep_ms(100)) {
        if (metric_of(&sb, "ringpay_settle_foreign_partitions") > 0)
            break;
        if (rp_now_ms() > dl)
            fail_msg("B did not refuse the partitions A counted");
    }
    struct rp_response r;
    assert_int_equal(rp_request(sb.port, "GET", "/readyz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 503);
    rp_response_free(&r);
    traffic("f2", 1);
    rp_sleep_ms(1500);
    const char *counted[] = {"outcome=\"counted\"", NULL};
    assert_true(rp_scrape(sb.port, "ringpay_settle_events_total", counted) == 0);
    assert_int_equal(rp_server_stop(&sb), 0);
    expect_settle_equals_ledger(); /* A has them back, from its own offsets */
    pc_close(&pc);
    assert_int_equal(rp_server_stop(&st), 0);
    assert_int_equal(rp_server_stop(&eng), 0);
    kc_mock_stop(&mk);
}

static int teardown(void **state)
{
    kc_mock_stop(&mk);
    return rp_teardown(state);
}

int main(void)
{
    const char *only = getenv("RINGPAY_SETTLE_TESTS"); /* cmocka's name filter */
    if (only && only[0])
        cmocka_set_test_filter(only);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_end_to_end, teardown),
        cmocka_unit_test_teardown(test_late_events_adjust, teardown),
        cmocka_unit_test_teardown(test_standby_takes_over, teardown),
        cmocka_unit_test_teardown(test_shared_members, teardown),
        cmocka_unit_test_teardown(test_foreign_store_refused, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
