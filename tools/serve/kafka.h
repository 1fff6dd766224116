/*
 * The Kafka side of `ringpay serve` (SPEC §6, DESIGN.md "Kafka replication"): the
 * cluster the shards replicate to, each shard's replicator wired into its io_uring, and
 * the replication families of /metrics.
 *
 * - Without --kafka-brokers the process starts librdkafka's in-process Kafka-protocol
 *   cluster (3 brokers on loopback ports, a separate rd_kafka_t configured with
 *   test.mock.num.brokers=3); it keeps messages in memory only. Its bootstrap address
 *   is given to the producers like any cluster's, and printed so that kcat, `ringpay
 *   settle` or any Kafka client can connect.
 * - With --replication off nothing is sent: events stay in the outbox (never trimmed,
 *   never dropped) until a later start with replication on ships them. For benchmarks.
 * - A shard's port (kafka_port) owns its replicator and keeps one read of the
 *   replicator's eventfd in flight on the shard's own io_uring, so a delivery report
 *   wakes the shard thread where it sleeps anyway (io_uring_submit_and_wait); the shard
 *   loop (store/shard.c) then polls the replicator between batches.
 */
#ifndef RINGPAY_TOOLS_SERVE_KAFKA_H
#define RINGPAY_TOOLS_SERVE_KAFKA_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "net/metrics.h"
#include "store/replicator.h"

/* user_data of the read of a replicator's eventfd on a shard ring. */
#define KAFKA_WAKE_TAG 0x6b61000000000000ull

struct kafka;

struct kafka_config {
    const char *brokers;         /* NULL: start the embedded cluster */
    bool replication;            /* false: --replication off, no producers at all */
    uint64_t backlog_events_max; /* per shard; 0: the default (engine/limits.h) */
    uint64_t backlog_bytes_max;
    const char *conf; /* extra producer settings "name=value;name=value", or NULL */
};

/* Starts the embedded cluster when needed. 0, or -errno with one line in why. */
int kafka_start(struct kafka **out, const struct kafka_config *cfg, char *why, size_t why_bytes);

/* The bootstrap address the producers use ("" when replication is off). */
const char *kafka_brokers(const struct kafka *k);

/* True when the cluster is the embedded one. */
bool kafka_embedded(const struct kafka *k);

/* Destroys the embedded cluster; call after every port was closed. NULL is a no-op. */
void kafka_stop(struct kafka *k);

/* One shard's replicator and its wake-up read. Zeroed: no replication. */
struct kafka_port {
    struct replicator *repl;
    uint64_t buf; /* the eventfd's 8 bytes */
};

/*
 * Creates shard `shard`'s replicator over its open store (nothing when replication is
 * off) and queues the first read of its eventfd on ring (submitted by the shard's next
 * wait). 0, or -errno with one line in why.
 */
int kafka_port_open(const struct kafka *k, struct kafka_port *kp, unsigned shard,
                    struct shard_store *store, struct io_uring *ring, char *why, size_t why_bytes);

/* Handles a completion of the shard ring: true when it was the port's wake-up read
 * (re-armed here), false when it belongs to someone else. Shard thread. */
bool kafka_port_cqe(struct kafka_port *kp, struct io_uring *ring, const struct io_uring_cqe *cqe);

/* True while the port's backlog is over its bound (/readyz). Any thread. */
bool kafka_port_overloaded(const struct kafka_port *kp);

/* After the shard thread stopped: flushes until deadline_ns, stores the mark, frees. */
void kafka_port_close(struct kafka_port *kp, uint64_t deadline_ns);

/* The replication families of /metrics, one sample per port with a replicator. */
void kafka_metrics(struct metrics_out *o, const struct kafka_port *const *ports, unsigned n);

#endif
