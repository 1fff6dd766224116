/*
 * `ringpay client COMMAND …`: a signed command-line client, one command per API call
 * (SPEC §1-§3): authorize, capture, void, refund, get, balances, ledger.
 *
 * Each run sends one request over one blocking TCP connection to --url (plain
 * http://HOST[:PORT], default http://127.0.0.1:8080) and closes it. The request is
 * signed per SPEC §3 with engine/sign.h: X-Ringpay-Key, X-Ringpay-Timestamp (the
 * current unix second) and X-Ringpay-Signature over the exact method, target,
 * Idempotency-Key and body bytes sent. A POST carries --idempotency-key, or a fresh
 * random UUID (version 4, from getrandom) so that every run is a new operation; give
 * the same key again to retry a call safely. The key comes from --key-id/--secret or
 * RINGPAY_KEY_ID/RINGPAY_SECRET; the secret is never printed.
 *
 * Output: the answer's body on stdout (with a final newline). --verbose adds, on
 * stderr, the request line, the string to sign and the status line (never the secret
 * nor the signature). Exit codes: 0 for a 2xx answer; 1 for any other status (the
 * error body is still printed) or when the server cannot be reached or answers
 * garbage (one "ringpay: …" line); 2 for bad usage (one "ringpay: …" line).
 */
#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <openssl/crypto.h>

#include "engine/assert.h"
#include "engine/json.h"
#include "engine/sign.h"
#include "store/keyfile.h"
#include "tools/cmd.h"
#include "tools/config.h"
#include "tools/load/loadstats.h"

#define CLIENT_TARGET_BYTES 512
#define CLIENT_BODY_BYTES   2048
#define CLIENT_HEAD_BYTES   (CLIENT_TARGET_BYTES + 1024)
#define CLIENT_RESP_MAX     (ENGINE_READ_ANSWER_MAX_BYTES + LOADSTATS_RESP_HEAD_MAX)
#define CLIENT_HOST_BYTES   256
#define UUID_BYTES          36

/* What one command sends. */
struct call {
    const char *method;
    char target[CLIENT_TARGET_BYTES];
    char body[CLIENT_BODY_BYTES];
    size_t body_len;
};

/* The options every command has, then each command's own. */
enum {
    O_URL,
    O_KEY_ID,
    O_SECRET,
    O_IDEM,
    O_TIMEOUT,
    O_VERBOSE,
    O_COMMON, /* count */
};

#define OPT_MAX (O_COMMON + 4)

static const struct opt common_opts[O_COMMON] = {
    [O_URL] = {.name = "url",
               .type = OPT_STRING,
               .def = "http://127.0.0.1:8080",
               .help = "the engine, http://HOST[:PORT]"},
    [O_KEY_ID] = {.name = "key-id", .type = OPT_STRING, .help = "API key id (rpk_…)"},
    [O_SECRET] = {.name = "secret", .type = OPT_STRING, .help = "API key secret (rps_…)"},
    [O_IDEM] = {.name = "idempotency-key",
                .type = OPT_STRING,
                .help = "Idempotency-Key of a POST (default: a fresh random UUID)"},
    [O_TIMEOUT] = {.name = "timeout-ms",
                   .type = OPT_UINT,
                   .def = "10000",
                   .min = 1,
                   .max = 3600000,
                   .help = "connect, send and receive timeout"},
    [O_VERBOSE] = {.name = "verbose",
                   .type = OPT_FLAG,
                   .help = "request line, string to sign and status line on stderr"},
};

static const struct opt amount_opt = {
    .name = "amount", .type = OPT_STRING, .help = "amount in minor units"};

struct command {
    const char *name;
    const char *method;
    const char *positional; /* "PAYMENT_ID", "MERCHANT_ID" or NULL */
    struct opt extra[4];
    size_t nextra;
    const char *usage;
    int (*build)(struct call *c, const struct opt *o, const char *pos);
};

/* ---- building requests ----------------------------------------------------------------- */

/* An id that goes into a path: 1-64 of [A-Za-z0-9_-] (merchant ids by SPEC §2; payment
 * ids are narrower), so nothing can break out of its path segment. */
static bool path_id_ok(const char *s)
{
    return keyfile_merchant_id_valid(s, strlen(s));
}

static bool digits_ok(const char *s)
{
    if (s[0] == '\0' || strlen(s) > 19)
        return false;
    for (const char *p = s; *p; p++)
        if (*p < '0' || *p > '9')
            return false;
    return true;
}

