/*
 * The API key file and the key set (see keyfile.h for the format and the rules).
 *
 * Reading parses the whole file into records (struct rec, which hold the secret text)
 * with every rule checked; loading then turns records into a key set (prepared HMAC
 * keys, no secret text) and wipes the records. Changing (add, revoke) edits the records
 * under the lock, renders them, parses the rendering back by the same rules, and
 * replaces the file atomically. Every buffer that held secret text is wiped before it
 * is freed.
 */
#define _GNU_SOURCE
#include "store/keyfile.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "engine/assert.h"

#define RP_STR_(x)      #x
#define RP_STR(x)       RP_STR_(x)
#define PATH_BYTES      4096
#define SLOT_EMPTY      UINT32_MAX
#define HEADER_LEN      (sizeof(KEYFILE_HEADER) - 1)
#define STATUS_NAME_MAX 7 /* "revoked" */

_Static_assert(KEYFILE_KEYS_MAX < SLOT_EMPTY / 2, "indexes fit the slots");

/* One key line as read or about to be written, secret included. */
struct rec {
    char key_id[KEY_ID_BYTES + 1];
    char merchant_id[MERCHANT_ID_MAX_BYTES + 1];
    char secret[KEY_SECRET_BYTES + 1];
    int64_t created_s;
    enum keyfile_scope scope;
    enum keyfile_status status;
};

/* The records of one file. */
struct doc {
    struct rec *recs; /* cap entries */
    size_t count, cap;
};

struct keyset {
    size_t count;
    size_t slot_mask; /* slots - 1, a power of two minus one */
    uint32_t *slots;  /* key index, or SLOT_EMPTY */
    struct keyfile_key keys[];
};

static struct keyfile_fault fault;

static void set_err(char *err, size_t err_size, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void set_err(char *err, size_t err_size, const char *fmt, ...)
{
    if (err == NULL || err_size == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, err_size, fmt, ap);
    va_end(ap);
}

static int join(char *buf, const char *dir, const char *name)
{
    int n = snprintf(buf, PATH_BYTES, "%s/%s", dir, name);
    return n < 0 || n >= PATH_BYTES ? -ENAMETOOLONG : 0;
}

/* ---- names and fields ---------------------------------------------------------------- */

static const char *const scope_names[] = {[KEYFILE_SCOPE_MERCHANT] = "merchant",
                                          [KEYFILE_SCOPE_READ] = "read",
                                          [KEYFILE_SCOPE_ADMIN] = "admin"};
static const char *const status_names[] = {
    [KEYFILE_ACTIVE] = "active", [KEYFILE_REVOKED] = "revoked"};

int keyfile_scope_parse(const char *name)
{
    for (int s = KEYFILE_SCOPE_MERCHANT; s <= KEYFILE_SCOPE_ADMIN; s++)
        if (strcmp(name, scope_names[s]) == 0)
            return s;
    return -1;
}

const char *keyfile_scope_name(enum keyfile_scope scope)
{
    ASSERT(scope >= KEYFILE_SCOPE_MERCHANT && scope <= KEYFILE_SCOPE_ADMIN);
    return scope_names[scope];
}

const char *keyfile_status_name(enum keyfile_status status)
{
    ASSERT(status == KEYFILE_ACTIVE || status == KEYFILE_REVOKED);
    return status_names[status];
}

bool keyfile_merchant_id_valid(const char *s, size_t len)
{
    if (len == 0 || len > MERCHANT_ID_MAX_BYTES)
        return false;
    for (size_t i = 0; i < len; i++) {
        char c = s[i];
        if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
              c == '_' || c == '-'))
            return false;
    }
    return true;
}

/* prefix followed by exactly `digits` lower-case hex digits. */
static bool prefixed_hex(const char *s, size_t len, const char *prefix, size_t digits)
{
    size_t pl = strlen(prefix);
    if (len != pl + digits || memcmp(s, prefix, pl) != 0)
        return false;
    for (size_t i = pl; i < len; i++)
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f')))
            return false;
    return true;
}

bool keyfile_key_id_valid(const char *s, size_t len)
{
    return prefixed_hex(s, len, KEY_ID_PREFIX, KEY_ID_HEX_DIGITS);
}

