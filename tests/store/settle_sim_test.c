/*
 * A deterministic simulation of settle consuming a day and a half of engine events.
 *
 * The real engine (two shards, engine_apply over mem_store) runs a random workload over
 * 40 merchants and two currencies: authorizations, full and partial captures, partial
 * refunds, voids. Its events go to a model of Kafka: one log per (topic, partition),
 * partition = merchant mod 3, appended in commit order per merchant; some events are
 * appended twice (the engine's at-least-once outbox resending), producers stall for a
 * while on some partitions (their events arrive after their business day closed), and
 * a few poison messages are mixed in.
 *
 * The consumer polls the logs every two minutes of simulated time in random batches,
 * interleaving partitions at random, and runs the automatic close each step and one
 * early close request. At random points it restarts (closing and reopening the store),
 * crashes at a commit (an injected fsync failure: the store fails, is reopened), is down
 * for hours, loses partitions in a rebalance, or is handed offsets older than the stored
 * ones; every time it resumes from settle_store_offset_get, as the real consumer must.
 *
 * An oracle written separately from the rules (its own business-date arithmetic for a
 * fixed +09:00 zone with a 05:00 cutoff, its own tables) predicts every message's result
 * (stale, duplicate, ignored, dead letter, counted in which batch, adjusted into which
 * batch) and is checked against the store after each committed batch. At the end every
 * batch equals the oracle's, each capture and refund was counted exactly once, the nets
 * of each merchant and currency add up to the engine's own available balance, and the
 * outbox holds one settlement.closed per batch.
 *
 * Seeds: SETTLE_SIM_SEEDS (default 3) runs of seeds 1..N; SETTLE_SIM_SEED=S runs one.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/settle.h"
#include "store/settle_store.h"
#include "tests/store/settle_gen.h"

#define SEC  1000LL
#define MIN  (60 * SEC)
#define HOUR (60 * MIN)
#define DAY  (24 * HOUR)

#define NM      40 /* merchants */
#define NP      3  /* partitions per topic */
#define NTOPIC  4
#define NLOG    (NTOPIC * NP)
#define MAX_EV  12000
#define MAX_MSG (2 * MAX_EV)
#define MAX_PAY 6000
#define ZONE_S  (9 * 3600)
#define CUTOFF  (5 * HOUR)
#define GRACE   (10 * MIN)

static const char *const topic_names[NTOPIC] = {"payment.authorized", "payment.captured",
                                                "payment.voided", "payment.refunded"};
static const char *const currencies[2] = {"KRW", "USD"};

/* ---- The oracle's own calendar: +09:00, cutoff 05:00, no DST ----------------------- */

static int32_t o_bd(int64_t t)
{
    int64_t local = t + ZONE_S * SEC - CUTOFF;
    return (int32_t)(local >= 0 ? local / DAY : (local - DAY + 1) / DAY);
}

/* ---- The world --------------------------------------------------------------------- */

struct sev {
    int gen;
    size_t idx; /* the event in its generator */
    int topic;  /* 0 authorized, 1 captured, 2 voided, 3 refunded */
    int merchant, currency;
    int64_t amount, at;
    int counted; /* times the oracle saw it counted or adjusted */
};

struct smsg {
    int ev; /* -1: poison */
    int64_t append_at;
    uint32_t order; /* append order, for a stable sort */
};

struct slog {
    struct smsg *m;
    size_t n, cap;
    int64_t pos; /* the consumer's position */
};

struct spay {
    char id[ID_BYTES + 1];
    int gen, merchant, currency, state; /* 0 authorized, 1 captured, 2 done */
    int64_t amount, captured, refunded;
};

struct obatch {
    char merchant[8];
    int currency;
    int32_t date;
    int64_t gross, refunds, adj, cc, rc, ac;
    bool closed;
};

struct sim {
    unsigned seed;
    struct settle_gen g[2];
    struct sev *ev;
    int nev;
    struct spay *pay;
    int npay;
    struct slog logs[NLOG];
    uint32_t order;
    /* the store */
    char dir[128];
    struct settle_store *s;
    struct settle_calendar cal;
    /* the oracle */
    int64_t o_next[NLOG]; /* stored next offset per log */
    bool *o_seen;         /* per event */
    struct obatch *ob;
    int nob;
    int32_t o_closed_through;
    int32_t o_manual[8];
    int nmanual;
    /* counts */
    int restarts, crashes, rebalances, rewinds, stale, dups, late, dead;
};

