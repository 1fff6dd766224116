/*
 * Tests of engine/json.c: the strict reader (syntax, amounts, strings, members) and the
 * writer (escaping, structure, overflow), and RFC 3339 time rendering.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "engine/json.h"

/* A request-shaped field set: amount (required), currency (required), reference. */
struct fields {
    char cur[8];
    char ref[32];
    struct json_field f[3];
};

static void fields_init(struct fields *x)
{
    memset(x, 0, sizeof(*x));
    x->f[0] = (struct json_field){.name = "amount", .type = JSON_FIELD_AMOUNT, .required = true};
    x->f[1] = (struct json_field){.name = "currency",
                                  .type = JSON_FIELD_STRING,
                                  .required = true,
                                  .buf = x->cur,
                                  .cap = sizeof(x->cur)};
    x->f[2] = (struct json_field){
        .name = "reference", .type = JSON_FIELD_STRING, .buf = x->ref, .cap = sizeof(x->ref)};
}

static int parse(const char *body, size_t len, struct fields *x, struct json_error *e)
{
    fields_init(x);
    return json_parse_object(body, len, x->f, 3, e);
}

static int parse_s(const char *body, struct fields *x, struct json_error *e)
{
    return parse(body, strlen(body), x, e);
}

static void test_valid_object(void **state)
{
    (void)state;
    struct fields x;
    struct json_error e;
    assert_int_equal(parse_s(" \r\n\t{ \"amount\" : 15000 ,\"currency\":\"KRW\",\n"
                             "\"reference\":\"order-77\" } \n",
                             &x, &e),
                     0);
    assert_true(x.f[0].present);
    assert_int_equal(x.f[0].amount, 15000);
    assert_string_equal(x.cur, "KRW");
    assert_int_equal(x.f[1].len, 3);
    assert_true(x.f[2].present);
    assert_string_equal(x.ref, "order-77");

    /* Optional absent, or null: not present. */
    assert_int_equal(parse_s("{\"currency\":\"EUR\",\"amount\":1}", &x, &e), 0);
    assert_false(x.f[2].present);
    assert_int_equal(parse_s("{\"currency\":\"EUR\",\"amount\":1,\"reference\":null}", &x, &e), 0);
    assert_false(x.f[2].present);
    /* Empty string is present with length 0. */
    assert_int_equal(parse_s("{\"currency\":\"EUR\",\"amount\":1,\"reference\":\"\"}", &x, &e), 0);
    assert_true(x.f[2].present);
    assert_int_equal(x.f[2].len, 0);
}

static void test_empty_body(void **state)
{
    (void)state;
    struct json_error e;
    struct json_field opt = {.name = "amount", .type = JSON_FIELD_AMOUNT};
    assert_int_equal(json_parse_object("", 0, &opt, 1, &e), 0);
    assert_false(opt.present);
    assert_int_equal(json_parse_object("{}", 2, &opt, 1, &e), 0);
    assert_int_equal(json_parse_object(" { } ", 5, NULL, 0, &e), 0);
    /* Required field on an empty body: a param error naming it. */
    struct fields x;
    assert_int_equal(parse("", 0, &x, &e), -EINVAL);
    assert_int_equal(e.kind, JSON_ERR_PARAM);
    assert_string_equal(e.param, "amount");
    assert_string_equal(e.message, "is required");
    /* Whitespace only is not an object. */
    assert_int_equal(json_parse_object(" ", 1, &opt, 1, &e), -EINVAL);
    assert_int_equal(e.kind, JSON_ERR_SYNTAX);
}