static bool secret_valid(const char *s, size_t len)
{
    return prefixed_hex(s, len, KEY_SECRET_PREFIX, 2 * KEY_SECRET_RANDOM_BYTES);
}

static int name_index(const char *s, size_t len, const char *const *names, int lo, int hi)
{
    for (int i = lo; i <= hi; i++)
        if (strlen(names[i]) == len && memcmp(s, names[i], len) == 0)
            return i;
    return -1;
}

/* ---- the index by key id --------------------------------------------------------------- */

static uint64_t hash_id(const char *id, size_t len)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (size_t i = 0; i < len; i++)
        h = (h ^ (unsigned char)id[i]) * 0x100000001b3ull;
    return h;
}

/* Slots for n keys: a power of two at least twice n, so probes stay short. */
static size_t slot_count(size_t n)
{
    size_t s = 8;
    while (s < 2 * n)
        s *= 2;
    return s;
}

/* Index of ids (at base + i * stride, each KEY_ID_BYTES) into slots. Returns 0, or
 * the position of the first duplicate plus one. */
static size_t index_build(uint32_t *slots, size_t nslots, const char *base, size_t stride, size_t n)
{
    ASSERT(nslots >= 2 * n && (nslots & (nslots - 1)) == 0);
    for (size_t s = 0; s < nslots; s++)
        slots[s] = SLOT_EMPTY;
    for (size_t i = 0; i < n; i++) {
        const char *id = base + i * stride;
        size_t s = hash_id(id, KEY_ID_BYTES) & (nslots - 1);
        for (; slots[s] != SLOT_EMPTY; s = (s + 1) & (nslots - 1))
            if (memcmp(base + slots[s] * stride, id, KEY_ID_BYTES) == 0)
                return i + 1;
        slots[s] = (uint32_t)i;
    }
    return 0;
}

/* ---- parsing ------------------------------------------------------------------------ */

/* Splits line[0..len) at single spaces into at most max fields. Returns the count, or
 * -1 for an empty field (two spaces, or a space at either end) or too many fields. */
static int split(const char *line, size_t len, const char **f, size_t *fl, int max)
{
    int n = 0;
    size_t start = 0;
    for (size_t i = 0; i <= len; i++) {
        if (i < len && line[i] != ' ')
            continue;
        if (i == start || n == max)
            return -1;
        f[n] = line + start;
        fl[n++] = i - start;
        start = i + 1;
    }
    return n;
}

/* Parses one key line into r; returns NULL or what is wrong. */
static const char *parse_line(const char *line, size_t len, struct rec *r)
{
    const char *f[6];
    size_t fl[6];
    int n = split(line, len, f, fl, 6);
    if (n < 5)
        return "expected KEY_ID STATUS SCOPE CREATED SECRET [MERCHANT_ID]";
    if (!keyfile_key_id_valid(f[0], fl[0]))
        return "bad key id";
    int status = name_index(f[1], fl[1], status_names, KEYFILE_ACTIVE, KEYFILE_REVOKED);
    if (status < 0)
        return "bad status (active or revoked)";
    int scope = name_index(f[2], fl[2], scope_names, KEYFILE_SCOPE_MERCHANT, KEYFILE_SCOPE_ADMIN);
    if (scope < 0)
        return "bad scope (merchant, read or admin)";
    if (sign_timestamp_parse(f[3], fl[3], &r->created_s) != 0)
        return "bad created time";
    if (!secret_valid(f[4], fl[4]))
        return "bad secret";
    if (scope == KEYFILE_SCOPE_ADMIN && n != 5)
        return "an admin key has no merchant id";
    if (scope != KEYFILE_SCOPE_ADMIN && (n != 6 || !keyfile_merchant_id_valid(f[5], fl[5])))
        return "a merchant or read key needs a merchant id of 1-64 [A-Za-z0-9_-]";
    memcpy(r->key_id, f[0], fl[0]);
    r->key_id[fl[0]] = '\0';
    memcpy(r->secret, f[4], fl[4]);
    r->secret[fl[4]] = '\0';
    size_t ml = n == 6 ? fl[5] : 0;
    if (ml > 0)
        memcpy(r->merchant_id, f[5], ml);
    r->merchant_id[ml] = '\0';
    r->status = (enum keyfile_status)status;
    r->scope = (enum keyfile_scope)scope;
    return NULL;
}

