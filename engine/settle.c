/*
 * The back office's rules (engine/settle.h): dates and the business day, batch
 * arithmetic and the late-event rule, reconciliation lines, identifiers and renderers.
 * The event parser is in settle_event.c (same header).
 *
 * Invariants kept here: a batch is checked (settle_batch_check) before and after every
 * change; settle_apply_event decides everything before its first write; the calendar's
 * cache only ever holds a day computed by settle_day_start.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "engine/assert.h"
#include "engine/ids.h"
#include "engine/settle.h"

#define MS_PER_MIN  60000LL
#define MS_PER_HOUR 3600000LL
#define MS_PER_DAY  86400000LL

/* ---- Dates ----------------------------------------------------------------------- */

/* Howard Hinnant's days_from_civil / civil_from_days (public domain algorithms). */
int32_t settle_days_from_civil(int32_t y, unsigned m, unsigned d)
{
    y -= m <= 2;
    int32_t era = (y >= 0 ? y : y - 399) / 400;
    unsigned yoe = (unsigned)(y - era * 400);
    unsigned doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    unsigned doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    return era * 146097 + (int32_t)doe - 719468;
}

void settle_civil_from_days(int32_t days, int32_t *y, unsigned *m, unsigned *d)
{
    int32_t z = days + 719468;
    int32_t era = (z >= 0 ? z : z - 146096) / 146097;
    unsigned doe = (unsigned)(z - era * 146097);
    unsigned yoe = (doe - doe / 1460 + doe / 36524 - doe / 146096) / 365;
    unsigned doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    unsigned mp = (5 * doy + 2) / 153;
    *d = doy - (153 * mp + 2) / 5 + 1;
    *m = mp < 10 ? mp + 3 : mp - 9;
    *y = (int32_t)yoe + era * 400 + (*m <= 2);
}

static bool leap(int32_t y)
{
    return (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
}

static unsigned month_days(int32_t y, unsigned m)
{
    static const unsigned days[12] = {31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31};
    return m == 2 && leap(y) ? 29 : days[m - 1];
}

/* n decimal digits at s: 0 and *v, or -EINVAL. */
static int digits(const char *s, size_t n, unsigned *v)
{
    unsigned x = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return -EINVAL;
        x = x * 10 + (unsigned)(s[i] - '0');
    }
    *v = x;
    return 0;
}

/* "YYYY-MM-DD" at s (10 bytes): a real date, as days (not range-checked). */
static int civil_parse(const char *s, int32_t *days)
{
    unsigned y, m, d;
    if (s[4] != '-' || s[7] != '-' || digits(s, 4, &y) || digits(s + 5, 2, &m) ||
        digits(s + 8, 2, &d))
        return -EINVAL;
    if (m < 1 || m > 12 || d < 1 || d > month_days((int32_t)y, m))
        return -EINVAL;
    *days = settle_days_from_civil((int32_t)y, m, d);
    return 0;
}

int settle_date_parse(const char *s, size_t len, int32_t *days)
{
    int32_t v;
    if (s == NULL || len != SETTLE_DATE_BYTES || civil_parse(s, &v))
        return -EINVAL;
    if (v < SETTLE_DATE_MIN || v > SETTLE_DATE_MAX)
        return -EINVAL;
    *days = v;
    return 0;
}

static void put_digits(char *o, unsigned v, int n)
{
    for (int i = n - 1; i >= 0; i--) {
        o[i] = (char)('0' + v % 10);
        v /= 10;
    }
}

void settle_date_format(char out[SETTLE_DATE_BYTES + 1], int32_t days)
{
    ASSERT(days >= SETTLE_DATE_MIN && days <= SETTLE_DATE_MAX);
    int32_t y;
    unsigned m, d;
    settle_civil_from_days(days, &y, &m, &d);
    put_digits(out, (unsigned)y, 4);
    out[4] = '-';
    put_digits(out + 5, m, 2);
    out[7] = '-';
    put_digits(out + 8, d, 2);
    out[10] = '\0';
}

int settle_time_parse(const char *s, size_t len, int64_t *ms)
{
    int32_t days;
    unsigned hh, mm, ss, mmm;
    if (s == NULL || len != JSON_TIME_BYTES || civil_parse(s, &days))
        return -EINVAL;
    if (s[10] != 'T' || s[13] != ':' || s[16] != ':' || s[19] != '.' || s[23] != 'Z' ||
        digits(s + 11, 2, &hh) || digits(s + 14, 2, &mm) || digits(s + 17, 2, &ss) ||
        digits(s + 20, 3, &mmm) || hh > 23 || mm > 59 || ss > 59)
        return -EINVAL;
    if (days < 0)
        return -EINVAL;
    int64_t v = days * MS_PER_DAY + hh * MS_PER_HOUR + mm * MS_PER_MIN + ss * 1000LL + mmm;
    if (v > TIME_MS_MAX)
        return -EINVAL;
    *ms = v;
    return 0;
}

