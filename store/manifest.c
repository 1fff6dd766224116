/*
 * The data directory's manifest (see manifest.h for the format and the invariant).
 *
 * Writing is atomic and durable: the content goes to MANIFEST.tmp, which is fsynced,
 * renamed over MANIFEST, and then the directory itself is fsynced so the rename
 * survives a power loss. Reading is strict: anything but the two expected lines is
 * an error, never a guess.
 */
#include "store/manifest.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "engine/assert.h"
#include "engine/limits.h"

#define MANIFEST_NAME      "MANIFEST"
#define MANIFEST_TMP_NAME  "MANIFEST.tmp"
#define MANIFEST_MAX_BYTES 256

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

static int join(char *buf, size_t buf_size, const char *dir, const char *name)
{
    int n = snprintf(buf, buf_size, "%s/%s", dir, name);
    if (n < 0 || (size_t)n >= buf_size)
        return -ENAMETOOLONG;
    return 0;
}

int store_manifest_shard_path(const char *dir, unsigned shard, char *buf, size_t buf_size)
{
    ASSERT(dir != NULL && buf != NULL);
    ASSERT(shard < CORES_MAX);
    int n = snprintf(buf, buf_size, "%s/shard-%03u", dir, shard);
    if (n < 0 || (size_t)n >= buf_size)
        return -ENAMETOOLONG;
    return 0;
}

/* Parses the manifest text; returns 0 and the shard count, or -EINVAL. */
static int parse(const char *text, unsigned *nshards)
{
    unsigned version = 0, shards = 0;
    char tail = 0;
    int n = sscanf(text, "ringpay-data %u\nshards %u\n%c", &version, &shards, &tail);
    if (n != 2 || version != STORE_FORMAT_VERSION)
        return -EINVAL;
    if (shards == 0 || shards > CORES_MAX)
        return -EINVAL;
    *nshards = shards;
    return 0;
}

int store_manifest_read(const char *dir, unsigned *nshards, char *err, size_t err_size)
{
    ASSERT(dir != NULL && nshards != NULL);
    char path[STORE_PATH_MAX];
    char text[MANIFEST_MAX_BYTES + 1];
    int rc = join(path, sizeof(path), dir, MANIFEST_NAME);
    if (rc) {
        set_err(err, err_size, "data directory path %s is too long", dir);
        return rc;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        rc = -errno;
        set_err(err, err_size, "cannot open %s: %s", path, strerror(errno));
        return rc;
    }
    ssize_t got = read(fd, text, MANIFEST_MAX_BYTES);
    rc = -errno;
    close(fd);
    if (got < 0) {
        set_err(err, err_size, "cannot read %s: %s", path, strerror(-rc));
        return rc;
    }
    ASSERT(got <= MANIFEST_MAX_BYTES);
    text[got] = '\0';
    if (got == MANIFEST_MAX_BYTES || strlen(text) != (size_t)got || parse(text, nshards)) {
        set_err(err, err_size, "%s is not a ringpay manifest of format version %d", path,
                STORE_FORMAT_VERSION);
        return -EINVAL;
    }
    return 0;
}

static int write_all(int fd, const char *buf, size_t len)
{
    while (len > 0) {
        ssize_t n = write(fd, buf, len);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

int store_manifest_sync_dir(const char *dir)
{
    ASSERT(dir != NULL);
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return -errno;
    int rc = fsync(fd) ? -errno : 0;
    close(fd);
    return rc;
}

/* Writes a new manifest atomically: temp file, fsync, rename, fsync directory. */
static int create(const char *dir, unsigned nshards, char *err, size_t err_size)
{
    char tmp[STORE_PATH_MAX], path[STORE_PATH_MAX], text[MANIFEST_MAX_BYTES];
    if (join(tmp, sizeof(tmp), dir, MANIFEST_TMP_NAME) ||
        join(path, sizeof(path), dir, MANIFEST_NAME)) {
        set_err(err, err_size, "data directory path %s is too long", dir);
        return -ENAMETOOLONG;
    }
    int len =
        snprintf(text, sizeof(text), "ringpay-data %d\nshards %u\n", STORE_FORMAT_VERSION, nshards);
    ASSERT(len > 0 && (size_t)len < sizeof(text));
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        goto out_errno;
    int rc = write_all(fd, text, (size_t)len);
    if (rc == 0 && fsync(fd))
        rc = -errno;
    close(fd);
    if (rc) {
        errno = -rc;
        goto out_unlink;
    }
    if (rename(tmp, path))
        goto out_unlink;
    rc = store_manifest_sync_dir(dir);
    if (rc) {
        set_err(err, err_size, "cannot fsync %s: %s", dir, strerror(-rc));
        return rc;
    }
    return 0;

out_unlink:
    rc = -errno;
    unlink(tmp);
    set_err(err, err_size, "cannot write %s: %s", path, strerror(-rc));
    return rc;
out_errno:
    rc = -errno;
    set_err(err, err_size, "cannot create %s: %s", tmp, strerror(-rc));
    return rc;
}

int store_manifest_open(const char *dir, unsigned nshards, char *err, size_t err_size)
{
    ASSERT(dir != NULL);
    if (nshards == 0 || nshards > CORES_MAX) {
        set_err(err, err_size, "shard count %u is out of range 1..%d", nshards, CORES_MAX);
        return -EINVAL;
    }
    if (mkdir(dir, 0700) && errno != EEXIST) {
        int rc = -errno;
        set_err(err, err_size, "cannot create data directory %s: %s", dir, strerror(-rc));
        return rc;
    }
    unsigned found = 0;
    int rc = store_manifest_read(dir, &found, err, err_size);
    if (rc == -ENOENT) {
        /* Shards without a manifest: someone removed it; do not guess their count. */
        char shard0[STORE_PATH_MAX];
        struct stat st;
        if (store_manifest_shard_path(dir, 0, shard0, sizeof(shard0)) == 0 &&
            stat(shard0, &st) == 0) {
            set_err(err, err_size, "data directory %s holds shard directories but no %s", dir,
                    MANIFEST_NAME);
            return -EINVAL;
        }
        return create(dir, nshards, err, err_size);
    }
    if (rc)
        return rc;
    if (found != nshards) {
        set_err(err, err_size,
                "data directory %s holds %u shards; started with --cores %u; "
                "resharding is not supported",
                dir, found, nshards);
        return -EINVAL;
    }
    return 0;
}