static void doc_free(struct doc *d)
{
    if (d->recs != NULL) {
        OPENSSL_cleanse(d->recs, d->cap * sizeof(*d->recs));
        free(d->recs);
    }
    *d = (struct doc){0};
}

/* The group a key's active count is kept in: its merchant, or "" for admin keys. */
static int group_cmp(const void *a, const void *b)
{
    const struct rec *x = *(const struct rec *const *)a, *y = *(const struct rec *const *)b;
    return strcmp(x->merchant_id, y->merchant_id);
}

/* The first group with more than the allowed active keys, or NULL. Needs scratch for
 * d->count pointers. */
static const struct rec *over_active_limit(const struct doc *d, const struct rec **scratch)
{
    size_t n = 0;
    for (size_t i = 0; i < d->count; i++)
        if (d->recs[i].status == KEYFILE_ACTIVE)
            scratch[n++] = &d->recs[i];
    if (n > 1)
        qsort(scratch, n, sizeof(*scratch), group_cmp);
    for (size_t i = 0, run = 1; i < n; i++, run++) {
        if (i > 0 && group_cmp(&scratch[i - 1], &scratch[i]) != 0)
            run = 1;
        if (run > KEYS_ACTIVE_PER_MERCHANT_MAX)
            return scratch[i];
    }
    return NULL;
}

/* Checks the rules across lines: unique ids, active keys per group. */
static int check_doc(const struct doc *d, const char *path, char *err, size_t err_size)
{
    size_t nslots = slot_count(d->count);
    uint32_t *slots = malloc(nslots * sizeof(*slots));
    const struct rec **scratch = malloc((d->count ? d->count : 1) * sizeof(*scratch));
    int rc = 0;
    if (slots == NULL || scratch == NULL) {
        set_err(err, err_size, "out of memory reading %s", path);
        rc = -ENOMEM;
        goto out_free;
    }
    size_t dup = index_build(slots, nslots, d->recs[0].key_id, sizeof(struct rec), d->count);
    if (dup) {
        set_err(err, err_size, "%s:%zu: key id %s appears twice", path, dup + 1,
                d->recs[dup - 1].key_id);
        rc = -EINVAL;
        goto out_free;
    }
    const struct rec *over = over_active_limit(d, scratch);
    if (over) {
        if (over->scope == KEYFILE_SCOPE_ADMIN)
            set_err(err, err_size, "%s: more than %d active admin keys", path,
                    KEYS_ACTIVE_PER_MERCHANT_MAX);
        else
            set_err(err, err_size, "%s: more than %d active keys for merchant %s", path,
                    KEYS_ACTIVE_PER_MERCHANT_MAX, over->merchant_id);
        rc = -EINVAL;
    }
out_free:
    free(slots);
    free(scratch);
    return rc;
}

/* Parses a whole file's text into d (allocated with room for one more key). */
static int parse_doc(const char *text, size_t len, const char *path, struct doc *d, char *err,
                     size_t err_size)
{
    *d = (struct doc){0};
    if (len < HEADER_LEN || memcmp(text, KEYFILE_HEADER, HEADER_LEN) != 0) {
        set_err(err, err_size, "%s is not a ringpay key file (format 1)", path);
        return -EINVAL;
    }
    if (memchr(text, '\0', len) != NULL) {
        set_err(err, err_size, "%s holds a NUL byte", path);
        return -EINVAL;
    }
    size_t lines = 0;
    for (size_t i = HEADER_LEN; i < len; i++)
        lines += text[i] == '\n';
    d->cap = lines + 1;
    d->recs = calloc(d->cap, sizeof(*d->recs));
    if (d->recs == NULL) {
        set_err(err, err_size, "out of memory reading %s", path);
        return -ENOMEM;
    }
    size_t lineno = 1;
    for (size_t off = HEADER_LEN; off < len;) {
        lineno++;
        const char *nl = memchr(text + off, '\n', len - off);
        size_t line_len = nl ? (size_t)(nl - (text + off)) : len - off;
        const char *why = NULL;
        if (nl == NULL)
            why = "truncated: the last line has no newline";
        else if (line_len + 1 > KEYFILE_LINE_MAX_BYTES)
            why = "line too long";
        else if (d->count == KEYFILE_KEYS_MAX)
            why = "more keys than KEYFILE_KEYS_MAX (" RP_STR(KEYFILE_KEYS_MAX) ")";
        else
            why = parse_line(text + off, line_len, &d->recs[d->count]);
        if (why) {
            set_err(err, err_size, "%s:%zu: %s", path, lineno, why);
            doc_free(d);
            return -EINVAL;
        }
        d->count++;
        off += line_len + 1;
    }
    int rc = d->count ? check_doc(d, path, err, err_size) : 0;
    if (rc)
        doc_free(d);
    return rc;
}

