/*
 * Tests of `ringpay keys` (tools/keys/keys.c), running the real binary: add prints
 * exactly one JSON line of the documented shape (admin: "merchant_id":null) whose
 * secret signs requests the key file's key set verifies; list never shows a secret;
 * the third active key of a merchant is refused with one line and exit 1; revoke,
 * unknown keys and corrupt files; bad usage exits 2 with one "ringpay: …" line; every
 * command has --help; RINGPAY_DATA works like --data.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/json.h"
#include "store/keyfile.h"
#include "tests/integration/harness.h"

static struct rp_run_result res;
static char tmp[64], data[128];

static int setup(void **state)
{
    snprintf(tmp, sizeof(tmp), "/tmp/rp_keys_test_XXXXXX");
    assert_non_null(mkdtemp(tmp));
    snprintf(data, sizeof(data), "%s/data", tmp);
    return 0;
}

static int teardown(void **state)
{
    char cmd[160];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmp);
    return system(cmd);
}

/* Runs `ringpay keys ARGS… --data DATA` (args NULL-terminated). */
static void keys(const char *const *args)
{
    const char *argv[16];
    size_t n = 0;
    argv[n++] = "keys";
    for (; *args; args++)
        argv[n++] = *args;
    argv[n++] = "--data";
    argv[n++] = data;
    argv[n] = NULL;
    assert_int_equal(rp_run(argv, NULL, NULL, 10000, &res), 0);
}

struct added {
    char key_id[64], merchant_id[80], scope[16], secret[128];
    bool has_merchant;
};

/* Parses add's output strictly: exactly the four members, one line. */
static void parse_added(struct added *a)
{
    size_t len = strlen(res.out);
    assert_true(len > 0 && res.out[len - 1] == '\n');
    assert_int_equal(rp_count_lines(res.out), 1);
    struct json_field f[] = {
        {.name = "key_id",
         .type = JSON_FIELD_STRING,
         .required = true,
         .buf = a->key_id,
         .cap = sizeof(a->key_id)},
        {.name = "merchant_id",
         .type = JSON_FIELD_STRING,
         .buf = a->merchant_id,
         .cap = sizeof(a->merchant_id)},
        {.name = "scope",
         .type = JSON_FIELD_STRING,
         .required = true,
         .buf = a->scope,
         .cap = sizeof(a->scope)},
        {.name = "secret",
         .type = JSON_FIELD_STRING,
         .required = true,
         .buf = a->secret,
         .cap = sizeof(a->secret)},
    };
    struct json_error err;
    assert_int_equal(json_parse_object(res.out, len - 1, f, 4, &err), 0);
    a->has_merchant = f[1].present;
    /* The exact bytes, in the documented member order. */
    char want[512];
    if (a->has_merchant)
        snprintf(want, sizeof(want),
                 "{\"key_id\":\"%s\",\"merchant_id\":\"%s\",\"scope\":\"%s\",\"secret\":\"%s\"}\n",
                 a->key_id, a->merchant_id, a->scope, a->secret);
    else
        snprintf(want, sizeof(want),
                 "{\"key_id\":\"%s\",\"merchant_id\":null,\"scope\":\"%s\",\"secret\":\"%s\"}\n",
                 a->key_id, a->scope, a->secret);
    assert_string_equal(res.out, want);
    assert_true(keyfile_key_id_valid(a->key_id, strlen(a->key_id)));
    assert_int_equal(strlen(a->secret), KEY_SECRET_BYTES);
    assert_memory_equal(a->secret, KEY_SECRET_PREFIX, 4);
}

static void add_ok(const char *const *args, struct added *a)
{
    keys(args);
    if (res.code != 0)
        fail_msg("keys add exited %d: %s", res.code, res.err);
    assert_string_equal(res.err, "");
    parse_added(a);
}