static unsigned rnd(struct sim *w, unsigned n)
{
    return n ? (unsigned)rand_r(&w->seed) % n : 0;
}

static void log_append(struct sim *w, int log, int ev, int64_t at)
{
    struct slog *l = &w->logs[log];
    if (l->n == l->cap) {
        l->cap = l->cap ? 2 * l->cap : 256;
        l->m = realloc(l->m, l->cap * sizeof(*l->m));
        assert_non_null(l->m);
    }
    l->m[l->n++] = (struct smsg){.ev = ev, .append_at = at, .order = w->order++};
}

static int cmp_msg(const void *a, const void *b)
{
    const struct smsg *x = a, *y = b;
    if (x->append_at != y->append_at)
        return x->append_at < y->append_at ? -1 : 1;
    return x->order < y->order ? -1 : x->order > y->order;
}

/* A producer stall: events of partition p produced in [from, to) are appended at `to`. */
struct stall {
    int partition;
    int64_t from, to;
};

static int64_t append_time(const struct stall *st, size_t nst, int partition, int64_t at,
                           struct sim *w)
{
    for (size_t i = 0; i < nst; i++)
        if (st[i].partition == partition && at >= st[i].from && at < st[i].to)
            return st[i].to + rnd(w, 30) * SEC;
    return at + rnd(w, 5) * SEC;
}

static void record_event(struct sim *w, int gen, int topic, int merchant, int currency,
                         int64_t amount, int64_t at, const struct stall *st, size_t nst)
{
    assert_true(w->nev < MAX_EV);
    struct sev *e = &w->ev[w->nev];
    *e = (struct sev){.gen = gen,
                      .idx = settle_gen_events(&w->g[gen]) - 1,
                      .topic = topic,
                      .merchant = merchant,
                      .currency = currency,
                      .amount = amount,
                      .at = at};
    int partition = merchant % NP;
    int64_t when = append_time(st, nst, partition, at, w);
    log_append(w, topic * NP + partition, w->nev, when);
    if (rnd(w, 100) < 2) /* the engine's outbox resends it a little later */
        log_append(w, topic * NP + partition, w->nev, when + (1 + rnd(w, 600)) * SEC);
    w->nev++;
}

static void merchant_name(char out[8], int m)
{
    snprintf(out, 8, "m-%02d", m);
}

/* One random engine operation at time t. */
static void engine_step(struct sim *w, int64_t t, const struct stall *st, size_t nst)
{
    unsigned r = rnd(w, 100);
    char name[8];
    if (r < 45 || w->npay == 0) {
        assert_true(w->npay < MAX_PAY);
        struct spay *p = &w->pay[w->npay];
        p->merchant = (int)rnd(w, NM);
        p->currency = (int)rnd(w, 2);
        p->gen = p->merchant % 2;
        p->amount = 100 + rnd(w, 100000);
        merchant_name(name, p->merchant);
        assert_int_equal(
            settle_gen_authorize(&w->g[p->gen], name, currencies[p->currency], p->amount, t, p->id),
            201);
        w->npay++;
        record_event(w, p->gen, 0, p->merchant, p->currency, p->amount, t, st, nst);
        return;
    }
    struct spay *p = &w->pay[w->npay - 1 - (int)rnd(w, w->npay < 300 ? w->npay : 300)];
    if (p->state == 0 && r < 90) {
        int64_t c = rnd(w, 2) ? p->amount : 1 + rnd(w, (unsigned)p->amount);
        assert_int_equal(settle_gen_capture(&w->g[p->gen], p->id, c, t), 200);
        p->captured = c;
        p->state = 1;
        record_event(w, p->gen, 1, p->merchant, p->currency, c, t, st, nst);
    } else if (p->state == 0) {
        assert_int_equal(settle_gen_void(&w->g[p->gen], p->id, t), 200);
        p->state = 2;
        record_event(w, p->gen, 2, p->merchant, p->currency, p->amount, t, st, nst);
    } else if (p->state == 1) {
        int64_t left = p->captured - p->refunded;
        int64_t a = rnd(w, 3) == 0 ? left : 1 + rnd(w, (unsigned)left);
        assert_int_equal(settle_gen_refund(&w->g[p->gen], p->id, a, t), 201);
        p->refunded += a;
        if (p->refunded == p->captured)
            p->state = 2;
        record_event(w, p->gen, 3, p->merchant, p->currency, a, t, st, nst);
    }
}

