/*
 * Tests of store/settle_store.c through its API, with events made by the real engine:
 * the data directory (manifest, lock, refusing an engine's directory); consuming with
 * exactly-once (duplicates, stale offsets, offsets after reopening); dead letters and
 * their replay; closing by request and by time, late events as adjustments; listings
 * and their paging; the retention horizon; reconciliation with every category, a wrong
 * header, chunked uploads, an upload cut by a crash, rematch; the outbox and its
 * replicated mark; idempotency records (written with the operation's last commit, gone
 * with a failed one, durable, expired in bounded steps); fault injection (a failing put once and
 * persistently, MAP_FULL with growth and at the ceiling, a failing commit) with the state after
 * each.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <lmdb.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/ids.h"
#include "engine/settle.h"
#include "store/manifest.h"
#include "store/settle_store.h"
#include "tests/store/settle_gen.h"

#define HOUR 3600000LL
#define DAY  (24 * HOUR)

static int64_t T(const char *s)
{
    int64_t ms;
    assert_int_equal(settle_time_parse(s, strlen(s), &ms), 0);
    return ms;
}

static int32_t D(const char *s)
{
    int32_t d;
    assert_int_equal(settle_date_parse(s, strlen(s), &d), 0);
    return d;
}

static char *make_tmp(void)
{
    char *dir = strdup("/tmp/rp_settle_store_XXXXXX");
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void rm_rf(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static struct settle_store *open_store(const char *dir, const struct settle_store_options *o)
{
    struct settle_store *s = NULL;
    char why[256];
    int rc = settle_store_open(&s, dir, o, why, sizeof(why));
    if (rc)
        fail_msg("open %s: %d %s", dir, rc, why);
    return s;
}

/* The fixture: a store, a UTC calendar with 10 minutes of grace, an engine shard. */
struct fx {
    char *dir;
    struct settle_store *s;
    struct settle_calendar cal;
    struct settle_gen g;
    int64_t offset;   /* the next Kafka offset of partition 0 */
    size_t delivered; /* engine events delivered so far */
};

static int setup(void **state)
{
    struct fx *f = calloc(1, sizeof(*f));
    f->dir = make_tmp();
    f->s = open_store(f->dir, NULL);
    settle_calendar_init(&f->cal, settle_offset_utc, NULL, 0, 10 * 60000);
    settle_gen_init(&f->g, 3, 256);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    struct fx *f = *state;
    settle_store_close(f->s);
    settle_gen_free(&f->g);
    rm_rf(f->dir);
    free(f->dir);
    free(f);
    return 0;
}

/* Delivers the engine events not delivered yet, each at the next offset of partition 0,
 * in one settle_store_apply at now; results into out (may be NULL). */
static size_t deliver(struct fx *f, int64_t now, enum settle_msg_result *out)
{
    struct settle_msg m[64];
    size_t n = 0;
    while (f->delivered < settle_gen_events(&f->g)) {
        assert_true(n < 64);
        memset(&m[n], 0, sizeof(m[n]));
        m[n].value = settle_gen_event(&f->g, f->delivered, &m[n].value_len, &m[n].topic);
        m[n].topic_len = strlen(m[n].topic);
        m[n].key = "k";
        m[n].key_len = 1;
        m[n].partition = 0;
        m[n].offset = f->offset++;
        f->delivered++;
        n++;
    }
    assert_int_equal(settle_store_apply(f->s, &f->cal, m, n, now), 0);
    for (size_t i = 0; out && i < n; i++)
        out[i] = m[i].result;
    return n;
}

static struct settle_batch batch(struct fx *f, const char *m, const char *cur, const char *date)
{
    struct settle_key k;
    struct settle_batch b;
    settle_key_set(&k, m, strlen(m), cur, D(date));
    assert_int_equal(settle_store_batch_get(f->s, &k, &b), 0);
    return b;
}

/* A payment of `amount` authorized and captured (capture C) at t. */
static void pay(struct fx *f, const char *m, const char *cur, int64_t amount, int64_t capture,
                int64_t t, char id[ID_BYTES + 1])
{
    assert_int_equal(settle_gen_authorize(&f->g, m, cur, amount, t, id), 201);
    assert_int_equal(settle_gen_capture(&f->g, id, capture, t + 1), 200);
}

/* ---- The directory -------------------------------------------------------------------- */

static void test_directory_lock_and_manifest(void **state)
{
    struct fx *f = *state;
    struct settle_store *second = NULL;
    char why[256];
    assert_int_equal(settle_store_open(&second, f->dir, NULL, why, sizeof(why)), -EBUSY);
    assert_non_null(strstr(why, "in use"));
    /* nor may a --shared member join a directory a settle owns alone (after its wait) */
    struct settle_store_options sh = {.shared = true};
    assert_int_equal(settle_store_open(&second, f->dir, &sh, why, sizeof(why)), -EBUSY);
    assert_non_null(strstr(why, "in use"));
    /* an engine's data directory is not settle's */
    char *engine = make_tmp();
    char err[256];
    assert_int_equal(store_manifest_open(engine, 1, err, sizeof(err)), 0);
    assert_int_equal(settle_store_open(&second, engine, NULL, why, sizeof(why)), -EINVAL);
    assert_non_null(strstr(why, "not a settle data directory"));
    rm_rf(engine);
    free(engine);
    /* and settle's is not the engine's */
    unsigned shards;
    assert_int_equal(store_manifest_read(f->dir, &shards, err, sizeof(err)), -EINVAL);
    struct settle_store_options o = {.retention_days = 1};
    assert_int_equal(settle_store_open(&second, f->dir, &o, why, sizeof(why)), -EINVAL);
}

/* ---- Consuming ------------------------------------------------------------------------- */

static void test_consume_exactly_once(void **state)
{
    struct fx *f = *state;
    char p1[ID_BYTES + 1], p2[ID_BYTES + 1], p3[ID_BYTES + 1];
    int64_t t = T("2026-11-25T10:00:00.000Z");
    enum settle_msg_result r[64];
    pay(f, "m-1", "KRW", 15000, 12000, t, p1);   /* partial capture */
    pay(f, "m-1", "KRW", 5000, 0, t + HOUR, p2); /* full capture */
    assert_int_equal(settle_gen_refund(&f->g, p1, 2000, t + 2 * HOUR), 201);
    assert_int_equal(settle_gen_authorize(&f->g, "m-1", "KRW", 70, t, p3), 201);
    assert_int_equal(settle_gen_void(&f->g, p3, t + 1), 200);
    assert_int_equal(deliver(f, t + 3 * HOUR, r), 7);
    assert_int_equal(r[0], SETTLE_MSG_IGNORED);
    assert_int_equal(r[1], SETTLE_MSG_COUNTED);
    assert_int_equal(r[4], SETTLE_MSG_COUNTED);
    assert_int_equal(r[6], SETTLE_MSG_IGNORED);
    struct settle_batch b = batch(f, "m-1", "KRW", "2026-11-25");
    assert_int_equal(b.gross, 17000);
    assert_int_equal(b.refunds, 2000);
    assert_int_equal(settle_batch_net(&b), 15000);
    assert_int_equal(b.capture_count, 2);
    assert_int_equal(b.refund_count, 1);
    assert_false(b.closed);

    /* the same messages again at the same offsets: stale, not even read */
    struct settle_msg m[2];
    memset(m, 0, sizeof(m));
    for (int i = 0; i < 2; i++) {
        m[i].value = settle_gen_event(&f->g, 1, &m[i].value_len, &m[i].topic);
        m[i].topic_len = strlen(m[i].topic);
        m[i].offset = 1;
    }
    /* ...and the engine publishing the capture once more at a new offset: duplicate */
    m[1].offset = f->offset++;
    assert_int_equal(settle_store_apply(f->s, &f->cal, m, 2, t + 4 * HOUR), 0);
    assert_int_equal(m[0].result, SETTLE_MSG_STALE);
    assert_int_equal(m[1].result, SETTLE_MSG_DUPLICATE);
    b = batch(f, "m-1", "KRW", "2026-11-25");
    assert_int_equal(b.gross, 17000);

    /* the stored offsets survive a reopen; another partition and topic are separate */
    int64_t next;
    assert_int_equal(settle_store_offset_get(f->s, "payment.captured", 16, 0, &next), 0);
    assert_int_equal(next, 8);
    assert_int_equal(settle_store_offset_get(f->s, "payment.refunded", 16, 0, &next), 0);
    assert_int_equal(next, 5);
    assert_int_equal(settle_store_offset_get(f->s, "payment.captured", 16, 1, &next), -ENOENT);
    settle_store_close(f->s);
    f->s = open_store(f->dir, NULL);
    assert_int_equal(settle_store_offset_get(f->s, "payment.captured", 16, 0, &next), 0);
    assert_int_equal(next, 8);
    b = batch(f, "m-1", "KRW", "2026-11-25");
    assert_int_equal(b.gross, 17000);
    struct settle_capture cap;
    assert_int_equal(settle_store_capture_get(f->s, p1, &cap), 0);
    assert_int_equal(cap.amount, 12000); /* the captured amount, not the authorized one */
    assert_int_equal(cap.value_date, D("2026-11-25"));
    assert_string_equal(cap.merchant_id, "m-1");
    assert_int_equal(settle_store_capture_get(f->s, p3, &cap), -ENOENT);
    struct settle_store_stats st;
    settle_store_get_stats(f->s, &st);
    assert_int_equal(st.open_batches, 1);
}