static void test_syntax_errors(void **state)
{
    (void)state;
    static const char *const bad[] = {
        "[]",
        "1",
        "\"x\"",
        "null",
        "{",
        "}",
        "{\"amount\":1",
        "{\"amount\":1,}",
        "{,\"amount\":1}",
        "{\"amount\" 1}",
        "{\"amount\"::1}",
        "{\"amount\":1,,\"currency\":\"X\"}",
        "{'amount':1}",
        "{\"amount\":1}{}",
        "{\"amount\":1} x",
        "{\"amount\":1}]",
        "{\"amount\":01}",
        "{\"amount\":tru}",
        "{\"amount\":nul}",
        "{\"amount\":1.}",
        "{\"amount\":.5}",
        "{\"amount\":+1}",
        "{\"amount\":1e}",
        "{\"amount\":-}",
        "{\"amount\":1 2}",
        "{\"amount\":1 \"currency\":\"X\"}",
        "{\"amount\"}",
        "{\"amount\":}",
        "{\"currency\":\"a\nb\"}",
        "{\"currency\":\"a\tb\"}",
        "{\"currency\":\"\\x\"}",
        "{\"currency\":\"\\u12\"}",
        "{\"currency\":\"abc}",
        "{amount:1}",
        "{\"amount\":1;}",
        "{\"amount\":0x10}",
        "{\"amount\":Infinity}",
        "{\"amount\":NaN}",
        "{\"a\":[1,}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        struct fields x;
        struct json_error e;
        if (parse_s(bad[i], &x, &e) != -EINVAL || e.kind != JSON_ERR_SYNTAX)
            fail_msg("accepted or misjudged as param: %s (param %s)", bad[i], e.param);
    }
    /* A NUL byte anywhere, even after a complete object. */
    struct fields x;
    struct json_error e;
    assert_int_equal(parse("{\"amount\":1,\"currency\":\"EUR\"}\0", 31, &x, &e), -EINVAL);
    assert_int_equal(e.kind, JSON_ERR_SYNTAX);
    assert_int_equal(parse("{\"amount\":1,\"currency\":\"E\0R\"}", 30, &x, &e), -EINVAL);
    assert_int_equal(e.kind, JSON_ERR_SYNTAX);
}

static void test_amounts(void **state)
{
    (void)state;
    static const struct {
        const char *text;
        int kind;
        int64_t value;
    } cases[] = {
        {"1", JSON_OK, 1},
        {"15000", JSON_OK, 15000},
        {"1000000000000000", JSON_OK, 1000000000000000LL},
        {"999999999999999", JSON_OK, 999999999999999LL},
        {"0", JSON_ERR_PARAM, 0},
        {"1000000000000001", JSON_ERR_PARAM, 0},
        {"10000000000000000", JSON_ERR_PARAM, 0},
        {"99999999999999999999999999", JSON_ERR_PARAM, 0},
        {"1.0", JSON_ERR_PARAM, 0},
        {"1e3", JSON_ERR_PARAM, 0},
        {"1E3", JSON_ERR_PARAM, 0},
        {"\"1\"", JSON_ERR_PARAM, 0},
        {"-1", JSON_ERR_PARAM, 0},
        {"-0", JSON_ERR_PARAM, 0},
        {"true", JSON_ERR_PARAM, 0},
        {"{}", JSON_ERR_PARAM, 0},
        {"[1]", JSON_ERR_PARAM, 0},
        {"null", JSON_ERR_PARAM, 0}, /* required */
        {"01", JSON_ERR_SYNTAX, 0},
        {"1.", JSON_ERR_SYNTAX, 0},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char body[128];
        struct fields x;
        struct json_error e;
        snprintf(body, sizeof(body), "{\"currency\":\"EUR\",\"amount\":%s}", cases[i].text);
        int rc = parse_s(body, &x, &e);
        if (cases[i].kind == JSON_OK) {
            if (rc != 0 || x.f[0].amount != cases[i].value)
                fail_msg("amount %s: rc %d value %lld", cases[i].text, rc,
                         (long long)x.f[0].amount);
            continue;
        }
        if (rc != -EINVAL || (int)e.kind != cases[i].kind)
            fail_msg("amount %s: rc %d kind %d", cases[i].text, rc, e.kind);
        if (e.kind == JSON_ERR_PARAM)
            assert_string_equal(e.param, "amount");
    }
}

