/*
 * Payment-API client helpers for the integration tests. Contract in pay_client.h.
 *
 * Invariants: no function here calls a cmocka assertion (workers use them); every
 * socket wait goes through the harness's deadline-bounded reader; servers this file
 * spawns are remembered by pid so pc_teardown can always kill them.
 */
#define _GNU_SOURCE
#include "pay_client.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#define JSMN_STATIC
#include <jsmn.h>

#ifndef RINGPAY_BIN
#error "RINGPAY_BIN must name the ringpay binary"
#endif

#define PC_TOKENS_MAX   65536
#define PC_SPAWNED_MAX  16
#define PC_REQ_HEAD_MAX 2048

/* ---- calls ---------------------------------------------------------------------- */

void pc_init(struct pc_conn *pc, int port)
{
    memset(pc, 0, sizeof(*pc));
    pc->c.fd = -1;
    pc->port = port;
}

void pc_close(struct pc_conn *pc)
{
    rp_conn_close(&pc->c);
}

int pc_call(struct pc_conn *pc, const char *method, const char *path, const char *key,
            const char *body, struct rp_response *r)
{
    if (pc->c.fd < 0) {
        int err = rp_conn_open(&pc->c, pc->port);
        if (err)
            return err;
    }
    bool post = strcmp(method, "POST") == 0;
    size_t blen = body ? strlen(body) : 0;
    char head[PC_REQ_HEAD_MAX];
    int n = snprintf(head, sizeof(head), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\n", method, path);
    if (key && n > 0 && n < (int)sizeof(head))
        n += snprintf(head + n, sizeof(head) - (size_t)n, "Idempotency-Key: %s\r\n", key);
    if ((post || body) && n > 0 && n < (int)sizeof(head))
        n += snprintf(head + n, sizeof(head) - (size_t)n,
                      "Content-Type: application/json\r\nContent-Length: %zu\r\n", blen);
    if (n > 0 && n < (int)sizeof(head))
        n += snprintf(head + n, sizeof(head) - (size_t)n, "\r\n");
    if (n <= 0 || n >= (int)sizeof(head))
        return -E2BIG;
    int err = rp_send_all(pc->c.fd, head, (size_t)n);
    if (!err && blen)
        err = rp_send_all(pc->c.fd, body, blen);
    if (!err)
        err = rp_read_response(&pc->c, r, strcmp(method, "HEAD") == 0, RP_IO_TIMEOUT_MS);
    if (err) {
        pc_close(pc);
        return err;
    }
    const char *conn = rp_header(r, "Connection");
    if (conn && strcasecmp(conn, "close") == 0)
        pc_close(pc);
    return 0;
}

int pc_raw(int port, const char *raw, size_t len, struct rp_response *r)
{
    struct rp_conn c;
    int err = rp_conn_open(&c, port);
    if (err)
        return err;
    err = rp_send_all(c.fd, raw, len);
    /* The server may answer and close before reading everything (413): read anyway. */
    if (!err || err == -EPIPE || err == -ECONNRESET)
        err = rp_read_response(&c, r, false, RP_IO_TIMEOUT_MS);
    rp_conn_close(&c);
    return err;
}

/* ---- JSON reading --------------------------------------------------------------- */

int pc_json_parse(struct pc_json *j, const char *js, size_t len)
{
    memset(j, 0, sizeof(*j));
    jsmn_parser p;
    jsmn_init(&p);
    int n = jsmn_parse(&p, js, len, NULL, 0);
    if (n < 1 || n > PC_TOKENS_MAX)
        return -EINVAL;
    jsmntok_t *t = calloc((size_t)n, sizeof(*t));
    if (!t)
        return -ENOMEM;
    jsmn_init(&p);
    if (jsmn_parse(&p, js, len, t, (unsigned)n) != n) {
        free(t);
        return -EINVAL;
    }
    j->js = js;
    j->tok = t;
    j->n = n;
    return 0;
}

void pc_json_free(struct pc_json *j)
{
    free(j->tok);
    j->tok = NULL;
    j->n = 0;
}

/* Index of the token after the subtree rooted at token i. */
static int tok_skip(const jsmntok_t *t, int n, int i)
{
    int pending = 1;
    while (pending > 0 && i < n) {
        pending--;
        if (t[i].type == JSMN_OBJECT)
            pending += 2 * t[i].size;
        else if (t[i].type == JSMN_ARRAY)
            pending += t[i].size;
        i++;
    }
    return i;
}

static size_t tok_len(const jsmntok_t *t)
{
    return (size_t)(t->end - t->start);
}

int pc_json_get(const struct pc_json *j, int obj, const char *key)
{
    const jsmntok_t *t = j->tok;
    if (obj < 0 || obj >= j->n || t[obj].type != JSMN_OBJECT)
        return -1;
    size_t klen = strlen(key);
    int i = obj + 1;
    for (int k = 0; k < t[obj].size && i + 1 < j->n; k++) {
        if (t[i].type == JSMN_STRING && tok_len(&t[i]) == klen &&
            memcmp(j->js + t[i].start, key, klen) == 0)
            return i + 1;
        i = tok_skip(t, j->n, i + 1);
    }
    return -1;
}

int pc_json_at(const struct pc_json *j, int arr, int idx)
{
    const jsmntok_t *t = j->tok;
    if (arr < 0 || arr >= j->n || t[arr].type != JSMN_ARRAY || idx < 0 || idx >= t[arr].size)
        return -1;
    int i = arr + 1;
    for (int k = 0; k < idx; k++)
        i = tok_skip(t, j->n, i);
    return i < j->n ? i : -1;
}

int pc_json_size(const struct pc_json *j, int t)
{
    const jsmntok_t *tk = j->tok;
    if (t < 0 || t >= j->n || (tk[t].type != JSMN_OBJECT && tk[t].type != JSMN_ARRAY))
        return -1;
    return tk[t].size;
}

bool pc_json_str(const struct pc_json *j, int t, char *out, size_t cap)
{
    const jsmntok_t *tk = j->tok;
    if (t < 0 || t >= j->n || tk[t].type != JSMN_STRING || tok_len(&tk[t]) + 1 > cap)
        return false;
    memcpy(out, j->js + tk[t].start, tok_len(&tk[t]));
    out[tok_len(&tk[t])] = '\0';
    return true;
}

bool pc_json_int(const struct pc_json *j, int t, long long *out)
{
    const jsmntok_t *tk = j->tok;
    if (t < 0 || t >= j->n || tk[t].type != JSMN_PRIMITIVE)
        return false;
    const char *s = j->js + tk[t].start;
    size_t n = tok_len(&tk[t]), i = 0;
    bool neg = n > 0 && s[0] == '-';
    if (neg)
        i++;
    if (i == n || n - i > 18)
        return false;
    long long v = 0;
    for (; i < n; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        v = v * 10 + (s[i] - '0');
    }
    *out = neg ? -v : v;
    return true;
}

bool pc_json_null(const struct pc_json *j, int t)
{
    const jsmntok_t *tk = j->tok;
    return t >= 0 && t < j->n && tk[t].type == JSMN_PRIMITIVE && tok_len(&tk[t]) == 4 &&
           memcmp(j->js + tk[t].start, "null", 4) == 0;
}

bool pc_json_keys(const struct pc_json *j, int obj, char *out, size_t cap)
{
    const jsmntok_t *t = j->tok;
    if (obj < 0 || obj >= j->n || t[obj].type != JSMN_OBJECT || cap == 0)
        return false;
    size_t len = 0;
    out[0] = '\0';
    int i = obj + 1;
    for (int k = 0; k < t[obj].size && i < j->n; k++) {
        size_t kl = tok_len(&t[i]);
        if (len + kl + 2 > cap)
            return false;
        if (k > 0)
            out[len++] = ',';
        memcpy(out + len, j->js + t[i].start, kl);
        len += kl;
        out[len] = '\0';
        i = tok_skip(t, j->n, i + 1);
    }
    return true;
}

bool pc_body_str(const char *body, const char *key, char *out, size_t cap)
{
    struct pc_json j;
    if (!body || pc_json_parse(&j, body, strlen(body)) != 0)
        return false;
    bool ok = pc_json_str(&j, pc_json_get(&j, 0, key), out, cap);
    pc_json_free(&j);
    return ok;
}

bool pc_body_int(const char *body, const char *key, long long *out)
{
    struct pc_json j;
    if (!body || pc_json_parse(&j, body, strlen(body)) != 0)
        return false;
    bool ok = pc_json_int(&j, pc_json_get(&j, 0, key), out);
    pc_json_free(&j);
    return ok;
}

bool pc_error_parts(const char *body, char *code, size_t code_cap, char *param, size_t param_cap)
{
    struct pc_json j;
    if (!body || pc_json_parse(&j, body, strlen(body)) != 0)
        return false;
    int e = pc_json_get(&j, 0, "error");
    int p = pc_json_get(&j, e, "param");
    bool ok = pc_json_str(&j, pc_json_get(&j, e, "code"), code, code_cap) && p >= 0;
    if (ok && pc_json_null(&j, p))
        param[0] = '\0';
    else if (ok)
        ok = pc_json_str(&j, p, param, param_cap);
    pc_json_free(&j);
    return ok;
}

bool pc_is_timestamp(const char *s)
{
    static const char pat[] = "dddd-dd-ddTdd:dd:dd.dddZ";
    if (strlen(s) != sizeof(pat) - 1)
        return false;
    for (size_t i = 0; pat[i]; i++) {
        if (pat[i] == 'd' ? !isdigit((unsigned char)s[i]) : s[i] != pat[i])
            return false;
    }
    return true;
}

/* ---- payment API shortcuts ------------------------------------------------------ */

int pc_balance(struct pc_conn *pc, const char *merchant, const char *currency, long long *pending,
               long long *available)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/merchants/%s/balances", merchant);
    struct rp_response r;
    int err = pc_call(pc, "GET", path, NULL, NULL, &r);
    if (err)
        return err;
    struct pc_json j;
    err = -EPROTO;
    if (r.status != 200 || pc_json_parse(&j, r.body, r.body_len) != 0)
        goto out_free;
    int arr = pc_json_get(&j, 0, "balances");
    int n = pc_json_size(&j, arr);
    err = n < 0 ? -EPROTO : -ENOENT;
    for (int i = 0; i < n; i++) {
        int b = pc_json_at(&j, arr, i);
        char cur[8];
        if (!pc_json_str(&j, pc_json_get(&j, b, "currency"), cur, sizeof(cur)) ||
            strcmp(cur, currency) != 0)
            continue;
        bool ok = pc_json_int(&j, pc_json_get(&j, b, "pending"), pending) &&
                  pc_json_int(&j, pc_json_get(&j, b, "available"), available);
        err = ok ? 0 : -EPROTO;
        break;
    }
    pc_json_free(&j);
out_free:
    rp_response_free(&r);
    return err;
}