struct dl_list {
    int n;
    char reason[4][SETTLE_REASON_MAX_BYTES + 1];
    uint64_t ids[4];
    bool replayed[4];
    size_t value_len[4];
};

static int dl_visit(void *arg, const struct settle_dead_letter *d)
{
    struct dl_list *l = arg;
    assert_true(l->n < 4);
    snprintf(l->reason[l->n], sizeof(l->reason[0]), "%.*s", (int)d->reason_len, d->reason);
    l->ids[l->n] = d->id;
    l->replayed[l->n] = d->replayed;
    l->value_len[l->n] = d->value_len;
    l->n++;
    return 0;
}

struct out_list {
    int n;
    char topic[64][32];
    char value[64][SETTLE_OUT_EVENT_MAX_BYTES + 1];
    size_t nheaders[64];
    char reason[64][SETTLE_REASON_MAX_BYTES + 1];
    uint64_t last;
};

static int out_visit(void *arg, const struct settle_out_msg *m)
{
    struct out_list *l = arg;
    assert_true(l->n < 64);
    snprintf(l->topic[l->n], sizeof(l->topic[0]), "%.*s", (int)m->topic_len, m->topic);
    snprintf(l->value[l->n], sizeof(l->value[0]), "%.*s", (int)m->value_len, m->value);
    l->nheaders[l->n] = m->nheaders;
    l->reason[l->n][0] = '\0';
    if (m->nheaders)
        snprintf(l->reason[l->n], sizeof(l->reason[0]), "%.*s", (int)m->headers[0].value_len,
                 m->headers[0].value);
    l->last = m->seq;
    l->n++;
    return 0;
}

static struct out_list *outbox(struct fx *f, uint64_t after)
{
    static struct out_list l;
    memset(&l, 0, sizeof(l));
    assert_int_equal(settle_store_outbox_scan(f->s, after, 64, out_visit, &l), 0);
    return &l;
}

/* A zone that cannot place instants before `broken_until` (a misconfiguration). */
static int64_t broken_until;
static int flaky_zone(void *arg, int64_t u, int32_t *off)
{
    *off = 0;
    return u < broken_until ? -EIO : 0;
}

static void test_poison_dead_letters_and_replay(void **state)
{
    struct fx *f = *state;
    int64_t t = T("2026-11-25T10:00:00.000Z");
    struct settle_msg m[3];
    memset(m, 0, sizeof(m));
    m[0] = (struct settle_msg){.topic = "payment.captured",
                               .topic_len = 16,
                               .partition = 2,
                               .offset = 40,
                               .key = "m-9",
                               .key_len = 3,
                               .value = "{not json",
                               .value_len = 9};
    m[1] = m[0];
    m[1].offset = 41;
    m[1].value = NULL; /* a tombstone */
    m[1].value_len = 0;
    /* a valid event after the poison: the partition goes on */
    char p[ID_BYTES + 1];
    pay(f, "m-1", "KRW", 100, 0, t, p);
    m[2] = m[0];
    m[2].offset = 42;
    m[2].value = settle_gen_event(&f->g, 1, &m[2].value_len, NULL);
    assert_int_equal(settle_store_apply(f->s, &f->cal, m, 3, t), 0);
    assert_int_equal(m[0].result, SETTLE_MSG_DEAD_LETTER);
    assert_int_equal(m[1].result, SETTLE_MSG_DEAD_LETTER);
    assert_int_equal(m[2].result, SETTLE_MSG_COUNTED);
    int64_t next;
    assert_int_equal(settle_store_offset_get(f->s, "payment.captured", 16, 2, &next), 0);
    assert_int_equal(next, 43);
    struct dl_list l = {0};
    uint64_t na;
    assert_int_equal(settle_store_dlq_list(f->s, 0, 10, false, dl_visit, &l, &na), 0);
    assert_int_equal(l.n, 2);
    assert_int_equal(na, 0);
    assert_non_null(strstr(l.reason[0], "expected"));
    assert_int_equal(l.value_len[0], 9);
    /* published to payment.dlq with the original bytes and the reason as a header */
    struct out_list *o = outbox(f, 0);
    assert_int_equal(o->n, 2);
    assert_string_equal(o->topic[0], "payment.dlq");
    assert_string_equal(o->value[0], "{not json");
    assert_int_equal(o->nheaders[0], 4);
    assert_string_equal(o->reason[0], l.reason[0]);
    /* replaying poison leaves it pending */
    enum settle_msg_result res;
    assert_int_equal(settle_store_dlq_replay(f->s, &f->cal, l.ids[0], t, &res), 0);
    assert_int_equal(res, SETTLE_MSG_DEAD_LETTER);
    assert_int_equal(settle_store_dlq_mark_replayed(f->s, l.ids[1], t), 0);
    assert_int_equal(settle_store_dlq_mark_replayed(f->s, l.ids[1], t), -EALREADY);
    assert_int_equal(settle_store_dlq_replay(f->s, &f->cal, 99, t, &res), -ENOENT);
    memset(&l, 0, sizeof(l));
    assert_int_equal(settle_store_dlq_list(f->s, 0, 10, true, dl_visit, &l, &na), 0);
    assert_int_equal(l.n, 1);

    /* an event refused while the zone was broken is counted once it is fixed */
    struct settle_calendar broken;
    broken_until = T("2030-01-01T00:00:00.000Z");
    settle_calendar_init(&broken, flaky_zone, NULL, 0, 0);
    pay(f, "m-2", "USD", 300, 0, t, p);
    m[0].offset = 43;
    m[0].value = settle_gen_event(&f->g, 3, &m[0].value_len, NULL);
    assert_int_equal(settle_store_apply(f->s, &broken, m, 1, t), 0);
    assert_int_equal(m[0].result, SETTLE_MSG_DEAD_LETTER);
    memset(&l, 0, sizeof(l));
    assert_int_equal(settle_store_dlq_list(f->s, 2, 10, true, dl_visit, &l, &na), 0);
    assert_int_equal(l.n, 1);
    assert_non_null(strstr(l.reason[0], "no business date"));
    assert_int_equal(settle_store_dlq_replay(f->s, &f->cal, l.ids[0], t, &res), 0);
    assert_int_equal(res, SETTLE_MSG_COUNTED);
    assert_int_equal(batch(f, "m-2", "USD", "2026-11-25").gross, 300);
    assert_int_equal(settle_store_dlq_replay(f->s, &f->cal, l.ids[0], t, &res), -EALREADY);
}

/* ---- Closing and late events ------------------------------------------------------------- */

struct adj_list {
    int n;
    int64_t amount[8];
    int32_t source[8];
};

static int adj_visit(void *arg, const struct settle_adjustment *a)
{
    struct adj_list *l = arg;
    l->amount[l->n] = a->amount;
    l->source[l->n] = a->source_date;
    l->n++;
    return 0;
}