/* ---- Calendar ---------------------------------------------------------------------- */

int settle_offset_utc(void *arg, int64_t utc_ms, int32_t *offset_s)
{
    (void)arg;
    (void)utc_ms;
    *offset_s = 0;
    return 0;
}

int settle_offset_fixed(void *arg, int64_t utc_ms, int32_t *offset_s)
{
    (void)utc_ms;
    *offset_s = *(const int32_t *)arg;
    return 0;
}

void settle_calendar_init(struct settle_calendar *c, settle_offset_fn fn, void *arg,
                          int32_t cutoff_min, int64_t grace_ms)
{
    ASSERT(c != NULL && fn != NULL);
    ASSERT(cutoff_min >= 0 && cutoff_min < 24 * 60);
    ASSERT(grace_ms >= 0 && grace_ms <= SETTLE_GRACE_MAX_MS);
    memset(c, 0, sizeof(*c));
    c->offset_fn = fn;
    c->offset_arg = arg;
    c->cutoff_min = cutoff_min;
    c->grace_ms = grace_ms;
}

int settle_cutoff_parse(const char *s, size_t len, int32_t *minutes)
{
    unsigned h, m;
    if (s == NULL || len != 5 || s[2] != ':' || digits(s, 2, &h) || digits(s + 3, 2, &m) ||
        h > 23 || m > 59)
        return -EINVAL;
    *minutes = (int32_t)(h * 60 + m);
    return 0;
}

int settle_grace_parse(const char *s, size_t len, int64_t *ms)
{
    if (s == NULL || len == 0)
        return -EINVAL;
    if (len == 1 && s[0] == '0') {
        *ms = 0;
        return 0;
    }
    if (len < 2 || len > 10 || s[0] == '0')
        return -EINVAL;
    unsigned v;
    if (digits(s, len - 1, &v))
        return -EINVAL;
    int64_t unit = s[len - 1] == 's'   ? 1000
                   : s[len - 1] == 'm' ? MS_PER_MIN
                   : s[len - 1] == 'h' ? MS_PER_HOUR
                                       : 0;
    if (unit == 0 || (int64_t)v > SETTLE_GRACE_MAX_MS / unit)
        return -EINVAL;
    *ms = (int64_t)v * unit;
    return 0;
}

/* The zone's offset at u, in ms. */
static int offset_ms(struct settle_calendar *c, int64_t u, int64_t *off)
{
    int32_t o = 0;
    int rc = c->offset_fn(c->offset_arg, u, &o);
    if (rc)
        return rc < 0 ? rc : -EINVAL;
    ASSERT(o >= -SETTLE_TZ_OFFSET_MAX_S && o <= SETTLE_TZ_OFFSET_MAX_S);
    *off = (int64_t)o * 1000;
    return 0;
}

static int64_t floor_div(int64_t a, int64_t b)
{
    int64_t q = a / b;
    return (a % b != 0 && (a < 0) != (b < 0)) ? q - 1 : q;
}

/*
 * The first instant u with wall(u) >= W, where W is a wall time in ms read as UTC.
 * wall(u) = u + off(u) is increasing between offset changes. Every answer lies within
 * 26 h of W; with at most one change in that window (the calendar's assumption) the
 * offset is o_lo before the change at tau and o_hi from it on.
 */
static int first_at_or_after(struct settle_calendar *c, int64_t W, int64_t *u)
{
    int64_t lo = W - 26 * MS_PER_HOUR, hi = W + 26 * MS_PER_HOUR, o_lo, o_hi, o_m;
    int rc = offset_ms(c, lo, &o_lo);
    if (rc == 0)
        rc = offset_ms(c, hi, &o_hi);
    if (rc)
        return rc;
    if (o_lo == o_hi) {
        *u = W - o_lo;
        return 0;
    }
    /* Bisect for tau, the first instant with the new offset: off(a) == o_lo, and from b on
     * the offset is no longer o_lo. */
    int64_t a = lo, b = hi;
    while (b - a > 1) {
        int64_t m = a + (b - a) / 2;
        if ((rc = offset_ms(c, m, &o_m)))
            return rc;
        if (o_m == o_lo)
            a = m;
        else
            b = m;
    }
    int64_t tau = b;
    if (W - o_lo < tau)
        *u = W - o_lo; /* reached before the change */
    else
        *u = W - o_hi > tau ? W - o_hi : tau; /* after it; tau itself when W is in a gap */
    return 0;
}

int settle_day_start(struct settle_calendar *c, int32_t date, int64_t *utc_ms)
{
    ASSERT(c != NULL && utc_ms != NULL);
    if (date < SETTLE_DATE_MIN || date > SETTLE_DATE_MAX + 1)
        return -ERANGE;
    return first_at_or_after(c, date * MS_PER_DAY + c->cutoff_min * MS_PER_MIN, utc_ms);
}

