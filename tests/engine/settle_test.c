/*
 * Tests of engine/settle.c and engine/settle_event.c: dates and timestamps against the
 * engine's own renderer, the business day around midnight, the cutoff minute, DST
 * changes (Europe/Berlin and America/New_York rules as pure offset functions; the real
 * zones are checked against these in tests/tools/settle_tz_test.c) and leap days;
 * parsing real engine events (made by engine_apply) and refusing every kind of poison;
 * batch arithmetic and its bounds; the late-event rule and idempotence over an
 * in-memory store; reconciliation lines and categories; the exact JSON and CSV shown.
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

#include "engine/apply.h"
#include "engine/ids.h"
#include "engine/settle.h"
#include "tests/engine/mem_store.h"

#define HOUR 3600000LL
#define MIN  60000LL
#define DAY  (24 * HOUR)

/* "2026-11-25T10:00:00.000Z" -> ms (through the parser under test; its own test checks it
 * against the engine's renderer). */
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

/* ---- Dates ------------------------------------------------------------------------- */

static void test_date_roundtrip_and_leap_days(void **state)
{
    char buf[SETTLE_DATE_BYTES + 1];
    assert_int_equal(D("1970-01-01"), 0);
    assert_int_equal(D("2026-11-25"), 20782);
    assert_int_equal(D("2024-02-29"), 19782);
    assert_int_equal(D("9999-12-30"), SETTLE_DATE_MAX);
    assert_int_equal(D("2000-02-29") + 1, D("2000-03-01"));
    assert_int_equal(D("2024-02-28") + 1, D("2024-02-29"));
    assert_int_equal(D("2023-02-28") + 1, D("2023-03-01"));
    /* every day of 1970..2100 formats and parses back */
    for (int32_t d = 0; d < D("2100-12-31"); d++) {
        settle_date_format(buf, d);
        assert_int_equal(D(buf), d);
    }
    int32_t v;
    const char *bad[] = {"2023-02-29",
                         "1900-02-29",
                         "2026-13-01",
                         "2026-00-10",
                         "2026-04-31",
                         "2026-11-5",
                         "2026/11/25",
                         "2026-11-25 ",
                         "1969-12-31",
                         "9999-12-31",
                         "+026-11-25",
                         "2026-1a-25",
                         ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(settle_date_parse(bad[i], strlen(bad[i]), &v), -EINVAL);
}

static void test_time_parse_matches_engine_renderer(void **state)
{
    char buf[JSON_TIME_BYTES + 1];
    unsigned seed = 7;
    for (int i = 0; i < 100000; i++) {
        int64_t ms = ((int64_t)rand_r(&seed) << 20 ^ rand_r(&seed)) % (TIME_MS_MAX + 1);
        if (i == 0)
            ms = 0;
        if (i == 1)
            ms = TIME_MS_MAX;
        json_format_time(buf, ms);
        int64_t back = -1;
        assert_int_equal(settle_time_parse(buf, JSON_TIME_BYTES, &back), 0);
        assert_int_equal(back, ms);
    }
    int64_t v;
    const char *bad[] = {"2026-11-25T10:00:00Z",     "2026-11-25T10:00:00.123+00:00",
                         "2026-11-25t10:00:00.123Z", "2026-11-25T24:00:00.000Z",
                         "2026-11-25T10:60:00.000Z", "2026-11-25T10:00:60.000Z",
                         "2026-02-29T10:00:00.000Z", "2026-11-25T10:00:00.12aZ",
                         "2026-11-25 10:00:00.123Z", "1969-12-31T23:59:59.999Z"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(settle_time_parse(bad[i], strlen(bad[i]), &v), -EINVAL);
}

static void test_cutoff_and_grace_parse(void **state)
{
    int32_t m;
    int64_t g;
    assert_int_equal(settle_cutoff_parse("00:00", 5, &m), 0);
    assert_int_equal(m, 0);
    assert_int_equal(settle_cutoff_parse("23:59", 5, &m), 0);
    assert_int_equal(m, 1439);
    assert_int_equal(settle_cutoff_parse("02:30", 5, &m), 0);
    assert_int_equal(m, 150);
    const char *bad_cut[] = {"24:00", "2:30", "02:60", "02-30", "0230", "02:30 ", ""};
    for (size_t i = 0; i < sizeof(bad_cut) / sizeof(bad_cut[0]); i++)
        assert_int_equal(settle_cutoff_parse(bad_cut[i], strlen(bad_cut[i]), &m), -EINVAL);
    assert_int_equal(settle_grace_parse("10m", 3, &g), 0);
    assert_int_equal(g, 10 * MIN);
    assert_int_equal(settle_grace_parse("0", 1, &g), 0);
    assert_int_equal(g, 0);
    assert_int_equal(settle_grace_parse("90s", 3, &g), 0);
    assert_int_equal(g, 90000);
    assert_int_equal(settle_grace_parse("168h", 4, &g), 0);
    assert_int_equal(g, SETTLE_GRACE_MAX_MS);
    const char *bad_grace[] = {"169h", "10", "m", "010m", "-1m", "1d", "1.5h", "10M", ""};
    for (size_t i = 0; i < sizeof(bad_grace) / sizeof(bad_grace[0]); i++)
        assert_int_equal(settle_grace_parse(bad_grace[i], strlen(bad_grace[i]), &g), -EINVAL);
}

/* ---- Zones as pure functions -------------------------------------------------------- */

/* Europe/Berlin 2026: CEST (+2) from 2026-03-29T01:00Z to 2026-10-25T01:00Z, else CET. */
static int berlin_2026(void *arg, int64_t u, int32_t *off)
{
    (void)arg;
    *off = u >= 1774746000000LL && u < 1792890000000LL ? 7200 : 3600;
    return 0;
}

/* America/New_York 2026: EDT (-4) from 2026-03-08T07:00Z to 2026-11-01T06:00Z, else EST. */
static int new_york_2026(void *arg, int64_t u, int32_t *off)
{
    (void)arg;
    *off = u >= 1772953200000LL && u < 1793512800000LL ? -14400 : -18000;
    return 0;
}

static int32_t bd(struct settle_calendar *c, int64_t t)
{
    int32_t d = -99;
    assert_int_equal(settle_business_date(c, t, &d), 0);
    return d;
}

static int64_t start(struct settle_calendar *c, int32_t d)
{
    int64_t u;
    assert_int_equal(settle_day_start(c, d, &u), 0);
    return u;
}

static void test_utc_midnight_and_cutoff_minute(void **state)
{
    struct settle_calendar c;
    settle_calendar_init(&c, settle_offset_utc, NULL, 0, 10 * MIN);
    assert_int_equal(bd(&c, T("2026-11-25T00:00:00.000Z")), D("2026-11-25"));
    assert_int_equal(bd(&c, T("2026-11-24T23:59:59.999Z")), D("2026-11-24"));
    assert_int_equal(bd(&c, T("2026-11-25T23:59:59.999Z")), D("2026-11-25"));
    /* cutoff 02:30: at or after it, that day; before it, the day before */
    settle_calendar_init(&c, settle_offset_utc, NULL, 150, 10 * MIN);
    assert_int_equal(bd(&c, T("2026-11-25T02:30:00.000Z")), D("2026-11-25"));
    assert_int_equal(bd(&c, T("2026-11-25T02:29:59.999Z")), D("2026-11-24"));
    assert_int_equal(bd(&c, T("2026-11-25T00:00:00.000Z")), D("2026-11-24"));
    assert_int_equal(bd(&c, T("2026-11-26T02:29:59.999Z")), D("2026-11-25"));
    assert_int_equal(start(&c, D("2026-11-25")), T("2026-11-25T02:30:00.000Z"));
    int64_t close;
    assert_int_equal(settle_close_at(&c, D("2026-11-25"), &close), 0);
    assert_int_equal(close, T("2026-11-26T02:40:00.000Z"));
    /* due_through: every date whose close time has passed */
    int32_t due;
    assert_int_equal(settle_due_through(&c, T("2026-11-26T02:39:59.999Z"), &due), 0);
    assert_int_equal(due, D("2026-11-24"));
    assert_int_equal(settle_due_through(&c, T("2026-11-26T02:40:00.000Z"), &due), 0);
    assert_int_equal(due, D("2026-11-25"));
    assert_int_equal(settle_due_through(&c, 5 * MIN, &due), 0);
    assert_int_equal(due, SETTLE_DATE_MIN - 1);
    /* a fixed zone: +09:00 (Seoul), cutoff 00:00 */
    int32_t kst = 9 * 3600;
    settle_calendar_init(&c, settle_offset_fixed, &kst, 0, 0);
    assert_int_equal(bd(&c, T("2026-11-24T15:00:00.000Z")), D("2026-11-25"));
    assert_int_equal(bd(&c, T("2026-11-24T14:59:59.999Z")), D("2026-11-24"));
}

static void test_leap_day(void **state)
{
    struct settle_calendar c;
    settle_calendar_init(&c, settle_offset_utc, NULL, 60, 0);
    assert_int_equal(bd(&c, T("2024-02-29T12:00:00.000Z")), D("2024-02-29"));
    assert_int_equal(bd(&c, T("2024-03-01T00:59:59.999Z")), D("2024-02-29"));
    assert_int_equal(bd(&c, T("2024-03-01T01:00:00.000Z")), D("2024-03-01"));
    assert_int_equal(bd(&c, T("2024-02-29T00:30:00.000Z")), D("2024-02-28"));
    assert_int_equal(start(&c, D("2024-03-01")) - start(&c, D("2024-02-29")), DAY);
    /* 2100 is not a leap year: 02-28 is followed by 03-01 */
    assert_int_equal(bd(&c, T("2100-03-01T00:30:00.000Z")), D("2100-02-28"));
}

static void test_berlin_dst(void **state)
{
    struct settle_calendar c;
    /* cutoff 00:00: the spring day has 23 hours, the autumn day 25 */
    settle_calendar_init(&c, berlin_2026, NULL, 0, 0);
    assert_int_equal(start(&c, D("2026-03-29")), T("2026-03-28T23:00:00.000Z"));
    assert_int_equal(start(&c, D("2026-03-30")), T("2026-03-29T22:00:00.000Z"));
    assert_int_equal(start(&c, D("2026-10-25")), T("2026-10-24T22:00:00.000Z"));
    assert_int_equal(start(&c, D("2026-10-26")), T("2026-10-25T23:00:00.000Z"));
    assert_int_equal(bd(&c, T("2026-03-28T22:59:59.999Z")), D("2026-03-28"));
    assert_int_equal(bd(&c, T("2026-03-28T23:00:00.000Z")), D("2026-03-29"));
    assert_int_equal(bd(&c, T("2026-10-25T22:59:59.999Z")), D("2026-10-25"));

    /* cutoff 02:30 falls in the spring gap (02:00 -> 03:00): the day starts at 03:00 CEST */
    settle_calendar_init(&c, berlin_2026, NULL, 150, 0);
    assert_int_equal(start(&c, D("2026-03-29")), T("2026-03-29T01:00:00.000Z"));
    assert_int_equal(bd(&c, T("2026-03-29T00:59:59.999Z")), D("2026-03-28"));
    assert_int_equal(bd(&c, T("2026-03-29T01:00:00.000Z")), D("2026-03-29"));
    assert_int_equal(start(&c, D("2026-03-30")), T("2026-03-30T00:30:00.000Z"));

    /* cutoff 02:30 falls in the autumn repeat (03:00 CEST -> 02:00 CET at 01:00Z): the day
     * starts at the first 02:30 (00:30Z) and the repeated 02:00-02:30 stays in it */
    assert_int_equal(start(&c, D("2026-10-25")), T("2026-10-25T00:30:00.000Z"));
    assert_int_equal(bd(&c, T("2026-10-25T00:29:59.999Z")), D("2026-10-24"));
    assert_int_equal(bd(&c, T("2026-10-25T00:30:00.000Z")), D("2026-10-25"));
    assert_int_equal(bd(&c, T("2026-10-25T01:10:00.000Z")), D("2026-10-25")); /* 02:10 CET */
    assert_int_equal(start(&c, D("2026-10-26")), T("2026-10-26T01:30:00.000Z"));
}

static void test_new_york_dst(void **state)
{
    struct settle_calendar c;
    settle_calendar_init(&c, new_york_2026, NULL, 0, 10 * MIN);
    assert_int_equal(start(&c, D("2026-03-08")), T("2026-03-08T05:00:00.000Z"));
    assert_int_equal(start(&c, D("2026-03-09")), T("2026-03-09T04:00:00.000Z"));
    assert_int_equal(start(&c, D("2026-11-01")), T("2026-11-01T04:00:00.000Z"));
    assert_int_equal(start(&c, D("2026-11-02")), T("2026-11-02T05:00:00.000Z"));
    /* 01:30 EDT and 01:30 EST of 2026-11-01 are both that day */
    assert_int_equal(bd(&c, T("2026-11-01T05:30:00.000Z")), D("2026-11-01"));
    assert_int_equal(bd(&c, T("2026-11-01T06:30:00.000Z")), D("2026-11-01"));
    int64_t close;
    assert_int_equal(settle_close_at(&c, D("2026-11-01"), &close), 0);
    assert_int_equal(close, T("2026-11-02T05:10:00.000Z"));
    /* cutoff 01:30 in the repeated hour */
    settle_calendar_init(&c, new_york_2026, NULL, 90, 0);
    assert_int_equal(start(&c, D("2026-11-01")), T("2026-11-01T05:30:00.000Z"));
    assert_int_equal(bd(&c, T("2026-11-01T06:10:00.000Z")), D("2026-11-01")); /* 01:10 EST */
    assert_int_equal(bd(&c, T("2026-11-01T05:29:59.999Z")), D("2026-10-31"));
}

/* Over 2026 in both zones and many cutoffs: business dates are monotonic, each instant
 * lies in [start(d), start(d + 1)), the cached and uncached answers agree, and the SPEC's
 * literal rule (date of local time minus cutoff) holds wherever the local time is not in
 * a repeated hour. */
static void test_calendar_properties(void **state)
{
    settle_offset_fn zones[] = {berlin_2026, new_york_2026, settle_offset_utc};
    unsigned seed = 99;
    for (size_t z = 0; z < 3; z++) {
        for (int32_t cutoff = 0; cutoff < 1440; cutoff += 97) {
            struct settle_calendar c, fresh;
            settle_calendar_init(&c, zones[z], NULL, cutoff, 0);
            int32_t last = 0;
            int64_t t = T("2026-01-01T00:00:00.000Z");
            while (t < T("2027-01-01T00:00:00.000Z")) {
                int32_t d = bd(&c, t);
                assert_true(d >= last);
                last = d;
                assert_true(start(&c, d) <= t && t < start(&c, d + 1));
                settle_calendar_init(&fresh, zones[z], NULL, cutoff, 0);
                assert_int_equal(bd(&fresh, t), d);
                int32_t off, off_before;
                zones[z](NULL, t, &off);
                zones[z](NULL, t - 2 * HOUR, &off_before);
                if (off >= off_before) { /* no repeat just behind t */
                    int64_t local = t + off * 1000LL - cutoff * MIN;
                    assert_int_equal(d, (int32_t)(local / DAY));
                }
                t += 1 + (int64_t)(rand_r(&seed) % (int)(6 * HOUR));
            }
        }
    }
}

/* ---- Events made by the real engine -------------------------------------------------- */

struct engine_fixture {
    struct mem_store m;
    size_t next_event; /* events handed out so far */
};

static struct engine_fixture *fx;

static int fx_setup(void **state)
{
    fx = calloc(1, sizeof(*fx));
    assert_int_equal(mem_store_init(&fx->m, 1024, 1 << 20), 0);
    return 0;
}

static int fx_teardown(void **state)
{
    mem_store_free(&fx->m);
    free(fx);
    return 0;
}

/* Runs one operation on shard 0x2a; returns the answer's id ("pay_…"). */
static void run_op(enum op_kind kind, const char *payment_id, const char *merchant,
                   const char *currency, int64_t amount, int64_t now, char id_out[ID_BYTES + 1])
{
    static char body[ENGINE_ANSWER_MAX_BYTES];
    static unsigned key;
    struct op op;
    memset(&op, 0, sizeof(op));
    op.kind = kind;
    op.shard = 0x2a;
    op.amount = amount;
    if (merchant) {
        memcpy(op.merchant_id, merchant, strlen(merchant));
        op.merchant_id_len = (uint8_t)strlen(merchant);
    }
    if (currency)
        memcpy(op.currency, currency, 3);
    if (payment_id)
        memcpy(op.payment_id, payment_id, ID_BYTES);
    op.idem_key_len = (uint16_t)snprintf(op.idem_key, sizeof(op.idem_key), "k%u", ++key);
    op.fp_method = (struct engine_span){"POST", 4};
    op.fp_path = (struct engine_span){op.idem_key, op.idem_key_len};
    struct answer a = {.body = body, .cap = sizeof(body)};
    assert_int_equal(engine_apply(&mem_store_ops, &fx->m, &op, now, &a), 0);
    assert_true(a.status == 200 || a.status == 201);
    if (id_out) {
        memcpy(id_out, body + 7, ID_BYTES);
        id_out[ID_BYTES] = '\0';
    }
}

/* The next event the engine emitted, NUL-terminated in a static buffer. */
static const char *next_event(size_t *len)
{
    static char buf[ENGINE_EVENT_MAX_BYTES + 1];
    const char *v = mem_store_event_value(&fx->m, fx->next_event++, len);
    memcpy(buf, v, *len);
    buf[*len] = '\0';
    return buf;
}

static void parse_ok(const char *topic, const char *v, struct settle_event *ev)
{
    char reason[SETTLE_REASON_MAX_BYTES + 1];
    int rc = settle_event_parse(topic, topic ? strlen(topic) : 0, v, strlen(v), ev, reason);
    if (rc)
        fail_msg("refused (%s): %s", reason, v);
}

static void test_parse_real_events(void **state)
{
    char pay[ID_BYTES + 1], pay2[ID_BYTES + 1];
    int64_t t0 = T("2026-11-25T10:00:00.123Z");
    struct settle_event ev;
    size_t len;
    run_op(OP_AUTHORIZE, NULL, "m-1", "KRW", 15000, t0, pay);
    parse_ok("payment.authorized", next_event(&len), &ev);
    assert_int_equal(ev.type, SETTLE_EVENT_AUTHORIZED);
    assert_int_equal(ev.amount, 15000);
    assert_string_equal(ev.payment_id, pay);
    assert_string_equal(ev.merchant_id, "m-1");
    assert_int_equal(ev.event_shard, 0x2a);
    assert_int_equal(ev.event_seq, 1);
    assert_string_equal(ev.event_id, "evt_2a_0000000000000001");
    /* a partial capture: amount C, released A - C */
    run_op(OP_CAPTURE, pay, "m-1", NULL, 12000, t0 + 1000, NULL);
    parse_ok("payment.captured", next_event(&len), &ev);
    assert_int_equal(ev.type, SETTLE_EVENT_CAPTURED);
    assert_int_equal(ev.amount, 12000);
    assert_int_equal(ev.payment_amount, 15000);
    assert_int_equal(ev.captured_amount, 12000);
    assert_int_equal(ev.occurred_at_ms, t0 + 1000);
    assert_string_equal(ev.currency, "KRW");
    /* two partial refunds, the second completes it */
    run_op(OP_REFUND, pay, "m-1", NULL, 2000, t0 + 2000, NULL);
    parse_ok("payment.refunded", next_event(&len), &ev);
    assert_int_equal(ev.type, SETTLE_EVENT_REFUNDED);
    assert_int_equal(ev.amount, 2000);
    assert_int_equal(ev.refunded_amount, 2000);
    assert_int_equal(ids_parse(ev.refund_id, ID_BYTES, IDS_REFUND, NULL, NULL), 0);
    run_op(OP_REFUND, pay, "m-1", NULL, 0, t0 + 3000, NULL);
    parse_ok(NULL, next_event(&len), &ev);
    assert_int_equal(ev.amount, 10000);
    assert_int_equal(ev.refunded_amount, 12000);
    /* void */
    run_op(OP_AUTHORIZE, NULL, "m_2", "USD", 500, t0 + 4000, pay2);
    next_event(&len);
    run_op(OP_VOID, pay2, "m_2", NULL, 0, t0 + 5000, NULL);
    parse_ok("payment.voided", next_event(&len), &ev);
    assert_int_equal(ev.type, SETTLE_EVENT_VOIDED);
    assert_int_equal(ev.amount, 500);
}

/* Replaces the first `from` in src with `to` into a static buffer. */
static const char *edit(const char *src, const char *from, const char *to)
{
    static char out[2 * ENGINE_EVENT_MAX_BYTES];
    const char *p = strstr(src, from);
    if (p == NULL)
        fail_msg("no %s in %s", from, src);
    snprintf(out, sizeof(out), "%.*s%s%s", (int)(p - src), src, to, p + strlen(from));
    return out;
}

static void expect_poison(const char *topic, const char *v, size_t len, const char *why)
{
    struct settle_event ev;
    char reason[SETTLE_REASON_MAX_BYTES + 1];
    int rc = settle_event_parse(topic, topic ? strlen(topic) : 0, v, len, &ev, reason);
    if (rc != -EINVAL)
        fail_msg("accepted: %.*s", (int)len, v);
    if (strstr(reason, why) == NULL)
        fail_msg("reason \"%s\" lacks \"%s\" for %.*s", reason, why, (int)len, v);
}

static void poison(const char *v, const char *why)
{
    expect_poison(NULL, v, strlen(v), why);
}

static void test_poison_events(void **state)
{
    char pay[ID_BYTES + 1];
    static char cap[ENGINE_EVENT_MAX_BYTES + 1], ref[ENGINE_EVENT_MAX_BYTES + 1];
    size_t len;
    int64_t t0 = T("2026-11-25T10:00:00.123Z");
    run_op(OP_AUTHORIZE, NULL, "m-1", "KRW", 15000, t0, pay);
    next_event(&len);
    run_op(OP_CAPTURE, pay, "m-1", NULL, 12000, t0 + 1000, NULL);
    strcpy(cap, next_event(&len));
    run_op(OP_REFUND, pay, "m-1", NULL, 2000, t0 + 2000, NULL);
    strcpy(ref, next_event(&len));

    /* syntax */
    poison("", "expected an object");
    poison("[]", "expected an object");
    poison("nonsense", "expected an object");
    char trailing[ENGINE_EVENT_MAX_BYTES + 8];
    snprintf(trailing, sizeof(trailing), "%s x", cap);
    poison(trailing, "text after");
    snprintf(trailing, sizeof(trailing), "%s{}", cap);
    poison(trailing, "text after");
    poison(edit(cap, "{", "{,"), "expected a string");
    poison(edit(cap, "\"amount\":12000", "\"amount\":12000,"), "expected a string");
    poison(edit(cap, "\"amount\":12000", "\"amount\":012000"), "expected ','");
    poison(edit(cap, ":", " : :"), "");
    poison(edit(cap, "\"m-1\"", "\"m-\x01\""), "control character");
    poison(edit(cap, "\"m-1\"", "\"m-\xc3\x28\""), "UTF-8");
    poison(edit(cap, "\"m-1\"", "\"m-\\ud800\""), "lone surrogate");
    poison(edit(cap, "\"m-1\"", "\"m-\\x\""), "bad escape");
    poison(edit(cap, "\"m-1\"", "\"m-1"), "");
    /* truncations at every byte never pass and never crash */
    for (size_t n = 0; n < strlen(cap); n++) {
        struct settle_event ev;
        char reason[SETTLE_REASON_MAX_BYTES + 1];
        assert_int_equal(settle_event_parse(NULL, 0, cap, n, &ev, reason), -EINVAL);
        assert_true(reason[0] != '\0');
    }
    /* structure */
    poison(edit(cap, "\"amount\":12000", "\"amount\":12000,\"amount\":12000"), "given twice");
    poison(edit(cap, "\"amount\":12000", "\"amount\":12000,\"\\u0061mount\":1"), "given twice");
    poison(edit(cap, "\"type\":\"payment.captured\"", "\"type\":\"payment.settled\""),
           "type is missing or unknown");
    expect_poison("payment.refunded", cap, strlen(cap), "differs from the topic");
    poison(edit(cap, "\"released_amount\":3000,", ""), "released_amount is missing");
    poison(edit(cap, "\"released_amount\":3000", "\"released_amount\":3000,\"refund\":{}"),
           "does not belong");
    poison(edit(ref, "\"refund\":", "\"released_amount\":0,\"refund\":"), "does not belong");
    poison(edit(cap, "\"payment\":", "\"payment_\":"), "payment is missing");
    poison(edit(cap, "\"payment\":", "\"payment\":[1],\"other\":"), "wrong type");
    poison(edit(cap, "\"currency\":\"KRW\",", ""), "payment.currency is missing");
    /* unknown members are skipped, however nested (within the bound) */
    struct settle_event ev;
    parse_ok(NULL,
             edit(cap, "\"amount\":12000",
                  "\"amount\":12000,\"x\":{\"a\":[1,-2.5e3,true,null,{\"b\":\"\\u00e9\"}]}"),
             &ev);
    assert_int_equal(ev.amount, 12000);
    poison(edit(cap, "\"amount\":12000", "\"amount\":12000,\"x\":[[[[[[[[[[1]]]]]]]]]]"),
           "nested too deep");
    /* identifiers */
    poison(edit(cap, "evt_2a_", "evt_2A_"), "event_id");
    poison(edit(cap, "\"evt_2a_0000000000000002\"", "\"evt_2a_0000000000000000\""), "event_id");
    poison(edit(cap, "\"evt_2a_0000000000000002\"", "\"evt_2b_0000000000000002\""),
           "another shard");
    poison(edit(cap, "\"id\":\"pay_2a", "\"id\":\"rfd_2a"), "payment.id is not a payment id");
    poison(edit(cap, "\"m-1\"", "\"m 1\""), "merchant_id");
    poison(edit(cap, "\"m-1\"", "\"\""), "merchant_id");
    poison(edit(cap, "\"KRW\"", "\"krw\""), "currency");
    poison(edit(cap, "\"occurred_at\":\"2026-11-25T10:00:01.123Z\"",
                "\"occurred_at\":\"2026-11-25T10:00:01Z\""),
           "occurred_at");
    poison(edit(cap, "\"occurred_at\":\"2026-11-25T10:00:01.123Z\"",
                "\"occurred_at\":\"2026-11-25T10:00:01.124Z\""),
           "differs from payment.updated_at");
    poison(edit(cap, "\"status\":\"captured\"", "\"status\":\"settled\""), "status is unknown");
    /* amounts */
    poison(edit(cap, "\"amount\":12000", "\"amount\":0"), "amount is not");
    poison(edit(cap, "\"amount\":12000", "\"amount\":-12000"), "not an integer");
    poison(edit(cap, "\"amount\":12000", "\"amount\":12000.0"), "not an integer");
    poison(edit(cap, "\"amount\":12000", "\"amount\":1.2e4"), "not an integer");
    poison(edit(cap, "\"amount\":12000", "\"amount\":\"12000\""), "wrong type");
    poison(edit(cap, "\"amount\":12000", "\"amount\":1000000000000001"), "not an integer");
    poison(edit(cap, "\"amount\":12000", "\"amount\":12001"), "do not match");
    poison(edit(cap, "\"released_amount\":3000", "\"released_amount\":2999"), "do not match");
    poison(edit(cap, "\"captured_amount\":12000", "\"captured_amount\":16000"), "impossible");
    poison(edit(cap, "\"status\":\"captured\"", "\"status\":\"authorized\""), "impossible");
    poison(edit(ref, "\"amount\":2000", "\"amount\":2001"), "refund.amount differs");
    poison(edit(ref, "\"payment_id\":\"pay_2a", "\"payment_id\":\"pay_2b"), "refund.payment_id");
    poison(
        edit(ref, "\"payment_status\":\"partially_refunded\"", "\"payment_status\":\"refunded\""),
        "refund.payment_status");
    /* size */
    static char big[SETTLE_EVENT_MAX_BYTES + 2];
    memset(big, ' ', sizeof(big) - 1);
    big[0] = '{';
    big[sizeof(big) - 2] = '}';
    expect_poison(NULL, big, sizeof(big) - 1, "longer than");
    /* NUL bytes inside the value */
    char withnul[64] = "{\"event_id\":\"evt\0";
    expect_poison(NULL, withnul, 20, "control character");
}

/* ---- Batches ------------------------------------------------------------------------- */

static struct settle_event money_event(enum settle_event_type type, const char *merchant,
                                       const char *currency, int64_t amount, int64_t at,
                                       uint64_t seq)
{
    struct settle_event ev;
    memset(&ev, 0, sizeof(ev));
    ev.type = type;
    engine_event_id(ev.event_id, 1, seq);
    ev.event_shard = 1;
    ev.event_seq = seq;
    ev.occurred_at_ms = at;
    ev.amount = amount;
    ids_format(ev.payment_id, IDS_PAYMENT, 1, seq);
    memcpy(ev.merchant_id, merchant, strlen(merchant));
    ev.merchant_id_len = (uint8_t)strlen(merchant);
    memcpy(ev.currency, currency, 3);
    ev.payment_amount = ev.captured_amount = amount;
    return ev;
}

static void test_batch_arithmetic_and_bounds(void **state)
{
    struct settle_key k;
    struct settle_batch b;
    settle_key_set(&k, "m-1", 3, "KRW", D("2026-11-25"));
    settle_batch_init(&b, &k, 1000);
    struct settle_event c = money_event(SETTLE_EVENT_CAPTURED, "m-1", "KRW", 12000, 0, 1);
    struct settle_event r = money_event(SETTLE_EVENT_REFUNDED, "m-1", "KRW", 20000, 0, 2);
    assert_int_equal(settle_batch_add(&b, &c), 0);
    assert_int_equal(settle_batch_add(&b, &r), 0);
    assert_int_equal(settle_batch_adjust(&b, &c), 0);
    assert_int_equal(settle_batch_adjust(&b, &r), 0);
    assert_int_equal(b.gross, 12000);
    assert_int_equal(b.refunds, 20000);
    assert_int_equal(b.adjustments, -8000);
    assert_int_equal(settle_batch_net(&b), -16000);
    assert_int_equal(b.capture_count, 1);
    assert_int_equal(b.refund_count, 1);
    assert_int_equal(b.adjustment_count, 2);
    /* the totals' bound: refused, nothing changed */
    c.amount = AMOUNT_MAX;
    b.gross = SETTLE_TOTAL_MAX - AMOUNT_MAX - 1;
    b.capture_count = 1;
    assert_int_equal(settle_batch_add(&b, &c), 0);
    assert_int_equal(b.gross, SETTLE_TOTAL_MAX - 1);
    assert_int_equal(settle_batch_add(&b, &c), -EOVERFLOW);
    assert_int_equal(b.gross, SETTLE_TOTAL_MAX - 1);
    assert_int_equal(b.capture_count, 2);
    b.adjustments = -SETTLE_TOTAL_MAX + AMOUNT_MAX;
    r.amount = AMOUNT_MAX;
    assert_int_equal(settle_batch_adjust(&b, &r), -EOVERFLOW);
    settle_batch_close(&b, 5000);
    assert_true(b.closed);
    assert_int_equal(b.closed_at_ms, 5000);
    /* validity predicate catches inconsistent records */
    struct settle_batch bad = b;
    bad.capture_count = 0;
    assert_false(settle_batch_valid(&bad));
    bad = b;
    bad.closed_at_ms = -1;
    assert_false(settle_batch_valid(&bad));
}

static void test_batch_ids(void **state)
{
    struct settle_key k, back;
    char id[SETTLE_BATCH_ID_MAX_BYTES + 1];
    settle_key_set(&k, "m-1", 3, "KRW", D("2026-11-25"));
    assert_int_equal(settle_batch_id(id, &k), 20);
    assert_string_equal(id, "stl_20261125_KRW_m-1");
    assert_int_equal(settle_batch_id_parse(id, strlen(id), &back), 0);
    assert_true(settle_key_equal(&k, &back));
    char m[MERCHANT_ID_MAX_BYTES + 1];
    memset(m, 'Z', MERCHANT_ID_MAX_BYTES);
    m[MERCHANT_ID_MAX_BYTES] = '\0';
    settle_key_set(&k, m, MERCHANT_ID_MAX_BYTES, "USD", SETTLE_DATE_MAX);
    assert_int_equal(settle_batch_id(id, &k), SETTLE_BATCH_ID_MAX_BYTES);
    assert_int_equal(settle_batch_id_parse(id, strlen(id), &back), 0);
    assert_true(settle_key_equal(&k, &back));
    const char *bad[] = {"stl_20261125_KRW_",    "stl_20261131_KRW_m-1", "stl_20261125_krw_m-1",
                         "stl_20261125-KRW_m-1", "stl_2026112_KRW_m-1",  "stl_20261125_KRW_m 1",
                         "STL_20261125_KRW_m-1", "stl_20261125_KRW_m/1", ""};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(settle_batch_id_parse(bad[i], strlen(bad[i]), &back), -EINVAL);
}

/* ---- The rules over an in-memory store -------------------------------------------------- */

#define MEM_MAX 64
struct mem_settle {
    char seen[MEM_MAX][EVENT_ID_BYTES + 1];
    int nseen;
    int32_t closed[MEM_MAX];
    int nclosed;
    struct settle_batch batches[MEM_MAX];
    int nbatches;
    uint64_t seq;
    struct {
        struct settle_key target;
        int32_t source;
        int64_t amount;
    } adj[MEM_MAX];
    int nadj;
    struct settle_capture caps[MEM_MAX];
    int ncaps;
    int32_t horizon;
    int writes;
};

static int m_seen_get(void *ctx, const struct settle_event *ev)
{
    struct mem_settle *m = ctx;
    for (int i = 0; i < m->nseen; i++)
        if (strcmp(m->seen[i], ev->event_id) == 0)
            return 0;
    return -ENOENT;
}

static int m_seen_put(void *ctx, const struct settle_event *ev, int32_t date)
{
    struct mem_settle *m = ctx;
    m->writes++;
    strcpy(m->seen[m->nseen++], ev->event_id);
    return 0;
}

static int m_horizon(void *ctx, int32_t *d)
{
    *d = ((struct mem_settle *)ctx)->horizon;
    return 0;
}

static int m_date_closed(void *ctx, int32_t date)
{
    struct mem_settle *m = ctx;
    for (int i = 0; i < m->nclosed; i++)
        if (m->closed[i] == date)
            return 1;
    return 0;
}

static struct settle_batch *m_find(struct mem_settle *m, const struct settle_key *k)
{
    for (int i = 0; i < m->nbatches; i++)
        if (settle_key_equal(&m->batches[i].key, k))
            return &m->batches[i];
    return NULL;
}

static int m_batch_get(void *ctx, const struct settle_key *k, struct settle_batch *out)
{
    struct settle_batch *b = m_find(ctx, k);
    if (b == NULL)
        return -ENOENT;
    *out = *b;
    return 0;
}

static int m_batch_next_open(void *ctx, const struct settle_key *k, struct settle_batch *out)
{
    struct mem_settle *m = ctx;
    struct settle_batch *best = NULL;
    for (int i = 0; i < m->nbatches; i++) {
        struct settle_batch *b = &m->batches[i];
        if (b->key.merchant_id_len == k->merchant_id_len &&
            memcmp(b->key.merchant_id, k->merchant_id, k->merchant_id_len) == 0 &&
            memcmp(b->key.currency, k->currency, 3) == 0 && b->key.date > k->date && !b->closed &&
            (best == NULL || b->key.date < best->key.date))
            best = b;
    }
    if (best == NULL)
        return -ENOENT;
    *out = *best;
    return 0;
}

static int m_batch_put(void *ctx, struct settle_batch *b)
{
    struct mem_settle *m = ctx;
    m->writes++;
    settle_batch_check(b);
    struct settle_batch *old = m_find(m, &b->key);
    if (old == NULL) {
        assert_int_equal(b->seq, 0);
        b->seq = ++m->seq;
        old = &m->batches[m->nbatches++];
    }
    *old = *b;
    return 0;
}

static int m_adjustment_put(void *ctx, const struct settle_key *target,
                            const struct settle_event *ev, int32_t source, int64_t amount)
{
    struct mem_settle *m = ctx;
    m->writes++;
    m->adj[m->nadj].target = *target;
    m->adj[m->nadj].source = source;
    m->adj[m->nadj].amount = amount;
    m->nadj++;
    return 0;
}

static int m_capture_put(void *ctx, const struct settle_capture *cap)
{
    struct mem_settle *m = ctx;
    m->writes++;
    m->caps[m->ncaps++] = *cap;
    return 0;
}

static const struct settle_ops mem_ops = {
    .seen_get = m_seen_get,
    .seen_put = m_seen_put,
    .horizon_get = m_horizon,
    .date_closed = m_date_closed,
    .batch_get = m_batch_get,
    .batch_next_open = m_batch_next_open,
    .batch_put = m_batch_put,
    .adjustment_put = m_adjustment_put,
    .capture_put = m_capture_put,
};

/* Closes every batch of date in m. */
static void m_close_date(struct mem_settle *m, int32_t date, int64_t now)
{
    m->closed[m->nclosed++] = date;
    for (int i = 0; i < m->nbatches; i++)
        if (m->batches[i].key.date == date && !m->batches[i].closed)
            settle_batch_close(&m->batches[i], now);
}

static struct settle_batch *m_batch(struct mem_settle *m, const char *merchant,
                                    const char *currency, const char *date)
{
    struct settle_key k;
    settle_key_set(&k, merchant, strlen(merchant), currency, D(date));
    return m_find(m, &k);
}

static enum settle_outcome apply(struct mem_settle *m, struct settle_calendar *c,
                                 const struct settle_event *ev, int64_t now,
                                 struct settle_result *res)
{
    assert_int_equal(settle_apply_event(&mem_ops, m, c, ev, now, res), 0);
    return res->outcome;
}

static void test_rules_count_duplicates_and_ignore(void **state)
{
    struct mem_settle *m = calloc(1, sizeof(*m));
    struct settle_calendar c;
    struct settle_result res;
    settle_calendar_init(&c, settle_offset_utc, NULL, 0, 10 * MIN);
    int64_t t = T("2026-11-25T10:00:00.000Z");
    struct settle_event cap = money_event(SETTLE_EVENT_CAPTURED, "m-1", "KRW", 12000, t, 1);
    struct settle_event ref = money_event(SETTLE_EVENT_REFUNDED, "m-1", "KRW", 2000, t + 1, 2);
    struct settle_event auth = money_event(SETTLE_EVENT_AUTHORIZED, "m-1", "KRW", 50, t, 3);
    assert_int_equal(apply(m, &c, &cap, t, &res), SETTLE_COUNTED);
    assert_int_equal(res.date, D("2026-11-25"));
    assert_int_equal(apply(m, &c, &ref, t, &res), SETTLE_COUNTED);
    int writes = m->writes;
    assert_int_equal(apply(m, &c, &cap, t, &res), SETTLE_DUPLICATE);
    assert_int_equal(apply(m, &c, &ref, t + 5 * DAY, &res), SETTLE_DUPLICATE);
    assert_int_equal(apply(m, &c, &auth, t, &res), SETTLE_IGNORED);
    assert_int_equal(m->writes, writes); /* nothing written */
    struct settle_batch *b = m_batch(m, "m-1", "KRW", "2026-11-25");
    assert_non_null(b);
    assert_int_equal(b->gross, 12000);
    assert_int_equal(b->refunds, 2000);
    assert_int_equal(settle_batch_net(b), 10000);
    assert_int_equal(b->capture_count, 1);
    assert_int_equal(b->refund_count, 1);
    /* the matching index got the capture with its business date */
    assert_int_equal(m->ncaps, 1);
    assert_int_equal(m->caps[0].amount, 12000);
    assert_int_equal(m->caps[0].value_date, D("2026-11-25"));
    /* another currency is another batch */
    struct settle_event usd = money_event(SETTLE_EVENT_CAPTURED, "m-1", "USD", 7, t, 4);
    assert_int_equal(apply(m, &c, &usd, t, &res), SETTLE_COUNTED);
    assert_int_equal(m->nbatches, 2);
    /* refused: before the horizon, or out of range; nothing written */
    m->horizon = D("2026-11-01");
    writes = m->writes;
    struct settle_event old =
        money_event(SETTLE_EVENT_CAPTURED, "m-1", "KRW", 5, T("2026-10-31T23:59:59.999Z"), 5);
    assert_int_equal(apply(m, &c, &old, t, &res), SETTLE_REFUSED);
    assert_non_null(strstr(res.reason, "retention horizon"));
    struct settle_event far = money_event(SETTLE_EVENT_CAPTURED, "m-1", "KRW", 5, TIME_MS_MAX, 6);
    assert_int_equal(apply(m, &c, &far, t, &res), SETTLE_REFUSED);
    assert_int_equal(m->writes, writes);
    free(m);
}

static void test_rules_late_event_adjusts_next_open_batch(void **state)
{
    struct mem_settle *m = calloc(1, sizeof(*m));
    struct settle_calendar c;
    struct settle_result res;
    settle_calendar_init(&c, settle_offset_utc, NULL, 0, 10 * MIN);
    int64_t d25 = T("2026-11-25T10:00:00.000Z"), d26 = d25 + DAY, d27 = d26 + DAY;
    uint64_t seq = 1;
    struct settle_event e;
    e = money_event(SETTLE_EVENT_CAPTURED, "m-1", "KRW", 1000, d25, seq++);
    apply(m, &c, &e, d25, &res);
    e = money_event(SETTLE_EVENT_CAPTURED, "m-1", "KRW", 2000, d26, seq++);
    apply(m, &c, &e, d26, &res);
    m_close_date(m, D("2026-11-25"), d26);

    /* a late capture of the 25th: into the 26th, the next open batch */
    e = money_event(SETTLE_EVENT_CAPTURED, "m-1", "KRW", 300, d25 + HOUR, seq++);
    assert_int_equal(apply(m, &c, &e, d26 + HOUR, &res), SETTLE_ADJUSTED);
    assert_int_equal(res.batch.date, D("2026-11-26"));
    /* again: a duplicate of it changes nothing */
    assert_int_equal(apply(m, &c, &e, d27, &res), SETTLE_DUPLICATE);
    /* a late refund of the 25th: -amount */
    e = money_event(SETTLE_EVENT_REFUNDED, "m-1", "KRW", 50, d25 + 2 * HOUR, seq++);
    assert_int_equal(apply(m, &c, &e, d26 + HOUR, &res), SETTLE_ADJUSTED);
    struct settle_batch *b25 = m_batch(m, "m-1", "KRW", "2026-11-25");
    struct settle_batch *b26 = m_batch(m, "m-1", "KRW", "2026-11-26");
    assert_true(b25->closed);
    assert_int_equal(b25->gross, 1000);
    assert_int_equal(b26->gross, 2000);
    assert_int_equal(b26->adjustments, 250);
    assert_int_equal(b26->adjustment_count, 2);
    assert_int_equal(settle_batch_net(b26), 2250);
    assert_int_equal(m->nadj, 2);
    assert_int_equal(m->adj[1].amount, -50);
    assert_int_equal(m->adj[1].source, D("2026-11-25"));
    /* the late capture is in the matching index under its own date */
    assert_int_equal(m->caps[m->ncaps - 1].value_date, D("2026-11-25"));

    /* the 26th closes too; a late event of the 25th: no open batch after it exists, so
     * it goes to today's batch (the 28th by the clock), created */
    m_close_date(m, D("2026-11-26"), d27);
    e = money_event(SETTLE_EVENT_CAPTURED, "m-1", "KRW", 7, d25 + 3 * HOUR, seq++);
    assert_int_equal(apply(m, &c, &e, d27 + DAY, &res), SETTLE_ADJUSTED);
    assert_int_equal(res.batch.date, D("2026-11-28"));
    assert_int_equal(m_batch(m, "m-1", "KRW", "2026-11-28")->adjustments, 7);
    assert_int_equal(m_batch(m, "m-1", "KRW", "2026-11-28")->gross, 0);

    /* today (the 28th) closed early by a close request: the next day */
    m_close_date(m, D("2026-11-28"), d27 + DAY);
    e = money_event(SETTLE_EVENT_CAPTURED, "m-1", "KRW", 9, d26 + HOUR, seq++);
    assert_int_equal(apply(m, &c, &e, d27 + DAY + HOUR, &res), SETTLE_ADJUSTED);
    assert_int_equal(res.batch.date, D("2026-11-29"));

    /* an event of a closed date whose merchant had no batch that day: also late */
    e = money_event(SETTLE_EVENT_CAPTURED, "m-2", "KRW", 11, d26, seq++);
    assert_int_equal(apply(m, &c, &e, d27 + DAY + HOUR, &res), SETTLE_ADJUSTED);
    assert_null(m_batch(m, "m-2", "KRW", "2026-11-26"));
    assert_int_equal(m_batch(m, "m-2", "KRW", "2026-11-29")->adjustments, 11);

    /* the clock behind the event's date never puts it in an earlier batch */
    e = money_event(SETTLE_EVENT_CAPTURED, "m-3", "EUR", 13, d26, seq++);
    assert_int_equal(apply(m, &c, &e, d25, &res), SETTLE_ADJUSTED);
    assert_int_equal(res.batch.date, D("2026-11-27"));
    free(m);
}

/* Applying the same events in any order with duplicates gives the same totals when no
 * date closes in between. */
static void test_rules_order_and_duplicates_do_not_matter(void **state)
{
    struct settle_event evs[40];
    int64_t t = T("2026-11-25T00:00:00.000Z");
    for (int i = 0; i < 40; i++)
        evs[i] = money_event(i % 3 ? SETTLE_EVENT_CAPTURED : SETTLE_EVENT_REFUNDED,
                             i % 2 ? "m-1" : "m-2", i % 5 ? "KRW" : "USD", 100 + i,
                             t + i * 2 * HOUR, (uint64_t)i + 1);
    int64_t want[MEM_MAX] = {0};
    struct mem_settle *ref = calloc(1, sizeof(*ref));
    struct settle_calendar c;
    struct settle_result res;
    settle_calendar_init(&c, settle_offset_utc, NULL, 0, 0);
    for (int i = 0; i < 40; i++)
        assert_int_equal(apply(ref, &c, &evs[i], t, &res), SETTLE_COUNTED);
    unsigned seed = 3;
    for (int round = 0; round < 50; round++) {
        struct mem_settle *m = calloc(1, sizeof(*m));
        for (int k = 0; k < 60; k++) {
            int i = rand_r(&seed) % 40;
            apply(m, &c, &evs[i], t, &res);
        }
        for (int i = 0; i < 40; i++)
            apply(m, &c, &evs[i], t, &res);
        assert_int_equal(m->nseen, 40);
        for (int i = 0; i < ref->nbatches; i++) {
            struct settle_batch *b = m_find(m, &ref->batches[i].key);
            assert_non_null(b);
            want[i] = settle_batch_net(&ref->batches[i]);
            assert_int_equal(settle_batch_net(b), want[i]);
            assert_int_equal(b->capture_count, ref->batches[i].capture_count);
            assert_int_equal(b->refund_count, ref->batches[i].refund_count);
        }
        free(m);
    }
    free(ref);
}

/* ---- Reconciliation -------------------------------------------------------------------- */

static struct csv_line line_of(const char *text)
{
    static char buf[256];
    struct csv_line l;
    memset(&l, 0, sizeof(l));
    snprintf(buf, sizeof(buf), "%s", text);
    l.number = 2;
    char *p = buf;
    for (;;) {
        char *comma = strchr(p, ',');
        l.fields[l.nfields].ptr = p;
        l.fields[l.nfields].len = comma ? (size_t)(comma - p) : strlen(p);
        l.nfields++;
        if (comma == NULL)
            break;
        p = comma + 1;
    }
    return l;
}

static void test_recon_header_and_lines(void **state)
{
    struct csv_line l = line_of(RECON_HEADER);
    assert_int_equal(recon_header_check(&l), 0);
    const char *bad_headers[] = {
        "transaction_id,amount,currency", "Transaction_id,amount,currency,value_date",
        "transaction_id,amount,currency,value_date,x", "transaction_id, amount,currency,value_date",
        "amount,transaction_id,currency,value_date"};
    for (size_t i = 0; i < sizeof(bad_headers) / sizeof(bad_headers[0]); i++) {
        l = line_of(bad_headers[i]);
        assert_int_equal(recon_header_check(&l), -EINVAL);
    }
    struct recon_line rl;
    const char *why;
    l = line_of("pay_2a0000000000000001,12000,KRW,2026-11-25");
    assert_int_equal(recon_line_parse(&l, &rl, &why), 0);
    assert_string_equal(rl.transaction_id, "pay_2a0000000000000001");
    assert_int_equal(rl.amount, 12000);
    assert_string_equal(rl.currency, "KRW");
    assert_int_equal(rl.value_date, D("2026-11-25"));
    struct {
        const char *line, *why;
    } bad[] = {
        {"pay_1,12000,KRW", "wrong field count"},
        {"pay_1,12000,KRW,2026-11-25,x", "wrong field count"},
        {",12000,KRW,2026-11-25", "bad transaction_id"},
        {"pay 1,12000,KRW,2026-11-25", "bad transaction_id"},
        {"pay_1,0,KRW,2026-11-25", "bad amount"},
        {"pay_1,-5,KRW,2026-11-25", "bad amount"},
        {"pay_1,012,KRW,2026-11-25", "bad amount"},
        {"pay_1,12.50,KRW,2026-11-25", "bad amount"},
        {"pay_1, 12,KRW,2026-11-25", "bad amount"},
        {"pay_1,1000000000000001,KRW,2026-11-25", "bad amount"},
        {"pay_1,12,krw,2026-11-25", "bad currency"},
        {"pay_1,12,KRWX,2026-11-25", "bad currency"},
        {"pay_1,12,KRW,2026-11-31", "bad value_date"},
        {"pay_1,12,KRW,25.11.2026", "bad value_date"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        l = line_of(bad[i].line);
        assert_int_equal(recon_line_parse(&l, &rl, &why), -EINVAL);
        assert_non_null(strstr(why, bad[i].why));
    }
    char longid[RECON_FIELD_MAX_BYTES + 40];
    memset(longid, 'x', RECON_FIELD_MAX_BYTES + 1);
    strcpy(longid + RECON_FIELD_MAX_BYTES + 1, ",1,KRW,2026-11-25");
    l = line_of(longid);
    assert_int_equal(recon_line_parse(&l, &rl, &why), -EINVAL);
    /* a CSV error is the reason */
    l.error = "bare CR";
    assert_int_equal(recon_line_parse(&l, &rl, &why), -EINVAL);
    assert_string_equal(why, "bare CR");
}

static void test_recon_classify(void **state)
{
    struct settle_capture cap;
    memset(&cap, 0, sizeof(cap));
    strcpy(cap.payment_id, "pay_2a0000000000000001");
    strcpy(cap.merchant_id, "m-1");
    cap.merchant_id_len = 3;
    strcpy(cap.currency, "KRW");
    cap.amount = 12000;
    cap.value_date = D("2026-11-25");
    struct recon_line l;
    const char *why;
    struct csv_line cl = line_of("pay_2a0000000000000001,12000,KRW,2026-11-26");
    assert_int_equal(recon_line_parse(&cl, &l, &why), 0);
    assert_int_equal(recon_classify(&l, &cap, false), RECON_MATCHED); /* date not a category */
    assert_int_equal(recon_classify(&l, &cap, true), RECON_DUPLICATE_IN_FILE);
    assert_int_equal(recon_classify(&l, NULL, false), RECON_UNKNOWN_TRANSACTION);
    l.amount = 12001;
    assert_int_equal(recon_classify(&l, &cap, false), RECON_AMOUNT_MISMATCH);
    memcpy(l.currency, "USD", 3);
    assert_int_equal(recon_classify(&l, &cap, false), RECON_CURRENCY_MISMATCH);
    for (int c = 0; c < RECON_CATEGORIES; c++)
        assert_non_null(recon_category_name((enum recon_category)c));
    assert_string_equal(recon_category_name(RECON_MISSING_IN_BANK), "missing_in_bank");
}

/* ---- Renderers --------------------------------------------------------------------------- */

static const char *render(int (*fn)(struct jw *, const void *), const void *arg)
{
    static char buf[8192];
    struct jw w;
    jw_init(&w, buf, sizeof(buf) - 1);
    assert_int_equal(fn(&w, arg), 0);
    assert_int_equal(jw_finish(&w), 0);
    buf[w.len] = '\0';
    return buf;
}

static int r_batch(struct jw *w, const void *b)
{
    return settle_render_batch(w, b);
}

static int r_closed(struct jw *w, const void *b)
{
    return settle_render_closed_event(w, b);
}

static int r_summary(struct jw *w, const void *s)
{
    return recon_render_summary(w, s);
}

static int r_item(struct jw *w, const void *it)
{
    return recon_render_item(w, it);
}

static void test_renderers(void **state)
{
    struct settle_key k;
    struct settle_batch b;
    settle_key_set(&k, "m-1", 3, "KRW", D("2026-11-25"));
    settle_batch_init(&b, &k, 0);
    b.gross = 15000;
    b.capture_count = 2;
    b.refunds = 500;
    b.refund_count = 1;
    b.adjustments = -200;
    b.adjustment_count = 1;
    assert_string_equal(
        render(r_batch, &b),
        "{\"id\":\"stl_20261125_KRW_m-1\",\"merchant_id\":\"m-1\",\"currency\":\"KRW\","
        "\"business_date\":\"2026-11-25\",\"status\":\"open\",\"gross\":15000,\"refunds\":500,"
        "\"adjustments\":-200,\"net\":14300,\"capture_count\":2,\"refund_count\":1,"
        "\"closed_at\":null}");
    settle_batch_close(&b, T("2026-11-26T00:10:00.000Z"));
    assert_string_equal(render(r_closed, &b),
                        "{\"event_id\":\"evt_stl_20261125_KRW_m-1\",\"type\":\"settlement.closed\","
                        "\"occurred_at\":\"2026-11-26T00:10:00.000Z\",\"settlement\":{\"id\":"
                        "\"stl_20261125_KRW_m-1\",\"merchant_id\":\"m-1\",\"currency\":\"KRW\","
                        "\"business_date\":\"2026-11-25\",\"status\":\"closed\",\"gross\":15000,"
                        "\"refunds\":500,\"adjustments\":-200,\"net\":14300,\"capture_count\":2,"
                        "\"refund_count\":1,\"closed_at\":\"2026-11-26T00:10:00.000Z\"}}");
    char row[256];
    assert_true(settle_render_batch_csv(row, sizeof(row), &b) > 0);
    assert_string_equal(row, "stl_20261125_KRW_m-1,m-1,KRW,2026-11-25,closed,15000,500,-200,"
                             "14300,2,1,2026-11-26T00:10:00.000Z\r\n");
    assert_int_equal(settle_render_batch_csv(row, 20, &b), 0);

    struct recon_summary s = {.seq = 1, .lines = 6, .status = RECON_STATUS_DONE};
    s.counts[RECON_MATCHED] = 1;
    s.counts[RECON_AMOUNT_MISMATCH] = 1;
    s.counts[RECON_CURRENCY_MISMATCH] = 1;
    s.counts[RECON_UNKNOWN_TRANSACTION] = 1;
    s.counts[RECON_DUPLICATE_IN_FILE] = 1;
    s.counts[RECON_MALFORMED] = 1;
    s.counts[RECON_MISSING_IN_BANK] = 2;
    assert_string_equal(render(r_summary, &s),
                        "{\"id\":\"rcf_0000000000000001\",\"lines\":6,\"counts\":{\"matched\":1,"
                        "\"amount_mismatch\":1,\"currency_mismatch\":1,\"unknown_transaction\":1,"
                        "\"duplicate_in_file\":1,\"missing_in_bank\":2,\"malformed\":1},"
                        "\"status\":\"done\"}");

    struct recon_item it;
    memset(&it, 0, sizeof(it));
    it.item = it.line = 3;
    it.category = RECON_AMOUNT_MISMATCH;
    strcpy(it.transaction_id, "pay_2a0000000000000001");
    it.transaction_id_len = ID_BYTES;
    it.has_line_fields = true;
    it.amount = 12001;
    strcpy(it.currency, "KRW");
    it.value_date = D("2026-11-25");
    it.has_capture = true;
    strcpy(it.capture.payment_id, it.transaction_id);
    strcpy(it.capture.merchant_id, "m-1");
    it.capture.merchant_id_len = 3;
    strcpy(it.capture.currency, "KRW");
    it.capture.amount = 12000;
    it.capture.value_date = D("2026-11-25");
    assert_string_equal(
        render(r_item, &it),
        "{\"item\":3,\"line\":3,\"category\":\"amount_mismatch\",\"transaction_id\":"
        "\"pay_2a0000000000000001\",\"amount\":12001,\"currency\":\"KRW\","
        "\"value_date\":\"2026-11-25\",\"expected_amount\":12000,"
        "\"expected_currency\":\"KRW\",\"expected_value_date\":\"2026-11-25\","
        "\"merchant_id\":\"m-1\",\"reason\":null}");
    memset(&it, 0, sizeof(it));
    it.item = it.line = 4;
    it.category = RECON_MALFORMED;
    it.reason = "bad amount (an integer of minor units, 1 to 10^15)";
    assert_string_equal(render(r_item, &it),
                        "{\"item\":4,\"line\":4,\"category\":\"malformed\",\"transaction_id\":null,"
                        "\"amount\":null,\"currency\":null,\"value_date\":null,"
                        "\"expected_amount\":null,\"expected_currency\":null,"
                        "\"expected_value_date\":null,\"merchant_id\":null,\"reason\":"
                        "\"bad amount (an integer of minor units, 1 to 10^15)\"}");
    struct jw w;
    char buf[1024];
    jw_init(&w, buf, sizeof(buf));
    assert_int_equal(recon_render_unmatched_event(&w, 1, &it, 2, 0), 0);
    buf[w.len] = '\0';
    assert_non_null(strstr(buf, "{\"event_id\":\"evt_rcf_0000000000000001_4_2\","
                                "\"type\":\"recon.unmatched\",\"occurred_at\":"
                                "\"1970-01-01T00:00:00.000Z\",\"file_id\":\"rcf_0000000000000001\","
                                "\"item\":{\"item\":4,"));
    /* a buffer too small: -ENOBUFS, never past it */
    jw_init(&w, buf, 40);
    assert_int_equal(settle_render_batch(&w, &b), -ENOBUFS);
    uint64_t seq;
    assert_int_equal(recon_file_id_parse("rcf_0000000000000001", 20, &seq), 0);
    assert_int_equal(seq, 1);
    assert_int_equal(recon_file_id_parse("rcf_0000000000000000", 20, &seq), -EINVAL);
    assert_int_equal(recon_file_id_parse("rcf_000000000000000G", 20, &seq), -EINVAL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_date_roundtrip_and_leap_days),
        cmocka_unit_test(test_time_parse_matches_engine_renderer),
        cmocka_unit_test(test_cutoff_and_grace_parse),
        cmocka_unit_test(test_utc_midnight_and_cutoff_minute),
        cmocka_unit_test(test_leap_day),
        cmocka_unit_test(test_berlin_dst),
        cmocka_unit_test(test_new_york_dst),
        cmocka_unit_test(test_calendar_properties),
        cmocka_unit_test_setup_teardown(test_parse_real_events, fx_setup, fx_teardown),
        cmocka_unit_test_setup_teardown(test_poison_events, fx_setup, fx_teardown),
        cmocka_unit_test(test_batch_arithmetic_and_bounds),
        cmocka_unit_test(test_batch_ids),
        cmocka_unit_test(test_rules_count_duplicates_and_ignore),
        cmocka_unit_test(test_rules_late_event_adjusts_next_open_batch),
        cmocka_unit_test(test_rules_order_and_duplicates_do_not_matter),
        cmocka_unit_test(test_recon_header_and_lines),
        cmocka_unit_test(test_recon_classify),
        cmocka_unit_test(test_renderers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
