/*
 * Integration-test harness: starts the real `ringpay` binary and speaks raw HTTP/1.1 to
 * it over loopback.
 *
 * Contract:
 *   - The binary is RINGPAY_BIN (a compile definition, the absolute path of the built
 *     target). Children get a cleaned environment (every RINGPAY_* variable removed,
 *     then RINGPAY_AUTH=off, then the caller's extra "K=V" entries added) and
 *     PR_SET_PDEATHSIG(SIGKILL), so a test process that dies never leaves a server
 *     behind. RINGPAY_AUTH=off: the engine's own tests of HTTP, payments and durability
 *     speak unsigned requests; the tests of the signing gate turn it on with
 *     "--auth on" (a flag wins over the environment) or RINGPAY_AUTH=on.
 *   - rp_server_start() picks a free loopback port from RP_ITEST_PORT_BASE (set per test
 *     program by tests/integration/CMakeLists.txt, so `ctest -j` never collides), makes a
 *     fresh temporary directory holding the data dir and the server's stderr log, and
 *     returns only once GET /healthz answers 200 (bounded by RP_READY_TIMEOUT_MS).
 *   - Every wait is bounded: reads use poll() with a deadline, child waits use a
 *     deadline and end in SIGKILL. Nothing here can hang a test.
 *   - Functions return 0 or -errno (operating errors); the rp_must_* helpers and
 *     rp_teardown() are for cmocka tests and fail the current test instead.
 *
 * Return codes of the response reader:
 *   0            a complete response was parsed
 *   -ETIMEDOUT   the deadline passed first
 *   -ECONNRESET  the peer closed (FIN or RST) before the first byte of a response
 *   -EPIPE       the peer closed in the middle of a response (truncated)
 *   -EPROTO      the bytes are not a well-formed HTTP/1.x response
 */
#ifndef RINGPAY_TESTS_INTEGRATION_HARNESS_H
#define RINGPAY_TESTS_INTEGRATION_HARNESS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define RP_READY_TIMEOUT_MS 10000
#define RP_STOP_TIMEOUT_MS  15000
#define RP_IO_TIMEOUT_MS    5000
#define RP_PATH_MAX         512
#define RP_RESP_HEADERS_MAX 64

/* ---- processes ------------------------------------------------------------------ */

struct rp_server {
    pid_t pid; /* 0 once reaped */
    int port;
    char dir[RP_PATH_MAX];      /* temporary root, removed by rp_server_stop */
    char data_dir[RP_PATH_MAX]; /* dir/data: passed as --data */
    char log_path[RP_PATH_MAX]; /* dir/stderr.log: the server's stdout and stderr */
    int wait_status;            /* raw waitpid status once reaped */
};

/* Runs in the child between fork and execv (seccomp filters and the like). It must only
 * call async-signal-safe functions; if it fails it should _exit(126). */
typedef void (*rp_pre_exec_fn)(void);

/*
 * Starts `ringpay serve --listen 127.0.0.1:PORT --data DIR <extra_args...>` and waits
 * until GET /healthz answers 200. extra_args and extra_env are NULL-terminated (or NULL).
 * On failure prints the server log to stderr, kills the child and returns -errno.
 */
int rp_server_start(struct rp_server *s, const char *const extra_args[],
                    const char *const extra_env[]);

/* Makes the temporary directory (dir, data_dir, log_path) without starting anything,
 * so a test can prepare the data first. Removed by rp_server_stop or rp_teardown. */
int rp_server_prepare(struct rp_server *s);

/* Starts `ringpay COMMAND --listen 127.0.0.1:PORT --data DIR <extra_args...>` (a new
 * port) in s's existing directory, its output appended to the same log, and waits until
 * GET /healthz answers 200. For another subcommand than serve (settle), and for
 * restarts on the same data. The previous process must have been reaped. */
int rp_server_respawn(struct rp_server *s, const char *command, const char *const extra_args[],
                      const char *const extra_env[]);

/* Sends `sig` to the server. */
int rp_server_signal(struct rp_server *s, int sig);

/*
 * Waits up to timeout_ms for the server to exit. Returns its exit code (0..255), 128+N
 * when it died of signal N, or -ETIMEDOUT (the server is left running).
 */
int rp_server_wait(struct rp_server *s, int timeout_ms);

/* True while the server process has not exited (reaps it if it has). */
bool rp_server_alive(struct rp_server *s);

/*
 * SIGTERM, wait up to RP_STOP_TIMEOUT_MS (then SIGKILL), remove the temporary directory.
 * Returns the rp_server_wait() code, or -ETIMEDOUT if SIGKILL was needed. Prints the
 * server log when the result is not 0. Safe to call twice. Before removing it, the log
 * is scanned (net/log.h log_find_leak): an unmasked card-like number, a secret, a
 * signature or a registered canary in it makes the result RP_LOG_LEAK (the line is
 * printed), so every integration test checks log hygiene (SPEC §6).
 */
int rp_server_stop(struct rp_server *s);

#define RP_LOG_LEAK     99
#define RP_CANARIES_MAX 64

/* Registers a string that must never appear in any server log from now on (a secret,
 * a signature, a card number a test sends). The string must outlive the test. */
void rp_log_canary(const char *text);

/* Prints the last `max_bytes` of the server's log to stderr, for diagnostics. */
void rp_server_dump_log(const struct rp_server *s, size_t max_bytes);

struct rp_run_result {
    int code;        /* exit code, 128+signal, or -ETIMEDOUT */
    bool signaled;   /* killed by a signal (a crash, or our SIGKILL on timeout) */
    char out[16384]; /* stdout, NUL-terminated, truncated */
    char err[16384]; /* stderr, NUL-terminated, truncated */
};

