/*
 * Tests of store/keyfile.c: adding keys (forms of id and secret, mode 0600 whatever the
 * umask, the exact line format), the two-active-keys bound per merchant and for admin
 * keys, revocation, lookups in the key set (and that its HMAC keys verify what the
 * printed secret signs), strict refusal of corrupt and foreign files with one line,
 * the atomic replace under injected faults (once and persistently: the old file stays
 * byte for byte, no temporary file is left), the file's key bound, and concurrent
 * writers that never lose each other's keys.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "store/keyfile.h"

#define NOW 1795600800

static char *make_tmp(void)
{
    char *dir = strdup("/tmp/rp_keyfile_XXXXXX");
    assert_non_null(dir);
    assert_non_null(mkdtemp(dir));
    return dir;
}

static void rm_rf(char *dir)
{
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
    assert_int_equal(system(cmd), 0);
    free(dir);
}

static void path_of(char *buf, size_t cap, const char *dir, const char *name)
{
    assert_true((size_t)snprintf(buf, cap, "%s/%s", dir, name) < cap);
}

/* Reads a whole file into a new NUL-terminated buffer (NULL when missing). */
static char *slurp(const char *dir, const char *name, size_t *len)
{
    char path[600];
    path_of(path, sizeof(path), dir, name);
    FILE *f = fopen(path, "rb");
    if (f == NULL)
        return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *buf = malloc((size_t)n + 1);
    assert_non_null(buf);
    assert_int_equal(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    buf[n] = '\0';
    if (len)
        *len = (size_t)n;
    return buf;
}

static void put_file(const char *dir, const char *text, size_t len, mode_t mode)
{
    char path[600];
    path_of(path, sizeof(path), dir, KEYFILE_NAME);
    unlink(path);
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, mode);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, text, len), (ssize_t)len);
    assert_int_equal(fchmod(fd, mode), 0);
    close(fd);
}

static void must_add(const char *dir, enum keyfile_scope scope, const char *merchant,
                     struct keyfile_new_key *k)
{
    char err[256] = "";
    int rc = keyfile_add(dir, scope, merchant, NOW, k, err, sizeof(err));
    if (rc)
        fail_msg("keyfile_add: %d %s", rc, err);
}

static struct keyset *must_load(const char *dir)
{
    struct keyset *set = NULL;
    char err[256] = "";
    int rc = keyfile_load(dir, &set, err, sizeof(err));
    if (rc)
        fail_msg("keyfile_load: %d %s", rc, err);
    return set;
}

static int only_hex(const char *s, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!strchr("0123456789abcdef", s[i]))
            return 0;
    return 1;
}

static void test_add_forms_and_file(void **state)
{
    char *dir = make_tmp();
    mode_t old_umask = umask(0); /* the file is 0600 whatever the umask */
    struct keyfile_new_key a, b;
    must_add(dir, KEYFILE_SCOPE_MERCHANT, "m-1", &a);
    umask(old_umask);
    must_add(dir, KEYFILE_SCOPE_ADMIN, NULL, &b);

    assert_int_equal(strlen(a.key_id), KEY_ID_BYTES);
    assert_memory_equal(a.key_id, "rpk_", 4);
    assert_true(only_hex(a.key_id + 4, KEY_ID_HEX_DIGITS));
    assert_int_equal(strlen(a.secret), KEY_SECRET_BYTES);
    assert_memory_equal(a.secret, "rps_", 4);
    assert_true(only_hex(a.secret + 4, 64));
    assert_string_equal(a.merchant_id, "m-1");
    assert_string_equal(b.merchant_id, "");
    assert_string_not_equal(a.key_id, b.key_id);
    assert_string_not_equal(a.secret, b.secret);

    char path[600], want[1024];
    path_of(path, sizeof(path), dir, KEYFILE_NAME);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    assert_int_equal(st.st_mode & 07777, 0600);
    snprintf(want, sizeof(want),
             "ringpay-keys 1\n%s active merchant %d %s m-1\n%s active admin %d %s\n", a.key_id, NOW,
             a.secret, b.key_id, NOW, b.secret);
    char *text = slurp(dir, KEYFILE_NAME, NULL);
    assert_string_equal(text, want);
    free(text);
    assert_null(slurp(dir, KEYFILE_TMP_NAME, NULL)); /* no temporary file left */

    /* The key set: lookups, fields, and the HMAC key of the printed secret. */
    struct keyset *set = must_load(dir);
    assert_int_equal(keyfile_count(set), 2);
    const struct keyfile_key *k = keyfile_find(set, a.key_id, KEY_ID_BYTES);
    assert_ptr_equal(k, keyfile_at(set, 0));
    assert_int_equal(k->scope, KEYFILE_SCOPE_MERCHANT);
    assert_int_equal(k->status, KEYFILE_ACTIVE);
    assert_string_equal(k->merchant_id, "m-1");
    assert_int_equal(k->merchant_id_len, 3);
    assert_int_equal(k->created_s, NOW);
    assert_int_equal(keyfile_at(set, 1)->scope, KEYFILE_SCOPE_ADMIN);
    struct sign_key mine;
    sign_key_init(&mine, a.secret, strlen(a.secret));
    struct sign_request r = {"1795600800", 10,   "GET", 3,    "/v1/payments/pay_x",
                             18,           NULL, 0,     NULL, 0};
    char sig[AUTH_SIGNATURE_BYTES];
    assert_int_equal(sign_compute(&mine, &r, sig), 0);
    const struct sign_key *theirs = keyfile_verify_key(set, a.key_id, KEY_ID_BYTES);
    assert_int_equal(sign_verify(theirs, &r, sig, sizeof(sig), NOW), SIGN_OK);
    /* b's key does not verify a's signature. */
    assert_int_equal(
        sign_verify(keyfile_verify_key(set, b.key_id, KEY_ID_BYTES), &r, sig, sizeof(sig), NOW),
        SIGN_AUTH_FAILED);
    keyfile_free(set);
    rm_rf(dir);
}

