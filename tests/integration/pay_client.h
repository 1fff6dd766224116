/*
 * Payment-API client helpers for the integration tests (payments_test.c, crash_test.c),
 * on top of the harness (harness.h): keep-alive JSON calls, a small JSON reader over
 * jsmn, balances and ledger lookups, the merchant shard hash, and the process steps the
 * harness does not offer (stop without removing the data, restart on the same data,
 * `ringpay check`).
 *
 * Contract:
 *   - Every call is bounded by RP_IO_TIMEOUT_MS (the harness's reader); nothing blocks
 *     forever. Functions return 0 or -errno, never abort, so they are safe in worker
 *     threads (cmocka assertions are not: workers record, the main thread asserts).
 *   - A pc_conn reconnects lazily: after any transport error it is closed, and the
 *     next pc_call opens a new connection. pc_call never resends a request by itself.
 *   - The JSON reader keeps pointers into the text it parsed: the text must outlive the
 *     pc_json. String values are returned raw (escapes are not decoded).
 *   - pc_server_restart and pc_server_halt must be called from the thread that runs
 *     the test (the spawned server dies with that thread: PR_SET_PDEATHSIG).
 */
#ifndef RINGPAY_TESTS_INTEGRATION_PAY_CLIENT_H
#define RINGPAY_TESTS_INTEGRATION_PAY_CLIENT_H

#include <stdbool.h>
#include <stddef.h>

#include "harness.h"

/* ---- calls ---------------------------------------------------------------------- */

struct pc_conn {
    struct rp_conn c; /* c.fd < 0 while closed */
    int port;
};

/* Sets up a closed connection to 127.0.0.1:port (opened by the first pc_call). */
void pc_init(struct pc_conn *pc, int port);

void pc_close(struct pc_conn *pc);

/*
 * One request on pc's keep-alive connection: METHOD path, Host, "Idempotency-Key: key"
 * when key is not NULL, and for POST "Content-Type: application/json" with
 * Content-Length (0 when body is NULL). Reads the response into r (free it with
 * rp_response_free). Returns 0 or an rp_read_response / socket error (then the
 * connection is closed and r holds nothing).
 */
int pc_call(struct pc_conn *pc, const char *method, const char *path, const char *key,
            const char *body, struct rp_response *r);

/* Sends len raw bytes on a fresh connection, reads one response, closes. */
int pc_raw(int port, const char *raw, size_t len, struct rp_response *r);

/* ---- JSON reading --------------------------------------------------------------- */

struct pc_json {
    const char *js;
    void *tok; /* jsmntok_t[], malloc'd */
    int n;     /* tokens */
};

/* Tokenizes js (len bytes). 0, or -EINVAL when it is not JSON, -ENOMEM. */
int pc_json_parse(struct pc_json *j, const char *js, size_t len);

void pc_json_free(struct pc_json *j);

/* Token of member `key` of the object at token obj (0 is the root), or -1. */
int pc_json_get(const struct pc_json *j, int obj, const char *key);

/* Token of element idx of the array at token arr, or -1. */
int pc_json_at(const struct pc_json *j, int arr, int idx);

/* Number of members (object) or elements (array) of token t; -1 for other tokens. */
int pc_json_size(const struct pc_json *j, int t);

/* Copies the raw text of string token t (NUL-terminated). False when t is not a string
 * or does not fit. */
bool pc_json_str(const struct pc_json *j, int t, char *out, size_t cap);

/* The integer of primitive token t (plain decimal, optional '-'). False otherwise. */
bool pc_json_int(const struct pc_json *j, int t, long long *out);

/* True when token t is the literal null. */
bool pc_json_null(const struct pc_json *j, int t);

/* The keys of the object at token obj in order, joined by ',' (e.g. "id,amount"). */
bool pc_json_keys(const struct pc_json *j, int obj, char *out, size_t cap);

/* Shortcuts on a whole body that is one object: its top-level member `key`. */
bool pc_body_str(const char *body, const char *key, char *out, size_t cap);
bool pc_body_int(const char *body, const char *key, long long *out);

/* The "error" object's code and param of an error body; param "" when null. */
bool pc_error_parts(const char *body, char *code, size_t code_cap, char *param, size_t param_cap);

/* True for "YYYY-MM-DDTHH:MM:SS.mmmZ". */
bool pc_is_timestamp(const char *s);

/* ---- payment API shortcuts ------------------------------------------------------ */

/*
 * GET /v1/merchants/{m}/balances: the (pending, available) of one currency. Returns 0,
 * -ENOENT when the currency is absent, -EPROTO on a non-200 or malformed answer, or a
 * transport error.
 */
int pc_balance(struct pc_conn *pc, const char *merchant, const char *currency, long long *pending,
               long long *available);

/* One ledger entry as the API shows it. */
struct pc_entry {
    long long seq;
    char payment_id[32];
    char debit[16];
    char credit[16];
    long long amount;
    char currency[8];
};

/*
 * Reads the merchant's whole ledger, following next_after with pages of `limit`, into
 * out (at most max entries; *n gets how many). Returns 0, -E2BIG when there are more
 * than max, -EPROTO on a bad answer or a page loop, or a transport error.
 */
int pc_ledger_all(struct pc_conn *pc, const char *merchant, int limit, struct pc_entry *out,
                  int max, int *n);

/* The merchant's shard: FNV-1a 64 of its bytes mod nshards (engine/ids.h). */
unsigned pc_shard_of(const char *merchant, unsigned nshards);

/* ---- processes ------------------------------------------------------------------ */

/* SIGTERM and wait (RP_STOP_TIMEOUT_MS); keeps the directory. Returns the exit code,
 * 128+signal, or -ETIMEDOUT. */
int pc_server_halt(struct rp_server *s);

/*
 * Starts `ringpay serve` again on s's data directory (the server must be stopped), on
 * a newly picked port (s->port is updated), with extra_args, its output appended to
 * s->log_path; waits for /healthz. 0 or -errno (the log is printed on failure).
 */
int pc_server_restart(struct rp_server *s, const char *const extra_args[]);

/*
 * Runs `ringpay check --data <s->data_dir>` into res. Returns its exit code (or a
 * negative rp_run error); *payments (may be NULL) gets the payment count of the summary
 * line "check: N shards, P payments, ...", or -1 when there is no such line.
 */
int pc_check(const struct rp_server *s, struct rp_run_result *res, long long *payments);

/* Cmocka teardown: kills servers pc_server_restart started, then rp_teardown. */
int pc_teardown(void **state);

#endif