/* SPEC §2: 1-255 printable ASCII. */
static bool idempotency_key_ok(const char *s)
{
    size_t n = strlen(s);
    if (n == 0 || n > IDEMPOTENCY_KEY_MAX_BYTES)
        return false;
    for (size_t i = 0; i < n; i++)
        if (s[i] < 0x20 || s[i] > 0x7e)
            return false;
    return true;
}

/* Writes s (at most 80 bytes of it) for a one-line message: bytes outside printable
 * ASCII as \xNN, so a value can never split the line. */
static void put_value(FILE *f, const char *s)
{
    for (size_t i = 0; s[i] && i < 80; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c < 0x7f)
            fputc(c, f);
        else
            fprintf(f, "\\x%02x", c);
    }
}

static int bad_usage(const char *what, const char *value)
{
    fprintf(stderr, "ringpay: %s, got \"", what);
    put_value(stderr, value);
    fprintf(stderr, "\"\n");
    return -1;
}

/* Writes the raw digits of an amount as a JSON integer member. */
static void put_amount(struct jw *w, const char *digits)
{
    jw_key(w, "amount");
    jw_uint(w, strtoull(digits, NULL, 10));
}

static int finish_body(struct call *c, struct jw *w)
{
    jw_obj_end(w);
    if (jw_finish(w) != 0)
        return bad_usage("the request body is too large", "");
    c->body_len = w->len;
    return 0;
}

static int build_authorize(struct call *c, const struct opt *o, const char *pos)
{
    const struct opt *merchant = &o[O_COMMON], *amount = &o[O_COMMON + 1];
    const struct opt *currency = &o[O_COMMON + 2], *reference = &o[O_COMMON + 3];
    if (!merchant->str || !amount->str || !currency->str) {
        fprintf(stderr, "ringpay: authorize needs --merchant, --amount and --currency\n");
        return -1;
    }
    if (!path_id_ok(merchant->str))
        return bad_usage("--merchant: expected 1-64 of [A-Za-z0-9_-]", merchant->str);
    if (!digits_ok(amount->str))
        return bad_usage("--amount: expected an integer in minor units", amount->str);
    snprintf(c->target, sizeof(c->target), "/v1/payments/authorize");
    struct jw w;
    jw_init(&w, c->body, sizeof(c->body));
    jw_obj_begin(&w);
    jw_key(&w, "merchant_id");
    jw_cstr(&w, merchant->str);
    put_amount(&w, amount->str);
    jw_key(&w, "currency");
    jw_cstr(&w, currency->str);
    if (reference->str) {
        jw_key(&w, "reference");
        jw_cstr(&w, reference->str);
    }
    return finish_body(c, &w);
}

/* capture, void and refund: POST /v1/payments/{id}/{name} with an optional amount. */
static int build_payment_post(struct call *c, const struct opt *o, const char *pos,
                              const char *name, bool has_amount)
{
    snprintf(c->target, sizeof(c->target), "/v1/payments/%s/%s", pos, name);
    struct jw w;
    jw_init(&w, c->body, sizeof(c->body));
    jw_obj_begin(&w);
    if (has_amount && o[O_COMMON].str) {
        if (!digits_ok(o[O_COMMON].str))
            return bad_usage("--amount: expected an integer in minor units", o[O_COMMON].str);
        put_amount(&w, o[O_COMMON].str);
    }
    return finish_body(c, &w);
}

static int build_capture(struct call *c, const struct opt *o, const char *pos)
{
    return build_payment_post(c, o, pos, "capture", true);
}

static int build_void(struct call *c, const struct opt *o, const char *pos)
{
    return build_payment_post(c, o, pos, "void", false);
}

static int build_refund(struct call *c, const struct opt *o, const char *pos)
{
    return build_payment_post(c, o, pos, "refund", true);
}

static int build_get(struct call *c, const struct opt *o, const char *pos)
{
    snprintf(c->target, sizeof(c->target), "/v1/payments/%s", pos);
    return 0;
}

static int build_balances(struct call *c, const struct opt *o, const char *pos)
{
    snprintf(c->target, sizeof(c->target), "/v1/merchants/%s/balances", pos);
    return 0;
}