static void test_members(void **state)
{
    (void)state;
    struct fields x;
    struct json_error e;
    assert_int_equal(parse_s("{\"amount\":1,\"currency\":\"EUR\",\"colour\":\"red\"}", &x, &e),
                     -EINVAL);
    assert_int_equal(e.kind, JSON_ERR_PARAM);
    assert_string_equal(e.param, "colour");
    assert_string_equal(e.message, "unknown field");
    /* Duplicates, also when spelled with an escape. */
    assert_int_equal(parse_s("{\"amount\":1,\"currency\":\"EUR\",\"amount\":1}", &x, &e), -EINVAL);
    assert_string_equal(e.param, "amount");
    assert_string_equal(e.message, "duplicate field");
    assert_int_equal(parse_s("{\"amount\":1,\"\\u0061mount\":2,\"currency\":\"EUR\"}", &x, &e),
                     -EINVAL);
    assert_string_equal(e.message, "duplicate field");
    /* The first bad member in body order wins. */
    assert_int_equal(parse_s("{\"zzz\":1,\"amount\":0}", &x, &e), -EINVAL);
    assert_string_equal(e.param, "zzz");
    assert_int_equal(parse_s("{\"amount\":0,\"zzz\":1}", &x, &e), -EINVAL);
    assert_string_equal(e.param, "amount");
    /* ... but invalid JSON later in the body still makes the whole body invalid_json. */
    assert_int_equal(parse_s("{\"zzz\":1,\"amount\":01}", &x, &e), -EINVAL);
    assert_int_equal(e.kind, JSON_ERR_SYNTAX);
    /* Type errors. */
    assert_int_equal(parse_s("{\"amount\":1,\"currency\":3}", &x, &e), -EINVAL);
    assert_string_equal(e.param, "currency");
    assert_string_equal(e.message, "must be a string");
    assert_int_equal(parse_s("{\"amount\":1,\"currency\":{\"a\":1}}", &x, &e), -EINVAL);
    assert_string_equal(e.param, "currency");
    assert_int_equal(parse_s("{\"amount\":1,\"currency\":null}", &x, &e), -EINVAL);
    assert_string_equal(e.param, "currency");
    assert_string_equal(e.message, "is required");
    assert_int_equal(parse_s("{\"amount\":1}", &x, &e), -EINVAL);
    assert_string_equal(e.param, "currency");
    /* Key names are case-sensitive. */
    assert_int_equal(parse_s("{\"Amount\":1}", &x, &e), -EINVAL);
    assert_string_equal(e.param, "Amount");
}

static void test_long_unknown_key_is_cut(void **state)
{
    (void)state;
    char body[400];
    struct fields x;
    struct json_error e;
    /* 62 'k' then a 3-byte character straddling byte 64: cut before it. */
    int n = snprintf(body, sizeof(body), "{\"%s\xe2\x82\xac%s\":1}",
                     "kkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkkk",
                     "tail-tail-tail-tail-tail-tail-tail-tail-tail");
    assert_int_equal(parse(body, (size_t)n, &x, &e), -EINVAL);
    assert_int_equal(e.kind, JSON_ERR_PARAM);
    assert_int_equal(strlen(e.param), 62);
    assert_true(json_utf8_valid(e.param, strlen(e.param), NULL));
}

static void test_many_members_truncated(void **state)
{
    (void)state;
    /* More members than JSON_TOKENS_MAX tokens: still judged, on the first bad one. */
    char body[4096];
    size_t n = 0;
    n += (size_t)snprintf(body + n, sizeof(body) - n, "{\"amount\":5,\"currency\":\"EUR\"");
    for (int i = 0; i < 100; i++)
        n += (size_t)snprintf(body + n, sizeof(body) - n, ",\"x%d\":%d", i, i);
    n += (size_t)snprintf(body + n, sizeof(body) - n, "}");
    struct fields x;
    struct json_error e;
    assert_int_equal(parse(body, n, &x, &e), -EINVAL);
    assert_int_equal(e.kind, JSON_ERR_PARAM);
    assert_string_equal(e.param, "x0");
    /* A huge nested array as a value. */
    n = (size_t)snprintf(body, sizeof(body), "{\"amount\":[");
    for (int i = 0; i < 200; i++)
        n += (size_t)snprintf(body + n, sizeof(body) - n, "%s%d", i ? "," : "", i);
    n += (size_t)snprintf(body + n, sizeof(body) - n, "]}");
    assert_int_equal(parse(body, n, &x, &e), -EINVAL);
    assert_int_equal(e.kind, JSON_ERR_PARAM);
    assert_string_equal(e.param, "amount");
}

