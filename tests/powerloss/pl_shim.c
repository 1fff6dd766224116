/*
 * The power-loss shim: an LD_PRELOAD library that makes the files under one root
 * directory reach a simulated "disk" (the shadow) only when they are fsynced, so that
 * a test can SIGKILL the real engine and rebuild the root from what was synced alone
 * (docs/durability.md, "The power-loss test").
 *
 * Environment (the shim does nothing unless RP_PL_ROOT is set):
 *   RP_PL_ROOT    absolute path of the directory whose files are modelled
 *   RP_PL_SHADOW  directory holding the shadow (pl_disk.h describes its layout)
 *   RP_PL_SYNC_US microseconds an fsync of a file takes before it lands (default 0);
 *                 the real fsync is skipped: the shadow is the disk
 *   RP_PL_DIR_SYNC_US  microseconds an fsync of a directory takes before its listing
 *                 lands (default 0), so a test can cut between a rename and its sync
 *
 * The model, strictly what POSIX promises:
 *   - Every write to a file under the root (write, pwrite, writev, pwritev, ftruncate,
 *     truncate, fallocate, posix_fallocate, and O_TRUNC at open) marks a byte range of
 *     its inode dirty; a write past the end also dirties the hole before it.
 *   - fsync or fdatasync of the file copies its dirty ranges, read back from the real
 *     file, and its size into the shadow copy of that inode (files/KEY), then the
 *     ranges are clean. A write on a descriptor opened O_SYNC or O_DSYNC lands at once.
 *   - A name created, renamed or unlinked in a directory becomes durable only when
 *     that directory is fsynced: the fsync records the directory's whole listing
 *     (dirs/KEY). Nothing else makes a name durable; a file's own fsync does not.
 *   - sync() and syncfs() make everything under the root durable.
 *   - Injected failure: if the file SHADOW/fail exists when a file is fsynced, its
 *     first word (EIO, ENOSPC, EDQUOT) is the error that fsync returns; its dirty
 *     ranges are dropped, as Linux marks the pages of a failed writeback clean (the
 *     next fsync reports success for data that never landed). The file is removed
 *     (a one-time failure) unless its second word is "always".
 *   - A slow disk: while the file SHADOW/slow exists, its number is the microseconds
 *     every fsync of a file takes (instead of RP_PL_SYNC_US), so a test can stall the
 *     engine's disk at a moment of its choosing.
 * At start, when the shadow is empty, the whole root as it is counts as durable (the
 * test created it, or rebuilt it from a previous shadow).
 *
 * Not modelled: writes through a shared mmap (LMDB's data file is written with
 * write(2) unless MDB_WRITEMAP, which the store asserts is off; lock.mdb is mapped but
 * never needs to survive), I/O submitted through io_uring or other raw system calls,
 * libc-internal writes (stdio), descriptors duplicated with fcntl(F_DUPFD), and
 * pwritev2. Writes are copied at page-cache speed: torn sectors are not modelled
 * beyond what a SIGKILL in the middle of a copy leaves.
 *
 * The shim's own file work uses raw system calls, never the functions it interposes.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <time.h>
#include <unistd.h>

#include "pl_disk.h"

#define PL_FD_MAX     65536 /* descriptors tracked; a tracked one above aborts */
#define PL_INODES_MAX 1024  /* distinct inodes under the root seen by one process */
#define PL_COPY_BYTES (256 * 1024)
#define PL_DIR_MAX    1024 /* the root's and the shadow's paths */

struct pl_range {
    off_t off, end; /* [off, end) */
};

struct pl_inode {
    bool used, dir;
    char key[PL_KEY_MAX];
    struct pl_range *r;
    size_t n, cap;
};

struct pl_fd {
    int slot; /* 0: not under the root; else inode index + 1 */
    bool dsync;
};

static struct {
    bool on;
    char root[PL_DIR_MAX];
    size_t root_len;
    char shadow[PL_DIR_MAX];
    long sync_us;
    long dir_sync_us;
    pthread_mutex_t mu;
    struct pl_inode inodes[PL_INODES_MAX];
    struct pl_fd fds[PL_FD_MAX];
} g = {.mu = PTHREAD_MUTEX_INITIALIZER};

