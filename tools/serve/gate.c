/*
 * The signing gate (see gate.h).
 *
 * Memory ordering: gate_reload stores the new set (release), then the new epoch
 * (release). A reactor loads the epoch (acquire) at the start of a turn and the set
 * (acquire) for each request of that turn; if it recorded epoch E, every set it loads
 * afterwards was published no earlier than E, so a set retired at E is unreachable to it
 * from its next turn on.
 */
#include "tools/serve/gate.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/assert.h"
#include "engine/limits.h"
#include "engine/sign.h"
#include "store/keyfile.h"

struct retired {
    struct keyset *set;
    uint64_t epoch; /* freed once every reactor has seen at least this */
};

/* One reactor's last seen epoch, on its own cache line. */
struct seen {
    _Alignas(64) uint64_t epoch;
};

struct gate {
    bool enabled;
    bool admin_only; /* settle: every route needs an admin key */
    unsigned cores;
    struct keyset *current; /* atomic pointer: __atomic_load_n / __atomic_store_n */
    uint64_t epoch;         /* atomic */
    struct seen seen[CORES_MAX];
    struct retired retired[KEYS_RELOADS_PENDING_MAX];
    unsigned nretired; /* main thread only */
    char data_dir[4096];
};

int gate_create(struct gate **out, const char *data_dir, bool enabled, unsigned cores, char *why,
                size_t why_bytes)
{
    ASSERT(cores >= 1 && cores <= CORES_MAX);
    struct gate *g = aligned_alloc(64, sizeof(*g));
    if (g == NULL)
        return -ENOMEM;
    memset(g, 0, sizeof(*g));
    g->enabled = enabled;
    g->cores = cores;
    if (snprintf(g->data_dir, sizeof(g->data_dir), "%s", data_dir) >= (int)sizeof(g->data_dir)) {
        free(g);
        snprintf(why, why_bytes, "data directory path too long");
        return -ENAMETOOLONG;
    }
    int err = keyfile_load(data_dir, &g->current, why, why_bytes);
    if (err) {
        free(g);
        return err;
    }
    *out = g;
    return 0;
}

void gate_destroy(struct gate *g)
{
    if (g == NULL)
        return;
    for (unsigned i = 0; i < g->nretired; i++)
        keyfile_free(g->retired[i].set);
    keyfile_free(g->current);
    free(g);
}

void gate_set_admin_only(struct gate *g)
{
    g->admin_only = true;
}

bool gate_enabled(const struct gate *g)
{
    return g->enabled;
}

size_t gate_key_count(const struct gate *g)
{
    return keyfile_count(__atomic_load_n(&g->current, __ATOMIC_ACQUIRE));
}

void gate_collect(struct gate *g)
{
    uint64_t oldest = UINT64_MAX;
    for (unsigned c = 0; c < g->cores; c++) {
        uint64_t e = __atomic_load_n(&g->seen[c].epoch, __ATOMIC_ACQUIRE);
        if (e < oldest)
            oldest = e;
    }
    unsigned kept = 0;
    for (unsigned i = 0; i < g->nretired; i++) {
        if (g->retired[i].epoch <= oldest)
            keyfile_free(g->retired[i].set);
        else
            g->retired[kept++] = g->retired[i];
    }
    g->nretired = kept;
}

int gate_reload(struct gate *g, char *why, size_t why_bytes)
{
    gate_collect(g);
    if (g->nretired == KEYS_RELOADS_PENDING_MAX) {
        snprintf(why, why_bytes, "too many key reloads at once; the keys in force stay");
        return -EBUSY;
    }
    struct keyset *next;
    int err = keyfile_load(g->data_dir, &next, why, why_bytes);
    if (err)
        return err;
    struct keyset *old = __atomic_exchange_n(&g->current, next, __ATOMIC_ACQ_REL);
    uint64_t epoch = __atomic_load_n(&g->epoch, __ATOMIC_RELAXED) + 1;
    __atomic_store_n(&g->epoch, epoch, __ATOMIC_RELEASE);
    g->retired[g->nretired++] = (struct retired){.set = old, .epoch = epoch};
    return 0;
}

