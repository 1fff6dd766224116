/*
 * rp_mock_kafka and kcat for the integration tests (see kafka_client.h).
 */
#define _GNU_SOURCE
#include "kafka_client.h"

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KC_START_MS 10000
#define KC_CMD_MS   10000

static int64_t now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* One line from the cluster within timeout_ms (without the newline). */
static int mock_line(struct kc_mock *m, char *line, size_t cap, int timeout_ms)
{
    int64_t deadline = now_ms() + timeout_ms;
    for (;;) {
        char *nl = memchr(m->buf, '\n', m->len);
        if (nl) {
            size_t n = (size_t)(nl - m->buf);
            snprintf(line, cap, "%.*s", (int)n, m->buf);
            memmove(m->buf, nl + 1, m->len - n - 1);
            m->len -= n + 1;
            return 0;
        }
        int left = (int)(deadline - now_ms());
        if (left <= 0 || m->len == sizeof(m->buf))
            return -ETIMEDOUT;
        struct pollfd p = {.fd = m->from, .events = POLLIN};
        if (poll(&p, 1, left) <= 0)
            continue;
        ssize_t got = read(m->from, m->buf + m->len, sizeof(m->buf) - m->len);
        if (got <= 0)
            return -EPIPE;
        m->len += (size_t)got;
    }
}

int kc_mock_start(struct kc_mock *m, const char *bin)
{
    memset(m, 0, sizeof(*m));
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
        execl(bin, bin, "3", (char *)NULL);
        _exit(127);
    }
    close(in[0]);
    close(out[1]);
    m->pid = pid;
    m->to = in[1];
    m->from = out[0];
    char line[sizeof(m->bootstrap) + 10]; /* "bootstrap " and the address */
    int rc = mock_line(m, line, sizeof(line), KC_START_MS);
    if (rc == 0 && strncmp(line, "bootstrap ", 10) != 0)
        rc = -EPROTO;
    if (rc) {
        kc_mock_stop(m);
        return rc;
    }
    snprintf(m->bootstrap, sizeof(m->bootstrap), "%s", line + 10);
    return 0;
}

int kc_mock_cmd(struct kc_mock *m, const char *cmd)
{
    char line[256];
    int n = snprintf(line, sizeof(line), "%s\n", cmd);
    if (write(m->to, line, (size_t)n) != n)
        return -EPIPE;
    int rc = mock_line(m, line, sizeof(line), KC_CMD_MS);
    if (rc)
        return rc;
    return strcmp(line, "ok") == 0 ? 0 : -EPROTO;
}

void kc_mock_stop(struct kc_mock *m)
{
    if (m->pid <= 0)
        return;
    ssize_t w = write(m->to, "quit\n", 5);
    (void)w;
    close(m->to);
    close(m->from);
    int64_t deadline = now_ms() + 5000;
    int st;
    while (waitpid(m->pid, &st, WNOHANG) == 0) {
        if (now_ms() > deadline) {
            kill(m->pid, SIGKILL);
            waitpid(m->pid, &st, 0);
            break;
        }
        usleep(10000);
    }
    m->pid = 0;
}

int kc_run(const char *const argv[], const char *input, int timeout_ms, char **output)
{
    int in[2], out[2];
    if (pipe2(in, O_CLOEXEC))
        return -errno;
    if (pipe2(out, O_CLOEXEC)) {
        int e = -errno;
        close(in[0]);
        close(in[1]);
        return e;
    }
    pid_t pid = fork();
    if (pid < 0) {
        int e = -errno;
        close(in[0]);
        close(in[1]);
        close(out[0]);
        close(out[1]);
        return e;
    }
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
            if (bigger == NULL) {
                free(buf);
                buf = NULL;
                kill(pid, SIGKILL);
                break;
            }
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

/* "topic \t partition \t offset \t key \t value" into msg. */
static int parse_line(char *line, struct kc_msg *msg)
{
    memset(msg, 0, sizeof(*msg));
    char *f[5] = {line};
    for (int k = 1; k < 5; k++) {
        f[k] = strchr(f[k - 1], '\t');
        if (f[k] == NULL)
            return -EPROTO;
        *f[k]++ = '\0';
    }
    snprintf(msg->topic, sizeof(msg->topic), "%s", f[0]);
    msg->partition = atoi(f[1]);
    msg->offset = atoll(f[2]);
    snprintf(msg->key, sizeof(msg->key), "%s", f[3]);
    static const char id_key[] = "{\"event_id\":\"";
    if (strncmp(f[4], id_key, sizeof(id_key) - 1) != 0)
        return -EPROTO;
    const char *id = f[4] + sizeof(id_key) - 1;
    size_t id_len = strcspn(id, "\"");
    if (id_len >= sizeof(msg->event_id))
        return -EPROTO;
    memcpy(msg->event_id, id, id_len);
    if (sscanf(msg->event_id, "evt_%2x_%16llx", &msg->shard, &msg->seq) != 2)
        return -EPROTO;
    msg->payload = strdup(f[4]);
    return msg->payload ? 0 : -ENOMEM;
}

int kc_consume(const char *bootstrap, const char *topic, int timeout_ms, struct kc_msg *msgs,
               size_t max, size_t *n)
{
    const char *const argv[] = {"kcat", "-b",        bootstrap, "-C", "-t", topic,
                                "-o",   "beginning", "-e",      "-q", "-f", "%t\t%p\t%o\t%k\t%s\n",
                                NULL};
    char *out = NULL;
    int code = kc_run(argv, NULL, timeout_ms, &out);
    if (out == NULL)
        return code ? code : -ENOMEM;
    int rc = code;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); rc == 0 && line;
         line = strtok_r(NULL, "\n", &save)) {
        if (*n == max)
            rc = -ENOSPC;
        else if ((rc = parse_line(line, &msgs[*n])) == 0)
            (*n)++;
    }
    free(out);
    return rc;
}

void kc_free(struct kc_msg *msgs, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        free(msgs[i].payload);
        msgs[i].payload = NULL;
    }
}