/* ---- raw system calls (never interposed) ------------------------------------------ */

static int sys_open(const char *path, int flags, int mode)
{
    return (int)syscall(SYS_openat, AT_FDCWD, path, flags | O_CLOEXEC, mode);
}

static int sys_close(int fd)
{
    return (int)syscall(SYS_close, fd);
}

static ssize_t sys_pread(int fd, void *buf, size_t n, off_t off)
{
    return syscall(SYS_pread64, fd, buf, n, off);
}

static ssize_t sys_pwrite(int fd, const void *buf, size_t n, off_t off)
{
    return syscall(SYS_pwrite64, fd, buf, n, off);
}

static off_t sys_lseek_cur(int fd)
{
    return (off_t)syscall(SYS_lseek, fd, 0, SEEK_CUR);
}

static int sys_ftruncate(int fd, off_t len)
{
    return (int)syscall(SYS_ftruncate, fd, len);
}

static int sys_fstatx(int fd, const char *path, struct statx *st)
{
    int flags = path ? AT_SYMLINK_NOFOLLOW : AT_EMPTY_PATH;
    return (int)syscall(SYS_statx, path ? AT_FDCWD : fd, path ? path : "", flags,
                        STATX_TYPE | STATX_INO | STATX_SIZE | STATX_BTIME, st);
}

static off_t fd_size(int fd)
{
    struct statx st;
    return sys_fstatx(fd, NULL, &st) == 0 ? (off_t)st.stx_size : 0;
}

static void die(const char *what)
{
    char msg[512];
    int n = snprintf(msg, sizeof(msg), "pl_shim: %s: %s\n", what, strerror(errno));
    syscall(SYS_write, 2, msg, (size_t)n);
    abort();
}

/* ---- the real functions ----------------------------------------------------------- */

#define REAL(name)                   real_##name
#define DECLARE_REAL(ret, name, ...) static ret (*real_##name)(__VA_ARGS__)
DECLARE_REAL(int, open, const char *, int, ...);
DECLARE_REAL(int, open64, const char *, int, ...);
DECLARE_REAL(int, openat, int, const char *, int, ...);
DECLARE_REAL(int, openat64, int, const char *, int, ...);
DECLARE_REAL(int, creat, const char *, mode_t);
DECLARE_REAL(int, creat64, const char *, mode_t);
DECLARE_REAL(int, __open_2, const char *, int);
DECLARE_REAL(int, __open64_2, const char *, int);
DECLARE_REAL(int, __openat_2, int, const char *, int);
DECLARE_REAL(int, __openat64_2, int, const char *, int);
DECLARE_REAL(int, close, int);
DECLARE_REAL(int, dup, int);
DECLARE_REAL(int, dup2, int, int);
DECLARE_REAL(int, dup3, int, int, int);
DECLARE_REAL(ssize_t, write, int, const void *, size_t);
DECLARE_REAL(ssize_t, pwrite, int, const void *, size_t, off_t);
DECLARE_REAL(ssize_t, pwrite64, int, const void *, size_t, off_t);
DECLARE_REAL(ssize_t, writev, int, const struct iovec *, int);
DECLARE_REAL(ssize_t, pwritev, int, const struct iovec *, int, off_t);
DECLARE_REAL(ssize_t, pwritev64, int, const struct iovec *, int, off_t);
DECLARE_REAL(int, ftruncate, int, off_t);
DECLARE_REAL(int, truncate, const char *, off_t);
DECLARE_REAL(int, truncate64, const char *, off_t);
DECLARE_REAL(int, fallocate, int, int, off_t, off_t);
DECLARE_REAL(int, posix_fallocate, int, off_t, off_t);
DECLARE_REAL(int, posix_fallocate64, int, off_t, off_t);
DECLARE_REAL(int, fsync, int);
DECLARE_REAL(int, fdatasync, int);
DECLARE_REAL(void, sync, void);
DECLARE_REAL(int, syncfs, int);

static void *next_sym(const char *name)
{
    void *p = dlsym(RTLD_NEXT, name);
    if (p == NULL) {
        errno = ENOSYS;
        die(name);
    }
    return p;
}