/* ---- reading the file ---------------------------------------------------------------- */

/* Reads DIR/keys into a new buffer (*text, *len; wiped and freed by the caller).
 * A missing file is 0 with *text NULL. */
static int read_file(const char *path, char **text, size_t *len, char *err, size_t err_size)
{
    *text = NULL;
    *len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            return 0;
        int rc = -errno;
        set_err(err, err_size, "cannot open %s: %s", path, strerror(-rc));
        return rc;
    }
    struct stat st;
    int rc = 0;
    if (fstat(fd, &st) != 0) {
        rc = -errno;
        set_err(err, err_size, "cannot stat %s: %s", path, strerror(-rc));
    } else if (!S_ISREG(st.st_mode)) {
        rc = -EINVAL;
        set_err(err, err_size, "%s is not a regular file", path);
    } else if (st.st_mode & 077) {
        rc = -EACCES;
        set_err(err, err_size,
                "%s is open to group or others (mode %04o); it holds secrets: chmod 600 it", path,
                (unsigned)(st.st_mode & 07777));
    } else if ((uint64_t)st.st_size > KEYFILE_MAX_BYTES) {
        rc = -EFBIG;
        set_err(err, err_size, "%s is larger than %zu bytes", path, (size_t)KEYFILE_MAX_BYTES);
    }
    if (rc)
        goto out_close;
    /* One byte more than the limit, to see a file that grew after fstat. */
    size_t cap = (size_t)st.st_size + 1, got = 0;
    char *buf = malloc(cap);
    if (buf == NULL) {
        rc = -ENOMEM;
        set_err(err, err_size, "out of memory reading %s", path);
        goto out_close;
    }
    for (;;) {
        ssize_t n = read(fd, buf + got, cap - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            rc = -errno;
            set_err(err, err_size, "cannot read %s: %s", path, strerror(-rc));
            break;
        }
        if (n == 0)
            break;
        got += (size_t)n;
        if (got == cap) {
            rc = -EAGAIN;
            set_err(err, err_size, "%s changed while being read", path);
            break;
        }
    }
    if (rc) {
        OPENSSL_cleanse(buf, cap);
        free(buf);
    } else {
        *text = buf;
        *len = got;
    }
out_close:
    close(fd);
    return rc;
}

/* Reads and parses DIR/keys into d. A missing file is an empty doc. */
static int load_doc(const char *dir, struct doc *d, char *path, char *err, size_t err_size)
{
    *d = (struct doc){0};
    if (join(path, dir, KEYFILE_NAME)) {
        set_err(err, err_size, "data directory path %s is too long", dir);
        return -ENAMETOOLONG;
    }
    struct stat st;
    if (stat(dir, &st) != 0) {
        int rc = -errno;
        set_err(err, err_size, "cannot open data directory %s: %s", dir, strerror(-rc));
        return rc;
    }
    if (!S_ISDIR(st.st_mode)) {
        set_err(err, err_size, "data directory %s is not a directory", dir);
        return -ENOTDIR;
    }
    char *text;
    size_t len;
    int rc = read_file(path, &text, &len, err, err_size);
    if (rc || text == NULL)
        return rc;
    rc = parse_doc(text, len, path, d, err, err_size);
    OPENSSL_cleanse(text, len);
    free(text);
    return rc;
}

/* ---- the key set --------------------------------------------------------------------- */

