/*
 * Process lifecycle of `ringpay` (SPEC §1, §6):
 *   - `--help` and `serve --help` print usage and exit 0;
 *   - bad configuration (flags and RINGPAY_* environment) exits non-zero, without a
 *     crash, with exactly one stderr line starting "ringpay: ";
 *   - SIGTERM and SIGINT on an idle server (also one holding an idle keep-alive
 *     connection) exit 0 quickly;
 *   - SIGTERM while a request is half received: new connections are no longer served,
 *     the request is finished and answered, then the server exits 0; with pipelined
 *     requests in flight on many connections every answer that arrives is whole;
 *   - io_uring unavailable (a seccomp filter makes io_uring_setup fail with EPERM, or
 *     ENOSYS as on kernels without it): exit non-zero, no crash, one line naming io_uring;
 *   - one process per data directory: a second `serve` and a `check` on a directory in
 *     use refuse with one line (exit 2) and change nothing; after the owner is killed
 *     with SIGKILL the directory is free again at once;
 *   - `ringpay --version` prints the version.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <linux/audit.h>
#include <linux/filter.h>
#include <linux/io_uring.h>
#include <linux/seccomp.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct rp_server srv;
static struct rp_run_result run; /* large: static */

/* ---- help and configuration errors ---------------------------------------------- */

static void test_help(void **state)
{
    const char *const top[] = {"--help", NULL};
    assert_int_equal(rp_run(top, NULL, NULL, 5000, &run), 0);
    if (run.code != 0)
        fail_msg("ringpay --help exited %d: %s", run.code, run.err);
    assert_non_null(strstr(run.out, "serve"));

    const char *const serve[] = {"serve", "--help", NULL};
    assert_int_equal(rp_run(serve, NULL, NULL, 5000, &run), 0);
    if (run.code != 0)
        fail_msg("ringpay serve --help exited %d: %s", run.code, run.err);
    assert_non_null(strstr(run.out, "--listen"));
    assert_non_null(strstr(run.out, "--cores"));
    assert_non_null(strstr(run.out, "--data"));
}

/* Runs args (+env) and asserts a clean configuration failure. */
static void expect_config_error(const char *what, const char *const args[], const char *const env[])
{
    assert_int_equal(rp_run(args, env, NULL, 5000, &run), 0);
    if (run.code == -ETIMEDOUT)
        fail_msg("%s: ringpay kept running (it accepted the bad configuration)", what);
    if (run.signaled || run.code == 0 || run.code >= 128)
        fail_msg("%s: exit %d (signaled %d), want a non-zero exit; stderr: %s", what, run.code,
                 run.signaled, run.err);
    if (rp_count_lines(run.err) != 1 || strncmp(run.err, "ringpay: ", 9) != 0)
        fail_msg("%s: want exactly one stderr line starting \"ringpay: \", got:\n%s", what,
                 run.err);
}

static void test_config_errors(void **state)
{
    char dir[] = "/tmp/ringpay-cfg-XXXXXX";
    assert_non_null(mkdtemp(dir));
    int port = rp_pick_port();
    assert_true(port > 0);
    char listen_addr[64];
    snprintf(listen_addr, sizeof(listen_addr), "127.0.0.1:%d", port);

    const char *const unknown_flag[] = {"serve",  "--bogus", "--listen", listen_addr,
                                        "--data", dir,       NULL};
    expect_config_error("unknown flag", unknown_flag, NULL);
    const char *const cores0[] = {"serve",     "--cores", "0", "--listen",
                                  listen_addr, "--data",  dir, NULL};
    expect_config_error("--cores 0", cores0, NULL);
    const char *const cores_abc[] = {"serve",     "--cores", "abc", "--listen",
                                     listen_addr, "--data",  dir,   NULL};
    expect_config_error("--cores abc", cores_abc, NULL);
    const char *const nonsense[] = {"serve", "--listen", "nonsense", "--data", dir, NULL};
    expect_config_error("--listen nonsense", nonsense, NULL);
    const char *const bad_port[] = {"serve", "--listen", "127.0.0.1:99999", "--data", dir, NULL};
    expect_config_error("--listen port 99999", bad_port, NULL);
    const char *const timeout_abc[] = {
        "serve", "--header-timeout-ms", "abc", "--listen", listen_addr, "--data", dir, NULL};
    expect_config_error("--header-timeout-ms abc", timeout_abc, NULL);
    const char *const missing_value[] = {"serve", "--listen", listen_addr, "--data",
                                         dir,     "--cores",  NULL};
    expect_config_error("--cores without a value", missing_value, NULL);
    const char *const unknown_cmd[] = {"frobnicate", NULL};
    expect_config_error("unknown subcommand", unknown_cmd, NULL);

    const char *const plain[] = {"serve", "--listen", listen_addr, "--data", dir, NULL};
    const char *const env_cores0[] = {"RINGPAY_CORES=0", NULL};
    expect_config_error("RINGPAY_CORES=0", plain, env_cores0);
    const char *const env_listen[] = {"RINGPAY_LISTEN=nonsense", NULL};
    const char *const no_listen[] = {"serve", "--data", dir, NULL};
    expect_config_error("RINGPAY_LISTEN=nonsense", no_listen, env_listen);

    /* The port is taken by a listener of ours (no SO_REUSEPORT, so it cannot share). */
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    assert_int_equal(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(fd, 16), 0);
    expect_config_error("port in use", plain, NULL);
    close(fd);
    rmdir(dir);
}