static bool entry_read(const struct pc_json *j, int t, struct pc_entry *e)
{
    return pc_json_int(j, pc_json_get(j, t, "seq"), &e->seq) &&
           pc_json_str(j, pc_json_get(j, t, "payment_id"), e->payment_id, sizeof(e->payment_id)) &&
           pc_json_str(j, pc_json_get(j, t, "debit"), e->debit, sizeof(e->debit)) &&
           pc_json_str(j, pc_json_get(j, t, "credit"), e->credit, sizeof(e->credit)) &&
           pc_json_int(j, pc_json_get(j, t, "amount"), &e->amount) &&
           pc_json_str(j, pc_json_get(j, t, "currency"), e->currency, sizeof(e->currency));
}

/* Reads one page: appends its entries, sets *next (-1 for null). */
static int ledger_page(struct pc_conn *pc, const char *merchant, long long after, int limit,
                       struct pc_entry *out, int max, int *n, long long *next)
{
    char path[256];
    snprintf(path, sizeof(path), "/v1/merchants/%s/ledger?after=%lld&limit=%d", merchant, after,
             limit);
    struct rp_response r;
    int err = pc_call(pc, "GET", path, NULL, NULL, &r);
    if (err)
        return err;
    struct pc_json j;
    err = -EPROTO;
    if (r.status != 200 || pc_json_parse(&j, r.body, r.body_len) != 0)
        goto out_free;
    int arr = pc_json_get(&j, 0, "entries");
    int na = pc_json_get(&j, 0, "next_after");
    int cnt = pc_json_size(&j, arr);
    if (cnt < 0 || cnt > limit || na < 0)
        goto out_json;
    *next = -1;
    if (!pc_json_null(&j, na) && !pc_json_int(&j, na, next))
        goto out_json;
    err = 0;
    for (int i = 0; i < cnt && !err; i++) {
        if (*n >= max)
            err = -E2BIG;
        else if (!entry_read(&j, pc_json_at(&j, arr, i), &out[*n]))
            err = -EPROTO;
        else
            (*n)++;
    }
out_json:
    pc_json_free(&j);
out_free:
    rp_response_free(&r);
    return err;
}