static struct keyset *set_build(const struct doc *d)
{
    size_t nslots = slot_count(d->count);
    size_t bytes =
        sizeof(struct keyset) + d->count * sizeof(struct keyfile_key) + nslots * sizeof(uint32_t);
    struct keyset *set = calloc(1, bytes);
    if (set == NULL)
        return NULL;
    set->count = d->count;
    set->slot_mask = nslots - 1;
    set->slots = (uint32_t *)(void *)&set->keys[d->count];
    for (size_t i = 0; i < d->count; i++) {
        const struct rec *r = &d->recs[i];
        struct keyfile_key *k = &set->keys[i];
        memcpy(k->key_id, r->key_id, sizeof(k->key_id));
        memcpy(k->merchant_id, r->merchant_id, sizeof(k->merchant_id));
        k->merchant_id_len = strlen(r->merchant_id);
        k->created_s = r->created_s;
        k->scope = r->scope;
        k->status = r->status;
        sign_key_init(&k->sign, r->secret, strlen(r->secret));
    }
    size_t dup = index_build(set->slots, nslots, set->keys[0].key_id, sizeof(struct keyfile_key),
                             set->count);
    ASSERT(dup == 0); /* parse_doc refused duplicates */
    return set;
}

int keyfile_load(const char *dir, struct keyset **out, char *err, size_t err_size)
{
    ASSERT(dir != NULL && out != NULL);
    *out = NULL;
    char path[PATH_BYTES];
    struct doc d;
    int rc = load_doc(dir, &d, path, err, err_size);
    if (rc)
        return rc;
    *out = set_build(&d);
    doc_free(&d);
    if (*out == NULL) {
        set_err(err, err_size, "out of memory loading %s", path);
        return -ENOMEM;
    }
    return 0;
}

void keyfile_free(struct keyset *set)
{
    if (set == NULL)
        return;
    for (size_t i = 0; i < set->count; i++)
        sign_key_wipe(&set->keys[i].sign);
    free(set);
}

size_t keyfile_count(const struct keyset *set)
{
    ASSERT(set != NULL);
    return set->count;
}

const struct keyfile_key *keyfile_at(const struct keyset *set, size_t i)
{
    ASSERT(set != NULL && i < set->count);
    return &set->keys[i];
}

const struct keyfile_key *keyfile_find(const struct keyset *set, const char *id, size_t len)
{
    ASSERT(set != NULL && (id != NULL || len == 0));
    if (len != KEY_ID_BYTES)
        return NULL;
    for (size_t s = hash_id(id, len) & set->slot_mask; set->slots[s] != SLOT_EMPTY;
         s = (s + 1) & set->slot_mask) {
        const struct keyfile_key *k = &set->keys[set->slots[s]];
        if (memcmp(k->key_id, id, KEY_ID_BYTES) == 0)
            return k;
    }
    return NULL;
}

const struct sign_key *keyfile_verify_key(const struct keyset *set, const char *id, size_t len)
{
    const struct keyfile_key *k = keyfile_find(set, id, len);
    return k != NULL && k->status == KEYFILE_ACTIVE ? &k->sign : NULL;
}

/* ---- writing ------------------------------------------------------------------------- */

void keyfile_fault_set(const struct keyfile_fault *f)
{
    fault = f ? *f : (struct keyfile_fault){0};
}

/* Whether the injected fault fires at this step; clears a one-time fault. */
static int fault_at(enum keyfile_fault_step step)
{
    if (fault.step != step || step == KEYFILE_FAULT_NONE)
        return 0;
    int e = fault.err > 0 ? fault.err : EIO;
    if (!fault.persistent)
        fault = (struct keyfile_fault){0};
    return e;
}

static int write_all(int fd, const char *buf, size_t len)
{
    int e = fault_at(KEYFILE_FAULT_WRITE);
    if (e) { /* a short write, then the error */
        ssize_t w = write(fd, buf, len / 2);
        (void)w;
        return -e;
    }
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

static int fsync_dir(const char *dir)
{
    int e = fault_at(KEYFILE_FAULT_FSYNC_DIR);
    if (e)
        return -e;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) ? -errno : 0;
    close(fd);
    return rc;
}

/* Writes text to DIR/keys.tmp (mode 0600) and fsyncs it. On error the temp file is
 * removed. */