/* The printed secret signs a request that the key file's key set verifies. */
static void assert_secret_verifies(const struct added *a)
{
    struct keyset *set;
    char err[256];
    assert_int_equal(keyfile_load(data, &set, err, sizeof(err)), 0);
    struct sign_key k;
    sign_key_init(&k, a->secret, strlen(a->secret));
    struct sign_request r = {"1795600800", 10, "GET", 3, "/v1/payments/x", 14, NULL, 0, NULL, 0};
    char sig[AUTH_SIGNATURE_BYTES];
    assert_int_equal(sign_compute(&k, &r, sig), 0);
    const struct sign_key *theirs = keyfile_verify_key(set, a->key_id, strlen(a->key_id));
    assert_int_equal(sign_verify(theirs, &r, sig, sizeof(sig), 1795600800), SIGN_OK);
    keyfile_free(set);
}

static void test_add_list_revoke(void **state)
{
    struct added m, r, adm;
    add_ok((const char *[]){"add", "--merchant", "m-1", NULL}, &m);
    assert_string_equal(m.merchant_id, "m-1");
    assert_string_equal(m.scope, "merchant");
    add_ok((const char *[]){"add", "--scope", "read", "--merchant", "m-1", NULL}, &r);
    assert_string_equal(r.scope, "read");
    add_ok((const char *[]){"add", "--scope", "admin", NULL}, &adm);
    assert_false(adm.has_merchant);
    assert_string_equal(adm.scope, "admin");
    assert_secret_verifies(&m);
    assert_secret_verifies(&adm);

    char path[200];
    snprintf(path, sizeof(path), "%s/keys", data);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);

    /* A third active key for m-1: one line, exit 1, nothing printed on stdout. */
    keys((const char *[]){"add", "--merchant", "m-1", NULL});
    assert_int_equal(res.code, 1);
    assert_string_equal(res.out, "");
    assert_string_equal(res.err,
                        "ringpay: merchant m-1 already has 2 active keys; revoke one first\n");

    /* list: one line per key, never a secret. */
    keys((const char *[]){"list", NULL});
    assert_int_equal(res.code, 0);
    assert_int_equal(rp_count_lines(res.out), 3);
    assert_null(strstr(res.out, "rps_"));
    assert_null(strstr(res.out, "secret"));
    char want[256];
    snprintf(want, sizeof(want),
             "{\"key_id\":\"%s\",\"merchant_id\":\"m-1\",\"scope\":\"merchant\",\"status\":"
             "\"active\",\"created_at\":\"",
             m.key_id);
    assert_ptr_equal(strstr(res.out, want), res.out);
    snprintf(want, sizeof(want), "{\"key_id\":\"%s\",\"merchant_id\":null,\"scope\":\"admin\"",
             adm.key_id);
    assert_non_null(strstr(res.out, want));

    /* Rotation: revoke the old key, then a new one is allowed. */
    keys((const char *[]){"revoke", m.key_id, NULL});
    assert_int_equal(res.code, 0);
    snprintf(want, sizeof(want), "{\"key_id\":\"%s\",\"status\":\"revoked\"}\n", m.key_id);
    assert_string_equal(res.out, want);
    keys((const char *[]){"revoke", m.key_id, NULL}); /* again: harmless */
    assert_int_equal(res.code, 0);
    struct added m2;
    add_ok((const char *[]){"add", "--merchant", "m-1", NULL}, &m2);
    keys((const char *[]){"list", NULL});
    snprintf(want, sizeof(want),
             "{\"key_id\":\"%s\",\"merchant_id\":\"m-1\",\"scope\":"
             "\"merchant\",\"status\":\"revoked\"",
             m.key_id);
    assert_non_null(strstr(res.out, want));
    assert_int_equal(rp_count_lines(res.out), 4);

    /* An unknown key: exit 1, one line. */
    keys((const char *[]){"revoke", "rpk_0000000000000000", NULL});
    assert_int_equal(res.code, 1);
    assert_int_equal(rp_count_lines(res.err), 1);
    assert_non_null(strstr(res.err, "ringpay: no key rpk_0000000000000000"));

    /* RINGPAY_DATA stands for --data. */
    char env[200];
    snprintf(env, sizeof(env), "RINGPAY_DATA=%s", data);
    assert_int_equal(rp_run((const char *[]){"keys", "list", NULL}, (const char *[]){env, NULL},
                            NULL, 10000, &res),
                     0);
    assert_int_equal(res.code, 0);
    assert_int_equal(rp_count_lines(res.out), 4);
}