static int build_ledger(struct call *c, const struct opt *o, const char *pos)
{
    const char *after = o[O_COMMON].str, *limit = o[O_COMMON + 1].str;
    if (after && !digits_ok(after))
        return bad_usage("--after: expected a next_after value", after);
    if (limit && !digits_ok(limit))
        return bad_usage("--limit: expected an integer", limit);
    int n = snprintf(c->target, sizeof(c->target), "/v1/merchants/%s/ledger", pos);
    if (after || limit)
        snprintf(c->target + n, sizeof(c->target) - (size_t)n, "?%s%s%s%s%s", after ? "after=" : "",
                 after ? after : "", after && limit ? "&" : "", limit ? "limit=" : "",
                 limit ? limit : "");
    return 0;
}

#define COMMON_USAGE                                                                               \
    "\n\nSigns the request with --key-id/--secret (or RINGPAY_KEY_ID/RINGPAY_SECRET), prints "     \
    "the\nanswer's body, exits 0 on 2xx, 1 on another status, 2 on bad usage."

static const struct command commands[] = {
    {"authorize",
     "POST",
     NULL,
     {{.name = "merchant", .type = OPT_STRING, .help = "merchant id"},
      {.name = "amount", .type = OPT_STRING, .help = "amount in minor units"},
      {.name = "currency", .type = OPT_STRING, .help = "three upper-case letters"},
      {.name = "reference", .type = OPT_STRING, .help = "your reference (optional)"}},
     4,
     "usage: ringpay client authorize --merchant ID --amount N --currency CUR "
     "[--reference R]" COMMON_USAGE,
     build_authorize},
    {"capture",
     "POST",
     "PAYMENT_ID",
     {amount_opt},
     1,
     "usage: ringpay client capture PAYMENT_ID [--amount N]" COMMON_USAGE,
     build_capture},
    {"void",
     "POST",
     "PAYMENT_ID",
     {{0}},
     0,
     "usage: ringpay client void PAYMENT_ID" COMMON_USAGE,
     build_void},
    {"refund",
     "POST",
     "PAYMENT_ID",
     {amount_opt},
     1,
     "usage: ringpay client refund PAYMENT_ID [--amount N]" COMMON_USAGE,
     build_refund},
    {"get",
     "GET",
     "PAYMENT_ID",
     {{0}},
     0,
     "usage: ringpay client get PAYMENT_ID" COMMON_USAGE,
     build_get},
    {"balances",
     "GET",
     "MERCHANT_ID",
     {{0}},
     0,
     "usage: ringpay client balances MERCHANT_ID" COMMON_USAGE,
     build_balances},
    {"ledger",
     "GET",
     "MERCHANT_ID",
     {{.name = "after", .type = OPT_STRING, .help = "next_after of the previous page"},
      {.name = "limit", .type = OPT_STRING, .help = "entries per page, 1..1000"}},
     2,
     "usage: ringpay client ledger MERCHANT_ID [--after N] [--limit N]" COMMON_USAGE,
     build_ledger},
};

/* ---- the URL and the connection ---------------------------------------------------- */

struct target_addr {
    char host[CLIENT_HOST_BYTES]; /* as written, for the Host header */
    char name[CLIENT_HOST_BYTES]; /* to resolve: brackets removed */
    char port[8];
};

/* Parses http://HOST[:PORT][/] (HOST a name, an IPv4 address or [IPv6]). */
static int parse_url(const char *url, struct target_addr *t)
{
    const char *p = url;
    if (strncmp(p, "http://", 7) != 0)
        return -1;
    p += 7;
    size_t len = strlen(p);
    if (len > 0 && p[len - 1] == '/')
        len--;
    if (len == 0 || len >= sizeof(t->host) || memchr(p, '/', len) || memchr(p, '@', len))
        return -1;
    memcpy(t->host, p, len);
    t->host[len] = '\0';
    const char *port = NULL;
    if (t->host[0] == '[') {
        char *close = strchr(t->host, ']');
        if (close == NULL || (close[1] != '\0' && close[1] != ':'))
            return -1;
        snprintf(t->name, sizeof(t->name), "%.*s", (int)(close - t->host - 1), t->host + 1);
        port = close[1] == ':' ? close + 2 : NULL;
    } else {
        char *colon = strchr(t->host, ':');
        snprintf(t->name, sizeof(t->name), "%.*s", (int)(colon ? (size_t)(colon - t->host) : len),
                 t->host);
        port = colon ? colon + 1 : NULL;
    }
    if (port != NULL && (!digits_ok(port) || strlen(port) > 5 || atoi(port) > 65535))
        return -1;
    snprintf(t->port, sizeof(t->port), "%s", port ? port : "80");
    return t->name[0] == '\0' ? -1 : 0;
}

