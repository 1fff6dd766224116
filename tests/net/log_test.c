/*
 * Tests of net/log.c: card-like digit runs (13–19 digits passing Luhn) are masked to
 * first 6 / last 4 wherever they occur, in string values and inside pre-rendered JSON
 * values; other digit runs are left alone; secrets and signatures are redacted; a line
 * is one valid JSON object with escaped values; log_find_leak finds every kind of leak
 * and none in what the logger wrote.
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
    expect_mask("4222222222222", "422222***2222");             /* 13 digits, Luhn */
    expect_mask("378282246310005", "378282*****0005");         /* 15 (Amex) */
    expect_mask("1234567890123456785", "123456*********6785"); /* 19 digits, Luhn */
    expect_mask("order-4111111111111111", "order-411111******1111");
    expect_mask("a4111111111111111b6011111111111117", "a411111******1111b601111******1117");
}

/* Runs of the right length that fail Luhn are not card numbers (timestamps in ms,
 * order numbers); the brief's rule is both conditions. */
static void test_mask_needs_luhn(void **state)
{
    (void)state;
    expect_mask("4111111111111112", "4111111111111112");
    expect_mask("1795600800123", "1795600800123"); /* a 13-digit ms timestamp */
    expect_mask("1234567890123", "1234567890123");
    expect_mask("1234567890123456789", "1234567890123456789");
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

/* log_mask also redacts key material; log_mask_pan does not. */
static void test_mask_redacts_key_material(void **state)
{
    (void)state;
    char out[256];
    const char *secret = "rps_5793934f87138344251d3c564a4c0bed74dc6167272ab13240403af21e652653";
    const char *sig = "v1=48804552b207e3c652e73bb6a0131b4263cc625d309702719bbf7762010c02b2";
    char in[300];
    snprintf(in, sizeof(in), "key %s sig %s pan 4111111111111111", secret, sig);
    log_mask(out, sizeof(out), in);
    assert_string_equal(out, "key rps_[redacted] sig v1=[redacted] pan 411111******1111");
    log_mask(out, sizeof(out), "rps_short v1=abc");
    assert_string_equal(out, "rps_short v1=abc"); /* not key material: left alone */
    log_mask_pan(out, sizeof(out), secret);
    assert_string_equal(out, secret);
}

static void test_mask_truncates_safely(void **state)
{
    (void)state;
    char out[8];
    log_mask_pan(out, sizeof(out), "4111111111111111");
    assert_int_equal(strlen(out), 7);
    assert_memory_equal(out, "411111*", 7);
}

/* Captures what log_write_str (or log_write with raw) writes to fd 2. */
static void capture_as(char *buf, size_t cap, const char *msg, const char *key, const char *val,
                       int raw)
{
    int pipefd[2];
    assert_int_equal(pipe(pipefd), 0);
    int saved = dup(2);
    dup2(pipefd[1], 2);
    if (raw)
        log_write(LOG_INFO, msg, key, val, NULL);
    else
        log_write_str(LOG_INFO, msg, key, val, NULL);
    dup2(saved, 2);
    close(saved);
    close(pipefd[1]);
    ssize_t n = read(pipefd[0], buf, cap - 1);
    close(pipefd[0]);
    assert_true(n > 0);
    buf[n] = '\0';
}

static void capture(char *buf, size_t cap, const char *msg, const char *key, const char *val)
{
    capture_as(buf, cap, msg, key, val, 0);
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

/* Pre-rendered JSON values (log_write) are masked inside their strings only, so the
 * value stays JSON; numbers are left as they are. */
static void test_raw_values_masked_in_strings(void **state)
{
    (void)state;
    char line[4096];
    capture_as(line, sizeof(line), "m", "obj",
               "{\"ref\":\"x4111111111111111\",\"n\":4111111111111111,\"q\":\"a\\\"b\"}", 1);
    assert_non_null(strstr(line, "\"obj\":{\"ref\":\"x411111******1111\",\"n\":4111111111111111,"
                                 "\"q\":\"a\\\"b\"}"));
    capture_as(line, sizeof(line), "m", "n", "42", 1);
    assert_non_null(strstr(line, "\"n\":42}"));
}

/* Canaries in every field: nothing of them reaches the line, and log_find_leak sees
 * each kind of leak in the raw inputs. */
static void test_find_leak(void **state)
{
    (void)state;
    const char *secret = "rps_5793934f87138344251d3c564a4c0bed74dc6167272ab13240403af21e652653";
    const char *sig = "v1=48804552b207e3c652e73bb6a0131b4263cc625d309702719bbf7762010c02b2";
    const char *pan = "4000056655665556";
    const char *canaries[] = {secret, sig, pan};
    const char *what = NULL;
    char line[4096], val[512];
    snprintf(val, sizeof(val), "%s|%s|%s|ref-%s", secret, sig, pan, pan);
    capture(line, sizeof(line), "hello", "x", val);
    assert_int_equal(log_find_leak(line, strlen(line), canaries, 3, &what), -1);
    assert_null(what);
    /* Each kind, found with and without the canary list. */
    const char *text = "ok 1795600800123 then rps_x";
    assert_int_equal(log_find_leak(text, strlen(text), NULL, 0, &what), -1);
    char t[256];
    snprintf(t, sizeof(t), "abc %s", secret);
    assert_int_equal(log_find_leak(t, strlen(t), NULL, 0, &what), 4);
    assert_string_equal(what, "a secret");
    snprintf(t, sizeof(t), "X-Sig: %s", sig);
    assert_int_equal(log_find_leak(t, strlen(t), NULL, 0, &what), 7);
    assert_string_equal(what, "a signature");
    snprintf(t, sizeof(t), "pan=%s;", pan);
    assert_int_equal(log_find_leak(t, strlen(t), NULL, 0, &what), 4);
    assert_string_equal(what, "a card number");
    const char *mine[] = {"canary-77"};
    assert_int_equal(log_find_leak("a canary-77 b", 13, mine, 1, &what), 2);
    assert_string_equal(what, "a canary");
    /* A run inside a longer run is not a card number (the run is 20 digits). */
    assert_int_equal(log_find_leak("41111111111111111111", 20, NULL, 0, &what), -1);
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
        cmocka_unit_test(test_mask_needs_luhn),
        cmocka_unit_test(test_mask_redacts_key_material),
        cmocka_unit_test(test_mask_leaves_other_text),
        cmocka_unit_test(test_mask_truncates_safely),
        cmocka_unit_test(test_line_is_escaped_and_masked),
        cmocka_unit_test(test_raw_values_masked_in_strings),
        cmocka_unit_test(test_find_leak),
        cmocka_unit_test(test_level_filter),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