static void test_close_and_late_events(void **state)
{
    struct fx *f = *state;
    char p[4][ID_BYTES + 1];
    int64_t d25 = T("2026-11-25T10:00:00.000Z"), d26 = d25 + DAY;
    enum settle_msg_result r[64];
    pay(f, "m-1", "KRW", 1000, 0, d25, p[0]);
    pay(f, "m-2", "KRW", 2000, 0, d25, p[1]);
    pay(f, "m-1", "KRW", 4000, 0, d26, p[2]);
    deliver(f, d26, NULL);
    /* closing the future is refused; today is allowed */
    uint64_t closed = 99;
    assert_int_equal(settle_store_close_date(f->s, &f->cal, D("2026-11-27"), d26, &closed),
                     -EINVAL);
    assert_int_equal(closed, 0);
    /* close by time: nothing is due before 2026-11-26T00:10 */
    assert_int_equal(settle_store_close_due(f->s, &f->cal, T("2026-11-26T00:09:59.999Z"), &closed),
                     0);
    assert_int_equal(closed, 0);
    assert_int_equal(settle_store_close_due(f->s, &f->cal, T("2026-11-26T00:10:00.000Z"), &closed),
                     0);
    assert_int_equal(closed, 2);
    struct settle_batch b = batch(f, "m-1", "KRW", "2026-11-25");
    assert_true(b.closed);
    assert_int_equal(b.closed_at_ms, T("2026-11-26T00:10:00.000Z"));
    assert_false(batch(f, "m-1", "KRW", "2026-11-26").closed);
    /* one settlement.closed each, key = merchant */
    struct out_list *o = outbox(f, 0);
    assert_int_equal(o->n, 2);
    assert_string_equal(o->topic[0], "settlement.closed");
    assert_non_null(strstr(o->value[0], "\"event_id\":\"evt_stl_20261125_KRW_m-"));
    /* idempotent */
    assert_int_equal(settle_store_close_date(f->s, &f->cal, D("2026-11-25"), d26, &closed), 0);
    assert_int_equal(closed, 0);
    assert_int_equal(outbox(f, 0)->n, 2);

    /* a late refund and a late capture of the 25th: adjustments of the 26th */
    assert_int_equal(settle_gen_refund(&f->g, p[0], 300, d25 + HOUR), 201);
    pay(f, "m-1", "KRW", 50, 0, d25 + 2 * HOUR, p[3]);
    deliver(f, d26 + HOUR, r);
    assert_int_equal(r[0], SETTLE_MSG_ADJUSTED);
    assert_int_equal(r[2], SETTLE_MSG_ADJUSTED);
    b = batch(f, "m-1", "KRW", "2026-11-25");
    assert_int_equal(b.gross, 1000); /* final */
    assert_int_equal(b.refunds, 0);
    b = batch(f, "m-1", "KRW", "2026-11-26");
    assert_int_equal(b.gross, 4000);
    assert_int_equal(b.adjustments, -250);
    assert_int_equal(settle_batch_net(&b), 3750);
    struct adj_list al = {0};
    assert_int_equal(settle_store_adjustments(f->s, &b.key, adj_visit, &al), 0);
    assert_int_equal(al.n, 2);
    assert_int_equal(al.amount[0] + al.amount[1], -250);
    assert_int_equal(al.source[0], D("2026-11-25"));

    /* a manual close of today: the date is closed even for merchants without a batch */
    assert_int_equal(
        settle_store_close_date(f->s, &f->cal, D("2026-11-26"), d26 + 2 * HOUR, &closed), 0);
    assert_int_equal(closed, 1);
    pay(f, "m-7", "EUR", 10, 0, d26 + HOUR, p[0]);
    deliver(f, d26 + 3 * HOUR, r);
    assert_int_equal(r[1], SETTLE_MSG_ADJUSTED);
    b = batch(f, "m-7", "EUR", "2026-11-27");
    assert_int_equal(b.adjustments, 10);
    struct settle_store_stats st;
    settle_store_get_stats(f->s, &st);
    assert_int_equal(st.batches_closed, 3);
    assert_int_equal(st.open_batches, 1);
}

/* ---- Listings ------------------------------------------------------------------------------ */

struct ids {
    int n;
    char id[64][SETTLE_BATCH_ID_MAX_BYTES + 1];
};

static int id_visit(void *arg, const struct settle_batch *b)
{
    struct ids *l = arg;
    settle_batch_id(l->id[l->n++], &b->key);
    return 0;
}

static int list(struct fx *f, const struct settle_filter *flt, uint32_t limit, struct ids *all)
{
    uint64_t after = 0;
    int pages = 0;
    all->n = 0;
    do {
        struct ids page = {0};
        assert_int_equal(settle_store_batch_list(f->s, flt, after, limit, id_visit, &page, &after),
                         0);
        assert_true(page.n <= (int)limit);
        for (int i = 0; i < page.n; i++)
            strcpy(all->id[all->n++], page.id[i]);
        pages++;
    } while (after != 0);
    return pages;
}

static void test_listing_filters_and_paging(void **state)
{
    struct fx *f = *state;
    int64_t t = T("2026-11-24T10:00:00.000Z");
    const char *merchants[] = {"m-1", "m-2", "m-3"};
    char p[ID_BYTES + 1];
    for (int d = 0; d < 3; d++)
        for (int m = 0; m < 3; m++)
            pay(f, merchants[m], m == 2 ? "USD" : "KRW", 100, 0, t + d * DAY, p);
    deliver(f, t + 2 * DAY, NULL);
    assert_int_equal(settle_store_close_date(f->s, &f->cal, D("2026-11-24"), t + 2 * DAY, NULL), 0);
    struct settle_filter any = {0};
    struct ids all;
    assert_int_equal(list(f, &any, 4, &all), 3);
    assert_int_equal(all.n, 9);
    assert_string_equal(all.id[0], "stl_20261124_KRW_m-1");
    assert_string_equal(all.id[8], "stl_20261126_USD_m-3");
    assert_int_equal(list(f, &any, 9, &all), 1); /* exactly a page: next_after null */
    struct settle_filter by_m = {.has_merchant = true, .merchant_id = "m-2", .merchant_id_len = 3};
    list(f, &by_m, 1, &all);
    assert_int_equal(all.n, 3);
    assert_string_equal(all.id[2], "stl_20261126_KRW_m-2");
    struct settle_filter by_d = {.has_date = true, .date = D("2026-11-25")};
    list(f, &by_d, 100, &all);
    assert_int_equal(all.n, 3);
    struct settle_filter open = {.status = SETTLE_OPEN};
    list(f, &open, 2, &all);
    assert_int_equal(all.n, 6);
    struct settle_filter closed = {.status = SETTLE_CLOSED};
    list(f, &closed, 2, &all);
    assert_int_equal(all.n, 3);
    struct settle_filter md = {.has_merchant = true,
                               .merchant_id = "m-3",
                               .merchant_id_len = 3,
                               .has_date = true,
                               .date = D("2026-11-26"),
                               .status = SETTLE_OPEN};
    list(f, &md, 5, &all);
    assert_int_equal(all.n, 1);
    assert_string_equal(all.id[0], "stl_20261126_USD_m-3");
    struct settle_filter none = {.has_merchant = true, .merchant_id = "zz", .merchant_id_len = 2};
    list(f, &none, 5, &all);
    assert_int_equal(all.n, 0);
}

/* ---- Horizon ------------------------------------------------------------------------------- */

static void test_retention_horizon(void **state)
{
    struct fx *f = *state;
    int64_t t = T("2026-11-01T10:00:00.000Z");
    char p[ID_BYTES + 1];
    for (int i = 0; i < 5; i++)
        pay(f, "m-1", "KRW", 100 + i, 0, t + i * DAY, p);
    deliver(f, t + 5 * DAY, NULL);
    struct settle_store_stats st;
    settle_store_get_stats(f->s, &st);
    assert_int_equal(st.horizon, D("2026-11-06") - SETTLE_RETENTION_DAYS_DEFAULT);
    assert_int_equal(st.expired, 0);
    /* 37 days later the ids (and index entries) of 11-01 and 11-02 are forgotten... */
    assert_int_equal(settle_store_flush(f->s, &f->cal, t + 37 * DAY), 0);
    settle_store_get_stats(f->s, &st);
    assert_int_equal(st.horizon, D("2026-12-08") - SETTLE_RETENTION_DAYS_DEFAULT);
    assert_int_equal(st.expired, 4); /* two ids and two captures */
    struct settle_capture cap;
    char first[ID_BYTES + 1];
    ids_format(first, IDS_PAYMENT, 3, 1);
    assert_int_equal(settle_store_capture_get(f->s, first, &cap), -ENOENT);
    /* ...so a redelivery of one of them is refused, not counted twice */
    struct settle_msg m = {.topic = "payment.captured", .topic_len = 16, .offset = 1000};
    m.value = settle_gen_event(&f->g, 1, &m.value_len, NULL);
    assert_int_equal(settle_store_apply(f->s, &f->cal, &m, 1, t + 37 * DAY), 0);
    assert_int_equal(m.result, SETTLE_MSG_DEAD_LETTER);
    assert_int_equal(batch(f, "m-1", "KRW", "2026-11-01").gross, 100);
    /* the horizon never goes back with the clock */
    assert_int_equal(settle_store_flush(f->s, &f->cal, t), 0);
    settle_store_get_stats(f->s, &st);
    assert_int_equal(st.horizon, D("2026-12-08") - SETTLE_RETENTION_DAYS_DEFAULT);
}