static void test_corrupt_file(void **state)
{
    assert_int_equal(mkdir(data, 0700), 0);
    char path[200];
    snprintf(path, sizeof(path), "%s/keys", data);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("ringpay-keys 1\nrpk_00 active\n", f);
    fclose(f);
    chmod(path, 0600);
    keys((const char *[]){"list", NULL});
    assert_int_equal(res.code, 1);
    assert_int_equal(rp_count_lines(res.err), 1);
    assert_non_null(strstr(res.err, "/keys:2: "));
    keys((const char *[]){"add", "--merchant", "m-1", NULL});
    assert_int_equal(res.code, 1);
    assert_string_equal(res.out, "");
    chmod(path, 0644);
    keys((const char *[]){"list", NULL});
    assert_int_equal(res.code, 1);
    assert_non_null(strstr(res.err, "chmod 600"));
}

static void expect_usage(const char *const *args, const char *msg)
{
    keys(args);
    if (res.code != 2 || rp_count_lines(res.err) != 1 || strncmp(res.err, "ringpay: ", 9) != 0 ||
        strstr(res.err, msg) == NULL)
        fail_msg("code %d err \"%s\", want \"%s\"", res.code, res.err, msg);
    assert_string_equal(res.out, "");
}

static void test_bad_usage(void **state)
{
    expect_usage((const char *[]){"add", NULL}, "needs --merchant ID");
    expect_usage((const char *[]){"add", "--scope", "read", NULL}, "a read key needs --merchant");
    expect_usage((const char *[]){"add", "--scope", "admin", "--merchant", "m-1", NULL},
                 "an admin key belongs to no merchant");
    expect_usage((const char *[]){"add", "--scope", "owner", "--merchant", "m-1", NULL}, "--scope");
    expect_usage((const char *[]){"add", "--merchant", "m 1", NULL}, "--merchant");
    expect_usage((const char *[]){"add", "--merchant", "m-1", "--bogus", NULL}, "unknown option");
    expect_usage((const char *[]){"list", "extra", NULL}, "unexpected argument");
    expect_usage((const char *[]){"revoke", NULL}, "needs a KEY_ID");
    expect_usage((const char *[]){"revoke", "rpk_xyz", NULL}, "is not a key id");
    expect_usage((const char *[]){"revoke", "rpk_0000000000000000", "rpk_0000000000000001", NULL},
                 "one KEY_ID");
    expect_usage((const char *[]){"rotate", NULL}, "unknown keys command");
    assert_int_equal(rp_run((const char *[]){"keys", NULL}, NULL, NULL, 5000, &res), 0);
    assert_int_equal(res.code, 2);
    assert_int_equal(rp_count_lines(res.err), 1);
    /* Nothing was created by any of these. */
    struct stat st;
    char path[200];
    snprintf(path, sizeof(path), "%s/keys", data);
    assert_int_equal(stat(path, &st), -1);
}

static void test_help(void **state)
{
    static const char *const cmds[][3] = {
        {"keys", "--help", NULL},
        {"keys", "add", "--help"},
        {"keys", "list", "--help"},
        {"keys", "revoke", "--help"},
    };
    for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
        const char *argv[4] = {cmds[i][0], cmds[i][1], cmds[i][2], NULL};
        assert_int_equal(rp_run(argv, NULL, NULL, 5000, &res), 0);
        assert_int_equal(res.code, 0);
        assert_ptr_equal(strstr(res.out, "usage: ringpay keys"), res.out);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_add_list_revoke, setup, teardown),
        cmocka_unit_test_setup_teardown(test_corrupt_file, setup, teardown),
        cmocka_unit_test_setup_teardown(test_bad_usage, setup, teardown),
        cmocka_unit_test_setup_teardown(test_help, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
