/*
 * `ringpay load` against the real engine with the signing gate on (tests/integration
 * harness): --keys-data makes the merchants' keys in the running engine's data
 * directory, reloads it with SIGHUP and signs every request, so no answer is a 401; the
 * lifecycle mix gets no 4xx at all (every capture, void, partial refund and GET is
 * valid in the engine's state machine); the replay scenario's replays are answered with
 * Idempotent-Replayed: true and counted; a second run reuses the kept keys (the key file
 * does not grow), and the kept file is mode 0600; a revoked key is replaced alone and the
 * run waits until the engine has the new one.
 */
#include <errno.h>
#include <signal.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <cmocka.h>

#include "tests/integration/harness.h"

static struct rp_server srv;
static struct rp_run_result run;

/* The number after "name": in a JSON line, or -1. */
static long json_num(const char *s, const char *name)
{
    char pat[64];
    snprintf(pat, sizeof(pat), "\"%s\":", name);
    const char *p = strstr(s, pat);
    return p ? strtol(p + strlen(pat), NULL, 10) : -1;
}

/* Runs `ringpay load` with the engine's data directory and extra arguments. */
static void load(const char *scenario, const char *const extra[])
{
    char target[32];
    snprintf(target, sizeof(target), "127.0.0.1:%d", srv.port);
    const char *argv[32] = {"load",       "--target",      target,   "--keys-data",
                            srv.data_dir, "--scenario",    scenario, "--merchants",
                            "16",         "--connections", "8",      "--json"};
    int n = 12;
    for (int i = 0; extra && extra[i]; i++)
        argv[n++] = extra[i];
    argv[n] = NULL;
    assert_int_equal(rp_run(argv, NULL, NULL, 60000, &run), 0);
    if (run.code != 0 || strstr(run.out, "\"signed\":true") == NULL)
        fail_msg("load %s: exit %d\n%s%s", scenario, run.code, run.out, run.err);
}

static int count_keys(void)
{
    const char *argv[] = {"keys", "list", "--data", srv.data_dir, NULL};
    struct rp_run_result *r = malloc(sizeof(*r));
    assert_int_equal(rp_run(argv, NULL, NULL, 10000, r), 0);
    assert_int_equal(r->code, 0);
    int n = rp_count_lines(r->out);
    free(r);
    return n;
}

static void test_lifecycle_and_replay_signed(void **state)
{
    const char *const args[] = {"--auth", "on", NULL};
    rp_must_start(&srv, args);

    const char *const lifecycle[] = {
        "--requests",   "3000", "--pipeline", "4",  "--capture-pct",  "60", "--void-pct", "30",
        "--refund-pct", "50",   "--get-pct",  "15", "--balances-pct", "5",  NULL};
    load("lifecycle", lifecycle);
    if (json_num(run.out, "ok") != 3000 || json_num(run.out, "errors") != 0)
        fail_msg("lifecycle: not every answer 2xx\n%s%s", run.out, run.err);
    static const char *const kinds[] = {"capture", "void", "refund", "get_payment", "balances"};
    for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++) {
        char pat[32];
        snprintf(pat, sizeof(pat), "\"%s\":{\"sent\":", kinds[i]);
        if (strstr(run.out, pat) == NULL)
            fail_msg("lifecycle: no %s in\n%s", kinds[i], run.out);
    }
    assert_int_equal(count_keys(), 16);
    char path[RP_PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/load.keys", srv.data_dir);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0600);

    const char *const replay[] = {"--requests", "2000", "--replay-pct", "40", NULL};
    load("replay", replay);
    long replayed = json_num(run.out, "replayed");
    if (json_num(run.out, "ok") != 2000 || replayed < 600 || replayed > 1000)
        fail_msg("replay: expected ~800 replays of 2000, all 2xx\n%s", run.out);
    const char *r = strstr(run.out, "\"replay\":{\"sent\":");
    assert_non_null(r);
    assert_int_equal(json_num(r, "ok"), replayed);
    assert_int_equal(count_keys(), 16); /* the second run reused the keys */

    /* More merchants: only the new ones get keys, and the engine takes them at once. */
    char target[32];
    snprintf(target, sizeof(target), "127.0.0.1:%d", srv.port);
    const char *argv[] = {"load",        "--target", target,   "--keys-data", srv.data_dir,
                          "--merchants", "20",       "--zipf", "1.1",         "--requests",
                          "500",         "--json",   NULL};
    assert_int_equal(rp_run(argv, NULL, NULL, 60000, &run), 0);
    if (run.code != 0 || json_num(run.out, "ok") != 500)
        fail_msg("zipf run: exit %d\n%s%s", run.code, run.out, run.err);
    assert_int_equal(count_keys(), 20);

    /* m-5's key revoked (and the engine reloaded): the next run replaces that key alone,
     * reloads the engine again and waits for the new key before it starts, so not one
     * request is refused. */
    char path5[RP_PATH_MAX + 16], line[512], id[32] = "";
    snprintf(path5, sizeof(path5), "%s/load.keys", srv.data_dir);
    FILE *f = fopen(path5, "r");
    assert_non_null(f);
    while (fgets(line, sizeof(line), f))
        if (strstr(line, "\"merchant_id\":\"m-5\""))
            sscanf(strstr(line, "\"key_id\":\"") + 10, "%20[a-z0-9_]", id);
    fclose(f);
    assert_int_equal(strlen(id), 20);
    const char *revoke[] = {"keys", "revoke", "--data", srv.data_dir, id, NULL};
    assert_int_equal(rp_run(revoke, NULL, NULL, 10000, &run), 0);
    assert_int_equal(run.code, 0);
    assert_int_equal(rp_server_signal(&srv, SIGHUP), 0);
    const char *const again[] = {"--requests", "400", NULL};
    load("authorize", again);
    if (json_num(run.out, "ok") != 400 || strstr(run.out, "\"401\"") != NULL)
        fail_msg("after a revocation: not every answer 2xx\n%s%s", run.out, run.err);
    assert_int_equal(count_keys(), 21);
    assert_int_equal(rp_server_stop(&srv), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_lifecycle_and_replay_signed, rp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