/* ---- Reconciliation ------------------------------------------------------------------------ */

struct items {
    int n;
    uint64_t item[64], line[64];
    enum recon_category cat[64];
    char reason[64][128];
    char tid[64][RECON_FIELD_MAX_BYTES + 1];
    int64_t expected[64];
};

static int item_visit(void *arg, const struct recon_item *it)
{
    struct items *l = arg;
    l->item[l->n] = it->item;
    l->line[l->n] = it->line;
    l->cat[l->n] = it->category;
    snprintf(l->reason[l->n], sizeof(l->reason[0]), "%s", it->reason ? it->reason : "");
    snprintf(l->tid[l->n], sizeof(l->tid[0]), "%.*s", it->transaction_id_len, it->transaction_id);
    l->expected[l->n] = it->has_capture ? it->capture.amount : -1;
    l->n++;
    return 0;
}

static void all_items(struct fx *f, uint64_t file, struct items *l)
{
    uint64_t after = 0;
    l->n = 0;
    do
        assert_int_equal(settle_store_recon_items(f->s, file, after, 2, item_visit, l, &after), 0);
    while (after);
}

/* Uploads text in chunks of `chunk` bytes; returns finish's result. */
static int upload(struct fx *f, const char *text, size_t chunk, int64_t now,
                  struct recon_summary *sum)
{
    struct settle_recon *r;
    assert_int_equal(settle_recon_begin(f->s, now, &r), 0);
    size_t n = strlen(text);
    for (size_t i = 0; i < n; i += chunk) {
        int rc = settle_recon_feed(r, text + i, n - i < chunk ? n - i : chunk);
        if (rc) {
            settle_recon_abort(r);
            return rc;
        }
    }
    return settle_recon_finish(r, sum);
}

static void test_reconciliation(void **state)
{
    struct fx *f = *state;
    int64_t t = T("2026-11-25T10:00:00.000Z");
    char p[5][ID_BYTES + 1], text[2048];
    pay(f, "m-1", "KRW", 15000, 12000, t, p[0]); /* matched (captured amount 12000) */
    pay(f, "m-1", "KRW", 5000, 0, t, p[1]);      /* amount_mismatch */
    pay(f, "m-2", "USD", 700, 0, t, p[2]);       /* currency_mismatch */
    pay(f, "m-2", "USD", 800, 0, t, p[3]);       /* missing_in_bank */
    pay(f, "m-2", "USD", 900, 0, t - DAY, p[4]); /* another date: not missing */
    assert_int_equal(settle_gen_refund(&f->g, p[0], 100, t + 1), 201); /* refunds don't count */
    deliver(f, t + HOUR, NULL);
    snprintf(text, sizeof(text),
             "transaction_id,amount,currency,value_date\r\n"
             "%s,12000,KRW,2026-11-25\r\n"
             "%s,4999,KRW,2026-11-25\r\n"
             "%s,700,KRW,2026-11-25\r\n"
             "pay_0300000000000000ff,10,KRW,2026-11-25\r\n"
             "%s,12000,KRW,2026-11-25\r\n"
             "%s,12.00,KRW,2026-11-25\r\n"
             "only,two\r\n"
             "\r\n"
             "bank-ref-77,5,EUR,2026-11-25\r\n",
             p[0], p[1], p[2], p[0], p[1]);
    struct recon_summary s, again;
    assert_int_equal(upload(f, text, 1 << 20, t + 2 * HOUR, &s), 0);
    assert_int_equal(s.seq, 1);
    assert_int_equal(s.status, RECON_STATUS_DONE);
    assert_int_equal(s.lines, 9);
    assert_int_equal(s.counts[RECON_MATCHED], 1);
    assert_int_equal(s.counts[RECON_AMOUNT_MISMATCH], 1);
    assert_int_equal(s.counts[RECON_CURRENCY_MISMATCH], 1);
    assert_int_equal(s.counts[RECON_UNKNOWN_TRANSACTION], 2);
    assert_int_equal(s.counts[RECON_DUPLICATE_IN_FILE], 1);
    assert_int_equal(s.counts[RECON_MALFORMED], 3);
    assert_int_equal(s.counts[RECON_MISSING_IN_BANK], 1);
    /* the same file fed one byte at a time gives the same summary */
    assert_int_equal(upload(f, text, 1, t + 2 * HOUR, &again), 0);
    assert_int_equal(again.seq, 2);
    assert_memory_equal(again.counts, s.counts, sizeof(s.counts));
    assert_int_equal(settle_store_recon_get(f->s, 1, &again), 0);
    assert_memory_equal(again.counts, s.counts, sizeof(s.counts));
    struct items *l = calloc(1, sizeof(*l));
    all_items(f, 1, l);
    assert_int_equal(l->n, 9); /* every line but the matched one, and the missing payment */
    assert_int_equal(l->line[0], 3);
    assert_int_equal(l->cat[0], RECON_AMOUNT_MISMATCH);
    assert_int_equal(l->expected[0], 5000);
    assert_int_equal(l->cat[1], RECON_CURRENCY_MISMATCH);
    assert_int_equal(l->cat[2], RECON_UNKNOWN_TRANSACTION);
    assert_int_equal(l->cat[3], RECON_DUPLICATE_IN_FILE);
    assert_int_equal(l->line[3], 6);
    assert_int_equal(l->cat[4], RECON_MALFORMED);
    assert_int_equal(l->line[4], 7);
    assert_non_null(strstr(l->reason[4], "bad amount"));
    assert_string_equal(l->tid[4], p[1]);
    assert_non_null(strstr(l->reason[5], "wrong field count"));
    assert_string_equal(l->reason[6], "empty line");
    assert_int_equal(l->line[6], 9);
    assert_int_equal(l->cat[7], RECON_UNKNOWN_TRANSACTION);
    assert_int_equal(l->cat[8], RECON_MISSING_IN_BANK);
    assert_int_equal(l->line[8], 0);
    assert_int_equal(l->item[8], 11); /* after the last line (10) */
    assert_string_equal(l->tid[8], p[3]);

    /* a wrong header: -EPROTO, nothing stored */
    struct settle_recon *r;
    assert_int_equal(settle_recon_begin(f->s, t, &r), 0);
    assert_int_equal(settle_recon_feed(r, "id,amount\n1,2\n", 14), -EPROTO);
    assert_non_null(strstr(settle_recon_error(r), RECON_HEADER));
    settle_recon_abort(r);
    assert_int_equal(upload(f, "", 1, t, &again), -EPROTO);
    assert_int_equal(settle_store_recon_get(f->s, 3, &again), -ENOENT);
    /* only a header: a file of zero lines */
    assert_int_equal(upload(f, RECON_HEADER "\n", 7, t, &again), 0);
    assert_int_equal(again.lines, 0);

    /* rematch after the late capture of the unknown payment and one more capture of the
     * 25th: the unknown line matches, the new capture is missing in the bank */
    char q[2][ID_BYTES + 1];
    pay(f, "m-3", "KRW", 10, 0, t + 3 * HOUR, q[0]);
    pay(f, "m-3", "KRW", 11, 0, t + 3 * HOUR, q[1]);
    snprintf(text, sizeof(text), RECON_HEADER "\n%s,10,KRW,2026-11-25\n", q[0]);
    assert_int_equal(upload(f, text, 3, t + 3 * HOUR, &s), 0);
    assert_int_equal(s.counts[RECON_UNKNOWN_TRANSACTION], 1);
    assert_int_equal(s.counts[RECON_MISSING_IN_BANK], 4); /* p[0..3] of the 25th */
    size_t before = outbox(f, 0)->n;
    deliver(f, t + 4 * HOUR, NULL);
    assert_int_equal(settle_store_recon_rematch(f->s, s.seq, t + 5 * HOUR, &again), 0);
    assert_int_equal(again.counts[RECON_UNKNOWN_TRANSACTION], 0);
    assert_int_equal(again.counts[RECON_MATCHED], 1);
    assert_int_equal(again.rematches, 1);
    /* missing: q[1], captured on the 25th and known now, is added (and published) */
    assert_int_equal(again.counts[RECON_MISSING_IN_BANK], 5);
    assert_int_equal(outbox(f, 0)->n, (int)before + 1);
    /* a second rematch changes nothing */
    assert_int_equal(settle_store_recon_rematch(f->s, s.seq, t + 5 * HOUR, &again), 0);
    assert_int_equal(again.counts[RECON_MISSING_IN_BANK], 5);
    assert_int_equal(outbox(f, 0)->n, (int)before + 1);
    assert_int_equal(again.rematches, 2);
    assert_int_equal(settle_store_recon_rematch(f->s, 99, t, &again), -ENOENT);
    free(l);
}

