/*
 * The data-directory lock (see dirlock.h).
 */
#define _GNU_SOURCE
#include "store/dirlock.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <unistd.h>

#include "engine/assert.h"
#include "store/manifest.h"

/* The owner's pid as written in the file, or 0 when it cannot be read. */
static long owner_pid(int fd)
{
    char buf[32];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    if (n <= 0)
        return 0;
    buf[n] = '\0';
    return strtol(buf, NULL, 10);
}

/* Records our pid in the file; best effort, the lock itself is the flock. */
static void write_pid(int fd)
{
    char buf[32];
    int n = snprintf(buf, sizeof(buf), "%ld\n", (long)getpid());
    if (ftruncate(fd, 0) == 0 && pwrite(fd, buf, (size_t)n, 0) == n)
        return;
}

static int lock_path(char *path, size_t cap, const char *dir, char *why, size_t why_bytes)
{
    if (snprintf(path, cap, "%s/%s", dir, DIRLOCK_FILE) >= (int)cap) {
        snprintf(why, why_bytes, "data directory path too long: %s", dir);
        return -ENAMETOOLONG;
    }
    return 0;
}

/* The one line for a lock we could not take (err: -EBUSY or another -errno). */
static int refusal(int fd, int err, const char *dir, const char *path, char *why, size_t why_bytes)
{
    long pid = err == -EBUSY ? owner_pid(fd) : 0;
    if (err != -EBUSY)
        snprintf(why, why_bytes, "cannot lock %s: %s", path, strerror(-err));
    else if (pid > 0)
        snprintf(why, why_bytes, "data directory %s is in use by another process (pid %ld)", dir,
                 pid);
    else
        snprintf(why, why_bytes, "data directory %s is in use by another process", dir);
    return err;
}

static int flock_err(int fd, int op)
{
    if (flock(fd, op) == 0)
        return 0;
    return errno == EWOULDBLOCK ? -EBUSY : -errno;
}

/* LOCK_SH without waiting, tried again for DIRLOCK_SHARE_WAIT_MS while it is busy. */
static int share_waiting(int fd)
{
    int rc = flock_err(fd, LOCK_SH | LOCK_NB);
    for (int waited = 0; rc == -EBUSY && waited < DIRLOCK_SHARE_WAIT_MS; waited += 20) {
        usleep(20 * 1000);
        rc = flock_err(fd, LOCK_SH | LOCK_NB);
    }
    return rc;
}

int dirlock_acquire(struct dirlock *l, const char *dir, bool create, char *why, size_t why_bytes)
{
    ASSERT(l != NULL && dir != NULL);
    l->fd = -1;
    char path[STORE_PATH_MAX];
    int rc = lock_path(path, sizeof(path), dir, why, why_bytes);
    if (rc)
        return rc;
    int flags = create ? O_RDWR | O_CREAT | O_CLOEXEC : O_RDONLY | O_CLOEXEC;
    int fd = open(path, flags, 0600);
    if (fd < 0 && errno == ENOENT && !create)
        return 0; /* never owned by a process that locks: nothing to exclude */
    if (fd < 0) {
        int err = -errno;
        snprintf(why, why_bytes, "cannot open %s: %s", path, strerror(errno));
        return err;
    }
    if ((rc = flock_err(fd, LOCK_EX | LOCK_NB))) {
        refusal(fd, rc, dir, path, why, why_bytes);
        close(fd);
        return rc;
    }
    if (create)
        write_pid(fd);
    l->fd = fd;
    return 0;
}

int dirlock_acquire_shared(struct dirlock *l, const char *dir, bool *alone, char *why,
                           size_t why_bytes)
{
    ASSERT(l != NULL && dir != NULL && alone != NULL);
    l->fd = -1;
    *alone = false;
    char path[STORE_PATH_MAX];
    int rc = lock_path(path, sizeof(path), dir, why, why_bytes);
    if (rc)
        return rc;
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) {
        int err = -errno;
        snprintf(why, why_bytes, "cannot open %s: %s", path, strerror(errno));
        return err;
    }
    rc = flock_err(fd, LOCK_EX | LOCK_NB);
    if (rc == 0) {
        *alone = true;
        write_pid(fd);
    } else if (rc == -EBUSY) {
        rc = share_waiting(fd);
    }
    if (rc) {
        refusal(fd, rc, dir, path, why, why_bytes);
        close(fd);
        return rc;
    }
    l->fd = fd;
    return 0;
}

int dirlock_share(struct dirlock *l, const char *dir, char *why, size_t why_bytes)
{
    ASSERT(l != NULL && l->fd >= 0);
    int rc = share_waiting(l->fd);
    if (rc) {
        char path[STORE_PATH_MAX];
        snprintf(path, sizeof(path), "%s/%s", dir, DIRLOCK_FILE);
        refusal(l->fd, rc, dir, path, why, why_bytes);
        dirlock_release(l);
    }
    return rc;
}

void dirlock_release(struct dirlock *l)
{
    if (l == NULL || l->fd < 0)
        return;
    close(l->fd); /* closing the last descriptor of the file drops the flock */
    l->fd = -1;
}
