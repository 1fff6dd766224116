/*
 * Bank statement uploads: spool, verify, classify (see upload.h).
 */
#define _GNU_SOURCE
#include "tools/settle/upload.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/assert.h"
#include "engine/clock.h"
#include "engine/limits.h"
#include "engine/sign.h"
#include "net/log.h"

/* The signed parts of an upload, copied when its head arrived. */
struct upload {
    struct settle_uploads *pool;
    bool used;
    bool auth;
    struct reactor_ref ref;
    int fd;
    int error;                 /* first spool error, sticky */
    uint64_t length, received; /* length: Content-Length, or a chunked body's bound */
    struct sign_sha256 hash;
    char request_id[REQUEST_ID_MAX_BYTES + 1];
    char key_id[KEY_ID_BYTES + 1];
    size_t key_id_len;
    char timestamp[AUTH_TIMESTAMP_MAX_DIGITS + 1];
    size_t timestamp_len;
    char signature[AUTH_SIGNATURE_BYTES + 1];
    size_t signature_len;
    char method[16];
    size_t method_len;
    char target[HTTP_LINE_MAX_BYTES];
    size_t target_len;
    char idem[IDEMPOTENCY_KEY_MAX_BYTES + 1];
    size_t idem_len;
    char body_hex[SIGN_HEX_BYTES]; /* set by upload_verify */
    bool hashed;
};

struct settle_uploads {
    char dir[4096];
    struct upload slots[SETTLE_UPLOADS_MAX];
    char chunk[SETTLE_UPLOAD_CHUNK_BYTES]; /* one classification at a time: shared */
};

int uploads_create(struct settle_uploads **out, const char *dir)
{
    struct settle_uploads *u = calloc(1, sizeof(*u));
    if (u == NULL)
        return -ENOMEM;
    if (snprintf(u->dir, sizeof(u->dir), "%s", dir) >= (int)sizeof(u->dir)) {
        free(u);
        return -ENAMETOOLONG;
    }
    for (size_t i = 0; i < SETTLE_UPLOADS_MAX; i++)
        u->slots[i].fd = -1;
    *out = u;
    return 0;
}

void uploads_destroy(struct settle_uploads *u)
{
    if (u == NULL)
        return;
    for (size_t i = 0; i < SETTLE_UPLOADS_MAX; i++)
        if (u->slots[i].used)
            upload_end(&u->slots[i]);
    free(u);
}

unsigned uploads_active(const struct settle_uploads *u)
{
    unsigned n = 0;
    for (size_t i = 0; i < SETTLE_UPLOADS_MAX; i++)
        n += u->slots[i].used;
    return n;
}

/* An unnamed file in dir: O_TMPFILE, or a named one unlinked at once where the file
 * system lacks it. */
static int spool_open(const char *dir)
{
    int fd = open(dir, O_TMPFILE | O_RDWR | O_CLOEXEC, 0600);
    if (fd >= 0)
        return fd;
    if (errno != EOPNOTSUPP && errno != EISDIR && errno != EINVAL)
        return -errno;
    char path[4200];
    snprintf(path, sizeof(path), "%s/upload-XXXXXX", dir);
    fd = mkostemp(path, O_CLOEXEC);
    if (fd < 0)
        return -errno;
    unlink(path);
    return fd;
}

static bool copy_part(char *dst, size_t cap, size_t *dst_len, const char *src, size_t len)
{
    if (len >= cap)
        return false;
    if (len)
        memcpy(dst, src, len);
    dst[len] = '\0';
    *dst_len = len;
    return true;
}

static bool copy_parts(struct upload *up, const struct gate_parts *gp)
{
    const struct sign_request *sr = &gp->sr;
    return copy_part(up->key_id, sizeof(up->key_id), &up->key_id_len, gp->key_id, gp->key_id_len) &&
           copy_part(up->signature, sizeof(up->signature), &up->signature_len, gp->signature,
                     gp->signature_len) &&
           copy_part(up->timestamp, sizeof(up->timestamp), &up->timestamp_len, sr->timestamp,
                     sr->timestamp_len) &&
           copy_part(up->method, sizeof(up->method), &up->method_len, sr->method, sr->method_len) &&
           copy_part(up->target, sizeof(up->target), &up->target_len, sr->target, sr->target_len) &&
           copy_part(up->idem, sizeof(up->idem), &up->idem_len, sr->idempotency_key,
                     sr->idempotency_key_len);
}