static void test_upload_cut_by_a_crash(void **state)
{
    struct fx *f = *state;
    static char text[RECON_COMMIT_LINES * 40 + 64];
    size_t n = (size_t)snprintf(text, sizeof(text), RECON_HEADER "\n");
    for (int i = 0; i < RECON_COMMIT_LINES + 10; i++)
        n += (size_t)snprintf(text + n, sizeof(text) - n, "x%d,1,KRW,2026-11-25\n", i);
    struct settle_recon *r;
    assert_int_equal(settle_recon_begin(f->s, 0, &r), 0);
    assert_int_equal(settle_recon_feed(r, text, n), 0); /* one commit happened */
    assert_int_equal(settle_recon_lines(r), RECON_COMMIT_LINES + 10);
    struct recon_summary s;
    assert_int_equal(settle_store_recon_get(f->s, 1, &s), 0);
    assert_int_equal(s.status, RECON_STATUS_PROCESSING);
    assert_int_equal(settle_store_recon_rematch(f->s, 1, 0, &s), -EBUSY);
    /* the process dies: the upload is never finished */
    free(r);
    settle_store_close(f->s);
    f->s = open_store(f->dir, NULL);
    assert_int_equal(settle_store_recon_get(f->s, 1, &s), 0);
    assert_int_equal(s.status, RECON_STATUS_FAILED);
    assert_int_equal(s.lines, RECON_COMMIT_LINES);
    assert_int_equal(settle_store_recon_rematch(f->s, 1, 0, &s), -EINVAL);
    /* an upload the client gives up on */
    assert_int_equal(settle_recon_begin(f->s, 0, &r), 0);
    assert_int_equal(settle_recon_feed(r, text, n), 0);
    settle_recon_abort(r);
    assert_int_equal(settle_store_recon_get(f->s, 2, &s), 0);
    assert_int_equal(s.status, RECON_STATUS_FAILED);
}

/* ---- Idempotency records ------------------------------------------------------------------- */

/* Renders what the test can check: the results the store handed over. */
static size_t idem_render(void *arg, const struct settle_idem_result *res, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s file=%llu rematches=%u closed=%llu outcome=%d",
                     (const char *)arg, res->sum ? (unsigned long long)res->sum->seq : 0ull,
                     res->sum ? (unsigned)res->sum->rematches : 0u, (unsigned long long)res->closed,
                     (int)res->outcome);
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

static struct settle_idem_put idem_of(const char *key, uint16_t status, const char *tag)
{
    struct settle_idem_put p = {.key = key,
                                .key_len = strlen(key),
                                .status = status,
                                .render = idem_render,
                                .arg = (void *)tag};
    memset(p.fp, key[0], sizeof(p.fp));
    return p;
}

static void expect_idem(struct fx *f, const char *key, uint16_t status, const char *body)
{
    struct settle_idem_record *rec = malloc(sizeof(*rec));
    assert_int_equal(settle_store_idem_get(f->s, key, strlen(key), rec), 0);
    assert_int_equal(rec->status, status);
    assert_int_equal(rec->fp[0], (uint8_t)key[0]);
    assert_int_equal(rec->fp[SETTLE_IDEM_FP_BYTES - 1], (uint8_t)key[0]);
    if (rec->body_len != strlen(body) || memcmp(rec->body, body, rec->body_len) != 0)
        fail_msg("%s: %.*s, want %s", key, (int)rec->body_len, rec->body, body);
    free(rec);
}

static int upload_idem(struct fx *f, const char *text, int64_t now, const struct settle_idem_put *p,
                       struct recon_summary *sum)
{
    struct settle_recon *r;
    assert_int_equal(settle_recon_begin(f->s, now, &r), 0);
    assert_int_equal(settle_recon_feed(r, text, strlen(text)), 0);
    return settle_recon_finish_idem(r, sum, p);
}

/* Each *_idem call writes its record with the results, and in no extra transaction: the
 * record is part of the operation's last commit. */
static void test_idempotency_records(void **state)
{
    struct fx *f = *state;
    int64_t t = T("2026-11-25T10:00:00.000Z");
    char p[ID_BYTES + 1], text[256];
    pay(f, "m-1", "KRW", 500, 0, t, p);
    deliver(f, t, NULL);
    snprintf(text, sizeof(text), RECON_HEADER "\n%s,400,KRW,2026-11-25\n", p);
    struct settle_store_stats st0, st1;
    struct recon_summary sum;
    settle_store_get_stats(f->s, &st0);
    assert_int_equal(upload(f, text, 1 << 20, t, &sum), 0); /* file 1, no record */
    settle_store_get_stats(f->s, &st1);
    uint64_t upload_commits = st1.commits - st0.commits;
    struct settle_idem_put up = idem_of("up", 201, "upload");
    assert_int_equal(upload_idem(f, text, t, &up, &sum), 0);
    settle_store_get_stats(f->s, &st0);
    assert_int_equal(st0.commits - st1.commits, upload_commits);
    expect_idem(f, "up", 201, "upload file=2 rematches=0 closed=0 outcome=0");
    uint64_t n;
    assert_int_equal(settle_store_idem_count(f->s, &n), 0);
    assert_int_equal(n, 1);

    struct settle_idem_put rm = idem_of("rm", 200, "rematch");
    assert_int_equal(settle_store_recon_rematch_idem(f->s, 2, t, &sum, &rm), 0);
    expect_idem(f, "rm", 200, "rematch file=2 rematches=1 closed=0 outcome=0");
    struct settle_idem_put cl = idem_of("cl", 200, "close");
    uint64_t closed;
    assert_int_equal(settle_store_close_date_idem(f->s, &f->cal, D("2026-11-25"), t, &closed, &cl),
                     0);
    assert_int_equal(closed, 1);
    expect_idem(f, "cl", 200, "close file=0 rematches=0 closed=1 outcome=0");
    /* a refused close (the future) writes nothing */
    struct settle_idem_put fut = idem_of("fut", 200, "close");
    assert_int_equal(settle_store_close_date_idem(f->s, &f->cal, D("2026-11-27"), t, &closed, &fut),
                     -EINVAL);
    struct settle_idem_record *rec = malloc(sizeof(*rec));
    assert_int_equal(settle_store_idem_get(f->s, "fut", 3, rec), -ENOENT);
    /* a dead letter's replay, and a 404 stored alone */
    struct settle_msg m = {.topic = "payment.captured",
                           .topic_len = 16,
                           .partition = 3,
                           .offset = 0,
                           .value = "{bad",
                           .value_len = 4};
    assert_int_equal(settle_store_apply(f->s, &f->cal, &m, 1, t), 0);
    struct settle_idem_put dl = idem_of("dl", 200, "dlq");
    enum settle_msg_result res;
    assert_int_equal(settle_store_dlq_replay_idem(f->s, &f->cal, 1, t, &res, &dl), 0);
    expect_idem(f, "dl", 200, "dlq file=0 rematches=0 closed=0 outcome=5");
    uint8_t fp[SETTLE_IDEM_FP_BYTES];
    memset(fp, 'n', sizeof(fp));
    assert_int_equal(settle_store_idem_put(f->s, "nf", 2, fp, 404, "{\"error\":{}}", 12, t), 0);
    expect_idem(f, "nf", 404, "{\"error\":{}}");

    /* Durable across a reopen. */
    settle_store_close(f->s);
    f->s = open_store(f->dir, NULL);
    expect_idem(f, "up", 201, "upload file=2 rematches=0 closed=0 outcome=0");
    assert_int_equal(settle_store_idem_count(f->s, &n), 0);
    assert_int_equal(n, 5);

    /* The upload's last commit fails (its fsync): neither the file's completion nor the
     * record is there; the file is failed at the next open. */
    settle_store_close(f->s);
    struct settle_store_options o = {.fault_after_commits = (unsigned)upload_commits,
                                     .fault_commit_errno = EIO};
    f->s = open_store(f->dir, &o); /* its recovery transaction is a commit */
    struct settle_idem_put up2 = idem_of("up2", 201, "upload");
    assert_int_equal(upload_idem(f, text, t, &up2, &sum), -EIO);
    settle_store_close(f->s);
    f->s = open_store(f->dir, NULL);
    assert_int_equal(settle_store_idem_get(f->s, "up2", 3, rec), -ENOENT);
    assert_int_equal(settle_store_recon_get(f->s, 3, &sum), 0);
    assert_int_equal(sum.status, RECON_STATUS_FAILED);
    free(rec);
}

