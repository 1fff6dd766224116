/*
 * Crash test of the durability promise (SPEC §6, DESIGN "Group commit"): an answer
 * leaves only after its commit is on disk, so `kill -9` never loses an acknowledged
 * change.
 *
 * One cycle: CRASH_THREADS workers drive authorize / capture / refund / void with unique
 * Idempotency-Keys over keep-alive connections and record every 2xx answer; at a random
 * moment the engine gets SIGKILL. Then, on the killed engine's data, `ringpay check`
 * must pass; the engine restarts on the same data, and every acknowledged payment must
 * be there in at least its answered state, and every acknowledged request, sent again
 * with its key, must replay the original answer (same status, same bytes). After the
 * last cycle a SIGTERM must exit 0 and `ringpay check` must pass.
 *
 * Cycles: RINGPAY_CRASH_CYCLES (default 3; ctest's crash_test_long runs 20). The random
 * seed is printed and can be fixed with RINGPAY_CRASH_SEED. Every loop is bounded in
 * count and time. Workers never call cmocka assertions: the test thread does.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "harness.h"
#include "pay_client.h"

#define CRASH_THREADS        4
#define CRASH_CYCLES_DEFAULT 3
#define CRASH_CYCLES_MAX     200
#define ACKS_MAX             1500 /* per worker and cycle: bounds the verification time */
#define PAYS_MAX             600  /* per worker and cycle */
#define MIN_ACKS             20 /* acknowledged answers to wait for before the kill (all workers) */
#define WARMUP_MAX_MS        5000
#define KILL_WINDOW_MS       700 /* the kill comes 0..this after the warm-up */
#define RETRIES_503          20

static struct rp_server srv;
static const char *const two_cores[] = {"--cores", "2", NULL};
static const char *const merchants[] = {"crash-a", "crash-b", "crash-c", "crash-d"};

enum pay_state { ST_AUTHORIZED = 0, ST_VOIDED, ST_CAPTURED, ST_PART_REFUNDED, ST_REFUNDED };

/* One acknowledged (2xx) request: enough to send it again and compare. */
struct ack {
    char key[48];
    char path[64];
    char body[64]; /* "" for none */
    int status;
    char *answer; /* malloc'd body of the original answer */
};

/* What the answers said about one payment (the least the engine must still show). */
struct pay_seen {
    char id[32];
    long long amount;
    enum pay_state state;
    long long captured, refunded;
};

struct worker {
    pthread_t tid;
    int idx, cycle, port;
    volatile int *stop;
    unsigned seed;
    struct ack acks[ACKS_MAX];
    int nacks;
    struct pay_seen pays[PAYS_MAX];
    int npays;
    int attempts;    /* requests sent */
    char error[512]; /* a failure that is not the crash */
};

static int acked_total(struct worker *w)
{
    int n = 0;
    for (int i = 0; i < CRASH_THREADS; i++)
        n += __atomic_load_n(&w[i].nacks, __ATOMIC_RELAXED);
    return n;
}

/*
 * Sends one POST; on a 2xx records the ack and returns 0 with *r kept for the caller
 * (to free). Returns 1 when the engine is gone (transport error: the crash), -1 on an
 * unexpected answer (w->error set).
 */
static int send_op(struct worker *w, struct pc_conn *pc, const char *path, const char *key,
                   const char *body, int want, struct rp_response *r)
{
    if (w->nacks == ACKS_MAX || *w->stop)
        return 1;
    for (int attempt = 0; attempt <= RETRIES_503; attempt++) {
        w->attempts++;
        if (pc_call(pc, "POST", path, key, body, r) != 0)
            return 1;
        if (r->status == want)
            break;
        if (r->status != 503 || attempt == RETRIES_503) {
            snprintf(w->error, sizeof(w->error), "%s key %s: %d, expected %d: %s", path, key,
                     r->status, want, r->body);
            rp_response_free(r);
            return -1;
        }
        rp_response_free(r);
        rp_sleep_ms(10);
    }
    struct ack *a = &w->acks[w->nacks];
    snprintf(a->key, sizeof(a->key), "%s", key);
    snprintf(a->path, sizeof(a->path), "%s", path);
    snprintf(a->body, sizeof(a->body), "%s", body ? body : "");
    a->status = r->status;
    a->answer = strdup(r->body);
    __atomic_store_n(&w->nacks, w->nacks + 1, __ATOMIC_RELEASE);
    return 0;
}

/* Authorize, then one of: void; capture all and refund twice; capture part and refund
 * once. The payment's record follows each acknowledged answer. */
