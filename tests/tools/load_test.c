/*
 * Tests of `ringpay load`: the histogram and HTTP framing of tools/load/loadstats.c, and
 * the load loop of tools/load/load.c (included, to reach its statics) against a small HTTP server
 * on loopback that this test runs in a thread: pipelining, the mixed scenario's
 * follow-ups, reconnects after "Connection: close", timeouts, and open-loop latency
 * measured from the schedule (coordinated omission).
 */
#include "tools/load/load.c"

#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>

#include <cmocka.h>

/* ---- histogram ---- */

static void hist_exact_below_1ms(void **state)
{
    static struct loadstats_hist h;
    loadstats_hist_init(&h);
    for (uint64_t v = 1; v <= 1000; v++)
        loadstats_hist_record(&h, v);
    assert_int_equal(h.count, 1000);
    assert_int_equal(loadstats_hist_percentile(&h, 0.50), 500);
    assert_int_equal(loadstats_hist_percentile(&h, 0.90), 900);
    assert_int_equal(loadstats_hist_percentile(&h, 0.99), 990);
    assert_int_equal(loadstats_hist_percentile(&h, 0.999), 999);
    assert_int_equal(loadstats_hist_percentile(&h, 1.0), 1000);
    assert_int_equal(h.max_us, 1000);
    assert_int_equal(h.min_us, 1);
}

/* Buckets tile the range without gaps, and each is within 1/128 of its values. */
static void hist_buckets_bound_the_error(void **state)
{
    for (size_t b = 0; b + 1 < LOADSTATS_HIST_BUCKETS; b++) {
        uint64_t high = loadstats_hist_bucket_high(b);
        assert_int_equal(loadstats_hist_bucket(high), b);
        assert_int_equal(loadstats_hist_bucket(high + 1), b + 1);
    }
    for (uint64_t v = 1; v <= LOADSTATS_HIST_MAX_US; v = v * 3 / 2 + 1) {
        uint64_t high = loadstats_hist_bucket_high(loadstats_hist_bucket(v));
        assert_true(high >= v);
        assert_true((double)(high - v) <= (double)v / LOADSTATS_HIST_SUB);
    }
    assert_int_equal(loadstats_hist_bucket(0), 0);
    assert_int_equal(loadstats_hist_bucket(1023), 1023);
    assert_int_equal(loadstats_hist_bucket(1024), 1024);
    /* 60 s is still resolved, not clamped into the last bucket. */
    assert_true(loadstats_hist_bucket(60ull * 1000 * 1000) < LOADSTATS_HIST_BUCKETS - 1);
}

static void hist_tail_percentiles(void **state)
{
    static struct loadstats_hist h;
    loadstats_hist_init(&h);
    for (int i = 0; i < 990; i++)
        loadstats_hist_record(&h, 100);
    for (int i = 0; i < 9; i++)
        loadstats_hist_record(&h, 20000);
    loadstats_hist_record(&h, 50000);
    assert_int_equal(loadstats_hist_percentile(&h, 0.50), 100);
    assert_int_equal(loadstats_hist_percentile(&h, 0.99), 100);
    uint64_t p991 = loadstats_hist_percentile(&h, 0.991);
    assert_true(p991 >= 20000 && p991 <= 20000 + 20000 / 128);
    uint64_t p999 = loadstats_hist_percentile(&h, 0.999);
    assert_true(p999 >= 20000 && p999 <= 20000 + 20000 / 128);
    assert_int_equal(loadstats_hist_percentile(&h, 1.0), 50000); /* clipped to the max */
    assert_int_equal(h.max_us, 50000);
    assert_int_equal(h.sum_us, 990 * 100 + 9 * 20000 + 50000);
}

static void hist_overflow_merge_and_empty(void **state)
{
    static struct loadstats_hist a, b, both;
    loadstats_hist_init(&a);
    loadstats_hist_init(&b);
    loadstats_hist_init(&both);
    assert_int_equal(loadstats_hist_percentile(&a, 0.5), 0);
    uint64_t huge = LOADSTATS_HIST_MAX_US * 4;
    loadstats_hist_record(&a, huge);
    assert_int_equal(a.buckets[LOADSTATS_HIST_BUCKETS - 1], 1);
    assert_int_equal(a.max_us, huge);
    assert_int_equal(loadstats_hist_percentile(&a, 0.5), LOADSTATS_HIST_MAX_US);
    for (uint64_t v = 1; v < 5000; v += 7) {
        loadstats_hist_record(v % 2 ? &a : &b, v);
        loadstats_hist_record(&both, v);
    }
    loadstats_hist_record(&both, huge);
    loadstats_hist_merge(&a, &b);
    assert_memory_equal(&a, &both, sizeof(a));
}