int pc_ledger_all(struct pc_conn *pc, const char *merchant, int limit, struct pc_entry *out,
                  int max, int *n)
{
    long long after = 0, next = 0;
    *n = 0;
    /* Bounded: each page moves `after` strictly forward or ends. */
    for (int pages = 0; pages <= max / (limit > 0 ? limit : 1) + 1; pages++) {
        int err = ledger_page(pc, merchant, after, limit, out, max, n, &next);
        if (err)
            return err;
        if (next < 0)
            return 0;
        if (next <= after)
            return -EPROTO;
        after = next;
    }
    return -EPROTO;
}

unsigned pc_shard_of(const char *merchant, unsigned nshards)
{
    uint64_t h = 0xcbf29ce484222325ull;
    for (const unsigned char *p = (const unsigned char *)merchant; *p; p++) {
        h ^= *p;
        h *= 0x100000001b3ull;
    }
    return (unsigned)(h % nshards);
}

/* ---- processes ------------------------------------------------------------------ */

static pid_t spawned[PC_SPAWNED_MAX];

static void spawned_set(pid_t old, pid_t now)
{
    for (int i = 0; i < PC_SPAWNED_MAX; i++) {
        if (spawned[i] == old) {
            spawned[i] = now;
            return;
        }
    }
}

int pc_server_halt(struct rp_server *s)
{
    pid_t pid = s->pid;
    if (pid <= 0)
        return rp_server_wait(s, 0);
    rp_server_signal(s, SIGTERM);
    int code = rp_server_wait(s, RP_STOP_TIMEOUT_MS);
    if (code != -ETIMEDOUT)
        spawned_set(pid, 0);
    return code;
}

