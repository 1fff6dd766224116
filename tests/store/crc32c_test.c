/*
 * Tests of store/crc32c.c: the standard check value, known vectors, and the hardware
 * and table implementations agreeing on every length and alignment, also when a CRC is
 * continued over pieces.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <string.h>

#include "store/crc32c.h"

static void test_check_values(void **state)
{
    (void)state;
    assert_int_equal(crc32c(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(crc32c_soft(0, "123456789", 9), 0xE3069283u);
    assert_int_equal(crc32c(0, "", 0), 0);
    static uint8_t zeros[32], ones[32];
    memset(ones, 0xff, sizeof(ones));
    /* RFC 3720 (iSCSI) B.4 test vectors. */
    assert_int_equal(crc32c(0, zeros, 32), 0x8A9136AAu);
    assert_int_equal(crc32c(0, ones, 32), 0x62A8AB43u);
    uint8_t inc[32];
    for (int i = 0; i < 32; i++)
        inc[i] = (uint8_t)i;
    assert_int_equal(crc32c(0, inc, 32), 0x46DD794Eu);
}

static void test_hw_equals_soft(void **state)
{
    (void)state;
    static uint8_t buf[4096 + 16];
    uint32_t x = 12345;
    for (size_t i = 0; i < sizeof(buf); i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
    for (size_t off = 0; off < 8; off++)
        for (size_t len = 0; len < 300; len++)
            assert_int_equal(crc32c(0, buf + off, len), crc32c_soft(0, buf + off, len));
    /* Continued over pieces equals one pass. */
    uint32_t whole = crc32c(0, buf, 4096);
    uint32_t parts = crc32c(crc32c(crc32c(0, buf, 1000), buf + 1000, 3), buf + 1003, 3093);
    assert_int_equal(whole, parts);
    assert_int_equal(whole, crc32c_soft(0, buf, 4096));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_check_values),
        cmocka_unit_test(test_hw_equals_soft),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
