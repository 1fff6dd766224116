/*
 * kcat for settle's tests (see kcat.h).
 */
#define _GNU_SOURCE
#include "kcat.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* Runs argv with `input` on its stdin and its stdout captured (malloc'd, or NULL), at
 * most timeout_ms. Returns the exit code, -ETIMEDOUT, or -errno. */
static int run(const char *const argv[], const char *input, int timeout_ms, char **output)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC) || pipe2(out, O_CLOEXEC))
        return -errno;
    pid_t pid = fork();
    if (pid < 0)
        return -errno;
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        dup2(in[0], 0);
        dup2(out[1], 1);
        execvp(argv[0], (char *const *)argv);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    if (input) {
        size_t len = strlen(input), off = 0;
        while (off < len) {
            ssize_t w = write(in[1], input + off, len - off);
            if (w <= 0)
                break;
            off += (size_t)w;
        }
    }
    close(in[1]);
    size_t cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    int64_t deadline = now_ms() + timeout_ms;
    bool killed = false;
    while (buf) {
        int left = (int)(deadline - now_ms());
        if (left <= 0) {
            kill(pid, SIGKILL);
            killed = true;
            break;
        }
        struct pollfd p = {.fd = out[0], .events = POLLIN};
        if (poll(&p, 1, left) <= 0)
            continue;
        if (len + 65536 > cap) {
            char *bigger = realloc(buf, cap * 2);
            if (bigger == NULL)
                break;
            buf = bigger;
            cap *= 2;
        }
        ssize_t got = read(out[0], buf + len, cap - len - 1);
        if (got <= 0)
            break;
        len += (size_t)got;
    }
    close(out[0]);
    int st = 0;
    waitpid(pid, &st, 0);
    if (buf)
        buf[len] = '\0';
    if (output)
        *output = buf;
    else
        free(buf);
    return killed ? -ETIMEDOUT : WIFEXITED(st) ? WEXITSTATUS(st) : -ECHILD;
}

int kcat_produce(const char *bootstrap, const char *topic, const char *key, const char *value)
{
    const char *const argv[] = {"kcat", "-b", bootstrap, "-P", "-t", topic, "-K", "\t", "-q", NULL};
    char *line;
    if (asprintf(&line, "%s\t%s\n", key, value) < 0)
        return -ENOMEM;
    int rc = run(argv, line, 20000, NULL);
    free(line);
    return rc;
}

int kcat_consume(const char *bootstrap, const char *topic, int timeout_ms, struct kcat_msg **out,
                 size_t *n)
{
    const char *const argv[] = {"kcat", "-b",        bootstrap, "-C", "-t", topic,
                                "-o",   "beginning", "-e",      "-q", "-f", "%p\t%o\t%k\t%s\n",
                                NULL};
    char *text = NULL;
    int rc = run(argv, NULL, timeout_ms, &text);
    *out = NULL;
    *n = 0;
    if (text == NULL)
        return rc ? rc : -ENOMEM;
    size_t cap = 0;
    char *save = NULL;
    for (char *line = strtok_r(text, "\n", &save); rc == 0 && line;
         line = strtok_r(NULL, "\n", &save)) {
        char *f[4] = {line};
        for (int k = 1; k < 4 && rc == 0; k++) {
            f[k] = strchr(f[k - 1], '\t');
            if (f[k] == NULL)
                rc = -EPROTO;
            else
                *f[k]++ = '\0';
        }
        if (rc)
            break;
        if (*n == cap) {
            cap = cap ? 2 * cap : 256;
            struct kcat_msg *m = realloc(*out, cap * sizeof(**out));
            if (m == NULL) {
                rc = -ENOMEM;
                break;
            }
            *out = m;
        }
        struct kcat_msg *m = &(*out)[(*n)++];
        m->partition = atoi(f[0]);
        m->offset = atoll(f[1]);
        snprintf(m->key, sizeof(m->key), "%s", f[2]);
        m->value = strdup(f[3]);
    }
    free(text);
    return rc;
}

void kcat_free(struct kcat_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(msgs[i].value);
    free(msgs);
}

size_t kcat_distinct_event_ids(const struct kcat_msg *msgs, size_t n)
{
    size_t distinct = 0;
    for (size_t i = 0; i < n; i++) {
        const char *a = msgs[i].value ? strstr(msgs[i].value, "\"event_id\":\"") : NULL;
        if (a == NULL)
            continue;
        size_t alen = strcspn(a + 12, "\"");
        bool seen = false;
        for (size_t j = 0; j < i && !seen; j++) {
            const char *b = msgs[j].value ? strstr(msgs[j].value, "\"event_id\":\"") : NULL;
            seen = b && strcspn(b + 12, "\"") == alen && memcmp(a + 12, b + 12, alen) == 0;
        }
        distinct += !seen;
    }
    return distinct;
}