/* ---- requests ---- */

static int test_signer(void *ctx, const struct loadstats_req *req, char *out, size_t cap)
{
    int *calls = ctx;
    (*calls)++;
    return snprintf(out, cap, "X-Ringpay-Key: k1\r\nX-Ringpay-Signature: v1=%s\r\n", req->target);
}

static int failing_signer(void *ctx, const struct loadstats_req *req, char *out, size_t cap)
{
    return -1;
}

static void req_format_get_and_post(void **state)
{
    char buf[512];
    struct loadstats_req get = {.method = "GET", .target = "/healthz", .host = "h:1"};
    int n = loadstats_req_format(buf, sizeof(buf), &get, NULL, NULL);
    static const char want_get[] = "GET /healthz HTTP/1.1\r\nHost: h:1\r\n\r\n";
    assert_int_equal(n, sizeof(want_get) - 1);
    assert_memory_equal(buf, want_get, (size_t)n);

    const char body[] = "{\"a\":1}";
    struct loadstats_req post = {.method = "POST",
                                 .target = "/v1/x",
                                 .host = "h:1",
                                 .idempotency_key = "k-7",
                                 .body = body,
                                 .body_len = 7};
    int calls = 0;
    n = loadstats_req_format(buf, sizeof(buf), &post, test_signer, &calls);
    static const char want_post[] = "POST /v1/x HTTP/1.1\r\nHost: h:1\r\n"
                                    "X-Ringpay-Key: k1\r\nX-Ringpay-Signature: v1=/v1/x\r\n"
                                    "Idempotency-Key: k-7\r\n"
                                    "Content-Type: application/json\r\nContent-Length: 7\r\n"
                                    "\r\n{\"a\":1}";
    assert_int_equal(calls, 1);
    assert_int_equal(n, sizeof(want_post) - 1);
    assert_memory_equal(buf, want_post, (size_t)n);

    /* Every capacity short of the whole request fails instead of truncating. */
    for (size_t cap = 1; cap < sizeof(want_post) - 1; cap++)
        assert_int_equal(loadstats_req_format(buf, cap, &post, test_signer, &calls), -1);
    assert_int_equal(loadstats_req_format(buf, sizeof(buf), &post, failing_signer, NULL), -1);
}

/* ---- responses ---- */

static const char resp_201[] = "HTTP/1.1 201 Created\r\nServer: ringpay\r\n"
                               "content-length:  14 \r\nContent-Type: application/json\r\n"
                               "\r\n{\"id\":\"pay_1\"}";

static void resp_whole_and_split_at_every_byte(void **state)
{
    struct loadstats_resp r;
    size_t len = sizeof(resp_201) - 1;
    for (size_t cut = 0; cut < len; cut++) {
        memset(&r, 0xa5, sizeof(r));
        assert_int_equal(loadstats_resp_parse(resp_201, cut, &r), 0);
    }
    assert_int_equal(loadstats_resp_parse(resp_201, len, &r), 1);
    assert_int_equal(r.status, 201);
    assert_int_equal(r.body_len, 14);
    assert_int_equal(r.total_len, len);
    assert_int_equal(r.head_len, len - 14);
    assert_memory_equal(resp_201 + r.body_off, "{\"id\":\"pay_1\"}", 14);
    assert_false(r.close);
}

static void resp_pipelined(void **state)
{
    char buf[1024];
    static const char second[] = "HTTP/1.1 409 Conflict\r\nContent-Length: 2\r\n\r\n{}";
    static const char third[] = "HTTP/1.1 204 No Content\r\nConnection: close\r\n\r\n";
    size_t a = sizeof(resp_201) - 1, b = sizeof(second) - 1, c = sizeof(third) - 1;
    memcpy(buf, resp_201, a);
    memcpy(buf + a, second, b);
    memcpy(buf + a + b, third, c);
    memcpy(buf + a + b + c, "HTTP/1.1 2", 10); /* the start of a fourth */
    struct loadstats_resp r;
    size_t off = 0;
    unsigned want[] = {201, 409, 204};
    for (int i = 0; i < 3; i++) {
        assert_int_equal(loadstats_resp_parse(buf + off, a + b + c + 10 - off, &r), 1);
        assert_int_equal(r.status, want[i]);
        assert_int_equal(r.close, i == 2);
        off += r.total_len;
    }
    assert_int_equal(off, a + b + c);
    assert_int_equal(loadstats_resp_parse(buf + off, 10, &r), 0);
}

