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

int dirlock_acquire(struct dirlock *l, const char *dir, bool create, char *why, size_t why_bytes)
{
    ASSERT(l != NULL && dir != NULL);
    l->fd = -1;
    char path[STORE_PATH_MAX];
    if (snprintf(path, sizeof(path), "%s/%s", dir, DIRLOCK_FILE) >= (int)sizeof(path)) {
        snprintf(why, why_bytes, "data directory path too long: %s", dir);
        return -ENAMETOOLONG;
    }
    int flags = create ? O_RDWR | O_CREAT | O_CLOEXEC : O_RDONLY | O_CLOEXEC;
    int fd = open(path, flags, 0600);
    if (fd < 0 && errno == ENOENT && !create)
        return 0; /* never owned by a process that locks: nothing to exclude */
    if (fd < 0) {
        int err = -errno;
        snprintf(why, why_bytes, "cannot open %s: %s", path, strerror(errno));
        return err;
    }
    if (flock(fd, LOCK_EX | LOCK_NB) != 0) {
        int err = errno == EWOULDBLOCK ? -EBUSY : -errno;
        long pid = err == -EBUSY ? owner_pid(fd) : 0;
        if (err != -EBUSY)
            snprintf(why, why_bytes, "cannot lock %s: %s", path, strerror(-err));
        else if (pid > 0)
            snprintf(why, why_bytes, "data directory %s is in use by another process (pid %ld)",
                     dir, pid);
        else
            snprintf(why, why_bytes, "data directory %s is in use by another process", dir);
        close(fd);
        return err;
    }
    if (create)
        write_pid(fd);
    l->fd = fd;
    return 0;
}

void dirlock_release(struct dirlock *l)
{
    if (l == NULL || l->fd < 0)
        return;
    close(l->fd); /* closing the last descriptor of the file drops the flock */
    l->fd = -1;
}