static void test_two_active_keys_per_merchant(void **state)
{
    char *dir = make_tmp();
    struct keyfile_new_key k1, k2, k3, other, adm1, adm2;
    char err[256] = "";
    must_add(dir, KEYFILE_SCOPE_MERCHANT, "m-1", &k1);
    must_add(dir, KEYFILE_SCOPE_READ, "m-1", &k2); /* read keys count for their merchant */
    size_t len0;
    char *before = slurp(dir, KEYFILE_NAME, &len0);
    assert_int_equal(keyfile_add(dir, KEYFILE_SCOPE_MERCHANT, "m-1", NOW, &k3, err, sizeof(err)),
                     -EDQUOT);
    assert_string_equal(err, "merchant m-1 already has 2 active keys; revoke one first");
    char *after = slurp(dir, KEYFILE_NAME, NULL);
    assert_string_equal(before, after); /* a refused add changes nothing */
    free(before);
    free(after);
    must_add(dir, KEYFILE_SCOPE_MERCHANT, "m-2", &other); /* another merchant is not held */

    /* Rotation: revoke the old key, then the third works. */
    bool was_active = false;
    assert_int_equal(keyfile_revoke(dir, k1.key_id, &was_active, err, sizeof(err)), 0);
    assert_true(was_active);
    assert_int_equal(keyfile_revoke(dir, k1.key_id, &was_active, err, sizeof(err)), 0);
    assert_false(was_active); /* revoking twice is harmless */
    must_add(dir, KEYFILE_SCOPE_MERCHANT, "m-1", &k3);

    /* Admin keys: a group of their own under the same bound. */
    must_add(dir, KEYFILE_SCOPE_ADMIN, NULL, &adm1);
    must_add(dir, KEYFILE_SCOPE_ADMIN, NULL, &adm2);
    assert_int_equal(keyfile_add(dir, KEYFILE_SCOPE_ADMIN, NULL, NOW, &k3, err, sizeof(err)),
                     -EDQUOT);
    assert_string_equal(err, "there are already 2 active admin keys; revoke one first");

    struct keyset *set = must_load(dir);
    assert_int_equal(keyfile_count(set), 6);
    const struct keyfile_key *old = keyfile_find(set, k1.key_id, KEY_ID_BYTES);
    assert_non_null(old);
    assert_int_equal(old->status, KEYFILE_REVOKED);
    assert_null(keyfile_verify_key(set, k1.key_id, KEY_ID_BYTES)); /* revoked: no key */
    assert_non_null(keyfile_verify_key(set, k2.key_id, KEY_ID_BYTES));
    assert_non_null(keyfile_verify_key(set, k3.key_id, KEY_ID_BYTES));
    keyfile_free(set);
    rm_rf(dir);
}