/* Records older than the retention are deleted by later transactions, at most
 * SETTLE_IDEM_EXPIRE_MAX each, oldest first; younger ones stay. */
static void test_idempotency_expiry(void **state)
{
    struct fx *f = *state;
    settle_store_close(f->s);
    struct settle_store_options o = {.idem_ttl_ms = HOUR};
    f->s = open_store(f->dir, &o);
    int64_t t = T("2026-11-25T10:00:00.000Z");
    uint8_t fp[SETTLE_IDEM_FP_BYTES] = {0};
    char key[32];
    unsigned total = SETTLE_IDEM_EXPIRE_MAX + 10;
    for (unsigned i = 0; i < total; i++) {
        snprintf(key, sizeof(key), "old-%u", i);
        assert_int_equal(settle_store_idem_put(f->s, key, strlen(key), fp, 200, "{}", 2, t + i), 0);
    }
    assert_int_equal(settle_store_idem_put(f->s, "young", 5, fp, 200, "{}", 2, t + HOUR), 0);
    uint64_t n;
    struct settle_store_stats st;
    /* an hour after the first: only those created before now - ttl go */
    assert_int_equal(settle_store_flush(f->s, &f->cal, t + HOUR + 5), 0);
    assert_int_equal(settle_store_idem_count(f->s, &n), 0);
    assert_int_equal(n, total + 1 - 5);
    /* later: the bound per transaction, then the rest */
    assert_int_equal(settle_store_flush(f->s, &f->cal, t + 2 * HOUR - 1), 0);
    assert_int_equal(settle_store_idem_count(f->s, &n), 0);
    assert_int_equal(n, total + 1 - 5 - SETTLE_IDEM_EXPIRE_MAX);
    assert_int_equal(settle_store_flush(f->s, &f->cal, t + 2 * HOUR - 1), 0);
    assert_int_equal(settle_store_idem_count(f->s, &n), 0);
    assert_int_equal(n, 1);
    struct settle_idem_record *rec = malloc(sizeof(*rec));
    assert_int_equal(settle_store_idem_get(f->s, "old-9", 5, rec), -ENOENT);
    assert_int_equal(settle_store_idem_get(f->s, "young", 5, rec), 0);
    settle_store_get_stats(f->s, &st);
    assert_int_equal(st.idem_expired, total);
    free(rec);
}

/* ---- Outbox ---------------------------------------------------------------------------------- */

static void test_outbox_replicated_mark(void **state)
{
    struct fx *f = *state;
    int64_t t = T("2026-11-25T10:00:00.000Z");
    char p[ID_BYTES + 1];
    for (int i = 0; i < 5; i++)
        pay(f, "m-x", "KRW", 10, 0, t, p);
    struct settle_msg m = {
        .topic = "payment.captured", .topic_len = 16, .offset = 0, .value = "x", .value_len = 1};
    for (int i = 0; i < 5; i++) {
        m.offset = i;
        assert_int_equal(settle_store_apply(f->s, &f->cal, &m, 1, t), 0); /* 5 dead letters */
    }
    struct out_list *o = outbox(f, 0);
    assert_int_equal(o->n, 5);
    assert_int_equal(o->last, 5);
    o = outbox(f, 3);
    assert_int_equal(o->n, 2);
    settle_store_set_replicated(f->s, 3);
    settle_store_set_replicated(f->s, 2); /* never backwards */
    assert_int_equal(settle_store_flush(f->s, &f->cal, t), 0);
    assert_int_equal(outbox(f, 0)->n, 2);
    settle_store_close(f->s);
    f->s = open_store(f->dir, NULL);
    struct settle_store_stats st;
    settle_store_get_stats(f->s, &st);
    assert_int_equal(st.replicated_seq, 3);
    assert_int_equal(st.outbox_seq, 5);
    assert_int_equal(outbox(f, 0)->n, 2);
}

/* ---- Fault injection ------------------------------------------------------------------------- */

static void apply_one(struct fx *f, struct settle_store *s, size_t event, int64_t offset,
                      int64_t now, int want_rc)
{
    struct settle_msg m = {.partition = 0, .offset = offset};
    m.value = settle_gen_event(&f->g, event, &m.value_len, &m.topic);
    m.topic_len = strlen(m.topic);
    assert_int_equal(settle_store_apply(s, &f->cal, &m, 1, now), want_rc);
}

static void test_fault_put_once_and_persistent(void **state)
{
    struct fx *f = *state;
    int64_t t = T("2026-11-25T10:00:00.000Z");
    char p[ID_BYTES + 1];
    pay(f, "m-1", "KRW", 100, 0, t, p);
    pay(f, "m-1", "KRW", 200, 0, t, p);
    settle_store_close(f->s);
    /* a put fails with an I/O error: nothing of the transaction is there, and the store
     * is failed for good */
    struct settle_store_options o = {.fault_after_puts = 2, .fault_errno = EIO};
    f->s = open_store(f->dir, &o);
    apply_one(f, f->s, 1, 0, t, -EIO);
    assert_int_equal(settle_store_failed(f->s), -EIO);
    apply_one(f, f->s, 3, 1, t, -EIO);
    assert_int_equal(settle_store_close_due(f->s, &f->cal, t + DAY, NULL), -EIO);
    settle_store_close(f->s);
    f->s = open_store(f->dir, NULL);
    int64_t next;
    assert_int_equal(settle_store_offset_get(f->s, "payment.captured", 16, 0, &next), -ENOENT);
    struct settle_key k;
    struct settle_batch b;
    settle_key_set(&k, "m-1", 3, "KRW", D("2026-11-25"));
    assert_int_equal(settle_store_batch_get(f->s, &k, &b), -ENOENT);
    /* redelivered after the restart: counted once */
    apply_one(f, f->s, 1, 0, t, 0);
    apply_one(f, f->s, 3, 1, t, 0);
    assert_int_equal(batch(f, "m-1", "KRW", "2026-11-25").gross, 300);
    settle_store_close(f->s);
    /* a failing commit (its fsync) */
    o = (struct settle_store_options){.fault_after_commits = 1, .fault_commit_errno = EIO};
    f->s = open_store(f->dir, &o); /* the open's recovery transaction is commit 1 */
    pay(f, "m-1", "KRW", 400, 0, t, p);
    apply_one(f, f->s, 5, 2, t, -EIO);
    apply_one(f, f->s, 5, 2, t, -EIO);
    settle_store_close(f->s);
    f->s = open_store(f->dir, NULL);
    assert_int_equal(batch(f, "m-1", "KRW", "2026-11-25").gross, 300);
    apply_one(f, f->s, 5, 2, t, 0);
    assert_int_equal(batch(f, "m-1", "KRW", "2026-11-25").gross, 700);
}