static int drive_payment(struct worker *w, struct pc_conn *pc, int i)
{
    struct pay_seen *p = &w->pays[w->npays];
    char key[48], body[128], path[64];
    struct rp_response r;
    const char *m = merchants[(w->idx + i) % 4];
    long long amount = 1000 + rand_r(&w->seed) % 9000;
    snprintf(key, sizeof(key), "c%d-w%d-%d-a", w->cycle, w->idx, i);
    snprintf(body, sizeof(body), "{\"merchant_id\":\"%s\",\"amount\":%lld,\"currency\":\"KRW\"}", m,
             amount);
    int rc = send_op(w, pc, "/v1/payments/authorize", key, body, 201, &r);
    if (rc)
        return rc;
    bool ok = pc_body_str(r.body, "id", p->id, sizeof(p->id));
    rp_response_free(&r);
    if (!ok) {
        snprintf(w->error, sizeof(w->error), "authorize answer without id");
        return -1;
    }
    p->amount = amount;
    p->state = ST_AUTHORIZED;
    w->npays++;
    int kind = rand_r(&w->seed) % 3;
    if (kind == 0) {
        snprintf(path, sizeof(path), "/v1/payments/%s/void", p->id);
        snprintf(key, sizeof(key), "c%d-w%d-%d-v", w->cycle, w->idx, i);
        if ((rc = send_op(w, pc, path, key, NULL, 200, &r)))
            return rc;
        rp_response_free(&r);
        p->state = ST_VOIDED;
        return 0;
    }
    long long cap = kind == 1 ? amount : amount / 2;
    snprintf(path, sizeof(path), "/v1/payments/%s/capture", p->id);
    snprintf(key, sizeof(key), "c%d-w%d-%d-c", w->cycle, w->idx, i);
    snprintf(body, sizeof(body), "{\"amount\":%lld}", cap);
    if ((rc = send_op(w, pc, path, key, body, 200, &r)))
        return rc;
    rp_response_free(&r);
    p->state = ST_CAPTURED;
    p->captured = cap;
    snprintf(path, sizeof(path), "/v1/payments/%s/refund", p->id);
    for (int k = 0; k < (kind == 1 ? 2 : 1); k++) {
        long long amt = k == 0 && kind == 1 ? cap / 4 : cap - p->refunded;
        snprintf(key, sizeof(key), "c%d-w%d-%d-r%d", w->cycle, w->idx, i, k);
        snprintf(body, sizeof(body), "{\"amount\":%lld}", amt);
        if ((rc = send_op(w, pc, path, key, body, 201, &r)))
            return rc;
        rp_response_free(&r);
        p->refunded += amt;
        p->state = p->refunded == cap ? ST_REFUNDED : ST_PART_REFUNDED;
    }
    return 0;
}

static void *worker_main(void *arg)
{
    struct worker *w = arg;
    struct pc_conn pc;
    pc_init(&pc, w->port);
    int64_t deadline = rp_now_ms() + WARMUP_MAX_MS + KILL_WINDOW_MS + 5000;
    for (int i = 0; w->npays < PAYS_MAX && !*w->stop && rp_now_ms() < deadline; i++)
        if (drive_payment(w, &pc, i) != 0)
            break;
    pc_close(&pc);
    return NULL;
}

static const char *state_name(enum pay_state s)
{
    static const char *const names[] = {"authorized", "voided", "captured", "partially_refunded",
                                        "refunded"};
    return names[s];
}

static int state_of(const char *status)
{
    for (int s = ST_AUTHORIZED; s <= ST_REFUNDED; s++)
        if (strcmp(status, state_name((enum pay_state)s)) == 0)
            return s;
    return -1;
}

/* The engine shows p in at least the answered state. An answered state may have moved
 * one step further by a request that was committed but not answered before the kill. */
static void verify_payment(struct pc_conn *pc, const struct pay_seen *p)
{
    char path[64], status[32];
    snprintf(path, sizeof(path), "/v1/payments/%s", p->id);
    struct rp_response r;
    int err = pc_call(pc, "GET", path, NULL, NULL, &r);
    if (err)
        fail_msg("GET %s: transport error %d", path, err);
    if (r.status != 200)
        fail_msg("acknowledged payment %s lost after kill -9: %d %s", p->id, r.status, r.body);
    long long amount, captured, refunded;
    if (!pc_body_str(r.body, "status", status, sizeof(status)) ||
        !pc_body_int(r.body, "amount", &amount) ||
        !pc_body_int(r.body, "captured_amount", &captured) ||
        !pc_body_int(r.body, "refunded_amount", &refunded))
        fail_msg("GET %s: bad payment %s", path, r.body);
    int s = state_of(status);
    bool ok = s >= 0 && amount == p->amount && refunded >= p->refunded;
    switch (p->state) {
    case ST_AUTHORIZED:
        break; /* a void or capture may have been committed unanswered */
    case ST_VOIDED:
        ok = ok && s == ST_VOIDED;
        break;
    default: /* captured once: the amount is final */
        ok = ok && s >= ST_CAPTURED && captured == p->captured;
        break;
    }
    if (!ok)
        fail_msg("payment %s after kill -9: %s; the answers said %s, amount %lld, captured "
                 "%lld, refunded %lld",
                 p->id, r.body, state_name(p->state), p->amount, p->captured, p->refunded);
    rp_response_free(&r);
}