static int write_tmp(const char *tmp, const char *text, size_t len)
{
    int e = fault_at(KEYFILE_FAULT_OPEN);
    if (e)
        return -e;
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0)
        return -errno;
    int rc = fchmod(fd, 0600) ? -errno : 0; /* whatever the umask */
    if (rc == 0)
        rc = write_all(fd, text, len);
    if (rc == 0 && (e = fault_at(KEYFILE_FAULT_FSYNC)) != 0)
        rc = -e;
    if (rc == 0 && fsync(fd) != 0)
        rc = -errno;
    if (close(fd) != 0 && rc == 0)
        rc = -errno;
    if (rc)
        unlink(tmp);
    return rc;
}

/* Replaces DIR/keys with text: temp file, fsync, rename, fsync of DIR. */
static int replace(const char *dir, const char *text, size_t len, char *err, size_t err_size)
{
    char tmp[PATH_BYTES], path[PATH_BYTES];
    if (join(tmp, dir, KEYFILE_TMP_NAME) || join(path, dir, KEYFILE_NAME)) {
        set_err(err, err_size, "data directory path %s is too long", dir);
        return -ENAMETOOLONG;
    }
    int rc = write_tmp(tmp, text, len);
    if (rc) {
        set_err(err, err_size, "cannot write %s: %s", tmp, strerror(-rc));
        return rc;
    }
    int e = fault_at(KEYFILE_FAULT_RENAME);
    if (e || rename(tmp, path) != 0) {
        rc = e ? -e : -errno;
        unlink(tmp);
        set_err(err, err_size, "cannot rename %s to %s: %s", tmp, path, strerror(-rc));
        return rc;
    }
    rc = fsync_dir(dir);
    if (rc)
        set_err(err, err_size, "cannot fsync %s after replacing %s: %s", dir, path, strerror(-rc));
    return rc;
}

/* Renders d as file text into a new buffer; the caller wipes and frees it. */
static char *render(const struct doc *d, size_t *len)
{
    size_t cap = HEADER_LEN + d->count * KEYFILE_LINE_MAX_BYTES + 1;
    char *buf = malloc(cap);
    if (buf == NULL)
        return NULL;
    size_t o = (size_t)snprintf(buf, cap, "%s", KEYFILE_HEADER);
    for (size_t i = 0; i < d->count; i++) {
        const struct rec *r = &d->recs[i];
        int n = snprintf(buf + o, cap - o, "%s %s %s %lld %s%s%s\n", r->key_id,
                         keyfile_status_name(r->status), keyfile_scope_name(r->scope),
                         (long long)r->created_s, r->secret, r->merchant_id[0] ? " " : "",
                         r->merchant_id);
        ASSERT(n > 0 && (size_t)n <= KEYFILE_LINE_MAX_BYTES);
        o += (size_t)n;
    }
    *len = o;
    return buf;
}

/* Renders d, checks the rendering by the reader's rules, and replaces the file. */
static int store_doc(const char *dir, const struct doc *d, char *err, size_t err_size)
{
    size_t len;
    char *text = render(d, &len);
    if (text == NULL) {
        set_err(err, err_size, "out of memory writing the key file");
        return -ENOMEM;
    }
    struct doc back;
    char why[256] = "";
    int rc = parse_doc(text, len, "rendered key file", &back, why, sizeof(why));
    ASSERT(rc == 0 || rc == -ENOMEM); /* we never write what we would refuse to read */
    if (rc == 0) {
        ASSERT(back.count == d->count);
        doc_free(&back);
        rc = replace(dir, text, len, err, err_size);
    } else {
        set_err(err, err_size, "out of memory writing the key file");
    }
    OPENSSL_cleanse(text, len);
    free(text);
    return rc;
}

/* Takes the writers' lock of DIR (fd into *lock_fd), waiting at most
 * KEYFILE_LOCK_WAIT_MS. Creates DIR when missing. */