static void test_bad_arguments(void **state)
{
    char *dir = make_tmp();
    struct keyfile_new_key k;
    char err[256] = "";
    bool was;
    assert_int_equal(keyfile_add(dir, KEYFILE_SCOPE_MERCHANT, NULL, NOW, &k, err, sizeof(err)),
                     -EINVAL);
    assert_string_equal(err, "a merchant key needs --merchant ID");
    assert_int_equal(keyfile_add(dir, KEYFILE_SCOPE_READ, NULL, NOW, &k, err, sizeof(err)),
                     -EINVAL);
    assert_int_equal(keyfile_add(dir, KEYFILE_SCOPE_ADMIN, "m-1", NOW, &k, err, sizeof(err)),
                     -EINVAL);
    static const char *const bad_ids[] = {"",
                                          "m 1",
                                          "m/1",
                                          "m\n1",
                                          "ü",
                                          "0123456789012345678901234567890123456789012345678901234"
                                          "5678901234"}; /* 65 */
    for (size_t i = 0; i < sizeof(bad_ids) / sizeof(bad_ids[0]); i++)
        assert_int_equal(
            keyfile_add(dir, KEYFILE_SCOPE_MERCHANT, bad_ids[i], NOW, &k, err, sizeof(err)),
            -EINVAL);
    assert_int_equal(keyfile_revoke(dir, "rpk_0000000000000000", &was, err, sizeof(err)), -ENOENT);
    assert_int_equal(keyfile_revoke(dir, "rpk_00", &was, err, sizeof(err)), -EINVAL);
    assert_int_equal(keyfile_revoke(dir, "RPK_0000000000000000", &was, err, sizeof(err)), -EINVAL);
    assert_int_equal(keyfile_scope_parse("merchant"), KEYFILE_SCOPE_MERCHANT);
    assert_int_equal(keyfile_scope_parse("read"), KEYFILE_SCOPE_READ);
    assert_int_equal(keyfile_scope_parse("admin"), KEYFILE_SCOPE_ADMIN);
    assert_int_equal(keyfile_scope_parse("Admin"), -1);
    rm_rf(dir);
}

static void test_missing_file_and_dir(void **state)
{
    char *dir = make_tmp();
    struct keyset *set = must_load(dir); /* no key file yet: an empty set */
    assert_int_equal(keyfile_count(set), 0);
    assert_null(keyfile_find(set, "rpk_0000000000000000", KEY_ID_BYTES));
    keyfile_free(set);
    char sub[600], err[256] = "";
    path_of(sub, sizeof(sub), dir, "nope");
    assert_int_equal(keyfile_load(sub, &set, err, sizeof(err)), -ENOENT);
    assert_null(set);
    assert_non_null(strstr(err, "nope"));
    /* add creates the data directory. */
    struct keyfile_new_key k;
    must_add(sub, KEYFILE_SCOPE_ADMIN, NULL, &k);
    struct stat st;
    assert_int_equal(stat(sub, &st), 0);
    assert_int_equal(st.st_mode & 0777, 0700);
    rm_rf(dir);
}

#define ID1  "rpk_00112233445566aa"
#define ID2  "rpk_00112233445566bb"
#define ID3  "rpk_00112233445566cc"
#define SEC  "rps_5793934f87138344251d3c564a4c0bed74dc6167272ab13240403af21e652653"
#define HDR  "ringpay-keys 1\n"
#define LINE ID1 " active merchant 1795600800 " SEC " m-1\n"