static void test_fault_map_full(void **state)
{
    struct fx *f = *state;
    int64_t t = T("2026-11-25T10:00:00.000Z");
    char p[ID_BYTES + 1];
    pay(f, "m-1", "KRW", 100, 0, t, p);
    pay(f, "m-1", "KRW", 200, 0, t, p);
    settle_store_close(f->s);
    rm_rf(f->dir); /* a fresh directory: its map size is the one asked for */
    /* MAP_FULL once: the map grows and the transaction runs again */
    struct settle_store_options o = {.map_bytes = 1 << 20,
                                     .map_max_bytes = 1 << 22,
                                     .fault_after_puts = 1,
                                     .fault_errno = MDB_MAP_FULL};
    f->s = open_store(f->dir, &o);
    apply_one(f, f->s, 1, 0, t, 0);
    struct settle_store_stats st;
    settle_store_get_stats(f->s, &st);
    assert_int_equal(st.map_full, 1);
    assert_int_equal(st.map_grows, 1);
    assert_int_equal(st.map_bytes, 2 << 20);
    assert_int_equal(settle_store_failed(f->s), 0);
    settle_store_close(f->s);
    /* persistently at the ceiling: -ENOSPC, nothing written, the store goes on */
    o = (struct settle_store_options){.map_bytes = 1 << 22,
                                      .map_max_bytes = 1 << 22,
                                      .fault_after_puts = 0,
                                      .fault_errno = MDB_MAP_FULL,
                                      .fault_persistent = 1};
    f->s = open_store(f->dir, &o);
    apply_one(f, f->s, 3, 1, t, -ENOSPC);
    assert_int_equal(settle_store_failed(f->s), 0);
    assert_int_equal(batch(f, "m-1", "KRW", "2026-11-25").gross, 100);
    settle_store_close(f->s);
    /* a real MAP_FULL: a map of 64 KiB pages fills with dead letters of 32 KiB values and
     * grows by itself */
    o = (struct settle_store_options){.map_bytes = 1 << 20, .map_max_bytes = 64 << 20};
    f->s = open_store(f->dir, &o);
    static char big[32 * 1024];
    memset(big, 'x', sizeof(big));
    for (int i = 0; i < 100; i++) {
        struct settle_msg m = {.topic = "payment.captured",
                               .topic_len = 16,
                               .offset = 10 + i,
                               .value = big,
                               .value_len = sizeof(big)};
        assert_int_equal(settle_store_apply(f->s, &f->cal, &m, 1, t), 0);
        assert_int_equal(m.result, SETTLE_MSG_DEAD_LETTER);
    }
    settle_store_get_stats(f->s, &st);
    assert_true(st.map_grows >= 1);
    assert_int_equal(st.dead_letters, 100);
}

/* ---- The worked example of docs/backoffice.md ---------------------------------------------- */

/* Europe/Berlin in late November is CET, +01:00 all along. */
static int cet(void *arg, int64_t u, int32_t *off)
{
    *off = 3600;
    return 0;
}

static void test_doc_worked_example(void **state)
{
    struct fx *f = *state;
    settle_calendar_init(&f->cal, cet, NULL, 120, 10 * 60000); /* --cutoff 02:00 --grace 10m */
    char a[ID_BYTES + 1], b[ID_BYTES + 1], c[ID_BYTES + 1], e[ID_BYTES + 1];
    /* times in UTC; CET is one hour ahead */
    assert_int_equal(
        settle_gen_authorize(&f->g, "m-1", "EUR", 10000, T("2026-11-24T22:25:00.000Z"), a), 201);
    assert_int_equal(settle_gen_capture(&f->g, a, 8000, T("2026-11-24T22:30:00.000Z")), 200);
    pay(f, "m-1", "EUR", 5000, 0, T("2026-11-25T00:15:00.000Z"), b);
    pay(f, "m-1", "EUR", 12000, 0, T("2026-11-25T01:05:00.000Z"), c);
    deliver(f, T("2026-11-25T01:06:00.000Z"), NULL);
    uint64_t closed;
    assert_int_equal(settle_store_close_due(f->s, &f->cal, T("2026-11-25T01:10:00.000Z"), &closed),
                     0);
    assert_int_equal(closed, 1);
    struct settle_batch b24 = batch(f, "m-1", "EUR", "2026-11-24");
    assert_true(b24.closed);
    assert_int_equal(b24.gross, 13000);
    assert_int_equal(b24.capture_count, 2);
    assert_int_equal(settle_batch_net(&b24), 13000);
    /* the refund of 00:50Z (01:50 CET, business date 11-24) arrives at 01:30Z */
    assert_int_equal(settle_gen_refund(&f->g, b, 1000, T("2026-11-25T00:50:00.000Z")), 201);
    enum settle_msg_result r[8];
    deliver(f, T("2026-11-25T01:30:00.000Z"), r);
    assert_int_equal(r[0], SETTLE_MSG_ADJUSTED);
    assert_int_equal(settle_gen_refund(&f->g, a, 2000, T("2026-11-25T08:00:00.000Z")), 201);
    pay(f, "m-1", "EUR", 3000, 0, T("2026-11-25T13:00:00.000Z"), e);
    deliver(f, T("2026-11-25T13:05:00.000Z"), NULL);
    struct settle_batch b25 = batch(f, "m-1", "EUR", "2026-11-25");
    assert_int_equal(b25.gross, 15000);
    assert_int_equal(b25.refunds, 2000);
    assert_int_equal(b25.adjustments, -1000);
    assert_int_equal(settle_batch_net(&b25), 12000);
    assert_int_equal(b25.capture_count, 2);
    assert_int_equal(b25.refund_count, 1);
    assert_false(b25.closed);
    b24 = batch(f, "m-1", "EUR", "2026-11-24");
    assert_int_equal(settle_batch_net(&b24), 13000); /* final */

    char text[1024];
    snprintf(text, sizeof(text),
             "transaction_id,amount,currency,value_date\n"
             "%s,8000,EUR,2026-11-24\n"
             "%s,5500,EUR,2026-11-24\n"
             "%s,12000,USD,2026-11-25\n"
             "pay_0300000000000000ff,300,EUR,2026-11-24\n"
             "%s,8000,EUR,2026-11-24\n"
             "pay_030000000000000009,12.00,EUR,2026-11-24\n",
             a, b, c, a);
    struct recon_summary s;
    assert_int_equal(upload(f, text, 100, T("2026-11-25T13:10:00.000Z"), &s), 0);
    assert_int_equal(s.lines, 6);
    for (int k = 0; k < RECON_CATEGORIES; k++)
        assert_int_equal(s.counts[k], 1);
    struct items *l = calloc(1, sizeof(*l));
    all_items(f, s.seq, l);
    assert_int_equal(l->n, 6);
    assert_int_equal(l->cat[5], RECON_MISSING_IN_BANK);
    assert_string_equal(l->tid[5], e);
    assert_int_equal(l->item[5], 8);
    free(l);
    assert_string_equal(a, "pay_030000000000000001");
}

/* ---- A shared store: members of one group on one host --------------------------------- */

/* The captures of g (settle consumes payment.captured; the authorizations are not). */
static size_t captures_of(const struct settle_gen *g, size_t *idx, size_t cap)
{
    size_t n = 0;
    for (size_t i = 0; i < settle_gen_events(g); i++) {
        const char *topic;
        size_t len;
        settle_gen_event(g, i, &len, &topic);
        if (strcmp(topic, "payment.captured") == 0 && n < cap)
            idx[n++] = i;
    }
    return n;
}

/* Applies captures idx[from, to) of g, each its own message of `partition` at offset
 * off0 + i - from, in transactions of 32; results into r (may be NULL). */
static void apply_range(struct settle_store *s, struct settle_calendar *cal,
                        const struct settle_gen *g, const size_t *idx, size_t from, size_t to,
                        int32_t partition, int64_t off0, int64_t now, enum settle_msg_result *r)
{
    for (size_t i = from; i < to;) {
        struct settle_msg m[32];
        size_t n = 0;
        for (; n < 32 && i < to; n++, i++) {
            memset(&m[n], 0, sizeof(m[n]));
            m[n].value = settle_gen_event(g, idx[i], &m[n].value_len, &m[n].topic);
            m[n].topic_len = strlen(m[n].topic);
            m[n].partition = partition;
            m[n].offset = off0 + (int64_t)(i - from);
        }
        if (settle_store_apply(s, cal, m, n, now) != 0)
            fail_msg("apply");
        for (size_t j = 0; r && j < n; j++)
            r[i - n + j - from] = m[j].result;
    }
}