/* ---- the data-directory lock and the version -------------------------------------- */

/* Runs args and asserts the one-line "in use" refusal, naming the owner's pid. */
static void expect_in_use(const char *what, const char *const args[], pid_t owner)
{
    assert_int_equal(rp_run(args, NULL, NULL, 10000, &run), 0);
    if (run.code != 2 || run.signaled)
        fail_msg("%s: exit %d (signaled %d), want 2; stderr: %s", what, run.code, run.signaled,
                 run.err);
    char want[64];
    snprintf(want, sizeof(want), "in use by another process (pid %d)", (int)owner);
    if (rp_count_lines(run.err) != 1 || strncmp(run.err, "ringpay: ", 9) != 0 ||
        strstr(run.err, want) == NULL)
        fail_msg("%s: want one line \"ringpay: ... %s\", got:\n%s", what, want, run.err);
    assert_string_equal(run.out, "");
}

static void test_data_directory_lock(void **state)
{
    rp_must_start(&srv, NULL);
    char listen_addr[64];
    snprintf(listen_addr, sizeof(listen_addr), "127.0.0.1:%d", rp_pick_port());
    const char *const second[] = {"serve", "--listen", listen_addr, "--data", srv.data_dir, NULL};
    expect_in_use("second serve", second, srv.pid);
    const char *const check[] = {"check", "--data", srv.data_dir, NULL};
    expect_in_use("check on a running engine", check, srv.pid);
    /* The owner still serves. */
    struct rp_response r;
    assert_int_equal(rp_request(srv.port, "GET", "/readyz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    rp_response_free(&r);

    /* SIGKILL releases the lock with the process: a restart needs no cleanup. */
    assert_int_equal(rp_server_signal(&srv, SIGKILL), 0);
    assert_int_equal(rp_server_wait(&srv, RP_STOP_TIMEOUT_MS), 128 + SIGKILL);
    assert_int_equal(rp_run(check, NULL, NULL, 10000, &run), 0);
    if (run.code != 0)
        fail_msg("check after the owner died: exit %d: %s%s", run.code, run.out, run.err);
    const char *const args[] = {"--data", srv.data_dir, NULL}; /* the last --data wins */
    static struct rp_server again;
    rp_must_start(&again, args);
    assert_int_equal(rp_server_stop(&again), 0);
}

static void test_version(void **state)
{
    const char *const v[] = {"--version", NULL};
    assert_int_equal(rp_run(v, NULL, NULL, 5000, &run), 0);
    assert_int_equal(run.code, 0);
    assert_int_equal(rp_count_lines(run.out), 1);
    assert_true(strncmp(run.out, "ringpay ", 8) == 0);
    assert_true(run.out[8] >= '0' && run.out[8] <= '9');
}

/* ---- signals -------------------------------------------------------------------- */

static void test_sigterm_idle(void **state)
{
    const char *const args[] = {"--cores", "2", NULL};
    rp_must_start(&srv, args);
    int64_t t0 = rp_now_ms();
    assert_int_equal(rp_server_signal(&srv, SIGTERM), 0);
    int code = rp_server_wait(&srv, 3000);
    if (code != 0)
        fail_msg("idle server: SIGTERM gave %d within 3 s, want exit 0", code);
    assert_true(rp_now_ms() - t0 < 3000);
    rp_server_stop(&srv);

    /* An idle keep-alive connection does not hold the exit up (idle timeout is 75 s). */
    rp_must_start(&srv, args);
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    assert_int_equal(rp_send_str(c.fd, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n"), 0);
    struct rp_response r;
    assert_int_equal(rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS), 0);
    assert_int_equal(r.status, 200);
    rp_response_free(&r);
    assert_int_equal(rp_server_signal(&srv, SIGINT), 0);
    code = rp_server_wait(&srv, 3000);
    if (code != 0)
        fail_msg("SIGINT with an idle keep-alive connection gave %d within 3 s", code);
    assert_int_equal(rp_conn_wait_close(&c, 1000, NULL), 0);
    rp_conn_close(&c);
    rp_server_stop(&srv);
}

/* True when a fresh client gets a 200 from the server within 500 ms. */
static bool new_client_served(int port)
{
    struct rp_conn c;
    if (rp_conn_open(&c, port) != 0)
        return false;
    bool ok = false;
    struct rp_response r;
    if (rp_send_str(c.fd, "GET /healthz HTTP/1.1\r\nHost: a\r\n\r\n") == 0 &&
        rp_read_response(&c, &r, false, 500) == 0) {
        ok = r.status == 200;
        rp_response_free(&r);
    }
    rp_conn_close(&c);
    return ok;
}

static void test_sigterm_finishes_inflight(void **state)
{
    const char *const args[] = {"--cores", "1", NULL};
    rp_must_start(&srv, args);
    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, srv.port), 0);
    assert_int_equal(rp_send_str(c.fd, "POST /healthz HTTP/1.1\r\nHost: a\r\nContent-Length: 10\r\n"
                                       "X-Request-Id: inflight\r\n\r\n01234"),
                     0);
    rp_sleep_ms(200); /* the server has the head and half the body */
    assert_int_equal(rp_server_signal(&srv, SIGTERM), 0);
    rp_sleep_ms(300);
    if (!rp_server_alive(&srv))
        fail_msg("server exited (%d) with a request half received", rp_server_wait(&srv, 0));
    assert_false(new_client_served(srv.port)); /* stopped accepting */
    assert_int_equal(rp_send_str(c.fd, "56789"), 0);
    struct rp_response r;
    int err = rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS);
    if (err)
        fail_msg("in-flight request not answered after SIGTERM (read error %d)", err);
    assert_int_equal(r.status, 405);
    assert_string_equal(rp_header(&r, "X-Request-Id"), "inflight");
    rp_response_free(&r);
    assert_int_equal(rp_conn_wait_close(&c, 3000, NULL), 0);
    rp_conn_close(&c);
    int code = rp_server_wait(&srv, 5000);
    if (code != 0)
        fail_msg("SIGTERM with a request in flight gave %d, want exit 0", code);
    rp_server_stop(&srv);
}

