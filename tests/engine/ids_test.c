/*
 * Tests of engine/ids.c: id format and strict parsing, and the merchant shard hash.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine/ids.h"

static void test_format_and_parse(void **state)
{
    (void)state;
    char id[ID_BYTES + 1];
    ids_format(id, IDS_PAYMENT, 0x2a, 0x1f);
    assert_string_equal(id, "pay_2a000000000000001f");
    ids_format(id, IDS_REFUND, 255, UINT64_MAX);
    assert_string_equal(id, "rfd_ffffffffffffffffff");
    uint32_t shard;
    uint64_t seq;
    assert_int_equal(ids_parse(id, ID_BYTES, IDS_REFUND, &shard, &seq), 0);
    assert_int_equal(shard, 255);
    assert_true(seq == UINT64_MAX);
    assert_int_equal(ids_parse(id, ID_BYTES, IDS_PAYMENT, &shard, &seq), -EINVAL);
    for (uint32_t s = 0; s < SHARDS_MAX; s += 17) {
        ids_format(id, IDS_PAYMENT, s, s * 1000003ULL + 1);
        assert_int_equal(ids_parse(id, strlen(id), IDS_PAYMENT, &shard, &seq), 0);
        assert_int_equal(shard, s);
        assert_true(seq == s * 1000003ULL + 1);
        assert_int_equal(ids_shard_of(id, strlen(id)), (int)s);
    }
}

static void test_strict_parse(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "",
        "pay_",
        "pay_2a000000000000001",   /* short */
        "pay_2a000000000000001f0", /* long */
        "PAY_2a000000000000001f",
        "pay_2A000000000000001f", /* upper-case hex */
        "pay_2a000000000000001F",
        "pay-2a000000000000001f",
        "pay_2a00000000000000 f",
        "pay_2a00000000000000-f",
        "pay_2g000000000000001f",
        "pay_2a0000000000000000", /* sequence 0 is never issued */
        "evt_2a000000000000001f",
        "xpay_2a00000000000001f",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        if (ids_shard_of(bad[i], strlen(bad[i])) != -EINVAL)
            fail_msg("accepted %s", bad[i]);
    assert_int_equal(ids_shard_of(NULL, 0), -EINVAL);
    /* Length is what counts, not a NUL: a valid id followed by junk within len fails. */
    assert_int_equal(ids_shard_of("pay_01000000000000000a", ID_BYTES), 1);
    assert_int_equal(ids_shard_of("pay_01000000000000000a", ID_BYTES - 1), -EINVAL);
    assert_int_equal(ids_shard_of("rfd_07000000000000000a", ID_BYTES), 7);
}

static void test_merchant_hash(void **state)
{
    (void)state;
    /* Published 64-bit FNV-1a vectors, and the ones in ids.h. */
    assert_true(engine_merchant_hash("", 0) == 0xcbf29ce484222325ULL);
    assert_true(engine_merchant_hash("a", 1) == 0xaf63dc4c8601ec8cULL);
    assert_true(engine_merchant_hash("foobar", 6) == 0x85944171f73967e8ULL);
    assert_true(engine_merchant_hash("m-1", 3) == 0x08dba019181b0c9aULL);
    assert_int_equal(engine_shard_of_merchant("m-1", 3, 1), 0);
    assert_int_equal(engine_shard_of_merchant("m-1", 3, 7), 0x08dba019181b0c9aULL % 7);
    assert_int_equal(engine_shard_of_merchant("a", 1, 7), 5);
    /* Spread: 1000 merchants over 4 shards, none empty or hogging. */
    unsigned count[4] = {0};
    for (int i = 0; i < 1000; i++) {
        char m[16];
        int n = snprintf(m, sizeof(m), "m-%d", i);
        count[engine_shard_of_merchant(m, (size_t)n, 4)]++;
    }
    for (int s = 0; s < 4; s++)
        assert_in_range(count[s], 180, 320);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_format_and_parse),
        cmocka_unit_test(test_strict_parse),
        cmocka_unit_test(test_merchant_hash),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
