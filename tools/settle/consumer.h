/*
 * settle's Kafka side (SPEC §4, §5): the consumer group on payment.captured and
 * payment.refunded, and the producer of settle's own outbox (settlement.closed,
 * recon.unmatched, payment.dlq). Both are polled from settle's reactor thread, the one
 * thread that writes the store (app.h).
 *
 * Consumer, exactly once (store/settle_store.h):
 *  - librdkafka's consumer group `--group`, enable.auto.commit=false and
 *    enable.auto.offset.store=false: the group's committed offsets are never used as a
 *    start (settle commits each applied batch's offsets to the group after its store,
 *    for the usual tools and as a guard: a committed offset ahead of this store's means
 *    another store counted the partition, and it is not consumed here). On
 *    every assignment (start and each rebalance) each assigned partition starts at the
 *    offset settle's store holds for it (settle_store_offset_get), or at the beginning
 *    when it has none, through rd_kafka_assign (eager) or rd_kafka_incremental_assign
 *    (cooperative) with those offsets. So what was counted is exactly what was
 *    committed, in the same LMDB transaction, whatever the group thinks.
 *  - Messages are taken from the consumer queue SETTLE_CONSUME_BATCH_MAX at a time at
 *    most and applied with settle_store_apply in one transaction, once the batch is
 *    full or its first message waited SETTLE_CONSUME_WAIT_MS (larger commits cost less
 *    per event; a message taken but not applied is not counted, and its offset is not
 *    stored, so a crash re-reads it). A rebalance that
 *    revokes a partition in the middle changes nothing: the batch is applied before the
 *    callback returns (it runs inside the poll of the same thread, after the batch), and
 *    a message of a partition this instance lost and another took is counted once,
 *    because ids are deduplicated too. Members of one group on one host may share the
 *    store (settle --shared): a moved partition resumes from what the other member
 *    committed, and each member reports its partitions' progress to the store once a
 *    second (SKAFKA_REPORT_MS) so that the close timer can wait for the whole group.
 *  - Outbox: published by this process only while settle_store_publisher says so (one
 *    member of a shared store at a time), from the store's replicated mark.
 *  - A poison message is a dead letter (store), published to payment.dlq by the
 *    producer below; its partition goes on.
 *  - Lag per partition (high watermark - stored next offset) for /metrics, and
 *    "caught up" for the close timer: every assigned partition's stored offset has
 *    reached the high watermark librdkafka last reported (and, for a shared store,
 *    settle_store_progress_caught_up: every member's).
 *
 * Producer: settle's outbox is read SETTLE_PUBLISH_WINDOW messages ahead of the
 * delivered mark (settle_store_outbox_scan), produced with enable.idempotence=true, key
 * and headers as stored; delivery reports advance a contiguous mark given to
 * settle_store_set_replicated (written by the next transaction, at least once).
 *
 * Wake-ups: both queues signal an eventfd (rd_kafka_queue_io_event_enable); settle
 * keeps a read of it in flight on the reactor's ring with user_data REACTOR_WAKE_TAG,
 * so the reactor wakes when messages or reports arrive.
 */
#ifndef RINGPAY_TOOLS_SETTLE_CONSUMER_H
#define RINGPAY_TOOLS_SETTLE_CONSUMER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "engine/settle.h"
#include "net/metrics.h"
#include "store/settle_store.h"

struct io_uring;
struct skafka;

struct skafka_config {
    const char *brokers; /* bootstrap list */
    const char *group;   /* consumer group id */
    const char *conf;    /* extra librdkafka settings "k=v;k=v" for both, or NULL */
};

/* Creates the consumer (subscribed) and the producer. 0, or -errno with one line in
 * why. The store must outlive it. */
int skafka_start(struct skafka **out, const struct skafka_config *cfg, struct settle_store *s,
                 struct settle_calendar *cal, char *why, size_t why_bytes);

/* Queues the read of the wake-up eventfd on ring (again after each wake-up). */
void skafka_arm(struct skafka *k, struct io_uring *ring);

/* A REACTOR_WAKE_TAG completion: the wake-up read (re-armed here, on the same ring) or,
 * with res -ETIME, the linger timer. */
void skafka_on_wake(struct skafka *k, struct io_uring *ring, int res);

/* Makes the next loop turn come at once (writes the wake-up eventfd). */
void skafka_kick(struct skafka *k);

/* One turn at now_ms: takes what the consumer has; applies it in one transaction once
 * it is a full batch (SETTLE_CONSUME_BATCH_MAX) or its first message waited
 * SETTLE_CONSUME_WAIT_MS (a timeout on ring brings the turn back); publishes the outbox
 * window, serves delivery reports. Returns true when more work is waiting (the caller
 * turns again soon: the eventfd is written so the loop does not sleep). */
bool skafka_turn(struct skafka *k, struct io_uring *ring, int64_t now_ms);

/* Every assigned partition is consumed up to the last high watermark seen (and at
 * least one assignment happened). */
bool skafka_caught_up(const struct skafka *k);

/* Assigned partitions left unconsumed because another store counted them (the group's
 * committed offset is ahead of this store's): /readyz is 503 while there are any. */
size_t skafka_foreign_partitions(const struct skafka *k);

/* The consumer and producer families of /metrics. */
void skafka_metrics(const struct skafka *k, struct metrics_out *o);

/* Leaves the group, flushes the producer for up to flush_ms, frees. NULL: no-op. */
void skafka_stop(struct skafka *k, int flush_ms);

#endif
