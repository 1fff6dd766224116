/*
 * Tests of net/accesslog.c: the --access-log values, sampling, the line format (JSON,
 * escaped, card-like digits masked), writes through a real io_uring into a pipe (whole
 * lines, at most PIPE_BUF bytes per write), dropping and counting when the buffer is
 * full, a failing write counted and dropped, O_APPEND on a regular file, and the
 * blocking drain at exit.
 */
#define _GNU_SOURCE
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <liburing.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/limits.h"
#include "net/accesslog.h"

#define UD_LOG 7

static void test_parse(void **state)
{
    (void)state;
    assert_int_equal(accesslog_parse("on"), 1);
    assert_int_equal(accesslog_parse("off"), 0);
    assert_int_equal(accesslog_parse("1"), 1);
    assert_int_equal(accesslog_parse("100"), 100);
    assert_int_equal(accesslog_parse("0"), -1);
    assert_int_equal(accesslog_parse("-3"), -1);
    assert_int_equal(accesslog_parse("3x"), -1);
    assert_int_equal(accesslog_parse(""), -1);
    assert_int_equal(accesslog_parse("ON"), -1);
    assert_int_equal(accesslog_parse("01"), -1);
}

static void test_sampling(void **state)
{
    (void)state;
    struct accesslog a;
    assert_int_equal(accesslog_init(&a, 2, 0, 0), 0);
    assert_false(accesslog_wants(&a)); /* off */
    accesslog_destroy(&a);
    assert_int_equal(accesslog_init(&a, 2, 3, 0), 0);
    int yes = 0;
    for (int i = 0; i < 300; i++)
        yes += accesslog_wants(&a);
    assert_int_equal(yes, 100);
    accesslog_destroy(&a);
    assert_int_equal(accesslog_init(&a, 2, 1, 0), 0);
    assert_true(accesslog_wants(&a));
    assert_true(accesslog_wants(&a));
    accesslog_destroy(&a);
}

static struct accesslog_entry entry(const char *rid)
{
    return (struct accesslog_entry){
        .method = "POST",
        .method_len = 4,
        .route = "/v1/payments/authorize",
        .status = 201,
        .duration_us = 812,
        .request_id = rid,
        .request_id_len = strlen(rid),
        .client = "127.0.0.1:50412",
    };
}

/* Flushes through ring until nothing is left, checking each write's size and ending. */
static size_t pump(struct accesslog *a, struct io_uring *ring, int rfd, char *out, size_t cap)
{
    size_t got = 0;
    while (accesslog_flush(a, ring, UD_LOG)) {
        assert_true(io_uring_submit(ring) >= 1);
        struct io_uring_cqe *cqe;
        assert_int_equal(io_uring_wait_cqe(ring, &cqe), 0);
        assert_int_equal(cqe->user_data, UD_LOG);
        int res = cqe->res;
        io_uring_cqe_seen(ring, cqe);
        assert_true(res > 0 && res <= PIPE_BUF); /* a pipe gets at most PIPE_BUF a write */
        accesslog_done(a, res);
        ssize_t n = read(rfd, out + got, cap - got);
        assert_int_equal(n, res);
        assert_int_equal(out[got + (size_t)n - 1], '\n'); /* whole lines only */
        got += (size_t)n;
    }
    return got;
}

static void test_lines_through_a_pipe(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    fcntl(p[0], F_SETPIPE_SZ, 1 << 20);
    struct io_uring ring;
    assert_int_equal(io_uring_queue_init(8, &ring, 0), 0);
    struct accesslog a;
    assert_int_equal(accesslog_init(&a, p[1], 1, 3), 0);
    struct accesslog_entry e = entry("pay-4111111111111111\"x\\");
    accesslog_add(&a, &e);
    e.method = "";
    e.method_len = 0;
    e.route = "other";
    e.status = 400;
    e.request_id = "r-2";
    e.request_id_len = 3;
    accesslog_add(&a, &e);
    static char out[1 << 20];
    size_t n = pump(&a, &ring, p[0], out, sizeof(out) - 1);
    out[n] = '\0';
    char *second = strchr(out, '\n') + 1;
    assert_true(strncmp(out, "{\"ts\":\"", 7) == 0);
    assert_non_null(strstr(out, "Z\",\"level\":\"info\",\"msg\":\"access\",\"method\":\"POST\","
                                "\"route\":\"/v1/payments/authorize\",\"status\":201,"
                                "\"duration_us\":812,"
                                "\"request_id\":\"pay-411111******1111\\\"x\\\\\",\"core\":3,"
                                "\"client\":\"127.0.0.1:50412\"}\n"));
    assert_null(strstr(out, "4111111111111111"));
    assert_non_null(strstr(second, "\"method\":null,\"route\":\"other\",\"status\":400,"));
    assert_int_equal(a.lines, 2);
    assert_int_equal(a.dropped, 0);

    /* Many lines: every write is whole lines within PIPE_BUF, all arrive in order. */
    for (int i = 0; i < 500; i++) {
        char rid[32];
        snprintf(rid, sizeof(rid), "seq-%04d", i);
        e = entry(rid);
        accesslog_add(&a, &e);
    }
    n = pump(&a, &ring, p[0], out, sizeof(out) - 1);
    out[n] = '\0';
    int seen = 0;
    for (char *l = out; *l; l = strchr(l, '\n') + 1) {
        char want[40];
        snprintf(want, sizeof(want), "\"request_id\":\"seq-%04d\"", seen);
        char *nl = strchr(l, '\n');
        assert_non_null(nl);
        *nl = '\0';
        assert_non_null(strstr(l, want));
        *nl = '\n';
        seen++;
    }
    assert_int_equal(seen, 500);
    accesslog_destroy(&a);
    io_uring_queue_exit(&ring);
    close(p[0]);
    close(p[1]);
}

