/*
 * Tests of engine/csv.c: every rule of the dialect in engine/csv.h, each input also fed
 * split at every byte and one byte at a time (the result must not depend on how the
 * upload was chunked), the bounds at exactly their limit and one past it, recovery on
 * the line after a malformed one, the BOM, and stopping from the callback.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/csv.h"

/* Lines rendered as text: "N:f1|f2|f3" or "N!reason", one per line. */
struct out {
    char text[1 << 16];
    size_t len;
    int stop_at; /* stop (return 7) at this line number; 0 never */
};

static int collect(void *arg, const struct csv_line *l)
{
    struct out *o = arg;
    int n;
    if (l->error) {
        n = snprintf(o->text + o->len, sizeof(o->text) - o->len, "%llu!%s\n",
                     (unsigned long long)l->number, l->error);
    } else {
        n = snprintf(o->text + o->len, sizeof(o->text) - o->len,
                     "%llu:", (unsigned long long)l->number);
        o->len += (size_t)n;
        for (size_t i = 0; i < l->nfields; i++) {
            n = snprintf(o->text + o->len, sizeof(o->text) - o->len, "%s%.*s", i ? "|" : "",
                         (int)l->fields[i].len, l->fields[i].ptr);
            o->len += (size_t)n;
        }
        n = snprintf(o->text + o->len, sizeof(o->text) - o->len, "\n");
    }
    o->len += (size_t)n;
    assert_true(o->len < sizeof(o->text));
    return o->stop_at && (int)l->number == o->stop_at ? 7 : 0;
}

/* Reads in[0..n) in chunks of `chunk` bytes (0: one feed) into o. */
static void read_chunked(const char *in, size_t n, size_t chunk, struct out *o)
{
    struct csv_reader r;
    csv_init(&r);
    o->len = 0;
    o->text[0] = '\0';
    if (chunk == 0)
        chunk = n ? n : 1;
    for (size_t i = 0; i < n; i += chunk) {
        size_t k = n - i < chunk ? n - i : chunk;
        assert_int_equal(csv_feed(&r, in + i, k, collect, o), 0);
    }
    assert_int_equal(csv_finish(&r, collect, o), 0);
    assert_int_equal(r.bytes, n);
}

/* Reads in[0..n) split in two at `at`. */
static void read_split(const char *in, size_t n, size_t at, struct out *o)
{
    struct csv_reader r;
    csv_init(&r);
    o->len = 0;
    o->text[0] = '\0';
    assert_int_equal(csv_feed(&r, in, at, collect, o), 0);
    assert_int_equal(csv_feed(&r, in + at, n - at, collect, o), 0);
    assert_int_equal(csv_finish(&r, collect, o), 0);
}

/* Checks in -> want whole, split at every byte, and byte by byte. */
static void expect_n(const char *in, size_t n, const char *want)
{
    static struct out o;
    read_chunked(in, n, 0, &o);
    o.text[o.len] = '\0';
    if (strcmp(o.text, want) != 0)
        fail_msg("input %.*s\ngot:\n%swant:\n%s", (int)n, in, o.text, want);
    for (size_t at = 0; at <= n; at++) {
        read_split(in, n, at, &o);
        o.text[o.len] = '\0';
        if (strcmp(o.text, want) != 0)
            fail_msg("split at %zu of %.*s\ngot:\n%s", at, (int)n, in, o.text);
    }
    read_chunked(in, n, 1, &o);
    o.text[o.len] = '\0';
    assert_string_equal(o.text, want);
}

static void expect(const char *in, const char *want)
{
    expect_n(in, strlen(in), want);
}