/*
 * Runs RINGPAY_BIN with args (argv[1..], NULL-terminated) to completion, at most
 * timeout_ms, capturing stdout and stderr. pre_exec may be NULL. Returns 0 when the
 * child was run (see res->code) or -errno when it could not be started.
 */
int rp_run(const char *const args[], const char *const extra_env[], rp_pre_exec_fn pre_exec,
           int timeout_ms, struct rp_run_result *res);

/* Like rp_server_start but with a pre_exec hook and without waiting for readiness. */
int rp_server_spawn(struct rp_server *s, const char *const extra_args[],
                    const char *const extra_env[], rp_pre_exec_fn pre_exec);

/* Number of lines in s (a last line without '\n' counts). */
int rp_count_lines(const char *s);

/* ---- sockets -------------------------------------------------------------------- */

/* Monotonic clock in milliseconds. */
int64_t rp_now_ms(void);

void rp_sleep_ms(int ms);

/* Raises RLIMIT_NOFILE's soft limit to at least `want` (at most the hard limit).
 * Returns the new soft limit. */
long rp_raise_nofile(long want);

/* Connects a TCP socket to 127.0.0.1:port within timeout_ms; returns the fd (blocking,
 * TCP_NODELAY) or -errno. */
int rp_connect(int port, int timeout_ms);

/* Writes all len bytes within RP_IO_TIMEOUT_MS; 0 or -errno (-EPIPE when the peer
 * closed). Never raises SIGPIPE. */
int rp_send_all(int fd, const void *buf, size_t len);

/* rp_send_all of a NUL-terminated string. */
int rp_send_str(int fd, const char *s);

/* Closes with SO_LINGER {1, 0}: the kernel sends an RST instead of a FIN. */
void rp_close_rst(int fd);

/* Returns a free loopback TCP port from RP_ITEST_PORT_BASE upward, or -errno. */
int rp_pick_port(void);

/* ---- HTTP/1.1 client ------------------------------------------------------------ */

/* A connection with a read buffer: bytes read past one response stay for the next. */
struct rp_conn {
    int fd;
    char *buf;
    size_t len;
    size_t cap;
};

struct rp_header {
    const char *name; /* points into rp_response.head */
    const char *value;
};

struct rp_response {
    int status;
    int version_minor;
    const char *reason;
    int header_count;
    struct rp_header headers[RP_RESP_HEADERS_MAX];
    char *head; /* a private copy of the status line and headers, NUL-split */
    char *body; /* decoded body, always NUL-terminated (malloc), never NULL after 0 */
    size_t body_len;
    bool chunked;      /* body came with Transfer-Encoding: chunked */
    size_t wire_bytes; /* bytes of the stream this response used */
};

/* Wraps a connected fd (owns it from now on). Returns 0 or -ENOMEM. */
int rp_conn_init(struct rp_conn *c, int fd);

/* Connects and wraps. Returns 0 or -errno. */
int rp_conn_open(struct rp_conn *c, int port);

/* Closes the fd (if open) and frees the buffer. */
void rp_conn_close(struct rp_conn *c);

/*
 * Reads one response within timeout_ms. no_body: the request was HEAD (1xx, 204 and 304
 * never have a body anyway). A 1xx interim response is returned as a response of its
 * own. See the top comment for the return codes. On 0 the caller frees r with
 * rp_response_free; on error r holds nothing to free.
 */
int rp_read_response(struct rp_conn *c, struct rp_response *r, bool no_body, int timeout_ms);

void rp_response_free(struct rp_response *r);

/* The first header named `name` (case-insensitive), or NULL. */
const char *rp_header(const struct rp_response *r, const char *name);

/* Number of headers named `name`. */
int rp_header_count(const struct rp_response *r, const char *name);

/*
 * Waits up to timeout_ms for the peer to close the connection (FIN or RST), discarding
 * what arrives. Returns 0 when closed, -ETIMEDOUT if still open. *extra (may be NULL)
 * gets the number of bytes discarded, buffered bytes included.
 */
int rp_conn_wait_close(struct rp_conn *c, int timeout_ms, size_t *extra);

/*
 * One request on a fresh connection: "METHOD path HTTP/1.1", Host, the extra header
 * lines (each "Name: value", NULL-terminated list or NULL), Content-Length when body is
 * not NULL, then the body. Reads the response. Returns 0 or an rp_read_response code.
 */
int rp_request(int port, const char *method, const char *path, const char *const headers[],
               const char *body, struct rp_response *r);

/* ---- Prometheus text ------------------------------------------------------------ */

/*
 * Sums the values of every sample named exactly `name` whose label set contains each
 * of the given `key="value"` strings (NULL-terminated, may be NULL). *matched (may be
 * NULL) gets the number of samples summed.
 */
double rp_metric_sum(const char *text, const char *name, const char *const labels[], int *matched);

/* GET /metrics on a fresh connection and rp_metric_sum over it; -1 on failure. */
double rp_scrape(int port, const char *name, const char *const labels[]);

/* ---- cmocka helpers ------------------------------------------------------------- */

/* rp_server_start or fail the test. The server is remembered for rp_teardown. */
void rp_must_start(struct rp_server *s, const char *const extra_args[]);

/* Cmocka teardown: stops (SIGKILL if needed) every server rp_must_start started that is
 * still running and removes their directories. Always returns 0. */
int rp_teardown(void **state);

/* Asserts the response is an error body per SPEC §2 with this code (NULL: any code)
 * and a request_id equal to the X-Request-Id header. */
void rp_assert_error_body(const struct rp_response *r, const char *code);

#endif
