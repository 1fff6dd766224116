/*
 * Integration-test harness: processes, sockets, an HTTP/1.1 response reader, a
 * Prometheus text reader and cmocka helpers. Contract in harness.h.
 *
 * Invariants: every socket is opened with SOCK_CLOEXEC (a spawned server never inherits
 * a test's client sockets); every wait has a deadline; a spawned server is recorded in
 * a small table by pid and directory (not by pointer, since a failed cmocka test
 * unwinds the stack that held its struct) so rp_teardown and atexit can always reap it.
 */
#define _GNU_SOURCE
#include "harness.h"

#include "net/log.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <setjmp.h>
#include <cmocka.h>

#define JSMN_STATIC
#include <jsmn.h>

#ifndef RINGPAY_BIN
#error "RINGPAY_BIN must name the ringpay binary (tests/integration/CMakeLists.txt)"
#endif

extern char **environ;

#define RP_ARGS_MAX  64
#define RP_ENV_MAX   512
#define RP_LIVE_MAX  32
#define RP_PORT_SPAN 100
#define RP_HEAD_MAX  (256 * 1024)
#define RP_BUF_MAX   (64 * 1024 * 1024)

/* ---- time ----------------------------------------------------------------------- */

int64_t rp_now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

void rp_sleep_ms(int ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
        ;
}

static int ms_left(int64_t deadline)
{
    int64_t left = deadline - rp_now_ms();
    return left < 0 ? 0 : (int)left;
}

/* ---- live servers ---------------------------------------------------------------- */

struct live_entry {
    pid_t pid;
    char dir[RP_PATH_MAX];
};

static struct live_entry live[RP_LIVE_MAX];
static bool atexit_done;

static void remove_tree(const char *dir);

static void live_kill_all(void)
{
    for (int i = 0; i < RP_LIVE_MAX; i++) {
        if (live[i].pid > 0) {
            kill(live[i].pid, SIGKILL);
            waitpid(live[i].pid, NULL, 0);
            live[i].pid = 0;
        }
        if (live[i].dir[0]) {
            remove_tree(live[i].dir);
            live[i].dir[0] = '\0';
        }
    }
}

static void live_add(pid_t pid, const char *dir)
{
    if (!atexit_done) {
        atexit(live_kill_all);
        atexit_done = true;
    }
    for (int i = 0; i < RP_LIVE_MAX; i++) { /* a restart in the same directory */
        if (live[i].dir[0] && strcmp(live[i].dir, dir) == 0 && live[i].pid == 0) {
            live[i].pid = pid;
            return;
        }
    }
    for (int i = 0; i < RP_LIVE_MAX; i++) {
        if (live[i].pid == 0 && live[i].dir[0] == '\0') {
            live[i].pid = pid;
            snprintf(live[i].dir, sizeof(live[i].dir), "%s", dir);
            return;
        }
    }
}

/* Forgets the entry of dir: its process was reaped (pid) or its directory removed. */
static void live_forget(const char *dir, bool reaped, bool removed)
{
    for (int i = 0; i < RP_LIVE_MAX; i++) {
        if (live[i].dir[0] && strcmp(live[i].dir, dir) == 0) {
            if (reaped)
                live[i].pid = 0;
            if (removed)
                live[i].dir[0] = '\0';
        }
    }
}

int rp_teardown(void **state)
{
    (void)state;
    live_kill_all();
    return 0;
}