/* Reads up to DEPTH pipelined answers of connection i in order; returns how many came
 * whole before a clean close. A truncated or out-of-order answer fails the test. */
static int read_burst(struct rp_conn *c, int i, int depth)
{
    int answered = 0;
    for (int j = 0; j < depth; j++) {
        struct rp_response r;
        int err = rp_read_response(c, &r, false, RP_IO_TIMEOUT_MS);
        if (err == -ECONNRESET)
            break; /* closed between answers */
        if (err)
            fail_msg("connection %d answer %d: read error %d (truncated?)", i, j, err);
        char id[32];
        snprintf(id, sizeof(id), "%d-%d", i, j);
        assert_int_equal(r.status, 200);
        assert_string_equal(rp_header(&r, "X-Request-Id"), id);
        rp_response_free(&r);
        answered++;
    }
    return answered;
}

/*
 * Pipelined requests on ten connections, then SIGTERM. On the first five the server has
 * provably read the batch (their first answer arrived before the signal): all their
 * answers must arrive. On the other five the signal races the writes: whatever is
 * answered is whole and in order. Either way the exit is 0.
 */
static void test_sigterm_pipelined_burst(void **state)
{
    const char *const args[] = {"--cores", "2", NULL};
    rp_must_start(&srv, args);
    enum { CONNS = 10, SURE = 5, DEPTH = 20 };
    struct rp_conn c[CONNS];
    char buf[DEPTH * 96];
    struct rp_response first[SURE];
    for (int i = 0; i < CONNS; i++) {
        assert_int_equal(rp_conn_open(&c[i], srv.port), 0);
        size_t len = 0;
        for (int j = 0; j < DEPTH; j++)
            len += (size_t)snprintf(
                buf + len, sizeof(buf) - len,
                "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Request-Id: %d-%d\r\n\r\n", i, j);
        assert_int_equal(rp_send_all(c[i].fd, buf, len), 0);
        if (i < SURE) {
            assert_int_equal(rp_read_response(&c[i], &first[i], false, RP_IO_TIMEOUT_MS), 0);
            rp_response_free(&first[i]);
        }
    }
    assert_int_equal(rp_server_signal(&srv, SIGTERM), 0);
    int raced = 0;
    for (int i = 0; i < CONNS; i++) {
        if (i < SURE) {
            /* answer 0 was read before the signal; 1..DEPTH-1 must follow */
            for (int j = 1; j < DEPTH; j++) {
                struct rp_response r;
                int err = rp_read_response(&c[i], &r, false, RP_IO_TIMEOUT_MS);
                if (err)
                    fail_msg("connection %d: answer %d of a batch read before SIGTERM lost "
                             "(read error %d)",
                             i, j, err);
                char id[32];
                snprintf(id, sizeof(id), "%d-%d", i, j);
                assert_string_equal(rp_header(&r, "X-Request-Id"), id);
                rp_response_free(&r);
            }
        } else {
            raced += read_burst(&c[i], i, DEPTH);
        }
        assert_int_equal(rp_conn_wait_close(&c[i], 3000, NULL), 0);
        rp_conn_close(&c[i]);
    }
    int code = rp_server_wait(&srv, 5000);
    if (code != 0)
        fail_msg("SIGTERM with pipelined requests gave %d, want exit 0", code);
    print_message("pipelined burst: %d of %d racing requests answered before the exit\n", raced,
                  (CONNS - SURE) * DEPTH);
    rp_server_stop(&srv);
}

