/*
 * One-connection HTTP server for client tests (see fake_http.h).
 */
#define _GNU_SOURCE
#include "tests/tools/fake_http.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stdint.h>
#include <cmocka.h>

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "engine/sign.h"

#define FAKE_WAIT_MS 10000

static void *serve_one(void *arg)
{
    struct fake_http *f = arg;
    struct pollfd p = {.fd = f->listen_fd, .events = POLLIN};
    if (poll(&p, 1, FAKE_WAIT_MS) != 1)
        return NULL;
    int fd = accept(f->listen_fd, NULL, NULL);
    if (fd < 0)
        return NULL;
    struct http_parser parser;
    http_parser_init(&parser);
    f->parse_rc = HTTP_PARSE_AGAIN;
    while (f->parse_rc == HTTP_PARSE_AGAIN && f->len < sizeof(f->buf)) {
        struct pollfd q = {.fd = fd, .events = POLLIN};
        if (poll(&q, 1, FAKE_WAIT_MS) != 1)
            break;
        ssize_t n = recv(fd, f->buf + f->len, sizeof(f->buf) - f->len, 0);
        if (n <= 0)
            break;
        f->len += (size_t)n;
        f->parse_rc = http_parse(&parser, f->buf, f->len, &f->req);
    }
    char out[4096];
    int n = snprintf(out, sizeof(out),
                     "HTTP/1.1 %d X\r\nContent-Type: application/json\r\nContent-Length: %zu\r\n"
                     "Connection: close\r\n\r\n%s",
                     f->status, strlen(f->answer), f->answer);
    ssize_t w = send(fd, out, (size_t)n, MSG_NOSIGNAL);
    (void)w;
    close(fd);
    return NULL;
}

void fake_http_start(struct fake_http *f, int status, const char *answer)
{
    memset(f, 0, sizeof(*f));
    f->status = status;
    f->answer = answer;
    f->listen_fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    assert_true(f->listen_fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    assert_int_equal(bind(f->listen_fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    assert_int_equal(getsockname(f->listen_fd, (struct sockaddr *)&a, &len), 0);
    f->port = ntohs(a.sin_port);
    assert_int_equal(listen(f->listen_fd, 4), 0);
    assert_int_equal(pthread_create(&f->tid, NULL, serve_one, f), 0);
}

void fake_http_stop(struct fake_http *f)
{
    pthread_join(f->tid, NULL);
    close(f->listen_fd);
}

char *fake_http_header(const struct fake_http *f, const char *name)
{
    const struct http_header *found = NULL;
    int count = 0;
    for (uint16_t i = 0; i < f->req.header_count; i++) {
        const struct http_header *h = &f->req.headers[i];
        if (h->name.len == strlen(name) &&
            strncasecmp(f->buf + h->name.off, name, h->name.len) == 0) {
            found = h;
            count++;
        }
    }
    if (count == 0)
        return NULL;
    assert_int_equal(count, 1);
    return strndup(f->buf + found->value.off, found->value.len);
}

char *fake_http_slice(const struct fake_http *f, struct http_slice s)
{
    return strndup(f->buf + s.off, s.len);
}

void fake_http_assert_signed(const struct fake_http *f, const char *key_id, const char *secret)
{
    assert_int_equal(f->parse_rc, HTTP_PARSE_DONE);
    char *key = fake_http_header(f, "X-Ringpay-Key"),
         *ts = fake_http_header(f, "X-Ringpay-Timestamp");
    char *sig = fake_http_header(f, "X-Ringpay-Signature");
    char *idem = fake_http_header(f, "Idempotency-Key");
    assert_non_null(key);
    assert_non_null(ts);
    assert_non_null(sig);
    assert_string_equal(key, key_id);
    int64_t t;
    assert_int_equal(sign_timestamp_parse(ts, strlen(ts), &t), 0);
    int64_t now = (int64_t)time(NULL);
    assert_true(t >= now - 5 && t <= now);
    struct sign_key k;
    sign_key_init(&k, secret, strlen(secret));
    struct sign_request r = {ts,
                             strlen(ts),
                             f->buf + f->req.method_token.off,
                             f->req.method_token.len,
                             f->buf + f->req.target.off,
                             f->req.target.len,
                             idem,
                             idem ? strlen(idem) : 0,
                             f->buf + f->req.body.off,
                             f->req.body.len};
    assert_int_equal(sign_verify(&k, &r, sig, strlen(sig), now), SIGN_OK);
    char other[256];
    snprintf(other, sizeof(other), "%sx", secret);
    sign_key_init(&k, other, strlen(other));
    assert_int_equal(sign_verify(&k, &r, sig, strlen(sig), now), SIGN_AUTH_FAILED);
    sign_key_wipe(&k);
    free(key);
    free(ts);
    free(sig);
    free(idem);
}