static int wait_fd(int fd, short events, int timeout_ms)
{
    struct pollfd p = {.fd = fd, .events = events};
    int n;
    while ((n = poll(&p, 1, timeout_ms)) < 0 && errno == EINTR)
        ;
    return n > 0 ? 0 : n == 0 ? -ETIMEDOUT : -errno;
}

/* Connects to the first address of t that answers within timeout_ms. */
static int dial(const struct target_addr *t, int timeout_ms)
{
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM}, *res;
    int gai = getaddrinfo(t->name, t->port, &hints, &res);
    if (gai != 0) {
        fprintf(stderr, "ringpay: cannot resolve %s: %s\n", t->name, gai_strerror(gai));
        return -1;
    }
    int fd = -1, err = 0;
    for (struct addrinfo *a = res; a != NULL && fd < 0; a = a->ai_next) {
        fd = socket(a->ai_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
        if (fd < 0) {
            err = errno;
            continue;
        }
        int rc = connect(fd, a->ai_addr, a->ai_addrlen) == 0 ? 0 : -errno;
        if (rc == -EINPROGRESS && (rc = wait_fd(fd, POLLOUT, timeout_ms)) == 0) {
            socklen_t len = sizeof(err);
            getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len);
            rc = -err;
        }
        if (rc != 0) {
            err = -rc;
            close(fd);
            fd = -1;
        }
    }
    freeaddrinfo(res);
    if (fd < 0) {
        fprintf(stderr, "ringpay: cannot connect to %s: %s\n", t->host, strerror(err));
        return -1;
    }
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}