/* business_date without the range check of the result (it may be MIN - 1). */
static int business_date_any(struct settle_calendar *c, int64_t t, int32_t *date)
{
    if (c->cached && t >= c->cache_start_ms && t < c->cache_end_ms) {
        *date = c->cache_date;
        return 0;
    }
    int64_t off, start, next;
    int rc = offset_ms(c, t, &off);
    if (rc)
        return rc;
    int64_t d0 = floor_div(t + off - c->cutoff_min * MS_PER_MIN, MS_PER_DAY);
    if (d0 < SETTLE_DATE_MIN - 1 || d0 > SETTLE_DATE_MAX)
        return -ERANGE;
    /* wall(t) >= (d0, cutoff), so start(d0) <= t; and t is past start(d0 + 1) only in a
     * repeated hour after the cutoff was first reached (see settle.h). */
    int32_t d = (int32_t)d0;
    if ((rc = settle_day_start(c, d + 1, &next)))
        return rc;
    if (next <= t) {
        d++;
        if ((rc = settle_day_start(c, d + 1, &next)))
            return rc;
    }
    if (d >= SETTLE_DATE_MIN) {
        if ((rc = settle_day_start(c, d, &start)))
            return rc;
        ASSERT(start <= t && t < next);
        c->cached = true;
        c->cache_date = d;
        c->cache_start_ms = start;
        c->cache_end_ms = next;
    }
    *date = d;
    return 0;
}

int settle_business_date(struct settle_calendar *c, int64_t utc_ms, int32_t *date)
{
    ASSERT(c != NULL && date != NULL);
    if (utc_ms < 0 || utc_ms > TIME_MS_MAX)
        return -ERANGE;
    int32_t d;
    int rc = business_date_any(c, utc_ms, &d);
    if (rc)
        return rc;
    if (d < SETTLE_DATE_MIN || d > SETTLE_DATE_MAX)
        return -ERANGE;
    *date = d;
    return 0;
}

int settle_close_at(struct settle_calendar *c, int32_t date, int64_t *utc_ms)
{
    ASSERT(c != NULL && utc_ms != NULL);
    if (date < SETTLE_DATE_MIN || date > SETTLE_DATE_MAX)
        return -ERANGE;
    int64_t end;
    int rc = settle_day_start(c, date + 1, &end);
    if (rc == 0)
        *utc_ms = end + c->grace_ms;
    return rc;
}

int settle_due_through(struct settle_calendar *c, int64_t now_ms, int32_t *date)
{
    ASSERT(c != NULL && date != NULL);
    int64_t t = now_ms - c->grace_ms;
    if (t < 0) {
        *date = SETTLE_DATE_MIN - 1;
        return 0;
    }
    if (t > TIME_MS_MAX)
        t = TIME_MS_MAX;
    int32_t d;
    int rc = business_date_any(c, t, &d);
    if (rc)
        return rc;
    *date = d - 1 < SETTLE_DATE_MIN - 1 ? SETTLE_DATE_MIN - 1 : d - 1;
    return 0;
}

/* ---- Batches ----------------------------------------------------------------------- */

