/*
 * settle's --tz through glibc's tz database reader (tools/settle/tz.h).
 */
#include "tools/settle/tz.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* A relative path of [A-Za-z0-9_+-] components separated by single '/'. */
static int name_ok(const char *name)
{
    size_t n = strlen(name);
    if (n == 0 || n > SETTLE_TZ_NAME_MAX || name[0] == '/' || name[n - 1] == '/')
        return 0;
    for (size_t i = 0; i < n; i++) {
        char c = name[i];
        int ok = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
                 c == '_' || c == '+' || c == '-' || (c == '/' && name[i + 1] != '/');
        if (!ok)
            return 0;
    }
    return strstr(name, "..") == NULL;
}

/* Whether DIR/name is a TZif file. */
static int zone_file_ok(const char *name)
{
    const char *dir = getenv("TZDIR");
    char path[512];
    char magic[4];
    snprintf(path, sizeof(path), "%s/%s", dir && *dir ? dir : "/usr/share/zoneinfo", name);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return 0;
    ssize_t got = read(fd, magic, sizeof(magic));
    close(fd);
    return got == 4 && memcmp(magic, "TZif", 4) == 0;
}

int settle_tz_set(const char *name, char *why, size_t why_bytes)
{
    if (name == NULL || !name_ok(name)) {
        snprintf(why, why_bytes, "--tz: not a time zone name (e.g. UTC, Europe/Berlin)");
        return -EINVAL;
    }
    if (strcmp(name, "UTC") != 0 && !zone_file_ok(name)) {
        snprintf(why, why_bytes, "--tz: no time zone %s in the tz database", name);
        return -ENOENT;
    }
    if (setenv("TZ", name, 1) != 0) {
        snprintf(why, why_bytes, "--tz: cannot set TZ");
        return -errno;
    }
    tzset();
    return 0;
}

int settle_tz_offset(void *arg, int64_t utc_ms, int32_t *offset_s)
{
    (void)arg;
    int64_t s = utc_ms / 1000 - (utc_ms % 1000 < 0);
    time_t t = (time_t)s;
    struct tm tm;
    if (localtime_r(&t, &tm) == NULL)
        return -ERANGE;
    *offset_s = (int32_t)tm.tm_gmtoff;
    return 0;
}