static int lock_dir(const char *dir, int *lock_fd, char *err, size_t err_size)
{
    char path[PATH_BYTES];
    if (join(path, dir, KEYFILE_LOCK_NAME)) {
        set_err(err, err_size, "data directory path %s is too long", dir);
        return -ENAMETOOLONG;
    }
    if (mkdir(dir, 0700) != 0 && errno != EEXIST) {
        int rc = -errno;
        set_err(err, err_size, "cannot create data directory %s: %s", dir, strerror(-rc));
        return rc;
    }
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        int rc = -errno;
        set_err(err, err_size, "cannot open %s: %s", path, strerror(-rc));
        return rc;
    }
    for (int waited_ms = 0;; waited_ms += 10) {
        if (flock(fd, LOCK_EX | LOCK_NB) == 0)
            break;
        if ((errno != EWOULDBLOCK && errno != EINTR) || waited_ms >= KEYFILE_LOCK_WAIT_MS) {
            int rc = errno == EWOULDBLOCK ? -EWOULDBLOCK : -errno;
            set_err(err, err_size,
                    "another process holds %s (a ringpay keys command still running?)", path);
            close(fd);
            return rc;
        }
        struct timespec ts = {0, 10 * 1000 * 1000};
        nanosleep(&ts, NULL);
    }
    *lock_fd = fd;
    return 0;
}

