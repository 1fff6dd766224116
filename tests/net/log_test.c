/*
 * Tests of net/log.c: card-like digit runs are masked to first 6 / last 4, other text
 * is left alone, and a line is one valid JSON object with escaped values.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "net/log.h"

static void expect_mask(const char *in, const char *want)
{
    char out[256];
    log_mask_pan(out, sizeof(out), in);
    assert_string_equal(out, want);
}

static void test_mask_card_numbers(void **state)
{
    (void)state;
    expect_mask("4111111111111111", "411111******1111");
    expect_mask("pan=5500005555555559;", "pan=550000******5559;");
    expect_mask("1234567890123", "123456***0123");             /* 13 digits: masked */
    expect_mask("1234567890123456789", "123456*********6789"); /* 19 digits: masked */
}

static void test_mask_leaves_other_text(void **state)
{
    (void)state;
    expect_mask("123456789012", "123456789012");                 /* 12 digits: not a card */
    expect_mask("12345678901234567890", "12345678901234567890"); /* 20: not a card */
    expect_mask("order-77 amount 15000", "order-77 amount 15000");
    expect_mask("", "");
    expect_mask("4111 1111 1111 1111", "4111 1111 1111 1111"); /* runs of 4 */
}

static void test_mask_truncates_safely(void **state)
{
    (void)state;
    char out[8];
    log_mask_pan(out, sizeof(out), "4111111111111111");
    assert_int_equal(strlen(out), 7);
    assert_memory_equal(out, "411111*", 7);
}

/* Captures what log_write_str writes to fd 2. */
static void capture(char *buf, size_t cap, const char *msg, const char *key, const char *val)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    int saved = dup(2);
    dup2(pipefd[1], 2);
    log_write_str(LOG_INFO, msg, key, val, NULL);
    dup2(saved, 2);
    close(saved);
    close(pipefd[1]);
    ssize_t n = read(pipefd[0], buf, cap - 1);
    close(pipefd[0]);
    assert_true(n > 0);
    buf[n] = '\0';
}

static void test_line_is_escaped_and_masked(void **state)
{
    (void)state;
    char line[4096];
    capture(line, sizeof(line), "hello", "ref", "say \"hi\"\n card 4111111111111111");
    assert_non_null(strstr(line, "\"msg\":\"hello\""));
    assert_non_null(strstr(line, "\"ref\":\"say \\\"hi\\\"\\u000a card 411111******1111\""));
    assert_null(strstr(line, "4111111111111111"));
    assert_int_equal(line[0], '{');
    assert_string_equal(line + strlen(line) - 2, "}\n");
    assert_ptr_equal(strchr(line, '\n'), line + strlen(line) - 1); /* one line */
}

static void test_level_filter(void **state)
{
    (void)state;
    assert_int_equal(log_level_parse("warn"), LOG_WARN);
    assert_int_equal(log_level_parse("verbose"), -1);
    log_set_level(LOG_WARN);
    assert_false(log_enabled(LOG_INFO));
    assert_true(log_enabled(LOG_ERROR));
    log_set_level(LOG_INFO);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_mask_card_numbers),
        cmocka_unit_test(test_mask_leaves_other_text),
        cmocka_unit_test(test_mask_truncates_safely),
        cmocka_unit_test(test_line_is_escaped_and_masked),
        cmocka_unit_test(test_level_filter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
