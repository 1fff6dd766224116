/*
 * A 1,000,000-line bank statement through `ringpay settle`'s API in bounded memory
 * (issue 9): the test streams a generated 43 MB body over one connection (never held
 * whole, on either side), and checks the summary, the progress lines in the log, and
 * that settle's anonymous memory (RssAnon: its own allocations, not LMDB's file pages)
 * grew by less than 16 MiB. It prints the classification rate and the peak RSS.
 */
#define _GNU_SOURCE
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "harness.h"

#define LINES      1000000
#define LINE_BYTES 43 /* "pay_03%016x,%04d,EUR,2026-11-%02d\n" */

static const char header[] = "transaction_id,amount,currency,value_date\n";

static struct rp_server st;

/* A field of /proc/PID/status in KiB. */
static long status_kib(pid_t pid, const char *field)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    long v = -1;
    size_t n = strlen(field);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, field, n) == 0 && line[n] == ':')
            v = atol(line + n + 1);
    fclose(f);
    assert_true(v >= 0);
    return v;
}

static void test_million_lines(void **state)
{
    (void)state;
    assert_int_equal(rp_server_prepare(&st), 0);
    const char *args[] = {"--kafka-brokers", "none", "--access-log", "off", NULL};
    assert_int_equal(rp_server_respawn(&st, "settle", args, NULL), 0);
    long anon0 = status_kib(st.pid, "RssAnon");

    struct rp_conn c;
    assert_int_equal(rp_conn_open(&c, st.port), 0);
    char head[256];
    int n = snprintf(head, sizeof(head),
                     "POST /v1/reconciliation/files HTTP/1.1\r\nHost: a\r\nIdempotency-Key: big\r\n"
                     "Content-Type: text/csv\r\nContent-Length: %zu\r\n\r\n%s",
                     sizeof(header) - 1 + (size_t)LINES * LINE_BYTES, header);
    assert_int_equal(rp_send_all(c.fd, head, (size_t)n), 0);
    static char chunk[LINE_BYTES * 4096 + 1];
    int64_t t0 = rp_now_ms();
    for (int i = 0; i < LINES;) {
        size_t len = 0;
        for (int k = 0; k < 4096 && i < LINES; k++, i++)
            len += (size_t)snprintf(chunk + len, sizeof(chunk) - len,
                                    "pay_03%016x,%04d,EUR,2026-11-%02d\n", i + 1, 1000 + i % 9000,
                                    1 + i % 28);
        assert_int_equal(rp_send_all(c.fd, chunk, len), 0);
    }
    struct rp_response r;
    assert_int_equal(rp_read_response(&c, &r, false, 120000), 0);
    int64_t ms = rp_now_ms() - t0;
    if (r.status != 201)
        fail_msg("status %d: %s", r.status, r.body);
    assert_non_null(strstr(r.body, "\"lines\":1000000,"));
    assert_non_null(strstr(r.body, "\"unknown_transaction\":1000000,"));
    rp_response_free(&r);
    rp_conn_close(&c);

    long anon1 = status_kib(st.pid, "RssAnon"), hwm = status_kib(st.pid, "VmHWM");
    printf("1M lines: %lld ms after the head (%.0f lines/s end to end); RssAnon %ld -> %ld KiB, "
           "peak RSS %ld KiB (LMDB's file pages included)\n",
           (long long)ms, ms ? 1000.0 * LINES / (double)ms : 0.0, anon0, anon1, hwm);
    if (anon1 - anon0 > 16 * 1024)
        fail_msg("settle's anonymous memory grew by %ld KiB for one upload", anon1 - anon0);

    static char log[1 << 20];
    FILE *f = fopen(st.log_path, "r");
    assert_non_null(f);
    log[fread(log, 1, sizeof(log) - 1, f)] = '\0';
    fclose(f);
    int progress = 0;
    for (const char *p = log; (p = strstr(p, "\"reconciliation progress\"")) != NULL; p++)
        progress++;
    assert_int_equal(progress, 10); /* every 100,000 lines */
    assert_int_equal(rp_server_stop(&st), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_teardown(test_million_lines, rp_teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
