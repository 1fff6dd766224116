/*
 * Signing for `ringpay load` (see signer.h).
 */
#include "tools/load/signer.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/clock.h"
#include "engine/limits.h"
#include "engine/sign.h"

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
