/*
 * The test side of the shadow disk (see pl_disk.h): rebuilding a data directory from
 * the durable listings and file contents the shim recorded.
 */
#define _GNU_SOURCE
#include "pl_disk.h"

#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <limits.h>
#include <dirent.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int rebuilt_names;

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    return remove(path) == 0 || errno == ENOENT ? 0 : -1;
}

/* Removes path and everything under it (nothing when absent). */
static int rm_tree(const char *path)
{
    struct stat st;
    if (lstat(path, &st) != 0)
        return errno == ENOENT ? 0 : -errno;
    return nftw(path, rm_entry, 16, FTW_DEPTH | FTW_PHYS) == 0 ? 0 : -errno;
}

/* Copies the shadow content of KEY into a new file at dst (empty when none landed). */
static int copy_file(const char *shadow, const char *key, const char *dst)
{
    char src[PATH_MAX], buf[65536];
    snprintf(src, sizeof(src), "%s/%s/%s", shadow, PL_FILES_DIR, key);
    int out = open(dst, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (out < 0)
        return -errno;
    int in = open(src, O_RDONLY | O_CLOEXEC);
    int rc = 0;
    if (in >= 0) {
        ssize_t n;
        while ((n = read(in, buf, sizeof(buf))) > 0) {
            if (write(out, buf, (size_t)n) != n) {
                rc = -EIO;
                break;
            }
        }
        if (n < 0)
            rc = -errno;
        close(in);
    } else if (errno != ENOENT) {
        rc = -errno;
    }
    close(out);
    return rc;
}

/* Creates the entries of the durable listing of directory KEY under dst. */
static int build_dir(const char *shadow, const char *key, const char *dst, int depth)
{
    char listing[PATH_MAX], line[PL_LINE_MAX], child[PATH_MAX];
    if (depth > 16)
        return -ELOOP;
    snprintf(listing, sizeof(listing), "%s/%s/%s", shadow, PL_DIRS_DIR, key);
    FILE *f = fopen(listing, "re");
    if (f == NULL)
        return errno == ENOENT ? 0 : -errno; /* never synced: an empty directory */
    int rc = 0;
    while (rc == 0 && fgets(line, sizeof(line), f)) {
        char type, ckey[PL_KEY_MAX], name[PL_LINE_MAX];
        line[strcspn(line, "\n")] = '\0';
        if (sscanf(line, "%c %63s %[^\n]", &type, ckey, name) != 3 ||
            (type != 'f' && type != 'd')) {
            rc = -EBADMSG;
            break;
        }
        snprintf(child, sizeof(child), "%s/%s", dst, name);
        rebuilt_names++;
        if (type == 'd') {
            rc = mkdir(child, 0700) ? -errno : build_dir(shadow, ckey, child, depth + 1);
        } else {
            rc = copy_file(shadow, ckey, child);
        }
    }
    fclose(f);
    return rc;
}

int pl_disk_rebuild(const char *shadow, const char *root)
{
    char marker[PATH_MAX], key[PL_KEY_MAX] = "";
    snprintf(marker, sizeof(marker), "%s/%s", shadow, PL_ROOT_FILE);
    FILE *f = fopen(marker, "re");
    if (f == NULL)
        return -errno;
    int ok = fscanf(f, "%63s", key) == 1;
    fclose(f);
    if (!ok)
        return -EBADMSG;
    int rc = rm_tree(root);
    if (rc)
        return rc;
    if (mkdir(root, 0700) != 0)
        return -errno;
    rebuilt_names = 0;
    rc = build_dir(shadow, key, root, 0);
    if (rc)
        return rc;
    return pl_disk_reset(shadow);
}

int pl_disk_reset(const char *shadow)
{
    char path[PATH_MAX];
    static const char *const subs[] = {PL_FILES_DIR, PL_DIRS_DIR, PL_ROOT_FILE, PL_FAIL_FILE,
                                       PL_SLOW_FILE};
    for (size_t i = 0; i < sizeof(subs) / sizeof(subs[0]); i++) {
        snprintf(path, sizeof(path), "%s/%s", shadow, subs[i]);
        int rc = rm_tree(path);
        if (rc)
            return rc;
    }
    return 0;
}

int pl_disk_fail_next(const char *shadow, const char *err_name, int always)
{
    char path[PATH_MAX], tmp[PATH_MAX + 8], text[64];
    snprintf(path, sizeof(path), "%s/%s", shadow, PL_FAIL_FILE);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int n = snprintf(text, sizeof(text), "%s%s\n", err_name, always ? " always" : "");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0)
        return -errno;
    int rc = write(fd, text, (size_t)n) == n ? 0 : -EIO;
    close(fd);
    if (rc == 0 && rename(tmp, path) != 0) /* the shim never sees half a file */
        rc = -errno;
    return rc;
}