/* ---- The oracle ------------------------------------------------------------------------ */

static bool o_date_closed(struct sim *w, int32_t d)
{
    if (d <= w->o_closed_through)
        return true;
    for (int i = 0; i < w->nmanual; i++)
        if (w->o_manual[i] == d)
            return true;
    return false;
}

static struct obatch *o_find(struct sim *w, int merchant, int currency, int32_t date)
{
    char name[8];
    merchant_name(name, merchant);
    for (int i = 0; i < w->nob; i++)
        if (strcmp(w->ob[i].merchant, name) == 0 && w->ob[i].currency == currency &&
            w->ob[i].date == date)
            return &w->ob[i];
    return NULL;
}

static struct obatch *o_get(struct sim *w, int merchant, int currency, int32_t date)
{
    struct obatch *b = o_find(w, merchant, currency, date);
    if (b)
        return b;
    assert_true(w->nob < 4096);
    b = &w->ob[w->nob++];
    memset(b, 0, sizeof(*b));
    merchant_name(b->merchant, merchant);
    b->currency = currency;
    b->date = date;
    return b;
}

/* The batch a late event of (merchant, currency, date) goes to, applied at now. */
static struct obatch *o_next_open(struct sim *w, int merchant, int currency, int32_t date,
                                  int64_t now)
{
    struct obatch *best = NULL;
    char name[8];
    merchant_name(name, merchant);
    for (int i = 0; i < w->nob; i++) {
        struct obatch *b = &w->ob[i];
        if (strcmp(b->merchant, name) == 0 && b->currency == currency && b->date > date &&
            !b->closed && !o_date_closed(w, b->date) && (best == NULL || b->date < best->date))
            best = b;
    }
    if (best)
        return best;
    int32_t e = o_bd(now) > date ? o_bd(now) : date + 1;
    while (o_date_closed(w, e))
        e++;
    return o_get(w, merchant, currency, e);
}

/* Checks the store's result of one message of log `log` and applies it to the oracle. */
static void o_message(struct sim *w, int log, int64_t offset, int ev, const struct settle_msg *m,
                      int64_t now)
{
    if (offset < w->o_next[log]) {
        assert_int_equal(m->result, SETTLE_MSG_STALE);
        w->stale++;
        return;
    }
    w->o_next[log] = offset + 1;
    if (ev < 0) {
        assert_int_equal(m->result, SETTLE_MSG_DEAD_LETTER);
        w->dead++;
        return;
    }
    struct sev *e = &w->ev[ev];
    if (e->topic == 0 || e->topic == 2) {
        assert_int_equal(m->result, SETTLE_MSG_IGNORED);
        return;
    }
    if (w->o_seen[ev]) {
        assert_int_equal(m->result, SETTLE_MSG_DUPLICATE);
        w->dups++;
        return;
    }
    w->o_seen[ev] = true;
    e->counted++;
    int32_t d = o_bd(e->at);
    assert_int_equal(m->date, d);
    struct obatch *b;
    bool late = o_date_closed(w, d);
    if (late) {
        b = o_next_open(w, e->merchant, e->currency, d, now);
        assert_int_equal(m->result, SETTLE_MSG_ADJUSTED);
        b->adj += e->topic == 1 ? e->amount : -e->amount;
        b->ac++;
        w->late++;
    } else {
        b = o_get(w, e->merchant, e->currency, d);
        assert_false(b->closed);
        assert_int_equal(m->result, SETTLE_MSG_COUNTED);
        if (e->topic == 1) {
            b->gross += e->amount;
            b->cc++;
        } else {
            b->refunds += e->amount;
            b->rc++;
        }
    }
    char name[8];
    merchant_name(name, e->merchant);
    assert_int_equal(m->batch.date, b->date);
    assert_string_equal(m->batch.merchant_id, name);
    assert_string_equal(m->batch.currency, currencies[e->currency]);
}

static void o_close_through(struct sim *w, int32_t through)
{
    if (through > w->o_closed_through)
        w->o_closed_through = through;
    for (int i = 0; i < w->nob; i++)
        if (o_date_closed(w, w->ob[i].date))
            w->ob[i].closed = true;
}

/* ---- The consumer ------------------------------------------------------------------------- */

