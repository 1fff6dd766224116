/*
 * `ringpay serve` behind an L4 balancer (SPEC §3): HAProxy from Debian in TCP mode, one
 * frontend sending PROXY protocol v2 and one sending v1, connects to the engine from
 * 127.0.0.3, the engine's only --proxy-protocol address. Clients connect to HAProxy
 * from 127.0.0.2 and 127.0.0.4 (loopback addresses bound by the test):
 *   - the access log shows the real client address (127.0.0.2), for v1 and v2;
 *   - --allow sees the real client too: 127.0.0.2 is served, 127.0.0.4 gets 403,
 *     although both arrive from the balancer's 127.0.0.3;
 *   - a client straight from 127.0.0.1 (not a balancer) keeps working without a header.
 * HAProxy is started and stopped by the test, in the foreground, with its own config
 * in the server's temporary directory.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "harness.h"

static struct rp_server srv;
static pid_t haproxy = -1;
static int port_v1, port_v2;

static int stop_haproxy(void **state)
{
    if (haproxy > 0) {
        kill(haproxy, SIGTERM);
        for (int i = 0; i < 100 && waitpid(haproxy, NULL, WNOHANG) == 0; i++)
            rp_sleep_ms(20);
        kill(haproxy, SIGKILL);
        waitpid(haproxy, NULL, 0);
        haproxy = -1;
    }
    return rp_teardown(state);
}

/* Connects to 127.0.0.1:port from the loopback address `from`. */
static int connect_from(const char *from, int port)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(fd >= 0);
    struct sockaddr_in src = {.sin_family = AF_INET};
    inet_pton(AF_INET, from, &src.sin_addr);
    assert_int_equal(bind(fd, (struct sockaddr *)&src, sizeof(src)), 0);
    struct sockaddr_in dst = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    dst.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (connect(fd, (struct sockaddr *)&dst, sizeof(dst)) != 0) {
        close(fd);
        return -errno;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static void start_haproxy(void)
{
    port_v1 = rp_pick_port();
    port_v2 = port_v1 + 1;
    char cfg[RP_PATH_MAX + 32], log[RP_PATH_MAX + 32];
    snprintf(cfg, sizeof(cfg), "%s/haproxy.cfg", srv.dir);
    snprintf(log, sizeof(log), "%s/haproxy.log", srv.dir);
    FILE *f = fopen(cfg, "w");
    assert_non_null(f);
    fprintf(f,
            "global\n  maxconn 256\n"
            "defaults\n  mode tcp\n  timeout connect 2s\n  timeout client 10s\n"
            "  timeout server 10s\n"
            "frontend v1\n  bind 127.0.0.1:%d\n  default_backend engine_v1\n"
            "frontend v2\n  bind 127.0.0.1:%d\n  default_backend engine_v2\n"
            "backend engine_v1\n  server rp 127.0.0.1:%d send-proxy source 127.0.0.3\n"
            "backend engine_v2\n  server rp 127.0.0.1:%d send-proxy-v2 source 127.0.0.3\n",
            port_v1, port_v2, srv.port, srv.port);
    fclose(f);
    haproxy = fork();
    assert_true(haproxy >= 0);
    if (haproxy == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0600);
        if (fd >= 0) {
            dup2(fd, 1);
            dup2(fd, 2);
        }
        execlp("haproxy", "haproxy", "-db", "-f", cfg, (char *)NULL);
        _exit(127);
    }
    for (int64_t deadline = rp_now_ms() + 5000;; rp_sleep_ms(20)) {
        int fd = connect_from("127.0.0.2", port_v2);
        if (fd >= 0) {
            close(fd);
            return;
        }
        if (waitpid(haproxy, NULL, WNOHANG) == haproxy) {
            haproxy = -1;
            fail_msg("haproxy exited (is it installed? ./dev.sh test installs it); see %s", log);
        }
        if (rp_now_ms() > deadline)
            fail_msg("haproxy did not listen on 127.0.0.1:%d", port_v2);
    }
}

/* GET /healthz with X-Request-Id id through the balancer port, from `from`. */
static int get_via(const char *from, int port, const char *id)
{
    int fd = connect_from(from, port);
    assert_true(fd >= 0);
    struct rp_conn c;
    assert_int_equal(rp_conn_init(&c, fd), 0);
    char req[256];
    snprintf(req, sizeof(req),
             "GET /healthz HTTP/1.1\r\nHost: a\r\nX-Request-Id: %s\r\nConnection: close\r\n\r\n",
             id);
    assert_int_equal(rp_send_str(c.fd, req), 0);
    struct rp_response r;
    int err = rp_read_response(&c, &r, false, RP_IO_TIMEOUT_MS);
    if (err)
        fail_msg("%s via %d: read error %d", id, port, err);
    int st = r.status;
    rp_response_free(&r);
    rp_conn_close(&c);
    return st;
}

/* The access line of request id, waiting up to 3 s for it. */
static void access_line(const char *id, char *line, size_t cap)
{
    char key[96];
    snprintf(key, sizeof(key), "\"request_id\":\"%s\"", id);
    for (int64_t deadline = rp_now_ms() + 3000;; rp_sleep_ms(20)) {
        static char text[1 << 16];
        FILE *f = fopen(srv.log_path, "r");
        assert_non_null(f);
        size_t n = fread(text, 1, sizeof(text) - 1, f);
        fclose(f);
        text[n] = '\0';
        const char *p = strstr(text, key);
        if (p != NULL) {
            const char *start = p;
            while (start > text && start[-1] != '\n')
                start--;
            const char *end = strchr(p, '\n');
            snprintf(line, cap, "%.*s", (int)((end ? end : p + strlen(p)) - start), start);
            return;
        }
        if (rp_now_ms() > deadline)
            fail_msg("no access line for %s:\n%s", id, text);
    }
}

static void test_haproxy_v1_and_v2(void **state)
{
    const char *const args[] = {
        "--cores", "1", "--proxy-protocol", "127.0.0.3/32", "--allow", "127.0.0.1/32,127.0.0.2/32",
        NULL};
    rp_must_start(&srv, args);
    start_haproxy();
    char line[1024];
    assert_int_equal(get_via("127.0.0.2", port_v2, "via-v2"), 200);
    access_line("via-v2", line, sizeof(line));
    if (strstr(line, "\"client\":\"127.0.0.2:") == NULL)
        fail_msg("v2: the access line does not show the real client: %s", line);
    assert_int_equal(get_via("127.0.0.2", port_v1, "via-v1"), 200);
    access_line("via-v1", line, sizeof(line));
    if (strstr(line, "\"client\":\"127.0.0.2:") == NULL)
        fail_msg("v1: the access line does not show the real client: %s", line);
    /* The allow-list sees the real client: 127.0.0.4 arrives from the balancer too. */
    assert_int_equal(get_via("127.0.0.4", port_v2, "via-v2-other"), 403);
    assert_int_equal(get_via("127.0.0.4", port_v1, "via-v1-other"), 403);
    access_line("via-v2-other", line, sizeof(line));
    assert_non_null(strstr(line, "\"client\":\"127.0.0.4:"));
    /* A direct client that is not a balancer needs no header. */
    struct rp_response r;
    assert_int_equal(rp_request(srv.port, "GET", "/healthz", NULL, NULL, &r), 0);
    assert_int_equal(r.status, 200);
    rp_response_free(&r);
    assert_int_equal(rp_server_stop(&srv), 0);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_haproxy_v1_and_v2, stop_haproxy),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