static void test_plain_lines(void **state)
{
    expect("", "");
    expect("a,b,c\n", "1:a|b|c\n");
    expect("a,b,c", "1:a|b|c\n");
    expect("a,b\r\nc,d\r\n", "1:a|b\n2:c|d\n");
    expect("a,b\nc,d\r\ne", "1:a|b\n2:c|d\n3:e\n");
    expect("x\n", "1:x\n");
    expect(",\n", "1:|\n");
    expect("a,,b,\n", "1:a||b|\n");
    expect(",a\n", "1:|a\n");
    /* nothing is trimmed */
    expect(" a , b \n", "1: a | b \n");
}

static void test_empty_lines_are_reported(void **state)
{
    expect("\n", "1!empty line\n");
    expect("a\n\nb\n", "1:a\n2!empty line\n3:b\n");
    expect("a\r\n\r\n", "1:a\n2!empty line\n");
    expect("a\n\n", "1:a\n2!empty line\n");
}

static void test_quoted_fields(void **state)
{
    expect("\"a\",b\n", "1:a|b\n");
    expect("\"a,b\",c\n", "1:a,b|c\n");
    expect("\"say \"\"hi\"\"\",x\n", "1:say \"hi\"|x\n");
    expect("\"\",\"\"\n", "1:|\n");
    expect("\"\"\"\"\n", "1:\"\n");
    expect("a,\"b\"\r\n", "1:a|b\n");
    expect("\"a\"", "1:a\n");
}

static void test_quote_errors(void **state)
{
    expect("ab\"c\",d\nok\n", "1!quote inside an unquoted field\n2:ok\n");
    expect("\"ab\"c,d\nok\n", "1!text after a closing quote\n2:ok\n");
    expect("\"ab,d\nok\n", "1!unterminated quoted field\n2:ok\n");
    expect("\"ab,d\r\nok\n", "1!unterminated quoted field\n2:ok\n");
    expect("\"ab", "1!unterminated quoted field\n");
    expect("a,\"b\" \n", "1!text after a closing quote\n");
}

static void test_cr_and_nul(void **state)
{
    expect("a\rb\nc\n", "1!bare CR\n2:c\n");
    expect("a\r\r\nc\n", "1!bare CR\n2:c\n");
    expect("a\r", "1!bare CR\n");
    expect_n("a\0b\nc\n", 6, "1!NUL byte\n2:c\n");
    expect_n("\"a\0\"\n", 5, "1!NUL byte\n");
}

static void test_line_length_bound(void **state)
{
    static char in[3 * CSV_LINE_MAX_BYTES];
    static char want[2 * CSV_LINE_MAX_BYTES];
    /* exactly the bound: fine, with CRLF too */
    memset(in, 'x', CSV_LINE_MAX_BYTES);
    memcpy(in + CSV_LINE_MAX_BYTES, "\r\nok\n", 5);
    snprintf(want, sizeof(want), "1:%.*s\n2:ok\n", CSV_LINE_MAX_BYTES, in);
    expect_n(in, CSV_LINE_MAX_BYTES + 5, want);
    /* one past: malformed, and the next line is read normally */
    memset(in, 'x', CSV_LINE_MAX_BYTES + 1);
    memcpy(in + CSV_LINE_MAX_BYTES + 1, "\nok\n", 4);
    expect_n(in, CSV_LINE_MAX_BYTES + 5, "1!line too long\n2:ok\n");
    /* quotes count as bytes of the line */
    in[0] = '"';
    memset(in + 1, 'y', CSV_LINE_MAX_BYTES - 2);
    memcpy(in + CSV_LINE_MAX_BYTES - 1, "\"\n", 2);
    snprintf(want, sizeof(want), "1:%.*s\n", CSV_LINE_MAX_BYTES - 2, in + 1);
    expect_n(in, CSV_LINE_MAX_BYTES + 1, want);
    /* a very long line is skipped in constant memory */
    memset(in, 'z', sizeof(in));
    struct out *o = calloc(1, sizeof(*o));
    struct csv_reader r;
    csv_init(&r);
    for (int i = 0; i < 1000; i++)
        assert_int_equal(csv_feed(&r, in, sizeof(in), collect, o), 0);
    assert_int_equal(csv_feed(&r, "\na\n", 3, collect, o), 0);
    assert_int_equal(csv_finish(&r, collect, o), 0);
    o->text[o->len] = '\0';
    assert_string_equal(o->text, "1!line too long\n2:a\n");
    free(o);
}