static int random_hex(char *out, size_t random_bytes)
{
    unsigned char buf[KEY_SECRET_RANDOM_BYTES];
    ASSERT(random_bytes <= sizeof(buf));
    for (size_t got = 0; got < random_bytes;) {
        ssize_t n = getrandom(buf + got, random_bytes - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        got += (size_t)n;
    }
    static const char hex[] = "0123456789abcdef";
    for (size_t i = 0; i < random_bytes; i++) {
        out[2 * i] = hex[buf[i] >> 4];
        out[2 * i + 1] = hex[buf[i] & 15];
    }
    out[2 * random_bytes] = '\0';
    OPENSSL_cleanse(buf, sizeof(buf));
    return 0;
}

/* Fills r's id (unique in d) and secret from getrandom(2). */
static int new_identity(const struct doc *d, struct rec *r)
{
    for (;;) {
        memcpy(r->key_id, KEY_ID_PREFIX, 4);
        int rc = random_hex(r->key_id + 4, KEY_ID_HEX_DIGITS / 2);
        if (rc)
            return rc;
        bool taken = false;
        for (size_t i = 0; i < d->count && !taken; i++)
            taken = strcmp(d->recs[i].key_id, r->key_id) == 0;
        if (!taken)
            break;
    }
    memcpy(r->secret, KEY_SECRET_PREFIX, 4);
    return random_hex(r->secret + 4, KEY_SECRET_RANDOM_BYTES);
}

static size_t active_in_group(const struct doc *d, const char *merchant_id)
{
    size_t n = 0;
    for (size_t i = 0; i < d->count; i++)
        n +=
            d->recs[i].status == KEYFILE_ACTIVE && strcmp(d->recs[i].merchant_id, merchant_id) == 0;
    return n;
}

static int check_add_args(enum keyfile_scope scope, const char *merchant_id, char *err,
                          size_t err_size)
{
    if (scope == KEYFILE_SCOPE_ADMIN && merchant_id != NULL) {
        set_err(err, err_size, "an admin key belongs to no merchant: drop --merchant");
        return -EINVAL;
    }
    if (scope == KEYFILE_SCOPE_MERCHANT || scope == KEYFILE_SCOPE_READ) {
        if (merchant_id == NULL) {
            set_err(err, err_size, "a %s key needs --merchant ID", keyfile_scope_name(scope));
            return -EINVAL;
        }
        if (!keyfile_merchant_id_valid(merchant_id, strlen(merchant_id))) {
            set_err(err, err_size, "merchant id \"%.80s\" is not 1-64 of [A-Za-z0-9_-]",
                    merchant_id);
            return -EINVAL;
        }
        return 0;
    }
    if (scope != KEYFILE_SCOPE_ADMIN) {
        set_err(err, err_size, "unknown scope");
        return -EINVAL;
    }
    return 0;
}

/* Appends the new key to d (which has room for one more) after the limits. */
static int add_rec(struct doc *d, enum keyfile_scope scope, const char *merchant_id, int64_t now_s,
                   const char *path, char *err, size_t err_size)
{
    const char *group = merchant_id ? merchant_id : "";
    if (active_in_group(d, group) >= KEYS_ACTIVE_PER_MERCHANT_MAX) {
        if (scope == KEYFILE_SCOPE_ADMIN)
            set_err(err, err_size, "there are already %d active admin keys; revoke one first",
                    KEYS_ACTIVE_PER_MERCHANT_MAX);
        else
            set_err(err, err_size, "merchant %s already has %d active keys; revoke one first",
                    merchant_id, KEYS_ACTIVE_PER_MERCHANT_MAX);
        return -EDQUOT;
    }
    if (d->count >= KEYFILE_KEYS_MAX) {
        set_err(err, err_size, "%s already holds %d keys, the limit", path, KEYFILE_KEYS_MAX);
        return -ENOSPC;
    }
    ASSERT(d->count < d->cap);
    struct rec *r = &d->recs[d->count];
    *r = (struct rec){.created_s = now_s, .scope = scope, .status = KEYFILE_ACTIVE};
    snprintf(r->merchant_id, sizeof(r->merchant_id), "%s", group);
    int rc = new_identity(d, r);
    if (rc) {
        set_err(err, err_size, "getrandom failed: %s", strerror(-rc));
        return rc;
    }
    d->count++;
    return 0;
}

/* Loads DIR/keys for a change into d with room for one more key. */
static int load_for_change(const char *dir, struct doc *d, char *path, char *err, size_t err_size)
{
    int rc = load_doc(dir, d, path, err, err_size);
    if (rc)
        return rc;
    if (d->recs == NULL) { /* no file yet */
        d->recs = calloc(1, sizeof(*d->recs));
        d->cap = 1;
        if (d->recs == NULL) {
            set_err(err, err_size, "out of memory");
            return -ENOMEM;
        }
    }
    ASSERT(d->cap > d->count);
    return 0;
}

int keyfile_add(const char *dir, enum keyfile_scope scope, const char *merchant_id, int64_t now_s,
                struct keyfile_new_key *out, char *err, size_t err_size)
{
    ASSERT(dir != NULL && out != NULL);
    int rc = check_add_args(scope, merchant_id, err, err_size);
    if (rc)
        return rc;
    if (now_s < 0 || now_s > TIME_MS_MAX / 1000) {
        set_err(err, err_size, "the clock is outside 1970..9999");
        return -EINVAL;
    }
    int lock_fd;
    rc = lock_dir(dir, &lock_fd, err, err_size);
    if (rc)
        return rc;
    char path[PATH_BYTES];
    struct doc d;
    rc = load_for_change(dir, &d, path, err, err_size);
    if (rc == 0)
        rc = add_rec(&d, scope, merchant_id, now_s, path, err, err_size);
    if (rc == 0)
        rc = store_doc(dir, &d, err, err_size);
    if (rc == 0) {
        const struct rec *r = &d.recs[d.count - 1];
        *out = (struct keyfile_new_key){.created_s = r->created_s, .scope = r->scope};
        memcpy(out->key_id, r->key_id, sizeof(out->key_id));
        memcpy(out->merchant_id, r->merchant_id, sizeof(out->merchant_id));
        memcpy(out->secret, r->secret, sizeof(out->secret));
    }
    doc_free(&d);
    close(lock_fd); /* releases the lock */
    return rc;
}

int keyfile_revoke(const char *dir, const char *key_id, bool *was_active, char *err,
                   size_t err_size)
{
    ASSERT(dir != NULL && key_id != NULL && was_active != NULL);
    *was_active = false;
    if (!keyfile_key_id_valid(key_id, strlen(key_id))) {
        set_err(err, err_size, "\"%.40s\" is not a key id (rpk_ and 16 hex digits)", key_id);
        return -EINVAL;
    }
    int lock_fd;
    int rc = lock_dir(dir, &lock_fd, err, err_size);
    if (rc)
        return rc;
    char path[PATH_BYTES];
    struct doc d;
    rc = load_for_change(dir, &d, path, err, err_size);
    struct rec *hit = NULL;
    for (size_t i = 0; rc == 0 && i < d.count && hit == NULL; i++)
        if (strcmp(d.recs[i].key_id, key_id) == 0)
            hit = &d.recs[i];
    if (rc == 0 && hit == NULL) {
        set_err(err, err_size, "no key %s in %s", key_id, path);
        rc = -ENOENT;
    }
    if (rc == 0 && hit->status == KEYFILE_ACTIVE) {
        hit->status = KEYFILE_REVOKED;
        *was_active = true;
        rc = store_doc(dir, &d, err, err_size);
    }
    doc_free(&d);
    close(lock_fd);
    return rc;
}