static void resp_rejects_what_it_cannot_frame(void **state)
{
    struct loadstats_resp r;
    const char *bad[] = {
        "XTTP/",                                                          /* early */
        "HTTP/1.1 200 OK\r\n\r\n",                                        /* no length */
        "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", /* chunked */
        "HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 3\r\n\r\nab",
        "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
        "HTTP/1.1 200 OK\r\nContent-Length: 1x\r\n\r\n",
        "HTTP/1.1 2x0 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n",
        "HTTP/1.1 200 OK\r\nno colon here\r\n\r\n",
        "HTTP/1.1 200 OK\r\nA: b\rC: d\r\n\r\n",
        "HTTP/1.1 099 Low\r\nContent-Length: 0\r\n\r\n",
    };
    for (size_t i = 0; i < ARRAY_LEN(bad); i++)
        assert_int_equal(loadstats_resp_parse(bad[i], strlen(bad[i]), &r), -EPROTO);

    /* A head that never ends is refused once it passes the limit. */
    static char big[LOADSTATS_RESP_HEAD_MAX + 64];
    memcpy(big, "HTTP/1.1 200 OK\r\n", 17);
    memset(big + 17, 'a', sizeof(big) - 17);
    assert_int_equal(loadstats_resp_parse(big, LOADSTATS_RESP_HEAD_MAX, &r), 0);
    assert_int_equal(loadstats_resp_parse(big, sizeof(big), &r), -EPROTO);

    /* HTTP/1.0 closes unless it says keep-alive; 304 has no body. */
    const char *v10 = "HTTP/1.0 200 OK\r\nContent-Length: 0\r\n\r\n";
    assert_int_equal(loadstats_resp_parse(v10, strlen(v10), &r), 1);
    assert_true(r.close);
    const char *v10ka = "HTTP/1.0 304 Not Modified\r\nConnection: Keep-Alive\r\n\r\n";
    assert_int_equal(loadstats_resp_parse(v10ka, strlen(v10ka), &r), 1);
    assert_false(r.close);
    assert_int_equal(r.body_len, 0);
}

static void json_string_finds_members_only(void **state)
{
    char out[32];
    const char *b = "{\"request_id\":\"r-1\",\"ref\":\"id\", \"id\" : \"pay_9\"}";
    assert_int_equal(loadstats_json_string(b, strlen(b), "id", out, sizeof(out)), 5);
    assert_string_equal(out, "pay_9");
    assert_int_equal(loadstats_json_string(b, strlen(b), "request_id", out, sizeof(out)), 3);
    assert_string_equal(out, "r-1");
    assert_int_equal(loadstats_json_string(b, strlen(b), "nope", out, sizeof(out)), -1);
    assert_int_equal(loadstats_json_string(b, strlen(b), "id", out, 5), -1); /* too long */
    const char *esc = "{\"id\":\"a\\\"b\"}";
    assert_int_equal(loadstats_json_string(esc, strlen(esc), "id", out, sizeof(out)), -1);
    const char *num = "{\"id\":12}";
    assert_int_equal(loadstats_json_string(num, strlen(num), "id", out, sizeof(out)), -1);
    const char *cut = "{\"id\":\"pay_";
    assert_int_equal(loadstats_json_string(cut, strlen(cut), "id", out, sizeof(out)), -1);
}

/* ---- the load loop against a loopback server ---- */

#define SRV_CONNS 64
#define SRV_KEYS  8192

struct srv {
    int lfd;
    uint16_t port;
    pthread_t tid;
    volatile int stop;
    /* behaviour */
    unsigned close_every; /* answer with Connection: close every Nth response (0: never) */
    bool mute;            /* read requests, never answer */
    unsigned stall_at;    /* before answering request #stall_at (1-based), sleep stall_ms */
    unsigned stall_ms;
    /* observations */
    unsigned accepted, requests, authorize, capture, refund, healthz, bad_id;
    unsigned max_batch; /* most requests answered from one read: pipelining seen */
    unsigned nkeys;
    char keys[SRV_KEYS][48];
    unsigned next_id;
};