static void store_open(struct sim *w, const struct settle_store_options *o)
{
    char why[256];
    int rc = settle_store_open(&w->s, w->dir, o, why, sizeof(why));
    if (rc)
        fail_msg("open: %s", why);
}

/* Every log's position from the stored offsets (a restart, or a partition assigned). */
static void resume(struct sim *w, int log)
{
    int64_t next;
    int rc = settle_store_offset_get(w->s, topic_names[log / NP], strlen(topic_names[log / NP]),
                                     log % NP, &next);
    assert_true(rc == 0 || rc == -ENOENT);
    w->logs[log].pos = rc == 0 ? next : 0;
    assert_int_equal(w->logs[log].pos, w->o_next[log]);
}

static void restart(struct sim *w, const struct settle_store_options *o)
{
    settle_store_close(w->s);
    store_open(w, o);
    for (int l = 0; l < NLOG; l++)
        resume(w, l);
}

static const char poison_value[] = "{\"event_id\":\"evt_zz\",\"type\":\"payment.captured\"}";

/* One poll: up to `max` visible messages, interleaved at random; applied at now. */
static int poll_once(struct sim *w, int64_t now, size_t max)
{
    static struct settle_msg m[400];
    static int mlog[400], mev[400];
    static int64_t moff[400];
    size_t n = 0;
    int take[NLOG];
    for (int l = 0; l < NLOG; l++)
        take[l] = (int)rnd(w, 120);
    while (n < max) {
        int progressed = 0;
        for (int k = 0; k < NLOG && n < max; k++) {
            int l = (int)rnd(w, NLOG);
            struct slog *lg = &w->logs[l];
            if (take[l] <= 0 || lg->pos >= (int64_t)lg->n || lg->m[lg->pos].append_at > now)
                continue;
            struct smsg *sm = &lg->m[lg->pos];
            memset(&m[n], 0, sizeof(m[n]));
            m[n].topic = topic_names[l / NP];
            m[n].topic_len = strlen(m[n].topic);
            m[n].partition = l % NP;
            m[n].offset = lg->pos;
            if (sm->ev < 0) {
                m[n].value = poison_value;
                m[n].value_len = sizeof(poison_value) - 1;
            } else {
                struct sev *e = &w->ev[sm->ev];
                m[n].value = settle_gen_event(&w->g[e->gen], e->idx, &m[n].value_len, NULL);
            }
            mlog[n] = l;
            mev[n] = sm->ev;
            moff[n] = lg->pos;
            lg->pos++;
            take[l]--;
            n++;
            progressed = 1;
        }
        if (!progressed) {
            bool any = false;
            for (int l = 0; l < NLOG; l++) {
                struct slog *lg = &w->logs[l];
                any |= take[l] > 0 && lg->pos < (int64_t)lg->n && lg->m[lg->pos].append_at <= now;
            }
            if (!any)
                break;
        }
    }
    int rc = settle_store_apply(w->s, &w->cal, m, n, now);
    if (rc == 0)
        for (size_t i = 0; i < n; i++)
            o_message(w, mlog[i], moff[i], mev[i], &m[i], now);
    return rc;
}

static void consumer_step(struct sim *w, int64_t now)
{
    unsigned r = rnd(w, 1000);
    if (r < 10) { /* a clean restart */
        restart(w, NULL);
        w->restarts++;
    } else if (r < 20) { /* a crash at a commit: its fsync fails */
        struct settle_store_options o = {.fault_after_commits = 1, .fault_commit_errno = EIO};
        restart(w, &o);
        int rc = poll_once(w, now, 1 + rnd(w, 300));
        if (rc == 0) /* nothing was visible: the next write fails instead */
            rc = settle_store_flush(w->s, &w->cal, now);
        assert_int_equal(rc, -EIO);
        assert_int_equal(settle_store_failed(w->s), -EIO);
        restart(w, NULL);
        w->crashes++;
    } else if (r < 40) { /* a rebalance: some partitions are revoked and assigned again */
        for (int l = 0; l < NLOG; l++)
            if (rnd(w, 2))
                resume(w, l);
        w->rebalances++;
    } else if (r < 50) { /* handed an older offset (the group's committed one) */
        int l = (int)rnd(w, NLOG);
        w->logs[l].pos = w->logs[l].pos > 20 ? w->logs[l].pos - 20 : 0;
        w->rewinds++;
    }
    assert_int_equal(poll_once(w, now, 1 + rnd(w, 400)), 0);
    uint64_t closed;
    assert_int_equal(settle_store_close_due(w->s, &w->cal, now, &closed), 0);
    o_close_through(w, o_bd(now - GRACE) - 1);
}