int pl_disk_rebuilt_names(void)
{
    return rebuilt_names;
}

/* The shim's key of the inode at path (pl_shim.c key_of): 0 or -errno. */
static int key_at(const char *path, char key[PL_KEY_MAX], struct statx *st)
{
    if (statx(AT_FDCWD, path, AT_SYMLINK_NOFOLLOW, STATX_INO | STATX_BTIME | STATX_MTIME, st))
        return -errno;
    snprintf(key, PL_KEY_MAX, "%llx-%llx.%x", (unsigned long long)st->stx_ino,
             (unsigned long long)st->stx_btime.tv_sec, st->stx_btime.tv_nsec);
    return 0;
}

int pl_disk_dirty_hint(const char *shadow, const char *path)
{
    char key[PL_KEY_MAX], spath[PATH_MAX];
    struct statx real, dur;
    int rc = key_at(path, key, &real);
    if (rc)
        return rc;
    snprintf(spath, sizeof(spath), "%s/%s/%s", shadow, PL_FILES_DIR, key);
    if (statx(AT_FDCWD, spath, 0, STATX_MTIME | STATX_SIZE, &dur) != 0)
        return errno == ENOENT ? real.stx_size > 0 : -errno;
    if (real.stx_mtime.tv_sec != dur.stx_mtime.tv_sec)
        return real.stx_mtime.tv_sec > dur.stx_mtime.tv_sec;
    return real.stx_mtime.tv_nsec > dur.stx_mtime.tv_nsec;
}

/* Reads a whole file: a malloc'd buffer and its size in *len, or NULL (-errno in *len
 * as a negative value cast) when absent. */
static char *slurp(const char *path, long *len)
{
    FILE *f = fopen(path, "rbe");
    if (f == NULL) {
        *len = -errno;
        return NULL;
    }
    char *buf = NULL;
    size_t cap = 0, n = 0;
    for (;;) {
        if (n == cap) {
            cap = cap ? 2 * cap : 1 << 20;
            char *more = realloc(buf, cap);
            if (more == NULL) {
                free(buf);
                fclose(f);
                *len = -ENOMEM;
                return NULL;
            }
            buf = more;
        }
        size_t k = fread(buf + n, 1, cap - n, f);
        if (k == 0)
            break;
        n += k;
    }
    fclose(f);
    *len = (long)n;
    return buf;
}

int pl_disk_file_differs(const char *shadow, const char *path)
{
    char key[PL_KEY_MAX], spath[PATH_MAX];
    struct statx st;
    int rc = key_at(path, key, &st);
    if (rc)
        return rc;
    snprintf(spath, sizeof(spath), "%s/%s/%s", shadow, PL_FILES_DIR, key);
    long rn, dn;
    char *real = slurp(path, &rn);
    if (real == NULL)
        return (int)rn;
    char *dur = slurp(spath, &dn);
    if (dur == NULL && dn != -ENOENT) {
        free(real);
        return (int)dn;
    }
    int differs = dur == NULL ? rn > 0 : rn != dn || memcmp(real, dur, (size_t)rn) != 0;
    free(real);
    free(dur);
    return differs;
}

/* Whether name is among the names of the durable listing text. */
static bool listed(const char *listing, long len, const char *name)
{
    for (long at = 0; at < len;) {
        const char *line = listing + at, *nl = memchr(line, '\n', (size_t)(len - at));
        long end = nl ? nl - listing : len;
        char type, key[PL_KEY_MAX], lname[PL_LINE_MAX];
        char text[PL_LINE_MAX];
        snprintf(text, sizeof(text), "%.*s", (int)(end - at), line);
        if (sscanf(text, "%c %63s %[^\n]", &type, key, lname) == 3 && strcmp(lname, name) == 0)
            return true;
        at = end + 1;
    }
    return false;
}

int pl_disk_names_differ(const char *shadow, const char *dir)
{
    char key[PL_KEY_MAX], spath[PATH_MAX];
    struct statx st;
    int rc = key_at(dir, key, &st);
    if (rc)
        return rc;
    snprintf(spath, sizeof(spath), "%s/%s/%s", shadow, PL_DIRS_DIR, key);
    long len;
    char *listing = slurp(spath, &len);
    if (listing == NULL && len != -ENOENT)
        return (int)len;
    DIR *d = opendir(dir);
    if (d == NULL) {
        free(listing);
        return -errno;
    }
    long real = 0, lines = 0;
    int differs = 0;
    for (struct dirent *e; !differs && (e = readdir(d)) != NULL;) {
        if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0)
            continue;
        real++;
        differs = listing == NULL || !listed(listing, len, e->d_name);
    }
    closedir(d);
    for (long i = 0; listing && i < len; i++)
        lines += listing[i] == '\n';
    free(listing);
    return differs || lines != real;
}
