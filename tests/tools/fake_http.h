/*
 * A one-connection HTTP server for tests of clients (ringpay client, the curl example of
 * docs/auth.md): it listens on a free loopback port, accepts one connection in a thread,
 * reads one request with net/http.c, answers it with a canned status and JSON body, and
 * closes. Every wait is bounded (10 s). After fake_http_stop() the request is in
 * buf/req for the test to check; fake_http_header() and fake_http_signed() help.
 */
#ifndef RINGPAY_TESTS_TOOLS_FAKE_HTTP_H
#define RINGPAY_TESTS_TOOLS_FAKE_HTTP_H

#include <pthread.h>
#include <stddef.h>

#include "net/http.h"

struct fake_http {
    int listen_fd;
    int port;
    int status;
    const char *answer;
    pthread_t tid;
    char buf[65536];
    size_t len;
    int parse_rc; /* HTTP_PARSE_DONE once a whole request came */
    struct http_request req;
};

/* Starts listening and the thread that serves one connection (cmocka asserts). */
void fake_http_start(struct fake_http *f, int status, const char *answer);

/* Waits for the thread and closes the listener. */
void fake_http_stop(struct fake_http *f);

/* The value of the one header named name, as a new string; NULL when absent; fails the
 * test when the header is there more than once. */
char *fake_http_header(const struct fake_http *f, const char *name);

/* A slice of the request as a new string. */
char *fake_http_slice(const struct fake_http *f, struct http_slice s);

/* Checks that the request is whole and carries exactly one X-Ringpay-Key (== key_id),
 * X-Ringpay-Timestamp (within 5 s before now) and X-Ringpay-Signature, and that the
 * signature verifies with secret over the exact bytes received, and not with another. */
void fake_http_assert_signed(const struct fake_http *f, const char *key_id, const char *secret);

#endif
