/*
 * Tests of `ringpay client` (tools/client/client.c), running the real binary against a
 * one-connection HTTP server in a thread of this test. The server parses the request
 * with net/http.c and checks it the way the engine's gate will: exactly one of each
 * X-Ringpay-* header, a timestamp within seconds of now, and a signature that
 * engine/sign.h verifies with the key's secret over the exact bytes received. Each
 * command's method, target and body are checked byte for byte; the idempotency key is
 * a fresh UUID v4 unless given; an error status exits 1 with the body printed; bad
 * usage exits 2 with one line; an unreachable server exits 1 with one line.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/sign.h"
#include "tests/integration/harness.h"
#include "tests/tools/fake_http.h"

#define KEY_ID "rpk_00112233445566aa"
#define SECRET "rps_5793934f87138344251d3c564a4c0bed74dc6167272ab13240403af21e652653"
#define PAY_ID "pay_000000000000000001"

static void assert_signed(const struct fake_http *f)
{
    fake_http_assert_signed(f, KEY_ID, SECRET);
}

static void assert_request(const struct fake_http *f, const char *method, const char *target,
                           const char *body)
{
    assert_signed(f);
    char *m = fake_http_slice(f, f->req.method_token), *t = fake_http_slice(f, f->req.target);
    char *b = fake_http_slice(f, f->req.body);
    assert_string_equal(m, method);
    assert_string_equal(t, target);
    assert_string_equal(b, body ? body : "");
    char *idem = fake_http_header(f, "Idempotency-Key"), *ct = fake_http_header(f, "Content-Type");
    if (strcmp(method, "POST") == 0) {
        assert_non_null(idem);
        assert_string_equal(ct, "application/json");
    } else {
        assert_null(idem);
    }
    free(m);
    free(t);
    free(b);
    free(idem);
    free(ct);
}

/* Runs `ringpay client ARGS… --url http://127.0.0.1:PORT` with the key in flags. */
static void run_client(const struct fake_http *f, const char *const *args,
                       struct rp_run_result *res, const char *const *env)
{
    const char *argv[32];
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", f ? f->port : 1);
    size_t n = 0;
    argv[n++] = "client";
    for (; *args; args++)
        argv[n++] = *args;
    argv[n++] = "--url";
    argv[n++] = url;
    if (env == NULL) {
        argv[n++] = "--key-id";
        argv[n++] = KEY_ID;
        argv[n++] = "--secret";
        argv[n++] = SECRET;
    }
    argv[n] = NULL;
    assert_true(n < sizeof(argv) / sizeof(argv[0]));
    assert_int_equal(rp_run(argv, env, NULL, 20000, res), 0);
}

static struct rp_run_result res;

static void expect_call(const char *const *args, const char *method, const char *target,
                        const char *body)
{
    struct fake_http f;
    const char *answer = "{\"ok\":true}";
    fake_http_start(&f, 200, answer);
    run_client(&f, args, &res, NULL);
    fake_http_stop(&f);
    if (res.code != 0)
        fail_msg("client exited %d: %s", res.code, res.err);
    assert_string_equal(res.out, "{\"ok\":true}\n");
    assert_string_equal(res.err, "");
    assert_request(&f, method, target, body);
}