static bool merchant_ok(const char *m, size_t len)
{
    if (len < 1 || len > MERCHANT_ID_MAX_BYTES)
        return false;
    for (size_t i = 0; i < len; i++) {
        char ch = m[i];
        if (!((ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z') || (ch >= '0' && ch <= '9') ||
              ch == '_' || ch == '-'))
            return false;
    }
    return true;
}

static bool currency_ok(const char *c, size_t len)
{
    if (len != CURRENCY_BYTES)
        return false;
    for (size_t i = 0; i < len; i++)
        if (c[i] < 'A' || c[i] > 'Z')
            return false;
    return true;
}

void settle_key_set(struct settle_key *k, const char *merchant, size_t merchant_len,
                    const char *currency, int32_t date)
{
    ASSERT(merchant_ok(merchant, merchant_len) && currency_ok(currency, CURRENCY_BYTES));
    ASSERT(date >= SETTLE_DATE_MIN && date <= SETTLE_DATE_MAX);
    memset(k, 0, sizeof(*k));
    memcpy(k->merchant_id, merchant, merchant_len);
    k->merchant_id_len = (uint8_t)merchant_len;
    memcpy(k->currency, currency, CURRENCY_BYTES);
    k->date = date;
}

bool settle_key_equal(const struct settle_key *a, const struct settle_key *b)
{
    return a->merchant_id_len == b->merchant_id_len &&
           memcmp(a->merchant_id, b->merchant_id, a->merchant_id_len) == 0 &&
           memcmp(a->currency, b->currency, CURRENCY_BYTES) == 0 && a->date == b->date;
}

static bool key_valid(const struct settle_key *k)
{
    return merchant_ok(k->merchant_id, k->merchant_id_len) &&
           k->merchant_id[k->merchant_id_len] == '\0' && currency_ok(k->currency, CURRENCY_BYTES) &&
           k->currency[CURRENCY_BYTES] == '\0' && k->date >= SETTLE_DATE_MIN &&
           k->date <= SETTLE_DATE_MAX;
}

size_t settle_batch_id(char out[SETTLE_BATCH_ID_MAX_BYTES + 1], const struct settle_key *k)
{
    ASSERT(key_valid(k));
    int32_t y;
    unsigned m, d;
    settle_civil_from_days(k->date, &y, &m, &d);
    memcpy(out, "stl_", 4);
    put_digits(out + 4, (unsigned)y, 4);
    put_digits(out + 8, m, 2);
    put_digits(out + 10, d, 2);
    out[12] = '_';
    memcpy(out + 13, k->currency, CURRENCY_BYTES);
    out[16] = '_';
    memcpy(out + 17, k->merchant_id, k->merchant_id_len);
    size_t n = 17 + (size_t)k->merchant_id_len;
    out[n] = '\0';
    return n;
}

int settle_batch_id_parse(const char *id, size_t len, struct settle_key *k)
{
    char date[SETTLE_DATE_BYTES];
    int32_t days;
    if (id == NULL || len < 18 || len > SETTLE_BATCH_ID_MAX_BYTES || memcmp(id, "stl_", 4) != 0 ||
        id[12] != '_' || id[16] != '_')
        return -EINVAL;
    memcpy(date, id + 4, 4);
    date[4] = '-';
    memcpy(date + 5, id + 8, 2);
    date[7] = '-';
    memcpy(date + 8, id + 10, 2);
    for (int i = 4; i < 12; i++)
        if (id[i] < '0' || id[i] > '9')
            return -EINVAL;
    if (settle_date_parse(date, sizeof(date), &days) || !currency_ok(id + 13, CURRENCY_BYTES) ||
        !merchant_ok(id + 17, len - 17))
        return -EINVAL;
    settle_key_set(k, id + 17, len - 17, id + 13, days);
    return 0;
}

void settle_batch_init(struct settle_batch *b, const struct settle_key *k, int64_t now_ms)
{
    ASSERT(key_valid(k) && now_ms >= 0 && now_ms <= TIME_MS_MAX);
    memset(b, 0, sizeof(*b));
    b->key = *k;
    b->created_at_ms = now_ms;
    b->closed_at_ms = -1;
    settle_batch_check(b);
}

int64_t settle_batch_net(const struct settle_batch *b)
{
    return b->gross - b->refunds + b->adjustments;
}

bool settle_batch_valid(const struct settle_batch *b)
{
    return key_valid(&b->key) && b->gross >= 0 && b->gross < SETTLE_TOTAL_MAX && b->refunds >= 0 &&
           b->refunds < SETTLE_TOTAL_MAX && b->adjustments > -SETTLE_TOTAL_MAX &&
           b->adjustments < SETTLE_TOTAL_MAX && b->capture_count >= 0 && b->refund_count >= 0 &&
           b->adjustment_count >= 0 && (b->gross == 0) == (b->capture_count == 0) &&
           (b->refunds == 0) == (b->refund_count == 0) &&
           (b->adjustment_count > 0 || b->adjustments == 0) && b->capture_count <= b->gross &&
           b->refund_count <= b->refunds && b->created_at_ms >= 0 &&
           b->created_at_ms <= TIME_MS_MAX &&
           (b->closed ? b->closed_at_ms >= 0 && b->closed_at_ms <= TIME_MS_MAX
                      : b->closed_at_ms == -1);
}

void settle_batch_check(const struct settle_batch *b)
{
    ASSERT(b != NULL);
    ASSERT(settle_batch_valid(b));
}

int settle_batch_add(struct settle_batch *b, const struct settle_event *ev)
{
    settle_batch_check(b);
    ASSERT(!b->closed && ev->amount >= AMOUNT_MIN && ev->amount <= AMOUNT_MAX);
    int64_t *total = NULL, *count = NULL;
    if (ev->type == SETTLE_EVENT_CAPTURED) {
        total = &b->gross;
        count = &b->capture_count;
    } else {
        ASSERT(ev->type == SETTLE_EVENT_REFUNDED);
        total = &b->refunds;
        count = &b->refund_count;
    }
    if (*total >= SETTLE_TOTAL_MAX - ev->amount)
        return -EOVERFLOW;
    *total += ev->amount;
    (*count)++;
    settle_batch_check(b);
    return 0;
}

int settle_batch_adjust(struct settle_batch *b, const struct settle_event *ev)
{
    settle_batch_check(b);
    ASSERT(!b->closed && ev->amount >= AMOUNT_MIN && ev->amount <= AMOUNT_MAX);
    ASSERT(ev->type == SETTLE_EVENT_CAPTURED || ev->type == SETTLE_EVENT_REFUNDED);
    int64_t delta = ev->type == SETTLE_EVENT_CAPTURED ? ev->amount : -ev->amount;
    int64_t next = b->adjustments + delta; /* |both| < 2^62: no overflow */
    if (next <= -SETTLE_TOTAL_MAX || next >= SETTLE_TOTAL_MAX)
        return -EOVERFLOW;
    b->adjustments = next;
    b->adjustment_count++;
    settle_batch_check(b);
    return 0;
}

void settle_batch_close(struct settle_batch *b, int64_t now_ms)
{
    settle_batch_check(b);
    ASSERT(!b->closed && now_ms >= 0 && now_ms <= TIME_MS_MAX);
    b->closed = true;
    b->closed_at_ms = now_ms;
    settle_batch_check(b);
}

/* ---- Applying an event ------------------------------------------------------------- */

static int refuse(struct settle_result *out, const char *why)
{
    out->outcome = SETTLE_REFUSED;
    snprintf(out->reason, sizeof(out->reason), "%s", why);
    return 0;
}

/* Step 1 of "next open batch": the open batch after `date` whose date is not closed. 0
 * and *b, -ENOENT, or -errno. */
static int next_open_existing(const struct settle_ops *ops, void *ctx, const struct settle_key *k,
                              struct settle_batch *b)
{
    struct settle_key from = *k;
    for (;;) {
        int rc = ops->batch_next_open(ctx, &from, b);
        if (rc)
            return rc;
        ASSERT(b->key.date > from.date && !b->closed);
        rc = ops->date_closed(ctx, b->key.date);
        if (rc < 0)
            return rc;
        if (rc == 0)
            return 0;
        from.date = b->key.date; /* closed, its batches not all swept yet: skip */
    }
}

/* The batch a late event of date k->date adjusts (settle.h): 0 and *b (open; new ones
 * have seq 0), 1 when there is no date to put it in, or -errno. */
static int next_open_batch(const struct settle_ops *ops, void *ctx, struct settle_calendar *cal,
                           const struct settle_key *k, int64_t now_ms, struct settle_batch *b)
{
    int rc = next_open_existing(ops, ctx, k, b);
    if (rc != -ENOENT)
        return rc;
    int32_t today = k->date + 1;
    if (settle_business_date(cal, now_ms, &today) || today <= k->date)
        today = k->date + 1;
    /* Dates at or after today are closed only by a close request (which refuses future
     * dates), so this loop runs once or twice; the bound is against a broken store. */
    for (int32_t e = today; e <= SETTLE_DATE_MAX && e < today + 400; e++) {
        rc = ops->date_closed(ctx, e);
        if (rc < 0)
            return rc;
        if (rc)
            continue;
        struct settle_key t = *k;
        t.date = e;
        rc = ops->batch_get(ctx, &t, b);
        if (rc == -ENOENT) {
            settle_batch_init(b, &t, now_ms);
            return 0;
        }
        if (rc)
            return rc;
        if (!b->closed)
            return 0;
    }
    return 1;
}

static int apply_money(const struct settle_ops *ops, void *ctx, struct settle_calendar *cal,
                       const struct settle_event *ev, int32_t date, int64_t now_ms,
                       struct settle_result *out)
{
    struct settle_key k;
    struct settle_batch b;
    settle_key_set(&k, ev->merchant_id, ev->merchant_id_len, ev->currency, date);
    int rc = ops->date_closed(ctx, date);
    if (rc < 0)
        return rc;
    bool late = rc == 1;
    if (!late) {
        rc = ops->batch_get(ctx, &k, &b);
        if (rc == -ENOENT)
            settle_batch_init(&b, &k, now_ms);
        else if (rc)
            return rc;
        late = b.closed; /* closing is per date, so this is only a store's inconsistency */
    }
    if (late) {
        rc = next_open_batch(ops, ctx, cal, &k, now_ms, &b);
        if (rc < 0)
            return rc;
        if (rc)
            return refuse(out, "no open batch can take this late event");
    }
    rc = late ? settle_batch_adjust(&b, ev) : settle_batch_add(&b, ev);
    if (rc == -EOVERFLOW)
        return refuse(out, "the batch's totals would overflow");
    ASSERT(rc == 0);
    /* Decided: now write. */
    if (ev->type == SETTLE_EVENT_CAPTURED) {
        struct settle_capture cap;
        memset(&cap, 0, sizeof(cap));
        memcpy(cap.payment_id, ev->payment_id, ID_BYTES);
        memcpy(cap.merchant_id, ev->merchant_id, ev->merchant_id_len);
        cap.merchant_id_len = ev->merchant_id_len;
        memcpy(cap.currency, ev->currency, CURRENCY_BYTES);
        cap.amount = ev->amount;
        cap.value_date = date;
        if ((rc = ops->capture_put(ctx, &cap)))
            return rc;
    }
    if ((rc = ops->batch_put(ctx, &b)))
        return rc;
    if (late) {
        int64_t delta = ev->type == SETTLE_EVENT_CAPTURED ? ev->amount : -ev->amount;
        if ((rc = ops->adjustment_put(ctx, &b.key, ev, date, delta)))
            return rc;
    }
    out->outcome = late ? SETTLE_ADJUSTED : SETTLE_COUNTED;
    out->batch = b.key;
    return ops->seen_put(ctx, ev, date);
}

int settle_apply_event(const struct settle_ops *ops, void *ctx, struct settle_calendar *cal,
                       const struct settle_event *ev, int64_t now_ms, struct settle_result *out)
{
    ASSERT(ops != NULL && cal != NULL && ev != NULL && out != NULL);
    ASSERT(now_ms >= 0 && now_ms <= TIME_MS_MAX);
    memset(out, 0, sizeof(*out));
    int32_t date, horizon;
    int rc = settle_business_date(cal, ev->occurred_at_ms, &date);
    if (rc)
        return refuse(out, "occurred_at has no business date (out of range for the zone)");
    out->date = date;
    if ((rc = ops->horizon_get(ctx, &horizon)))
        return rc;
    if (date < horizon)
        return refuse(out, "business date before the retention horizon: duplicates of it "
                           "can no longer be recognised");
    rc = ops->seen_get(ctx, ev);
    if (rc == 0) {
        out->outcome = SETTLE_DUPLICATE;
        return 0;
    }
    if (rc != -ENOENT)
        return rc;
    if (ev->type == SETTLE_EVENT_AUTHORIZED || ev->type == SETTLE_EVENT_VOIDED) {
        out->outcome = SETTLE_IGNORED;
        return 0;
    }
    return apply_money(ops, ctx, cal, ev, date, now_ms, out);
}

/* ---- Reconciliation ---------------------------------------------------------------- */

const char *recon_category_name(enum recon_category c)
{
    static const char *const names[RECON_CATEGORIES] = {
        [RECON_MATCHED] = "matched",
        [RECON_AMOUNT_MISMATCH] = "amount_mismatch",
        [RECON_CURRENCY_MISMATCH] = "currency_mismatch",
        [RECON_UNKNOWN_TRANSACTION] = "unknown_transaction",
        [RECON_DUPLICATE_IN_FILE] = "duplicate_in_file",
        [RECON_MISSING_IN_BANK] = "missing_in_bank",
        [RECON_MALFORMED] = "malformed",
    };
    ASSERT((unsigned)c < RECON_CATEGORIES);
    return names[c];
}

int recon_header_check(const struct csv_line *line)
{
    static const char *const names[4] = {"transaction_id", "amount", "currency", "value_date"};
    if (line->error != NULL || line->nfields != 4)
        return -EINVAL;
    for (int i = 0; i < 4; i++)
        if (line->fields[i].len != strlen(names[i]) ||
            memcmp(line->fields[i].ptr, names[i], line->fields[i].len) != 0)
            return -EINVAL;
    return 0;
}

/* A plain integer 1..AMOUNT_MAX: digits only, no leading zero. */
static bool amount_parse(const char *s, size_t n, int64_t *out)
{
    if (n == 0 || n > 16 || s[0] == '0')
        return false;
    int64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        if (s[i] < '0' || s[i] > '9')
            return false;
        v = v * 10 + (s[i] - '0');
    }
    if (v < AMOUNT_MIN || v > AMOUNT_MAX)
        return false;
    *out = v;
    return true;
}

