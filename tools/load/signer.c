/*
 * Signing for `ringpay load` (see signer.h).
 */
#include "tools/load/signer.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "engine/clock.h"
#include "engine/limits.h"
#include "engine/sign.h"
#include "store/dirlock.h"
#include "store/keyfile.h"

struct load_key {
    char id[KEY_ID_BYTES + 1];
    struct sign_key sign;
    int present;
};

struct load_keys {
    unsigned merchants;
    struct load_key keys[]; /* [merchants], index i for merchant m-i */
};

/* The string value of "name" in a one-line JSON object, copied into out. */
static int field(const char *line, const char *name, char *out, size_t cap)
{
    char pat[40];
    snprintf(pat, sizeof(pat), "\"%s\":\"", name);
    const char *p = strstr(line, pat);
    if (p == NULL)
        return -1;
    p += strlen(pat);
    const char *e = strchr(p, '"');
    if (e == NULL || (size_t)(e - p) >= cap)
        return -1;
    memcpy(out, p, (size_t)(e - p));
    out[e - p] = '\0';
    return 0;
}

/* The index i of merchant "m-<i>", or -1. */
static long merchant_index(const char *m, unsigned merchants)
{
    if (strncmp(m, "m-", 2) != 0 || m[2] < '0' || m[2] > '9')
        return -1;
    char *end;
    long i = strtol(m + 2, &end, 10);
    return *end == '\0' && i >= 0 && (unsigned long)i < merchants ? i : -1;
}

static int read_lines(FILE *f, const char *path, struct load_keys *k, char *why, size_t n)
{
    char line[1024];
    for (unsigned no = 1; fgets(line, sizeof(line), f) != NULL; no++) {
        char id[64], merchant[MERCHANT_ID_MAX_BYTES + 1], secret[KEY_SECRET_BYTES + 1];
        if (field(line, "key_id", id, sizeof(id)) != 0 || strlen(id) != KEY_ID_BYTES ||
            field(line, "secret", secret, sizeof(secret)) != 0) {
            snprintf(why, n, "%s:%u: not a key printed by `ringpay keys add`", path, no);
            return -EINVAL;
        }
        long i = field(line, "merchant_id", merchant, sizeof(merchant)) == 0
                     ? merchant_index(merchant, k->merchants)
                     : -1;
        if (i >= 0) {
            memcpy(k->keys[i].id, id, KEY_ID_BYTES + 1);
            sign_key_init(&k->keys[i].sign, secret, strlen(secret));
            k->keys[i].present = 1;
        }
        memset(secret, 0, sizeof(secret));
    }
    return 0;
}

int load_keys_read(const char *path, unsigned merchants, struct load_keys **out, char *why,
                   size_t why_bytes)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        int err = -errno;
        snprintf(why, why_bytes, "--keys %s: %s", path, strerror(errno));
        return err;
    }
    struct load_keys *k = calloc(1, sizeof(*k) + merchants * sizeof(k->keys[0]));
    if (k == NULL) {
        fclose(f);
        return -ENOMEM;
    }
    k->merchants = merchants;
    int err = read_lines(f, path, k, why, why_bytes);
    fclose(f);
    for (unsigned i = 0; err == 0 && i < merchants; i++)
        if (!k->keys[i].present) {
            snprintf(why, why_bytes, "--keys %s has no key for merchant m-%u", path, i);
            err = -ENOENT;
        }
    if (err) {
        load_keys_free(k);
        return err;
    }
    *out = k;
    return 0;
}

void load_keys_free(struct load_keys *keys)
{
    if (keys == NULL)
        return;
    for (unsigned i = 0; i < keys->merchants; i++)
        sign_key_wipe(&keys->keys[i].sign);
    free(keys);
}

int load_keys_sign(void *ctx, const struct loadstats_req *req, char *out, size_t cap)
{
    const struct load_keys *k = ctx;
    if (req->merchant < 0)
        return 0; /* no merchant: an unsigned operations request */
    if ((unsigned long)req->merchant >= k->merchants)
        return -1;
    const struct load_key *key = &k->keys[req->merchant];
    char ts[24];
    int tl = snprintf(ts, sizeof(ts), "%lld", (long long)(clock_wall_ms() / 1000));
    struct sign_request sr = {
        .timestamp = ts,
        .timestamp_len = (size_t)tl,
        .method = req->method,
        .method_len = strlen(req->method),
        .target = req->target,
        .target_len = strlen(req->target),
        .idempotency_key = req->idempotency_key,
        .idempotency_key_len = req->idempotency_key ? strlen(req->idempotency_key) : 0,
        .body = req->body,
        .body_len = req->body_len,
    };
    char sig[AUTH_SIGNATURE_BYTES];
    if (sign_compute(&key->sign, &sr, sig) != 0)
        return -1;
    int n = snprintf(out, cap,
                     "X-Ringpay-Key: %s\r\nX-Ringpay-Timestamp: %s\r\n"
                     "X-Ringpay-Signature: %.*s\r\n",
                     key->id, ts, AUTH_SIGNATURE_BYTES, sig);
    return n > 0 && (size_t)n < cap ? n : -1;
}

