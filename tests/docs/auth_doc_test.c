/*
 * docs/auth.md is right, byte for byte. The blocks marked <!-- test: NAME --> are
 * extracted from the doc itself (so the tested code and the documented code are the
 * same bytes) and checked against engine/sign.h computing the worked example:
 *   string-to-sign  equals sign_string() of the example, one '\n' added by the block;
 *   signature       equals "X-Ringpay-Signature: " and sign_compute() of the example;
 *   shell, python, javascript  run with sh (openssl), python3 and node, each must print
 *                   exactly the signature line;
 *   curl            runs against a one-connection server (tests/tools/fake_http) that
 *                   verifies its signature with engine/sign at the current time and
 *                   checks method, target, body and a UUID idempotency key.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "engine/sign.h"
#include "tests/tools/fake_http.h"

#ifndef RINGPAY_SOURCE_DIR
#error "RINGPAY_SOURCE_DIR must name the source tree (tests/docs/CMakeLists.txt)"
#endif

#define KEY_ID "rpk_f031d5f65fc42b0d"
#define SECRET "rps_5793934f87138344251d3c564a4c0bed74dc6167272ab13240403af21e652653"
#define TARGET "/v1/payments/authorize"
#define BODY                                                                                       \
    "{\"merchant_id\":\"m-1\",\"amount\":15000,\"currency\":\"KRW\",\"reference\":\"order-77\"}"

static char *doc;

static char *read_all(const char *path)
{
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        fail_msg("cannot open %s", path);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = '\0';
    return buf;
}

/* The content of the fenced block right after "<!-- test: name -->" (a new string,
 * every line with its '\n'). Fails when it is missing or there twice. */
static char *block(const char *name)
{
    char marker[64];
    snprintf(marker, sizeof(marker), "<!-- test: %s -->\n```", name);
    const char *m = strstr(doc, marker);
    if (m == NULL)
        fail_msg("docs/auth.md has no block marked %s", name);
    assert_null(strstr(m + 1, marker));
    const char *start = strchr(m + strlen(marker), '\n');
    assert_non_null(start);
    start++;
    const char *end = strstr(start, "\n```\n");
    assert_non_null(end);
    return strndup(start, (size_t)(end - start) + 1);
}

static struct sign_request example(void)
{
    return (struct sign_request){"1795600800",    10, "POST", 4,           TARGET, strlen(TARGET),
                                 "order-77-auth", 13, BODY,   strlen(BODY)};
}

/* What engine/sign says the example's header line is. */
static void expected_line(char *out, size_t cap)
{
    struct sign_key k;
    sign_key_init(&k, SECRET, strlen(SECRET));
    struct sign_request r = example();
    char sig[AUTH_SIGNATURE_BYTES];
    assert_int_equal(sign_compute(&k, &r, sig), 0);
    snprintf(out, cap, "X-Ringpay-Signature: %.*s\n", AUTH_SIGNATURE_BYTES, sig);
}

/* Writes code to a temporary file, runs "interpreter file", returns its stdout. */
static char *run(const char *interpreter, const char *code)
{
    char path[] = "/tmp/rp_auth_doc_XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, code, strlen(code)), (ssize_t)strlen(code));
    close(fd);
    char cmd[256];
    snprintf(cmd, sizeof(cmd), "%s %s", interpreter, path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    static char out[8192];
    size_t n = fread(out, 1, sizeof(out) - 1, p);
    out[n] = '\0';
    int status = pclose(p);
    unlink(path);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        fail_msg("%s exited with status %d; stdout: %s", interpreter, status, out);
    return strdup(out);
}

static void test_string_to_sign(void **state)
{
    struct sign_request r = example();
    char s[512], want[520];
    assert_true(sign_string(&r, s, sizeof(s)) > 0);
    snprintf(want, sizeof(want), "%s\n", s);
    char *b = block("string-to-sign");
    assert_string_equal(b, want);
    free(b);
}

static void test_signature(void **state)
{
    char want[128];
    expected_line(want, sizeof(want));
    char *b = block("signature");
    assert_string_equal(b, want);
    free(b);
}

static void expect_program(const char *name, const char *interpreter)
{
    char want[128];
    expected_line(want, sizeof(want));
    char *code = block(name);
    char *out = run(interpreter, code);
    if (strcmp(out, want) != 0)
        fail_msg("%s printed \"%s\", engine/sign gives \"%s\"", name, out, want);
    free(out);
    free(code);
}

static void test_shell(void **state)
{
    expect_program("shell", "sh");
}

static void test_python(void **state)
{
    expect_program("python", "python3");
}

static void test_javascript(void **state)
{
    expect_program("javascript", "node");
}

static void test_curl(void **state)
{
    static const char answer[] = "{\"id\":\"pay_000000000000000001\"}";
    struct fake_http f;
    fake_http_start(&f, 201, answer);
    char url[64];
    snprintf(url, sizeof(url), "http://127.0.0.1:%d", f.port);
    setenv("RINGPAY_URL", url, 1);
    char *code = block("curl");
    char *out = run("sh", code);
    unsetenv("RINGPAY_URL");
    fake_http_stop(&f);
    assert_string_equal(out, answer);
    fake_http_assert_signed(&f, KEY_ID, SECRET);
    char *m = fake_http_slice(&f, f.req.method_token), *t = fake_http_slice(&f, f.req.target);
    char *b = fake_http_slice(&f, f.req.body), *idem = fake_http_header(&f, "Idempotency-Key");
    assert_string_equal(m, "POST");
    assert_string_equal(t, TARGET);
    assert_string_equal(b, BODY);
    assert_non_null(idem);
    assert_int_equal(strlen(idem), 36);
    free(m);
    free(t);
    free(b);
    free(idem);
    free(out);
    free(code);
}

int main(void)
{
    doc = read_all(RINGPAY_SOURCE_DIR "/docs/auth.md");
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_string_to_sign), cmocka_unit_test(test_signature),
        cmocka_unit_test(test_shell),          cmocka_unit_test(test_python),
        cmocka_unit_test(test_javascript),     cmocka_unit_test(test_curl),
    };
    int rc = cmocka_run_group_tests(tests, NULL, NULL);
    free(doc);
    return rc;
}