static void test_strings(void **state)
{
    (void)state;
    struct fields x;
    struct json_error e;
    assert_int_equal(parse_s("{\"amount\":1,\"currency\":\"EUR\",\"reference\":"
                             "\"a\\\"b\\\\c\\/d\\n\\u00e9\\ud83d\\ude00\"}",
                             &x, &e),
                     0);
    assert_string_equal(x.ref, "a\"b\\c/d\n\xc3\xa9\xf0\x9f\x98\x80");
    assert_int_equal(x.f[2].len, strlen("a\"b\\c/d\n\xc3\xa9\xf0\x9f\x98\x80"));
    /* Raw UTF-8 passes. */
    assert_int_equal(
        parse_s("{\"amount\":1,\"currency\":\"EUR\",\"reference\":\"\xed\x95\x9c\"}", &x, &e), 0);
    assert_string_equal(x.ref, "\xed\x95\x9c");
    static const char *const bad_utf8[] = {
        "\\ud83d",          /* lone high surrogate */
        "\\ude00",          /* lone low surrogate */
        "\\ud83dx",         /* high surrogate then not an escape */
        "\\ud83d\\u0041",   /* high then non-low */
        "\xc3\x28",         /* bad continuation */
        "\xc0\xaf",         /* overlong */
        "\xed\xa0\x80",     /* encoded surrogate */
        "\xf4\x90\x80\x80", /* > U+10FFFF */
        "\xff",
        "\xe2\x82", /* truncated */
    };
    for (size_t i = 0; i < sizeof(bad_utf8) / sizeof(bad_utf8[0]); i++) {
        char body[128];
        snprintf(body, sizeof(body), "{\"amount\":1,\"currency\":\"EUR\",\"reference\":\"%s\"}",
                 bad_utf8[i]);
        if (parse_s(body, &x, &e) != -EINVAL || e.kind != JSON_ERR_PARAM ||
            strcmp(e.param, "reference") != 0)
            fail_msg("bad UTF-8 #%zu accepted", i);
    }
    /* Longer than the field's buffer (31 bytes + NUL). */
    assert_int_equal(parse_s("{\"amount\":1,\"currency\":\"EUR\",\"reference\":"
                             "\"0123456789012345678901234567890\"}",
                             &x, &e),
                     0);
    assert_int_equal(parse_s("{\"amount\":1,\"currency\":\"EUR\",\"reference\":"
                             "\"01234567890123456789012345678901\"}",
                             &x, &e),
                     -EINVAL);
    assert_string_equal(e.param, "reference");
    assert_string_equal(e.message, "is too long");
}

static void test_utf8_count(void **state)
{
    (void)state;
    size_t chars;
    assert_true(json_utf8_valid("a\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80", 10, &chars));
    assert_int_equal(chars, 4);
    assert_true(json_utf8_valid("", 0, &chars));
    assert_int_equal(chars, 0);
    assert_false(json_utf8_valid("\x80", 1, NULL));
}

