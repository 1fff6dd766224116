/*
 * The Kafka replicator of one shard (DESIGN.md "Kafka replication", SPEC §4 and §6):
 * every committed outbox event goes, at least once, to the topic named by its type,
 * keyed by its merchant, with the event JSON as the value.
 *
 * Contract:
 * - One idempotent librdkafka producer per shard: enable.idempotence (acks=all, ordered
 *   retries), message.timeout.ms=0 (a message is never given up), and
 *   enable.gapless.guarantee (a message that fails for good fails the producer instead
 *   of leaving a gap that later messages of its partition would jump over).
 * - LMDB is the buffer, not librdkafka's memory: the producer holds at most a window of
 *   events (REPL_WINDOW_EVENTS), read through the store's interface
 *   (shard_store_outbox_scan), never with LMDB cursors of its own, and refilled as
 *   delivery reports come back. Only events whose commit is durable
 *   (shard_store_event_durable) leave: an event that a power cut could still take back
 *   would otherwise reach Kafka and its event_id be reused for another event.
 * - Delivery reports (in any order) advance a contiguous "replicated up to" mark
 *   (store/repl_window.h): it never passes an event that was not delivered. The mark is
 *   handed to shard_store_set_replicated, so the next group commit stores it and trims
 *   the outbox below it (no fsync of its own; an idle shard stores it after
 *   REPL_MARK_IDLE_MS, see replicator_idle).
 * - A fatal producer error (a fenced or desynchronised idempotent producer, a message
 *   failed for good under the gapless guarantee) or any failed delivery report: the
 *   producer is destroyed and, after a back-off, a new one resends everything above the
 *   mark. Consumers see duplicates (same event_id), never a gap.
 * - Nothing here blocks: the producer's main queue writes to an eventfd
 *   (replicator_wake_fd, via rd_kafka_queue_io_event_enable) when it has delivery
 *   reports, errors or logs; the shard loop waits on that fd with the rest of its
 *   io_uring and calls replicator_poll between batches. Only replicator_close (after the
 *   shard thread stopped) and the destruction of a failed producer wait on librdkafka.
 * - Backlog: events committed and not yet delivered, and their key + value bytes. Past
 *   backlog_events_max or backlog_bytes_max the replicator is overloaded: the shard
 *   refuses new state changes (503) and /readyz says not ready, until it drains. Nothing
 *   committed is ever dropped.
 *
 * Threading: create before the shard thread starts; poll, idle and refused on the shard
 * thread (they use the store); overloaded, get_stats and wake_fd on any thread; close
 * after the shard thread stopped.
 */
#ifndef RINGPAY_STORE_REPLICATOR_H
#define RINGPAY_STORE_REPLICATOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "store/shard_store.h"

struct replicator;

enum replicator_log_level { REPL_LOG_INFO, REPL_LOG_WARN, REPL_LOG_ERROR };

/* A log line: a fixed message and a detail (librdkafka's text, an error string). May be
 * called from librdkafka's threads (its own log lines) and the shard thread. */
typedef void (*replicator_log_fn)(void *ctx, enum replicator_log_level level, unsigned shard,
                                  const char *msg, const char *detail);

struct replicator_options {
    const char *brokers;         /* bootstrap.servers, "host:port,..." (required) */
    uint64_t backlog_events_max; /* 0: REPL_BACKLOG_EVENTS_DEFAULT */
    uint64_t backlog_bytes_max;  /* 0: REPL_BACKLOG_BYTES_DEFAULT */
    uint32_t window_events;      /* 0: REPL_WINDOW_EVENTS (tests use small windows) */
    /* Extra librdkafka settings, "name=value", NULL-terminated (may be NULL): tests and
     * benchmarks (e.g. linger.ms). Applied after ours, so they win. */
    const char *const *conf;
    replicator_log_fn log; /* may be NULL */
    void *log_ctx;
};

/* Kinds of errors counted for /metrics. */
enum replicator_error_kind {
    REPL_ERR_TRANSPORT, /* a broker connection failed or all brokers are down */
    REPL_ERR_DELIVERY,  /* a delivery report with an error: the producer is recreated */
    REPL_ERR_FATAL,     /* a fatal producer error: the producer is recreated */
    REPL_ERR_PRODUCE,   /* librdkafka refused a message at produce time */
    REPL_ERR_OTHER,     /* any other error librdkafka reported */
    REPL_ERR_KINDS
};