void gate_quiesce(struct gate *g, unsigned core)
{
    ASSERT(core < g->cores);
    __atomic_store_n(&g->seen[core].epoch, __atomic_load_n(&g->epoch, __ATOMIC_ACQUIRE),
                     __ATOMIC_RELEASE);
}

/* The one value of header `name`; false when it is absent or sent more than once. */
static bool one_header(const struct reactor_request *rq, const char *name, const char **v,
                       size_t *len)
{
    if (http_header_count(rq->http, rq->buf, name) != 1)
        return false;
    const struct http_header *h = http_header_find(rq->http, rq->buf, name);
    *v = rq->buf + h->value.off;
    *len = h->value.len;
    return true;
}

static int refuse(int status, const char *text, const char **message)
{
    *message = text;
    return status;
}

int gate_check_parts(struct gate *g, const struct gate_parts *gp, int64_t now_s,
                     struct gate_pass *pass, const char **message)
{
    memset(pass, 0, sizeof(*pass));
    if (!g->enabled)
        return 0;
    static const char unauthenticated[] = "the request is not signed by a valid key";
    const struct keyset *set = __atomic_load_n(&g->current, __ATOMIC_ACQUIRE);
    const struct sign_key *key = keyfile_verify_key(set, gp->key_id, gp->key_id_len);
    if (sign_verify_hashed(key, &gp->sr, gp->body_hex, gp->signature, gp->signature_len, now_s) !=
        SIGN_OK)
        return refuse(401, unauthenticated, message);
    const struct keyfile_key *k = keyfile_find(set, gp->key_id, gp->key_id_len);
    ASSERT(k != NULL && k->status == KEYFILE_ACTIVE); /* verify_key found it active */
    if (g->admin_only) {
        if (k->scope != KEYFILE_SCOPE_ADMIN)
            return refuse(403, "the back office needs an admin key", message);
        pass->admin = true;
        return 0;
    }
    if (k->scope == KEYFILE_SCOPE_READ && !gp->reads)
        return refuse(403, "this key may only read", message);
    if (k->scope == KEYFILE_SCOPE_ADMIN) {
        if (!gp->reads)
            return refuse(403, "an admin key may only read the engine", message);
        pass->admin = true;
        return 0;
    }
    pass->merchant = k->merchant_id;
    pass->merchant_len = k->merchant_id_len;
    return 0;
}

bool gate_parts_of(const struct reactor_request *rq, struct gate_parts *gp)
{
    memset(gp, 0, sizeof(*gp));
    const struct http_request *h = rq->http;
    const char *key_id, *ts, *sig;
    size_t key_len, ts_len, sig_len;
    if (!one_header(rq, "x-ringpay-key", &key_id, &key_len) ||
        !one_header(rq, "x-ringpay-timestamp", &ts, &ts_len) ||
        !one_header(rq, "x-ringpay-signature", &sig, &sig_len))
        return false;
    const struct http_header *ih = http_header_find(h, rq->buf, "idempotency-key");
    gp->key_id = key_id;
    gp->key_id_len = key_len;
    gp->signature = sig;
    gp->signature_len = sig_len;
    gp->reads = h->method == HTTP_GET || h->method == HTTP_HEAD;
    gp->sr = (struct sign_request){
        .timestamp = ts,
        .timestamp_len = ts_len,
        .method = rq->buf + h->method_token.off,
        .method_len = h->method_token.len,
        .target = rq->buf + h->target.off,
        .target_len = h->target.len,
        .idempotency_key = ih ? rq->buf + ih->value.off : NULL,
        .idempotency_key_len = ih ? ih->value.len : 0,
        .body = h->body.len ? rq->buf + h->body.off : NULL,
        .body_len = h->body.len,
    };
    return true;
}

int gate_check(struct gate *g, const struct reactor_request *rq, int64_t now_s,
               struct gate_pass *pass, const char **message)
{
    memset(pass, 0, sizeof(*pass));
    if (!g->enabled)
        return 0;
    struct gate_parts gp;
    if (!gate_parts_of(rq, &gp))
        return refuse(401, "the request is not signed by a valid key", message);
    return gate_check_parts(g, &gp, now_s, pass, message);
}