/* Each of these is refused with -EINVAL and one line naming the file. */
static void test_corrupt_files_refused(void **state)
{
    static const struct {
        const char *text;
        const char *why; /* expected in the message */
    } cases[] = {
        {"", "not a ringpay key file"},
        {"ringpay-keys 2\n", "not a ringpay key file"},
        {"ringpay-keys 1", "not a ringpay key file"},
        {"\x89PNG\r\n\x1a\n", "not a ringpay key file"},
        {"ringpay-data 1\nshards 4\n", "not a ringpay key file"},
        {HDR ID1 " active merchant 1795600800 " SEC " m-1", "keys:2: truncated"},
        {HDR ID1 " active merchant 1795600800 " SEC " m-1\r\n", "keys:2: a merchant or read"},
        {HDR ID1 "  active merchant 1795600800 " SEC " m-1\n", "keys:2: expected"},
        {HDR ID1 " active merchant 1795600800 " SEC " m-1 \n", "keys:2: expected"},
        {HDR " " LINE, "keys:2: expected"},
        {HDR "\n", "keys:2: expected"},
        {HDR "# a comment\n", "keys:2: expected"},
        {HDR "rpk_00112233445566AA active merchant 1795600800 " SEC " m-1\n", "bad key id"},
        {HDR "rpk_00112233445566a active merchant 1795600800 " SEC " m-1\n", "bad key id"},
        {HDR "key_00112233445566aa active merchant 1795600800 " SEC " m-1\n", "bad key id"},
        {HDR ID1 " Active merchant 1795600800 " SEC " m-1\n", "bad status"},
        {HDR ID1 " active owner 1795600800 " SEC " m-1\n", "bad scope"},
        {HDR ID1 " active merchant 01795600800 " SEC " m-1\n", "bad created time"},
        {HDR ID1 " active merchant -1 " SEC " m-1\n", "bad created time"},
        {HDR ID1 " active merchant 1795600800 rps_00 m-1\n", "bad secret"},
        {HDR ID1 " active merchant 1795600800 " SEC "0 m-1\n", "bad secret"},
        {HDR ID1 " active admin 1795600800 " SEC " m-1\n", "an admin key has no merchant id"},
        {HDR ID1 " active merchant 1795600800 " SEC "\n", "a merchant or read key needs"},
        {HDR ID1 " active read 1795600800 " SEC " m/1\n", "a merchant or read key needs"},
        {HDR ID1 " active read 1795600800 " SEC " m-1 m-2\n", "keys:2: expected"},
        {HDR LINE LINE, "keys:3: key id " ID1 " appears twice"},
        {HDR LINE ID2 " active read 1 " SEC " m-1\n" ID3 " active merchant 1 " SEC " m-1\n",
         "more than 2 active keys for merchant m-1"},
        {HDR ID1 " active admin 1 " SEC "\n" ID2 " active admin 1 " SEC "\n" ID3
                 " active admin 1 " SEC "\n",
         "more than 2 active admin keys"},
    };
    char *dir = make_tmp();
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        put_file(dir, cases[i].text, strlen(cases[i].text), 0600);
        struct keyset *set = (struct keyset *)1;
        char err[256] = "";
        int rc = keyfile_load(dir, &set, err, sizeof(err));
        if (rc != -EINVAL || strstr(err, cases[i].why) == NULL || strchr(err, '\n') ||
            strstr(err, dir) == NULL)
            fail_msg("case %zu: rc %d, err \"%s\", want \"%s\"", i, rc, err, cases[i].why);
        assert_null(set);
        /* A change refuses it too and leaves it untouched. */
        struct keyfile_new_key k;
        assert_int_equal(keyfile_add(dir, KEYFILE_SCOPE_ADMIN, NULL, NOW, &k, err, sizeof(err)),
                         -EINVAL);
        size_t len;
        char *now = slurp(dir, KEYFILE_NAME, &len);
        assert_int_equal(len, strlen(cases[i].text));
        assert_memory_equal(now, cases[i].text, len);
        free(now);
    }
    /* The three revoked keys of a merchant plus two active ones are fine. */
    const char *ok = HDR ID1 " revoked merchant 1 " SEC " m-1\n" ID2 " active read 1 " SEC
                             " m-1\n" ID3 " active merchant 1 " SEC " m-1\n";
    put_file(dir, ok, strlen(ok), 0600);
    keyfile_free(must_load(dir));
    rm_rf(dir);
}

static void test_unsafe_files_refused(void **state)
{
    char *dir = make_tmp();
    char err[256] = "", path[600];
    struct keyset *set;
    const char *text = HDR LINE;
    put_file(dir, text, strlen(text), 0644);
    assert_int_equal(keyfile_load(dir, &set, err, sizeof(err)), -EACCES);
    assert_non_null(strstr(err, "mode 0644"));
    put_file(dir, text, strlen(text), 0640);
    assert_int_equal(keyfile_load(dir, &set, err, sizeof(err)), -EACCES);
    /* A NUL byte. */
    char nul[] = HDR ID1 " active merchant 1795600800 " SEC " m-1\n";
    nul[20] = '\0';
    put_file(dir, nul, sizeof(nul) - 1, 0600);
    assert_int_equal(keyfile_load(dir, &set, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "NUL"));
    /* A line longer than the bound. */
    char longline[600];
    snprintf(longline, sizeof(longline), HDR ID1 " active merchant 1795600800 " SEC " %0200d\n", 7);
    put_file(dir, longline, strlen(longline), 0600);
    assert_int_equal(keyfile_load(dir, &set, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "line too long"));
    /* Larger than the file bound (sparse). */
    path_of(path, sizeof(path), dir, KEYFILE_NAME);
    put_file(dir, HDR, strlen(HDR), 0600);
    assert_int_equal(truncate(path, (off_t)KEYFILE_MAX_BYTES + 1), 0);
    assert_int_equal(keyfile_load(dir, &set, err, sizeof(err)), -EFBIG);
    /* A directory where the file should be. */
    unlink(path);
    assert_int_equal(mkdir(path, 0700), 0);
    assert_int_equal(keyfile_load(dir, &set, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "not a regular file"));
    rm_rf(dir);
}

