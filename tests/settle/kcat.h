/*
 * kcat for settle's tests: produce a message with a key, and read a whole topic raw.
 * tests/kafka/kafka_client.h runs kcat for both (kc_run) and reads the engine's topics
 * (it parses the engine's event ids); settle's topics carry other ids (evt_stl_...,
 * evt_rcf_...) and payment.dlq the original bytes, so these read any value. Every wait is bounded; children die with
 * the test (PR_SET_PDEATHSIG). Values and keys must not hold tabs or newlines.
 */
#ifndef RINGPAY_TESTS_SETTLE_KCAT_H
#define RINGPAY_TESTS_SETTLE_KCAT_H

#include <stddef.h>

struct kcat_msg {
    int partition;
    long long offset;
    char key[80];
    char *value; /* malloc'd, NUL-terminated */
};

/* Produces one message (kcat -P -K): 0, or kcat's exit code / -errno. */
int kcat_produce(const char *bootstrap, const char *topic, const char *key, const char *value);

/* Every message of topic from the beginning to its end (kcat -C -e), into a malloc'd
 * array *out of *n. 0, -EPROTO on a line it cannot split, or kcat's exit code. */
int kcat_consume(const char *bootstrap, const char *topic, int timeout_ms, struct kcat_msg **out,
                 size_t *n);

void kcat_free(struct kcat_msg *msgs, size_t n);

/* How many different "event_id" values the messages' JSON values hold. */
size_t kcat_distinct_event_ids(const struct kcat_msg *msgs, size_t n);

#endif