struct srv_conn {
    int fd;
    char buf[16384];
    size_t len;
};

/* Answers one request (head and body in req[0..len)); appends to out. */
static size_t srv_answer(struct srv *s, const char *req, size_t len, char *out, size_t cap)
{
    s->requests++;
    if (s->stall_at && s->requests == s->stall_at)
        usleep(s->stall_ms * 1000);
    const char *key = strcasestr(req, "\r\nIdempotency-Key: ");
    if (key && key < req + len && s->nkeys < SRV_KEYS) {
        key += 19;
        size_t kl = strcspn(key, "\r");
        if (kl < sizeof(s->keys[0]))
            memcpy(s->keys[s->nkeys++], key, kl);
    }
    unsigned status = 200;
    char body[128];
    if (strncmp(req, "GET /healthz ", 13) == 0) {
        s->healthz++;
        snprintf(body, sizeof(body), "{\"status\":\"ok\"}");
    } else if (strncmp(req, "POST /v1/payments/authorize ", 28) == 0) {
        s->authorize++;
        status = 201;
        snprintf(body, sizeof(body), "{\"request_id\":\"q\",\"id\":\"pay_%u\"}", ++s->next_id);
    } else {
        unsigned id = 0;
        char verb[16] = "";
        sscanf(req, "POST /v1/payments/pay_%u/%15[a-z] ", &id, verb);
        if (id == 0 || id > s->next_id)
            s->bad_id++;
        bool capture = strcmp(verb, "capture") == 0;
        s->capture += capture;
        s->refund += !capture;
        status = capture ? 200 : 201;
        snprintf(body, sizeof(body), "{\"id\":\"%s_%u\"}", capture ? "pay" : "rfd", id);
    }
    bool close_now = s->close_every && s->requests % s->close_every == 0;
    int n = snprintf(out, cap, "HTTP/1.1 %u X\r\nContent-Length: %zu\r\n%s\r\n%s", status,
                     strlen(body), close_now ? "Connection: close\r\n" : "", body);
    assert_true(n > 0 && (size_t)n < cap);
    return (size_t)n;
}

/* Reads what is there and answers every complete request; false: close the conn. */
static bool srv_serve(struct srv *s, struct srv_conn *c)
{
    ssize_t n = recv(c->fd, c->buf + c->len, sizeof(c->buf) - 1 - c->len, 0);
    if (n <= 0)
        return n < 0 && errno == EAGAIN;
    c->len += (size_t)n;
    c->buf[c->len] = '\0';
    char out[16384];
    size_t out_len = 0, off = 0;
    unsigned batch = 0;
    bool keep = true;
    for (;;) {
        char *end = strstr(c->buf + off, "\r\n\r\n");
        if (end == NULL)
            break;
        size_t head = (size_t)(end + 4 - (c->buf + off));
        const char *cl = strcasestr(c->buf + off, "\r\nContent-Length: ");
        size_t body = cl && cl < end ? strtoul(cl + 18, NULL, 10) : 0;
        if (c->len - off < head + body)
            break;
        batch++;
        if (!s->mute) {
            out_len +=
                srv_answer(s, c->buf + off, head + body, out + out_len, sizeof(out) - out_len);
            if (strstr(out, "Connection: close")) {
                keep = false;
                off += head + body;
                break;
            }
        }
        off += head + body;
    }
    if (batch > s->max_batch)
        s->max_batch = batch;
    memmove(c->buf, c->buf + off, c->len - off);
    c->len -= off;
    if (out_len)
        assert_int_equal(send(c->fd, out, out_len, MSG_NOSIGNAL), (ssize_t)out_len);
    return keep;
}