/* ---- Final checks ------------------------------------------------------------------------ */

struct final_ctx {
    struct sim *w;
    int n;
};

static int final_visit(void *arg, const struct settle_batch *b)
{
    struct final_ctx *c = arg;
    struct sim *w = c->w;
    struct obatch *o = NULL;
    for (int i = 0; i < w->nob && o == NULL; i++)
        if (strcmp(w->ob[i].merchant, b->key.merchant_id) == 0 &&
            strcmp(currencies[w->ob[i].currency], b->key.currency) == 0 &&
            w->ob[i].date == b->key.date)
            o = &w->ob[i];
    assert_non_null(o);
    assert_int_equal(b->gross, o->gross);
    assert_int_equal(b->refunds, o->refunds);
    assert_int_equal(b->adjustments, o->adj);
    assert_int_equal(b->capture_count, o->cc);
    assert_int_equal(b->refund_count, o->rc);
    assert_int_equal(b->adjustment_count, o->ac);
    assert_int_equal(b->closed, o->closed);
    c->n++;
    return 0;
}

static int count_closed(void *arg, const struct settle_out_msg *m)
{
    if (m->topic_len == 17 && memcmp(m->topic, "settlement.closed", 17) == 0)
        ((int *)arg)[0]++;
    else if (m->topic_len == 11 && memcmp(m->topic, "payment.dlq", 11) == 0)
        ((int *)arg)[1]++;
    return 0;
}

static void final_checks(struct sim *w)
{
    struct final_ctx c = {w, 0};
    struct settle_filter any = {0};
    uint64_t after = 0;
    do
        assert_int_equal(settle_store_batch_list(w->s, &any, after, 7, final_visit, &c, &after), 0);
    while (after);
    assert_int_equal(c.n, w->nob);
    /* each capture and refund counted exactly once */
    for (int i = 0; i < w->nev; i++)
        if (w->ev[i].topic == 1 || w->ev[i].topic == 3)
            assert_int_equal(w->ev[i].counted, 1);
    /* the nets of a merchant and currency are the engine's available balance */
    for (int m = 0; m < NM; m++) {
        char name[8];
        merchant_name(name, m);
        for (int cu = 0; cu < 2; cu++) {
            int64_t net = 0;
            for (int i = 0; i < w->nob; i++)
                if (strcmp(w->ob[i].merchant, name) == 0 && w->ob[i].currency == cu)
                    net += w->ob[i].gross - w->ob[i].refunds + w->ob[i].adj;
            const struct balance *b = mem_store_balance(&w->g[m % 2].m, name, currencies[cu]);
            assert_int_equal(net, b ? b->available : 0);
        }
    }
    /* every batch closed once: one settlement.closed each (nothing was trimmed) */
    int counts[2] = {0, 0};
    assert_int_equal(settle_store_outbox_scan(w->s, 0, SIZE_MAX, count_closed, counts), 0);
    assert_int_equal(counts[0], w->nob);
    assert_int_equal(counts[1], w->dead);
    struct settle_store_stats st;
    settle_store_get_stats(w->s, &st);
    assert_int_equal(st.open_batches, 0);
}