/* ---- io_uring unavailable ------------------------------------------------------- */

static int denied_errno = EPERM;

/* Child side: io_uring_setup fails with denied_errno, everything else is allowed. */
static void deny_io_uring(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_io_uring_setup, 0, 1),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | ((unsigned)denied_errno & SECCOMP_RET_DATA)),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
    };
    struct sock_fprog prog = {.len = (unsigned short)(sizeof(f) / sizeof(f[0])), .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 ||
        prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog) != 0)
        _exit(126);
}

/* The filter itself works: io_uring_setup in a filtered child fails with the errno. */
static void assert_filter_works(void)
{
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        deny_io_uring();
        struct io_uring_params p;
        memset(&p, 0, sizeof(p));
        long fd = syscall(__NR_io_uring_setup, 4, &p);
        _exit(fd < 0 && errno == denied_errno ? 0 : 1);
    }
    int st = 0;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    assert_true(WIFEXITED(st));
    assert_int_equal(WEXITSTATUS(st), 0);
}

static void expect_io_uring_refusal(int err)
{
    denied_errno = err;
    assert_filter_works();
    char dir[] = "/tmp/ringpay-nouring-XXXXXX";
    assert_non_null(mkdtemp(dir));
    int port = rp_pick_port();
    char listen_addr[64];
    snprintf(listen_addr, sizeof(listen_addr), "127.0.0.1:%d", port);
    const char *const args[] = {"serve", "--listen", listen_addr, "--data",
                                dir,     "--cores",  "1",         NULL};
    assert_int_equal(rp_run(args, NULL, deny_io_uring, 5000, &run), 0);
    if (run.code == -ETIMEDOUT)
        fail_msg("errno %d: ringpay kept running without io_uring", err);
    if (run.signaled || run.code == 0 || run.code >= 128)
        fail_msg("errno %d: exit %d (signaled %d), want a clean non-zero exit; stderr:\n%s", err,
                 run.code, run.signaled, run.err);
    if (!strstr(run.err, "io_uring"))
        fail_msg("errno %d: stderr does not name io_uring:\n%s", err, run.err);
    if (rp_count_lines(run.err) != 1)
        print_message("note: %d stderr lines without io_uring:\n%s", rp_count_lines(run.err),
                      run.err);
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void test_io_uring_unavailable(void **state)
{
    expect_io_uring_refusal(EPERM);
    expect_io_uring_refusal(ENOSYS);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_help, rp_teardown),
        cmocka_unit_test_teardown(test_config_errors, rp_teardown),
        cmocka_unit_test_teardown(test_sigterm_idle, rp_teardown),
        cmocka_unit_test_teardown(test_sigterm_finishes_inflight, rp_teardown),
        cmocka_unit_test_teardown(test_sigterm_pipelined_burst, rp_teardown),
        cmocka_unit_test_teardown(test_io_uring_unavailable, rp_teardown),
        cmocka_unit_test_teardown(test_data_directory_lock, rp_teardown),
        cmocka_unit_test_teardown(test_version, rp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