int upload_begin(struct settle_uploads *u, struct reactor_ref ref, const char *request_id,
                 const struct gate_parts *gp, uint64_t length, struct upload **out)
{
    struct upload *up = NULL;
    for (size_t i = 0; i < SETTLE_UPLOADS_MAX && up == NULL; i++)
        if (!u->slots[i].used)
            up = &u->slots[i];
    if (up == NULL)
        return -EBUSY;
    memset(up, 0, sizeof(*up));
    up->pool = u;
    up->fd = -1;
    up->auth = gp != NULL;
    /* A part too long to copy could never verify: refuse it before spooling anything. */
    if (gp != NULL && !copy_parts(up, gp))
        return -ENAMETOOLONG;
    int fd = spool_open(u->dir);
    if (fd < 0)
        return fd;
    up->used = true;
    up->fd = fd;
    up->ref = ref;
    up->length = length;
    snprintf(up->request_id, sizeof(up->request_id), "%s", request_id);
    sign_sha256_init(&up->hash);
    *out = up;
    return 0;
}

struct upload *upload_find(struct settle_uploads *u, struct reactor_ref ref)
{
    for (size_t i = 0; i < SETTLE_UPLOADS_MAX; i++) {
        struct upload *up = &u->slots[i];
        if (up->used && up->ref.conn == ref.conn && up->ref.gen == ref.gen &&
            up->ref.seq == ref.seq)
            return up;
    }
    return NULL;
}

const char *upload_request_id(const struct upload *up)
{
    return up->request_id;
}

int upload_body(struct upload *up, const char *data, size_t len)
{
    ASSERT(up->used);
    if (up->error)
        return up->error;
    if (len > up->length - up->received)
        return up->error = -EFBIG; /* a chunked body past its bound */
    sign_sha256_update(&up->hash, data, len);
    up->received += len;
    while (len > 0) {
        ssize_t n = write(up->fd, data, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            up->error = n < 0 ? -errno : -EIO;
            return up->error;
        }
        data += n;
        len -= (size_t)n;
    }
    return 0;
}

int upload_verify(struct upload *up, struct gate *g, int64_t now_s, struct gate_pass *pass,
                  const char **message)
{
    ASSERT(up->used && up->received <= up->length);
    char hex[SIGN_HEX_BYTES];
    sign_sha256_final_hex(&up->hash, hex);
    memcpy(up->body_hex, hex, SIGN_HEX_BYTES);
    up->hashed = true;
    if (!up->auth)
        return gate_check_parts(g, &(struct gate_parts){0}, now_s, pass, message);
    struct gate_parts gp = {
        .key_id = up->key_id,
        .key_id_len = up->key_id_len,
        .signature = up->signature,
        .signature_len = up->signature_len,
        .reads = false,
        .sr =
            {
                .timestamp = up->timestamp,
                .timestamp_len = up->timestamp_len,
                .method = up->method,
                .method_len = up->method_len,
                .target = up->target,
                .target_len = up->target_len,
                .idempotency_key = up->idem_len ? up->idem : NULL,
                .idempotency_key_len = up->idem_len,
            },
        .body_hex = hex,
    };
    return gate_check_parts(g, &gp, now_s, pass, message);
}

static void log_progress(const char *request_id, uint64_t lines, uint64_t bytes, uint64_t t0_ns)
{
    char l[24], b[24], ms[24];
    snprintf(l, sizeof(l), "%llu", (unsigned long long)lines);
    snprintf(b, sizeof(b), "%llu", (unsigned long long)bytes);
    snprintf(ms, sizeof(ms), "%llu", (unsigned long long)((clock_mono_ns() - t0_ns) / 1000000));
    log_write(LOG_INFO, "reconciliation progress", "lines", l, "bytes", b, "elapsed_ms", ms, NULL);
    log_write_str(LOG_DEBUG, "reconciliation progress of", "request_id", request_id, NULL);
}

/* Feeds chunks through r, with progress lines; returns what settle_recon_feed did. */
struct feeder {
    struct settle_recon *r;
    const char *request_id;
    uint64_t bytes, next_progress, t0_ns;
    uint64_t logged; /* lines of the last progress line */
};

static int feed(struct feeder *f, const char *data, size_t len)
{
    int rc = settle_recon_feed(f->r, data, len);
    f->bytes += len;
    uint64_t lines = settle_recon_lines(f->r);
    if (rc == 0 && lines >= f->next_progress) {
        log_progress(f->request_id, lines, f->bytes, f->t0_ns);
        f->logged = lines;
        while (f->next_progress <= lines)
            f->next_progress += SETTLE_RECON_PROGRESS_LINES;
    }
    return rc;
}