/* Every step of the atomic replace failing, once and persistently: the call fails with
 * the injected error, the old file is intact byte for byte, no temporary file remains;
 * after a one-time fault the next call succeeds. */
static void test_atomic_replace_faults(void **state)
{
    static const enum keyfile_fault_step steps[] = {KEYFILE_FAULT_OPEN, KEYFILE_FAULT_WRITE,
                                                    KEYFILE_FAULT_FSYNC, KEYFILE_FAULT_RENAME};
    for (size_t s = 0; s < sizeof(steps) / sizeof(steps[0]); s++) {
        for (int persistent = 0; persistent < 2; persistent++) {
            char *dir = make_tmp();
            struct keyfile_new_key k;
            char err[256] = "";
            must_add(dir, KEYFILE_SCOPE_MERCHANT, "m-1", &k);
            size_t len0;
            char *before = slurp(dir, KEYFILE_NAME, &len0);
            struct keyfile_fault f = {.step = steps[s], .err = EIO, .persistent = persistent};
            keyfile_fault_set(&f);
            int tries = persistent ? 3 : 1;
            for (int t = 0; t < tries; t++) {
                bool was;
                int rc = t % 2 ? keyfile_revoke(dir, k.key_id, &was, err, sizeof(err))
                               : keyfile_add(dir, KEYFILE_SCOPE_MERCHANT, "m-2", NOW, &k, err,
                                             sizeof(err));
                if (rc != -EIO)
                    fail_msg("step %d persistent %d try %d: rc %d", steps[s], persistent, t, rc);
                assert_null(strchr(err, '\n'));
                size_t len;
                char *now = slurp(dir, KEYFILE_NAME, &len);
                assert_int_equal(len, len0);
                assert_memory_equal(now, before, len0);
                free(now);
                assert_null(slurp(dir, KEYFILE_TMP_NAME, NULL));
            }
            keyfile_fault_set(NULL);
            struct keyfile_new_key k2;
            must_add(dir, KEYFILE_SCOPE_MERCHANT, "m-2", &k2);
            struct keyset *set = must_load(dir);
            assert_int_equal(keyfile_count(set), 2);
            keyfile_free(set);
            free(before);
            rm_rf(dir);
        }
    }
}

/* The directory fsync fails after the rename: the call reports it, and the file holds
 * the new content whole (never a mix). */
static void test_fsync_dir_fault(void **state)
{
    char *dir = make_tmp();
    struct keyfile_new_key k;
    char err[256] = "";
    must_add(dir, KEYFILE_SCOPE_MERCHANT, "m-1", &k);
    struct keyfile_fault f = {.step = KEYFILE_FAULT_FSYNC_DIR, .err = EIO};
    keyfile_fault_set(&f);
    assert_int_equal(keyfile_add(dir, KEYFILE_SCOPE_MERCHANT, "m-2", NOW, &k, err, sizeof(err)),
                     -EIO);
    assert_non_null(strstr(err, "cannot fsync"));
    struct keyset *set = must_load(dir);
    assert_int_equal(keyfile_count(set), 2);
    keyfile_free(set);
    assert_null(slurp(dir, KEYFILE_TMP_NAME, NULL));
    rm_rf(dir);
}