/* Sending an acknowledged request again replays its answer byte for byte. */
static void verify_replay(struct pc_conn *pc, const struct ack *a)
{
    struct rp_response r;
    int err = pc_call(pc, "POST", a->path, a->key, a->body[0] ? a->body : NULL, &r);
    if (err)
        fail_msg("replay of %s: transport error %d", a->key, err);
    const char *h = rp_header(&r, "Idempotent-Replayed");
    if (r.status != a->status || strcmp(r.body, a->answer) != 0 || !h || strcmp(h, "true"))
        fail_msg("replay of acknowledged key %s (%s) after kill -9: %d %s%s, original %d %s",
                 a->key, a->path, r.status, r.body, h ? "" : " (not marked replayed)", a->status,
                 a->answer);
    rp_response_free(&r);
}

static void run_check(const char *when)
{
    static struct rp_run_result res;
    long long pays = -1;
    int rc = pc_check(&srv, &res, &pays);
    if (rc != 0)
        fail_msg("ringpay check %s exited %d:\n%s%s", when, rc, res.out, res.err);
    if (pays < 0 || !strstr(res.out, "; OK"))
        fail_msg("ringpay check %s: no OK summary:\n%s", when, res.out);
}

/* One cycle: load, kill -9 at a random moment, check, restart, verify. Returns the
 * number of acknowledged authorizations. */
static int crash_cycle(struct worker *w, int cycle, unsigned *seed)
{
    volatile int stop = 0;
    for (int t = 0; t < CRASH_THREADS; t++) {
        memset(&w[t], 0, sizeof(w[t]));
        w[t].idx = t;
        w[t].cycle = cycle;
        w[t].port = srv.port;
        w[t].stop = &stop;
        w[t].seed = rand_r(seed);
        assert_int_equal(pthread_create(&w[t].tid, NULL, worker_main, &w[t]), 0);
    }
    int64_t warm_end = rp_now_ms() + WARMUP_MAX_MS;
    while (acked_total(w) < MIN_ACKS && rp_now_ms() < warm_end)
        rp_sleep_ms(2);
    int delay = (int)(rand_r(seed) % KILL_WINDOW_MS);
    rp_sleep_ms(delay);
    assert_int_equal(rp_server_signal(&srv, SIGKILL), 0);
    int code = rp_server_wait(&srv, RP_STOP_TIMEOUT_MS);
    stop = 1;
    for (int t = 0; t < CRASH_THREADS; t++)
        pthread_join(w[t].tid, NULL);
    assert_int_equal(code, 128 + SIGKILL);
    int acks = 0, auths = 0, sent = 0;
    for (int t = 0; t < CRASH_THREADS; t++) {
        if (w[t].error[0])
            fail_msg("cycle %d worker %d: %s", cycle, t, w[t].error);
        acks += w[t].nacks;
        auths += w[t].npays;
        sent += w[t].attempts;
    }
    print_message("cycle %d: killed after %d ms more, %d requests sent, %d acknowledged\n", cycle,
                  delay, sent, acks);
    assert_true(acks >= MIN_ACKS);

    run_check("after kill -9");
    int err = pc_server_restart(&srv, two_cores);
    if (err)
        fail_msg("cycle %d: restart on the killed engine's data failed: %d", cycle, err);
    struct pc_conn pc;
    pc_init(&pc, srv.port);
    for (int t = 0; t < CRASH_THREADS; t++) {
        for (int i = 0; i < w[t].npays; i++)
            verify_payment(&pc, &w[t].pays[i]);
        for (int i = 0; i < w[t].nacks; i++) {
            verify_replay(&pc, &w[t].acks[i]);
            free(w[t].acks[i].answer);
        }
    }
    pc_close(&pc);
    return auths;
}

static int cycles_wanted(void)
{
    const char *env = getenv("RINGPAY_CRASH_CYCLES");
    int n = env ? atoi(env) : CRASH_CYCLES_DEFAULT;
    return n < 1 ? 1 : n > CRASH_CYCLES_MAX ? CRASH_CYCLES_MAX : n;
}

static void test_kill9_cycles(void **state)
{
    (void)state;
    const char *env = getenv("RINGPAY_CRASH_SEED");
    unsigned seed = env ? (unsigned)strtoul(env, NULL, 10) : (unsigned)time(NULL);
    int cycles = cycles_wanted();
    print_message("crash test: %d cycles, RINGPAY_CRASH_SEED=%u\n", cycles, seed);
    static struct worker w[CRASH_THREADS];
    rp_must_start(&srv, two_cores);
    long long auths = 0;
    for (int c = 0; c < cycles; c++)
        auths += crash_cycle(w, c, &seed);
    int code = pc_server_halt(&srv);
    if (code != 0) {
        rp_server_dump_log(&srv, 4096);
        fail_msg("ringpay serve exited %d on SIGTERM after the crashes", code);
    }
    static struct rp_run_result res;
    long long pays = -1;
    int rc = pc_check(&srv, &res, &pays);
    if (rc != 0)
        fail_msg("final ringpay check exited %d:\n%s%s", rc, res.out, res.err);
    /* Unanswered authorizations may have been committed too, never fewer. */
    if (pays < auths)
        fail_msg("check counts %lld payments, %lld authorizations were acknowledged", pays, auths);
    print_message("%s", res.out);
    rp_server_stop(&srv);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_kill9_cycles, pc_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
