/*
 * Tests of tools/settle/tz.c: zone names are checked before glibc can fall back to UTC
 * silently, and the real Europe/Berlin and America/New_York zones give the offsets and
 * business days that tests/engine/settle_test.c checks against the pure rule functions
 * (2026 transitions, cutoffs in the spring gap and the autumn repeat).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <string.h>

#include "engine/settle.h"
#include "tools/settle/tz.h"

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

static void use(const char *zone)
{
    char why[128];
    int rc = settle_tz_set(zone, why, sizeof(why));
    if (rc)
        fail_msg("%s: %s", zone, why);
}

static int32_t off(const char *when)
{
    int32_t o = -1;
    assert_int_equal(settle_tz_offset(NULL, T(when), &o), 0);
    return o;
}

static void test_names(void **state)
{
    char why[128];
    assert_int_equal(settle_tz_set("UTC", why, sizeof(why)), 0);
    assert_int_equal(settle_tz_set("Europe/Berlin", why, sizeof(why)), 0);
    assert_int_equal(settle_tz_set("Mars/Olympus_Mons", why, sizeof(why)), -ENOENT);
    assert_non_null(strstr(why, "no time zone"));
    const char *bad[] = {"",        "/etc/passwd",    "../../etc/passwd",      "Europe//Berlin",
                         "Europe/", "Europe/Berlin ", "EST5EDT,M3.2.0,M11.1.0"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(settle_tz_set(bad[i], why, sizeof(why)), -EINVAL);
    /* not a TZif file */
    assert_int_equal(settle_tz_set("leapseconds", why, sizeof(why)), -ENOENT);
}

static void test_berlin(void **state)
{
    use("Europe/Berlin");
    assert_int_equal(off("2026-03-29T00:59:59.999Z"), 3600);
    assert_int_equal(off("2026-03-29T01:00:00.000Z"), 7200);
    assert_int_equal(off("2026-10-25T00:59:59.999Z"), 7200);
    assert_int_equal(off("2026-10-25T01:00:00.000Z"), 3600);
    struct settle_calendar c;
    int64_t u;
    int32_t d;
    settle_calendar_init(&c, settle_tz_offset, NULL, 150, 0);
    assert_int_equal(settle_day_start(&c, D("2026-03-29"), &u), 0);
    assert_int_equal(u, T("2026-03-29T01:00:00.000Z"));
    assert_int_equal(settle_day_start(&c, D("2026-10-25"), &u), 0);
    assert_int_equal(u, T("2026-10-25T00:30:00.000Z"));
    assert_int_equal(settle_business_date(&c, T("2026-10-25T01:10:00.000Z"), &d), 0);
    assert_int_equal(d, D("2026-10-25"));
    settle_calendar_init(&c, settle_tz_offset, NULL, 0, 0);
    assert_int_equal(settle_business_date(&c, T("2026-03-28T23:00:00.000Z"), &d), 0);
    assert_int_equal(d, D("2026-03-29"));
    /* far dates work too (the zone's rules continue past its last listed transition) */
    assert_int_equal(off("2090-07-01T12:00:00.000Z"), 7200);
    assert_int_equal(off("1975-07-01T12:00:00.000Z"), 3600); /* no DST in West Germany then */
}

static void test_new_york(void **state)
{
    use("America/New_York");
    assert_int_equal(off("2026-03-08T06:59:59.999Z"), -18000);
    assert_int_equal(off("2026-03-08T07:00:00.000Z"), -14400);
    assert_int_equal(off("2026-11-01T05:59:59.999Z"), -14400);
    assert_int_equal(off("2026-11-01T06:00:00.000Z"), -18000);
    struct settle_calendar c;
    int64_t u;
    settle_calendar_init(&c, settle_tz_offset, NULL, 0, 600000);
    assert_int_equal(settle_close_at(&c, D("2026-11-01"), &u), 0);
    assert_int_equal(u, T("2026-11-02T05:10:00.000Z"));
    use("UTC");
    assert_int_equal(off("2026-07-01T12:00:00.000Z"), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_names),
        cmocka_unit_test(test_berlin),
        cmocka_unit_test(test_new_york),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
