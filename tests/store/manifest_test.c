/*
 * Tests of store/manifest.c: creation on first start, acceptance of the same shard
 * count, refusal of another count with the exact message, refusal of malformed
 * manifests and of shard directories without a manifest.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "store/manifest.h"

static char *make_tmp(void)
{
    char *dir = strdup("/tmp/rp_manifest_XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void rm_rf(const char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
}

static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    assert_int_equal(fclose(f), 0);
}

static void test_create_then_reopen(void **state)
{
    char *tmp = make_tmp();
    char dir[512], err[256] = "", path[600];
    snprintf(dir, sizeof(dir), "%s/data", tmp); /* does not exist yet */
    assert_int_equal(store_manifest_open(dir, 4, err, sizeof(err)), 0);
    unsigned n = 0;
    assert_int_equal(store_manifest_read(dir, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 4);
    /* The file is exactly the documented two lines and no temp file is left. */
    snprintf(path, sizeof(path), "%s/MANIFEST", dir);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    char buf[128] = "";
    size_t got = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[got] = '\0';
    assert_string_equal(buf, "ringpay-data 1\nshards 4\n");
    snprintf(path, sizeof(path), "%s/MANIFEST.tmp", dir);
    assert_int_equal(access(path, F_OK), -1);
    assert_int_equal(store_manifest_open(dir, 4, err, sizeof(err)), 0);
    rm_rf(tmp);
    free(tmp);
}

static void test_other_shard_count_refused(void **state)
{
    char *tmp = make_tmp();
    char err[256] = "", want[512];
    assert_int_equal(store_manifest_open(tmp, 4, err, sizeof(err)), 0);
    assert_int_equal(store_manifest_open(tmp, 2, err, sizeof(err)), -EINVAL);
    snprintf(want, sizeof(want),
             "data directory %s holds 4 shards; started with --cores 2; "
             "resharding is not supported",
             tmp);
    assert_string_equal(err, want);
    /* The refusal changed nothing. */
    unsigned n = 0;
    assert_int_equal(store_manifest_read(tmp, &n, err, sizeof(err)), 0);
    assert_int_equal(n, 4);
    rm_rf(tmp);
    free(tmp);
}

static void test_malformed_refused(void **state)
{
    static const char *const bad[] = {
        "",
        "ringpay-data 2\nshards 4\n",
        "ringpay-data 1\nshards 0\n",
        "ringpay-data 1\nshards 65\n",
        "ringpay-data 1\nshards 4\nextra\n",
        "garbage",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char *tmp = make_tmp();
        char path[600], err[256] = "";
        snprintf(path, sizeof(path), "%s/MANIFEST", tmp);
        write_file(path, bad[i]);
        unsigned n = 0;
        assert_int_equal(store_manifest_read(tmp, &n, err, sizeof(err)), -EINVAL);
        assert_int_equal(store_manifest_open(tmp, 4, err, sizeof(err)), -EINVAL);
        assert_non_null(strstr(err, "not a ringpay manifest"));
        rm_rf(tmp);
        free(tmp);
    }
}

static void test_shards_without_manifest_refused(void **state)
{
    char *tmp = make_tmp();
    char path[600], err[256] = "";
    assert_int_equal(store_manifest_shard_path(tmp, 0, path, sizeof(path)), 0);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(store_manifest_open(tmp, 2, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "no MANIFEST"));
    unsigned n = 0;
    assert_int_equal(store_manifest_read(tmp, &n, err, sizeof(err)), -ENOENT);
    rm_rf(tmp);
    free(tmp);
}

static void test_bad_counts_and_paths(void **state)
{
    char err[256] = "", path[32];
    assert_int_equal(store_manifest_open("/tmp", 0, err, sizeof(err)), -EINVAL);
    assert_int_equal(store_manifest_open("/tmp", 65, err, sizeof(err)), -EINVAL);
    assert_int_equal(store_manifest_shard_path("/x", 7, path, sizeof(path)), 0);
    assert_string_equal(path, "/x/shard-007");
    assert_int_equal(store_manifest_shard_path("/a/very/long/path/name", 7, path, 16),
                     -ENAMETOOLONG);
    assert_int_equal(store_manifest_open("/proc/no/such/dir", 1, err, sizeof(err)), -ENOENT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_create_then_reopen),
        cmocka_unit_test(test_other_shard_count_refused),
        cmocka_unit_test(test_malformed_refused),
        cmocka_unit_test(test_shards_without_manifest_refused),
        cmocka_unit_test(test_bad_counts_and_paths),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