static void test_field_count_bound(void **state)
{
    char in[256], want[256];
    size_t n = 0, w = 0;
    w += (size_t)snprintf(want + w, sizeof(want) - w, "1:");
    for (int i = 0; i < CSV_FIELDS_MAX; i++) {
        n += (size_t)snprintf(in + n, sizeof(in) - n, "%s%d", i ? "," : "", i);
        w += (size_t)snprintf(want + w, sizeof(want) - w, "%s%d", i ? "|" : "", i);
    }
    in[n++] = '\n';
    snprintf(want + w, sizeof(want) - w, "\n");
    expect_n(in, n, want);
    /* one more field */
    in[n - 1] = ',';
    memcpy(in + n, "x\nok\n", 5);
    expect_n(in, n + 5, "1!too many fields\n2:ok\n");
    /* an empty 17th field counts too */
    memcpy(in + n, "\nok\n", 4);
    expect_n(in, n + 4, "1!too many fields\n2:ok\n");
}

static void test_bom(void **state)
{
    expect("\xef\xbb\xbf"
           "a,b\n",
           "1:a|b\n");
    expect("\xef\xbb\xbf"
           "\"a\",b\n",
           "1:a|b\n");
    expect("\xef\xbb\xbf", "");
    expect("\xef\xbb\xbf\n", "1!empty line\n");
    /* a partial mark is data */
    expect("\xef\xbb"
           "a\n",
           "1:\xef\xbb"
           "a\n");
    expect("\xef\n", "1:\xef\n");
    expect("\xef\xbb", "1:\xef\xbb\n");
    /* only at the very start */
    expect("a\n\xef\xbb\xbf"
           "b\n",
           "1:a\n2:\xef\xbb\xbf"
           "b\n");
}

static void test_callback_stops(void **state)
{
    struct out *o = calloc(1, sizeof(*o));
    o->stop_at = 2;
    struct csv_reader r;
    csv_init(&r);
    assert_int_equal(csv_feed(&r, "a\nb\nc\n", 6, collect, o), 7);
    o->text[o->len] = '\0';
    assert_string_equal(o->text, "1:a\n2:b\n");
    assert_true(r.stopped);
    assert_int_equal(r.lines, 2);
    free(o);
}

/* Random inputs over a small alphabet: any chunking gives the same lines. */
static void test_random_chunking(void **state)
{
    static const char alphabet[] = "ab,\"\r\n\n,x";
    char in[400];
    struct out *a = calloc(1, sizeof(*a)), *b = calloc(1, sizeof(*b));
    unsigned seed = 12345;
    for (int round = 0; round < 300; round++) {
        size_t n = (size_t)(rand_r(&seed) % sizeof(in));
        for (size_t i = 0; i < n; i++)
            in[i] = alphabet[rand_r(&seed) % (sizeof(alphabet) - 1)];
        read_chunked(in, n, 0, a);
        size_t chunk = 1 + (size_t)(rand_r(&seed) % 17);
        read_chunked(in, n, chunk, b);
        assert_int_equal(a->len, b->len);
        assert_memory_equal(a->text, b->text, a->len);
    }
    free(a);
    free(b);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_plain_lines),       cmocka_unit_test(test_empty_lines_are_reported),
        cmocka_unit_test(test_quoted_fields),     cmocka_unit_test(test_quote_errors),
        cmocka_unit_test(test_cr_and_nul),        cmocka_unit_test(test_line_length_bound),
        cmocka_unit_test(test_field_count_bound), cmocka_unit_test(test_bom),
        cmocka_unit_test(test_callback_stops),    cmocka_unit_test(test_random_chunking),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