/* One GET /healthz: true on 200. */
static bool healthy(int port)
{
    struct pc_conn pc;
    pc_init(&pc, port);
    struct rp_response r;
    bool ok = false;
    if (pc_call(&pc, "GET", "/healthz", NULL, NULL, &r) == 0) {
        ok = r.status == 200;
        rp_response_free(&r);
    }
    pc_close(&pc);
    return ok;
}

static pid_t spawn_serve(const struct rp_server *s, const char *const extra_args[])
{
    char listen[64];
    snprintf(listen, sizeof(listen), "127.0.0.1:%d", s->port);
    const char *argv[64] = {RINGPAY_BIN, "serve", "--listen", listen, "--data", s->data_dir};
    int n = 6;
    for (int i = 0; extra_args && extra_args[i] && n < 62; i++)
        argv[n++] = extra_args[i];
    argv[n] = NULL;
    int log_fd = open(s->log_path, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    if (log_fd < 0)
        return -errno;
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        int null_fd = open("/dev/null", O_RDONLY);
        if (null_fd >= 0)
            dup2(null_fd, 0);
        if (dup2(log_fd, 1) < 0 || dup2(log_fd, 2) < 0)
            _exit(126);
        sigset_t none;
        sigemptyset(&none);
        sigprocmask(SIG_SETMASK, &none, NULL);
        /* The engine reads RINGPAY_<FLAG> variables: give it a clean set, as the harness
         * (unsigned requests, like the harness's engines). */
        for (char **e = environ; *e;) {
            if (strncmp(*e, "RINGPAY_", 8) == 0) {
                char name[128];
                size_t k = strcspn(*e, "=");
                snprintf(name, sizeof(name), "%.*s", (int)k, *e);
                unsetenv(name);
            } else {
                e++;
            }
        }
        setenv("RINGPAY_AUTH", "off", 1);
        execv(argv[0], (char *const *)argv);
        _exit(127);
    }
    int saved = errno;
    close(log_fd);
    return pid < 0 ? -saved : pid;
}

int pc_server_restart(struct rp_server *s, const char *const extra_args[])
{
    if (s->pid > 0)
        return -EBUSY;
    s->port = rp_pick_port();
    if (s->port < 0)
        return s->port;
    pid_t pid = spawn_serve(s, extra_args);
    if (pid < 0)
        return pid;
    s->pid = pid;
    spawned_set(0, pid);
    int64_t deadline = rp_now_ms() + RP_READY_TIMEOUT_MS;
    while (rp_now_ms() < deadline) {
        if (!rp_server_alive(s)) {
            fprintf(stderr, "pay_client: ringpay exited during restart (status %d)\n",
                    s->wait_status);
            rp_server_dump_log(s, 8192);
            spawned_set(pid, 0);
            return -ECHILD;
        }
        if (healthy(s->port))
            return 0;
        rp_sleep_ms(20);
    }
    fprintf(stderr, "pay_client: ringpay not ready within %d ms after restart\n",
            RP_READY_TIMEOUT_MS);
    rp_server_dump_log(s, 8192);
    kill(pid, SIGKILL);
    rp_server_wait(s, RP_STOP_TIMEOUT_MS);
    spawned_set(pid, 0);
    return -ETIMEDOUT;
}

int pc_check(const struct rp_server *s, struct rp_run_result *res, long long *payments)
{
    const char *const args[] = {"check", "--data", s->data_dir, NULL};
    int err = rp_run(args, NULL, NULL, 60000, res);
    if (payments) {
        *payments = -1;
        const char *line = strstr(res->out, "check: ");
        unsigned shards;
        long long p;
        if (!err && line && sscanf(line, "check: %u shards, %lld payments", &shards, &p) == 2)
            *payments = p;
    }
    return err ? err : res->code;
}

int pc_teardown(void **state)
{
    for (int i = 0; i < PC_SPAWNED_MAX; i++) {
        /* Only a child of ours that is still unreaped (waitpid 0) is killed: a pid
         * the harness already reaped may belong to another process by now. */
        if (spawned[i] > 0 && waitpid(spawned[i], NULL, WNOHANG) == 0) {
            kill(spawned[i], SIGKILL);
            waitpid(spawned[i], NULL, 0);
        }
        spawned[i] = 0;
    }
    return rp_teardown(state);
}