static void test_every_command(void **state)
{
    expect_call((const char *[]){"authorize", "--merchant", "m-1", "--amount", "15000",
                                 "--currency", "KRW", "--reference", "order-77", NULL},
                "POST", "/v1/payments/authorize",
                "{\"merchant_id\":\"m-1\",\"amount\":15000,\"currency\":\"KRW\","
                "\"reference\":\"order-77\"}");
    expect_call((const char *[]){"authorize", "--merchant", "m-1", "--amount", "1", "--currency",
                                 "EUR", NULL},
                "POST", "/v1/payments/authorize",
                "{\"merchant_id\":\"m-1\",\"amount\":1,\"currency\":\"EUR\"}");
    expect_call((const char *[]){"capture", PAY_ID, "--amount", "12000", NULL}, "POST",
                "/v1/payments/" PAY_ID "/capture", "{\"amount\":12000}");
    expect_call((const char *[]){"capture", PAY_ID, NULL}, "POST",
                "/v1/payments/" PAY_ID "/capture", "{}");
    expect_call((const char *[]){"void", PAY_ID, NULL}, "POST", "/v1/payments/" PAY_ID "/void",
                "{}");
    expect_call((const char *[]){"refund", "--amount", "500", PAY_ID, NULL}, "POST",
                "/v1/payments/" PAY_ID "/refund", "{\"amount\":500}");
    expect_call((const char *[]){"get", PAY_ID, NULL}, "GET", "/v1/payments/" PAY_ID, NULL);
    expect_call((const char *[]){"balances", "m-1", NULL}, "GET", "/v1/merchants/m-1/balances",
                NULL);
    expect_call((const char *[]){"ledger", "m-1", NULL}, "GET", "/v1/merchants/m-1/ledger", NULL);
    expect_call((const char *[]){"ledger", "m-1", "--after", "41", "--limit", "100", NULL}, "GET",
                "/v1/merchants/m-1/ledger?after=41&limit=100", NULL);
    expect_call((const char *[]){"ledger", "m-1", "--limit", "5", NULL}, "GET",
                "/v1/merchants/m-1/ledger?limit=5", NULL);
}

static bool uuid_v4(const char *s)
{
    if (strlen(s) != 36 || s[14] != '4' || !strchr("89ab", s[19]))
        return false;
    for (int i = 0; i < 36; i++)
        if ((i == 8 || i == 13 || i == 18 || i == 23) ? s[i] != '-'
                                                      : !strchr("0123456789abcdef", s[i]))
            return false;
    return true;
}

/* A fresh UUID v4 per run unless --idempotency-key is given; the key from the
 * environment works like the flags. */
static void test_idempotency_key_and_env(void **state)
{
    char *keys[2];
    for (int i = 0; i < 2; i++) {
        struct fake_http f;
        fake_http_start(&f, 201, "{}");
        run_client(&f, (const char *[]){"void", PAY_ID, NULL}, &res,
                   (const char *[]){"RINGPAY_KEY_ID=" KEY_ID, "RINGPAY_SECRET=" SECRET, NULL});
        fake_http_stop(&f);
        assert_int_equal(res.code, 0);
        assert_signed(&f);
        keys[i] = fake_http_header(&f, "Idempotency-Key");
        assert_true(uuid_v4(keys[i]));
    }
    assert_string_not_equal(keys[0], keys[1]);
    free(keys[0]);
    free(keys[1]);
    struct fake_http f;
    fake_http_start(&f, 200, "{}");
    run_client(&f, (const char *[]){"void", PAY_ID, "--idempotency-key", "order-77 void", NULL},
               &res, NULL);
    fake_http_stop(&f);
    assert_int_equal(res.code, 0);
    assert_signed(&f);
    char *k = fake_http_header(&f, "Idempotency-Key");
    assert_string_equal(k, "order-77 void");
    free(k);
}

/* An error status: the body on stdout, exit 1. The secret never appears in any output. */
static void test_error_status_exits_1(void **state)
{
    static const char body[] = "{\"error\":{\"code\":\"authentication_failed\",\"message\":"
                               "\"authentication failed\",\"param\":null,\"request_id\":\"r-1\"}}";
    struct fake_http f;
    fake_http_start(&f, 401, body);
    run_client(&f, (const char *[]){"get", PAY_ID, "--verbose", NULL}, &res, NULL);
    fake_http_stop(&f);
    assert_int_equal(res.code, 1);
    char want[512];
    snprintf(want, sizeof(want), "%s\n", body);
    assert_string_equal(res.out, want);
    assert_non_null(strstr(res.err, "< HTTP/1.1 401"));
    assert_non_null(strstr(res.err, "> string to sign: "));
    assert_null(strstr(res.err, SECRET));
    assert_null(strstr(res.err, "v1="));
    assert_null(strstr(res.out, SECRET));
}

static void expect_usage(const char *const *args, const char *const *env, const char *msg)
{
    struct fake_http *none = NULL;
    run_client(none, args, &res, env);
    if (res.code != 2 || rp_count_lines(res.err) != 1 || strncmp(res.err, "ringpay: ", 9) != 0 ||
        strstr(res.err, msg) == NULL)
        fail_msg("code %d err \"%s\", want \"%s\"", res.code, res.err, msg);
    assert_string_equal(res.out, "");
}