int recon_line_parse(const struct csv_line *line, struct recon_line *out, const char **reason)
{
    ASSERT(line != NULL && out != NULL && reason != NULL);
    memset(out, 0, sizeof(*out));
    *reason = NULL;
    if (line->error != NULL) {
        *reason = line->error;
        return -EINVAL;
    }
    if (line->nfields != 4) {
        *reason = "wrong field count (expected 4)";
        return -EINVAL;
    }
    const struct csv_field *f = line->fields;
    bool id_ok = f[0].len >= 1 && f[0].len <= RECON_FIELD_MAX_BYTES;
    for (size_t i = 0; id_ok && i < f[0].len; i++)
        id_ok = f[0].ptr[i] > 0x20 && f[0].ptr[i] < 0x7f;
    if (!id_ok)
        *reason = "bad transaction_id (1-64 printable ASCII characters, no spaces)";
    else if (!amount_parse(f[1].ptr, f[1].len, &out->amount))
        *reason = "bad amount (an integer of minor units, 1 to 10^15)";
    else if (!currency_ok(f[2].ptr, f[2].len))
        *reason = "bad currency (three upper-case letters)";
    else if (settle_date_parse(f[3].ptr, f[3].len, &out->value_date))
        *reason = "bad value_date (YYYY-MM-DD)";
    if (*reason)
        return -EINVAL;
    memcpy(out->transaction_id, f[0].ptr, f[0].len);
    out->transaction_id_len = (uint8_t)f[0].len;
    memcpy(out->currency, f[2].ptr, CURRENCY_BYTES);
    return 0;
}