static void test_shared_members(void **state)
{
    struct fx *f = *state;
    settle_store_close(f->s);
    /* small maps: the child's writes grow the map past ours */
    struct settle_store_options so = {.shared = true, .map_bytes = 64 << 10};
    f->s = open_store(f->dir, &so);
    char why[256];
    struct settle_store *lone = NULL;
    assert_int_equal(settle_store_open(&lone, f->dir, NULL, why, sizeof(why)), -EBUSY);

    struct settle_gen g;
    settle_gen_init(&g, 3, 2048);
    int64_t t = T("2026-11-25T10:00:00.000Z");
    for (int i = 0; i < 800; i++) {
        char id[ID_BYTES + 1];
        assert_int_equal(settle_gen_authorize(&g, i % 2 ? "m-1" : "m-2", "KRW", 100 + i, t, id),
                         201);
        assert_int_equal(settle_gen_capture(&g, id, 0, t + 1), 200);
    }
    static size_t idx[800];
    size_t n = captures_of(&g, idx, 800), half = n / 2;
    assert_int_equal(n, 800);
    bool took = false;
    assert_true(settle_store_publisher(f->s, &took));
    assert_true(took);

    /* A second member (its own process) applies the first half as partition 1, while
     * this one holds the store; it may not publish. */
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        struct settle_store *m = NULL;
        int code = 0;
        if (settle_store_open(&m, f->dir, &so, why, sizeof(why)) != 0)
            _exit(10);
        bool t2 = false;
        if (settle_store_publisher(m, &t2))
            code = 11;
        for (size_t i = 0; i < half && code == 0; i += 32) {
            struct settle_msg msg[32];
            size_t k = 0;
            for (; k < 32 && i + k < half; k++) {
                memset(&msg[k], 0, sizeof(msg[k]));
                msg[k].value = settle_gen_event(&g, idx[i + k], &msg[k].value_len, &msg[k].topic);
                msg[k].topic_len = strlen(msg[k].topic);
                msg[k].partition = 1;
                msg[k].offset = (int64_t)(i + k);
            }
            if (settle_store_apply(m, &f->cal, msg, k, t + HOUR))
                code = 12;
            for (size_t j = 0; j < k; j++)
                if (msg[j].result != SETTLE_MSG_COUNTED)
                    code = 15;
        }
        struct settle_progress pr = {"payment.captured", 16, 1, (int64_t)half};
        if (code == 0 && settle_store_progress_put(m, &f->cal, &pr, 1, t + HOUR, 1000))
            code = 13;
        struct settle_store_stats st;
        settle_store_get_stats(m, &st);
        if (code == 0 && st.map_grows == 0)
            code = 14; /* the test needs the child to grow the map */
        settle_store_close(m);
        _exit(code);
    }
    int status = 0;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 0);

    /* This member: the second half as partition 0, then the first half again at new
     * offsets of partition 0 (the at-least-once producer's duplicates): counted once. */
    enum settle_msg_result *r = calloc(n, sizeof(*r));
    apply_range(f->s, &f->cal, &g, idx, half, n, 0, 0, t + HOUR, NULL);
    struct settle_store_stats st;
    settle_store_get_stats(f->s, &st);
    assert_true(st.map_adopted >= 1); /* the child's larger map */
    apply_range(f->s, &f->cal, &g, idx, 0, half, 0, (int64_t)(n - half), t + HOUR, r);
    for (size_t i = 0; i < half; i++)
        assert_int_equal(r[i], SETTLE_MSG_DUPLICATE);
    free(r);
    struct settle_batch b1 = batch(f, "m-1", "KRW", "2026-11-25");
    struct settle_batch b2 = batch(f, "m-2", "KRW", "2026-11-25");
    int64_t want1 = 0, want2 = 0;
    for (int i = 0; i < 800; i++)
        *(i % 2 ? &want1 : &want2) += 100 + i;
    assert_int_equal(b1.gross, want1);
    assert_int_equal(b2.gross, want2);
    assert_int_equal(b1.capture_count + b2.capture_count, 800);

    /* Group progress: partition 1 as the child reported it (wall 1000), partition 0 now. */
    assert_true(settle_store_progress_caught_up(f->s, 1000, 5000));
    struct settle_progress pr = {"payment.captured", 16, 0, (int64_t)n};
    assert_int_equal(settle_store_progress_put(f->s, &f->cal, &pr, 1, t + HOUR, 3000), 0);
    assert_true(settle_store_progress_caught_up(f->s, 3000, 5000));
    assert_false(settle_store_progress_caught_up(f->s, 6500, 5000)); /* 1's member is gone */
    pr.high = (int64_t)n + 1; /* partition 0 has a message not consumed yet */
    assert_int_equal(settle_store_progress_put(f->s, &f->cal, &pr, 1, t + HOUR, 3000), 0);
    assert_false(settle_store_progress_caught_up(f->s, 3000, 5000));
    settle_gen_free(&g);
}

/* One settle_store_apply larger than the transaction's working memory (store/
 * settle_store.c, txn_cache): more distinct batches than it holds (it writes them out
 * and starts empty, then a batch written out is touched again), more partitions than it
 * holds (those go to the store directly), a refund on an evicted batch; every total and
 * every partition's offset as if each message had been applied alone. */
static void test_one_commit_beyond_its_working_memory(void **state)
{
    struct fx *f = *state;
    enum { NMER = 4200, NPART = 300, AGAIN = 40 };
    struct settle_gen g;
    settle_gen_init(&g, 4, NMER + AGAIN);
    int64_t t = T("2026-11-25T10:00:00.000Z");
    char id[ID_BYTES + 1], first[ID_BYTES + 1], m[16];
    for (int i = 0; i < NMER + AGAIN; i++) {
        snprintf(m, sizeof(m), "m-%d", i % NMER);
        assert_int_equal(settle_gen_authorize(&g, m, "USD", 1000 + i, t + i, id), 201);
        assert_int_equal(settle_gen_capture(&g, id, 0, t + i), 200);
        if (i == 0)
            memcpy(first, id, sizeof(first));
    }
    assert_int_equal(settle_gen_refund(&g, first, 300, t + NMER + AGAIN), 201);
    size_t n = settle_gen_events(&g);
    struct settle_msg *msgs = calloc(2 * n, sizeof(*msgs));
    int64_t next[NPART] = {0};
    for (size_t i = 0; i < n; i++) {
        struct settle_msg *x = &msgs[i];
        x->value = settle_gen_event(&g, i, &x->value_len, &x->topic);
        x->topic_len = strlen(x->topic);
        x->partition = (int32_t)(i % NPART);
        x->offset = next[i % NPART]++;
        msgs[n + i] = *x; /* the same again at the same offsets: all stale */
    }
    assert_int_equal(settle_store_apply(f->s, &f->cal, msgs, 2 * n, t + DAY / 2), 0);
    size_t counted = 0, ignored = 0, stale = 0;
    for (size_t i = 0; i < 2 * n; i++) {
        counted += msgs[i].result == SETTLE_MSG_COUNTED;
        ignored += msgs[i].result == SETTLE_MSG_IGNORED;
        stale += msgs[i].result == SETTLE_MSG_STALE;
    }
    assert_int_equal(counted, NMER + AGAIN + 1);
    assert_int_equal(ignored, NMER + AGAIN);
    assert_int_equal(stale, n);
    for (int i = 0; i < NMER; i++) {
        snprintf(m, sizeof(m), "m-%d", i);
        struct settle_batch b = batch(f, m, "USD", "2026-11-25");
        int again = i < AGAIN;
        assert_int_equal(b.capture_count, 1 + again);
        assert_int_equal(b.gross, 1000 + i + (again ? 1000 + NMER + i : 0));
        assert_int_equal(b.refunds, i == 0 ? 300 : 0);
        assert_int_equal(b.refund_count, i == 0);
    }
    for (int p = 0; p < NPART; p++) {
        int64_t got = -1, want = -1;
        for (size_t i = 0; i < n; i++)
            if ((int)(i % NPART) == p && strcmp(msgs[i].topic, "payment.captured") == 0)
                want = msgs[i].offset + 1;
        int rc = settle_store_offset_get(f->s, "payment.captured", 16, p, &got);
        assert_int_equal(rc, want < 0 ? -ENOENT : 0);
        assert_int_equal(got, want);
    }
    free(msgs);
    settle_gen_free(&g);
}

int main(void)
{
#define T_(fn) cmocka_unit_test_setup_teardown(fn, setup, teardown)
    const struct CMUnitTest tests[] = {
        T_(test_directory_lock_and_manifest),
        T_(test_consume_exactly_once),
        T_(test_poison_dead_letters_and_replay),
        T_(test_close_and_late_events),
        T_(test_listing_filters_and_paging),
        T_(test_retention_horizon),
        T_(test_reconciliation),
        T_(test_upload_cut_by_a_crash),
        T_(test_outbox_replicated_mark),
        T_(test_fault_put_once_and_persistent),
        T_(test_fault_map_full),
        T_(test_doc_worked_example),
        T_(test_shared_members),
        T_(test_idempotency_records),
        T_(test_idempotency_expiry),
        T_(test_one_commit_beyond_its_working_memory),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