static void test_bad_usage(void **state)
{
    const char *const no_key[] = {"RINGPAY_KEY_ID=" KEY_ID, NULL};
    expect_usage((const char *[]){"get", PAY_ID, NULL}, no_key, "needs --key-id and --secret");
    expect_usage((const char *[]){"get", NULL}, NULL, "needs PAYMENT_ID");
    expect_usage((const char *[]){"get", "pay/../x", NULL}, NULL, "PAYMENT_ID");
    expect_usage((const char *[]){"get", PAY_ID, "two", NULL}, NULL, "unexpected argument");
    expect_usage((const char *[]){"balances", NULL}, NULL, "needs MERCHANT_ID");
    expect_usage((const char *[]){"frobnicate", NULL}, NULL, "unknown client command");
    expect_usage((const char *[]){"authorize", "--merchant", "m-1", NULL}, NULL,
                 "needs --merchant, --amount and --currency");
    expect_usage((const char *[]){"authorize", "--merchant", "m-1", "--amount", "1.5", "--currency",
                                  "KRW", NULL},
                 NULL, "--amount");
    expect_usage((const char *[]){"capture", PAY_ID, "--amount", "-1", NULL}, NULL, "--amount");
    expect_usage((const char *[]){"get", PAY_ID, "--amount", "1", NULL}, NULL, "unknown option");
    expect_usage((const char *[]){"void", PAY_ID, "--idempotency-key", "a\r\nX: y", NULL}, NULL,
                 "--idempotency-key");
    expect_usage((const char *[]){"ledger", "m-1", "--limit", "x", NULL}, NULL, "--limit");
    static const char *const bad_urls[] = {
        "https://127.0.0.1:1",    "127.0.0.1:1", "http://127.0.0.1:1/api",
        "http://127.0.0.1:99999", "http://",     "http://[::1"};
    for (size_t i = 0; i < sizeof(bad_urls) / sizeof(bad_urls[0]); i++) {
        assert_int_equal(rp_run((const char *[]){"client", "get", PAY_ID, "--url", bad_urls[i],
                                                 "--key-id", KEY_ID, "--secret", SECRET, NULL},
                                NULL, NULL, 5000, &res),
                         0);
        if (res.code != 2 || strstr(res.err, "ringpay: --url") != res.err)
            fail_msg("url %s: code %d err %s", bad_urls[i], res.code, res.err);
    }
    const char *const bad_key[] = {"RINGPAY_KEY_ID=abc", "RINGPAY_SECRET=" SECRET, NULL};
    expect_usage((const char *[]){"get", PAY_ID, NULL}, bad_key, "--key-id");
}

static void test_help(void **state)
{
    assert_int_equal(rp_run((const char *[]){"client", "--help", NULL}, NULL, NULL, 5000, &res), 0);
    assert_int_equal(res.code, 0);
    assert_non_null(strstr(res.out, "usage: ringpay client COMMAND"));
    static const char *const cmds[] = {"authorize", "capture",  "void",  "refund",
                                       "get",       "balances", "ledger"};
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        assert_int_equal(
            rp_run((const char *[]){"client", cmds[i], "--help", NULL}, NULL, NULL, 5000, &res), 0);
        assert_int_equal(res.code, 0);
        assert_non_null(strstr(res.out, "--key-id"));
        assert_non_null(strstr(res.out, cmds[i]));
    }
}

/* Nobody listening: exit 1 with one line. */
static void test_unreachable(void **state)
{
    run_client(NULL, (const char *[]){"get", PAY_ID, NULL}, &res, NULL);
    assert_int_equal(res.code, 1);
    assert_int_equal(rp_count_lines(res.err), 1);
    assert_non_null(strstr(res.err, "ringpay: cannot connect"));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_command),
        cmocka_unit_test(test_idempotency_key_and_env),
        cmocka_unit_test(test_error_status_exits_1),
        cmocka_unit_test(test_bad_usage),
        cmocka_unit_test(test_help),
        cmocka_unit_test(test_unreachable),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