/* ---- provisioning ---- */

struct kept_key {
    char id[KEY_ID_BYTES + 1];
    char merchant[MERCHANT_ID_MAX_BYTES + 1];
    char secret[KEY_SECRET_BYTES + 1];
};

struct kept {
    struct kept_key *keys;
    size_t n, cap;
};

static void kept_free(struct kept *k)
{
    if (k->keys)
        OPENSSL_cleanse(k->keys, k->cap * sizeof(*k->keys));
    free(k->keys);
    *k = (struct kept){0};
}

static int kept_push(struct kept *k, const struct kept_key *key)
{
    if (k->n == k->cap) {
        size_t cap = k->cap ? 2 * k->cap : 64;
        struct kept_key *grown = calloc(cap, sizeof(*grown));
        if (grown == NULL)
            return -ENOMEM;
        if (k->n)
            memcpy(grown, k->keys, k->n * sizeof(*grown));
        if (k->keys)
            OPENSSL_cleanse(k->keys, k->cap * sizeof(*k->keys));
        free(k->keys);
        k->keys = grown;
        k->cap = cap;
    }
    k->keys[k->n++] = *key;
    return 0;
}

/* The keys of `path` (a missing file holds none). */
static int kept_read(const char *path, struct kept *k, char *why, size_t n)
{
    FILE *f = fopen(path, "r");
    if (f == NULL) {
        if (errno == ENOENT)
            return 0;
        int err = -errno;
        snprintf(why, n, "%s: %s", path, strerror(errno));
        return err;
    }
    char line[1024];
    int err = 0;
    for (unsigned no = 1; err == 0 && fgets(line, sizeof(line), f) != NULL; no++) {
        struct kept_key key;
        if (field(line, "key_id", key.id, sizeof(key.id)) != 0 ||
            field(line, "merchant_id", key.merchant, sizeof(key.merchant)) != 0 ||
            field(line, "secret", key.secret, sizeof(key.secret)) != 0) {
            snprintf(why, n, "%s:%u: not a key printed by `ringpay keys add`", path, no);
            err = -EINVAL;
        } else {
            err = kept_push(k, &key);
        }
        OPENSSL_cleanse(&key, sizeof(key));
        OPENSSL_cleanse(line, sizeof(line));
    }
    fclose(f);
    return err;
}

/* Whether DIR/keys has `key` active for the same merchant with the merchant scope. */
static bool still_active(const struct keyset *set, const struct kept_key *key)
{
    const struct keyfile_key *k = keyfile_find(set, key->id, strlen(key->id));
    return k != NULL && k->status == KEYFILE_ACTIVE && k->scope == KEYFILE_SCOPE_MERCHANT &&
           strcmp(k->merchant_id, key->merchant) == 0;
}