static void test_writer_escaping(void **state)
{
    (void)state;
    char buf[256];
    struct jw w;
    jw_init(&w, buf, sizeof(buf));
    jw_obj_begin(&w);
    jw_key(&w, "s");
    jw_str(&w, "q\"b\\s/\b\f\n\r\t\x01\x1f\x7f\xc3\xa9", 16);
    jw_key(&w, "n");
    jw_int(&w, -42);
    jw_key(&w, "min");
    jw_int(&w, INT64_MIN);
    jw_key(&w, "u");
    jw_uint(&w, UINT64_MAX);
    jw_key(&w, "z");
    jw_null(&w);
    jw_key(&w, "a");
    jw_arr_begin(&w);
    jw_int(&w, 1);
    jw_bool(&w, true);
    jw_obj_begin(&w);
    jw_obj_end(&w);
    jw_arr_begin(&w);
    jw_arr_end(&w);
    jw_cstr(&w, "x");
    jw_arr_end(&w);
    jw_key(&w, "t");
    jw_time(&w, 1795600800123LL);
    jw_obj_end(&w);
    assert_int_equal(jw_finish(&w), 0);
    const char *want = "{\"s\":\"q\\\"b\\\\s/\\b\\f\\n\\r\\t\\u0001\\u001f\\u007f\xc3\xa9\","
                       "\"n\":-42,\"min\":-9223372036854775808,\"u\":18446744073709551615,"
                       "\"z\":null,\"a\":[1,true,{},[],\"x\"],"
                       "\"t\":\"2026-11-25T10:00:00.123Z\"}";
    assert_int_equal(w.len, strlen(want));
    assert_memory_equal(buf, want, w.len);
}

static void test_writer_overflow(void **state)
{
    (void)state;
    const char *full = "{\"k\":\"abcdef\",\"n\":12345}";
    size_t need = strlen(full);
    for (size_t cap = 0; cap <= need; cap++) {
        char buf[64];
        memset(buf, '#', sizeof(buf));
        struct jw w;
        jw_init(&w, buf, cap);
        jw_obj_begin(&w);
        jw_key(&w, "k");
        int rc = jw_cstr(&w, "abcdef");
        jw_key(&w, "n");
        jw_int(&w, 12345);
        jw_obj_end(&w);
        if (cap < need) {
            assert_int_equal(jw_finish(&w), -ENOBUFS);
            assert_true(w.len <= cap);
            if (cap < 13)
                assert_int_equal(rc, -ENOBUFS);
        } else {
            assert_int_equal(jw_finish(&w), 0);
            assert_memory_equal(buf, full, need);
        }
        for (size_t i = cap; i < sizeof(buf); i++)
            assert_int_equal(buf[i], '#'); /* never a byte past cap */
    }
}

static void test_time(void **state)
{
    (void)state;
    static const struct {
        int64_t ms;
        const char *text;
    } cases[] = {
        {0, "1970-01-01T00:00:00.000Z"},
        {1795600800123LL, "2026-11-25T10:00:00.123Z"},
        {1709251199999LL, "2024-02-29T23:59:59.999Z"},
        {951825600000LL, "2000-02-29T12:00:00.000Z"},
        {4107542399999LL, "2100-02-28T23:59:59.999Z"}, /* 2100 is not a leap year */
        {4107542400000LL, "2100-03-01T00:00:00.000Z"},
        {94694399999LL, "1972-12-31T23:59:59.999Z"},
        {978307200001LL, "2001-01-01T00:00:00.001Z"},
        {253402300799999LL, "9999-12-31T23:59:59.999Z"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char out[JSON_TIME_BYTES + 1];
        json_format_time(out, cases[i].ms);
        assert_string_equal(out, cases[i].text);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_valid_object),
        cmocka_unit_test(test_empty_body),
        cmocka_unit_test(test_syntax_errors),
        cmocka_unit_test(test_amounts),
        cmocka_unit_test(test_members),
        cmocka_unit_test(test_long_unknown_key_is_cut),
        cmocka_unit_test(test_many_members_truncated),
        cmocka_unit_test(test_strings),
        cmocka_unit_test(test_utf8_count),
        cmocka_unit_test(test_writer_escaping),
        cmocka_unit_test(test_writer_overflow),
        cmocka_unit_test(test_time),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