static void test_full_buffer_drops(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    struct accesslog a;
    assert_int_equal(accesslog_init(&a, p[1], 1, 0), 0);
    struct accesslog_entry e = entry("a-request-id-of-some-length-0123456789");
    /* Nothing is flushed: the filling half fills up, then lines are dropped. */
    for (int i = 0; i < 5000; i++)
        accesslog_add(&a, &e);
    assert_true(a.lines > 0 && a.dropped > 0);
    assert_int_equal(a.lines + a.dropped, 5000);
    assert_true(a.fill_len <= ACCESS_LOG_BUF_BYTES / 2);
    accesslog_destroy(&a);
    close(p[0]);
    close(p[1]);
}

static void test_failed_write_is_counted(void **state)
{
    (void)state;
    int p[2];
    assert_int_equal(pipe2(p, O_CLOEXEC), 0);
    close(p[0]); /* a write to a pipe without a reader fails (EPIPE) */
    struct io_uring ring;
    assert_int_equal(io_uring_queue_init(8, &ring, 0), 0);
    struct accesslog a;
    assert_int_equal(accesslog_init(&a, p[1], 1, 0), 0);
    struct accesslog_entry e = entry("r-1");
    accesslog_add(&a, &e);
    assert_true(accesslog_flush(&a, &ring, UD_LOG));
    io_uring_submit(&ring);
    struct io_uring_cqe *cqe;
    assert_int_equal(io_uring_wait_cqe(&ring, &cqe), 0);
    assert_true(cqe->res < 0);
    accesslog_done(&a, cqe->res);
    io_uring_cqe_seen(&ring, cqe);
    assert_int_equal(a.errors, 1);
    assert_false(accesslog_flush(&a, &ring, UD_LOG)); /* dropped, nothing left */
    accesslog_destroy(&a);
    io_uring_queue_exit(&ring);
    close(p[1]);
}

static void test_regular_file_appends_and_drains(void **state)
{
    (void)state;
    char path[] = "/tmp/ringpay-accesslog-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(write(fd, "x\n", 2), 2);
    assert_int_equal(lseek(fd, 0, SEEK_SET), 0); /* a writer at the start... */
    struct accesslog a;
    assert_int_equal(accesslog_init(&a, fd, 1, 0), 0);
    assert_true(fcntl(fd, F_GETFL) & O_APPEND); /* ...appends all the same */
    struct accesslog_entry e = entry("r-drain");
    accesslog_add(&a, &e);
    accesslog_drain(&a); /* at exit: blocking writes */
    char buf[4096];
    ssize_t n = pread(fd, buf, sizeof(buf) - 1, 0);
    assert_true(n > 2);
    buf[n] = '\0';
    assert_true(strncmp(buf, "x\n{\"ts\":", 8) == 0);
    assert_non_null(strstr(buf, "\"request_id\":\"r-drain\""));
    accesslog_destroy(&a);
    close(fd);
    unlink(path);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN); /* the engine blocks it too; a failed write is an errno */
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_parse),
        cmocka_unit_test(test_sampling),
        cmocka_unit_test(test_lines_through_a_pipe),
        cmocka_unit_test(test_full_buffer_drops),
        cmocka_unit_test(test_failed_write_is_counted),
        cmocka_unit_test(test_regular_file_appends_and_drains),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