static void run_seed(unsigned seed)
{
    struct sim *w = calloc(1, sizeof(*w));
    w->seed = seed;
    w->ev = calloc(MAX_EV, sizeof(*w->ev));
    w->pay = calloc(MAX_PAY, sizeof(*w->pay));
    w->o_seen = calloc(MAX_EV, sizeof(*w->o_seen));
    w->ob = calloc(4096, sizeof(*w->ob));
    settle_gen_init(&w->g[0], 0, MAX_PAY);
    settle_gen_init(&w->g[1], 1, MAX_PAY);
    w->o_closed_through = -1;
    int64_t t0, t_end;
    assert_int_equal(settle_time_parse("2026-11-24T12:00:00.000Z", 24, &t0), 0);
    t_end = t0 + 36 * HOUR;
    /* Producer stalls across both automatic closes (11-24 and 11-25 close at 20:10Z);
     * the last one holds a partition from before the first close until the grace period
     * of the second, so that its 11-24 events arrive while 11-25 is still open but the
     * clock is already in 11-26 (the next open batch is then the existing 11-25 one). */
    struct stall st[4] = {
        {(int)rnd(w, NP), t0 + 7 * HOUR + 30 * MIN, t0 + 9 * HOUR},
        {(int)rnd(w, NP), t0 + 31 * HOUR, t0 + 33 * HOUR},
        {(int)rnd(w, NP), t0 + 20 * HOUR, t0 + 20 * HOUR + 20 * MIN},
        {(int)rnd(w, NP), t0 + 7 * HOUR + 50 * MIN, t0 + 32 * HOUR + 3 * MIN},
    };
    for (int64_t t = t0; t < t_end; t += (10 + rnd(w, 80)) * SEC)
        engine_step(w, t, st, 4);
    for (int i = 0; i < 25; i++) /* poison */
        log_append(w, 1 * NP + (int)rnd(w, NP), -1, t0 + rnd(w, 36 * 3600) * SEC);
    for (int l = 0; l < NLOG; l++)
        qsort(w->logs[l].m, w->logs[l].n, sizeof(struct smsg), cmp_msg);

    const char *base = access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp";
    snprintf(w->dir, sizeof(w->dir), "%s/rp_settle_sim_XXXXXX", base);
    assert_non_null(mkdtemp(w->dir));
    int32_t kst = ZONE_S;
    settle_calendar_init(&w->cal, settle_offset_fixed, &kst, CUTOFF / MIN, GRACE);
    store_open(w, NULL);
    int64_t down_until = 0;
    bool manual_done = false;
    int64_t now = t0;
    for (; now < t_end + 30 * HOUR; now += (60 + rnd(w, 120)) * SEC) {
        if (now < down_until)
            continue;
        if (rnd(w, 1000) < 3) { /* down for up to three hours */
            down_until = now + (1 + rnd(w, 180)) * MIN;
            restart(w, NULL);
            continue;
        }
        if (!manual_done && now >= t0 + 35 * HOUR) { /* 11-26 closed early, at 20:00 KST */
            int32_t today = o_bd(now);
            assert_int_equal(settle_store_close_date(w->s, &w->cal, today + 1, now, NULL), -EINVAL);
            assert_int_equal(settle_store_close_date(w->s, &w->cal, today, now, NULL), 0);
            w->o_manual[w->nmanual++] = today;
            o_close_through(w, w->o_closed_through);
            manual_done = true;
        }
        consumer_step(w, now);
    }
    /* drain whatever is left, then close everything */
    for (int i = 0; i < 100; i++)
        assert_int_equal(poll_once(w, now, 400), 0);
    for (int l = 0; l < NLOG; l++)
        assert_int_equal(w->logs[l].pos, (int64_t)w->logs[l].n);
    now += 3 * DAY;
    assert_int_equal(settle_store_close_due(w->s, &w->cal, now, NULL), 0);
    o_close_through(w, o_bd(now - GRACE) - 1);
    final_checks(w);
    /* and all of it again after a reopen */
    restart(w, NULL);
    final_checks(w);
    print_message("seed %u: %d events, %d batches, %d late, %d duplicates, %d stale, %d dead, "
                  "%d restarts, %d crashes, %d rebalances, %d rewinds\n",
                  seed, w->nev, w->nob, w->late, w->dups, w->stale, w->dead, w->restarts,
                  w->crashes, w->rebalances, w->rewinds);
    assert_true(w->late > 0 && w->dups > 0 && w->stale > 0 && w->crashes > 0);

    settle_store_close(w->s);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", w->dir);
    assert_int_equal(system(cmd), 0);
    for (int l = 0; l < NLOG; l++)
        free(w->logs[l].m);
    settle_gen_free(&w->g[0]);
    settle_gen_free(&w->g[1]);
    free(w->ev);
    free(w->pay);
    free(w->o_seen);
    free(w->ob);
    free(w);
}

static void test_simulated_days(void **state)
{
    const char *one = getenv("SETTLE_SIM_SEED");
    if (one) {
        run_seed((unsigned)strtoul(one, NULL, 10));
        return;
    }
    const char *n = getenv("SETTLE_SIM_SEEDS");
    unsigned seeds = n ? (unsigned)strtoul(n, NULL, 10) : 3;
    for (unsigned s = 1; s <= seeds; s++)
        run_seed(s);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_simulated_days),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