/* Resolves real_NAME on first use (a call may come before the constructor ran). */
#define RESOLVE(name)                                                                              \
    do {                                                                                           \
        if (real_##name == NULL)                                                                   \
            *(void **)&real_##name = next_sym(#name);                                              \
    } while (0)

/* ---- inodes and dirty ranges ------------------------------------------------------- */

static void key_of(const struct statx *st, char *key)
{
    snprintf(key, PL_KEY_MAX, "%llx-%llx.%x", (unsigned long long)st->stx_ino,
             (unsigned long long)st->stx_btime.tv_sec, st->stx_btime.tv_nsec);
}

static int inode_slot(const struct statx *st)
{
    char key[PL_KEY_MAX];
    key_of(st, key);
    int free_slot = -1;
    for (int i = 0; i < PL_INODES_MAX; i++) {
        if (g.inodes[i].used && strcmp(g.inodes[i].key, key) == 0)
            return i + 1;
        if (!g.inodes[i].used && free_slot < 0)
            free_slot = i;
    }
    if (free_slot < 0) {
        errno = EMFILE;
        die("too many inodes under the root");
    }
    struct pl_inode *in = &g.inodes[free_slot];
    memset(in, 0, sizeof(*in));
    in->used = true;
    in->dir = S_ISDIR(st->stx_mode);
    memcpy(in->key, key, PL_KEY_MAX);
    return free_slot + 1;
}

/* Adds [off, end) to the inode's sorted, disjoint ranges, merging what touches it. */
static void dirty(struct pl_inode *in, off_t off, off_t end)
{
    if (end <= off)
        return;
    size_t i = 0;
    while (i < in->n && in->r[i].end < off)
        i++;
    size_t j = i;
    while (j < in->n && in->r[j].off <= end) {
        if (in->r[j].off < off)
            off = in->r[j].off;
        if (in->r[j].end > end)
            end = in->r[j].end;
        j++;
    }
    if (j == i) { /* insert at i */
        if (in->n == in->cap) {
            in->cap = in->cap ? 2 * in->cap : 64;
            in->r = realloc(in->r, in->cap * sizeof(*in->r));
            if (in->r == NULL)
                die("realloc");
        }
        memmove(in->r + i + 1, in->r + i, (in->n - i) * sizeof(*in->r));
        in->n++;
    } else { /* ranges i..j-1 collapse into i */
        memmove(in->r + i + 1, in->r + j, (in->n - j) * sizeof(*in->r));
        in->n -= j - i - 1;
    }
    in->r[i] = (struct pl_range){off, end};
}

static struct pl_inode *tracked(int fd)
{
    if (!g.on || fd < 0 || fd >= PL_FD_MAX || g.fds[fd].slot == 0)
        return NULL;
    return &g.inodes[g.fds[fd].slot - 1];
}

/* Starts tracking fd when it names something under the root. */
static void track(int fd)
{
    if (!g.on || fd < 0)
        return;
    char link[64], path[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    ssize_t n = syscall(SYS_readlinkat, AT_FDCWD, link, path, sizeof(path) - 1);
    if (n <= 0)
        return;
    path[n] = '\0';
    if (strncmp(path, g.root, g.root_len) != 0 || (path[g.root_len] != '/' && path[g.root_len]))
        return;
    if (fd >= PL_FD_MAX) {
        errno = EMFILE;
        die("descriptor number too high to track");
    }
    struct statx st;
    if (sys_fstatx(fd, NULL, &st) != 0)
        die("statx");
    if (!S_ISREG(st.stx_mode) && !S_ISDIR(st.stx_mode))
        return;
    long fl = syscall(SYS_fcntl, fd, F_GETFL);
    pthread_mutex_lock(&g.mu);
    g.fds[fd].slot = inode_slot(&st);
    g.fds[fd].dsync = fl >= 0 && (fl & O_DSYNC);
    pthread_mutex_unlock(&g.mu);
}

/* ---- the shadow --------------------------------------------------------------------- */

static void shadow_path(char *out, const char *sub, const char *key)
{
    snprintf(out, PATH_MAX, "%s/%s/%s", g.shadow, sub, key);
}

/* Copies [off, end) of the real file (read through rfd) into the shadow file sfd. */
static void copy_range(int rfd, int sfd, off_t off, off_t end)
{
    static __thread char buf[PL_COPY_BYTES];
    while (off < end) {
        size_t want = end - off < PL_COPY_BYTES ? (size_t)(end - off) : PL_COPY_BYTES;
        ssize_t got = sys_pread(rfd, buf, want, off);
        if (got < 0)
            die("pread of the real file");
        if (got == 0)
            break;
        if (sys_pwrite(sfd, buf, (size_t)got, off) != got)
            die("pwrite of the shadow");
        off += got;
    }
}

/* The fsync of a file: its dirty ranges within [lo, hi) and its size land. */
static void land(struct pl_inode *in, int fd, off_t lo, off_t hi)
{
    char link[64], spath[PATH_MAX];
    snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
    int rfd = sys_open(link, O_RDONLY, 0);
    if (rfd < 0)
        die("reopen of a tracked file");
    shadow_path(spath, PL_FILES_DIR, in->key);
    int sfd = sys_open(spath, O_RDWR | O_CREAT, 0600);
    if (sfd < 0)
        die("open of the shadow file");
    off_t size = fd_size(rfd);
    size_t k = 0;
    for (size_t i = 0; i < in->n; i++) {
        struct pl_range r = in->r[i];
        off_t a = r.off > lo ? r.off : lo, b = r.end < hi ? r.end : hi;
        if (a < b)
            copy_range(rfd, sfd, a, b < size ? b : size);
        /* keep what lies outside [lo, hi) dirty */
        if (r.off < lo)
            in->r[k++] = (struct pl_range){r.off, r.end < lo ? r.end : lo};
        if (r.end > hi)
            in->r[k++] = (struct pl_range){r.off > hi ? r.off : hi, r.end};
    }
    in->n = k;
    if (sys_ftruncate(sfd, size) != 0)
        die("ftruncate of the shadow");
    sys_close(sfd);
    sys_close(rfd);
}

/* Records the listing of directory `path` (key dkey) as durable, atomically. */
static void land_dir(const char *path, const char *dkey)
{
    char tmp[PATH_MAX + 8], final[PATH_MAX], child[PATH_MAX], key[PL_KEY_MAX];
    shadow_path(final, PL_DIRS_DIR, dkey);
    snprintf(tmp, sizeof(tmp), "%s.tmp", final);
    int out = sys_open(tmp, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (out < 0)
        die("open of a shadow listing");
    DIR *d = opendir(path); /* glibc's own open: not interposed */
    if (d == NULL)
        die("opendir");
    struct dirent *e;
    off_t at = 0;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
        struct statx st;
        if (sys_fstatx(-1, child, &st) != 0)
            continue; /* removed meanwhile */
        if (!S_ISREG(st.stx_mode) && !S_ISDIR(st.stx_mode))
            continue;
        key_of(&st, key);
        char line[PL_LINE_MAX];
        int n = snprintf(line, sizeof(line), "%c %s %s\n", S_ISDIR(st.stx_mode) ? 'd' : 'f', key,
                         e->d_name);
        if (n <= 0 || (size_t)n >= sizeof(line) || sys_pwrite(out, line, (size_t)n, at) != n)
            die("write of a shadow listing");
        at += n;
    }
    closedir(d);
    sys_close(out);
    if (syscall(SYS_renameat, AT_FDCWD, tmp, AT_FDCWD, final) != 0)
        die("rename of a shadow listing");
}

/* Makes the whole tree under path durable: listings and whole file contents. */
static void land_tree(const char *path)
{
    struct statx st;
    char key[PL_KEY_MAX], child[PATH_MAX];
    if (sys_fstatx(-1, path, &st) != 0)
        die("statx of the tree");
    key_of(&st, key);
    land_dir(path, key);
    DIR *d = opendir(path);
    if (d == NULL)
        die("opendir");
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        snprintf(child, sizeof(child), "%s/%s", path, e->d_name);
        if (sys_fstatx(-1, child, &st) != 0)
            continue;
        if (S_ISDIR(st.stx_mode)) {
            land_tree(child);
        } else if (S_ISREG(st.stx_mode)) {
            int fd = sys_open(child, O_RDONLY, 0);
            if (fd < 0)
                die("open in the tree");
            pthread_mutex_lock(&g.mu);
            struct pl_inode *in = &g.inodes[inode_slot(&st) - 1];
            dirty(in, 0, fd_size(fd));
            land(in, fd, 0, INT64_MAX);
            pthread_mutex_unlock(&g.mu);
            sys_close(fd);
        }
    }
    closedir(d);
}

/* The first start on a fresh shadow: the root as it is now is what the disk holds. */
static void shadow_init(void)
{
    char marker[PATH_MAX], sub[PATH_MAX];
    snprintf(marker, sizeof(marker), "%s/%s", g.shadow, PL_ROOT_FILE);
    int fd = sys_open(marker, O_RDONLY, 0);
    if (fd >= 0) {
        sys_close(fd);
        return;
    }
    snprintf(sub, sizeof(sub), "%s/%s", g.shadow, PL_FILES_DIR);
    syscall(SYS_mkdirat, AT_FDCWD, sub, 0700);
    snprintf(sub, sizeof(sub), "%s/%s", g.shadow, PL_DIRS_DIR);
    syscall(SYS_mkdirat, AT_FDCWD, sub, 0700);
    land_tree(g.root);
    struct statx st;
    char key[PL_KEY_MAX + 1];
    if (sys_fstatx(-1, g.root, &st) != 0)
        die("statx of the root");
    key_of(&st, key);
    size_t n = strlen(key);
    key[n++] = '\n';
    fd = sys_open(marker, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0 || sys_pwrite(fd, key, n, 0) != (ssize_t)n)
        die("write of the root marker");
    sys_close(fd);
}

__attribute__((constructor)) static void pl_init(void)
{
    const char *root = getenv("RP_PL_ROOT"), *shadow = getenv("RP_PL_SHADOW");
    if (root == NULL || shadow == NULL)
        return;
    char buf[2][PATH_MAX];
    if (realpath(root, buf[0]) == NULL || realpath(shadow, buf[1]) == NULL)
        die("RP_PL_ROOT or RP_PL_SHADOW");
    if (strlen(buf[0]) >= PL_DIR_MAX || strlen(buf[1]) >= PL_DIR_MAX) {
        errno = ENAMETOOLONG;
        die("RP_PL_ROOT or RP_PL_SHADOW");
    }
    strcpy(g.root, buf[0]);
    strcpy(g.shadow, buf[1]);
    g.root_len = strlen(g.root);
    const char *us = getenv("RP_PL_SYNC_US");
    g.sync_us = us ? atol(us) : 0;
    const char *dir_us = getenv("RP_PL_DIR_SYNC_US");
    g.dir_sync_us = dir_us ? atol(dir_us) : 0;
    shadow_init();
    g.on = true;
}

/* ---- injected failures -------------------------------------------------------------- */

/* The time an fsync of a file takes: SHADOW/slow's number while it exists, else
 * RP_PL_SYNC_US. */
static long slow_us(void)
{
    char path[PATH_MAX], text[32] = "";
    snprintf(path, sizeof(path), "%s/%s", g.shadow, PL_SLOW_FILE);
    int fd = sys_open(path, O_RDONLY, 0);
    if (fd < 0)
        return g.sync_us;
    ssize_t n = sys_pread(fd, text, sizeof(text) - 1, 0);
    sys_close(fd);
    text[n > 0 ? n : 0] = '\0';
    return atol(text);
}

/* 0, or the errno the SHADOW/fail file asks this fsync to fail with. */
static int fail_take(void)
{
    char path[PATH_MAX], text[64] = "";
    snprintf(path, sizeof(path), "%s/%s", g.shadow, PL_FAIL_FILE);
    int fd = sys_open(path, O_RDONLY, 0);
    if (fd < 0)
        return 0;
    ssize_t n = sys_pread(fd, text, sizeof(text) - 1, 0);
    sys_close(fd);
    text[n > 0 ? n : 0] = '\0';
    int err = strncmp(text, "ENOSPC", 6) == 0   ? ENOSPC
              : strncmp(text, "EDQUOT", 6) == 0 ? EDQUOT
                                                : EIO;
    if (strstr(text, "always") == NULL)
        syscall(SYS_unlinkat, AT_FDCWD, path, 0);
    return err;
}

/* ---- interposed functions ----------------------------------------------------------- */

static int opened(int fd)
{
    if (fd >= 0) {
        int saved = errno;
        track(fd);
        errno = saved;
    }
    return fd;
}

static int mode_arg(int flags, va_list ap)
{
    return (flags & (O_CREAT | __O_TMPFILE)) ? va_arg(ap, int) : 0;
}

int open(const char *path, int flags, ...)
{
    RESOLVE(open);
    va_list ap;
    va_start(ap, flags);
    int mode = mode_arg(flags, ap);
    va_end(ap);
    return opened(REAL(open)(path, flags, mode));
}

int open64(const char *path, int flags, ...)
{
    RESOLVE(open64);
    va_list ap;
    va_start(ap, flags);
    int mode = mode_arg(flags, ap);
    va_end(ap);
    return opened(REAL(open64)(path, flags, mode));
}

int openat(int dirfd, const char *path, int flags, ...)
{
    RESOLVE(openat);
    va_list ap;
    va_start(ap, flags);
    int mode = mode_arg(flags, ap);
    va_end(ap);
    return opened(REAL(openat)(dirfd, path, flags, mode));
}

int openat64(int dirfd, const char *path, int flags, ...)
{
    RESOLVE(openat64);
    va_list ap;
    va_start(ap, flags);
    int mode = mode_arg(flags, ap);
    va_end(ap);
    return opened(REAL(openat64)(dirfd, path, flags, mode));
}

int creat(const char *path, mode_t mode)
{
    RESOLVE(creat);
    return opened(REAL(creat)(path, mode));
}

int creat64(const char *path, mode_t mode)
{
    RESOLVE(creat64);
    return opened(REAL(creat64)(path, mode));
}

int __open_2(const char *path, int flags)
{
    RESOLVE(__open_2);
    return opened(REAL(__open_2)(path, flags));
}

int __open64_2(const char *path, int flags)
{
    RESOLVE(__open64_2);
    return opened(REAL(__open64_2)(path, flags));
}

int __openat_2(int dirfd, const char *path, int flags)
{
    RESOLVE(__openat_2);
    return opened(REAL(__openat_2)(dirfd, path, flags));
}

int __openat64_2(int dirfd, const char *path, int flags)
{
    RESOLVE(__openat64_2);
    return opened(REAL(__openat64_2)(dirfd, path, flags));
}

static void untrack(int fd)
{
    if (g.on && fd >= 0 && fd < PL_FD_MAX && g.fds[fd].slot) {
        pthread_mutex_lock(&g.mu);
        g.fds[fd] = (struct pl_fd){0};
        pthread_mutex_unlock(&g.mu);
    }
}

int close(int fd)
{
    RESOLVE(close);
    untrack(fd);
    return REAL(close)(fd);
}

static int duped(int from, int to)
{
    if (to >= 0 && to != from && g.on) {
        untrack(to);
        if (tracked(from) && to < PL_FD_MAX) {
            pthread_mutex_lock(&g.mu);
            g.fds[to] = g.fds[from];
            pthread_mutex_unlock(&g.mu);
        }
    }
    return to;
}

int dup(int fd)
{
    RESOLVE(dup);
    return duped(fd, REAL(dup)(fd));
}

int dup2(int fd, int to)
{
    RESOLVE(dup2);
    return duped(fd, REAL(dup2)(fd, to));
}

int dup3(int fd, int to, int flags)
{
    RESOLVE(dup3);
    return duped(fd, REAL(dup3)(fd, to, flags));
}

/* Marks what a write of n bytes ending at `end` dirtied (with the hole before it when
 * it started past the old size), and lands it at once on an O_(D)SYNC descriptor. */
static void wrote(struct pl_inode *in, int fd, off_t size_before, off_t start, ssize_t n)
{
    if (n <= 0)
        return;
    off_t from = start > size_before ? size_before : start;
    dirty(in, from, start + n);
    if (g.fds[fd].dsync)
        land(in, fd, from, start + n);
}

ssize_t write(int fd, const void *buf, size_t n)
{
    RESOLVE(write);
    struct pl_inode *in = tracked(fd);
    if (in == NULL)
        return REAL(write)(fd, buf, n);
    pthread_mutex_lock(&g.mu);
    off_t size = fd_size(fd);
    ssize_t r = REAL(write)(fd, buf, n);
    int saved = errno;
    if (r > 0)
        wrote(in, fd, size, sys_lseek_cur(fd) - r, r);
    pthread_mutex_unlock(&g.mu);
    errno = saved;
    return r;
}

static ssize_t pwrite_common(ssize_t (*real)(int, const void *, size_t, off_t), int fd,
                             const void *buf, size_t n, off_t off)
{
    struct pl_inode *in = tracked(fd);
    if (in == NULL)
        return real(fd, buf, n, off);
    pthread_mutex_lock(&g.mu);
    off_t size = fd_size(fd);
    ssize_t r = real(fd, buf, n, off);
    int saved = errno;
    wrote(in, fd, size, off, r);
    pthread_mutex_unlock(&g.mu);
    errno = saved;
    return r;
}

ssize_t pwrite(int fd, const void *buf, size_t n, off_t off)
{
    RESOLVE(pwrite);
    return pwrite_common(REAL(pwrite), fd, buf, n, off);
}

ssize_t pwrite64(int fd, const void *buf, size_t n, off_t off)
{
    RESOLVE(pwrite64);
    return pwrite_common(REAL(pwrite64), fd, buf, n, off);
}

ssize_t writev(int fd, const struct iovec *iov, int cnt)
{
    RESOLVE(writev);
    struct pl_inode *in = tracked(fd);
    if (in == NULL)
        return REAL(writev)(fd, iov, cnt);
    pthread_mutex_lock(&g.mu);
    off_t size = fd_size(fd);
    ssize_t r = REAL(writev)(fd, iov, cnt);
    int saved = errno;
    if (r > 0)
        wrote(in, fd, size, sys_lseek_cur(fd) - r, r);
    pthread_mutex_unlock(&g.mu);
    errno = saved;
    return r;
}

static ssize_t pwritev_common(ssize_t (*real)(int, const struct iovec *, int, off_t), int fd,
                              const struct iovec *iov, int cnt, off_t off)
{
    struct pl_inode *in = tracked(fd);
    if (in == NULL)
        return real(fd, iov, cnt, off);
    pthread_mutex_lock(&g.mu);
    off_t size = fd_size(fd);
    ssize_t r = real(fd, iov, cnt, off);
    int saved = errno;
    wrote(in, fd, size, off, r);
    pthread_mutex_unlock(&g.mu);
    errno = saved;
    return r;
}

ssize_t pwritev(int fd, const struct iovec *iov, int cnt, off_t off)
{
    RESOLVE(pwritev);
    return pwritev_common(REAL(pwritev), fd, iov, cnt, off);
}

ssize_t pwritev64(int fd, const struct iovec *iov, int cnt, off_t off)
{
    RESOLVE(pwritev64);
    return pwritev_common(REAL(pwritev64), fd, iov, cnt, off);
}

/* ftruncate dirties everything between the old and the new end. */
static int ftruncate_common(int fd, off_t len)
{
    struct pl_inode *in = tracked(fd);
    if (in == NULL)
        return REAL(ftruncate)(fd, len);
    pthread_mutex_lock(&g.mu);
    off_t size = fd_size(fd);
    int r = REAL(ftruncate)(fd, len);
    int saved = errno;
    if (r == 0) {
        off_t lo = len < size ? len : size, hi = len > size ? len : size;
        dirty(in, lo, hi);
        if (g.fds[fd].dsync)
            land(in, fd, lo, hi);
    }
    pthread_mutex_unlock(&g.mu);
    errno = saved;
    return r;
}

int ftruncate(int fd, off_t len)
{
    RESOLVE(ftruncate);
    return ftruncate_common(fd, len);
}

int ftruncate64(int fd, off_t len)
{
    RESOLVE(ftruncate);
    return ftruncate_common(fd, len);
}

static int path_truncate(int (*real)(const char *, off_t), const char *path, off_t len)
{
    if (!g.on)
        return real(path, len);
    int fd = open(path, O_WRONLY | O_CLOEXEC); /* tracked when under the root */
    if (fd < 0)
        return -1;
    int r = ftruncate(fd, len);
    int saved = errno;
    close(fd);
    errno = saved;
    return r;
}

int truncate(const char *path, off_t len)
{
    RESOLVE(truncate);
    RESOLVE(ftruncate);
    return path_truncate(REAL(truncate), path, len);
}

int truncate64(const char *path, off_t len)
{
    RESOLVE(truncate64);
    RESOLVE(ftruncate);
    return path_truncate(REAL(truncate64), path, len);
}

/* fallocate dirties [off, off + len): a punched or zeroed range changes content, and
 * mode 0 may grow the file (what lies past the real size is clipped at landing). */
static int fallocate_common(int fd, int mode, off_t off, off_t len)
{
    struct pl_inode *in = tracked(fd);
    if (in == NULL)
        return REAL(fallocate)(fd, mode, off, len);
    pthread_mutex_lock(&g.mu);
    off_t size = fd_size(fd);
    int r = REAL(fallocate)(fd, mode, off, len);
    int saved = errno;
    if (r == 0)
        dirty(in, off < size ? off : size, off + len);
    pthread_mutex_unlock(&g.mu);
    errno = saved;
    return r;
}

int fallocate(int fd, int mode, off_t off, off_t len)
{
    RESOLVE(fallocate);
    return fallocate_common(fd, mode, off, len);
}

int fallocate64(int fd, int mode, off_t off, off_t len)
{
    RESOLVE(fallocate);
    return fallocate_common(fd, mode, off, len);
}

int posix_fallocate(int fd, off_t off, off_t len)
{
    RESOLVE(fallocate);
    RESOLVE(posix_fallocate);
    if (tracked(fd) == NULL)
        return REAL(posix_fallocate)(fd, off, len);
    return fallocate_common(fd, 0, off, len) == 0 ? 0 : errno;
}

int posix_fallocate64(int fd, off_t off, off_t len)
{
    RESOLVE(fallocate);
    RESOLVE(posix_fallocate64);
    if (tracked(fd) == NULL)
        return REAL(posix_fallocate64)(fd, off, len);
    return fallocate_common(fd, 0, off, len) == 0 ? 0 : errno;
}

/* fsync and fdatasync of a tracked descriptor: the file's dirty ranges land (or the
 * directory's listing does), after the configured device time. */
static int sync_common(int fd, struct pl_inode *in)
{
    long us = in->dir ? g.dir_sync_us : slow_us();
    if (us > 0) {
        struct timespec ts = {us / 1000000, (us % 1000000) * 1000};
        nanosleep(&ts, NULL);
    }
    pthread_mutex_lock(&g.mu);
    int err = in->dir ? 0 : fail_take();
    if (err) {
        in->n = 0; /* the kernel marks the pages of a failed writeback clean */
    } else if (in->dir) {
        char link[64], path[PATH_MAX];
        snprintf(link, sizeof(link), "/proc/self/fd/%d", fd);
        ssize_t n = syscall(SYS_readlinkat, AT_FDCWD, link, path, sizeof(path) - 1);
        if (n <= 0)
            die("readlink of a directory");
        path[n] = '\0';
        land_dir(path, in->key);
    } else {
        land(in, fd, 0, INT64_MAX);
    }
    pthread_mutex_unlock(&g.mu);
    if (err) {
        errno = err;
        return -1;
    }
    return 0;
}

int fsync(int fd)
{
    RESOLVE(fsync);
    struct pl_inode *in = tracked(fd);
    return in ? sync_common(fd, in) : REAL(fsync)(fd);
}

int fdatasync(int fd)
{
    RESOLVE(fdatasync);
    struct pl_inode *in = tracked(fd);
    return in ? sync_common(fd, in) : REAL(fdatasync)(fd);
}

void sync(void)
{
    RESOLVE(sync);
    if (g.on)
        land_tree(g.root);
    REAL(sync)();
}

int syncfs(int fd)
{
    RESOLVE(syncfs);
    if (g.on)
        land_tree(g.root);
    return REAL(syncfs)(fd);
}