static int send_all(int fd, const char *buf, size_t len, int timeout_ms)
{
    while (len > 0) {
        ssize_t n = send(fd, buf, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EAGAIN) {
            int rc = wait_fd(fd, POLLOUT, timeout_ms);
            if (rc)
                return rc;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        buf += n;
        len -= (size_t)n;
    }
    return 0;
}

/* Reads until one whole final (non-1xx) response is in buf. Returns 0 and *r, or -errno. */
static int read_response(int fd, char *buf, size_t cap, size_t *off, struct loadstats_resp *r,
                         int timeout_ms)
{
    size_t len = 0;
    for (;;) {
        int p = loadstats_resp_parse(buf + *off, len - *off, r);
        if (p < 0)
            return -EPROTO;
        if (p > 0 && r->status >= 200)
            return 0;
        if (p > 0) { /* an interim 1xx answer: skip it */
            *off += r->total_len;
            continue;
        }
        if (len == cap)
            return -EMSGSIZE;
        ssize_t n = recv(fd, buf + len, cap - len, 0);
        if (n < 0 && errno == EAGAIN) {
            int rc = wait_fd(fd, POLLIN, timeout_ms);
            if (rc)
                return rc;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return -ECONNRESET;
        len += (size_t)n;
    }
}

/* ---- signing and sending ------------------------------------------------------------ */

/* A random UUID, version 4 (RFC 4122), into out (UUID_BYTES and a NUL). */
static int random_uuid(char out[UUID_BYTES + 1])
{
    unsigned char b[16];
    if (getrandom(b, sizeof(b), 0) != (ssize_t)sizeof(b))
        return -1;
    b[6] = (unsigned char)((b[6] & 0x0f) | 0x40);
    b[8] = (unsigned char)((b[8] & 0x3f) | 0x80);
    snprintf(out, UUID_BYTES + 1,
             "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-%02x%02x%02x%02x%02x%02x", b[0], b[1],
             b[2], b[3], b[4], b[5], b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14],
             b[15]);
    return 0;
}

/* Writes the request head into head; returns its length or -1. */
static int format_head(char *head, size_t cap, const struct call *c, const struct target_addr *t,
                       const char *key_id, const char *ts, const char *sig, const char *idem)
{
    int n = snprintf(head, cap,
                     "%s %s HTTP/1.1\r\nHost: %s\r\nX-Ringpay-Key: %s\r\n"
                     "X-Ringpay-Timestamp: %s\r\nX-Ringpay-Signature: %.*s\r\n",
                     c->method, c->target, t->host, key_id, ts, AUTH_SIGNATURE_BYTES, sig);
    if (n > 0 && (size_t)n < cap && idem != NULL)
        n += snprintf(head + n, cap - (size_t)n,
                      "Idempotency-Key: %s\r\nContent-Type: application/json\r\n"
                      "Content-Length: %zu\r\n",
                      idem, c->body_len);
    if (n > 0 && (size_t)n < cap)
        n += snprintf(head + n, cap - (size_t)n, "Connection: close\r\n\r\n");
    return n > 0 && (size_t)n < cap ? n : -1;
}

/* Prints "what" with its '\n's shown as \n, on stderr. */
static void print_escaped(const char *what, const char *s)
{
    fprintf(stderr, "%s", what);
    for (; *s; s++)
        fputs(*s == '\n' ? "\\n" : (char[2]){*s, 0}, stderr);
    fputc('\n', stderr);
}

/* Prints the answer's body and returns the exit code. */
static int print_answer(const char *buf, const struct loadstats_resp *r, bool verbose)
{
    if (verbose) {
        const char *eol = memchr(buf, '\r', r->head_len);
        fprintf(stderr, "< %.*s\n", eol ? (int)(eol - buf) : 0, buf);
    }
    fwrite(buf + r->body_off, 1, r->body_len, stdout);
    if (r->body_len == 0 || buf[r->body_off + r->body_len - 1] != '\n')
        fputc('\n', stdout);
    fflush(stdout);
    return r->status >= 200 && r->status < 300 ? 0 : 1;
}

/* Signs c with the key, sends it, prints the answer. Returns the exit code. */
static int run_call(const struct call *c, const struct opt *o)
{
    struct target_addr t;
    if (parse_url(o[O_URL].str, &t) != 0) {
        bad_usage("--url: expected http://HOST[:PORT]", o[O_URL].str);
        return 2;
    }
    bool post = strcmp(c->method, "POST") == 0;
    char idem_buf[UUID_BYTES + 1], ts[24], sig[AUTH_SIGNATURE_BYTES];
    const char *idem = NULL;
    if (post && o[O_IDEM].str)
        idem = o[O_IDEM].str;
    else if (post && random_uuid(idem_buf) == 0)
        idem = idem_buf;
    if (post && idem == NULL) {
        fprintf(stderr, "ringpay: getrandom failed: %s\n", strerror(errno));
        return 1;
    }
    snprintf(ts, sizeof(ts), "%lld", (long long)time(NULL));
    struct sign_request req = {ts,        strlen(ts),        c->method, strlen(c->method),
                               c->target, strlen(c->target), idem,      idem ? strlen(idem) : 0,
                               c->body,   c->body_len};
    struct sign_key key;
    sign_key_init(&key, o[O_SECRET].str, strlen(o[O_SECRET].str));
    int rc = sign_compute(&key, &req, sig);
    sign_key_wipe(&key);
    ASSERT(rc == 0); /* the key id, target and idempotency key were checked */
    char head[CLIENT_HEAD_BYTES];
    int head_len = format_head(head, sizeof(head), c, &t, o[O_KEY_ID].str, ts, sig, idem);
    if (head_len < 0) {
        fprintf(stderr, "ringpay: the request head is too large\n");
        return 2;
    }
    if (o[O_VERBOSE].set) {
        char s[CLIENT_HEAD_BYTES + 128];
        fprintf(stderr, "> %s %s\n", c->method, c->target);
        if (sign_string(&req, s, sizeof(s)) > 0)
            print_escaped("> string to sign: ", s);
    }
    int timeout = (int)o[O_TIMEOUT].num;
    int fd = dial(&t, timeout);
    if (fd < 0)
        return 1;
    char *buf = malloc(CLIENT_RESP_MAX);
    size_t off = 0;
    struct loadstats_resp r;
    rc = buf == NULL ? -ENOMEM : send_all(fd, head, (size_t)head_len, timeout);
    if (rc == 0 && c->body_len > 0 && post)
        rc = send_all(fd, c->body, c->body_len, timeout);
    if (rc == 0)
        rc = read_response(fd, buf, CLIENT_RESP_MAX, &off, &r, timeout);
    close(fd);
    OPENSSL_cleanse(sig, sizeof(sig));
    if (rc == 0)
        rc = print_answer(buf + off, &r, o[O_VERBOSE].set);
    else if (rc == -EPROTO)
        fprintf(stderr, "ringpay: %s answered something that is not an HTTP response\n", t.host);
    else
        fprintf(stderr, "ringpay: no answer from %s: %s\n", t.host, strerror(-rc));
    free(buf);
    return rc < 0 ? 1 : rc;
}

/* ---- the command line -------------------------------------------------------------- */

/* Takes the positional argument out of argv (options with a value skip theirs).
 * Returns the new argc, or -1 after printing one line. */
static int take_positional(int argc, char **argv, const struct opt *o, size_t n, const char **pos)
{
    int out = 1;
    *pos = NULL;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (a[0] == '-') {
            argv[out++] = argv[i];
            if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
                continue;
            size_t len = strcspn(a + 2, "=");
            const struct opt *x = NULL;
            for (size_t k = 0; k < n && x == NULL && strncmp(a, "--", 2) == 0; k++)
                if (strlen(o[k].name) == len && strncmp(o[k].name, a + 2, len) == 0)
                    x = &o[k];
            if (x == NULL) { /* also whether it takes a value is unknown */
                fprintf(stderr, "ringpay: unknown option \"");
                put_value(stderr, a);
                fprintf(stderr, "\" (see --help)\n");
                return -1;
            }
            if (x->type != OPT_FLAG && a[2 + len] != '=' && i + 1 < argc)
                argv[out++] = argv[++i];
            continue;
        }
        if (*pos != NULL) {
            bad_usage("unexpected argument (see --help)", a);
            return -1;
        }
        *pos = a;
    }
    return out;
}