/* Replaces path with the keys (mode 0600): path.tmp written, fsynced, renamed. */
static int kept_write(const char *path, const struct kept *k, char *why, size_t n)
{
    char tmp[4200];
    if ((size_t)snprintf(tmp, sizeof(tmp), "%s.tmp", path) >= sizeof(tmp)) {
        snprintf(why, n, "%s: path too long", path);
        return -ENAMETOOLONG;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    FILE *f = fd >= 0 && fchmod(fd, 0600) == 0 ? fdopen(fd, "w") : NULL;
    int err = 0;
    if (f == NULL)
        err = -errno;
    for (size_t i = 0; err == 0 && i < k->n; i++)
        if (fprintf(f,
                    "{\"key_id\":\"%s\",\"merchant_id\":\"%s\",\"scope\":\"merchant\","
                    "\"secret\":\"%s\"}\n",
                    k->keys[i].id, k->keys[i].merchant, k->keys[i].secret) < 0)
            err = -errno;
    if (err == 0 && (fflush(f) != 0 || fsync(fileno(f)) != 0))
        err = -errno;
    if (f != NULL && fclose(f) != 0 && err == 0)
        err = -errno;
    else if (f == NULL && fd >= 0)
        close(fd);
    if (err == 0 && rename(tmp, path) != 0)
        err = -errno;
    if (err != 0) {
        snprintf(why, n, "writing %s: %s", path, strerror(-err));
        unlink(tmp);
    }
    return err;
}

/* Adds a key to DIR/keys for each merchant index without one in k. */
static int add_missing(const char *dir, struct kept *k, unsigned merchants, unsigned *created,
                       long *last_created, char *why, size_t n)
{
    bool *have = calloc(merchants, sizeof(*have));
    if (have == NULL)
        return -ENOMEM;
    for (size_t i = 0; i < k->n; i++) {
        long m = merchant_index(k->keys[i].merchant, merchants);
        if (m >= 0)
            have[m] = true;
    }
    int err = 0;
    for (unsigned m = 0; err == 0 && m < merchants; m++) {
        if (have[m])
            continue;
        char merchant[24], e[400] = "";
        snprintf(merchant, sizeof(merchant), "m-%u", m);
        struct keyfile_new_key nk;
        err = keyfile_add(dir, KEYFILE_SCOPE_MERCHANT, merchant, (int64_t)time(NULL), &nk, e,
                          sizeof(e));
        if (err == -EDQUOT)
            snprintf(why, n,
                     "merchant %s already has its active keys in %s but none of them is in "
                     "the load's key file: revoke one (ringpay keys revoke) or pass the file "
                     "that holds them with --keys",
                     merchant, dir);
        else if (err != 0)
            snprintf(why, n, "%s", e);
        if (err != 0)
            break;
        struct kept_key key;
        memcpy(key.id, nk.key_id, sizeof(key.id));
        memcpy(key.merchant, nk.merchant_id, sizeof(key.merchant));
        memcpy(key.secret, nk.secret, sizeof(key.secret));
        OPENSSL_cleanse(&nk, sizeof(nk));
        err = kept_push(k, &key);
        OPENSSL_cleanse(&key, sizeof(key));
        (*created)++;
        *last_created = (long)m;
    }
    free(have);
    return err;
}

int load_keys_provision(const char *dir, const char *path, unsigned merchants, unsigned *created,
                        long *last_created, char *why, size_t why_bytes)
{
    *created = 0;
    *last_created = -1;
    struct keyset *set = NULL;
    char e[400] = "";
    int err = keyfile_load(dir, &set, e, sizeof(e));
    if (err == -ENOENT) { /* no data directory yet: keyfile_add makes it */
        set = NULL;
        err = 0;
    }
    if (err != 0) {
        snprintf(why, why_bytes, "%s", e);
        return err;
    }
    struct kept file = {0}, live = {0};
    err = kept_read(path, &file, why, why_bytes);
    for (size_t i = 0; err == 0 && i < file.n; i++)
        if (set != NULL && still_active(set, &file.keys[i]))
            err = kept_push(&live, &file.keys[i]);
    keyfile_free(set);
    if (err == 0)
        err = add_missing(dir, &live, merchants, created, last_created, why, why_bytes);
    /* Write what was added even after a later failure: those keys are in DIR/keys now. */
    if ((*created > 0 || live.n != file.n) && (err == 0 || *created > 0)) {
        int werr = kept_write(path, &live, why, why_bytes);
        err = err ? err : werr;
    }
    kept_free(&file);
    kept_free(&live);
    return err;
}

int load_keys_reload(const char *dir, long *pid, char *why, size_t why_bytes)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, DIRLOCK_FILE);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return errno == ENOENT
                   ? 0
                   : (snprintf(why, why_bytes, "%s: %s", path, strerror(errno)), -errno);
    if (flock(fd, LOCK_SH | LOCK_NB) == 0) { /* nobody holds it: no engine runs there */
        flock(fd, LOCK_UN);
        close(fd);
        return 0;
    }
    char text[32] = "";
    ssize_t got = errno == EWOULDBLOCK ? read(fd, text, sizeof(text) - 1) : -1;
    close(fd);
    char *end;
    long p = got > 0 ? strtol(text, &end, 10) : 0;
    if (p <= 0) {
        snprintf(why, why_bytes, "%s is held but names no process to reload", path);
        return -EINVAL;
    }
    if (kill((pid_t)p, SIGHUP) != 0) {
        int err = -errno;
        snprintf(why, why_bytes, "SIGHUP to the engine (pid %ld, %s): %s", p, path,
                 strerror(errno));
        return err;
    }
    *pid = p;
    return 1;
}