/* Many keys: every id is found at its position, no other id is. */
static void test_lookup_many(void **state)
{
    char *dir = make_tmp();
    enum { N = 3000 };
    size_t cap = N * KEYFILE_LINE_MAX_BYTES + 64, o = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    o += (size_t)snprintf(text + o, cap - o, HDR);
    for (int i = 0; i < N; i++)
        o += (size_t)snprintf(text + o, cap - o, "rpk_%016x %s merchant %d " SEC " m-%d\n",
                              i * 7919u, i % 3 ? "active" : "revoked", 1000 + i, i);
    put_file(dir, text, o, 0600);
    free(text);
    struct keyset *set = must_load(dir);
    assert_int_equal(keyfile_count(set), N);
    for (int i = 0; i < N; i++) {
        char id[KEY_ID_BYTES + 1];
        snprintf(id, sizeof(id), "rpk_%016x", i * 7919u);
        const struct keyfile_key *k = keyfile_find(set, id, KEY_ID_BYTES);
        assert_ptr_equal(k, keyfile_at(set, (size_t)i));
        assert_int_equal(k->created_s, 1000 + i);
        assert_int_equal(keyfile_verify_key(set, id, KEY_ID_BYTES) != NULL, i % 3 != 0);
        snprintf(id, sizeof(id), "rpk_%016x", i * 7919u + 1);
        if ((i * 7919u + 1) % 7919u != 0)
            assert_null(keyfile_find(set, id, KEY_ID_BYTES));
    }
    assert_null(keyfile_find(set, "rpk_0000000000000000", KEY_ID_BYTES - 1));
    assert_null(keyfile_find(set, "rpk_00000000000000000", KEY_ID_BYTES + 1));
    assert_null(keyfile_find(set, "", 0));
    keyfile_free(set);
    rm_rf(dir);
}

/* KEYFILE_KEYS_MAX keys load; one more key is refused by add and by the reader. */
static void test_key_bound(void **state)
{
    char *dir = make_tmp();
    size_t cap = ((size_t)KEYFILE_KEYS_MAX + 2) * 120, o = 0;
    char *text = malloc(cap);
    assert_non_null(text);
    o += (size_t)snprintf(text + o, cap - o, HDR);
    for (unsigned i = 0; i < KEYFILE_KEYS_MAX; i++)
        o += (size_t)snprintf(text + o, cap - o, "rpk_%016x revoked admin 1 " SEC "\n", i);
    put_file(dir, text, o, 0600);
    keyfile_free(must_load(dir));
    struct keyfile_new_key k;
    char err[256] = "";
    assert_int_equal(keyfile_add(dir, KEYFILE_SCOPE_ADMIN, NULL, NOW, &k, err, sizeof(err)),
                     -ENOSPC);
    o += (size_t)snprintf(text + o, cap - o, "rpk_%016x revoked admin 1 " SEC "\n",
                          KEYFILE_KEYS_MAX);
    put_file(dir, text, o, 0600);
    free(text);
    struct keyset *set;
    assert_int_equal(keyfile_load(dir, &set, err, sizeof(err)), -EINVAL);
    assert_non_null(strstr(err, "more keys than"));
    rm_rf(dir);
}

/* Writers in several processes at once: the lock keeps every key. */
static void test_concurrent_writers(void **state)
{
    char *dir = make_tmp();
    enum { PROCS = 6, EACH = 8 };
    pid_t pids[PROCS];
    for (int p = 0; p < PROCS; p++) {
        pids[p] = fork();
        assert_true(pids[p] >= 0);
        if (pids[p] == 0) {
            for (int i = 0; i < EACH; i++) {
                char m[32], err[256];
                struct keyfile_new_key k;
                snprintf(m, sizeof(m), "m-%d-%d", p, i);
                if (keyfile_add(dir, KEYFILE_SCOPE_MERCHANT, m, NOW, &k, err, sizeof(err)))
                    _exit(1);
            }
            _exit(0);
        }
    }
    for (int p = 0; p < PROCS; p++) {
        int st;
        assert_int_equal(waitpid(pids[p], &st, 0), pids[p]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
    }
    struct keyset *set = must_load(dir);
    assert_int_equal(keyfile_count(set), PROCS * EACH);
    keyfile_free(set);
    rm_rf(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_add_forms_and_file),
        cmocka_unit_test(test_two_active_keys_per_merchant),
        cmocka_unit_test(test_bad_arguments),
        cmocka_unit_test(test_missing_file_and_dir),
        cmocka_unit_test(test_corrupt_files_refused),
        cmocka_unit_test(test_unsafe_files_refused),
        cmocka_unit_test(test_atomic_replace_faults),
        cmocka_unit_test(test_fsync_dir_fault),
        cmocka_unit_test(test_lookup_many),
        cmocka_unit_test(test_key_bound),
        cmocka_unit_test(test_concurrent_writers),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