static const char bad_body[] = "the body is empty or its header row is not exactly " RECON_HEADER;

/* The end of a classification: the summary, or the error and its reason; idem's record
 * (may be NULL) is written with the file's last transaction. */
static int finish(struct settle_recon *r, int rc, struct recon_summary *out, const char **why,
                  const struct settle_idem_put *idem)
{
    if (rc == -EPROTO) {
        *why = settle_recon_error(r) ? settle_recon_error(r) : bad_body;
        settle_recon_abort(r);
        return rc;
    }
    if (rc != 0) {
        *why = "the statement could not be stored";
        settle_recon_abort(r);
        return rc;
    }
    rc = settle_recon_finish_idem(r, out, idem);
    if (rc == -EPROTO)
        *why = bad_body;
    else if (rc != 0)
        *why = "the statement could not be stored";
    return rc;
}

int upload_classify(struct upload *up, struct settle_store *s, int64_t now_ms,
                    struct recon_summary *out, const char **why)
{
    return upload_classify_idem(up, s, now_ms, NULL, out, why);
}

int upload_classify_idem(struct upload *up, struct settle_store *s, int64_t now_ms,
                         const struct settle_idem_put *idem, struct recon_summary *out,
                         const char **why)
{
    char *chunk = up->pool->chunk;
    struct settle_recon *r;
    int rc = settle_recon_begin(s, now_ms, &r);
    if (rc != 0) {
        *why = "the store cannot take a statement now";
        return rc;
    }
    struct feeder f = {.r = r,
                       .request_id = up->request_id,
                       .next_progress = SETTLE_RECON_PROGRESS_LINES,
                       .t0_ns = clock_mono_ns()};
    if (lseek(up->fd, 0, SEEK_SET) != 0)
        rc = -errno;
    while (rc == 0) {
        ssize_t n = read(up->fd, chunk, SETTLE_UPLOAD_CHUNK_BYTES);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            rc = -errno;
        if (n <= 0)
            break;
        rc = feed(&f, chunk, (size_t)n);
    }
    if (rc == 0 && settle_recon_lines(r) != f.logged) /* the last line, once */
        log_progress(up->request_id, settle_recon_lines(r), f.bytes, f.t0_ns);
    return finish(r, rc, out, why, idem);
}

int upload_classify_memory(struct settle_store *s, const char *body, size_t len, int64_t now_ms,
                           const char *request_id, struct recon_summary *out, const char **why)
{
    return upload_classify_memory_idem(s, body, len, now_ms, request_id, NULL, out, why);
}

int upload_classify_memory_idem(struct settle_store *s, const char *body, size_t len,
                                int64_t now_ms, const char *request_id,
                                const struct settle_idem_put *idem, struct recon_summary *out,
                                const char **why)
{
    struct settle_recon *r;
    int rc = settle_recon_begin(s, now_ms, &r);
    if (rc != 0) {
        *why = "the store cannot take a statement now";
        return rc;
    }
    struct feeder f = {.r = r,
                       .request_id = request_id,
                       .next_progress = SETTLE_RECON_PROGRESS_LINES,
                       .t0_ns = clock_mono_ns()};
    rc = len ? feed(&f, body, len) : 0;
    if (rc == 0 && settle_recon_lines(r) != f.logged)
        log_progress(request_id, settle_recon_lines(r), f.bytes, f.t0_ns);
    return finish(r, rc, out, why, idem);
}

void upload_set_idempotency_key(struct upload *up, const char *key, size_t len)
{
    ASSERT(up->used && len >= 1 && len <= IDEMPOTENCY_KEY_MAX_BYTES);
    memcpy(up->idem, key, len);
    up->idem[len] = '\0';
    up->idem_len = len;
}

const char *upload_idempotency_key(const struct upload *up, size_t *len)
{
    *len = up->idem_len;
    return up->idem_len ? up->idem : NULL;
}

const char *upload_body_hex(const struct upload *up)
{
    ASSERT(up->used && up->hashed);
    return up->body_hex;
}

void upload_end(struct upload *up)
{
    if (!up->used)
        return;
    if (up->fd >= 0)
        close(up->fd);
    up->fd = -1;
    up->used = false;
}