enum recon_category recon_classify(const struct recon_line *l, const struct settle_capture *cap,
                                   bool duplicate)
{
    ASSERT(l != NULL);
    if (duplicate)
        return RECON_DUPLICATE_IN_FILE;
    if (cap == NULL)
        return RECON_UNKNOWN_TRANSACTION;
    ASSERT(l->transaction_id_len == ID_BYTES &&
           memcmp(l->transaction_id, cap->payment_id, ID_BYTES) == 0);
    if (memcmp(l->currency, cap->currency, CURRENCY_BYTES) != 0)
        return RECON_CURRENCY_MISMATCH;
    if (l->amount != cap->amount)
        return RECON_AMOUNT_MISMATCH;
    return RECON_MATCHED;
}

/* ---- Identifiers and renderers ----------------------------------------------------- */

static const char hexd[] = "0123456789abcdef";

void recon_file_id(char out[RECON_FILE_ID_BYTES + 1], uint64_t seq)
{
    ASSERT(seq >= 1);
    memcpy(out, "rcf_", 4);
    for (int i = 0; i < 16; i++)
        out[4 + i] = hexd[seq >> (60 - 4 * i) & 15];
    out[RECON_FILE_ID_BYTES] = '\0';
}

int recon_file_id_parse(const char *id, size_t len, uint64_t *seq)
{
    if (id == NULL || len != RECON_FILE_ID_BYTES || memcmp(id, "rcf_", 4) != 0)
        return -EINVAL;
    uint64_t v = 0;
    for (int i = 4; i < RECON_FILE_ID_BYTES; i++) {
        const char *p = id[i] ? strchr(hexd, id[i]) : NULL;
        if (p == NULL)
            return -EINVAL;
        v = v << 4 | (uint64_t)(p - hexd);
    }
    if (v == 0)
        return -EINVAL;
    *seq = v;
    return 0;
}