static void *srv_main(void *arg)
{
    struct srv *s = arg;
    static struct srv_conn conns[SRV_CONNS];
    struct pollfd p[SRV_CONNS + 1];
    unsigned n = 0;
    while (!s->stop) {
        p[0] = (struct pollfd){.fd = s->lfd, .events = POLLIN};
        for (unsigned i = 0; i < n; i++)
            p[i + 1] = (struct pollfd){.fd = conns[i].fd, .events = POLLIN};
        if (poll(p, n + 1, 20) <= 0)
            continue;
        for (unsigned i = n; i-- > 0;)
            if (p[i + 1].revents && !srv_serve(s, &conns[i])) {
                close(conns[i].fd);
                conns[i] = conns[--n];
            }
        if ((p[0].revents & POLLIN) && n < SRV_CONNS) {
            int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK);
            if (fd >= 0) {
                conns[n].fd = fd;
                conns[n++].len = 0;
                s->accepted++;
            }
        }
    }
    for (unsigned i = 0; i < n; i++)
        close(conns[i].fd);
    return NULL;
}

static struct srv *srv_start(void)
{
    struct srv *s = calloc(1, sizeof(*s));
    assert_non_null(s);
    s->lfd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    assert_int_equal(bind(s->lfd, (struct sockaddr *)&a, sizeof(a)), 0);
    assert_int_equal(listen(s->lfd, 128), 0);
    assert_int_equal(getsockname(s->lfd, (struct sockaddr *)&a, &al), 0);
    s->port = ntohs(a.sin_port);
    return s;
}

static void srv_run(struct srv *s)
{
    assert_int_equal(pthread_create(&s->tid, NULL, srv_main, s), 0);
}

static void srv_stop(struct srv *s)
{
    s->stop = 1;
    pthread_join(s->tid, NULL);
    close(s->lfd);
}

static void cfg_for(struct load_config *cfg, const struct srv *s, enum scenario sc)
{
    *cfg = (struct load_config){.scenario = sc,
                                .connections = 4,
                                .pipeline = 1,
                                .threads = 1,
                                .merchants = 8,
                                .timeout_ms = 2000,
                                .run_id = 42,
                                .duration_ns = 20 * 1000000000ull,
                                .target = "127.0.0.1"};
    struct sockaddr_in *a = (struct sockaddr_in *)&cfg->addr;
    a->sin_family = AF_INET;
    a->sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    a->sin_port = htons(s->port);
    cfg->addr_len = sizeof(*a);
}

static int cmp_key(const void *a, const void *b)
{
    return strcmp(a, b);
}

static struct load_result result;

/* Mixed, pipelined, two threads, by count: every request answered once, the follow-ups
 * use the ids the server returned, every Idempotency-Key is unique. */
static void loop_mixed_pipelined(void **state)
{
    struct srv *s = srv_start();
    srv_run(s);
    struct load_config cfg;
    cfg_for(&cfg, s, SC_MIXED);
    cfg.pipeline = 8;
    cfg.threads = 2;
    cfg.requests = 600;
    assert_int_equal(run(&cfg, &result), 0);
    srv_stop(s);
    /* A run by count may overshoot by nothing: the budget is taken per request. */
    assert_int_equal(result.counts.responses, 600);
    assert_int_equal(result.counts.errors + result.counts.timeouts, 0);
    assert_int_equal(result.hist.count, 600);
    assert_int_equal(s->requests, 600);
    assert_int_equal(s->bad_id, 0);
    assert_true(s->capture > 100 && s->capture <= s->authorize);
    assert_true(s->refund > 100 && s->refund <= s->capture);
    assert_int_equal(result.counts.status[201], s->authorize + s->refund);
    assert_int_equal(result.counts.status[200], s->capture);
    assert_true(s->max_batch > 1); /* requests really were pipelined */
    assert_int_equal(s->accepted, 4);
    qsort(s->keys, s->nkeys, sizeof(s->keys[0]), cmp_key);
    assert_int_equal(s->nkeys, 600);
    for (unsigned i = 1; i < s->nkeys; i++)
        assert_string_not_equal(s->keys[i - 1], s->keys[i]);
    free(s);
}

/* The server closes every 7th response: the client reconnects and loses nothing. */
static void loop_reconnects_after_close(void **state)
{
    struct srv *s = srv_start();
    s->close_every = 7;
    srv_run(s);
    struct load_config cfg;
    cfg_for(&cfg, s, SC_HEALTHZ);
    cfg.requests = 300;
    assert_int_equal(run(&cfg, &result), 0);
    srv_stop(s);
    assert_int_equal(result.counts.responses, 300);
    assert_int_equal(result.counts.status[200], 300);
    assert_int_equal(result.counts.errors + result.counts.timeouts, 0);
    /* 42 closes; each was replaced, except at most one per connection at the end. */
    assert_true(s->accepted >= 4 + 300 / 7 - 4 && s->accepted <= 4 + 300 / 7);
    free(s);
}