static int run_command(const struct command *cmd, int argc, char **argv)
{
    struct opt o[OPT_MAX];
    memcpy(o, common_opts, sizeof(common_opts));
    memcpy(o + O_COMMON, cmd->extra, cmd->nextra * sizeof(struct opt));
    size_t n = O_COMMON + cmd->nextra;
    const char *pos;
    argc = take_positional(argc, argv, o, n, &pos);
    if (argc < 0)
        return 2;
    int rc = config_parse(o, n, argc, argv, cmd->usage);
    if (rc != 0)
        return rc > 0 ? 0 : 2;
    if ((cmd->positional != NULL) != (pos != NULL)) {
        if (pos != NULL)
            bad_usage("unexpected argument (see --help)", pos);
        else
            fprintf(stderr, "ringpay: client %s needs %s\n", cmd->name, cmd->positional);
        return 2;
    }
    if (pos != NULL && !path_id_ok(pos)) {
        bad_usage(cmd->positional, pos);
        return 2;
    }
    if (o[O_KEY_ID].str == NULL || o[O_SECRET].str == NULL) {
        fprintf(stderr, "ringpay: client needs --key-id and --secret (or RINGPAY_KEY_ID and "
                        "RINGPAY_SECRET)\n");
        return 2;
    }
    if (!keyfile_key_id_valid(o[O_KEY_ID].str, strlen(o[O_KEY_ID].str))) {
        bad_usage("--key-id: expected rpk_ and 16 hex digits", o[O_KEY_ID].str);
        return 2;
    }
    if (o[O_IDEM].str && !idempotency_key_ok(o[O_IDEM].str)) {
        bad_usage("--idempotency-key: expected 1-255 printable ASCII characters", o[O_IDEM].str);
        return 2;
    }
    struct call c = {.method = cmd->method};
    if (cmd->build(&c, o, pos) != 0)
        return 2;
    return run_call(&c, o);
}

static void client_usage(FILE *f)
{
    fprintf(f, "usage: ringpay client COMMAND [options]\n\ncommands:\n");
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++) {
        const char *u = commands[i].usage + strlen("usage: ringpay client ");
        fprintf(f, "  %.*s\n", (int)strcspn(u, "\n"), u);
    }
    fprintf(f, "\nEvery command signs with --key-id/--secret (or RINGPAY_KEY_ID/RINGPAY_SECRET)\n"
               "and takes --url (default http://127.0.0.1:8080). 'ringpay client COMMAND --help'\n"
               "lists all options.\n");
}

int cmd_client(int argc, char **argv)
{
    if (argc < 2) {
        fprintf(stderr, "ringpay: client needs a command (see ringpay client --help)\n");
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        client_usage(stdout);
        return 0;
    }
    for (size_t i = 0; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (strcmp(argv[1], commands[i].name) == 0)
            return run_command(&commands[i], argc - 1, argv + 1);
    bad_usage("unknown client command (see ringpay client --help)", argv[1]);
    return 2;
}