const char *recon_status_name(enum recon_status s)
{
    switch (s) {
    case RECON_STATUS_PROCESSING:
        return "processing";
    case RECON_STATUS_DONE:
        return "done";
    case RECON_STATUS_FAILED:
        return "failed";
    }
    UNREACHABLE();
    return NULL;
}

const char *settle_event_type_name(enum settle_event_type t)
{
    switch (t) {
    case SETTLE_EVENT_AUTHORIZED:
        return "payment.authorized";
    case SETTLE_EVENT_CAPTURED:
        return "payment.captured";
    case SETTLE_EVENT_VOIDED:
        return "payment.voided";
    case SETTLE_EVENT_REFUNDED:
        return "payment.refunded";
    }
    UNREACHABLE();
    return NULL;
}

static int jw_date(struct jw *w, int32_t days)
{
    char d[SETTLE_DATE_BYTES + 1];
    settle_date_format(d, days);
    return jw_str(w, d, SETTLE_DATE_BYTES);
}

static int batch_fields(struct jw *w, const struct settle_batch *b)
{
    char id[SETTLE_BATCH_ID_MAX_BYTES + 1];
    size_t n = settle_batch_id(id, &b->key);
    jw_obj_begin(w);
    jw_key(w, "id");
    jw_str(w, id, n);
    jw_key(w, "merchant_id");
    jw_str(w, b->key.merchant_id, b->key.merchant_id_len);
    jw_key(w, "currency");
    jw_str(w, b->key.currency, CURRENCY_BYTES);
    jw_key(w, "business_date");
    jw_date(w, b->key.date);
    jw_key(w, "status");
    jw_cstr(w, b->closed ? "closed" : "open");
    jw_key(w, "gross");
    jw_int(w, b->gross);
    jw_key(w, "refunds");
    jw_int(w, b->refunds);
    jw_key(w, "adjustments");
    jw_int(w, b->adjustments);
    jw_key(w, "net");
    jw_int(w, settle_batch_net(b));
    jw_key(w, "capture_count");
    jw_int(w, b->capture_count);
    jw_key(w, "refund_count");
    jw_int(w, b->refund_count);
    jw_key(w, "closed_at");
    if (b->closed)
        jw_time(w, b->closed_at_ms);
    else
        jw_null(w);
    return jw_obj_end(w);
}

static int sticky(const struct jw *w)
{
    return w->overflow ? -ENOBUFS : 0;
}

int settle_render_batch(struct jw *w, const struct settle_batch *b)
{
    settle_batch_check(b);
    batch_fields(w, b);
    return sticky(w);
}

int settle_render_closed_event(struct jw *w, const struct settle_batch *b)
{
    settle_batch_check(b);
    ASSERT(b->closed);
    char id[4 + SETTLE_BATCH_ID_MAX_BYTES + 1];
    memcpy(id, "evt_", 4);
    size_t n = 4 + settle_batch_id(id + 4, &b->key);
    jw_obj_begin(w);
    jw_key(w, "event_id");
    jw_str(w, id, n);
    jw_key(w, "type");
    jw_cstr(w, "settlement.closed");
    jw_key(w, "occurred_at");
    jw_time(w, b->closed_at_ms);
    jw_key(w, "settlement");
    batch_fields(w, b);
    jw_obj_end(w);
    return sticky(w);
}

