/*
 * The shard threads of `ringpay serve` (DESIGN.md "Group commit"): one per core,
 * pinned to the same CPU as that core's reactor, each the only writer of its shard's
 * LMDB environment (store/shard.h runs the loop). They talk to the reactors only
 * through the cross-core mesh (net/xcore.h): reactor i is endpoint i, shard i is
 * endpoint N + i. This module is the shard side of that mesh (the transport the shard
 * loop is given), start-up and pinning, readiness and the shard metrics. Each shard's
 * Kafka replicator and its wake-up on the shard's ring come from kafka.h.
 */
#ifndef RINGPAY_TOOLS_SERVE_SHARDS_H
#define RINGPAY_TOOLS_SERVE_SHARDS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/bucket.h"
#include "store/shard_store.h"
#include "net/metrics.h"
#include "net/xcore.h"

struct shards;
struct kafka;

struct shards_config {
    const char *data_dir;
    unsigned cores;      /* shards: one per core */
    int64_t idem_ttl_ms; /* idempotency retention; 0: the default (24 h) */
    struct xcore *mesh;  /* 2 * cores endpoints; the reactors' ring fds already set */
    struct bucket_conf merchant_budget; /* per merchant, kept by its shard; rate 0: none */
    /* The write-ahead log mode and its sizes (store/shard_store.h: wal, wal_segment_bytes,
     * overlay_bytes, checkpoint_ops, checkpoint_ms); the other fields are set here. */
    struct shard_store_options store;
    const struct kafka *kafka; /* each shard's replicator (tools/serve/kafka.h) */
};

/*
 * Opens (or creates) the data directory for `cores` shards and every shard's store,
 * registers each shard's io_uring with the mesh, and starts the shard threads. Fails
 * with a negative errno and one line in why; nothing is left running then.
 */
int shards_start(struct shards **out, const struct shards_config *cfg, char *why, size_t why_bytes);

/* Stops and joins the threads (each answers what is still queued to it first) and
 * closes the stores. Call after every reactor returned. NULL is a no-op. */
void shards_stop(struct shards *s);

/* True when every shard thread runs, none has failed and none has a replication
 * backlog over its bound (/readyz). Any thread. */
bool shards_ready(const struct shards *s);

/* The shard families of /metrics. Any thread. */
void shards_metrics(const struct shards *s, struct metrics_out *o);

#endif