/* A server that never answers: requests time out and the run still ends on time. */
static void loop_times_out(void **state)
{
    struct srv *s = srv_start();
    s->mute = true;
    srv_run(s);
    struct load_config cfg;
    cfg_for(&cfg, s, SC_AUTHORIZE);
    cfg.connections = 2;
    cfg.timeout_ms = 100;
    cfg.duration_ns = 500 * 1000000ull;
    uint64_t t0 = now_ns();
    assert_int_equal(run(&cfg, &result), 0);
    uint64_t took_ms = (now_ns() - t0) / 1000000;
    srv_stop(s);
    free(s);
    assert_int_equal(result.counts.responses, 0);
    assert_true(result.counts.timeouts >= 2 * 3); /* ~4 rounds of 2 connections */
    assert_true(took_ms >= 500 && took_ms < 500 + 3 * 100 + 500);
}

/* Open loop against a server that never answers: every slot of the schedule is either
 * sent (and times out) or reported missed; none is lost from the account. */
static void loop_open_loop_accounts_every_slot(void **state)
{
    struct srv *s = srv_start();
    s->mute = true;
    srv_run(s);
    struct load_config cfg;
    cfg_for(&cfg, s, SC_HEALTHZ);
    cfg.connections = 1;
    cfg.rate = 1000;
    cfg.timeout_ms = 100;
    cfg.duration_ns = 500 * 1000000ull;
    assert_int_equal(run(&cfg, &result), 0);
    srv_stop(s);
    free(s);
    assert_int_equal(result.counts.responses, 0);
    assert_true(result.counts.timeouts >= 2);
    assert_true(result.counts.missed > 400);
    assert_int_equal(result.counts.timeouts + result.counts.errors + result.counts.missed, 500);
}

/* One 150 ms stall of the server. Closed loop: only the stalled request sees it. Open
 * loop: every request scheduled during the stall is charged its wait, so the tail
 * shows it (no coordinated omission). */
static void loop_open_loop_counts_the_stall(void **state)
{
    uint64_t p95[2];
    for (int open = 0; open < 2; open++) {
        struct srv *s = srv_start();
        s->stall_at = 50;
        s->stall_ms = 150;
        srv_run(s);
        struct load_config cfg;
        cfg_for(&cfg, s, SC_HEALTHZ);
        cfg.connections = 1;
        cfg.rate = open ? 1000 : 0;
        cfg.duration_ns = 1000 * 1000000ull;
        cfg.requests = open ? 0 : 1000;
        assert_int_equal(run(&cfg, &result), 0);
        srv_stop(s);
        free(s);
        assert_int_equal(result.counts.errors + result.counts.timeouts, 0);
        assert_true(result.hist.max_us >= 150000);
        p95[open] = loadstats_hist_percentile(&result.hist, 0.95);
        if (open) { /* the rate is kept: ~1000 requests in the second */
            assert_int_equal(result.counts.responses + result.counts.missed, 1000);
            assert_true(result.counts.responses >= 800);
        }
    }
    assert_true(p95[0] < 20000);
    assert_true(p95[1] > 30000);
}

int main(void)
{
    signal(SIGPIPE, SIG_IGN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(hist_exact_below_1ms),
        cmocka_unit_test(hist_buckets_bound_the_error),
        cmocka_unit_test(hist_tail_percentiles),
        cmocka_unit_test(hist_overflow_merge_and_empty),
        cmocka_unit_test(req_format_get_and_post),
        cmocka_unit_test(resp_whole_and_split_at_every_byte),
        cmocka_unit_test(resp_pipelined),
        cmocka_unit_test(resp_rejects_what_it_cannot_frame),
        cmocka_unit_test(json_string_finds_members_only),
        cmocka_unit_test(loop_mixed_pipelined),
        cmocka_unit_test(loop_reconnects_after_close),
        cmocka_unit_test(loop_times_out),
        cmocka_unit_test(loop_open_loop_accounts_every_slot),
        cmocka_unit_test(loop_open_loop_counts_the_stall),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