static int rm_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw)
{
    (void)sb;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

static void remove_tree(const char *dir)
{
    if (getenv("RP_ITEST_KEEP")) { /* debugging: keep the data directories */
        fprintf(stderr, "kept %s\n", dir);
        return;
    }
    if (dir[0] && strncmp(dir, "/tmp/", 5) == 0)
        nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- processes ------------------------------------------------------------------ */

/* A copy of environ without RINGPAY_* entries, plus extra. Pointers into environ and
 * extra; the array itself is static (tests are single-threaded). */
static char **child_env(const char *const extra[])
{
    static char *env[RP_ENV_MAX + 1];
    int n = 0;
    for (char **e = environ; *e && n < RP_ENV_MAX - 32; e++) {
        if (strncmp(*e, "RINGPAY_", 8) != 0)
            env[n++] = *e;
    }
    /* Engines run unsigned unless a test asks for the gate (see harness.h). */
    env[n++] = (char *)"RINGPAY_AUTH=off";
    /* Small log segments and overlay layers: engines start fast (a segment is
     * zero-filled before use) and tests reach segment switches and checkpoints. */
    env[n++] = (char *)"RINGPAY_WAL_SEGMENT_MB=2";
    env[n++] = (char *)"RINGPAY_OVERLAY_MB=16";
    for (int i = 0; extra && extra[i] && n < RP_ENV_MAX; i++)
        env[n++] = (char *)extra[i];
    env[n] = NULL;
    return env;
}

/* In the child: die with the parent, redirect output, run the hook, exec. */
static void child_exec(char *const argv[], char **envp, int out_fd, int err_fd,
                       rp_pre_exec_fn pre_exec)
{
    prctl(PR_SET_PDEATHSIG, SIGKILL);
    int devnull = open("/dev/null", O_RDONLY);
    if (devnull >= 0)
        dup2(devnull, 0);
    if (dup2(out_fd, 1) < 0 || dup2(err_fd, 2) < 0)
        _exit(126);
    signal(SIGPIPE, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    if (pre_exec)
        pre_exec();
    execve(argv[0], argv, envp);
    _exit(127);
}

static pid_t spawn(const char *const args[], const char *const extra_env[], int out_fd, int err_fd,
                   rp_pre_exec_fn pre_exec)
{
    char *argv[RP_ARGS_MAX + 2];
    int n = 0;
    argv[n++] = (char *)RINGPAY_BIN;
    for (int i = 0; args && args[i] && n < RP_ARGS_MAX; i++)
        argv[n++] = (char *)args[i];
    argv[n] = NULL;
    char **envp = child_env(extra_env);
    pid_t pid = fork();
    if (pid == 0)
        child_exec(argv, envp, out_fd, err_fd, pre_exec);
    return pid < 0 ? -errno : pid;
}

/* Waits for pid until deadline; returns the rp code (exit code or 128+signal) or
 * -ETIMEDOUT. *raw gets the wait status. */
static int wait_deadline(pid_t pid, int64_t deadline, int *raw)
{
    for (;;) {
        int st = 0;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            if (raw)
                *raw = st;
            if (WIFEXITED(st))
                return WEXITSTATUS(st);
            return 128 + WTERMSIG(st);
        }
        if (r < 0 && errno != EINTR)
            return -errno;
        if (rp_now_ms() >= deadline)
            return -ETIMEDOUT;
        rp_sleep_ms(5);
    }
}

static void read_file_into(const char *path, char *out, size_t cap)
{
    out[0] = '\0';
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    size_t len = 0;
    ssize_t n;
    while (len + 1 < cap && (n = read(fd, out + len, cap - 1 - len)) > 0)
        len += (size_t)n;
    out[len] = '\0';
    close(fd);
}

int rp_run(const char *const args[], const char *const extra_env[], rp_pre_exec_fn pre_exec,
           int timeout_ms, struct rp_run_result *res)
{
    char dir[] = "/tmp/ringpay-run-XXXXXX";
    char out_path[RP_PATH_MAX], err_path[RP_PATH_MAX];
    memset(res, 0, sizeof(*res));
    if (!mkdtemp(dir))
        return -errno;
    snprintf(out_path, sizeof(out_path), "%s/out", dir);
    snprintf(err_path, sizeof(err_path), "%s/err", dir);
    int out_fd = open(out_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int err_fd = open(err_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    int err = 0;
    if (out_fd < 0 || err_fd < 0) {
        err = -errno;
        goto out_close;
    }
    pid_t pid = spawn(args, extra_env, out_fd, err_fd, pre_exec);
    if (pid < 0) {
        err = pid;
        goto out_close;
    }
    int raw = 0;
    res->code = wait_deadline(pid, rp_now_ms() + timeout_ms, &raw);
    if (res->code == -ETIMEDOUT) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
        res->signaled = true;
    } else {
        res->signaled = WIFSIGNALED(raw);
    }
    read_file_into(out_path, res->out, sizeof(res->out));
    read_file_into(err_path, res->err, sizeof(res->err));
out_close:
    if (out_fd >= 0)
        close(out_fd);
    if (err_fd >= 0)
        close(err_fd);
    remove_tree(dir);
    return err;
}

int rp_count_lines(const char *s)
{
    int n = 0;
    const char *p = s;
    while (*p) {
        const char *nl = strchr(p, '\n');
        n++;
        if (!nl)
            break;
        p = nl + 1;
    }
    return n;
}

/* ---- server --------------------------------------------------------------------- */

int rp_server_spawn(struct rp_server *s, const char *const extra_args[],
                    const char *const extra_env[], rp_pre_exec_fn pre_exec)
{
    memset(s, 0, sizeof(*s));
    s->port = rp_pick_port();
    if (s->port < 0)
        return s->port;
    snprintf(s->dir, sizeof(s->dir), "/tmp/ringpay-itest-XXXXXX");
    if (!mkdtemp(s->dir))
        return -errno;
    snprintf(s->data_dir, sizeof(s->data_dir), "%.400s/data", s->dir);
    snprintf(s->log_path, sizeof(s->log_path), "%.400s/stderr.log", s->dir);
    if (mkdir(s->data_dir, 0700) != 0)
        return -errno;
    int log_fd = open(s->log_path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (log_fd < 0)
        return -errno;
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", s->port);
    const char *args[RP_ARGS_MAX + 1] = {"serve", "--listen", listen, "--data", s->data_dir};
    int n = 5;
    for (int i = 0; extra_args && extra_args[i] && n < RP_ARGS_MAX; i++)
        args[n++] = extra_args[i];
    args[n] = NULL;
    pid_t pid = spawn(args, extra_env, log_fd, log_fd, pre_exec);
    close(log_fd);
    if (pid < 0)
        return pid;
    s->pid = pid;
    live_add(pid, s->dir);
    return 0;
}

int rp_server_prepare(struct rp_server *s)
{
    memset(s, 0, sizeof(*s));
    snprintf(s->dir, sizeof(s->dir), "/tmp/ringpay-itest-XXXXXX");
    if (!mkdtemp(s->dir))
        return -errno;
    snprintf(s->data_dir, sizeof(s->data_dir), "%.400s/data", s->dir);
    snprintf(s->log_path, sizeof(s->log_path), "%.400s/stderr.log", s->dir);
    if (mkdir(s->data_dir, 0700) != 0)
        return -errno;
    live_add(0, s->dir);
    return 0;
}

static bool healthz_ok(int port);

int rp_server_respawn(struct rp_server *s, const char *command, const char *const extra_args[],
                      const char *const extra_env[])
{
    if (s->pid > 0)
        return -EBUSY;
    s->port = rp_pick_port();
    if (s->port < 0)
        return s->port;
    int log_fd = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0)
        return -errno;
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", s->port);
    const char *args[RP_ARGS_MAX + 1] = {command, "--listen", listen, "--data", s->data_dir};
    int n = 5;
    for (int i = 0; extra_args && extra_args[i] && n < RP_ARGS_MAX; i++)
        args[n++] = extra_args[i];
    args[n] = NULL;
    pid_t pid = spawn(args, extra_env, log_fd, log_fd, NULL);
    close(log_fd);
    if (pid < 0)
        return pid;
    s->pid = pid;
    live_add(pid, s->dir);
    for (int64_t deadline = rp_now_ms() + RP_READY_TIMEOUT_MS; rp_now_ms() < deadline;
         rp_sleep_ms(50)) {
        if (!rp_server_alive(s)) {
            fprintf(stderr, "harness: ringpay %s exited during start (status %d)\n", command,
                    s->wait_status);
            rp_server_dump_log(s, 8192);
            return -ECHILD;
        }
        if (healthz_ok(s->port))
            return 0;
    }
    fprintf(stderr, "harness: ringpay %s not ready within %d ms\n", command, RP_READY_TIMEOUT_MS);
    rp_server_dump_log(s, 8192);
    kill(pid, SIGKILL);
    rp_server_wait(s, RP_STOP_TIMEOUT_MS);
    return -ETIMEDOUT;
}

/* One GET /healthz with a short timeout: true on 200. */
static bool healthz_ok(int port)
{
    struct rp_conn c;
    if (rp_conn_open(&c, port) != 0)
        return false;
    bool ok = false;
    struct rp_response r;
    if (rp_send_str(c.fd, "GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                          "Connection: close\r\n\r\n") == 0 &&
        rp_read_response(&c, &r, false, 1000) == 0) {
        ok = r.status == 200;
        rp_response_free(&r);
    }
    rp_conn_close(&c);
    return ok;
}

int rp_server_start(struct rp_server *s, const char *const extra_args[],
                    const char *const extra_env[])
{
    int err = rp_server_spawn(s, extra_args, extra_env, NULL);
    if (err)
        return err;
    int64_t deadline = rp_now_ms() + RP_READY_TIMEOUT_MS;
    while (rp_now_ms() < deadline) {
        if (!rp_server_alive(s)) {
            fprintf(stderr, "harness: ringpay exited during start (status %d)\n", s->wait_status);
            rp_server_dump_log(s, 8192);
            rp_server_stop(s);
            return -ECHILD;
        }
        if (healthz_ok(s->port))
            return 0;
        rp_sleep_ms(50);
    }
    fprintf(stderr, "harness: ringpay not ready within %d ms\n", RP_READY_TIMEOUT_MS);
    rp_server_dump_log(s, 8192);
    rp_server_stop(s);
    return -ETIMEDOUT;
}

int rp_server_signal(struct rp_server *s, int sig)
{
    if (s->pid <= 0)
        return -ESRCH;
    return kill(s->pid, sig) == 0 ? 0 : -errno;
}

int rp_server_wait(struct rp_server *s, int timeout_ms)
{
    if (s->pid <= 0)
        return WIFEXITED(s->wait_status) ? WEXITSTATUS(s->wait_status)
                                         : 128 + WTERMSIG(s->wait_status);
    int code = wait_deadline(s->pid, rp_now_ms() + timeout_ms, &s->wait_status);
    if (code != -ETIMEDOUT) {
        s->pid = 0;
        live_forget(s->dir, true, false);
    }
    return code;
}

bool rp_server_alive(struct rp_server *s)
{
    if (s->pid <= 0)
        return false;
    return rp_server_wait(s, 0) == -ETIMEDOUT;
}

void rp_server_dump_log(const struct rp_server *s, size_t max_bytes)
{
    int fd = open(s->log_path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return;
    off_t size = lseek(fd, 0, SEEK_END);
    off_t from = size > (off_t)max_bytes ? size - (off_t)max_bytes : 0;
    lseek(fd, from, SEEK_SET);
    char buf[4096];
    ssize_t n;
    fprintf(stderr, "---- ringpay log (%s, last %zu bytes) ----\n", s->log_path, max_bytes);
    while ((n = read(fd, buf, sizeof(buf))) > 0)
        fwrite(buf, 1, (size_t)n, stderr);
    fprintf(stderr, "---- end of log ----\n");
    close(fd);
}

/* Every server log a test produced is scanned for what must never be logged (SPEC §6):
 * an unmasked card-like number, a secret, a signature, or one of the canaries a test
 * registered. Returns true when the log is clean (or cannot be read). */
static const char *canaries[RP_CANARIES_MAX];
static size_t ncanaries;

void rp_log_canary(const char *text)
{
    if (ncanaries < RP_CANARIES_MAX)
        canaries[ncanaries++] = text;
}

static bool log_is_clean(const struct rp_server *s)
{
    FILE *f = fopen(s->log_path, "r");
    if (f == NULL)
        return true;
    static char text[4 << 20];
    size_t n = fread(text, 1, sizeof(text) - 1, f);
    fclose(f);
    text[n] = '\0';
    const char *what = NULL;
    long at = log_find_leak(text, n, canaries, ncanaries, &what);
    if (at < 0)
        return true;
    const char *line = text + at;
    while (line > text && line[-1] != '\n')
        line--;
    const char *end = strchr(text + at, '\n');
    fprintf(stderr, "harness: the server log leaks %s:\n%.*s\n", what ? what : "something",
            (int)((end ? end : text + n) - line), line);
    return false;
}

int rp_server_stop(struct rp_server *s)
{
    int code = 0;
    if (s->pid > 0) {
        rp_server_signal(s, SIGTERM);
        code = rp_server_wait(s, RP_STOP_TIMEOUT_MS);
        if (code == -ETIMEDOUT) {
            rp_server_signal(s, SIGKILL);
            rp_server_wait(s, RP_STOP_TIMEOUT_MS);
        }
    } else if (s->dir[0]) {
        code = rp_server_wait(s, 0);
    }
    if (code != 0 && s->dir[0])
        rp_server_dump_log(s, 4096);
    if (s->dir[0] && code == 0 && !log_is_clean(s))
        code = RP_LOG_LEAK;
    if (s->dir[0]) {
        remove_tree(s->dir);
        live_forget(s->dir, true, true);
        s->dir[0] = '\0';
    }
    return code;
}

/* ---- sockets -------------------------------------------------------------------- */

long rp_raise_nofile(long want)
{
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
        return -errno;
    if (rl.rlim_cur < (rlim_t)want) {
        rl.rlim_cur = rl.rlim_max < (rlim_t)want ? rl.rlim_max : (rlim_t)want;
        if (setrlimit(RLIMIT_NOFILE, &rl) != 0)
            return -errno;
    }
    return (long)rl.rlim_cur;
}

static struct sockaddr_in loopback(int port)
{
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    return a;
}

int rp_pick_port(void)
{
    static int next;
    const char *env = getenv("RP_ITEST_PORT_BASE");
    int base = env ? atoi(env) : 21000;
    for (int tries = 0; tries < RP_PORT_SPAN; tries++) {
        int port = base + (next++ % RP_PORT_SPAN);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -errno;
        struct sockaddr_in a = loopback(port);
        int ok = bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0;
        close(fd);
        if (ok)
            return port;
    }
    return -EADDRINUSE;
}

int rp_connect(int port, int timeout_ms)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return -errno;
    struct sockaddr_in a = loopback(port);
    int err = 0;
    if (connect(fd, (struct sockaddr *)&a, sizeof(a)) != 0) {
        if (errno != EINPROGRESS) {
            err = -errno;
            goto out_close;
        }
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        int n = poll(&p, 1, timeout_ms);
        if (n <= 0) {
            err = n == 0 ? -ETIMEDOUT : -errno;
            goto out_close;
        }
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr, &sl);
        if (soerr) {
            err = -soerr;
            goto out_close;
        }
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) & ~O_NONBLOCK);
    return fd;
out_close:
    close(fd);
    return err;
}

int rp_send_all(int fd, const void *buf, size_t len)
{
    const char *p = buf;
    int64_t deadline = rp_now_ms() + RP_IO_TIMEOUT_MS;
    while (len > 0) {
        struct pollfd pf = {.fd = fd, .events = POLLOUT};
        int n = poll(&pf, 1, ms_left(deadline));
        if (n == 0)
            return -ETIMEDOUT;
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -errno;
        }
        ssize_t w = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
        if (w < 0) {
            if (errno == EAGAIN || errno == EINTR)
                continue;
            return -errno;
        }
        p += w;
        len -= (size_t)w;
    }
    return 0;
}

int rp_send_str(int fd, const char *s)
{
    return rp_send_all(fd, s, strlen(s));
}

void rp_close_rst(int fd)
{
    struct linger l = {.l_onoff = 1, .l_linger = 0};
    setsockopt(fd, SOL_SOCKET, SO_LINGER, &l, sizeof(l));
    close(fd);
}

/* ---- connection buffer ---------------------------------------------------------- */

int rp_conn_init(struct rp_conn *c, int fd)
{
    c->fd = fd;
    c->len = 0;
    c->cap = 16384;
    c->buf = malloc(c->cap);
    return c->buf ? 0 : -ENOMEM;
}

int rp_conn_open(struct rp_conn *c, int port)
{
    memset(c, 0, sizeof(*c));
    c->fd = -1;
    int fd = rp_connect(port, RP_IO_TIMEOUT_MS);
    if (fd < 0)
        return fd;
    int err = rp_conn_init(c, fd);
    if (err)
        close(fd);
    return err;
}

void rp_conn_close(struct rp_conn *c)
{
    if (c->fd >= 0)
        close(c->fd);
    c->fd = -1;
    free(c->buf);
    c->buf = NULL;
    c->len = c->cap = 0;
}

/* Reads more bytes before deadline. Returns the count (> 0), 0 on FIN, -ECONNRESET on
 * RST, -ETIMEDOUT, -ENOMEM or another -errno. */
static int conn_fill(struct rp_conn *c, int64_t deadline)
{
    if (c->len == c->cap) {
        if (c->cap >= RP_BUF_MAX)
            return -ENOMEM;
        char *nb = realloc(c->buf, c->cap * 2);
        if (!nb)
            return -ENOMEM;
        c->buf = nb;
        c->cap *= 2;
    }
    for (;;) {
        struct pollfd pf = {.fd = c->fd, .events = POLLIN};
        int n = poll(&pf, 1, ms_left(deadline));
        if (n == 0)
            return -ETIMEDOUT;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        ssize_t r = recv(c->fd, c->buf + c->len, c->cap - c->len, MSG_DONTWAIT);
        if (r > 0) {
            c->len += (size_t)r;
            return (int)r;
        }
        if (r == 0)
            return 0;
        if (errno == EAGAIN || errno == EINTR)
            continue;
        return -errno;
    }
}

static void conn_consume(struct rp_conn *c, size_t n)
{
    memmove(c->buf, c->buf + n, c->len - n);
    c->len -= n;
}

int rp_conn_wait_close(struct rp_conn *c, int timeout_ms, size_t *extra)
{
    int64_t deadline = rp_now_ms() + timeout_ms;
    size_t total = c->len;
    c->len = 0;
    for (;;) {
        int n = conn_fill(c, deadline);
        if (n > 0) {
            total += (size_t)n;
            c->len = 0;
            continue;
        }
        if (extra)
            *extra = total;
        if (n == -ETIMEDOUT)
            return -ETIMEDOUT;
        return 0; /* FIN, RST or another error: the connection is gone */
    }
}

/* ---- response parsing ----------------------------------------------------------- */

static bool is_tchar(int ch)
{
    return isalnum(ch) || (ch && strchr("!#$%&'*+-.^_`|~", ch));
}

/* Splits the private head copy into status line and headers. */
static int parse_head(struct rp_response *r)
{
    char *p = r->head;
    char *eol = strstr(p, "\r\n");
    if (!eol || strncmp(p, "HTTP/1.", 7) != 0 || !isdigit((unsigned char)p[7]) || p[8] != ' ' ||
        !isdigit((unsigned char)p[9]) || !isdigit((unsigned char)p[10]) ||
        !isdigit((unsigned char)p[11]) || (p[12] != ' ' && p + 12 != eol))
        return -EPROTO;
    r->version_minor = p[7] - '0';
    r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
    *eol = '\0';
    r->reason = p + 12 < eol ? p + 13 : "";
    for (p = eol + 2; *p; p = eol + 2) {
        eol = strstr(p, "\r\n");
        if (!eol || r->header_count == RP_RESP_HEADERS_MAX)
            return -EPROTO;
        *eol = '\0';
        char *colon = strchr(p, ':');
        if (!colon || colon == p)
            return -EPROTO;
        for (char *q = p; q < colon; q++)
            if (!is_tchar((unsigned char)*q))
                return -EPROTO;
        *colon = '\0';
        char *v = colon + 1;
        while (*v == ' ' || *v == '\t')
            v++;
        char *end = v + strlen(v);
        while (end > v && (end[-1] == ' ' || end[-1] == '\t'))
            *--end = '\0';
        r->headers[r->header_count].name = p;
        r->headers[r->header_count].value = v;
        r->header_count++;
    }
    return 0;
}

/* Decodes a chunked body at p[0..n). Returns 1 and fills out/used when complete, 0 when
 * more bytes are needed, -EPROTO when malformed. */
static int parse_chunked(const char *p, size_t n, char **out, size_t *out_len, size_t *used)
{
    size_t pos = 0, blen = 0;
    char *body = malloc(n + 1);
    if (!body)
        return -ENOMEM;
    for (;;) {
        const char *eol = memmem(p + pos, n - pos, "\r\n", 2);
        if (!eol)
            goto out_more;
        char *endp;
        errno = 0;
        unsigned long long size = strtoull(p + pos, &endp, 16);
        if (endp == p + pos || !isxdigit((unsigned char)p[pos]) || errno ||
            (endp != eol && *endp != ';') || size > n)
            goto out_proto;
        pos = (size_t)(eol - p) + 2;
        if (size == 0)
            break;
        if (n - pos < size + 2)
            goto out_more;
        memcpy(body + blen, p + pos, size);
        blen += size;
        pos += size;
        if (memcmp(p + pos, "\r\n", 2) != 0)
            goto out_proto;
        pos += 2;
    }
    for (;;) { /* trailers up to the empty line */
        const char *eol = memmem(p + pos, n - pos, "\r\n", 2);
        if (!eol)
            goto out_more;
        bool empty = eol == p + pos;
        pos = (size_t)(eol - p) + 2;
        if (empty)
            break;
    }
    body[blen] = '\0';
    *out = body;
    *out_len = blen;
    *used = pos;
    return 1;
out_more:
    free(body);
    return 0;
out_proto:
    free(body);
    return -EPROTO;
}

/* Waits for a complete head; returns its length (through the blank line) or -code. */
static int read_head(struct rp_conn *c, int64_t deadline)
{
    for (;;) {
        char *end = c->len ? memmem(c->buf, c->len, "\r\n\r\n", 4) : NULL;
        if (end)
            return (int)(end - c->buf) + 4;
        if (c->len > RP_HEAD_MAX)
            return -EPROTO;
        int n = conn_fill(c, deadline);
        if (n == -ETIMEDOUT)
            return -ETIMEDOUT;
        if (n <= 0)
            return c->len == 0 ? -ECONNRESET : -EPIPE;
    }
}

/* Reads the body that follows a head of head_len bytes into r. */
static int read_body(struct rp_conn *c, struct rp_response *r, size_t head_len, bool no_body,
                     int64_t deadline)
{
    const char *te = rp_header(r, "Transfer-Encoding");
    const char *cl = rp_header(r, "Content-Length");
    bool none = no_body || r->status / 100 == 1 || r->status == 204 || r->status == 304;
    size_t want = 0;
    bool until_eof = false;
    if (!none && te) {
        if (!strcasestr(te, "chunked"))
            return -EPROTO;
        r->chunked = true;
    } else if (!none && cl) {
        char *endp;
        errno = 0;
        unsigned long long v = strtoull(cl, &endp, 10);
        if (!isdigit((unsigned char)cl[0]) || *endp || errno || v > RP_BUF_MAX)
            return -EPROTO;
        want = (size_t)v;
    } else if (!none) {
        until_eof = true;
    }
    for (;;) {
        size_t avail = c->len - head_len;
        if (r->chunked) {
            size_t used = 0;
            int done = parse_chunked(c->buf + head_len, avail, &r->body, &r->body_len, &used);
            if (done < 0)
                return done;
            if (done) {
                r->wire_bytes = head_len + used;
                return 0;
            }
        } else if (!until_eof && avail >= want) {
            r->body = malloc(want + 1);
            if (!r->body)
                return -ENOMEM;
            memcpy(r->body, c->buf + head_len, want);
            r->body[want] = '\0';
            r->body_len = want;
            r->wire_bytes = head_len + want;
            return 0;
        }
        int n = conn_fill(c, deadline);
        if (n == -ETIMEDOUT || n == -ENOMEM)
            return n;
        if (n <= 0 && until_eof) {
            want = avail;
            until_eof = false;
            continue;
        }
        if (n <= 0)
            return -EPIPE;
    }
}

int rp_read_response(struct rp_conn *c, struct rp_response *r, bool no_body, int timeout_ms)
{
    memset(r, 0, sizeof(*r));
    int64_t deadline = rp_now_ms() + timeout_ms;
    int head_len = read_head(c, deadline);
    if (head_len < 0)
        return head_len;
    r->head = malloc((size_t)head_len + 1);
    if (!r->head)
        return -ENOMEM;
    memcpy(r->head, c->buf, (size_t)head_len - 2); /* keep the last header's CRLF */
    r->head[head_len - 2] = '\0';
    int err = parse_head(r);
    if (!err)
        err = read_body(c, r, (size_t)head_len, no_body, deadline);
    if (err) {
        rp_response_free(r);
        return err;
    }
    conn_consume(c, r->wire_bytes);
    return 0;
}

void rp_response_free(struct rp_response *r)
{
    free(r->head);
    free(r->body);
    r->head = NULL;
    r->body = NULL;
    r->header_count = 0;
}

const char *rp_header(const struct rp_response *r, const char *name)
{
    for (int i = 0; i < r->header_count; i++)
        if (strcasecmp(r->headers[i].name, name) == 0)
            return r->headers[i].value;
    return NULL;
}

int rp_header_count(const struct rp_response *r, const char *name)
{
    int n = 0;
    for (int i = 0; i < r->header_count; i++)
        n += strcasecmp(r->headers[i].name, name) == 0;
    return n;
}

int rp_request(int port, const char *method, const char *path, const char *const headers[],
               const char *body, struct rp_response *r)
{
    struct rp_conn c;
    int err = rp_conn_open(&c, port);
    if (err)
        return err;
    char req[16384];
    int n = snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", method, path);
    for (int i = 0; headers && headers[i] && n < (int)sizeof(req); i++)
        n += snprintf(req + n, sizeof(req) - (size_t)n, "%s\r\n", headers[i]);
    if (body && n < (int)sizeof(req))
        n += snprintf(req + n, sizeof(req) - (size_t)n, "Content-Length: %zu\r\n", strlen(body));
    if (n < (int)sizeof(req))
        n += snprintf(req + n, sizeof(req) - (size_t)n, "\r\n%s", body ? body : "");
    if (n >= (int)sizeof(req)) {
        rp_conn_close(&c);
        return -E2BIG;
    }
    err = rp_send_all(c.fd, req, (size_t)n);
    if (!err)
        err = rp_read_response(&c, r, strcmp(method, "HEAD") == 0, RP_IO_TIMEOUT_MS);
    rp_conn_close(&c);
    return err;
}

/* ---- Prometheus text ------------------------------------------------------------ */

/* True when the label block [lb, le) holds `label` starting at a label boundary. */
static bool has_label(const char *lb, const char *le, const char *label)
{
    size_t n = strlen(label);
    for (const char *p = lb; p + n <= le; p++) {
        if ((p == lb || p[-1] == ',' || p[-1] == ' ') && memcmp(p, label, n) == 0)
            return true;
    }
    return false;
}

double rp_metric_sum(const char *text, const char *name, const char *const labels[], int *matched)
{
    double sum = 0;
    int count = 0;
    size_t nlen = strlen(name);
    for (const char *line = text; line && *line;) {
        const char *eol = strchr(line, '\n');
        const char *end = eol ? eol : line + strlen(line);
        if (*line != '#' && (size_t)(end - line) > nlen && memcmp(line, name, nlen) == 0 &&
            (line[nlen] == '{' || line[nlen] == ' ')) {
            const char *lb = line + nlen, *le = lb, *val = lb;
            bool ok = true;
            if (*lb == '{') {
                le = memchr(lb, '}', (size_t)(end - lb));
                ok = le != NULL;
                val = ok ? le + 1 : end;
                for (int i = 0; ok && labels && labels[i]; i++)
                    ok = has_label(lb + 1, le, labels[i]);
            } else {
                ok = !labels || !labels[0];
            }
            if (ok) {
                sum += strtod(val, NULL);
                count++;
            }
        }
        line = eol ? eol + 1 : NULL;
    }
    if (matched)
        *matched = count;
    return sum;
}

double rp_scrape(int port, const char *name, const char *const labels[])
{
    struct rp_response r;
    if (rp_request(port, "GET", "/metrics", NULL, NULL, &r) != 0)
        return -1;
    double v = r.status == 200 ? rp_metric_sum(r.body, name, labels, NULL) : -1;
    rp_response_free(&r);
    return v;
}

/* ---- cmocka helpers ------------------------------------------------------------- */

void rp_must_start(struct rp_server *s, const char *const extra_args[])
{
    int err = rp_server_start(s, extra_args, NULL);
    if (err)
        fail_msg("ringpay serve did not become ready: %s", strerror(-err));
}

/* Index of the token after the subtree rooted at token i. */
static int tok_skip(const jsmntok_t *t, int i)
{
    int n = 1;
    while (n > 0) {
        n--;
        if (t[i].type == JSMN_OBJECT)
            n += 2 * t[i].size;
        else if (t[i].type == JSMN_ARRAY)
            n += t[i].size;
        i++;
    }
    return i;
}

/* The value token of key `key` in the object at token obj, or -1. */
static int tok_get(const char *js, const jsmntok_t *t, int obj, const char *key)
{
    if (t[obj].type != JSMN_OBJECT)
        return -1;
    int i = obj + 1;
    for (int k = 0; k < t[obj].size; k++) {
        size_t len = (size_t)(t[i].end - t[i].start);
        if (t[i].type == JSMN_STRING && len == strlen(key) &&
            memcmp(js + t[i].start, key, len) == 0)
            return i + 1;
        i = tok_skip(t, i + 1);
    }
    return -1;
}

static bool tok_is(const char *js, const jsmntok_t *t, int i, const char *s)
{
    size_t len = (size_t)(t[i].end - t[i].start);
    return strlen(s) == len && memcmp(js + t[i].start, s, len) == 0;
}

void rp_assert_error_body(const struct rp_response *r, const char *code)
{
    jsmn_parser p;
    jsmntok_t t[64];
    jsmn_init(&p);
    assert_non_null(r->body);
    int n = jsmn_parse(&p, r->body, r->body_len, t, 64);
    if (n < 1 || t[0].type != JSMN_OBJECT)
        fail_msg("status %d: body is not a JSON object: %s", r->status, r->body);
    int e = tok_get(r->body, t, 0, "error");
    if (e < 0 || t[e].type != JSMN_OBJECT)
        fail_msg("status %d: no \"error\" object: %s", r->status, r->body);
    int c = tok_get(r->body, t, e, "code");
    int m = tok_get(r->body, t, e, "message");
    int pa = tok_get(r->body, t, e, "param");
    int id = tok_get(r->body, t, e, "request_id");
    if (c < 0 || m < 0 || pa < 0 || id < 0 || t[c].type != JSMN_STRING ||
        t[m].type != JSMN_STRING || t[id].type != JSMN_STRING)
        fail_msg("status %d: error body lacks code/message/param/request_id: %s", r->status,
                 r->body);
    if (code && !tok_is(r->body, t, c, code))
        fail_msg("status %d: expected code \"%s\": %s", r->status, code, r->body);
    const char *hid = rp_header(r, "X-Request-Id");
    if (!hid || !tok_is(r->body, t, id, hid))
        fail_msg("status %d: request_id differs from X-Request-Id (%s): %s", r->status,
                 hid ? hid : "(none)", r->body);
}