size_t settle_render_batch_csv(char *out, size_t cap, const struct settle_batch *b)
{
    settle_batch_check(b);
    char id[SETTLE_BATCH_ID_MAX_BYTES + 1], date[SETTLE_DATE_BYTES + 1];
    char closed[JSON_TIME_BYTES + 1] = "";
    settle_batch_id(id, &b->key);
    settle_date_format(date, b->key.date);
    if (b->closed)
        json_format_time(closed, b->closed_at_ms);
    int n = snprintf(out, cap, "%s,%s,%s,%s,%s,%lld,%lld,%lld,%lld,%lld,%lld,%s\r\n", id,
                     b->key.merchant_id, b->key.currency, date, b->closed ? "closed" : "open",
                     (long long)b->gross, (long long)b->refunds, (long long)b->adjustments,
                     (long long)settle_batch_net(b), (long long)b->capture_count,
                     (long long)b->refund_count, closed);
    return n > 0 && (size_t)n < cap ? (size_t)n : 0;
}

void recon_summary_fields(struct jw *w, const struct recon_summary *s)
{
    char id[RECON_FILE_ID_BYTES + 1];
    recon_file_id(id, s->seq);
    jw_key(w, "id");
    jw_str(w, id, RECON_FILE_ID_BYTES);
    jw_key(w, "lines");
    jw_uint(w, s->lines);
    jw_key(w, "counts");
    jw_obj_begin(w);
    for (int c = 0; c < RECON_CATEGORIES; c++) {
        jw_key(w, recon_category_name((enum recon_category)c));
        jw_uint(w, s->counts[c]);
    }
    jw_obj_end(w);
    jw_key(w, "status");
    jw_cstr(w, recon_status_name(s->status));
}

int recon_render_summary(struct jw *w, const struct recon_summary *s)
{
    uint64_t sum = 0;
    for (int c = 0; c < RECON_CATEGORIES; c++)
        if (c != RECON_MISSING_IN_BANK)
            sum += s->counts[c];
    ASSERT(sum == s->lines);
    jw_obj_begin(w);
    recon_summary_fields(w, s);
    jw_obj_end(w);
    return sticky(w);
}

static void item_fields(struct jw *w, const struct recon_item *it)
{
    jw_obj_begin(w);
    jw_key(w, "item");
    jw_uint(w, it->item);
    jw_key(w, "line");
    if (it->line)
        jw_uint(w, it->line);
    else
        jw_null(w);
    jw_key(w, "category");
    jw_cstr(w, recon_category_name(it->category));
    jw_key(w, "transaction_id");
    if (it->transaction_id_len)
        jw_str(w, it->transaction_id, it->transaction_id_len);
    else
        jw_null(w);
    jw_key(w, "amount");
    it->has_line_fields ? jw_int(w, it->amount) : jw_null(w);
    jw_key(w, "currency");
    it->has_line_fields ? jw_str(w, it->currency, CURRENCY_BYTES) : jw_null(w);
    jw_key(w, "value_date");
    it->has_line_fields ? jw_date(w, it->value_date) : jw_null(w);
    jw_key(w, "expected_amount");
    it->has_capture ? jw_int(w, it->capture.amount) : jw_null(w);
    jw_key(w, "expected_currency");
    it->has_capture ? jw_str(w, it->capture.currency, CURRENCY_BYTES) : jw_null(w);
    jw_key(w, "expected_value_date");
    it->has_capture ? jw_date(w, it->capture.value_date) : jw_null(w);
    jw_key(w, "merchant_id");
    it->has_capture ? jw_str(w, it->capture.merchant_id, it->capture.merchant_id_len) : jw_null(w);
    jw_key(w, "reason");
    it->reason ? jw_cstr(w, it->reason) : jw_null(w);
    jw_obj_end(w);
}

int recon_render_item(struct jw *w, const struct recon_item *it)
{
    ASSERT(it->category != RECON_MATCHED && (unsigned)it->category < RECON_CATEGORIES);
    item_fields(w, it);
    return sticky(w);
}

int recon_render_unmatched_event(struct jw *w, uint64_t file_seq, const struct recon_item *it,
                                 uint32_t round, int64_t now_ms)
{
    char fid[RECON_FILE_ID_BYTES + 1], eid[RECON_FILE_ID_BYTES + 48];
    recon_file_id(fid, file_seq);
    int n = snprintf(eid, sizeof(eid), "evt_%s_%llu_%u", fid, (unsigned long long)it->item, round);
    ASSERT(n > 0 && (size_t)n < sizeof(eid));
    jw_obj_begin(w);
    jw_key(w, "event_id");
    jw_str(w, eid, (size_t)n);
    jw_key(w, "type");
    jw_cstr(w, "recon.unmatched");
    jw_key(w, "occurred_at");
    jw_time(w, now_ms);
    jw_key(w, "file_id");
    jw_str(w, fid, RECON_FILE_ID_BYTES);
    jw_key(w, "item");
    recon_render_item(w, it);
    jw_obj_end(w);
    return sticky(w);
}
