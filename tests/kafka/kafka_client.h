/*
 * Kafka for the integration tests: rp_mock_kafka (a mock cluster in a process of its
 * own, driven through its stdin; tests/kafka/mock_kafka.c) and kcat as the consumer.
 *
 * Contract:
 *   - Every wait is bounded; children get PR_SET_PDEATHSIG(SIGKILL), so a test that
 *     dies leaves no cluster behind.
 *   - Functions return 0 or -errno and never abort (cmocka assertions are the caller's).
 *   - kc_consume reads a topic from the beginning to its end (kcat -C -e) and parses
 *     each message into a kc_msg, with the event's id split into shard and sequence.
 */
#ifndef RINGPAY_TESTS_KAFKA_KAFKA_CLIENT_H
#define RINGPAY_TESTS_KAFKA_KAFKA_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/types.h>

struct kc_mock {
    pid_t pid;
    int to, from; /* its stdin, its stdout */
    char buf[1024];
    size_t len;
    char bootstrap[640];
};

/* Starts rp_mock_kafka (path bin) with 3 brokers and reads its bootstrap address. */
int kc_mock_start(struct kc_mock *m, const char *bin);

/* Sends one command ("down", "up", "errors API CODE N", "rtt MS"); 0 on "ok",
 * -EPROTO on an "error" answer, or a transport error. */
int kc_mock_cmd(struct kc_mock *m, const char *cmd);

/* Ends the cluster ("quit", then SIGKILL if it lingers). Safe to call twice. */
void kc_mock_stop(struct kc_mock *m);

/* One message as kcat printed it, the event's id parsed from its value. */
struct kc_msg {
    char topic[32];
    int partition;
    long long offset;
    char key[80];
    char *payload; /* malloc'd, NUL-terminated */
    char event_id[32];
    unsigned shard;
    unsigned long long seq;
    bool dup; /* for the caller */
};

/* Appends every message of topic to msgs[*n..max). 0, -ENOSPC when max is reached,
 * -EPROTO on a line it cannot parse, -ETIMEDOUT, or kcat's nonzero exit code. */
int kc_consume(const char *bootstrap, const char *topic, int timeout_ms, struct kc_msg *msgs,
               size_t max, size_t *n);

/* Frees the payloads of msgs[0..n). */
void kc_free(struct kc_msg *msgs, size_t n);

/* Runs argv (kcat, for the tests) with `input` on its stdin (NULL: none) and its stdout
 * captured into *output (malloc'd, NUL-terminated; NULL: discarded), for at most
 * timeout_ms; the child dies with the test. Returns its exit code, -ETIMEDOUT (it had to
 * be killed), -ECHILD, or -errno. */
int kc_run(const char *const argv[], const char *input, int timeout_ms, char **output);

#endif