/* Names of the kinds, for labels: "transport", "delivery", ... */
extern const char *const replicator_error_names[REPL_ERR_KINDS];

/* Upper bounds (ms) of the replication-lag histogram's buckets; +Inf is implied. */
#define REPL_LAG_BUCKETS 16
extern const uint32_t replicator_lag_bounds_ms[REPL_LAG_BUCKETS];

struct replicator_stats {
    uint64_t mark;           /* replicated (delivered, contiguously) up to this event */
    uint64_t mark_stored;    /* the mark as stored in the shard (at the last commit) */
    uint64_t event_seq;      /* the last event committed */
    uint64_t backlog_events; /* event_seq - mark */
    uint64_t backlog_bytes;  /* key + value bytes of those events */
    uint64_t backlog_events_max, backlog_bytes_max;
    uint64_t in_flight;   /* handed to the producer, no delivery report yet */
    uint64_t sent;        /* messages handed to producers (resends included) */
    uint64_t delivered;   /* successful delivery reports */
    uint64_t recreated;   /* producers destroyed and replaced */
    uint64_t producer_up; /* 1, or 0: down (see below) or being recreated */
    uint64_t overloaded;  /* 1 while the backlog is over a bound */
    uint64_t refused;     /* state changes the shard refused while overloaded */
    uint64_t errors[REPL_ERR_KINDS];
    uint64_t lag_buckets[REPL_LAG_BUCKETS]; /* non-cumulative counts per bucket */
    uint64_t lag_count;                     /* every lag observed (+Inf included) */
    uint64_t lag_sum_ms;
    uint64_t poll_ns; /* shard thread time in replicator_poll and replicator_idle */
    uint64_t polls;   /* calls of replicator_poll */
};

/*
 * Creates the replicator of shard `shard` over its open store and its first producer
 * (which checks the configuration). Reads the outbox above the stored mark once to
 * count the backlog's bytes. Returns 0, or -errno with one line in why (-EINVAL: a bad
 * librdkafka setting).
 */
int replicator_create(struct replicator **out, struct shard_store *store, unsigned shard,
                      const struct replicator_options *opt, char *why, size_t why_bytes);

/* A non-blocking eventfd that becomes readable (8 bytes) when the producer has events
 * to serve: wait on it, read it, and call replicator_poll. Owned by the replicator. */
int replicator_wake_fd(const struct replicator *r);

/*
 * Serves the producer's events (delivery reports, errors, logs), advances the mark and
 * hands it to the store, recreates a failed producer when its back-off is over, and
 * refills the window from the durable outbox. Never blocks. Shard thread.
 */
void replicator_poll(struct replicator *r);

/*
 * Called by the shard loop when it has nothing queued and nothing held: when the mark
 * moved past the stored one and the shard has not committed for REPL_MARK_IDLE_MS, an
 * empty commit stores it (and trims). A failure of that commit fails the store, which
 * the shard sees at its next turn. Shard thread.
 */
void replicator_idle(struct replicator *r);

/* True while the backlog is over a bound (new state changes are refused). Any thread. */
bool replicator_overloaded(const struct replicator *r);

/* Counts n state changes the shard refused while overloaded. Shard thread. */
void replicator_refused(struct replicator *r, uint64_t n);

/* A snapshot of the counters (each read whole, relaxed). Any thread. */
void replicator_get_stats(const struct replicator *r, struct replicator_stats *out);

/*
 * After the shard thread stopped: lets the producer deliver what it holds until
 * deadline_ns (monotonic, engine/clock.h), stores the mark with an empty commit when it
 * moved, destroys the producer and frees everything. NULL is a no-op.
 */
void replicator_close(struct replicator *r, uint64_t deadline_ns);

/* Tests: makes the current producer raise a fatal error (rd_kafka_test_fatal_error),
 * as a fenced idempotent producer would. Shard thread. */
void replicator_test_fatal(struct replicator *r);

#endif
